/* Tests of the client library (clientlib/embroker.c) that need no broker: argument checks that
 * refuse bad requests before anything is sent, connect errors, and the asynchronous API's
 * pending/timeout/cancel states. tcp:// connects lazily, so a handle to a closed port can queue
 * requests that are never answered. The end-to-end behaviour is in tests/integration/test_e2e.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_to_missing_ipc_broker),
        cmocka_unit_test(test_submit_refuses_bad_requests),
        cmocka_unit_test(test_pending_timeout_cancel_poll),
        cmocka_unit_test(test_blocking_timeout_is_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
