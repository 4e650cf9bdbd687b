/* End-to-end tests of issue 3: a real embrokerd, real embroker-worker processes serving the
 * test-only identity model, and real clients (libembroker, the embroker command, and raw ZMQ
 * sockets speaking the protocol by hand), all on ipc:// in a private temporary run directory per
 * test, started and stopped by the test.
 *
 * Programs come from $EMBROKER_BIN (tests/run sets it to <root>/$B/bin), else <root>/build/bin;
 * the helper eb_client_holder from $EMBROKER_BIN/../tests/helpers.
 *
 * The identity model's output is a pure function of the input bytes
 * (eb_model_identity_embed), so every reply is checked against a vector computed here, and the
 * content hash against eb_content_hash over the same bytes. Heartbeats run at 100–200 ms to keep
 * the whole file short.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <zmq.h>

#include "eb_clock.h"
#include "eb_frames.h"
#include "eb_hash.h"
#include "eb_model_identity.h"
#include "eb_proto.h"
#include "eb_shm_segment.h"
#include "eb_test.h"
#include "embroker.h"

enum { DIMS = 64, MAX_KIDS = 32 };

/* ---- process management ------------------------------------------------------------------- */

static pid_t kids[MAX_KIDS];
static char bin_dir[4096];
static char helper_dir[4200];

static void kid_add(pid_t pid)
{
    for (int i = 0; i < MAX_KIDS; i++)
        if (kids[i] == 0) {
            kids[i] = pid;
            return;
        }
}

static void kid_forget(pid_t pid)
{
    for (int i = 0; i < MAX_KIDS; i++)
        if (kids[i] == pid)
            kids[i] = 0;
}

/* SIGKILL and reap one child. */
static void kill9(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    kid_forget(pid);
}

/* SIGTERM, wait up to 5 s, then SIGKILL. Returns the exit status (or -1 when killed). */
static int stop(pid_t pid)
{
    if (pid <= 0)
        return -1;
    kill(pid, SIGTERM);
    int64_t deadline = eb_now_us() + 5000000;
    int status = 0;
    while (eb_now_us() < deadline) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            kid_forget(pid);
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
        eb_sleep_us(10000);
    }
    kill9(pid);
    return -1;
}

static void kill_all_kids(void)
{
    for (int i = 0; i < MAX_KIDS; i++)
        if (kids[i] > 0)
            kill9(kids[i]);
}

/* Start argv[0] (a full path) with stdout/stderr appended to `log` (or to a pipe whose read end
 * goes to *out_fd when out_fd is not NULL; stderr still to log). */
static pid_t spawn(char *const argv[], const char *log, int *out_fd)
{
    int pfd[2] = {-1, -1};
    if (out_fd && pipe(pfd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(out_fd ? pfd[1] : fd, 1);
        }
        if (out_fd)
            close(pfd[0]);
        execv(argv[0], argv);
        _exit(127);
    }
    if (out_fd) {
        close(pfd[1]);
        *out_fd = pfd[0];
    }
    if (pid > 0)
        kid_add(pid);
    return pid;
}

typedef struct env {
    char *root;           /* private tmp dir (removed at teardown) */
    char dir[4200];       /* run dir: <root>/run */
    char log[4300];       /* everything the children print: <root>/processes.log */
    pid_t broker;
    int hb_ms;
} env;

static pid_t start_broker(env *e)
{
    char path[4200], hb[32], cto[32];
    snprintf(path, sizeof path, "%s/embrokerd", bin_dir);
    snprintf(hb, sizeof hb, "%d", e->hb_ms);
    snprintf(cto, sizeof cto, "%d", 3 * e->hb_ms);
    char *argv[] = {path, "--run-dir", e->dir, "--heartbeat-interval-ms", hb,
                    "--client-timeout-ms", cto, "--unknown-model-wait-ms", "5000", NULL};
    pid_t pid = spawn(argv, e->log, NULL);
    /* ready when the frontend socket exists */
    char sock[4300];
    snprintf(sock, sizeof sock, "%s/frontend.sock", e->dir);
    int64_t deadline = eb_now_us() + 5000000;
    while (eb_now_us() < deadline) {
        struct stat sb;
        if (stat(sock, &sb) == 0 && S_ISSOCK(sb.st_mode)) {
            eb_sleep_us(20000);
            break;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            kid_forget(pid);
            return -1;
        }
        eb_sleep_us(10000);
    }
    return pid;
}

/* A worker serving identity and identity-text; extra flags (NULL-terminated) appended. */
static pid_t start_worker(env *e, const char *id, ...)
{
    char path[4200], hb[32], log_file[4300];
    snprintf(path, sizeof path, "%s/embroker-worker", bin_dir);
    snprintf(hb, sizeof hb, "%d", e->hb_ms);
    snprintf(log_file, sizeof log_file, "%s/%s.items", e->dir, id);
    char *argv[40] = {path,
                      "--run-dir", e->dir,
                      "--models", "identity,identity-text",
                      "--heartbeat-interval-ms", hb,
                      "--worker-id", (char *)id,
                      "--identity-log-file", log_file,
                      /* the canary would add its own items to the log these tests read */
                      "--canary-interval-ms", "0"};
    int n = 13;
    va_list ap;
    va_start(ap, id);
    for (char *a; n < 38 && (a = va_arg(ap, char *));)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    return spawn(argv, e->log, NULL);
}

static void env_setup(env *e, int hb_ms)
{
    memset(e, 0, sizeof *e);
    e->root = eb_test_tmpdir("e2e");
    assert_non_null(e->root);
    /* The run dir is a child so the broker may create it itself (0700). */
    snprintf(e->dir, sizeof e->dir, "%s/run", e->root);
    snprintf(e->log, sizeof e->log, "%s/processes.log", e->root);
    e->hb_ms = hb_ms;
    e->broker = start_broker(e);
    if (e->broker <= 0) {
        fprintf(stderr, "embrokerd did not start; log %s\n", e->log);
        fail();
    }
}

static void env_teardown(env *e)
{
    kill_all_kids();
    if (e->root) {
        if (getenv("EB_E2E_KEEP"))
            fprintf(stderr, "kept %s\n", e->root);
        else
            eb_test_rmtree(e->root);
        free(e->root);
        e->root = NULL;
    }
}

/* Print the children's log when a test fails (cmocka longjmps out; teardown calls this). */
static void dump_log(const env *e)
{
    size_t len = 0;
    uint8_t *log = eb_test_read_file(e->log, &len);
    if (log) {
        size_t from = len > 6000 ? len - 6000 : 0;
        fprintf(stderr, "---- last process log lines (%s) ----\n%.*s\n----\n", e->log,
                (int)(len - from), (const char *)log + from);
        free(log);
    }
}

/* ---- client helpers ----------------------------------------------------------------------- */

static embroker_t *client(const env *e, bool inline_only)
{
    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.broker = NULL;
    opt.run_dir = e->dir;
    opt.inline_only = inline_only;
    opt.timeout_ms = 10000;
    opt.heartbeat_interval_ms = e->hb_ms;
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

static cJSON *health(embroker_t *eb)
{
    char *json = NULL;
    char err[512];
    if (embroker_health(eb, &json, err, sizeof err) != EB_OK)
        return NULL;
    cJSON *h = cJSON_Parse(json);
    free(json);
    return h;
}

/* Sum of a numeric field over health.workers[] (or the count of workers when field is NULL). */
static double workers_field(cJSON *h, const char *field)
{
    cJSON *ws = cJSON_GetObjectItem(h, "workers");
    double sum = 0;
    cJSON *w;
    cJSON_ArrayForEach(w, ws)
    {
        if (!field)
            sum += 1;
        else if (cJSON_IsNumber(cJSON_GetObjectItem(w, field)))
            sum += cJSON_GetObjectItem(w, field)->valuedouble;
    }
    return sum;
}

static double broker_counter(cJSON *h, const char *name)
{
    cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(h, "broker"), "counters");
    cJSON *v = cJSON_GetObjectItem(c, name);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* Wait until the broker lists `n` workers. */
static void wait_workers(embroker_t *eb, int n)
{
    int64_t deadline = eb_now_us() + 10000000;
    int seen = -1;
    while (eb_now_us() < deadline) {
        cJSON *h = health(eb);
        seen = h ? (int)workers_field(h, NULL) : -1;
        cJSON_Delete(h);
        if (seen == n)
            return;
        eb_sleep_us(20000);
    }
    fprintf(stderr, "expected %d workers, health shows %d\n", n, seen);
    fail();
}

/* Deterministic pseudo-random bytes. */
static void fill(uint8_t *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
}

/* The result must be the identity embedding of bytes, with the right content hash. */
static void check_result(const embroker_result_t *r, const char *kind, uint32_t w, uint32_t h,
                         const void *bytes, size_t len)
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
    assert_int_equal(eb_content_hash(kind, w, h, "", bytes, len, hash), EB_OK);
    assert_true(r->has_hash);
    assert_memory_equal(r->hash, hash, EB_HASH_LEN);
    assert_true(r->worker && *r->worker);
}

/* ---- raw protocol client ------------------------------------------------------------------ */

typedef struct raw {
    bool heartbeat; /* client channel: send heartbeats while waiting */
    void *ctx, *sock;
    eb_frames frames;
    eb_proto_msg msg;
    eb_frames_view view;
} raw;

static void raw_open(raw *r, const env *e, const char *which)
{
    memset(r, 0, sizeof *r);
    r->ctx = zmq_ctx_new();
    r->sock = zmq_socket(r->ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(r->sock, ZMQ_LINGER, &zero, sizeof zero);
    char ep[4300];
    snprintf(ep, sizeof ep, "ipc://%s/%s.sock", e->dir, which);
    assert_int_equal(zmq_connect(r->sock, ep), 0);
    eb_frames_init(&r->frames);
    r->heartbeat = strcmp(which, "frontend") == 0;
}

static void raw_close(raw *r)
{
    eb_proto_msg_free(&r->msg);
    eb_frames_close(&r->frames);
    zmq_close(r->sock);
    zmq_ctx_term(r->ctx);
}

static void raw_send(raw *r, const eb_proto_msg *m, zmq_msg_t *items, size_t n)
{
    char err[256];
    eb_status st = eb_frames_send_msg(r->sock, NULL, 0, m, items, n, 0, err, sizeof err);
    if (st != EB_OK)
        fprintf(stderr, "raw send: %s\n", err);
    assert_int_equal(st, EB_OK);
}

/* Receive and decode one client-channel message; false on timeout. Heartbeats every 50 ms while
 * it waits, as a live client must (the broker reaps silent clients and cancels their work). */
static bool raw_recv(raw *r, int timeout_ms)
{
    eb_proto_msg_free(&r->msg);
    zmq_pollitem_t it = {.socket = r->sock, .events = ZMQ_POLLIN};
    int64_t deadline = eb_now_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        int64_t left = (deadline - eb_now_us()) / 1000;
        if (left <= 0)
            return false;
        if (r->heartbeat) {
            eb_proto_msg hb;
            eb_proto_msg_init(&hb, EB_MSG_C_HEARTBEAT);
            eb_frames_send_msg(r->sock, NULL, 0, &hb, NULL, 0, ZMQ_DONTWAIT, NULL, 0);
        }
        if (zmq_poll(&it, 1, left > 50 ? 50 : (long)left) <= 0)
            continue;
        char err[256];
        if (eb_frames_recv(r->sock, 0, 1000, 1u << 30, &r->frames, err, sizeof err) != EB_OK)
            continue;
        if (eb_frames_decode(&r->frames, false, true, NULL, &r->view, &r->msg, NULL, err,
                             sizeof err) == EB_OK) {
            if (r->msg.kind != EB_MSG_C_HEARTBEAT && r->msg.kind != EB_MSG_W_HEARTBEAT)
                return true;
            eb_proto_msg_free(&r->msg);
            continue;
        }
        fprintf(stderr, "raw recv: undecodable message: %s\n", err);
    }
}

/* Receive until a message of `kind` (skipping heartbeats); false on timeout. */
static bool raw_expect(raw *r, eb_proto_kind kind, int timeout_ms)
{
    int64_t deadline = eb_now_us() + (int64_t)timeout_ms * 1000;
    while (eb_now_us() < deadline) {
        if (!raw_recv(r, (int)((deadline - eb_now_us()) / 1000) + 1))
            return false;
        if (r->msg.kind == kind)
            return true;
    }
    return false;
}

/* An embed_image request for model identity with inline inputs. */
static void raw_send_inline(raw *r, uint64_t id, const uint8_t *const *bytes, const size_t *lens,
                            size_t n)
{
    eb_proto_input in[8];
    zmq_msg_t frames[8];
    memset(in, 0, sizeof in);
    for (size_t i = 0; i < n; i++) {
        in[i].kind = EB_INPUT_IMAGE;
        in[i].source = EB_SOURCE_INLINE;
        in[i].frame = (uint32_t)i;
        in[i].len = lens[i];
        zmq_msg_init_size(&frames[i], lens[i]);
        memcpy(zmq_msg_data(&frames[i]), bytes[i], lens[i]);
    }
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_REQUEST);
    m.u.request.id = id;
    m.u.request.op = EB_OP_EMBED_IMAGE;
    m.u.request.model = "identity";
    m.u.request.n_inputs = (uint32_t)n;
    m.u.request.inputs = in;
    raw_send(r, &m, frames, n);
    for (size_t i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
}

/* Register `seg` (which the test owns) over the raw socket; returns the broker's seg id. */
static uint32_t raw_register(raw *r, eb_shm_segment *seg)
{
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_REGISTER);
    m.u.reg.segment = eb_shm_segment_name(seg);
    m.u.reg.size = eb_shm_segment_size(seg);
    raw_send(r, &m, NULL, 0);
    assert_true(raw_expect(r, EB_MSG_C_CHALLENGE, 3000));
    assert_int_equal(eb_shm_segment_write_nonce(seg, r->msg.u.challenge.nonce,
                                                EB_PROTO_NONCE_BYTES), EB_OK);
    eb_proto_msg_init(&m, EB_MSG_C_PROVE);
    m.u.prove.segment = eb_shm_segment_name(seg);
    raw_send(r, &m, NULL, 0);
    assert_true(raw_expect(r, EB_MSG_C_REGISTERED, 3000));
    assert_int_equal(r->msg.u.registered.status, EB_OK);
    return r->msg.u.registered.seg;
}

/* ---- tests -------------------------------------------------------------------------------- */

static env E;

static int setup_paths(void **state)
{
    (void)state;
    const char *b = getenv("EMBROKER_BIN");
    if (b && *b)
        snprintf(bin_dir, sizeof bin_dir, "%s", b);
    else
        eb_test_path(bin_dir, sizeof bin_dir, "build/bin");
    snprintf(helper_dir, sizeof helper_dir, "%s/../tests/helpers", bin_dir);
    char p[4300];
    snprintf(p, sizeof p, "%s/embrokerd", bin_dir);
    if (access(p, X_OK) != 0) {
        fprintf(stderr, "test_e2e: %s not found (set EMBROKER_BIN to the bin folder of a build "
                "with embrokerd)\n", p);
        return -1;
    }
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static int teardown_env(void **state)
{
    (void)state;
    env_teardown(&E);
    return 0;
}

/* Dump the log when a test failed: cmocka has no "failed" hook, so tests set this when done. */
static bool test_passed;
#define PASSED() (test_passed = true)
static int setup_env(void **state)
{
    (void)state;
    test_passed = false;
    return 0;
}
/* Also fails the test when a child process reported a sanitizer error (SAN=1 builds). */
static int teardown_check(void **state)
{
    int rc = 0;
    if (E.root) {
        size_t len = 0;
        char *log = (char *)eb_test_read_file(E.log, &len);
        char *text = log ? realloc(log, len + 1) : NULL;
        if (text) {
            text[len] = '\0';
            if (strstr(text, "Sanitizer") || strstr(text, "runtime error:")) {
                fprintf(stderr, "a child process reported a sanitizer error\n");
                test_passed = false;
                rc = -1;
            }
            free(text);
        } else {
            free(log);
        }
    }
    if (!test_passed && E.root)
        dump_log(&E);
    teardown_env(state);
    return rc;
}

/* Same bytes through shared memory and inline: identical embeddings, equal to the identity
 * model's vector, with the right content hash; raw RGB8 and text too; and the CLI. */
static void test_roundtrip_shm_and_inline(void **state)
{
    (void)state;
    env_setup(&E, 100);
    pid_t w1 = start_worker(&E, "w1", NULL);
    embroker_t *shm = client(&E, false);
    embroker_t *inl = client(&E, true);
    wait_workers(shm, 1);

    size_t len = 300000;
    uint8_t *bytes = malloc(len);
    fill(bytes, len, 1);
    embroker_request_t *a = NULL, *b = NULL;
    assert_int_equal(embroker_embed_image(shm, "identity", bytes, len, EMBROKER_FORMAT_JPEG, &a),
                     EB_OK);
    assert_int_equal(embroker_embed_image(inl, "identity", bytes, len, EMBROKER_FORMAT_JPEG, &b),
                     EB_OK);
    assert_true(embroker_request_used_shm(a));
    assert_false(embroker_request_used_shm(b));
    const embroker_result_t *ra = embroker_request_result(a, 0);
    const embroker_result_t *rb = embroker_request_result(b, 0);
    check_result(ra, "image", 0, 0, bytes, len);
    check_result(rb, "image", 0, 0, bytes, len);
    assert_memory_equal(ra->embedding, rb->embedding, DIMS * sizeof(float));
    assert_string_equal(ra->model_rev, "identity-v1");
    /* the shm path reports a copy stage, both report hash and infer */
    assert_true(embroker_request_timings(a)->copy_us >= 0);
    assert_true(embroker_request_timings(a)->hash_us >= 0);
    assert_true(embroker_request_timings(b)->infer_us >= 0);
    assert_true(embroker_request_timings(b)->client_total_us > 0);
    embroker_request_free(&a);
    embroker_request_free(&b);

    /* raw RGB8 (hash covers width/height) and several inputs in one request */
    uint8_t px[4 * 3 * 3];
    fill(px, sizeof px, 2);
    embroker_input_t ins[2] = {
        {.kind = EMBROKER_INPUT_RAW_RGB8, .width = 4, .height = 3, .bytes = px,
         .len = sizeof px},
        {.kind = EMBROKER_INPUT_IMAGE, .bytes = bytes, .len = 1000},
    };
    assert_int_equal(embroker_embed(shm, "identity", ins, 2, NULL, &a), EB_OK);
    check_result(embroker_request_result(a, 0), "raw_rgb8", 4, 3, px, sizeof px);
    check_result(embroker_request_result(a, 1), "image", 0, 0, bytes, 1000);
    embroker_request_free(&a);

    /* text through identity-text */
    assert_int_equal(embroker_embed_text(inl, "identity-text", "héllo wörld", &b), EB_OK);
    check_result(embroker_request_result(b, 0), "text", 0, 0, "héllo wörld",
                 strlen("héllo wörld"));
    embroker_request_free(&b);

    /* an inline input over the client's limit is refused before sending */
    embroker_close(&inl);
    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.run_dir = E.dir;
    opt.broker = NULL;
    opt.inline_only = true;
    opt.max_inline_bytes = 1000;
    char err[512];
    assert_int_equal(embroker_connect(&opt, &inl, err, sizeof err), EB_OK);
    embroker_request_t *c = NULL;
    assert_int_equal(embroker_submit(inl, "identity",
                                     &(embroker_input_t){.kind = EMBROKER_INPUT_IMAGE,
                                                         .bytes = bytes, .len = 1001},
                                     1, NULL, &c, err, sizeof err),
                     EB_ERR_TOO_LARGE);
    assert_null(c);
    assert_non_null(strstr(err, "max_inline_bytes=1000"));
    embroker_close(&inl);

    /* the embroker command prints the same embedding as JSON */
    char file[4300], cmd[20000];
    snprintf(file, sizeof file, "%s/input.bin", E.root);
    FILE *f = fopen(file, "wb");
    assert_non_null(f);
    fwrite(bytes, 1, 5000, f);
    fclose(f);
    for (int inline_cli = 0; inline_cli < 2; inline_cli++) {
        snprintf(cmd, sizeof cmd, "%s/embroker --run-dir %s --model identity %s "
                 "--heartbeat-interval-ms %d embed-image %s", bin_dir, E.dir,
                 inline_cli ? "--inline" : "", E.hb_ms, file);
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        char *out = calloc(1, 1 << 16);
        size_t got = fread(out, 1, (1 << 16) - 1, p);
        assert_int_equal(pclose(p), 0);
        assert_true(got > 0);
        cJSON *j = cJSON_Parse(out);
        assert_non_null(j);
        assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "shm")) == !inline_cli);
        cJSON *r0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "results"), 0);
        assert_string_equal(cJSON_GetObjectItem(r0, "status")->valuestring, "ok");
        assert_int_equal(cJSON_GetObjectItem(r0, "dims")->valueint, DIMS);
        uint8_t hash[EB_HASH_LEN];
        char hex[2 * EB_HASH_LEN + 1];
        eb_content_hash("image", 0, 0, "", bytes, 5000, hash);
        assert_string_equal(cJSON_GetObjectItem(r0, "hash")->valuestring,
                            eb_hex(hash, EB_HASH_LEN, hex));
        assert_string_equal(cJSON_GetObjectItem(r0, "worker")->valuestring, "w1");
        float want[DIMS];
        eb_model_identity_embed(bytes, 5000, DIMS, true, want);
        cJSON *emb = cJSON_GetObjectItem(r0, "embedding");
        assert_int_equal(cJSON_GetArraySize(emb), DIMS);
        for (int k = 0; k < DIMS; k++)
            assert_float_equal(cJSON_GetArrayItem(emb, k)->valuedouble, want[k], 1e-7);
        cJSON_Delete(j);
        free(out);
    }
    snprintf(cmd, sizeof cmd, "%s/embroker --run-dir %s health", bin_dir, E.dir);
    FILE *p = popen(cmd, "r");
    char *out = calloc(1, 1 << 16);
    size_t got = fread(out, 1, (1 << 16) - 1, p);
    assert_int_equal(pclose(p), 0);
    assert_true(got > 0);
    cJSON *h = cJSON_Parse(out);
    assert_non_null(h);
    assert_int_equal((int)workers_field(h, NULL), 1);
    cJSON_Delete(h);
    free(out);

    free(bytes);
    embroker_close(&shm);
    /* SIGTERM: the worker says DISCONNECT and exits 0 (under SAN=1 also: no leak reports) */
    assert_int_equal(stop(w1), 0);
    PASSED();
}

/* A full segment: the WAIT policy processes replies until space frees (every request still goes
 * through shm); the INLINE policy sends what does not fit inline. */
static void test_shm_full_policies(void **state)
{
    (void)state;
    env_setup(&E, 100);
    start_worker(&E, "w1", "--identity-delay-ms", "5", NULL);
    for (int policy = 0; policy < 2; policy++) {
        embroker_options_t opt;
        embroker_options_default(&opt);
        opt.broker = NULL;
        opt.run_dir = E.dir;
        opt.heartbeat_interval_ms = E.hb_ms;
        opt.shm_size = EB_SHM_HEADER_SIZE + 65536; /* room for one 40 KB input at a time */
        opt.shm_full_policy = policy ? EMBROKER_SHM_FULL_INLINE : EMBROKER_SHM_FULL_WAIT;
        embroker_t *eb = NULL;
        char err[512];
        assert_int_equal(embroker_connect(&opt, &eb, err, sizeof err), EB_OK);
        assert_true(embroker_uses_shm(eb));
        if (policy == 0)
            wait_workers(eb, 1);
        enum { N = 6, LEN = 40000 };
        static uint8_t bytes[N][LEN];
        embroker_request_t *req[N];
        for (int i = 0; i < N; i++) {
            fill(bytes[i], LEN, 77 + (uint64_t)i);
            embroker_input_t in = {.kind = EMBROKER_INPUT_IMAGE, .bytes = bytes[i], .len = LEN};
            assert_int_equal(embroker_submit(eb, "identity", &in, 1, NULL, &req[i], err,
                                             sizeof err), EB_OK);
        }
        int via_shm = 0;
        for (int i = 0; i < N; i++) {
            assert_int_equal(embroker_wait(eb, req[i], 5000), EB_OK);
            check_result(embroker_request_result(req[i], 0), "image", 0, 0, bytes[i], LEN);
            via_shm += embroker_request_used_shm(req[i]);
            embroker_request_free(&req[i]);
        }
        if (policy == 0)
            assert_int_equal(via_shm, N); /* waited for space each time */
        else
            assert_true(via_shm >= 1 && via_shm < N); /* the first fit, the rest went inline */
        embroker_close(&eb);
    }
    PASSED();
}

/* 4 client threads, each with its own handle, 100 requests in flight each. */
typedef struct many_arg {
    const env *e;
    int index;
    int ok;
    int completions;
    int duplicates;
    char failure[1024];
} many_arg;

static void *many_thread(void *p)
{
    many_arg *a = p;
    enum { N = 100, LEN = 2048 };
    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.run_dir = a->e->dir;
    opt.broker = NULL;
    opt.heartbeat_interval_ms = a->e->hb_ms;
    opt.shm_size = 4 << 20;
    opt.inline_only = a->index == 3; /* one client inline, three through shm */
    embroker_t *eb = NULL;
    char err[512];
    if (embroker_connect(&opt, &eb, err, sizeof err) != EB_OK) {
        snprintf(a->failure, sizeof a->failure, "connect: %s", err);
        return NULL;
    }
    static __thread uint8_t bytes[N][LEN];
    embroker_request_t *req[N];
    int seen[N] = {0};
    for (int i = 0; i < N; i++) {
        fill(bytes[i], LEN, (uint64_t)a->index * 1000 + (uint64_t)i + 7);
        embroker_input_t in = {.kind = EMBROKER_INPUT_IMAGE, .bytes = bytes[i], .len = LEN};
        if (embroker_submit(eb, "identity", &in, 1, NULL, &req[i], err, sizeof err) != EB_OK) {
            snprintf(a->failure, sizeof a->failure, "submit %d: %s", i, err);
            return NULL;
        }
    }
    for (int done = 0; done < N;) {
        embroker_request_t *d = NULL;
        eb_status st = embroker_poll(eb, &d, 10000);
        if (st != EB_OK) {
            snprintf(a->failure, sizeof a->failure, "poll after %d: %s", done, eb_status_str(st));
            break;
        }
        int i = -1;
        for (int k = 0; k < N; k++)
            if (req[k] == d)
                i = k;
        if (i < 0 || seen[i]++) {
            a->duplicates++;
            continue;
        }
        done++;
        a->completions++;
        const embroker_result_t *r = embroker_request_result(d, 0);
        float want[DIMS];
        uint8_t hash[EB_HASH_LEN];
        eb_model_identity_embed(bytes[i], LEN, DIMS, true, want);
        eb_content_hash("image", 0, 0, "", bytes[i], LEN, hash);
        if (embroker_request_status(d) == EB_OK && r && r->status == EB_OK && r->dims == DIMS &&
            memcmp(r->embedding, want, sizeof want) == 0 && r->has_hash &&
            memcmp(r->hash, hash, EB_HASH_LEN) == 0 &&
            embroker_request_used_shm(d) == !opt.inline_only)
            a->ok++;
    }
    /* nothing more may complete */
    embroker_request_t *extra = NULL;
    if (embroker_poll(eb, &extra, 100) == EB_OK)
        a->duplicates++;
    for (int i = 0; i < N; i++)
        embroker_request_free(&req[i]);
    embroker_close(&eb);
    return NULL;
}

static void test_four_clients_hundred_in_flight(void **state)
{
    (void)state;
    env_setup(&E, 100);
    start_worker(&E, "w1", "--max-batch-items", "16", NULL);
    start_worker(&E, "w2", "--max-batch-items", "16", NULL);
    embroker_t *eb = client(&E, true);
    wait_workers(eb, 2);
    pthread_t t[4];
    many_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (many_arg){.e = &E, .index = i};
        assert_int_equal(pthread_create(&t[i], NULL, many_thread, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        if (args[i].failure[0])
            fprintf(stderr, "client %d: %s\n", i, args[i].failure);
        assert_string_equal(args[i].failure, "");
        assert_int_equal(args[i].completions, 100);
        assert_int_equal(args[i].duplicates, 0);
        assert_int_equal(args[i].ok, 100);
    }
    cJSON *h = health(eb);
    assert_non_null(h);
    assert_int_equal((int)workers_field(h, "items_done"), 400);
    assert_int_equal((int)broker_counter(h, "late_replies"), 0);
    cJSON_Delete(h);
    embroker_close(&eb);
    PASSED();
}

/* kill -9 one of two workers while it computes a batch: every request is answered exactly once
 * and correctly (its items are requeued to the other worker). Counted on a raw socket, which
 * sees every reply the broker sends. */
static void test_kill_worker_mid_batch(void **state)
{
    (void)state;
    env_setup(&E, 100);
    pid_t w1 = start_worker(&E, "w1", "--max-batch-items", "8", "--identity-delay-ms", "25",
                            NULL);
    start_worker(&E, "w2", "--max-batch-items", "8", "--identity-delay-ms", "25", NULL);
    embroker_t *eb = client(&E, true);
    wait_workers(eb, 2);

    enum { N = 40, LEN = 512 };
    static uint8_t bytes[N][LEN];
    raw r;
    raw_open(&r, &E, "frontend");
    for (int i = 0; i < N; i++) {
        fill(bytes[i], LEN, 5000 + (uint64_t)i);
        const uint8_t *b = bytes[i];
        size_t len = LEN;
        raw_send_inline(&r, 100 + (uint64_t)i, &b, &len, 1);
    }
    /* both workers hold a batch now (8 items × 25 ms each) */
    eb_sleep_us(100000);
    kill9(w1);

    int answers[N] = {0};
    int ok = 0, answered = 0;
    int64_t deadline = eb_now_us() + 15000000;
    while (answered < N && eb_now_us() < deadline) {
        if (!raw_recv(&r, 1000) || r.msg.kind != EB_MSG_C_REPLY)
            continue;
        uint64_t id = r.msg.u.reply.id;
        assert_true(id >= 100 && id < 100 + N);
        int i = (int)(id - 100);
        if (answers[i]++ == 0)
            answered++;
        const eb_proto_reply *rep = &r.msg.u.reply;
        if (rep->status == EB_OK && rep->n_results == 1 && rep->results[0].status == EB_OK &&
            rep->results[0].dims == DIMS && r.view.n_items == 1) {
            float want[DIMS];
            eb_model_identity_embed(bytes[i], LEN, DIMS, true, want);
            zmq_msg_t *f = &r.frames.parts[r.view.first_item];
            if (zmq_msg_size(f) == sizeof want && memcmp(zmq_msg_data(f), want, sizeof want) == 0)
                ok++;
        } else {
            fprintf(stderr, "request %d: %s %s\n", i, eb_status_str(rep->status),
                    rep->error ? rep->error : "");
        }
    }
    /* late duplicates would arrive now */
    while (raw_recv(&r, 500))
        if (r.msg.kind == EB_MSG_C_REPLY && r.msg.u.reply.id >= 100 &&
            r.msg.u.reply.id < 100 + N)
            answers[r.msg.u.reply.id - 100]++;
    for (int i = 0; i < N; i++)
        assert_int_equal(answers[i], 1);
    assert_int_equal(ok, N);
    cJSON *h = health(eb);
    assert_non_null(h);
    assert_true(broker_counter(h, "requeues") >= 1); /* w1 really died with work in flight */
    assert_int_equal((int)workers_field(h, NULL), 1);
    cJSON_Delete(h);
    raw_close(&r);
    embroker_close(&eb);
    PASSED();
}

/* Broker killed and started again on the same run dir: in-flight requests fail with
 * EB_ERR_RESTARTED, the worker re-registers by itself, the same client handle succeeds
 * afterwards (through a freshly registered segment). */
static void test_broker_restart(void **state)
{
    (void)state;
    env_setup(&E, 100);
    start_worker(&E, "w1", "--identity-delay-ms", "300", NULL);
    embroker_t *eb = client(&E, false);
    wait_workers(eb, 1);
    uint64_t bid1 = embroker_broker_instance(eb);
    assert_true(bid1 != 0);

    uint8_t bytes[3][256];
    embroker_request_t *req[3];
    char err[256];
    for (int i = 0; i < 3; i++) {
        fill(bytes[i], sizeof bytes[i], 900 + (uint64_t)i);
        embroker_input_t in = {.kind = EMBROKER_INPUT_IMAGE, .bytes = bytes[i],
                               .len = sizeof bytes[i]};
        assert_int_equal(embroker_submit(eb, "identity", &in, 1, NULL, &req[i], err, sizeof err),
                         EB_OK);
    }
    eb_sleep_us(100000);
    kill9(E.broker);
    E.broker = start_broker(&E);
    assert_true(E.broker > 0);

    for (int i = 0; i < 3; i++) {
        assert_int_equal(embroker_wait(eb, req[i], 5000), EB_OK);
        assert_int_equal(embroker_request_status(req[i]), EB_ERR_RESTARTED);
        assert_non_null(strstr(embroker_request_error(req[i]), "submit it again"));
        embroker_request_free(&req[i]);
    }
    wait_workers(eb, 1); /* the worker came back without help */
    assert_true(embroker_broker_instance(eb) != bid1);
    embroker_request_t *a = NULL;
    assert_int_equal(embroker_embed_image(eb, "identity", bytes[0], sizeof bytes[0],
                                          EMBROKER_FORMAT_AUTO, &a),
                     EB_OK);
    assert_true(embroker_uses_shm(eb));
    assert_true(embroker_request_used_shm(a));
    check_result(embroker_request_result(a, 0), "image", 0, 0, bytes[0], sizeof bytes[0]);
    embroker_request_free(&a);
    embroker_close(&eb);
    PASSED();
}

/* Start the holder helper; returns its pid and writes its segment name. */
static pid_t start_holder(const char *hb_ms, char *name, size_t cap)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/eb_client_holder", helper_dir);
    char *argv[] = {path, E.dir, (char *)hb_ms, NULL};
    int fd = -1;
    pid_t pid = spawn(argv, E.log, &fd);
    assert_true(pid > 0);
    char line[256] = {0};
    size_t n = 0;
    while (n < sizeof line - 1) {
        ssize_t r = read(fd, line + n, 1);
        if (r <= 0 || line[n] == '\n')
            break;
        n++;
    }
    line[n] = '\0';
    close(fd);
    if (strncmp(line, "segment /", 9) != 0) {
        fprintf(stderr, "holder printed \"%s\" (%s)\n", line, path);
        fail();
    }
    size_t nl = strlen(line + 8);
    assert_true(nl < cap);
    memcpy(name, line + 8, nl + 1);
    return pid;
}

static bool segment_exists(const char *name)
{
    char p[600];
    snprintf(p, sizeof p, "/dev/shm%s", name);
    return access(p, F_OK) == 0;
}

/* A client killed with SIGKILL: its segment survives 3 missed heartbeat intervals and is gone
 * within 3 intervals + 2 s. Broker heartbeat 200 ms (client timeout 600 ms); the holder
 * heartbeats every 50 ms, so its last message is at most ~70 ms before the kill.
 *
 * The moment is taken from the broker's health counter clients_reaped (polled every 20 ms by a
 * second, live client), not from /dev/shm: on a shared machine any other embrokerd that starts
 * (other people's tests) may remove a dead owner's segment earlier with its start-up cleanup,
 * which is right but says nothing about this broker. */
static void test_dead_client_segment_reaped(void **state)
{
    (void)state;
    env_setup(&E, 200);
    embroker_t *eb = client(&E, true);
    char name[256];
    pid_t holder = start_holder("50", name, sizeof name);
    assert_true(segment_exists(name));
    eb_sleep_us(900000); /* alive and heartbeating: kept well past the 600 ms timeout */
    assert_true(segment_exists(name));
    cJSON *h = health(eb);
    assert_non_null(h);
    assert_int_equal((int)broker_counter(h, "clients_reaped"), 0);
    cJSON_Delete(h);
    int64_t t_kill = eb_now_us();
    kill9(holder);
    int64_t reaped = 0;
    while (!reaped && eb_now_us() - t_kill < 2600000 + 600000) {
        h = health(eb);
        if (h && broker_counter(h, "clients_reaped") >= 1)
            reaped = eb_now_us();
        cJSON_Delete(h);
        if (!reaped)
            eb_sleep_us(20000);
    }
    assert_true(reaped != 0); /* within 3 intervals + 2 s */
    int64_t after_ms = (reaped - t_kill) / 1000;
    fprintf(stderr, "client reaped %lld ms after kill -9\n", (long long)after_ms);
    assert_true(after_ms >= 600 - 100); /* not before 3 intervals (less the holder's last
                                           heartbeat age) */
    assert_true(after_ms <= 2600);
    assert_false(segment_exists(name)); /* and its segment is gone */
    embroker_close(&eb);
    PASSED();
}

/* Registering another client's segment (cannot write its nonce) is refused, and the owner's
 * segment is untouched. */
static void test_foreign_segment_refused(void **state)
{
    (void)state;
    env_setup(&E, 100);
    char name[256];
    pid_t holder = start_holder("50", name, sizeof name);
    raw r;
    raw_open(&r, &E, "frontend");
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_REGISTER);
    m.u.reg.segment = name;
    m.u.reg.size = (1 << 20) + EB_SHM_HEADER_SIZE;
    raw_send(&r, &m, NULL, 0);
    assert_true(raw_recv(&r, 3000));
    if (r.msg.kind == EB_MSG_C_CHALLENGE) {
        /* we cannot write the nonce into someone else's segment: prove anyway */
        eb_proto_msg_init(&m, EB_MSG_C_PROVE);
        m.u.prove.segment = name;
        raw_send(&r, &m, NULL, 0);
        assert_true(raw_expect(&r, EB_MSG_C_REGISTERED, 3000));
    }
    assert_int_equal(r.msg.kind, EB_MSG_C_REGISTERED);
    assert_int_not_equal(r.msg.u.registered.status, EB_OK);
    fprintf(stderr, "foreign registration refused: %s: %s\n",
            eb_status_str((eb_status)r.msg.u.registered.status),
            r.msg.u.registered.error ? r.msg.u.registered.error : "");
    /* a reference into it from this client is refused too */
    eb_proto_input in = {.kind = EB_INPUT_IMAGE, .source = EB_SOURCE_SHM, .seg = 1,
                         .epoch = 1, .off = EB_SHM_HEADER_SIZE, .len = 16};
    eb_proto_msg_init(&m, EB_MSG_C_REQUEST);
    m.u.request.id = 7;
    m.u.request.op = EB_OP_EMBED_IMAGE;
    m.u.request.model = "identity";
    m.u.request.n_inputs = 1;
    m.u.request.inputs = &in;
    raw_send(&r, &m, NULL, 0);
    assert_true(raw_expect(&r, EB_MSG_C_REPLY, 3000));
    assert_int_equal(r.msg.u.reply.id, 7);
    bool failed = r.msg.u.reply.status != EB_OK ||
                  (r.msg.u.reply.n_results == 1 && r.msg.u.reply.results[0].status != EB_OK);
    assert_true(failed);
    assert_true(segment_exists(name));
    raw_close(&r);
    kill9(holder);
    PASSED();
}

/* Bad references fail only their item; the worker keeps serving. Out-of-bounds and stale-epoch
 * references are stopped by the broker; a segment truncated after registration fails in the
 * worker's guarded copy; a model error fails one item of a batch. */
static void test_bad_references_fail_only_their_item(void **state)
{
    (void)state;
    env_setup(&E, 100);
    start_worker(&E, "w1", NULL);
    embroker_t *eb = client(&E, true);
    wait_workers(eb, 1);

    char err[512];
    eb_shm_segment *seg = NULL;
    assert_int_equal(eb_shm_segment_create(1 << 20, &seg, err, sizeof err), EB_OK);
    raw r;
    raw_open(&r, &E, "frontend");
    uint32_t seg_id = raw_register(&r, seg);
    uint32_t epoch = eb_shm_segment_epoch(seg);

    /* a good region at the start, one near the end */
    eb_shm_ref good, tail;
    void *pg = NULL, *pt = NULL;
    assert_int_equal(eb_shm_segment_alloc(seg, 4096, 0, &good, &pg, err, sizeof err), EB_OK);
    fill(pg, 4096, 42);
    assert_int_equal(eb_shm_segment_alloc(seg, (1 << 20) - 8192, 0, &tail, &pt, err,
                                          sizeof err), EB_OK);
    fill((uint8_t *)pt + 65536, 4096, 43);

    struct {
        uint64_t off, len;
        uint32_t epoch;
    } cases[] = {
        {good.offset, good.length, epoch},                 /* ok */
        {eb_shm_segment_size(seg) - 10, 100, epoch},        /* out of bounds */
        {good.offset, UINT64_MAX - 5, epoch},              /* overflowing length */
        {good.offset, good.length, epoch + 1},             /* stale epoch */
    };
    /* the overflowing length is already over max_input_bytes for the decoder */
    const eb_status want[] = {EB_OK, EB_ERR_BOUNDS, EB_ERR_TOO_LARGE, EB_ERR_STALE};
    for (size_t c = 0; c < 4; c++) {
        eb_proto_input in[2] = {
            {.kind = EB_INPUT_IMAGE, .source = EB_SOURCE_SHM, .seg = seg_id,
             .epoch = cases[c].epoch, .off = cases[c].off, .len = cases[c].len},
            {.kind = EB_INPUT_IMAGE, .source = EB_SOURCE_INLINE, .frame = 0, .len = 4},
        };
        zmq_msg_t f;
        zmq_msg_init_size(&f, 4);
        memcpy(zmq_msg_data(&f), "abcd", 4);
        eb_proto_msg m;
        eb_proto_msg_init(&m, EB_MSG_C_REQUEST);
        m.u.request.id = 10 + c;
        m.u.request.op = EB_OP_EMBED_IMAGE;
        m.u.request.model = "identity";
        m.u.request.n_inputs = 2;
        m.u.request.inputs = in;
        raw_send(&r, &m, &f, 1);
        zmq_msg_close(&f);
        assert_true(raw_expect(&r, EB_MSG_C_REPLY, 5000));
        const eb_proto_reply *rep = &r.msg.u.reply;
        assert_int_equal(rep->id, 10 + c);
        eb_status got = rep->n_results >= 1 ? (eb_status)rep->results[0].status
                                            : (eb_status)rep->status;
        if (rep->status != EB_OK && rep->n_results == 0)
            got = (eb_status)rep->status;
        fprintf(stderr, "case %zu: request %s, item %s (%s)\n", c, eb_status_str(rep->status),
                eb_status_str(got), rep->error ? rep->error : "");
        assert_int_equal(got, want[c]);
        if (c == 0) {
            assert_int_equal(rep->status, EB_OK);
            assert_int_equal(rep->n_results, 2);
            assert_int_equal(rep->results[1].status, EB_OK);
        }
    }

    /* truncate the segment under the (now attached) worker: that item fails with EB_ERR_IO in
     * the guarded copy, the inline item of the same request succeeds */
    int fd = shm_open(eb_shm_segment_name(seg), O_RDWR, 0);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, EB_SHM_HEADER_SIZE + 8192), 0);
    close(fd);
    {
        eb_proto_input in[3] = {
            {.kind = EB_INPUT_IMAGE, .source = EB_SOURCE_INLINE, .frame = 0, .len = 4},
            {.kind = EB_INPUT_IMAGE, .source = EB_SOURCE_SHM, .seg = seg_id, .epoch = epoch,
             .off = tail.offset + 65536, .len = 4096},
            {.kind = EB_INPUT_IMAGE, .source = EB_SOURCE_INLINE, .frame = 1, .len = 4},
        };
        zmq_msg_t f[2];
        zmq_msg_init_size(&f[0], 4);
        memcpy(zmq_msg_data(&f[0]), "abcd", 4);
        zmq_msg_init_size(&f[1], 4);
        memcpy(zmq_msg_data(&f[1]), "efgh", 4);
        eb_proto_msg m;
        eb_proto_msg_init(&m, EB_MSG_C_REQUEST);
        m.u.request.id = 20;
        m.u.request.op = EB_OP_EMBED_IMAGE;
        m.u.request.model = "identity";
        m.u.request.n_inputs = 3;
        m.u.request.inputs = in;
        raw_send(&r, &m, f, 2);
        zmq_msg_close(&f[0]);
        zmq_msg_close(&f[1]);
        assert_true(raw_expect(&r, EB_MSG_C_REPLY, 5000));
        const eb_proto_reply *rep = &r.msg.u.reply;
        assert_int_equal(rep->n_results, 3);
        assert_int_equal(rep->results[0].status, EB_OK);
        assert_int_equal(rep->results[1].status, EB_ERR_IO);
        assert_non_null(strstr(rep->results[1].error, "truncated"));
        assert_int_equal(rep->results[2].status, EB_OK);
    }

    /* a model error fails one item of the batch */
    const char *fail_text = EB_MODEL_IDENTITY_FAIL_PREFIX " this one";
    embroker_input_t ins[3] = {
        {.kind = EMBROKER_INPUT_IMAGE, .bytes = "one", .len = 3},
        {.kind = EMBROKER_INPUT_IMAGE, .bytes = fail_text, .len = strlen(fail_text)},
        {.kind = EMBROKER_INPUT_IMAGE, .bytes = "three", .len = 5},
    };
    embroker_request_t *a = NULL;
    embroker_embed(eb, "identity", ins, 3, NULL, &a);
    assert_non_null(a);
    check_result(embroker_request_result(a, 0), "image", 0, 0, "one", 3);
    assert_int_equal(embroker_request_result(a, 1)->status, EB_ERR_MODEL);
    assert_null(embroker_request_result(a, 1)->embedding);
    check_result(embroker_request_result(a, 2), "image", 0, 0, "three", 5);
    embroker_request_free(&a);

    /* the worker still serves */
    assert_int_equal(embroker_embed_image(eb, "identity", "after", 5, EMBROKER_FORMAT_AUTO, &a),
                     EB_OK);
    check_result(embroker_request_result(a, 0), "image", 0, 0, "after", 5);
    embroker_request_free(&a);
    cJSON *h = health(eb);
    assert_int_equal((int)workers_field(h, NULL), 1);
    cJSON_Delete(h);
    raw_close(&r);
    eb_shm_segment_destroy(&seg);
    embroker_close(&eb);
    PASSED();
}

/* A request whose deadline passes while it waits in the queue is answered EB_ERR_DEADLINE and
 * never reaches a worker (the worker's processed count and the identity log say so). */
static void test_expired_request_never_reaches_worker(void **state)
{
    (void)state;
    env_setup(&E, 100);
    start_worker(&E, "w1", "--max-batch-items", "1", "--worker-queue-items", "1",
                 "--identity-delay-ms", "400", NULL);
    embroker_t *eb = client(&E, true);
    wait_workers(eb, 1);
    char err[256];
    embroker_request_t *busy = NULL, *late = NULL;
    embroker_input_t in1 = {.kind = EMBROKER_INPUT_IMAGE, .bytes = "first", .len = 5};
    embroker_input_t in2 = {.kind = EMBROKER_INPUT_IMAGE, .bytes = "second", .len = 6};
    assert_int_equal(embroker_submit(eb, "identity", &in1, 1, NULL, &busy, err, sizeof err),
                     EB_OK);
    eb_sleep_us(50000); /* the worker has taken "first" and has no credit left */
    embroker_request_options_t ro = {.deadline_ms = 100};
    assert_int_equal(embroker_submit(eb, "identity", &in2, 1, &ro, &late, err, sizeof err),
                     EB_OK);
    assert_int_equal(embroker_wait(eb, late, 5000), EB_OK);
    assert_int_equal(embroker_request_status(late), EB_ERR_DEADLINE);
    assert_int_equal(embroker_wait(eb, busy, 5000), EB_OK);
    assert_int_equal(embroker_request_status(busy), EB_OK);
    eb_sleep_us(300000); /* anything wrongly sent would have been processed by now */
    cJSON *h = health(eb);
    assert_int_equal((int)workers_field(h, "items_done"), 1);
    assert_true(broker_counter(h, "deadline") >= 1);
    cJSON_Delete(h);
    /* the identity log lists exactly the first input */
    char path[4300];
    snprintf(path, sizeof path, "%s/w1.items", E.dir);
    size_t len = 0;
    uint8_t *log = eb_test_read_file(path, &len);
    assert_non_null(log);
    uint8_t digest[EB_HASH_LEN];
    char hex[2 * EB_HASH_LEN + 1];
    eb_sha256("first", 5, digest);
    assert_int_equal(len, 65);
    assert_memory_equal(log, eb_hex(digest, EB_HASH_LEN, hex), 64);
    free(log);
    embroker_request_free(&busy);
    embroker_request_free(&late);
    embroker_close(&eb);
    PASSED();
}

/* A forward that lasts six heartbeat intervals: the compute thread is busy the whole time, so the
 * I/O thread must heartbeat for it. The broker keeps the worker (never lost, heartbeat age always
 * under the three-interval limit) and the request is answered once, by that worker. */
static void test_heartbeats_continue_during_long_forward(void **state)
{
    (void)state;
    env_setup(&E, 100);
    start_worker(&E, "busy", "--identity-delay-ms", "600", NULL);
    embroker_t *eb = client(&E, true);
    wait_workers(eb, 1);
    embroker_request_t *req = NULL;
    char err[256];
    embroker_input_t in = {.kind = EMBROKER_INPUT_IMAGE, .bytes = "long forward", .len = 12};
    assert_int_equal(embroker_submit(eb, "identity", &in, 1, NULL, &req, err, sizeof err), EB_OK);
    double max_age = 0;
    int busy_samples = 0;
    int64_t until = eb_now_us() + 550000;
    while (eb_now_us() < until) {
        cJSON *h = health(eb);
        assert_non_null(h);
        assert_int_equal((int)workers_field(h, NULL), 1);
        if (workers_field(h, "inflight") >= 1) {
            busy_samples++;
            double age = workers_field(h, "heartbeat_age_ms");
            max_age = age > max_age ? age : max_age;
        }
        cJSON_Delete(h);
        eb_sleep_us(30000);
    }
    assert_true(busy_samples >= 5);
    assert_true(max_age < 300);
    assert_int_equal(embroker_wait(eb, req, 5000), EB_OK);
    assert_int_equal(embroker_request_status(req), EB_OK);
    assert_string_equal(embroker_request_result(req, 0)->worker, "busy");
    cJSON *h = health(eb);
    assert_int_equal((int)broker_counter(h, "workers_lost"), 0);
    cJSON_Delete(h);
    embroker_request_free(&req);
    embroker_close(&eb);
    PASSED();
}

/* A worker whose batch runs past watchdog_ms reports itself unhealthy and exits with status 70;
 * its item is requeued and served by another worker. */
static void test_watchdog_exits_and_work_is_requeued(void **state)
{
    (void)state;
    env_setup(&E, 100);
    pid_t slow = start_worker(&E, "slow", "--identity-delay-ms", "2000", "--watchdog-ms", "300",
                              NULL);
    embroker_t *eb = client(&E, true);
    wait_workers(eb, 1);
    embroker_request_t *req = NULL;
    char err[256];
    embroker_input_t in = {.kind = EMBROKER_INPUT_IMAGE, .bytes = "watch", .len = 5};
    assert_int_equal(embroker_submit(eb, "identity", &in, 1, NULL, &req, err, sizeof err), EB_OK);
    int status = 0;
    int64_t deadline = eb_now_us() + 3000000;
    pid_t r = 0;
    while (eb_now_us() < deadline && (r = waitpid(slow, &status, WNOHANG)) == 0)
        eb_sleep_us(10000);
    assert_int_equal(r, slow);
    kid_forget(slow);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 70);
    start_worker(&E, "fast", NULL);
    assert_int_equal(embroker_wait(eb, req, 5000), EB_OK);
    assert_int_equal(embroker_request_status(req), EB_OK);
    const embroker_result_t *res = embroker_request_result(req, 0);
    check_result(res, "image", 0, 0, "watch", 5);
    assert_string_equal(res->worker, "fast");
    embroker_request_free(&req);
    embroker_close(&eb);
    PASSED();
}

/* Garbage on both broker sockets: error replies or drops; broker and worker keep serving. */
static void test_garbage_is_survived(void **state)
{
    (void)state;
    env_setup(&E, 100);
    start_worker(&E, "w1", NULL);
    embroker_t *eb = client(&E, false);
    wait_workers(eb, 1);
    for (int s = 0; s < 2; s++) {
        raw r;
        raw_open(&r, &E, s ? "backend" : "frontend");
        const char *hdr = s ? EB_PROTO_WORKER_HEADER : EB_PROTO_CLIENT_HEADER;
        /* one frame of junk; a wrong version; a truncated msgpack body; a huge array count */
        zmq_send(r.sock, "garbage", 7, 0);
        zmq_send(r.sock, s ? "EMB9W" : "EMB9C", 5, ZMQ_SNDMORE);
        zmq_send(r.sock, "\x05", 1, ZMQ_SNDMORE);
        zmq_send(r.sock, "\x80", 1, 0);
        zmq_send(r.sock, hdr, 5, ZMQ_SNDMORE);
        zmq_send(r.sock, s ? "\x01" : "\x05", 1, ZMQ_SNDMORE);
        zmq_send(r.sock, "\x83\xa2id\x01\xa2op", 8, 0);
        zmq_send(r.sock, hdr, 5, ZMQ_SNDMORE);
        zmq_send(r.sock, s ? "\x01" : "\x05", 1, ZMQ_SNDMORE);
        zmq_send(r.sock, "\x82\xa2id\x02\xa6inputs\xdd\xff\xff\xff\xff", 17, 0);
        zmq_send(r.sock, hdr, 5, ZMQ_SNDMORE);
        zmq_send(r.sock, "\x7f", 1, ZMQ_SNDMORE);
        zmq_send(r.sock, "\x80", 1, 0);
        /* whatever comes back must decode */
        while (raw_recv(&r, 300))
            ;
        raw_close(&r);
    }
    embroker_request_t *a = NULL;
    assert_int_equal(embroker_embed_image(eb, "identity", "still", 5, EMBROKER_FORMAT_AUTO, &a),
                     EB_OK);
    check_result(embroker_request_result(a, 0), "image", 0, 0, "still", 5);
    embroker_request_free(&a);
    assert_int_equal(waitpid(E.broker, NULL, WNOHANG), 0); /* still running */
    embroker_close(&eb);
    /* graceful stop: exit 0 */
    assert_int_equal(stop(E.broker), 0);
    PASSED();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_shm_and_inline, setup_env,
                                        teardown_check),
        cmocka_unit_test_setup_teardown(test_shm_full_policies, setup_env, teardown_check),
        cmocka_unit_test_setup_teardown(test_four_clients_hundred_in_flight, setup_env,
                                        teardown_check),
        cmocka_unit_test_setup_teardown(test_kill_worker_mid_batch, setup_env, teardown_check),
        cmocka_unit_test_setup_teardown(test_broker_restart, setup_env, teardown_check),
        cmocka_unit_test_setup_teardown(test_dead_client_segment_reaped, setup_env,
                                        teardown_check),
        cmocka_unit_test_setup_teardown(test_foreign_segment_refused, setup_env, teardown_check),
        cmocka_unit_test_setup_teardown(test_bad_references_fail_only_their_item, setup_env,
                                        teardown_check),
        cmocka_unit_test_setup_teardown(test_expired_request_never_reaches_worker, setup_env,
                                        teardown_check),
        cmocka_unit_test_setup_teardown(test_heartbeats_continue_during_long_forward, setup_env,
                                        teardown_check),
        cmocka_unit_test_setup_teardown(test_watchdog_exits_and_work_is_requeued, setup_env,
                                        teardown_check),
        cmocka_unit_test_setup_teardown(test_garbage_is_survived, setup_env, teardown_check),
    };
    const char *filter = getenv("EB_E2E_FILTER"); /* e.g. "*restart*" while debugging */
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, setup_paths, NULL);
}
