/* Tests of the backfill modules: eb_backfill_input (CSV and JSONL rows, quoting, bad rows),
 * eb_backfill_state (checkpoint watermark, save/load, resume rules) and eb_backfill (the loop:
 * stores in the bulk class, retries, failures with reasons, duplicates, and a resume from a
 * checkpoint copied mid-run, as a kill would leave it, that redoes every row not acknowledged).
 * The loop runs against client_test_broker.h, a ROUTER speaking the real protocol; the real
 * broker is exercised by tests/integration/test_scan.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client_test_broker.h"
#include "eb_backfill.h"
#include "eb_backfill_input.h"
#include "eb_backfill_state.h"
#include "eb_hash.h"
#include "eb_test.h"
#include "embroker.h"

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

static char *path_in(const char *dir, const char *name)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
    return p;
}

/* ---- CSV records ------------------------------------------------------------------------- */

static void test_csv_record_quoting(void **state)
{
    (void)state;
    const char *data = "a,\"b,c\",\"say \"\"hi\"\"\",,\"multi\nline\"\r\n"
                       "x,y\n"
                       "\"q\"junk,z\n"
                       "last";
    size_t len = strlen(data), pos = 0, n = 0;
    unsigned lines = 0;
    char *f[8];
    char err[128];
    assert_int_equal(eb_backfill_csv_record(data, len, &pos, f, 8, &n, &lines, err, sizeof err),
                     EB_OK);
    assert_int_equal(n, 5);
    assert_string_equal(f[0], "a");
    assert_string_equal(f[1], "b,c");
    assert_string_equal(f[2], "say \"hi\"");
    assert_string_equal(f[3], "");
    assert_string_equal(f[4], "multi\nline");
    assert_int_equal(lines, 2);
    for (size_t i = 0; i < n; i++)
        free(f[i]);
    assert_int_equal(eb_backfill_csv_record(data, len, &pos, f, 8, &n, &lines, err, sizeof err),
                     EB_OK);
    assert_int_equal(n, 2);
    assert_string_equal(f[1], "y");
    free(f[0]);
    free(f[1]);
    /* text after a closing quote: the record fails, the next line is read normally */
    assert_int_equal(eb_backfill_csv_record(data, len, &pos, f, 8, &n, &lines, err, sizeof err),
                     EB_ERR_INVALID);
    assert_non_null(strstr(err, "after the closing quote"));
    assert_int_equal(eb_backfill_csv_record(data, len, &pos, f, 8, &n, &lines, err, sizeof err),
                     EB_OK);
    assert_int_equal(n, 1);
    assert_string_equal(f[0], "last");
    free(f[0]);
    assert_int_equal(eb_backfill_csv_record(data, len, &pos, f, 8, &n, &lines, err, sizeof err),
                     EB_ERR_NOT_FOUND);
    /* an unterminated quote at the end of the data is reported, not read past */
    const char *open = "\"open,never closed\nmore";
    pos = 0;
    assert_int_equal(eb_backfill_csv_record(open, strlen(open), &pos, f, 8, &n, &lines, err,
                                            sizeof err),
                     EB_ERR_INVALID);
    assert_non_null(strstr(err, "unterminated"));
    assert_int_equal(n, 0);
    assert_true(pos <= strlen(open));
}

/* ---- readers ----------------------------------------------------------------------------- */

static void test_csv_reader_rows(void **state)
{
    (void)state;
    char *dir = eb_test_tmpdir("backfill");
    char *csv = path_in(dir, "products.CSV");
    const char *text = "\xEF\xBB\xBF" "ProductId,extra,BusinessTemplate,text,image_path\r\n"
                       "P1,x,shoes,\"red, with laces\",img/p1.jpg\r\n"
                       "\r\n"
                       "P2,x,shoes,\"two\nlines \"\"quoted\"\"\",\r\n"
                       "P3,x,shoes\r\n"
                       ",x,bags,no id,\r\n"
                       "P5,x,,\"bad \xff utf8\",\r\n"
                       "P6,x,bags,,\r\n";
    write_file(csv, text, strlen(text));
    char err[512];
    eb_backfill_reader *r = eb_backfill_reader_open(csv, EB_BACKFILL_AUTO, err, sizeof err);
    assert_non_null(r);
    assert_int_equal(eb_backfill_reader_format(r), EB_BACKFILL_CSV);
    eb_backfill_row row;
    memset(&row, 0, sizeof row);

    assert_int_equal(eb_backfill_reader_next(r, &row, err, sizeof err), EB_OK);
    assert_int_equal(row.ordinal, 0);
    assert_int_equal(row.line, 2);
    assert_string_equal(row.product_id, "P1");
    assert_string_equal(row.template_name, "shoes");
    assert_string_equal(row.text, "red, with laces");
    assert_string_equal(row.image, "img/p1.jpg");
    assert_true(eb_backfill_row_validate(&row));

    assert_int_equal(eb_backfill_reader_next(r, &row, err, sizeof err), EB_OK);
    assert_int_equal(row.ordinal, 1); /* the blank line is not a row */
    assert_int_equal(row.line, 4);
    assert_string_equal(row.text, "two\nlines \"quoted\"");
    assert_null(row.image); /* empty field = absent */
    assert_true(eb_backfill_row_validate(&row));

    assert_int_equal(eb_backfill_reader_next(r, &row, err, sizeof err), EB_OK);
    assert_int_equal(row.ordinal, 2);
    assert_int_equal(row.line, 6); /* the quoted newline used line 5 */
    assert_int_not_equal(row.status, EB_OK);
    assert_string_equal(row.reason, "bad CSV");
    assert_non_null(strstr(row.error, "3 fields, the header has 5"));

    assert_int_equal(eb_backfill_reader_next(r, &row, err, sizeof err), EB_OK);
    assert_false(eb_backfill_row_validate(&row));
    assert_string_equal(row.reason, "missing product_id");

    assert_int_equal(eb_backfill_reader_next(r, &row, err, sizeof err), EB_OK);
    assert_string_equal(row.product_id, "P5");
    assert_null(row.template_name);
    row.template_name = strdup("default-tmpl"); /* what --template-default does */
    assert_false(eb_backfill_row_validate(&row));
    assert_string_equal(row.reason, "invalid UTF-8");

    assert_int_equal(eb_backfill_reader_next(r, &row, err, sizeof err), EB_OK);
    assert_false(eb_backfill_row_validate(&row));
    assert_string_equal(row.reason, "no text or image");
    assert_int_equal(row.ordinal, 5);

    assert_int_equal(eb_backfill_reader_next(r, &row, err, sizeof err), EB_ERR_NOT_FOUND);
    eb_backfill_row_clear(&row);
    eb_backfill_reader_close(&r);
    assert_null(r);
    uint64_t n = 0;
    assert_int_equal(eb_backfill_count_rows(csv, EB_BACKFILL_AUTO, &n, err, sizeof err), EB_OK);
    assert_int_equal(n, 6);

    /* a header without a product id column is refused up front */
    write_file(csv, "sku,text\n1,a\n", 13);
    assert_null(eb_backfill_reader_open(csv, EB_BACKFILL_CSV, err, sizeof err));
    assert_non_null(strstr(err, "no product_id column"));
    assert_null(eb_backfill_reader_open("/nonexistent/p.csv", EB_BACKFILL_AUTO, err, sizeof err));
    assert_non_null(strstr(err, "cannot open"));
    eb_test_rmtree(dir);
    free(csv);
    free(dir);
}

static void test_jsonl_reader_rows(void **state)
{
    (void)state;
    char *dir = eb_test_tmpdir("backfill");
    char *jl = path_in(dir, "products.jsonl");
    const char *text =
        "{\"product_id\": \"A1\", \"template\": \"shoes\", \"text\": \"caf\\u00e9 \\\"x\\\"\", "
        "\"image\": \"a1.png\", \"price\": 3}\n"
        "\n"
        "{\"product_id\": 1234, \"template\": \"shoes\", \"text\": null, \"image\": \"b.png\"}\n"
        "{\"product_id\": \"A3\", \"template\": \n"
        "{\"product_id\": \"A4\", \"template\": \"t\", \"text\": \"\xc3\x28\"}\n"
        "{\"product_id\": [1], \"template\": \"t\", \"text\": \"x\"}\n"
        "{\"product_id\": \"A6\", \"text\": \"ok\"} trailing\n"
        "[1, 2]\n"
        "{\"product_id\": \"A8\", \"text\": \"no template\"}\n";
    write_file(jl, text, strlen(text));
    char err[512];
    eb_backfill_reader *r = eb_backfill_reader_open(jl, EB_BACKFILL_AUTO, err, sizeof err);
    assert_non_null(r);
    assert_int_equal(eb_backfill_reader_format(r), EB_BACKFILL_JSONL);
    eb_backfill_row row;
    memset(&row, 0, sizeof row);
    assert_int_equal(eb_backfill_reader_next(r, &row, err, sizeof err), EB_OK);
    assert_int_equal(row.status, EB_OK);
    assert_string_equal(row.product_id, "A1");
    assert_string_equal(row.text, "caf\xc3\xa9 \"x\"");
    assert_string_equal(row.image, "a1.png");
    assert_true(eb_backfill_row_validate(&row));

    assert_int_equal(eb_backfill_reader_next(r, &row, err, sizeof err), EB_OK);
    assert_int_equal(row.ordinal, 1);
    assert_int_equal(row.line, 3);
    assert_string_equal(row.product_id, "1234"); /* integers are accepted as ids */
    assert_null(row.text);
    assert_true(eb_backfill_row_validate(&row));

    const char *reasons[] = {"invalid JSON", "invalid UTF-8", "invalid JSON", "invalid JSON",
                             "invalid JSON"};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(eb_backfill_reader_next(r, &row, err, sizeof err), EB_OK);
        assert_int_equal(row.ordinal, 2 + i);
        assert_false(eb_backfill_row_validate(&row));
        assert_string_equal(row.reason, reasons[i]);
    }
    assert_int_equal(eb_backfill_reader_next(r, &row, err, sizeof err), EB_OK);
    assert_false(eb_backfill_row_validate(&row));
    assert_string_equal(row.reason, "missing template");
    assert_non_null(strstr(row.error, "A8"));
    assert_int_equal(eb_backfill_reader_next(r, &row, err, sizeof err), EB_ERR_NOT_FOUND);
    eb_backfill_row_clear(&row);
    eb_backfill_reader_close(&r);
    eb_test_rmtree(dir);
    free(jl);
    free(dir);
}

/* ---- checkpoint state -------------------------------------------------------------------- */

static void test_state_watermark_and_file(void **state)
{
    (void)state;
    char *dir = eb_test_tmpdir("backfill");
    char *input = path_in(dir, "in.jsonl");
    char *ck = path_in(dir, "in.jsonl.checkpoint");
    write_file(input, "{\"product_id\": \"a\"}\n", 20);
    char err[512];
    char *id = eb_backfill_state_input_id(input, NULL, err, sizeof err);
    assert_non_null(id);
    assert_true(strncmp(id, "file 20 ", 8) == 0);
    eb_backfill_state *st = eb_backfill_state_new(id);
    assert_int_equal(eb_backfill_state_load(st, ck, err, sizeof err), EB_ERR_NOT_FOUND);
    /* rows finish out of order: the watermark only moves over a settled prefix */
    eb_backfill_state_mark_done(st, 1);
    eb_backfill_state_mark_done(st, 3);
    assert_int_equal(eb_backfill_state_watermark(st), 0);
    assert_false(eb_backfill_state_is_done(st, 0));
    assert_true(eb_backfill_state_is_done(st, 1));
    eb_backfill_state_mark_failed(st, 0);
    assert_int_equal(eb_backfill_state_watermark(st), 2);
    assert_false(eb_backfill_state_is_done(st, 0)); /* failed rows are tried again */
    assert_false(eb_backfill_state_is_done(st, 2)); /* in flight: not done */
    eb_backfill_state_mark_failed(st, 5);
    assert_int_equal(eb_backfill_state_ahead(st), 2); /* 3 and 5 */
    assert_int_equal(eb_backfill_state_save(st, ck, err, sizeof err), EB_OK);
    struct stat sb;
    char *tmp = path_in(dir, "in.jsonl.checkpoint.tmp");
    assert_int_not_equal(stat(tmp, &sb), 0); /* renamed into place */

    eb_backfill_state *again = eb_backfill_state_new(id);
    assert_int_equal(eb_backfill_state_load(again, ck, err, sizeof err), EB_OK);
    assert_int_equal(eb_backfill_state_watermark(again), 2);
    assert_false(eb_backfill_state_is_done(again, 0));
    assert_true(eb_backfill_state_is_done(again, 1));
    assert_false(eb_backfill_state_is_done(again, 2));
    assert_true(eb_backfill_state_is_done(again, 3));
    assert_false(eb_backfill_state_is_done(again, 4));
    assert_false(eb_backfill_state_is_done(again, 5));
    assert_int_equal(eb_backfill_state_failed_count(again), 2);
    /* the retried row succeeds: no longer failed */
    eb_backfill_state_mark_done(again, 0);
    assert_int_equal(eb_backfill_state_failed_count(again), 1);
    assert_true(eb_backfill_state_is_done(again, 0));
    eb_backfill_state_mark_done(again, 2);
    eb_backfill_state_mark_done(again, 4);
    assert_int_equal(eb_backfill_state_watermark(again), 6);
    eb_backfill_state_destroy(&again);

    /* rows appended to the input keep the checkpoint valid */
    write_file(input, "{\"product_id\": \"a\"}\n{\"product_id\": \"b\"}\n", 40);
    char *id2 = eb_backfill_state_input_id(input, NULL, err, sizeof err);
    assert_string_not_equal(id, id2);
    again = eb_backfill_state_new(id2);
    assert_int_equal(eb_backfill_state_load(again, ck, err, sizeof err), EB_OK);
    eb_backfill_state_destroy(&again);
    /* a rewritten input does not */
    write_file(input, "{\"product_id\": \"z\"}\n", 20);
    char *id3 = eb_backfill_state_input_id(input, NULL, err, sizeof err);
    again = eb_backfill_state_new(id3);
    assert_int_equal(eb_backfill_state_load(again, ck, err, sizeof err), EB_ERR_INVALID);
    assert_non_null(strstr(err, "another input"));
    eb_backfill_state_destroy(&again);
    /* a query is identified by its text */
    char *q1 = eb_backfill_state_input_id(NULL, "SELECT 1", err, sizeof err);
    char *q2 = eb_backfill_state_input_id(NULL, "SELECT 2", err, sizeof err);
    assert_true(strncmp(q1, "sql ", 4) == 0);
    assert_string_not_equal(q1, q2);

    /* a truncated checkpoint is refused, not taken as "nothing done" */
    FILE *f = fopen(ck, "r");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    char *end = strstr(buf, "end\n");
    assert_non_null(end);
    write_file(ck, buf, (size_t)(end - buf));
    again = eb_backfill_state_new(id);
    assert_int_equal(eb_backfill_state_load(again, ck, err, sizeof err), EB_ERR_INVALID);
    assert_non_null(strstr(err, "incomplete"));
    eb_backfill_state_destroy(&again);
    write_file(ck, "hello\n", 6);
    again = eb_backfill_state_new(id);
    assert_int_equal(eb_backfill_state_load(again, ck, err, sizeof err), EB_ERR_INVALID);
    assert_non_null(strstr(err, "not a backfill checkpoint"));
    eb_backfill_state_destroy(&again);
    (void)n;

    eb_backfill_state_destroy(&st);
    eb_test_rmtree(dir);
    free(id);
    free(id2);
    free(id3);
    free(q1);
    free(q2);
    free(tmp);
    free(input);
    free(ck);
    free(dir);
}

/* ---- the loop against a broker stand-in -------------------------------------------------- */

enum { N_ROWS = 40, MAX_SEEN = 256 };

typedef struct store_broker {
    char acked[MAX_SEEN][32]; /* product ids acknowledged, in order */
    int n_acked;
    int snapshot_at;          /* copy the checkpoint when this many were acked (0: never) */
    const char *checkpoint, *snapshot;
    bool snapshot_taken;
    int snapshot_acked;       /* acks sent before the copy */
    int busy_left;            /* answer this many requests for "busy-1" with EB_ERR_BUSY */
    bool bulk_always, hashes_ok;
    const uint8_t *image;     /* bytes of the one image in the input */
    size_t image_len;
    bool image_seen;
} store_broker;

static void copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    if (!in)
        return; /* no checkpoint written yet: a kill now leaves none */
    FILE *out = fopen(to, "wb");
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
}

static bool answer_store(tbroker *tb, const eb_proto_request *req, const eb_frames *frames,
                         const eb_frames_view *view, eb_proto_msg *rep, zmq_msg_t *items,
                         size_t *n_items)
{
    (void)n_items, (void)items;
    store_broker *sb = tb->arg;
    static eb_proto_result results[2];
    eb_proto_reply *r = &rep->u.reply;
    if (req->op != EB_OP_STORE)
        return false;
    usleep(2000); /* an embedding takes time: replies trickle in while the loop checkpoints */
    if (req->options.priority != EB_PRIORITY_BULK)
        sb->bulk_always = false;
    const char *pid = req->options.product_id;
    if (strcmp(pid, "busy-1") == 0 && sb->busy_left > 0) {
        sb->busy_left--;
        r->status = EB_ERR_BUSY;
        r->error = "bulk queue full";
        return true;
    }
    for (uint32_t i = 0; i < req->n_inputs; i++) {
        const eb_proto_input *in = &req->inputs[i];
        uint8_t want[EB_HASH_LEN];
        if (in->kind == EB_INPUT_TEXT) {
            eb_content_hash("text", 0, 0, "", in->text, in->text_len, want);
        } else {
            const zmq_msg_t *f = &frames->parts[view->first_item + in->frame];
            const void *bytes = zmq_msg_data((zmq_msg_t *)f);
            size_t len = zmq_msg_size((zmq_msg_t *)f);
            eb_content_hash("image", 0, 0, "", bytes, len, want);
            sb->image_seen = len == sb->image_len && memcmp(bytes, sb->image, len) == 0;
        }
        if (!in->has_hash || memcmp(want, in->hash, EB_HASH_LEN) != 0)
            sb->hashes_ok = false;
        memset(&results[i], 0, sizeof results[i]);
        results[i].dims = 4;
        if (strcmp(pid, "undecodable") == 0) {
            results[i].status = EB_ERR_DECODE;
            results[i].error = "not an image (bad magic bytes)";
            results[i].dims = 0;
        }
    }
    r->n_results = req->n_inputs;
    r->results = results;
    if (strcmp(pid, "undecodable") != 0) {
        r->store_id = "11111111-2222-4333-8444-555555555555";
        if (sb->n_acked < MAX_SEEN)
            snprintf(sb->acked[sb->n_acked++], sizeof sb->acked[0], "%s", pid);
    }
    if (sb->snapshot_at && sb->n_acked == sb->snapshot_at && !sb->snapshot_taken) {
        /* A kill right now would leave the checkpoint as it is on disk now. */
        copy_file(sb->checkpoint, sb->snapshot);
        sb->snapshot_taken = true;
        sb->snapshot_acked = sb->n_acked;
    }
    return true;
}

static bool acked(const store_broker *sb, const char *pid, int upto)
{
    for (int i = 0; i < upto && i < sb->n_acked; i++)
        if (strcmp(sb->acked[i], pid) == 0)
            return true;
    return false;
}

static eb_status reader_next(void *ctx, eb_backfill_row *row, char *err, size_t err_len)
{
    return eb_backfill_reader_next(ctx, row, err, err_len);
}

static void run_backfill(const char *input, const char *checkpoint, store_broker *sb,
                         eb_backfill_summary *sum, eb_status want)
{
    tbroker tb;
    assert_true(tbroker_start(&tb, answer_store, sb));
    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.broker = tb.endpoint;
    embroker_t *eb = NULL;
    char err[512];
    assert_int_equal(embroker_connect(&opt, &eb, err, sizeof err), EB_OK);
    eb_backfill_reader *r = eb_backfill_reader_open(input, EB_BACKFILL_AUTO, err, sizeof err);
    assert_non_null(r);
    char *id = eb_backfill_state_input_id(input, NULL, err, sizeof err);
    eb_backfill_state *st = eb_backfill_state_new(id);
    eb_status ls = eb_backfill_state_load(st, checkpoint, err, sizeof err);
    assert_true(ls == EB_OK || ls == EB_ERR_NOT_FOUND);
    char *copy = strdup(input);
    eb_backfill_source src = {.ctx = r, .base_dir = dirname(copy), .total_rows = N_ROWS};
    src.next = reader_next;
    eb_backfill_config cfg = {0};
    cfg.template_default = "tmpl";
    cfg.source_type = "catalogue";
    cfg.in_flight = 4;
    cfg.state = st;
    cfg.checkpoint_path = checkpoint;
    cfg.checkpoint_interval_ms = 1; /* save after nearly every reply */
    cfg.max_attempts = 3;
    assert_int_equal(eb_backfill_run(eb, &src, &cfg, sum, err, sizeof err), want);
    eb_backfill_state_destroy(&st);
    eb_backfill_reader_close(&r);
    embroker_close(&eb);
    tbroker_stop(&tb);
    free(copy);
    free(id);
}

static void test_backfill_loop_and_resume(void **state)
{
    (void)state;
    char *dir = eb_test_tmpdir("backfill");
    char *input = path_in(dir, "cat.jsonl");
    char *ck = path_in(dir, "cat.jsonl.checkpoint");
    char *snap = path_in(dir, "snapshot.checkpoint");
    char *imgdir = path_in(dir, "img");
    mkdir(imgdir, 0700);
    char *img = path_in(dir, "img/p0.png");
    uint8_t png[100];
    for (size_t i = 0; i < sizeof png; i++)
        png[i] = (uint8_t)(i ^ 0x5a);
    write_file(img, (const char *)png, sizeof png);

    /* 40 rows: p0 with an image (relative path), p1..p33 texts, then a duplicate, a row
     * without id, a missing image, one the "broker" cannot decode, one that is first refused as
     * busy, one more good row. */
    FILE *f = fopen(input, "w");
    fprintf(f, "{\"product_id\": \"p0\", \"image\": \"img/p0.png\", \"text\": \"zero\"}\n");
    for (int i = 1; i <= 33; i++)
        fprintf(f, "{\"product_id\": \"p%d\", \"template\": \"t%d\", \"text\": \"item %d\"}\n",
                i, i % 3, i);
    fprintf(f, "{\"product_id\": \"p5\", \"text\": \"duplicate\"}\n");
    fprintf(f, "{\"text\": \"no id\"}\n");
    fprintf(f, "{\"product_id\": \"noimg\", \"image\": \"img/missing.png\"}\n");
    fprintf(f, "{\"product_id\": \"undecodable\", \"text\": \"x\"}\n");
    fprintf(f, "{\"product_id\": \"busy-1\", \"text\": \"later\"}\n");
    fprintf(f, "{\"product_id\": \"p39\", \"text\": \"last\"}\n");
    fclose(f);

    /* Run 1 to the end; the checkpoint is copied when 15 rows were acknowledged. */
    store_broker sb1 = {.snapshot_at = 15, .checkpoint = ck, .snapshot = snap, .busy_left = 1,
                        .bulk_always = true, .hashes_ok = true, .image = png,
                        .image_len = sizeof png};
    eb_backfill_summary s1;
    run_backfill(input, ck, &sb1, &s1, EB_OK);
    assert_int_equal(s1.rows, N_ROWS);
    assert_int_equal(s1.done, 36); /* p0..p33, busy-1 (after a retry), p39 */
    assert_int_equal(s1.skipped_duplicate, 1);
    assert_int_equal(s1.failed, 3);
    assert_true(s1.retries >= 1);
    assert_true(sb1.bulk_always);
    assert_true(sb1.hashes_ok);   /* every input carried the worker's hash */
    assert_true(sb1.image_seen);  /* the image's bytes, read relative to the input */
    assert_int_equal(sb1.n_acked, 36);
    assert_true(sb1.snapshot_taken);
    struct stat snap_st;
    assert_int_equal(stat(snap, &snap_st), 0); /* a checkpoint existed mid-run */
    const char *want_reasons[] = {"missing product_id", "image unreadable", "broker: decode"};
    for (size_t k = 0; k < 3; k++) {
        bool found = false;
        for (size_t i = 0; i < s1.n_reasons; i++)
            if (strcmp(s1.reasons[i].reason, want_reasons[k]) == 0) {
                found = s1.reasons[i].count == 1 && s1.reasons[i].n_examples == 1;
                if (k == 2)
                    assert_non_null(strstr(s1.reasons[i].examples[0], "undecodable"));
            }
        assert_true(found);
    }
    assert_int_equal(s1.watermark, N_ROWS);

    /* Run 2 over the finished checkpoint: only the 3 failed rows are tried again. */
    store_broker sb2 = {.bulk_always = true, .hashes_ok = true, .image = png,
                        .image_len = sizeof png};
    eb_backfill_summary s2;
    run_backfill(input, ck, &sb2, &s2, EB_OK);
    assert_int_equal(s2.done, 0);
    assert_int_equal(s2.failed, 3);
    assert_int_equal(s2.skipped_checkpoint, N_ROWS - 3);
    assert_int_equal(sb2.n_acked, 0);

    /* Run 3 from the mid-run copy, as after a kill: every row not acknowledged before the copy
     * is stored again; rows skipped are only rows acknowledged before it. */
    store_broker sb3 = {.bulk_always = true, .hashes_ok = true, .image = png,
                        .image_len = sizeof png};
    eb_backfill_summary s3;
    run_backfill(input, snap, &sb3, &s3, EB_OK);
    assert_true(s3.skipped_checkpoint > 0);               /* the checkpoint saved work */
    assert_true(s3.skipped_checkpoint <= (uint64_t)sb1.snapshot_acked);
    char pid[32];
    for (int i = 0; i <= 33; i++) {
        snprintf(pid, sizeof pid, "p%d", i);
        if (!acked(&sb3, pid, MAX_SEEN)) /* skipped by run 3: must have been acknowledged */
            assert_true(acked(&sb1, pid, sb1.snapshot_acked));
    }
    assert_true(acked(&sb3, "p39", MAX_SEEN));
    assert_true(acked(&sb3, "busy-1", MAX_SEEN));
    assert_int_equal(s3.done + s3.skipped_checkpoint + s3.skipped_duplicate + s3.failed, s3.rows);
    assert_int_equal(s3.rows, N_ROWS);

    eb_test_rmtree(dir);
    free(input);
    free(ck);
    free(snap);
    free(imgdir);
    free(img);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_record_quoting),
        cmocka_unit_test(test_csv_reader_rows),
        cmocka_unit_test(test_jsonl_reader_rows),
        cmocka_unit_test(test_state_watermark_and_file),
        cmocka_unit_test(test_backfill_loop_and_resume),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
