/* Worker batching: under a load of small requests the worker runs the jobs it holds for one model
 * as one forward, not one forward per job (gpu_worker/eb_worker.c, take_group).
 *
 * A real embrokerd and a real embroker-worker serving the identity model with a per-forward delay
 * (identity_forward_delay_ms: a stand-in for a GPU, whose forward time barely depends on the
 * batch size) and a per-forward log (identity_forward_log_file: one line per run_batch call, the
 * item count then each item's hex SHA-256). Many single-item requests are submitted at once; the
 * log must show far fewer forwards than requests, no forward larger than the model's largest
 * batch, no forward mixing two models, each model's inputs in submission order, and every reply
 * must be the identity vector and content hash of its own bytes. With one forward per job (the
 * old worker) the forward count equals the request count and the tests fail.
 *
 * Programs come from $EMBROKER_BIN (tests/run sets it), else <root>/build/bin.
 * EB_BATCHING_FORWARD_DELAY_MS overrides the forward delay of the first test (default 100) and
 * its elapsed time is printed: that is how the before/after figures in the notes were taken.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "eb_clock.h"
#include "eb_hash.h"
#include "eb_model_identity.h"
#include "eb_test.h"
#include "embroker.h"

enum { DIMS = 64, MAX_FORWARDS = 1024, MAX_LOGGED = 4096 };

static char bin_dir[4096];

typedef struct env {
    char *root;          /* private tmp dir, removed at teardown */
    char dir[4200];      /* run dir */
    char log[4300];      /* processes' output */
    char forwards[4300]; /* the identity model's forward log */
    int broker, worker;
} env;

static env E;

/* One forward of the log: its item count and the hex SHA-256 of each item. */
typedef struct forward {
    size_t n;
    size_t first; /* index of its first hash in logged[] */
} forward;

static forward forwards[MAX_FORWARDS];
static size_t n_forwards;
static char logged[MAX_LOGGED][2 * EB_HASH_LEN + 1];
static size_t n_logged;

/* ---- processes ---------------------------------------------------------------------------- */

static void env_start(env *e, const char *const *worker_extra)
{
    memset(e, 0, sizeof *e);
    e->root = eb_test_tmpdir("batching");
    assert_non_null(e->root);
    snprintf(e->dir, sizeof e->dir, "%s/run", e->root);
    snprintf(e->log, sizeof e->log, "%s/processes.log", e->root);
    snprintf(e->forwards, sizeof e->forwards, "%s/forwards.log", e->root);

    char path[4200];
    snprintf(path, sizeof path, "%s/embrokerd", bin_dir);
    char *bargv[] = {path, "--run-dir", e->dir, "--heartbeat-interval-ms", "200",
                     "--client-timeout-ms", "2000", "--unknown-model-wait-ms", "5000", NULL};
    e->broker = eb_test_spawn(bargv, e->log);
    assert_true(e->broker > 0);
    char sock[4300];
    snprintf(sock, sizeof sock, "%s/frontend.sock", e->dir);
    int64_t deadline = eb_now_us() + 5000000;
    struct stat sb;
    while (eb_now_us() < deadline && !(stat(sock, &sb) == 0 && S_ISSOCK(sb.st_mode)))
        eb_sleep_us(10000);
    assert_true(stat(sock, &sb) == 0);

    char wpath[4200];
    snprintf(wpath, sizeof wpath, "%s/embroker-worker", bin_dir);
    char *wargv[40] = {wpath, "--run-dir", e->dir, "--worker-id", "w1",
                       "--heartbeat-interval-ms", "200",
                       /* the canary would add its own forwards to the log these tests read */
                       "--canary-interval-ms", "0",
                       "--identity-forward-log-file", e->forwards};
    int n = 11;
    for (size_t i = 0; worker_extra[i] && n < 38; i++)
        wargv[n++] = (char *)worker_extra[i];
    wargv[n] = NULL;
    e->worker = eb_test_spawn(wargv, e->log);
    assert_true(e->worker > 0);
}

/* Stop both processes; the worker must exit 0 after SIGTERM (a crash or a sanitizer report in
 * the grouped compute path would show here), else its output is printed and the test fails. */
static int teardown(void **state)
{
    (void)state;
    int rc = 0;
    if (E.worker > 0) {
        int status = eb_test_stop(E.worker);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "embroker-worker ended with wait status %d\n", status);
            size_t len = 0;
            char *log = (char *)eb_test_read_file(E.log, &len);
            if (log) {
                size_t from = len > 6000 ? len - 6000 : 0;
                fprintf(stderr, "---- %s ----\n%.*s\n----\n", E.log, (int)(len - from),
                        log + from);
                free(log);
            }
            rc = -1;
        }
    }
    if (E.broker > 0)
        eb_test_stop(E.broker);
    if (E.root) {
        eb_test_rmtree(E.root);
        free(E.root);
    }
    memset(&E, 0, sizeof E);
    return rc;
}

/* ---- client helpers ----------------------------------------------------------------------- */

static embroker_t *client(bool inline_only)
{
    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.broker = NULL;
    opt.run_dir = E.dir;
    opt.inline_only = inline_only;
    opt.timeout_ms = 30000;
    opt.heartbeat_interval_ms = 200;
    opt.shm_size = 8 << 20;
    embroker_t *eb = NULL;
    char err[512];
    eb_status st = embroker_connect(&opt, &eb, err, sizeof err);
    if (st != EB_OK)
        fprintf(stderr, "connect: %s\n", err);
    assert_int_equal(st, EB_OK);
    assert_int_equal(embroker_uses_shm(eb), !inline_only);
    return eb;
}

/* Wait until the broker lists one worker serving `model`. */
static void wait_worker(embroker_t *eb, const char *model)
{
    int64_t deadline = eb_now_us() + 10000000;
    while (eb_now_us() < deadline) {
        char *json = NULL, err[256];
        if (embroker_health(eb, &json, err, sizeof err) == EB_OK) {
            bool found = strstr(json, model) && strstr(json, "\"w1\"");
            free(json);
            if (found)
                return;
        }
        eb_sleep_us(20000);
    }
    fprintf(stderr, "worker w1 serving %s did not register\n", model);
    fail();
}

/* The result must be the identity vector of bytes, with the right content hash. */
static void check_result(const embroker_result_t *r, const char *kind, const void *bytes,
                         size_t len)
{
    assert_non_null(r);
    if (r->status != EB_OK)
        fprintf(stderr, "result failed: %s: %s\n", eb_status_str(r->status), r->message);
    assert_int_equal(r->status, EB_OK);
    assert_int_equal(r->dims, DIMS);
    float want[DIMS];
    eb_model_identity_embed(bytes, len, DIMS, true, want);
    assert_memory_equal(r->embedding, want, sizeof want);
    uint8_t hash[EB_HASH_LEN];
    assert_int_equal(eb_content_hash(kind, 0, 0, "", bytes, len, hash), EB_OK);
    assert_true(r->has_hash);
    assert_memory_equal(r->hash, hash, EB_HASH_LEN);
}

/* Parse the forward log into forwards[] / logged[]. */
static void read_forwards(void)
{
    size_t len = 0;
    char *log = (char *)eb_test_read_file(E.forwards, &len);
    assert_non_null(log);
    n_forwards = n_logged = 0;
    for (char *line = log, *eol; line < log + len; line = eol + 1) {
        eol = memchr(line, '\n', (size_t)(log + len - line));
        assert_non_null(eol); /* whole lines only */
        *eol = '\0';
        assert_true(n_forwards < MAX_FORWARDS);
        char *p;
        forward *f = &forwards[n_forwards++];
        f->n = strtoul(line, &p, 10);
        f->first = n_logged;
        for (size_t k = 0; k < f->n; k++) {
            assert_int_equal(*p, ' ');
            p++;
            assert_true(n_logged < MAX_LOGGED);
            assert_true(strlen(p) >= 2 * EB_HASH_LEN);
            memcpy(logged[n_logged], p, 2 * EB_HASH_LEN);
            logged[n_logged][2 * EB_HASH_LEN] = '\0';
            n_logged++;
            p += 2 * EB_HASH_LEN;
        }
        assert_int_equal(*p, '\0');
    }
    free(log);
}

static void hex_sha256(const void *bytes, size_t len, char out[2 * EB_HASH_LEN + 1])
{
    uint8_t d[EB_HASH_LEN];
    eb_sha256(bytes, len, d);
    eb_hex(d, EB_HASH_LEN, out);
}

/* Index of the forward that carried the input hashed `hex` (asserting it is logged exactly
 * once); its position in logged[] goes to *pos. */
static size_t forward_of(const char *hex, size_t *pos)
{
    size_t found = 0, at = SIZE_MAX, fwd = SIZE_MAX;
    for (size_t f = 0; f < n_forwards; f++)
        for (size_t k = 0; k < forwards[f].n; k++)
            if (strcmp(logged[forwards[f].first + k], hex) == 0) {
                found++;
                at = forwards[f].first + k;
                fwd = f;
            }
    if (found != 1)
        fprintf(stderr, "input %s is in the forward log %zu times\n", hex, found);
    assert_int_equal(found, 1);
    *pos = at;
    return fwd;
}

/* Requests are submitted SUBMIT_GAP_US apart: the broker, which always has credit here, then
 * sends each one alone as soon as it arrives (like a backfill keeping many requests in flight,
 * which sends a new one whenever one is answered). Submitted back to back they would reach the
 * broker together and it would batch them itself, which is not what these tests are about. */
enum { SUBMIT_GAP_US = 5000 };

/* ---- tests -------------------------------------------------------------------------------- */

/* 64 single-item requests in flight at once, half through shared memory and half inline, one of
 * them failing on purpose: a handful of forwards serve them all, each reply is right, and the
 * failing input fails alone although it shared a forward with others. */
static void test_single_item_requests_share_forwards(void **state)
{
    (void)state;
    enum { N = 64, BAD = 10 };
    const char *delay = getenv("EB_BATCHING_FORWARD_DELAY_MS");
    const char *extra[] = {"--models", "identity", "--identity-forward-delay-ms",
                           delay && *delay ? delay : "100", NULL};
    env_start(&E, extra);
    embroker_t *shm = client(false), *inl = client(true);
    wait_worker(shm, "identity");

    static uint8_t bytes[N][200];
    size_t lens[N];
    embroker_request_t *req[N];
    char err[512];
    int64_t t0 = eb_now_us();
    for (int i = 0; i < N; i++) {
        int len = snprintf((char *)bytes[i], sizeof bytes[i], "%sbatching input %d pid %d",
                           i == BAD ? EB_MODEL_IDENTITY_FAIL_PREFIX " " : "", i, (int)getpid());
        lens[i] = (size_t)len + 100; /* plus 100 bytes that differ per input */
        for (int k = 0; k < 100; k++)
            bytes[i][len + k] = (uint8_t)(i * 31 + k * 7);
        embroker_input_t in = {.kind = EMBROKER_INPUT_IMAGE, .bytes = bytes[i], .len = lens[i]};
        eb_status st = embroker_submit(i % 2 ? inl : shm, "identity", &in, 1, NULL, &req[i], err,
                                       sizeof err);
        if (st != EB_OK)
            fprintf(stderr, "submit %d: %s\n", i, err);
        assert_int_equal(st, EB_OK);
        eb_sleep_us(SUBMIT_GAP_US);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(embroker_wait(i % 2 ? inl : shm, req[i], 60000), EB_OK);
        const embroker_result_t *r = embroker_request_result(req[i], 0);
        assert_non_null(r);
        if (i == BAD) {
            /* a one-input request takes its input's status */
            assert_int_equal(r->status, EB_ERR_MODEL);
            assert_non_null(strstr(r->message, "on purpose"));
        } else {
            assert_int_equal(embroker_request_status(req[i]), EB_OK);
            check_result(r, "image", bytes[i], lens[i]);
        }
    }
    int64_t elapsed_us = eb_now_us() - t0;

    read_forwards();
    size_t largest = 0;
    for (size_t f = 0; f < n_forwards; f++)
        largest = forwards[f].n > largest ? forwards[f].n : largest;
    fprintf(stderr, "%d single-item requests: %zu forwards (largest %zu items), %.0f ms with a "
            "%s ms forward delay\n", N, n_forwards, largest, elapsed_us / 1000.0,
            delay && *delay ? delay : "100");
    assert_int_equal(n_logged, N); /* every input reached the model exactly once ... */
    for (int i = 0; i < N; i++) {
        char hex[2 * EB_HASH_LEN + 1];
        size_t pos;
        hex_sha256(bytes[i], lens[i], hex);
        forward_of(hex, &pos);
    }
    /* ... in far fewer forwards than requests (one forward per job would be 64), none larger
     * than the model's largest batch (identity_max_batch default 32). */
    assert_true(n_forwards <= N / 4);
    assert_true(largest <= 32);
    assert_true(largest > 1);

    for (int i = 0; i < N; i++)
        embroker_request_free(&req[i]);
    embroker_close(&shm);
    embroker_close(&inl);
}

/* Image and text requests interleaved on one worker serving both identity models: forwards
 * group each model's jobs but never mix the two, each model's inputs go through the model in
 * the order they were submitted, and grouping still cuts the forward count. */
static void test_models_not_mixed_and_order_kept(void **state)
{
    (void)state;
    enum { N = 32 };
    const char *extra[] = {"--models", "identity,identity-text", "--identity-forward-delay-ms",
                           "100", NULL};
    env_start(&E, extra);
    embroker_t *eb = client(false);
    wait_worker(eb, "identity-text");

    char texts[N][64];
    embroker_request_t *req[N];
    char err[512];
    for (int i = 0; i < N; i++) {
        snprintf(texts[i], sizeof texts[i], "%s %d of pid %d", i % 2 ? "text" : "image", i,
                 (int)getpid());
        embroker_input_t in = {.kind = i % 2 ? EMBROKER_INPUT_TEXT : EMBROKER_INPUT_IMAGE,
                               .bytes = texts[i], .len = strlen(texts[i])};
        assert_int_equal(embroker_submit(eb, i % 2 ? "identity-text" : "identity", &in, 1, NULL,
                                         &req[i], err, sizeof err),
                         EB_OK);
        eb_sleep_us(SUBMIT_GAP_US);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(embroker_wait(eb, req[i], 60000), EB_OK);
        assert_int_equal(embroker_request_status(req[i]), EB_OK);
        check_result(embroker_request_result(req[i], 0), i % 2 ? "text" : "image", texts[i],
                     strlen(texts[i]));
    }

    read_forwards();
    fprintf(stderr, "%d single-item requests over two models: %zu forwards\n", N, n_forwards);
    assert_int_equal(n_logged, N);
    int model_of_forward[MAX_FORWARDS];
    for (size_t f = 0; f < n_forwards; f++)
        model_of_forward[f] = -1;
    size_t last_pos[2] = {0, 0};
    bool seen[2] = {false, false};
    for (int i = 0; i < N; i++) {
        char hex[2 * EB_HASH_LEN + 1];
        size_t pos;
        hex_sha256(texts[i], strlen(texts[i]), hex);
        size_t f = forward_of(hex, &pos);
        /* one model per forward */
        if (model_of_forward[f] < 0)
            model_of_forward[f] = i % 2;
        assert_int_equal(model_of_forward[f], i % 2);
        /* a model's inputs reach it in submission order */
        if (seen[i % 2])
            assert_true(pos > last_pos[i % 2]);
        seen[i % 2] = true;
        last_pos[i % 2] = pos;
    }
    assert_true(n_forwards <= N / 2);

    for (int i = 0; i < N; i++)
        embroker_request_free(&req[i]);
    embroker_close(&eb);
}

/* A model whose largest batch is 4: grouping never builds a forward larger than that. */
static void test_group_respects_model_max_batch(void **state)
{
    (void)state;
    enum { N = 24 };
    const char *extra[] = {"--models", "identity", "--identity-max-batch", "4",
                           "--worker-queue-items", "24", "--identity-forward-delay-ms", "100",
                           NULL};
    env_start(&E, extra);
    embroker_t *eb = client(false);
    wait_worker(eb, "identity");
    char texts[N][64];
    embroker_request_t *req[N];
    char err[512];
    for (int i = 0; i < N; i++) {
        snprintf(texts[i], sizeof texts[i], "capped %d of pid %d", i, (int)getpid());
        embroker_input_t in = {.kind = EMBROKER_INPUT_IMAGE, .bytes = texts[i],
                               .len = strlen(texts[i])};
        assert_int_equal(embroker_submit(eb, "identity", &in, 1, NULL, &req[i], err, sizeof err),
                         EB_OK);
        eb_sleep_us(SUBMIT_GAP_US);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(embroker_wait(eb, req[i], 60000), EB_OK);
        check_result(embroker_request_result(req[i], 0), "image", texts[i], strlen(texts[i]));
    }
    read_forwards();
    fprintf(stderr, "%d single-item requests, max batch 4: %zu forwards\n", N, n_forwards);
    assert_int_equal(n_logged, N);
    size_t largest = 0;
    for (size_t f = 0; f < n_forwards; f++)
        largest = forwards[f].n > largest ? forwards[f].n : largest;
    assert_true(largest <= 4);
    assert_true(largest > 1);
    assert_true(n_forwards <= N / 2);
    for (int i = 0; i < N; i++)
        embroker_request_free(&req[i]);
    embroker_close(&eb);
}

static int setup_paths(void **state)
{
    (void)state;
    const char *b = getenv("EMBROKER_BIN");
    if (b && *b)
        snprintf(bin_dir, sizeof bin_dir, "%s", b);
    else
        eb_test_path(bin_dir, sizeof bin_dir, "build/bin");
    char p[4300];
    snprintf(p, sizeof p, "%s/embroker-worker", bin_dir);
    if (access(p, X_OK) != 0) {
        fprintf(stderr, "test_worker_batching: %s not found (set EMBROKER_BIN)\n", p);
        return -1;
    }
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_single_item_requests_share_forwards, teardown),
        cmocka_unit_test_teardown(test_models_not_mixed_and_order_kept, teardown),
        cmocka_unit_test_teardown(test_group_respects_model_max_batch, teardown),
    };
    return cmocka_run_group_tests(tests, setup_paths, NULL);
}
