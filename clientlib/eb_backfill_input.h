/* eb_backfill_input — the rows of a backfill: product id, template, optional text, optional
 * image path, read from a JSON Lines or CSV file.
 *
 *   JSONL  one JSON object per line: {"product_id": "P1", "template": "shoes", "text": "...",
 *          "image": "img/p1.jpg"}; blank lines are skipped; product_id may also be an integer.
 *   CSV    RFC 4180: a header row naming the columns (product_id, template, text, image; also
 *          ProductId, BusinessTemplate, image_path; case-insensitive; others ignored), fields
 *          separated by commas, "quoted" fields may hold commas, newlines and "" for a quote;
 *          CRLF or LF line ends; a UTF-8 byte-order mark is skipped; blank lines are skipped.
 *
 * Every row gets an ordinal: its 0-based position among the rows of the file (bad rows
 * included, blank lines and the CSV header not), so the same file always numbers its rows the
 * same way: the backfill checkpoint (eb_backfill_state.h) records progress by ordinal.
 *
 * A bad row (invalid JSON, invalid UTF-8, a wrong field count, no product id, …) is returned
 * like any other with status != EB_OK and a reason, so the caller can fail it alone and go on;
 * only a file that cannot be read at all (or a CSV without a usable header) stops the reader.
 */
#ifndef EB_BACKFILL_INPUT_H
#define EB_BACKFILL_INPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_status.h"

typedef enum eb_backfill_format {
    EB_BACKFILL_AUTO = 0, /* from the file name: *.csv is CSV, anything else JSONL */
    EB_BACKFILL_JSONL,
    EB_BACKFILL_CSV,
} eb_backfill_format;

/* One row. Strings are malloc'ed and owned by the row (eb_backfill_row_clear frees them); NULL
 * when absent (an empty CSV field or a JSON null counts as absent). */
typedef struct eb_backfill_row {
    uint64_t ordinal;    /* 0-based position among the rows */
    uint64_t line;       /* 1-based line where the row starts (0 when not from a file) */
    char *product_id;
    char *template_name;
    char *text;
    char *image;         /* path as written in the input */
    eb_status status;    /* EB_OK, or why the row is unusable (reason in error) */
    char reason[48];     /* short class of the failure for grouping ("invalid JSON", …) */
    char error[256];     /* the full message */
} eb_backfill_row;

/* Free the row's strings and zero it. NULL-safe. */
void eb_backfill_row_clear(eb_backfill_row *row);

/* Mark a row bad: status, short reason class and a printf-style message. */
void eb_backfill_row_fail(eb_backfill_row *row, eb_status status, const char *reason,
                          const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Check the fields every row needs, after defaults were applied: a product id and a template,
 * text or image present, every string valid UTF-8 without NUL and within the protocol's
 * limits. Marks the row bad (eb_backfill_row_fail) and returns false when not. */
bool eb_backfill_row_validate(eb_backfill_row *row);

typedef struct eb_backfill_reader eb_backfill_reader;

/* Open `path` for reading rows. format AUTO picks CSV for a ".csv" name (any case), JSONL
 * otherwise. For CSV the header is read now. NULL with a reason in err when the file cannot be
 * opened or the CSV header lacks a product_id column. Close with eb_backfill_reader_close. */
eb_backfill_reader *eb_backfill_reader_open(const char *path, eb_backfill_format format,
                                            char *err, size_t err_len);

/* The next row into *row (cleared first). EB_OK: a row (good or bad: read row->status);
 * EB_ERR_NOT_FOUND: no more rows; EB_ERR_IO: the file could not be read (reason in err). */
eb_status eb_backfill_reader_next(eb_backfill_reader *reader, eb_backfill_row *row, char *err,
                                  size_t err_len);

/* The format in use. */
eb_backfill_format eb_backfill_reader_format(const eb_backfill_reader *reader);

/* Close and free; sets *reader to NULL. NULL-safe. */
void eb_backfill_reader_close(eb_backfill_reader **reader);

/* Count the rows of `path` (reads it once; no image is touched). EB_OK with *n, or the
 * reader's errors. */
eb_status eb_backfill_count_rows(const char *path, eb_backfill_format format, uint64_t *n,
                                 char *err, size_t err_len);

/* Which row field a column name stands for (product_id, ProductId, template,
 * BusinessTemplate, text, image, image_path; case-insensitive): 0 product id, 1 template,
 * 2 text, 3 image, -1 none. For CSV headers and query result columns. */
int eb_backfill_column_of(const char *name);

/* Split one CSV record from data[0..len) starting at *pos: fields are appended to fields[]
 * (malloc'ed copies, at most max_fields; *n_fields set; fields past max_fields are counted but
 * not stored), *pos advances past the record's line end, *lines_used counts the physical lines
 * it spanned. EB_OK, EB_ERR_NOT_FOUND at the end of data, EB_ERR_INVALID for an unterminated
 * quote or text after a closing quote (reason in err; *pos still advances to the next line).
 * Exposed for the reader and the tests. */
eb_status eb_backfill_csv_record(const char *data, size_t len, size_t *pos, char **fields,
                                 size_t max_fields, size_t *n_fields, unsigned *lines_used,
                                 char *err, size_t err_len);

#endif
