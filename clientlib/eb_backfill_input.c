/* eb_backfill_input — JSON Lines and CSV rows for `embroker backfill`.
 *
 * Both formats are read as a stream of physical lines (getline), so a catalogue of millions of
 * rows never has to fit in memory. A CSV record may span lines when a quoted field holds a
 * newline: lines are joined while the record has an odd number of quote characters (an escaped
 * quote "" adds two, so the parity is exactly "inside a quoted field"), then the record is split
 * by eb_backfill_csv_record. A stray quote would otherwise swallow the rest of the file into one
 * record, so a record is cut after MAX_RECORD_LINES lines and failed alone.
 */
#include "eb_backfill_input.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "eb_proto.h"

enum {
    MAX_RECORD_LINES = 10000, /* a CSV record longer than this is an unterminated quote */
    MAX_COLUMNS = 1024,
    COL_PRODUCT = 0,
    COL_TEMPLATE,
    COL_TEXT,
    COL_IMAGE,
    N_COLS,
};

struct eb_backfill_reader {
    FILE *f;
    char *path;
    eb_backfill_format format;
    uint64_t next_ordinal;
    uint64_t line;          /* physical lines consumed so far */
    char *buf;              /* getline buffer */
    size_t buf_cap;
    char *rec;              /* joined CSV record */
    size_t rec_len, rec_cap;
    int col[N_COLS];        /* CSV column index of each field, -1 when absent */
    size_t n_header;        /* CSV: fields in the header */
};

/* ---- rows ------------------------------------------------------------------------------ */

void eb_backfill_row_clear(eb_backfill_row *row)
{
    if (!row)
        return;
    free(row->product_id);
    free(row->template_name);
    free(row->text);
    free(row->image);
    memset(row, 0, sizeof *row);
}

void eb_backfill_row_fail(eb_backfill_row *row, eb_status status, const char *reason,
                          const char *fmt, ...)
{
    if (row->status != EB_OK)
        return; /* keep the first reason: it is the one that explains the rest */
    row->status = status;
    snprintf(row->reason, sizeof row->reason, "%s", reason);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(row->error, sizeof row->error, fmt, ap);
    va_end(ap);
}

static bool text_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    return n <= max && eb_proto_utf8_valid(s, n);
}

bool eb_backfill_row_validate(eb_backfill_row *row)
{
    if (row->status != EB_OK)
        return false;
    if (!row->product_id || !*row->product_id) {
        eb_backfill_row_fail(row, EB_ERR_INVALID, "missing product_id", "no product_id");
        return false;
    }
    /* The product id goes into messages below: check it first. */
    if (!text_ok(row->product_id, EB_PROTO_ID_MAX)) {
        eb_backfill_row_fail(row, EB_ERR_INVALID, "invalid product_id",
                             "product_id is not valid UTF-8 or longer than %d bytes",
                             EB_PROTO_ID_MAX);
        return false;
    }
    if (!row->template_name || !*row->template_name) {
        eb_backfill_row_fail(row, EB_ERR_INVALID, "missing template",
                             "product %s has no template (give one, or --template-default)",
                             row->product_id);
        return false;
    }
    if (!text_ok(row->template_name, EB_PROTO_ID_MAX)) {
        eb_backfill_row_fail(row, EB_ERR_INVALID, "invalid template",
                             "product %s: template is not valid UTF-8 or longer than %d bytes",
                             row->product_id, EB_PROTO_ID_MAX);
        return false;
    }
    if (row->text && !eb_proto_utf8_valid(row->text, strlen(row->text))) {
        eb_backfill_row_fail(row, EB_ERR_INVALID, "invalid UTF-8",
                             "product %s: text is not valid UTF-8", row->product_id);
        return false;
    }
    if (row->text && strlen(row->text) > 65536) {
        eb_backfill_row_fail(row, EB_ERR_TOO_LARGE, "text too long",
                             "product %s: text of %zu bytes exceeds 65536", row->product_id,
                             strlen(row->text));
        return false;
    }
    if (row->image && !eb_proto_utf8_valid(row->image, strlen(row->image))) {
        eb_backfill_row_fail(row, EB_ERR_INVALID, "invalid UTF-8",
                             "product %s: image path is not valid UTF-8", row->product_id);
        return false;
    }
    if (!row->text && !row->image) {
        eb_backfill_row_fail(row, EB_ERR_INVALID, "no text or image",
                             "product %s has neither text nor image", row->product_id);
        return false;
    }
    return true;
}

/* ---- CSV ------------------------------------------------------------------------------- */

static char *dup_n(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

eb_status eb_backfill_csv_record(const char *data, size_t len, size_t *pos, char **fields,
                                 size_t max_fields, size_t *n_fields, unsigned *lines_used,
                                 char *err, size_t err_len)
{
    size_t p = *pos;
    *n_fields = 0;
    *lines_used = 0;
    if (p >= len)
        return EB_ERR_NOT_FOUND;
    char *field = malloc(len - p + 1);
    if (!field) {
        snprintf(err, err_len, "out of memory");
        return EB_ERR_NOMEM;
    }
    eb_status st = EB_OK;
    unsigned lines = 1;
    for (;;) {
        size_t n = 0;
        if (p < len && data[p] == '"') {
            p++;
            for (;;) {
                if (p >= len) {
                    snprintf(err, err_len, "unterminated quoted field %zu", *n_fields + 1);
                    st = EB_ERR_INVALID;
                    break;
                }
                char c = data[p++];
                if (c == '"') {
                    if (p < len && data[p] == '"') {
                        field[n++] = '"';
                        p++;
                        continue;
                    }
                    break;
                }
                if (c == '\n')
                    lines++;
                field[n++] = c;
            }
            if (st == EB_OK && p < len && data[p] != ',' && data[p] != '\n' &&
                !(data[p] == '\r' && (p + 1 == len || data[p + 1] == '\n'))) {
                snprintf(err, err_len, "text after the closing quote of field %zu",
                         *n_fields + 1);
                st = EB_ERR_INVALID;
            }
        } else {
            while (p < len && data[p] != ',' && data[p] != '\n') {
                if (data[p] == '\r' && (p + 1 == len || data[p + 1] == '\n'))
                    break;
                field[n++] = data[p++];
            }
        }
        if (st != EB_OK)
            break;
        if (*n_fields < max_fields) {
            fields[*n_fields] = dup_n(field, n);
            if (!fields[*n_fields]) {
                st = EB_ERR_NOMEM;
                snprintf(err, err_len, "out of memory");
                break;
            }
        }
        (*n_fields)++;
        if (p < len && data[p] == ',') {
            p++;
            continue;
        }
        break; /* line end or end of data */
    }
    if (st != EB_OK) {
        /* Resynchronise at the next line end so the caller can go on. */
        while (p < len && data[p] != '\n')
            p++;
    }
    if (p < len && data[p] == '\r')
        p++;
    if (p < len && data[p] == '\n')
        p++;
    *pos = p;
    *lines_used = lines;
    free(field);
    if (st != EB_OK) {
        for (size_t i = 0; i < *n_fields && i < max_fields; i++) {
            free(fields[i]);
            fields[i] = NULL;
        }
        *n_fields = 0;
    }
    return st;
}

static void free_fields(char **fields, size_t n, size_t max)
{
    for (size_t i = 0; i < n && i < max; i++) {
        free(fields[i]);
        fields[i] = NULL;
    }
}

int eb_backfill_column_of(const char *name)
{
    static const struct {
        const char *name;
        int col;
    } names[] = {
        {"product_id", COL_PRODUCT}, {"productid", COL_PRODUCT},    {"product", COL_PRODUCT},
        {"template", COL_TEMPLATE},  {"businesstemplate", COL_TEMPLATE},
        {"business_template", COL_TEMPLATE},
        {"text", COL_TEXT},          {"image", COL_IMAGE},          {"image_path", COL_IMAGE},
        {"imagepath", COL_IMAGE},
    };
    while (isspace((unsigned char)*name))
        name++;
    char buf[64];
    size_t n = strlen(name);
    while (n && isspace((unsigned char)name[n - 1]))
        n--;
    if (n >= sizeof buf)
        return -1;
    memcpy(buf, name, n);
    buf[n] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(buf, names[i].name) == 0)
            return names[i].col;
    return -1;
}

static size_t count_char(const char *s, size_t n, char c)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += s[i] == c;
    return k;
}

static eb_status rec_append(eb_backfill_reader *r, const char *s, size_t n)
{
    if (r->rec_len + n + 1 > r->rec_cap) {
        size_t cap = r->rec_cap ? r->rec_cap : 4096;
        while (cap < r->rec_len + n + 1)
            cap *= 2;
        char *grown = realloc(r->rec, cap);
        if (!grown)
            return EB_ERR_NOMEM;
        r->rec = grown;
        r->rec_cap = cap;
    }
    memcpy(r->rec + r->rec_len, s, n);
    r->rec_len += n;
    r->rec[r->rec_len] = '\0';
    return EB_OK;
}

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)s[i]))
            return false;
    return true;
}

/* Read the next non-blank physical line into r->buf; its length, or -1 at the end, -2 on a
 * read error (errno). *first_line receives its 1-based line number. */
static ssize_t next_line(eb_backfill_reader *r, uint64_t *first_line)
{
    for (;;) {
        errno = 0;
        ssize_t n = getline(&r->buf, &r->buf_cap, r->f);
        if (n < 0)
            return ferror(r->f) ? -2 : -1;
        r->line++;
        if (r->line == 1 && n >= 3 && memcmp(r->buf, "\xEF\xBB\xBF", 3) == 0) {
            memmove(r->buf, r->buf + 3, (size_t)n - 2); /* UTF-8 byte-order mark */
            n -= 3;
        }
        if (blank(r->buf, (size_t)n))
            continue;
        *first_line = r->line;
        return n;
    }
}

/* Join physical lines into one CSV record (quote parity); EB_ERR_NOT_FOUND at the end. */
static eb_status read_csv_record(eb_backfill_reader *r, uint64_t *first_line, bool *cut,
                                 char *err, size_t err_len)
{
    *cut = false;
    r->rec_len = 0;
    ssize_t n = next_line(r, first_line);
    if (n == -1)
        return EB_ERR_NOT_FOUND;
    if (n == -2) {
        snprintf(err, err_len, "cannot read %s: %s", r->path, strerror(errno));
        return EB_ERR_IO;
    }
    size_t total = 0;
    unsigned lines = 1;
    for (;;) {
        if (rec_append(r, r->buf, (size_t)n) != EB_OK) {
            snprintf(err, err_len, "out of memory reading %s", r->path);
            return EB_ERR_NOMEM;
        }
        total += count_char(r->buf, (size_t)n, '"');
        if (total % 2 == 0)
            return EB_OK;
        if (lines >= MAX_RECORD_LINES) {
            *cut = true;
            return EB_OK;
        }
        errno = 0;
        n = getline(&r->buf, &r->buf_cap, r->f);
        if (n < 0) {
            if (ferror(r->f)) {
                snprintf(err, err_len, "cannot read %s: %s", r->path, strerror(errno));
                return EB_ERR_IO;
            }
            return EB_OK; /* unterminated at the end of file: the split reports it */
        }
        r->line++;
        lines++;
    }
}

static char *nonempty_dup(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

static eb_status next_csv(eb_backfill_reader *r, eb_backfill_row *row, char *err, size_t err_len)
{
    uint64_t first = 0;
    bool cut = false;
    eb_status st = read_csv_record(r, &first, &cut, err, err_len);
    if (st != EB_OK)
        return st;
    row->ordinal = r->next_ordinal++;
    row->line = first;
    char *fields[MAX_COLUMNS];
    size_t nf = 0, pos = 0;
    unsigned used = 0;
    char why[160];
    if (cut) {
        eb_backfill_row_fail(row, EB_ERR_INVALID, "bad CSV",
                             "line %llu: a quoted field is still open after %d lines",
                             (unsigned long long)first, MAX_RECORD_LINES);
        return EB_OK;
    }
    st = eb_backfill_csv_record(r->rec, r->rec_len, &pos, fields, MAX_COLUMNS, &nf, &used, why,
                                sizeof why);
    if (st == EB_ERR_NOMEM) {
        snprintf(err, err_len, "out of memory reading %s", r->path);
        return st;
    }
    if (st != EB_OK) {
        eb_backfill_row_fail(row, EB_ERR_INVALID, "bad CSV", "line %llu: %s",
                             (unsigned long long)first, why);
        return EB_OK;
    }
    if (nf != r->n_header) {
        eb_backfill_row_fail(row, EB_ERR_INVALID, "bad CSV",
                             "line %llu: %zu fields, the header has %zu",
                             (unsigned long long)first, nf, r->n_header);
    } else {
        char **dst[N_COLS] = {&row->product_id, &row->template_name, &row->text, &row->image};
        for (int c = 0; c < N_COLS; c++)
            if (r->col[c] >= 0)
                *dst[c] = nonempty_dup(fields[r->col[c]]);
    }
    free_fields(fields, nf, MAX_COLUMNS);
    return EB_OK;
}

static eb_status read_csv_header(eb_backfill_reader *r, char *err, size_t err_len)
{
    uint64_t first = 0;
    bool cut = false;
    eb_status st = read_csv_record(r, &first, &cut, err, err_len);
    if (st == EB_ERR_NOT_FOUND) {
        snprintf(err, err_len, "%s is empty: a CSV input needs a header row naming the columns "
                 "product_id, template, text, image", r->path);
        return EB_ERR_INVALID;
    }
    if (st != EB_OK)
        return st;
    char *fields[MAX_COLUMNS];
    size_t nf = 0, pos = 0;
    unsigned used = 0;
    char why[160];
    st = cut ? EB_ERR_INVALID
             : eb_backfill_csv_record(r->rec, r->rec_len, &pos, fields, MAX_COLUMNS, &nf, &used,
                                      why, sizeof why);
    if (st != EB_OK) {
        snprintf(err, err_len, "%s: the CSV header (line %llu) cannot be read: %s", r->path,
                 (unsigned long long)first, cut ? "unterminated quote" : why);
        return EB_ERR_INVALID;
    }
    for (int c = 0; c < N_COLS; c++)
        r->col[c] = -1;
    for (size_t i = 0; i < nf && i < MAX_COLUMNS; i++) {
        int c = eb_backfill_column_of(fields[i]);
        if (c >= 0 && r->col[c] < 0)
            r->col[c] = (int)i;
    }
    free_fields(fields, nf, MAX_COLUMNS);
    r->n_header = nf;
    if (r->col[COL_PRODUCT] < 0) {
        snprintf(err, err_len, "%s: the CSV header (line %llu) has no product_id column; name "
                 "the columns product_id, template, text, image", r->path,
                 (unsigned long long)first);
        return EB_ERR_INVALID;
    }
    if (r->col[COL_TEXT] < 0 && r->col[COL_IMAGE] < 0) {
        snprintf(err, err_len, "%s: the CSV header (line %llu) has neither a text nor an image "
                 "column", r->path, (unsigned long long)first);
        return EB_ERR_INVALID;
    }
    return EB_OK;
}

/* ---- JSONL ----------------------------------------------------------------------------- */

/* A string member, an integer member rendered in decimal, or NULL (absent / null / ""). false
 * when the member has another type. */
static bool json_member(const cJSON *obj, const char *key, char **out)
{
    *out = NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v))
        return true;
    if (cJSON_IsString(v)) {
        *out = nonempty_dup(v->valuestring);
        return true;
    }
    if (cJSON_IsNumber(v) && v->valuedouble == (double)(long long)v->valuedouble) {
        char buf[32];
        snprintf(buf, sizeof buf, "%lld", (long long)v->valuedouble);
        *out = strdup(buf);
        return true;
    }
    return false;
}

static eb_status next_jsonl(eb_backfill_reader *r, eb_backfill_row *row, char *err,
                            size_t err_len)
{
    uint64_t first = 0;
    ssize_t n = next_line(r, &first);
    if (n == -1)
        return EB_ERR_NOT_FOUND;
    if (n == -2) {
        snprintf(err, err_len, "cannot read %s: %s", r->path, strerror(errno));
        return EB_ERR_IO;
    }
    row->ordinal = r->next_ordinal++;
    row->line = first;
    if (!eb_proto_utf8_valid(r->buf, (size_t)n) || memchr(r->buf, 0, (size_t)n)) {
        eb_backfill_row_fail(row, EB_ERR_INVALID, "invalid UTF-8",
                             "line %llu is not valid UTF-8", (unsigned long long)first);
        return EB_OK;
    }
    const char *end = NULL;
    cJSON *obj = cJSON_ParseWithLengthOpts(r->buf, (size_t)n, &end, false);
    if (!obj || !cJSON_IsObject(obj)) {
        eb_backfill_row_fail(row, EB_ERR_INVALID, "invalid JSON",
                             "line %llu is not a JSON object", (unsigned long long)first);
        cJSON_Delete(obj);
        return EB_OK;
    }
    if (end && !blank(end, (size_t)(r->buf + n - end))) {
        eb_backfill_row_fail(row, EB_ERR_INVALID, "invalid JSON",
                             "line %llu has text after the JSON object",
                             (unsigned long long)first);
        cJSON_Delete(obj);
        return EB_OK;
    }
    static const char *const keys[N_COLS] = {"product_id", "template", "text", "image"};
    char **dst[N_COLS] = {&row->product_id, &row->template_name, &row->text, &row->image};
    for (int c = 0; c < N_COLS; c++)
        if (!json_member(obj, keys[c], dst[c]))
            eb_backfill_row_fail(row, EB_ERR_INVALID, "invalid JSON",
                                 "line %llu: \"%s\" must be a string%s",
                                 (unsigned long long)first, keys[c],
                                 c == COL_PRODUCT ? " or an integer" : "");
    cJSON_Delete(obj);
    return EB_OK;
}

/* ---- reader ---------------------------------------------------------------------------- */

static bool ends_with_csv(const char *path)
{
    size_t n = strlen(path);
    return n >= 4 && strcasecmp(path + n - 4, ".csv") == 0;
}

eb_backfill_reader *eb_backfill_reader_open(const char *path, eb_backfill_format format,
                                            char *err, size_t err_len)
{
    eb_backfill_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        snprintf(err, err_len, "out of memory");
        free(r);
        return NULL;
    }
    r->format = format != EB_BACKFILL_AUTO ? format
                                           : ends_with_csv(path) ? EB_BACKFILL_CSV
                                                                 : EB_BACKFILL_JSONL;
    r->f = fopen(path, "r");
    if (!r->f) {
        snprintf(err, err_len, "cannot open %s: %s", path, strerror(errno));
        eb_backfill_reader_close(&r);
        return NULL;
    }
    if (r->format == EB_BACKFILL_CSV && read_csv_header(r, err, err_len) != EB_OK) {
        eb_backfill_reader_close(&r);
        return NULL;
    }
    return r;
}

eb_status eb_backfill_reader_next(eb_backfill_reader *r, eb_backfill_row *row, char *err,
                                  size_t err_len)
{
    eb_backfill_row_clear(row);
    return r->format == EB_BACKFILL_CSV ? next_csv(r, row, err, err_len)
                                        : next_jsonl(r, row, err, err_len);
}

eb_backfill_format eb_backfill_reader_format(const eb_backfill_reader *r)
{
    return r->format;
}

void eb_backfill_reader_close(eb_backfill_reader **rp)
{
    if (!rp || !*rp)
        return;
    eb_backfill_reader *r = *rp;
    if (r->f)
        fclose(r->f);
    free(r->path);
    free(r->buf);
    free(r->rec);
    free(r);
    *rp = NULL;
}

eb_status eb_backfill_count_rows(const char *path, eb_backfill_format format, uint64_t *n,
                                 char *err, size_t err_len)
{
    *n = 0;
    eb_backfill_reader *r = eb_backfill_reader_open(path, format, err, err_len);
    if (!r)
        return EB_ERR_IO;
    eb_backfill_row row;
    memset(&row, 0, sizeof row);
    eb_status st;
    while ((st = eb_backfill_reader_next(r, &row, err, err_len)) == EB_OK)
        (*n)++;
    eb_backfill_row_clear(&row);
    eb_backfill_reader_close(&r);
    return st == EB_ERR_NOT_FOUND ? EB_OK : st;
}
