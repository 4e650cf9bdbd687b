/* eb_backfill_state — which rows of a backfill are done, kept in a checkpoint file so a killed
 * backfill resumes where it stopped.
 *
 * Rows are numbered by ordinal (eb_backfill_input.h). Requests finish out of order, so the
 * state is a watermark W ("every row before W is settled") plus the settled rows above W, and
 * the list of rows that failed. A row is marked done only when the broker acknowledged its
 * store (the broker answers a store once the row is durable in its spool), and a row that was
 * in flight when the process died was never marked: the restart sends it again. Sending a row
 * twice is harmless (the table upserts on ProductId, SourceType, ModelRev); skipping one that
 * was never stored is not, and cannot happen.
 *
 * Failed rows are settled (the watermark passes them) but not done: the next run tries them
 * again (after the data was fixed, say).
 *
 * The file is text, written whole to "<path>.tmp", fsync'ed and renamed over <path>, so a kill
 * at any moment leaves either the old or the new checkpoint:
 *
 *   embroker-backfill-checkpoint 1
 *   input <identity of the input: see eb_backfill_state_input_id>
 *   next <W>
 *   done <ordinal> <ordinal> …      (settled-and-done rows above W; any number of such lines)
 *   failed <ordinal> …               (rows that failed; any number of such lines)
 *   end
 */
#ifndef EB_BACKFILL_STATE_H
#define EB_BACKFILL_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_status.h"

typedef struct eb_backfill_state eb_backfill_state;

/* A fresh state (nothing done) for the input named `input_id` (copied). NULL when out of
 * memory. Free with eb_backfill_state_destroy. */
eb_backfill_state *eb_backfill_state_new(const char *input_id);

void eb_backfill_state_destroy(eb_backfill_state **state);

/* Load `path` into a fresh state. EB_OK: loaded; EB_ERR_NOT_FOUND: no such file (state stays
 * fresh); EB_ERR_INVALID: the file is not a complete checkpoint, or was written for another
 * input (its input line differs from the state's input_id): err says which and what to do;
 * EB_ERR_IO: unreadable. */
eb_status eb_backfill_state_load(eb_backfill_state *state, const char *path, char *err,
                                 size_t err_len);

/* Write the state to `path` atomically (see above). EB_ERR_IO with a reason on failure (the
 * previous checkpoint is then untouched). */
eb_status eb_backfill_state_save(const eb_backfill_state *state, const char *path, char *err,
                                 size_t err_len);

/* True when row `ordinal` was done in an earlier run or earlier in this one: skip it. */
bool eb_backfill_state_is_done(const eb_backfill_state *state, uint64_t ordinal);

/* The row was acknowledged (stored) or deliberately skipped (a duplicate). */
void eb_backfill_state_mark_done(eb_backfill_state *state, uint64_t ordinal);

/* The row failed for good in this run: settled, and tried again by the next run. */
void eb_backfill_state_mark_failed(eb_backfill_state *state, uint64_t ordinal);

/* The watermark: every row before it is settled. */
uint64_t eb_backfill_state_watermark(const eb_backfill_state *state);

/* Rows settled above the watermark (bounded by the caller's read-ahead window). */
size_t eb_backfill_state_ahead(const eb_backfill_state *state);

/* Rows in the failed list. */
size_t eb_backfill_state_failed_count(const eb_backfill_state *state);

/* Identity of an input file for the checkpoint's input line: "file <realpath> <n>
 * <sha256 of the first n bytes, n = min(size, 64 KiB)>". Rows appended to the file keep the
 * identity (so an extended catalogue resumes), a file rewritten at its start does not.
 * eb_backfill_state_load compares the stored n bytes of the current file, so pass the identity
 * from this function for files. For a query: "sql <sha256 of the query text>". Returns a
 * malloc'ed string (caller frees) or NULL with a reason in err. */
char *eb_backfill_state_input_id(const char *path_or_null, const char *sql, char *err,
                                 size_t err_len);

#endif
