/* Tests of the client library (clientlib/embroker.c) that need no broker: argument checks that
 * refuse bad requests before anything is sent, connect errors, and the asynchronous API's
 * pending/timeout/cancel states. tcp:// connects lazily, so a handle to a closed port can queue
 * requests that are never answered. What scan/store/delete put on the wire and how their replies
 * are read is checked against a ROUTER speaking the real protocol (client_test_broker.h): the
 * request bytes are decoded with eb_proto_decode, the client hashes are compared with
 * eb_content_hash of the same bytes. The end-to-end behaviour is in tests/integration/. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client_test_broker.h"
#include "eb_hash.h"
#include "embroker.h"
#include "eb_test.h"

static embroker_t *lazy_handle(uint64_t max_inline)
{
    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.broker = "tcp://127.0.0.1:9"; /* nobody listens: requests stay pending */
    opt.max_inline_bytes = max_inline;
    opt.heartbeat_interval_ms = 50;
    embroker_t *eb = NULL;
    char err[256];
    assert_int_equal(embroker_connect(&opt, &eb, err, sizeof err), EB_OK);
    assert_non_null(eb);
    assert_false(embroker_uses_shm(eb)); /* tcp: inline only */
    assert_null(embroker_segment_name(eb));
    return eb;
}

static void test_connect_to_missing_ipc_broker(void **state)
{
    (void)state;
    char *dir = eb_test_tmpdir("client");
    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.broker = NULL;
    opt.run_dir = dir;
    embroker_t *eb = (embroker_t *)&opt; /* must be reset to NULL */
    char err[512];
    assert_int_equal(embroker_connect(&opt, &eb, err, sizeof err), EB_ERR_UNAVAILABLE);
    assert_null(eb);
    assert_non_null(strstr(err, "frontend.sock"));
    assert_non_null(strstr(err, "is embrokerd running"));
    eb_test_rmtree(dir);
    free(dir);
}

static void test_submit_refuses_bad_requests(void **state)
{
    (void)state;
    embroker_t *eb = lazy_handle(100);
    embroker_request_t *req = (embroker_request_t *)eb;
    char err[512];
    uint8_t bytes[200] = {1, 2, 3};
    embroker_input_t img = {.kind = EMBROKER_INPUT_IMAGE, .bytes = bytes, .len = 10};
    embroker_input_t txt = {.kind = EMBROKER_INPUT_TEXT, .bytes = "hi", .len = 2};

    /* bad model name */
    assert_int_equal(embroker_submit(eb, "Bad Model", &img, 1, NULL, &req, err, sizeof err),
                     EB_ERR_INVALID);
    assert_null(req);
    assert_non_null(strstr(err, "Bad Model"));
    /* no inputs */
    assert_int_equal(embroker_submit(eb, "m", &img, 0, NULL, &req, err, sizeof err),
                     EB_ERR_INVALID);
    /* images and texts mixed */
    embroker_input_t mixed[2] = {img, txt};
    assert_int_equal(embroker_submit(eb, "m", mixed, 2, NULL, &req, err, sizeof err),
                     EB_ERR_INVALID);
    assert_non_null(strstr(err, "mix"));
    /* inline over the limit: refused before sending, with the limit named */
    embroker_input_t big = {.kind = EMBROKER_INPUT_IMAGE, .bytes = bytes, .len = 101};
    assert_int_equal(embroker_submit(eb, "m", &big, 1, NULL, &req, err, sizeof err),
                     EB_ERR_TOO_LARGE);
    assert_non_null(strstr(err, "max_inline_bytes=100"));
    assert_null(req);
    /* raw RGB8 whose length does not match width*height*3 */
    embroker_input_t raw = {.kind = EMBROKER_INPUT_RAW_RGB8, .width = 2, .height = 2,
                            .bytes = bytes, .len = 11};
    assert_int_equal(embroker_submit(eb, "m", &raw, 1, NULL, &req, err, sizeof err),
                     EB_ERR_INVALID);
    assert_non_null(strstr(err, "needs 12 bytes"));
    /* text that is not UTF-8 */
    embroker_input_t bad_text = {.kind = EMBROKER_INPUT_TEXT, .bytes = "\xff\xfe", .len = 2};
    assert_int_equal(embroker_submit(eb, "m", &bad_text, 1, NULL, &req, err, sizeof err),
                     EB_ERR_INVALID);
    /* an empty image */
    embroker_input_t empty = {.kind = EMBROKER_INPUT_IMAGE, .bytes = bytes, .len = 0};
    assert_int_equal(embroker_submit(eb, "m", &empty, 1, NULL, &req, err, sizeof err),
                     EB_ERR_INVALID);
    embroker_close(&eb);
    assert_null(eb);
}

static void test_pending_timeout_cancel_poll(void **state)
{
    (void)state;
    embroker_t *eb = lazy_handle(1000);
    char err[256];
    embroker_input_t img = {.kind = EMBROKER_INPUT_IMAGE, .bytes = "abc", .len = 3};
    embroker_request_t *a = NULL, *b = NULL;
    /* nothing pending yet */
    embroker_request_t *d = NULL;
    assert_int_equal(embroker_poll(eb, &d, 10), EB_ERR_NOT_FOUND);
    assert_int_equal(embroker_submit(eb, "m", &img, 1, NULL, &a, err, sizeof err), EB_OK);
    assert_int_equal(embroker_submit(eb, "m", &img, 1, NULL, &b, err, sizeof err), EB_OK);
    assert_true(embroker_request_id(b) > embroker_request_id(a));
    assert_false(embroker_request_done(a));
    assert_int_equal(embroker_request_status(a), EB_ERR_TIMEOUT);
    assert_null(embroker_request_result(a, 0));
    assert_false(embroker_request_used_shm(a));
    assert_int_equal(embroker_request_count(a), 1);
    /* no broker: wait times out and leaves it pending */
    assert_int_equal(embroker_wait(eb, a, 30), EB_ERR_TIMEOUT);
    assert_false(embroker_request_done(a));
    assert_int_equal(embroker_poll(eb, &d, 30), EB_ERR_TIMEOUT);
    assert_null(d);
    /* cancel completes it locally, once */
    assert_int_equal(embroker_cancel(eb, a), EB_OK);
    assert_true(embroker_request_done(a));
    assert_int_equal(embroker_request_status(a), EB_ERR_CANCELLED);
    assert_int_equal(embroker_request_result(a, 0)->status, EB_ERR_CANCELLED);
    assert_int_equal(embroker_poll(eb, &d, 0), EB_OK);
    assert_ptr_equal(d, a);
    assert_int_equal(embroker_poll(eb, &d, 10), EB_ERR_TIMEOUT); /* b still pending */
    /* close fails what is pending; handles stay readable until freed */
    embroker_close(&eb);
    assert_true(embroker_request_done(b));
    assert_int_equal(embroker_request_status(b), EB_ERR_CANCELLED);
    embroker_request_free(&a);
    embroker_request_free(&b);
    assert_null(a);
}

static void test_blocking_timeout_is_reported(void **state)
{
    (void)state;
    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.broker = "tcp://127.0.0.1:9";
    opt.timeout_ms = 50;
    embroker_t *eb = NULL;
    char err[256];
    assert_int_equal(embroker_connect(&opt, &eb, err, sizeof err), EB_OK);
    embroker_request_t *r = NULL;
    assert_int_equal(embroker_embed_text(eb, "m", "hello", &r), EB_ERR_TIMEOUT);
    assert_non_null(r);
    assert_int_equal(embroker_request_status(r), EB_ERR_TIMEOUT);
    assert_non_null(strstr(embroker_request_error(r), "50 ms"));
    embroker_request_free(&r);
    /* a file that does not exist: nothing sent */
    assert_int_equal(embroker_embed_image_file(eb, "m", "/nonexistent/x.jpg", &r),
                     EB_ERR_NOT_FOUND);
    assert_null(r);
    embroker_close(&eb);
}

/* ---- scan / store / delete against the broker stand-in ---------------------------------- */

/* What the stand-in answers: a scan gets two matches, a store id and timings; a scan whose
 * text is "pg down" gets a search_error; a delete gets deleted = 3; everything else OK with
 * results of 4 dims and (when asked) embeddings. */
static bool answer_scan(tbroker *tb, const eb_proto_request *req, const eb_frames *frames,
                        const eb_frames_view *view, eb_proto_msg *rep, zmq_msg_t *items,
                        size_t *n_items)
{
    (void)tb, (void)frames, (void)view;
    static eb_proto_result results[4];
    static eb_proto_match matches[2] = {
        {.product_id = "P-1", .score = 0.875, .template_name = "shoes",
         .source_type = "catalogue"},
        {.product_id = "P-2", .score = 0.5, .template_name = "shoes", .source_type = "scan"},
    };
    eb_proto_reply *r = &rep->u.reply;
    if (req->op == EB_OP_DELETE) {
        r->has_deleted = true;
        r->deleted = 3;
        return true;
    }
    for (uint32_t i = 0; i < req->n_inputs && i < 4; i++) {
        memset(&results[i], 0, sizeof results[i]);
        results[i].dims = 4;
        results[i].cached = i == 0;
        results[i].has_hash = req->inputs[i].has_hash;
        memcpy(results[i].hash, req->inputs[i].hash, 32);
        if (req->options.return_embedding) {
            float v[4] = {1.0f * (float)i, 2, 3, 4};
            zmq_msg_init_size(&items[*n_items], sizeof v);
            memcpy(zmq_msg_data(&items[*n_items]), v, sizeof v);
            (*n_items)++;
        }
    }
    r->n_results = req->n_inputs;
    r->results = results;
    r->timings.us[EB_STAGE_SEARCH] = 1234;
    r->timings.us[EB_STAGE_TOTAL] = 5000;
    if (req->op == EB_OP_SCAN) {
        bool pg_down = false;
        for (uint32_t i = 0; i < req->n_inputs; i++)
            pg_down = pg_down || (req->inputs[i].kind == EB_INPUT_TEXT &&
                                  strcmp(req->inputs[i].text, "pg down") == 0);
        if (pg_down) {
            r->has_search_error = true;
            r->search_error.code = EB_ERR_UNAVAILABLE;
            r->search_error.message = "PostgreSQL is unreachable";
            r->timings.us[EB_STAGE_SEARCH] = -1;
        } else {
            r->n_matches = 2;
            r->matches = matches;
        }
    }
    if (req->options.store || req->op == EB_OP_STORE) {
        r->store_id = "0b5e7f3c-1111-4222-8333-444455556666";
        r->timings.us[EB_STAGE_STORE_ENQUEUE] = 77;
    }
    return true;
}

static embroker_t *handle_to(const char *endpoint)
{
    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.broker = endpoint;
    opt.timeout_ms = 5000;
    embroker_t *eb = NULL;
    char err[256];
    assert_int_equal(embroker_connect(&opt, &eb, err, sizeof err), EB_OK);
    return eb;
}

static void expect_hash(const char *kind, uint32_t w, uint32_t h, const char *opts,
                        const void *bytes, size_t len, const uint8_t *got)
{
    uint8_t want[EB_HASH_LEN];
    assert_int_equal(eb_content_hash(kind, w, h, opts, bytes, len, want), EB_OK);
    assert_memory_equal(want, got, EB_HASH_LEN);
}

static void test_scan_request_on_the_wire(void **state)
{
    (void)state;
    tbroker tb;
    assert_true(tbroker_start(&tb, answer_scan, NULL));
    embroker_t *eb = handle_to(tb.endpoint);
    uint8_t png[300];
    for (size_t i = 0; i < sizeof png; i++)
        png[i] = (uint8_t)(i * 7);
    embroker_input_t img = {.kind = EMBROKER_INPUT_IMAGE, .format = EMBROKER_FORMAT_PNG,
                            .bytes = png, .len = sizeof png};
    embroker_scan_options_t o;
    embroker_scan_options_default(&o);
    assert_true(o.image_weight < 0 && o.text_weight < 0 && !o.return_embedding && o.k == 0);
    o.k = 7;
    o.template_name = "shoes";
    o.source_type = "catalogue";
    o.store = true;
    o.product_id = "scan-42";
    o.image_weight = 0.8;
    o.text_weight = 0.2;
    o.image_model = "siglip";
    o.text_model = "qwen3";
    o.deadline_ms = 900;
    embroker_request_t *req = NULL;
    assert_int_equal(embroker_scan(eb, &img, "red shoe", &o, &req), EB_OK);
    assert_non_null(req);

    pthread_mutex_lock(&tb.mu);
    const eb_proto_request *w = &tb.last.u.request;
    assert_int_equal(tb.last.kind, EB_MSG_C_REQUEST);
    assert_int_equal(w->op, EB_OP_SCAN);
    assert_string_equal(w->model, "siglip");
    assert_string_equal(w->text_model, "qwen3");
    assert_int_equal(w->n_inputs, 2);
    assert_int_equal(w->inputs[0].kind, EB_INPUT_IMAGE);
    assert_int_equal(w->inputs[0].format, EB_FORMAT_PNG);
    assert_int_equal(w->inputs[0].source, EB_SOURCE_INLINE); /* tcp: inline */
    assert_int_equal(tb.last_item_len[0], sizeof png);
    assert_memory_equal(tb.last_item0, png, sizeof png);
    assert_int_equal(w->inputs[1].kind, EB_INPUT_TEXT);
    assert_string_equal(w->inputs[1].text, "red shoe");
    /* the client's hashes are exactly the worker's (eb_content_hash, default options) */
    assert_true(w->inputs[0].has_hash && w->inputs[1].has_hash);
    expect_hash("image", 0, 0, "", png, sizeof png, w->inputs[0].hash);
    expect_hash("text", 0, 0, "", "red shoe", 8, w->inputs[1].hash);
    assert_int_equal(w->options.k, 7);
    assert_string_equal(w->options.template_name, "shoes");
    assert_string_equal(w->options.source_type, "catalogue");
    assert_true(w->options.store);
    assert_string_equal(w->options.product_id, "scan-42");
    assert_true(w->options.image_weight == 0.8 && w->options.text_weight == 0.2);
    assert_false(w->options.return_embedding);
    assert_true(w->options.normalize);
    assert_int_equal(w->options.deadline_ms, 900);
    assert_int_equal(w->options.priority, EB_PRIORITY_INTERACTIVE);
    pthread_mutex_unlock(&tb.mu);

    /* the reply, read back */
    size_t n = 0;
    const embroker_match_t *m = embroker_request_matches(req, &n);
    assert_int_equal(n, 2);
    assert_string_equal(m[0].product_id, "P-1");
    assert_true(m[0].score == 0.875);
    assert_string_equal(m[0].template_name, "shoes");
    assert_string_equal(m[1].source_type, "scan");
    const char *msg = "x";
    assert_int_equal(embroker_request_search_error(req, &msg), EB_OK);
    assert_string_equal(msg, "");
    assert_string_equal(embroker_request_store_id(req), "0b5e7f3c-1111-4222-8333-444455556666");
    assert_false(embroker_request_deleted(req, NULL));
    const embroker_timings_t *t = embroker_request_timings(req);
    assert_int_equal(t->search_us, 1234);
    assert_int_equal(t->store_enqueue_us, 77);
    assert_int_equal(t->total_us, 5000);
    assert_int_equal(t->queue_us, -1);
    assert_true(t->client_hash_us >= 0);
    assert_true(t->client_copy_us >= 0); /* the library copied the input once */
    /* no embeddings asked: dims known, no vector, no protocol error */
    const embroker_result_t *r0 = embroker_request_result(req, 0);
    assert_int_equal(r0->status, EB_OK);
    assert_int_equal(r0->dims, 4);
    assert_null(r0->embedding);
    assert_true(r0->cached);
    assert_false(embroker_request_result(req, 1)->cached);
    embroker_request_free(&req);

    /* text-only, embeddings asked, no client hash, the search failed */
    embroker_scan_options_default(&o);
    o.return_embedding = true;
    o.no_client_hash = true;
    o.bulk = true;
    assert_int_equal(embroker_scan(eb, NULL, "pg down", &o, &req), EB_OK);
    pthread_mutex_lock(&tb.mu);
    w = &tb.last.u.request;
    assert_int_equal(w->n_inputs, 1);
    assert_false(w->inputs[0].has_hash);
    assert_null(w->model);
    assert_int_equal(w->options.k, 0); /* broker default */
    assert_true(w->options.return_embedding);
    assert_false(w->options.store);
    assert_null(w->options.product_id);
    assert_int_equal(w->options.priority, EB_PRIORITY_BULK);
    assert_true(w->options.image_weight < 0);
    pthread_mutex_unlock(&tb.mu);
    assert_int_equal(embroker_request_search_error(req, &msg), EB_ERR_UNAVAILABLE);
    assert_string_equal(msg, "PostgreSQL is unreachable");
    assert_null(embroker_request_matches(req, &n));
    assert_int_equal(n, 0);
    assert_null(embroker_request_store_id(req));
    assert_int_equal(embroker_request_timings(req)->search_us, -1);
    r0 = embroker_request_result(req, 0);
    assert_non_null(r0->embedding);
    assert_true(r0->embedding[1] == 2.0f && r0->embedding[3] == 4.0f);
    embroker_request_free(&req);
    embroker_close(&eb);
    tbroker_stop(&tb);
}

static void test_store_and_delete_on_the_wire(void **state)
{
    (void)state;
    tbroker tb;
    assert_true(tbroker_start(&tb, answer_scan, NULL));
    embroker_t *eb = handle_to(tb.endpoint);
    uint8_t rgb[2 * 3 * 3];
    for (size_t i = 0; i < sizeof rgb; i++)
        rgb[i] = (uint8_t)(200 - i);
    embroker_input_t raw = {.kind = EMBROKER_INPUT_RAW_RGB8, .width = 2, .height = 3,
                            .bytes = rgb, .len = sizeof rgb};
    embroker_scan_options_t o;
    embroker_scan_options_default(&o);
    char err[512];
    embroker_request_t *req = (embroker_request_t *)eb;
    /* store refuses what the broker would refuse, before sending */
    assert_int_equal(embroker_submit_store(eb, &raw, NULL, &o, &req, err, sizeof err),
                     EB_ERR_INVALID);
    assert_null(req);
    assert_non_null(strstr(err, "product_id"));
    o.product_id = "P-9";
    assert_int_equal(embroker_submit_store(eb, &raw, NULL, &o, &req, err, sizeof err),
                     EB_ERR_INVALID);
    assert_non_null(strstr(err, "template"));
    assert_int_equal(embroker_submit_scan(eb, NULL, NULL, &o, &req, err, sizeof err),
                     EB_ERR_INVALID);
    embroker_input_t txt_as_image = {.kind = EMBROKER_INPUT_TEXT, .bytes = "a", .len = 1};
    assert_int_equal(embroker_submit_scan(eb, &txt_as_image, NULL, &o, &req, err, sizeof err),
                     EB_ERR_INVALID);
    assert_int_equal(embroker_submit_scan(eb, NULL, "\xc3\x28", &o, &req, err, sizeof err),
                     EB_ERR_INVALID); /* invalid UTF-8 */
    o.image_model = "Bad Name";
    o.template_name = "bags";
    assert_int_equal(embroker_submit_store(eb, &raw, NULL, &o, &req, err, sizeof err),
                     EB_ERR_INVALID);
    o.image_model = NULL;
    assert_int_equal(tb.n_requests, 0); /* nothing reached the wire */

    o.bulk = true;
    assert_int_equal(embroker_submit_store(eb, &raw, "a bag", &o, &req, err, sizeof err), EB_OK);
    assert_int_equal(embroker_wait(eb, req, 5000), EB_OK);
    assert_int_equal(embroker_request_status(req), EB_OK);
    pthread_mutex_lock(&tb.mu);
    const eb_proto_request *w = &tb.last.u.request;
    assert_int_equal(w->op, EB_OP_STORE);
    assert_string_equal(w->options.product_id, "P-9");
    assert_string_equal(w->options.template_name, "bags");
    assert_null(w->options.source_type); /* the broker's default, "catalogue" */
    assert_false(w->options.store);       /* the op itself stores */
    assert_int_equal(w->options.k, 0);
    assert_false(w->options.return_embedding);
    assert_int_equal(w->options.priority, EB_PRIORITY_BULK);
    assert_int_equal(w->inputs[0].kind, EB_INPUT_RAW_RGB8);
    assert_int_equal(w->inputs[0].width, 2);
    assert_int_equal(w->inputs[0].height, 3);
    expect_hash("raw_rgb8", 2, 3, "", rgb, sizeof rgb, w->inputs[0].hash);
    expect_hash("text", 0, 0, "", "a bag", 5, w->inputs[1].hash);
    pthread_mutex_unlock(&tb.mu);
    assert_non_null(embroker_request_store_id(req));
    /* not a scan: no search to report on */
    assert_int_equal(embroker_request_search_error(req, NULL), EB_ERR_INVALID);
    embroker_request_free(&req);

    uint64_t deleted = 99;
    assert_int_equal(embroker_delete(eb, "", NULL, &deleted, err, sizeof err), EB_ERR_INVALID);
    assert_int_equal(deleted, 0);
    assert_int_equal(embroker_delete(eb, "P-9", "bags", &deleted, err, sizeof err), EB_OK);
    assert_int_equal(deleted, 3);
    pthread_mutex_lock(&tb.mu);
    w = &tb.last.u.request;
    assert_int_equal(w->op, EB_OP_DELETE);
    assert_int_equal(w->n_inputs, 0);
    assert_string_equal(w->options.product_id, "P-9");
    assert_string_equal(w->options.template_name, "bags");
    pthread_mutex_unlock(&tb.mu);
    embroker_close(&eb);
    tbroker_stop(&tb);
}

static void test_embed_hash_only_when_asked(void **state)
{
    (void)state;
    tbroker tb;
    assert_true(tbroker_start(&tb, answer_scan, NULL));
    embroker_t *eb = handle_to(tb.endpoint);
    embroker_request_t *req = NULL;
    /* default: embed requests carry no client hash */
    assert_int_equal(embroker_embed_text(eb, "qwen3", "hello", &req), EB_OK);
    pthread_mutex_lock(&tb.mu);
    assert_false(tb.last.u.request.inputs[0].has_hash);
    pthread_mutex_unlock(&tb.mu);
    assert_int_equal(embroker_request_timings(req)->client_hash_us, -1);
    embroker_request_free(&req);
    /* send_hash: the hash covers the options that change the vector, like the worker's */
    const char *texts[] = {"hello", "world"};
    embroker_request_options_t ro = {.send_hash = true, .output_dim = 256,
                                     .instruction = "find products", .no_normalize = true};
    assert_int_equal(embroker_embed_texts(eb, "qwen3", texts, 2, &ro, &req), EB_OK);
    char opts[EB_HASH_OPTS_MAX];
    eb_content_opts(false, 256, "find products", strlen("find products"), opts, sizeof opts);
    assert_non_null(strstr(opts, "dim=256"));
    pthread_mutex_lock(&tb.mu);
    const eb_proto_request *w = &tb.last.u.request;
    assert_true(w->inputs[0].has_hash && w->inputs[1].has_hash);
    expect_hash("text", 0, 0, opts, "hello", 5, w->inputs[0].hash);
    expect_hash("text", 0, 0, opts, "world", 5, w->inputs[1].hash);
    pthread_mutex_unlock(&tb.mu);
    embroker_request_free(&req);
    embroker_close(&eb);
    tbroker_stop(&tb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_to_missing_ipc_broker),
        cmocka_unit_test(test_submit_refuses_bad_requests),
        cmocka_unit_test(test_pending_timeout_cancel_poll),
        cmocka_unit_test(test_blocking_timeout_is_reported),
        cmocka_unit_test(test_scan_request_on_the_wire),
        cmocka_unit_test(test_store_and_delete_on_the_wire),
        cmocka_unit_test(test_embed_hash_only_when_asked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
