/* test_broker — embrokerd as a black box: a real broker process in a temporary run dir, raw ZMQ
 * DEALER sockets in this process playing clients and workers, every message built and checked
 * with the codec (eb_proto/eb_frames).
 *
 * The broker binary is $EMBROKER_BIN/embrokerd, else the newest
 * embrokerd in a build folder of the repository root (build, build-san, build-NAME).
 * Heartbeats run at 100 ms so liveness cases finish in well under a second each.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <msgpack.h>
#include <zmq.h>

#include "eb_clock.h"
#include "eb_frames.h"
#include "eb_proto.h"
#include "eb_shm_segment.h"
#include "eb_test.h"

#define HB_MS 100
#define MAX_INBOX 64

/* ---- broker process ---------------------------------------------------------------------- */

static pid_t g_brokers[64]; /* started brokers, killed at exit if a failed test left them */
static int g_n_brokers;

typedef struct broker_proc {
    char *dir;
    char run_dir[512];
    char front[600], back[600];
    pid_t pid;
} broker_proc;

static void find_broker_bin(char *out, size_t cap)
{
    const char *bin = getenv("EMBROKER_BIN");
    if (bin && *bin) {
        snprintf(out, cap, "%s/embrokerd", bin);
        return;
    }
    char pattern[1024];
    snprintf(pattern, sizeof pattern, "%s/build*/bin/embrokerd", eb_test_root());
    glob_t g;
    out[0] = 0;
    if (glob(pattern, 0, NULL, &g) == 0) {
        time_t best = 0;
        for (size_t i = 0; i < g.gl_pathc; i++) {
            struct stat st;
            if (stat(g.gl_pathv[i], &st) == 0 && st.st_mtime >= best) {
                best = st.st_mtime;
                snprintf(out, cap, "%s", g.gl_pathv[i]);
            }
        }
        globfree(&g);
    }
}

/* Start embrokerd with --run-dir and extra flags (NULL-terminated). */
static void broker_start(broker_proc *b, const char *first, ...)
{
    char bin[1024];
    find_broker_bin(bin, sizeof bin);
    if (!bin[0] || access(bin, X_OK) != 0) {
        print_message("embrokerd not found (set EMBROKER_BIN)\n");
        fail();
    }
    memset(b, 0, sizeof *b);
    b->dir = eb_test_tmpdir("broker");
    assert_non_null(b->dir);
    snprintf(b->run_dir, sizeof b->run_dir, "%s/run", b->dir);
    snprintf(b->front, sizeof b->front, "ipc://%s/frontend.sock", b->run_dir);
    snprintf(b->back, sizeof b->back, "ipc://%s/backend.sock", b->run_dir);
    char *argv[64];
    int argc = 0;
    char hb[32];
    snprintf(hb, sizeof hb, "%d", HB_MS);
    argv[argc++] = bin;
    argv[argc++] = "--run-dir";
    argv[argc++] = b->run_dir;
    argv[argc++] = "--heartbeat-interval-ms";
    argv[argc++] = hb;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 62; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    char log[600];
    snprintf(log, sizeof log, "%s/broker.log", b->dir);
    b->pid = fork();
    assert_true(b->pid >= 0);
    if (b->pid > 0 && g_n_brokers < 64)
        g_brokers[g_n_brokers++] = b->pid;
    if (b->pid == 0) {
        /* Die with the test (a crashed test must not leave brokers holding its stdout). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(bin, argv);
        _exit(127);
    }
    char sock[600];
    snprintf(sock, sizeof sock, "%s/frontend.sock", b->run_dir);
    for (int i = 0; i < 500; i++) {
        struct stat st;
        if (stat(sock, &st) == 0) {
            snprintf(sock, sizeof sock, "%s/backend.sock", b->run_dir);
            if (stat(sock, &st) == 0)
                return;
            snprintf(sock, sizeof sock, "%s/frontend.sock", b->run_dir);
        }
        usleep(10000);
    }
    print_message("broker did not create its sockets in %s\n", b->run_dir);
    fail();
}

/* Wait for the broker to exit; returns its exit status (or -1 after timeout_ms, killing it). */
static int broker_wait(broker_proc *b, int timeout_ms)
{
    int64_t until = eb_now_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        int status;
        pid_t r = waitpid(b->pid, &status, WNOHANG);
        if (r == b->pid) {
            b->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        if (eb_now_us() > until) {
            kill(b->pid, SIGKILL);
            waitpid(b->pid, &status, 0);
            b->pid = 0;
            return -1;
        }
        usleep(5000);
    }
}

static void dump_log(const broker_proc *b)
{
    char log[600];
    snprintf(log, sizeof log, "%s/broker.log", b->dir);
    size_t len = 0;
    uint8_t *text = eb_test_read_file(log, &len);
    if (text) {
        fprintf(stderr, "---- broker log (%s) ----\n%s---- end ----\n", log, (char *)text);
        free(text);
    }
}

static void broker_stop(broker_proc *b)
{
    if (b->pid > 0) {
        kill(b->pid, SIGTERM);
        int rc = broker_wait(b, 10000);
        if (rc != 0)
            dump_log(b);
        assert_int_equal(rc, 0);
    }
    if (getenv("EMBROKER_TEST_KEEP") == NULL)
        eb_test_rmtree(b->dir);
    free(b->dir);
}

/* ---- fake peers --------------------------------------------------------------------------- */

typedef struct inbox_msg {
    eb_proto_msg msg;
    eb_frames frames;
    eb_frames_view view;
} inbox_msg;

typedef struct peer {
    void *sock;
    bool worker;
    bool heartbeat; /* send HEARTBEAT every HB_MS while pumping */
    int64_t last_hb_us;
    int64_t last_send_us; /* any message */
    inbox_msg inbox[MAX_INBOX];
    int n_inbox;
    int n_heartbeats;  /* HEARTBEATs received from the broker */
    uint64_t bid;      /* last broker instance id seen */
    char id[64];       /* worker id */
} peer;

static void *g_ctx;

static void peer_open(peer *p, const char *endpoint, bool worker)
{
    memset(p, 0, sizeof *p);
    p->sock = zmq_socket(g_ctx, ZMQ_DEALER);
    assert_non_null(p->sock);
    int zero = 0;
    zmq_setsockopt(p->sock, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(p->sock, endpoint), 0);
    p->worker = worker;
}

static void inbox_drop(peer *p, int i)
{
    eb_proto_msg_free(&p->inbox[i].msg);
    eb_frames_close(&p->inbox[i].frames);
    memmove(&p->inbox[i], &p->inbox[i + 1], (size_t)(p->n_inbox - i - 1) * sizeof p->inbox[0]);
    p->n_inbox--;
}

static void peer_close(peer *p)
{
    while (p->n_inbox)
        inbox_drop(p, 0);
    if (p->sock)
        zmq_close(p->sock);
    p->sock = NULL;
}

static void peer_send(peer *p, eb_proto_msg *m, zmq_msg_t *items, size_t n)
{
    char err[256];
    eb_status st = eb_frames_send_msg(p->sock, NULL, 0, m, items, n, 0, err, sizeof err);
    p->last_send_us = eb_now_us();
    if (st != EB_OK)
        print_message("send: %s\n", err);
    assert_int_equal(st, EB_OK);
}

static void peer_send_heartbeat(peer *p)
{
    eb_proto_msg m;
    eb_proto_msg_init(&m, p->worker ? EB_MSG_W_HEARTBEAT : EB_MSG_C_HEARTBEAT);
    if (p->worker) {
        m.u.heartbeat.has_state = true;
        m.u.heartbeat.warm = true;
        m.u.heartbeat.healthy = true;
    }
    peer_send(p, &m, NULL, 0);
    p->last_hb_us = eb_now_us();
}

/* Receive everything pending on p; broker messages must always decode. */
static void peer_drain(peer *p)
{
    for (;;) {
        eb_frames f;
        eb_frames_init(&f);
        char err[512];
        eb_status st = eb_frames_recv(p->sock, ZMQ_DONTWAIT, 1024, 1ull << 30, &f, err,
                                      sizeof err);
        if (st == EB_ERR_TIMEOUT) {
            eb_frames_close(&f);
            return;
        }
        assert_int_equal(st, EB_OK);
        inbox_msg im;
        memset(&im, 0, sizeof im);
        st = eb_frames_decode(&f, false, true, NULL, &im.view, &im.msg, NULL, err, sizeof err);
        if (st != EB_OK)
            print_message("broker sent an undecodable message: %s\n", err);
        assert_int_equal(st, EB_OK);
        assert_true(im.msg.bid != 0);
        if (p->bid)
            assert_true(im.msg.bid == p->bid); /* one broker instance per test */
        p->bid = im.msg.bid;
        if (im.msg.kind == EB_MSG_W_HEARTBEAT || im.msg.kind == EB_MSG_C_HEARTBEAT) {
            p->n_heartbeats++;
            eb_proto_msg_free(&im.msg);
            eb_frames_close(&f);
            continue;
        }
        assert_true(p->n_inbox < MAX_INBOX);
        im.frames = f;
        p->inbox[p->n_inbox++] = im;
    }
}

/* Poll every peer for ms milliseconds, receiving into inboxes and sending heartbeats. */
static void pump(peer **peers, int n, int ms)
{
    int64_t until = eb_now_us() + (int64_t)ms * 1000;
    for (;;) {
        int64_t now = eb_now_us();
        for (int i = 0; i < n; i++)
            if (peers[i]->heartbeat && now - peers[i]->last_hb_us >= HB_MS * 1000)
                peer_send_heartbeat(peers[i]);
        zmq_pollitem_t items[8];
        for (int i = 0; i < n; i++)
            items[i] = (zmq_pollitem_t){.socket = peers[i]->sock, .events = ZMQ_POLLIN};
        long left = (long)((until - now) / 1000);
        if (left <= 0)
            left = 0;
        zmq_poll(items, n, left < 20 ? left : 20);
        for (int i = 0; i < n; i++)
            peer_drain(peers[i]);
        if (eb_now_us() >= until)
            return;
    }
}

/* Index of the first inbox message of kind on p, or -1. */
static int inbox_find(const peer *p, eb_proto_kind kind)
{
    for (int i = 0; i < p->n_inbox; i++)
        if (p->inbox[i].msg.kind == kind)
            return i;
    return -1;
}

/* Pump until p holds a message of kind (or timeout_ms); returns its index or -1. */
static int wait_for(peer *p, eb_proto_kind kind, int timeout_ms, peer **peers, int n)
{
    int64_t until = eb_now_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        int i = inbox_find(p, kind);
        if (i >= 0 || eb_now_us() >= until)
            return i;
        pump(peers, n, 10);
    }
}

/* ---- message builders ------------------------------------------------------------------- */

static void worker_ready(peer *w, const char *id, uint32_t max_batch, uint32_t dims)
{
    snprintf(w->id, sizeof w->id, "%s", id);
    eb_proto_model_desc model = {.name = "identity", .model_rev = "rev1", .preproc_rev = "p1",
                                 .dims = dims, .input = EB_INPUT_IMAGE};
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_W_READY);
    m.u.ready.worker_id = w->id;
    m.u.ready.backend = "cpu";
    m.u.ready.device = "test device";
    m.u.ready.max_batch_items = max_batch;
    m.u.ready.n_models = 1;
    m.u.ready.models = &model;
    peer_send(w, &m, NULL, 0);
    w->last_hb_us = eb_now_us();
}

static void worker_credit(peer *w, uint32_t credit);

/* READY followed by CREDIT for one full batch (credit starts at zero). */
static void worker_ready_credit(peer *w, const char *id, uint32_t max_batch, uint32_t dims)
{
    worker_ready(w, id, max_batch, dims);
    worker_credit(w, max_batch);
}

static void worker_credit(peer *w, uint32_t credit)
{
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_W_CREDIT);
    m.u.credit.credit = credit;
    peer_send(w, &m, NULL, 0);
}

/* The embedding a fake worker returns for an input: dims floats, all = first byte + tag. */
static void fake_embedding(float *out, uint32_t dims, const uint8_t *bytes, size_t len, int tag)
{
    for (uint32_t i = 0; i < dims; i++)
        out[i] = (float)(len ? bytes[0] : 0) + (float)tag + (float)i / 1000.0f;
}

/* Answer the batch in inbox slot idx of w: every item succeeds with the fake embedding. */
static void worker_reply(peer *w, int idx, uint32_t dims, int tag)
{
    inbox_msg *im = &w->inbox[idx];
    assert_int_equal(im->msg.kind, EB_MSG_W_REQUEST);
    const eb_proto_batch *batch = &im->msg.u.batch;
    eb_proto_item_result res[64];
    zmq_msg_t frames[64];
    assert_true(batch->n_items <= 64);
    for (uint32_t i = 0; i < batch->n_items; i++) {
        const eb_proto_item *it = &batch->items[i];
        memset(&res[i], 0, sizeof res[i]);
        res[i].item_id = it->item_id;
        res[i].dims = dims;
        res[i].has_hash = true;
        memset(res[i].hash, 0xab, sizeof res[i].hash);
        eb_proto_timings_clear(&res[i].timings);
        res[i].timings.us[EB_STAGE_INFER] = 7;
        const uint8_t *bytes = NULL;
        size_t len = 0;
        if (it->source == EB_SOURCE_INLINE) {
            zmq_msg_t *f = &im->frames.parts[im->view.first_item + it->frame];
            bytes = zmq_msg_data(f);
            len = zmq_msg_size(f);
        }
        zmq_msg_init_size(&frames[i], dims * 4);
        fake_embedding(zmq_msg_data(&frames[i]), dims, bytes, len, tag);
    }
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_W_REPLY);
    m.u.batch_reply.batch_id = batch->batch_id;
    m.u.batch_reply.n_items = batch->n_items;
    m.u.batch_reply.items = res;
    peer_send(w, &m, frames, batch->n_items);
    for (uint32_t i = 0; i < batch->n_items; i++)
        zmq_msg_close(&frames[i]);
}

/* Send an embed_image request with n inline inputs; input i is 200 bytes of value (seed + i). */
static void client_request(peer *c, uint64_t id, int n, uint8_t seed, uint32_t deadline_ms)
{
    eb_proto_input inputs[16];
    zmq_msg_t frames[16];
    assert_true(n <= 16);
    for (int i = 0; i < n; i++) {
        memset(&inputs[i], 0, sizeof inputs[i]);
        inputs[i].kind = EB_INPUT_IMAGE;
        inputs[i].format = EB_FORMAT_JPEG;
        inputs[i].source = EB_SOURCE_INLINE;
        inputs[i].frame = (uint32_t)i;
        zmq_msg_init_size(&frames[i], 200);
        memset(zmq_msg_data(&frames[i]), (uint8_t)(seed + i), 200);
    }
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_REQUEST);
    m.u.request.id = id;
    m.u.request.op = EB_OP_EMBED_IMAGE;
    m.u.request.model = "identity";
    m.u.request.n_inputs = (uint32_t)n;
    m.u.request.inputs = inputs;
    m.u.request.options.deadline_ms = deadline_ms;
    peer_send(c, &m, frames, (size_t)n);
    for (int i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
}

static void client_health(peer *c, uint64_t id)
{
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_REQUEST);
    m.u.request.id = id;
    m.u.request.op = EB_OP_HEALTH;
    peer_send(c, &m, NULL, 0);
}

/* The REPLY for request id in c's inbox (pumping up to timeout_ms), or -1. */
static int wait_reply(peer *c, uint64_t id, int timeout_ms, peer **peers, int n)
{
    int64_t until = eb_now_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        for (int i = 0; i < c->n_inbox; i++)
            if (c->inbox[i].msg.kind == EB_MSG_C_REPLY && c->inbox[i].msg.u.reply.id == id)
                return i;
        if (eb_now_us() >= until)
            return -1;
        pump(peers, n, 10);
    }
}

/* ---- health parsing (msgpack) ----------------------------------------------------------- */

static const msgpack_object *mp_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(key) &&
            memcmp(kv->key.via.str.ptr, key, strlen(key)) == 0)
            return &kv->val;
    }
    return NULL;
}

static int64_t mp_int(const msgpack_object *o)
{
    assert_non_null(o);
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (int64_t)o->via.u64;
    assert_int_equal(o->type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    return o->via.i64;
}

static bool mp_str_eq(const msgpack_object *o, const char *s)
{
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
           memcmp(o->via.str.ptr, s, strlen(s)) == 0;
}

/* Ask for health and unpack it into *up (caller destroys). Returns the root map. */
static const msgpack_object *get_health(peer *c, msgpack_unpacked *up, peer **peers, int n)
{
    static uint64_t hid = 900000;
    uint64_t id = ++hid;
    client_health(c, id);
    int i = wait_reply(c, id, 2000, peers, n);
    assert_true(i >= 0);
    const eb_proto_reply *rep = &c->inbox[i].msg.u.reply;
    assert_int_equal(rep->status, 0);
    assert_non_null(rep->health);
    /* Unpacked strings point into the buffer: keep a copy past the message. */
    static uint8_t copy[1 << 16];
    assert_true(rep->health_len <= sizeof copy);
    memcpy(copy, rep->health, rep->health_len);
    msgpack_unpacked_init(up);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(up, (const char *)copy, rep->health_len, &off),
                     MSGPACK_UNPACK_SUCCESS);
    inbox_drop(c, i);
    return &up->data;
}

static const msgpack_object *health_worker_credit_zero(peer *c, peer **peers, int n,
                                                       msgpack_unpacked *up)
{
    /* Wait until the broker shows every worker with credit 0 (CREDIT processed). */
    for (int tries = 0; tries < 100; tries++) {
        const msgpack_object *h = get_health(c, up, peers, n);
        const msgpack_object *ws = mp_get(h, "workers");
        bool all_zero = ws && ws->type == MSGPACK_OBJECT_ARRAY && ws->via.array.size > 0;
        for (uint32_t i = 0; all_zero && i < ws->via.array.size; i++)
            all_zero = mp_int(mp_get(&ws->via.array.ptr[i], "credit")) == 0;
        if (all_zero)
            return h;
        msgpack_unpacked_destroy(up);
        pump(peers, n, 10);
    }
    fail_msg("workers never reached credit 0");
    return NULL;
}

static void wait_workers(peer *c, int count, peer **peers, int n)
{
    for (int tries = 0; tries < 200; tries++) {
        msgpack_unpacked up;
        const msgpack_object *h = get_health(c, &up, peers, n);
        const msgpack_object *ws = mp_get(h, "workers");
        bool ok = ws && ws->type == MSGPACK_OBJECT_ARRAY && (int)ws->via.array.size == count;
        msgpack_unpacked_destroy(&up);
        if (ok)
            return;
        pump(peers, n, 10);
    }
    fail_msg("broker never showed %d workers", count);
}

static void setup_ctx(void)
{
    if (!g_ctx)
        g_ctx = zmq_ctx_new();
}

/* ---- tests -------------------------------------------------------------------------------- */

/* READY -> REQUEST -> REPLY, inline bytes forwarded intact, embedding returned intact. */
static void test_round_trip(void **state)
{
    (void)state;
    setup_ctx();
    broker_proc b;
    broker_start(&b, NULL);
    peer w, c;
    peer_open(&w, b.back, true);
    peer_open(&c, b.front, false);
    w.heartbeat = c.heartbeat = true;
    peer *all[] = {&w, &c};
    worker_ready_credit(&w, "host:1:w1", 8, 4);
    wait_workers(&c, 1, all, 2);

    client_request(&c, 42, 1, 7, 0);
    int i = wait_for(&w, EB_MSG_W_REQUEST, 2000, all, 2);
    assert_true(i >= 0);
    const eb_proto_batch *batch = &w.inbox[i].msg.u.batch;
    assert_string_equal(batch->model, "identity");
    assert_int_equal(batch->n_items, 1);
    assert_int_equal(batch->items[0].source, EB_SOURCE_INLINE);
    assert_int_equal(batch->items[0].kind, EB_INPUT_IMAGE);
    assert_int_equal(batch->items[0].format, EB_FORMAT_JPEG);
    zmq_msg_t *f = &w.inbox[i].frames.parts[w.inbox[i].view.first_item + batch->items[0].frame];
    assert_int_equal(zmq_msg_size(f), 200);
    assert_int_equal(((uint8_t *)zmq_msg_data(f))[199], 7);
    worker_reply(&w, i, 4, 0);
    inbox_drop(&w, i);

    int r = wait_reply(&c, 42, 2000, all, 2);
    assert_true(r >= 0);
    const eb_proto_reply *rep = &c.inbox[r].msg.u.reply;
    assert_int_equal(rep->status, 0);
    assert_int_equal(rep->n_results, 1);
    assert_int_equal(rep->results[0].status, 0);
    assert_int_equal(rep->results[0].dims, 4);
    assert_string_equal(rep->results[0].worker, "host:1:w1");
    assert_string_equal(rep->results[0].model_rev, "rev1");
    assert_true(rep->results[0].has_hash);
    assert_int_equal(rep->results[0].hash[0], 0xab);
    assert_true(rep->timings.us[EB_STAGE_TOTAL] >= 0);
    assert_int_equal(rep->timings.us[EB_STAGE_INFER], 7);
    assert_true(rep->timings.us[EB_STAGE_QUEUE] >= 0);
    assert_int_equal(c.inbox[r].view.n_items, 1);
    zmq_msg_t *e = &c.inbox[r].frames.parts[c.inbox[r].view.first_item];
    assert_int_equal(zmq_msg_size(e), 16);
    float expect[4];
    uint8_t seven = 7;
    fake_embedding(expect, 4, &seven, 1, 0);
    assert_memory_equal(zmq_msg_data(e), expect, sizeof expect);
    /* The broker instance id is the same on both channels. */
    assert_true(c.bid == w.bid && c.bid != 0);
    peer_close(&w);
    peer_close(&c);
    broker_stop(&b);
}

/* Items queued while the worker had no credit leave as one REQUEST of up to its batch size. */
static void test_batching(void **state)
{
    (void)state;
    setup_ctx();
    broker_proc b;
    broker_start(&b, NULL);
    peer w, c;
    peer_open(&w, b.back, true);
    peer_open(&c, b.front, false);
    w.heartbeat = c.heartbeat = true;
    peer *all[] = {&w, &c};
    worker_ready(&w, "host:2:w", 4, 4); /* no credit yet */
    msgpack_unpacked up;
    health_worker_credit_zero(&c, all, 2, &up);
    msgpack_unpacked_destroy(&up);

    for (int k = 0; k < 6; k++)
        client_request(&c, 100 + (uint64_t)k, 1, (uint8_t)(10 + k), 0);
    /* Everything is queued; give the broker time to read it all before credit arrives. */
    pump(all, 2, 100);
    assert_int_equal(inbox_find(&w, EB_MSG_W_REQUEST), -1);
    {
        const msgpack_object *h = get_health(&c, &up, all, 2);
        const msgpack_object *m0 = mp_get(mp_get(h, "models"), "identity");
        assert_int_equal(mp_int(mp_get(m0, "queue_interactive")), 6);
        msgpack_unpacked_destroy(&up);
    }
    worker_credit(&w, 8);
    int i = wait_for(&w, EB_MSG_W_REQUEST, 2000, all, 2);
    assert_true(i >= 0);
    /* credit 8 but batch size 4: the first batch carries 4 items, in queue order. */
    assert_int_equal(w.inbox[i].msg.u.batch.n_items, 4);
    for (uint32_t k = 0; k < 4; k++) {
        const eb_proto_item *it = &w.inbox[i].msg.u.batch.items[k];
        zmq_msg_t *f = &w.inbox[i].frames.parts[w.inbox[i].view.first_item + it->frame];
        assert_int_equal(((uint8_t *)zmq_msg_data(f))[0], 10 + k);
    }
    worker_reply(&w, i, 4, 0);
    inbox_drop(&w, i);
    i = wait_for(&w, EB_MSG_W_REQUEST, 2000, all, 2);
    assert_true(i >= 0);
    assert_int_equal(w.inbox[i].msg.u.batch.n_items, 2);
    worker_reply(&w, i, 4, 0);
    inbox_drop(&w, i);
    for (int k = 0; k < 6; k++) {
        int r = wait_reply(&c, 100 + (uint64_t)k, 2000, all, 2);
        assert_true(r >= 0);
        assert_int_equal(c.inbox[r].msg.u.reply.status, 0);
        zmq_msg_t *e = &c.inbox[r].frames.parts[c.inbox[r].view.first_item];
        float expect[4];
        uint8_t v = (uint8_t)(10 + k);
        fake_embedding(expect, 4, &v, 1, 0);
        assert_memory_equal(zmq_msg_data(e), expect, sizeof expect);
        inbox_drop(&c, r);
    }
    /* A multi-input request is split into items and answered in input order. */
    worker_credit(&w, 4);
    pump(all, 2, 50);
    client_request(&c, 200, 3, 50, 0);
    i = wait_for(&w, EB_MSG_W_REQUEST, 2000, all, 2);
    assert_true(i >= 0);
    assert_int_equal(w.inbox[i].msg.u.batch.n_items, 3);
    worker_reply(&w, i, 4, 0);
    inbox_drop(&w, i);
    int r = wait_reply(&c, 200, 2000, all, 2);
    assert_true(r >= 0);
    assert_int_equal(c.inbox[r].msg.u.reply.n_results, 3);
    assert_int_equal(c.inbox[r].view.n_items, 3);
    for (int k = 0; k < 3; k++) {
        float *emb = zmq_msg_data(&c.inbox[r].frames.parts[c.inbox[r].view.first_item + k]);
        assert_true(emb[0] == (float)(50 + k));
    }
    peer_close(&w);
    peer_close(&c);
    broker_stop(&b);
}

/* Two workers with one slot each: work alternates, least recently used first. */
static void test_lru(void **state)
{
    (void)state;
    setup_ctx();
    broker_proc b;
    broker_start(&b, NULL);
    peer w1, w2, c;
    peer_open(&w1, b.back, true);
    peer_open(&w2, b.back, true);
    peer_open(&c, b.front, false);
    w1.heartbeat = w2.heartbeat = c.heartbeat = true;
    peer *all[] = {&w1, &w2, &c};
    worker_ready_credit(&w1, "host:3:a", 1, 4);
    worker_ready_credit(&w2, "host:3:b", 1, 4);
    wait_workers(&c, 2, all, 3);
    peer *last = NULL;
    for (int k = 0; k < 6; k++) {
        client_request(&c, 300 + (uint64_t)k, 1, (uint8_t)k, 0);
        peer *got = NULL;
        int64_t until = eb_now_us() + 2000000;
        int i = -1;
        while (!got && eb_now_us() < until) {
            pump(all, 3, 10);
            if ((i = inbox_find(&w1, EB_MSG_W_REQUEST)) >= 0)
                got = &w1;
            else if ((i = inbox_find(&w2, EB_MSG_W_REQUEST)) >= 0)
                got = &w2;
        }
        assert_non_null(got);
        if (last)
            assert_ptr_not_equal(got, last); /* the other one was used less recently */
        last = got;
        worker_reply(got, i, 4, 0);
        inbox_drop(got, i);
        worker_credit(got, 1);
        int r = wait_reply(&c, 300 + (uint64_t)k, 2000, all, 3);
        assert_true(r >= 0);
        assert_string_equal(c.inbox[r].msg.u.reply.results[0].worker, got->id);
        inbox_drop(&c, r);
        pump(all, 3, 20); /* let the CREDIT land before the next request */
    }
    peer_close(&w1);
    peer_close(&w2);
    peer_close(&c);
    broker_stop(&b);
}

/* Past queue_limit a request is refused at once with EB_ERR_BUSY. */
static void test_busy(void **state)
{
    (void)state;
    setup_ctx();
    broker_proc b;
    broker_start(&b, "--queue-limit", "2", NULL);
    peer w, c;
    peer_open(&w, b.back, true);
    peer_open(&c, b.front, false);
    w.heartbeat = c.heartbeat = true;
    peer *all[] = {&w, &c};
    worker_ready(&w, "host:4:w", 4, 4);
    msgpack_unpacked up;
    health_worker_credit_zero(&c, all, 2, &up);
    msgpack_unpacked_destroy(&up);
    client_request(&c, 1, 1, 1, 0);
    client_request(&c, 2, 1, 2, 0);
    client_request(&c, 3, 1, 3, 0);
    int r = wait_reply(&c, 3, 2000, all, 2);
    assert_true(r >= 0);
    assert_int_equal(c.inbox[r].msg.u.reply.status, EB_ERR_BUSY);
    assert_non_null(c.inbox[r].msg.u.reply.error);
    assert_int_equal(wait_reply(&c, 1, 50, all, 2), -1); /* the first two wait */
    const msgpack_object *h = get_health(&c, &up, all, 2);
    assert_int_equal(mp_int(mp_get(mp_get(mp_get(h, "broker"), "counters"), "busy")), 1);
    msgpack_unpacked_destroy(&up);
    /* CANCEL answers a queued request at once and frees its place. */
    eb_proto_msg cancel;
    eb_proto_msg_init(&cancel, EB_MSG_C_CANCEL);
    cancel.u.cancel.id = 1;
    peer_send(&c, &cancel, NULL, 0);
    r = wait_reply(&c, 1, 2000, all, 2);
    assert_true(r >= 0);
    assert_int_equal(c.inbox[r].msg.u.reply.status, EB_ERR_CANCELLED);
    inbox_drop(&c, r);
    client_request(&c, 4, 1, 4, 0); /* fits again */
    worker_credit(&w, 4);
    int i = wait_for(&w, EB_MSG_W_REQUEST, 2000, all, 2);
    assert_true(i >= 0);
    assert_int_equal(w.inbox[i].msg.u.batch.n_items, 2);
    worker_reply(&w, i, 4, 0);
    assert_true(wait_reply(&c, 2, 2000, all, 2) >= 0);
    assert_true(wait_reply(&c, 4, 2000, all, 2) >= 0);
    assert_int_equal(wait_reply(&c, 1, 1, all, 2), -1); /* answered once */
    peer_close(&w);
    peer_close(&c);
    broker_stop(&b);
}

/* An expired request is answered EB_ERR_DEADLINE and never reaches a worker. */
static void test_deadline(void **state)
{
    (void)state;
    setup_ctx();
    broker_proc b;
    broker_start(&b, NULL);
    peer w, c;
    peer_open(&w, b.back, true);
    peer_open(&c, b.front, false);
    w.heartbeat = c.heartbeat = true;
    peer *all[] = {&w, &c};
    worker_ready(&w, "host:5:w", 4, 4);
    msgpack_unpacked up;
    health_worker_credit_zero(&c, all, 2, &up);
    msgpack_unpacked_destroy(&up);
    client_request(&c, 77, 2, 1, 1); /* deadline 1 ms */
    int r = wait_reply(&c, 77, 2000, all, 2);
    assert_true(r >= 0);
    const eb_proto_reply *rep = &c.inbox[r].msg.u.reply;
    assert_int_equal(rep->status, EB_ERR_DEADLINE);
    assert_int_equal(rep->n_results, 2);
    assert_int_equal(rep->results[0].status, EB_ERR_DEADLINE);
    assert_int_equal(rep->results[1].status, EB_ERR_DEADLINE);
    worker_credit(&w, 4);
    pump(all, 2, 300);
    /* The worker got nothing but heartbeats. */
    assert_int_equal(w.n_inbox, 0);
    assert_true(w.n_heartbeats > 0);
    const msgpack_object *h = get_health(&c, &up, all, 2);
    assert_int_equal(mp_int(mp_get(mp_get(mp_get(h, "broker"), "counters"), "deadline")), 2);
    assert_int_equal(mp_int(mp_get(mp_get(mp_get(h, "broker"), "counters"), "batches")), 0);
    msgpack_unpacked_destroy(&up);
    peer_close(&w);
    peer_close(&c);
    broker_stop(&b);
}

/* A worker that stops heartbeating is dead after 3 intervals; its item goes to the other
 * worker; the dead worker's late reply is ignored; the client gets exactly one answer. */
static void test_worker_death_requeue(void **state)
{
    (void)state;
    setup_ctx();
    broker_proc b;
    broker_start(&b, NULL);
    peer w1, w2, c;
    peer_open(&w1, b.back, true);
    peer_open(&w2, b.back, true);
    peer_open(&c, b.front, false);
    w1.heartbeat = w2.heartbeat = c.heartbeat = true;
    peer *all[] = {&w1, &w2, &c};
    worker_ready_credit(&w1, "host:6:a", 1, 4);
    worker_ready_credit(&w2, "host:6:b", 1, 4);
    wait_workers(&c, 2, all, 3);
    client_request(&c, 600, 1, 9, 0);
    peer *first = NULL, *second = NULL;
    int i = -1;
    int64_t until = eb_now_us() + 2000000;
    while (!first && eb_now_us() < until) {
        pump(all, 3, 10);
        if ((i = inbox_find(&w1, EB_MSG_W_REQUEST)) >= 0)
            first = &w1, second = &w2;
        else if ((i = inbox_find(&w2, EB_MSG_W_REQUEST)) >= 0)
            first = &w2, second = &w1;
    }
    assert_non_null(first);
    int64_t silent_since = eb_now_us();
    first->heartbeat = false;
    int j = wait_for(second, EB_MSG_W_REQUEST, 2000, all, 3);
    assert_true(j >= 0);
    int64_t waited_ms = (eb_now_us() - silent_since) / 1000;
    assert_true(waited_ms >= 2 * HB_MS); /* not before ~3 intervals (first heartbeat was fresh) */
    const eb_proto_item *it = &second->inbox[j].msg.u.batch.items[0];
    zmq_msg_t *f = &second->inbox[j].frames.parts[second->inbox[j].view.first_item + it->frame];
    assert_int_equal(((uint8_t *)zmq_msg_data(f))[0], 9);
    /* The presumed-dead worker answers late: ignored (and told to reconnect). */
    worker_reply(first, i, 4, 1000);
    pump(all, 3, 100);
    assert_int_equal(wait_reply(&c, 600, 1, all, 3), -1);
    assert_true(wait_for(first, EB_MSG_W_DISCONNECT, 1000, all, 3) >= 0);
    worker_reply(second, j, 4, 0);
    int r = wait_reply(&c, 600, 2000, all, 3);
    assert_true(r >= 0);
    assert_int_equal(c.inbox[r].msg.u.reply.status, 0);
    assert_string_equal(c.inbox[r].msg.u.reply.results[0].worker, second->id);
    float *emb = zmq_msg_data(&c.inbox[r].frames.parts[c.inbox[r].view.first_item]);
    assert_true(emb[0] == 9.0f); /* the second worker's answer (tag 0), not the late one */
    inbox_drop(&c, r);
    pump(all, 3, 200);
    assert_int_equal(wait_reply(&c, 600, 1, all, 3), -1); /* never a second answer */
    msgpack_unpacked up;
    const msgpack_object *h = get_health(&c, &up, all, 3);
    const msgpack_object *cnt = mp_get(mp_get(h, "broker"), "counters");
    assert_int_equal(mp_int(mp_get(cnt, "requeues")), 1);
    assert_int_equal(mp_int(mp_get(cnt, "workers_lost")), 1);
    assert_int_equal(mp_get(h, "workers")->via.array.size, 1);
    msgpack_unpacked_destroy(&up);
    peer_close(&w1);
    peer_close(&w2);
    peer_close(&c);
    broker_stop(&b);
}

/* Lost twice: EB_ERR_WORKER_LOST, once. */
static void test_worker_lost_twice(void **state)
{
    (void)state;
    setup_ctx();
    broker_proc b;
    broker_start(&b, NULL);
    peer w1, w2, c;
    peer_open(&w1, b.back, true);
    peer_open(&w2, b.back, true);
    peer_open(&c, b.front, false);
    w1.heartbeat = w2.heartbeat = c.heartbeat = true;
    peer *all[] = {&w1, &w2, &c};
    worker_ready_credit(&w1, "host:7:a", 1, 4);
    worker_ready_credit(&w2, "host:7:b", 1, 4);
    wait_workers(&c, 2, all, 3);
    client_request(&c, 700, 1, 3, 0);
    peer *first = NULL, *second = NULL;
    int64_t until = eb_now_us() + 2000000;
    while (!first && eb_now_us() < until) {
        pump(all, 3, 10);
        if (inbox_find(&w1, EB_MSG_W_REQUEST) >= 0)
            first = &w1, second = &w2;
        else if (inbox_find(&w2, EB_MSG_W_REQUEST) >= 0)
            first = &w2, second = &w1;
    }
    assert_non_null(first);
    first->heartbeat = false;
    assert_true(wait_for(second, EB_MSG_W_REQUEST, 2000, all, 3) >= 0);
    /* The second one says goodbye with the item in flight. */
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_W_DISCONNECT);
    m.u.disconnect.reason = "test";
    peer_send(second, &m, NULL, 0);
    second->heartbeat = false;
    int r = wait_reply(&c, 700, 2000, all, 3);
    assert_true(r >= 0);
    assert_int_equal(c.inbox[r].msg.u.reply.status, EB_ERR_WORKER_LOST);
    assert_int_equal(c.inbox[r].msg.u.reply.results[0].status, EB_ERR_WORKER_LOST);
    assert_non_null(c.inbox[r].msg.u.reply.error);
    inbox_drop(&c, r);
    pump(all, 3, 200);
    assert_int_equal(wait_reply(&c, 700, 1, all, 3), -1);
    peer_close(&w1);
    peer_close(&w2);
    peer_close(&c);
    broker_stop(&b);
}

/* Send raw frames (no codec) from a DEALER. */
static void send_raw(void *sock, const void *const *parts, const size_t *lens, int n)
{
    for (int i = 0; i < n; i++)
        assert_true(zmq_send(sock, parts[i], lens[i], i + 1 < n ? ZMQ_SNDMORE : 0) >= 0);
}

/* Encode a valid REQUEST body for reuse in malformed variants. */
static void encode_request(uint64_t id, eb_proto_buf *body)
{
    eb_proto_input in;
    memset(&in, 0, sizeof in);
    in.kind = EB_INPUT_IMAGE;
    in.source = EB_SOURCE_INLINE;
    in.frame = 0;
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_REQUEST);
    m.u.request.id = id;
    m.u.request.op = EB_OP_EMBED_IMAGE;
    m.u.request.model = "identity";
    m.u.request.n_inputs = 1;
    m.u.request.inputs = &in;
    char err[256];
    assert_int_equal(eb_proto_encode(&m, body, err, sizeof err), EB_OK);
}

/* After garbage, the broker still answers a valid request; any REPLY it sent for the garbage
 * is an error. */
static void expect_still_serving(peer *c, peer **all, int n, uint64_t probe_id)
{
    client_health(c, probe_id);
    int r = wait_reply(c, probe_id, 2000, all, n);
    assert_true(r >= 0);
    assert_int_equal(c->inbox[r].msg.u.reply.status, 0);
    inbox_drop(c, r);
    for (int i = 0; i < c->n_inbox; i++)
        if (c->inbox[i].msg.kind == EB_MSG_C_REPLY)
            assert_true(c->inbox[i].msg.u.reply.status < 0);
    while (c->n_inbox)
        inbox_drop(c, 0);
}

static void test_garbage(void **state)
{
    (void)state;
    setup_ctx();
    broker_proc b;
    broker_start(&b, NULL);
    peer w, c;
    peer_open(&w, b.back, true);
    peer_open(&c, b.front, false);
    w.heartbeat = c.heartbeat = true;
    peer *all[] = {&w, &c};
    worker_ready_credit(&w, "host:8:w", 4, 4);
    wait_workers(&c, 1, all, 2);
    uint8_t cmd_req = EB_PROTO_C_REQUEST;
    eb_proto_buf body;
    encode_request(55, &body);
    uint8_t frame[200];
    memset(frame, 1, sizeof frame);

    {   /* one frame of noise */
        const void *p[] = {"hello"};
        size_t l[] = {5};
        send_raw(c.sock, p, l, 1);
        expect_still_serving(&c, all, 2, 1);
    }
    {   /* wrong version */
        const void *p[] = {"EMB2C", &cmd_req, body.data, frame};
        size_t l[] = {5, 1, body.len, sizeof frame};
        send_raw(c.sock, p, l, 4);
        expect_still_serving(&c, all, 2, 2);
    }
    {   /* unknown command byte */
        uint8_t bad = 0x7f;
        const void *p[] = {EB_PROTO_CLIENT_HEADER, &bad, body.data};
        size_t l[] = {5, 1, body.len};
        send_raw(c.sock, p, l, 3);
        expect_still_serving(&c, all, 2, 3);
    }
    {   /* truncated msgpack: an error REPLY (the id is readable) or nothing */
        const void *p[] = {EB_PROTO_CLIENT_HEADER, &cmd_req, body.data, frame};
        size_t l[] = {5, 1, body.len / 2, sizeof frame};
        send_raw(c.sock, p, l, 4);
        expect_still_serving(&c, all, 2, 4);
    }
    {   /* a body claiming 2^32-1 inputs */
        uint8_t huge[] = {0x83, 0xa2, 'i', 'd', 0x05, 0xa2, 'o', 'p', 0xab, 'e', 'm', 'b', 'e',
                          'd', '_', 'i', 'm', 'a', 'g', 'e', 0xa6, 'i', 'n', 'p', 'u', 't', 's',
                          0xdd, 0xff, 0xff, 0xff, 0xff};
        const void *p[] = {EB_PROTO_CLIENT_HEADER, &cmd_req, huge};
        size_t l[] = {5, 1, sizeof huge};
        send_raw(c.sock, p, l, 3);
        int r = wait_reply(&c, 5, 1000, all, 2);
        if (r >= 0)
            assert_true(c.inbox[r].msg.u.reply.status < 0);
        expect_still_serving(&c, all, 2, 6);
    }
    {   /* a valid body whose frame is missing */
        const void *p[] = {EB_PROTO_CLIENT_HEADER, &cmd_req, body.data};
        size_t l[] = {5, 1, body.len};
        send_raw(c.sock, p, l, 3);
        int r = wait_reply(&c, 55, 1000, all, 2);
        assert_true(r >= 0);
        assert_int_equal(c.inbox[r].msg.u.reply.status, EB_ERR_PROTOCOL);
        expect_still_serving(&c, all, 2, 7);
    }
    {   /* an unknown segment id */
        eb_proto_input in;
        memset(&in, 0, sizeof in);
        in.kind = EB_INPUT_IMAGE;
        in.source = EB_SOURCE_SHM;
        in.seg = 99;
        in.epoch = 1;
        in.off = 4096;
        in.len = 100;
        eb_proto_msg m;
        eb_proto_msg_init(&m, EB_MSG_C_REQUEST);
        m.u.request.id = 56;
        m.u.request.op = EB_OP_EMBED_IMAGE;
        m.u.request.model = "identity";
        m.u.request.n_inputs = 1;
        m.u.request.inputs = &in;
        peer_send(&c, &m, NULL, 0);
        int r = wait_reply(&c, 56, 1000, all, 2);
        assert_true(r >= 0);
        assert_int_equal(c.inbox[r].msg.u.reply.status, EB_ERR_NOT_FOUND);
        expect_still_serving(&c, all, 2, 8);
    }
    {   /* a text input for an image model */
        eb_proto_msg m;
        eb_proto_input in;
        memset(&in, 0, sizeof in);
        in.kind = EB_INPUT_TEXT;
        in.text = "hi";
        in.text_len = 2;
        eb_proto_msg_init(&m, EB_MSG_C_REQUEST);
        m.u.request.id = 57;
        m.u.request.op = EB_OP_EMBED_TEXT;
        m.u.request.model = "identity";
        m.u.request.n_inputs = 1;
        m.u.request.inputs = &in;
        peer_send(&c, &m, NULL, 0);
        int r = wait_reply(&c, 57, 1000, all, 2);
        assert_true(r >= 0);
        assert_int_equal(c.inbox[r].msg.u.reply.status, EB_ERR_INVALID); /* image model */
        expect_still_serving(&c, all, 2, 9);
    }
    {   /* garbage on the worker socket from a stranger, and a worker-channel message on the
         * client socket */
        void *stranger = zmq_socket(g_ctx, ZMQ_DEALER);
        int zero = 0;
        zmq_setsockopt(stranger, ZMQ_LINGER, &zero, sizeof zero);
        zmq_connect(stranger, b.back);
        const void *p[] = {"EMB1W", "\x03", "\xc1\xc1\xc1"};
        size_t l[] = {5, 1, 3};
        send_raw(stranger, p, l, 3);
        const void *q[] = {"EMB1W", "\x01", body.data};
        size_t lq[] = {5, 1, body.len};
        send_raw(c.sock, q, lq, 3);
        expect_still_serving(&c, all, 2, 10);
        zmq_close(stranger);
    }
    /* The real worker still serves after all this. */
    client_request(&c, 58, 1, 4, 0);
    int i = wait_for(&w, EB_MSG_W_REQUEST, 2000, all, 2);
    assert_true(i >= 0);
    worker_reply(&w, i, 4, 0);
    int r = wait_reply(&c, 58, 2000, all, 2);
    assert_true(r >= 0);
    assert_int_equal(c.inbox[r].msg.u.reply.status, 0);
    eb_proto_buf_free(&body);
    peer_close(&w);
    peer_close(&c);
    broker_stop(&b);
}

/* Thousands of random and mutated messages on both sockets: the broker answers or drops each
 * one, stays up, and still serves a real client and worker afterwards. */
static void test_garbage_random(void **state)
{
    (void)state;
    setup_ctx();
    broker_proc b;
    broker_start(&b, NULL);
    peer c, w;
    peer_open(&c, b.front, false);
    peer_open(&w, b.back, true);
    c.heartbeat = true;
    peer *all[] = {&c};
    eb_proto_buf valid[3];
    encode_request(9, &valid[0]);
    {
        eb_proto_msg m;
        eb_proto_model_desc md = {.name = "identity", .model_rev = "r", .preproc_rev = "p",
                                  .dims = 4, .input = EB_INPUT_IMAGE};
        eb_proto_msg_init(&m, EB_MSG_W_READY);
        m.u.ready.worker_id = "fuzz:1";
        m.u.ready.backend = "cpu";
        m.u.ready.max_batch_items = 4;
        m.u.ready.n_models = 1;
        m.u.ready.models = &md;
        char err[128];
        assert_int_equal(eb_proto_encode(&m, &valid[1], err, sizeof err), EB_OK);
        eb_proto_item_result res = {.item_id = 1, .dims = 4};
        eb_proto_timings_clear(&res.timings);
        eb_proto_msg_init(&m, EB_MSG_W_REPLY);
        m.u.batch_reply.batch_id = 1;
        m.u.batch_reply.n_items = 1;
        m.u.batch_reply.items = &res;
        assert_int_equal(eb_proto_encode(&m, &valid[2], err, sizeof err), EB_OK);
    }
    static const char *headers[] = {"EMB1C", "EMB1W", "EMB2C", "EMB1", "xxxxx", ""};
    srand(1234);
    uint8_t buf[512];
    for (int n = 0; n < 3000; n++) {
        bool to_worker = rand() % 2;
        void *sock = to_worker ? w.sock : c.sock;
        const char *h = headers[rand() % 6];
        uint8_t cmd[2] = {(uint8_t)(rand() % 11), (uint8_t)rand()};
        size_t len;
        if (rand() % 3 == 0) {
            len = (size_t)(rand() % (int)sizeof buf);
            for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)rand();
        } else {
            const eb_proto_buf *v = &valid[rand() % 3];
            len = v->len <= sizeof buf ? v->len : sizeof buf;
            memcpy(buf, v->data, len);
            int flips = rand() % 4;
            for (int f = 0; f < flips && len; f++)
                buf[rand() % len] = (uint8_t)rand();
            if (rand() % 3 == 0 && len)
                len = (size_t)(rand() % (int)len);
        }
        int items = rand() % 4;
        zmq_send(sock, h, strlen(h), ZMQ_SNDMORE);
        zmq_send(sock, cmd, rand() % 8 ? 1 : 2, ZMQ_SNDMORE); /* sometimes 2 bytes */
        zmq_send(sock, buf, len, items ? ZMQ_SNDMORE : 0);
        for (int i = 0; i < items; i++)
            zmq_send(sock, buf, (size_t)(rand() % 64), i + 1 < items ? ZMQ_SNDMORE : 0);
        if (n % 100 == 0) {
            pump(all, 1, 1);
            while (c.n_inbox)
                inbox_drop(&c, 0);
            /* discard whatever the broker sent the fuzzing worker */
            zmq_msg_t part;
            zmq_msg_init(&part);
            while (zmq_msg_recv(&part, w.sock, ZMQ_DONTWAIT) >= 0)
                ;
            zmq_msg_close(&part);
        }
    }
    for (int i = 0; i < 3; i++)
        eb_proto_buf_free(&valid[i]);
    peer_close(&w);
    expect_still_serving(&c, all, 1, 12345);
    /* A real worker and request still work. */
    peer real;
    peer_open(&real, b.back, true);
    real.heartbeat = true;
    peer *both[] = {&c, &real};
    worker_ready_credit(&real, "host:13:w", 4, 4);
    client_request(&c, 1300, 1, 8, 0);
    int i = wait_for(&real, EB_MSG_W_REQUEST, 3000, both, 2);
    assert_true(i >= 0);
    worker_reply(&real, i, 4, 0);
    int r = wait_reply(&c, 1300, 3000, both, 2);
    assert_true(r >= 0);
    assert_int_equal(c.inbox[r].msg.u.reply.status, 0);
    peer_close(&real);
    peer_close(&c);
    broker_stop(&b);
}

/* Register a segment: REGISTER -> CHALLENGE -> (nonce written or not) -> PROVE -> REGISTERED. */
static int register_segment(peer *c, peer **all, int n, eb_shm_segment *seg, bool write_nonce,
                            uint32_t *seg_id)
{
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_REGISTER);
    m.u.reg.segment = eb_shm_segment_name(seg);
    m.u.reg.size = eb_shm_segment_size(seg);
    peer_send(c, &m, NULL, 0);
    int64_t until = eb_now_us() + 2000000;
    int i = -1;
    while (eb_now_us() < until) {
        if ((i = inbox_find(c, EB_MSG_C_CHALLENGE)) >= 0 ||
            (i = inbox_find(c, EB_MSG_C_REGISTERED)) >= 0)
            break;
        pump(all, n, 10);
    }
    assert_true(i >= 0);
    if (c->inbox[i].msg.kind == EB_MSG_C_REGISTERED) {
        int st = c->inbox[i].msg.u.registered.status;
        inbox_drop(c, i);
        return st;
    }
    assert_string_equal(c->inbox[i].msg.u.challenge.segment, eb_shm_segment_name(seg));
    uint8_t nonce[EB_PROTO_NONCE_BYTES];
    memcpy(nonce, c->inbox[i].msg.u.challenge.nonce, sizeof nonce);
    if (!write_nonce)
        nonce[0] ^= 0xff;
    inbox_drop(c, i);
    assert_int_equal(eb_shm_segment_write_nonce(seg, nonce, sizeof nonce), EB_OK);
    eb_proto_msg_init(&m, EB_MSG_C_PROVE);
    m.u.prove.segment = eb_shm_segment_name(seg);
    peer_send(c, &m, NULL, 0);
    i = wait_for(c, EB_MSG_C_REGISTERED, 2000, all, n);
    assert_true(i >= 0);
    int st = c->inbox[i].msg.u.registered.status;
    if (st == 0) {
        *seg_id = c->inbox[i].msg.u.registered.seg;
        assert_int_equal(c->inbox[i].msg.u.registered.epoch, eb_shm_segment_epoch(seg));
    } else {
        assert_non_null(c->inbox[i].msg.u.registered.error);
    }
    inbox_drop(c, i);
    return st;
}

static void shm_request(peer *c, uint64_t id, uint32_t seg, uint32_t epoch, uint64_t off,
                        uint64_t len)
{
    eb_proto_input in;
    memset(&in, 0, sizeof in);
    in.kind = EB_INPUT_IMAGE;
    in.source = EB_SOURCE_SHM;
    in.seg = seg;
    in.epoch = epoch;
    in.off = off;
    in.len = len;
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_REQUEST);
    m.u.request.id = id;
    m.u.request.op = EB_OP_EMBED_IMAGE;
    m.u.request.model = "identity";
    m.u.request.n_inputs = 1;
    m.u.request.inputs = &in;
    peer_send(c, &m, NULL, 0);
}

static bool segment_exists(const char *name)
{
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd >= 0)
        close(fd);
    return fd >= 0;
}

/* Ownership proof, references checked before queueing, and release of a dead client's
 * segment after 3 missed intervals (not before). */
static void test_segments(void **state)
{
    (void)state;
    setup_ctx();
    broker_proc b;
    broker_start(&b, NULL);
    peer w, c, other;
    peer_open(&w, b.back, true);
    peer_open(&c, b.front, false);
    peer_open(&other, b.front, false);
    w.heartbeat = c.heartbeat = other.heartbeat = true;
    peer *all[] = {&w, &c, &other};
    worker_ready_credit(&w, "host:9:w", 4, 4);
    wait_workers(&c, 1, all, 3);
    char err[256];
    eb_shm_segment *seg = NULL;
    assert_int_equal(eb_shm_segment_create(1 << 20, &seg, err, sizeof err), EB_OK);
    uint32_t seg_id = 0;
    /* A wrong nonce is refused. */
    assert_int_equal(register_segment(&c, all, 3, seg, false, &seg_id), EB_ERR_DENIED);
    /* The right one is accepted. */
    assert_int_equal(register_segment(&c, all, 3, seg, true, &seg_id), 0);
    assert_true(seg_id != 0);
    /* Another client cannot register the same segment. */
    uint32_t other_id = 0;
    assert_int_equal(register_segment(&other, all, 3, seg, true, &other_id), EB_ERR_DENIED);
    /* A client that only names someone else's segment (REGISTER, never PROVE) and goes away
     * gets nothing unlinked. */
    {
        eb_shm_segment *victim = NULL;
        assert_int_equal(eb_shm_segment_create(1 << 16, &victim, err, sizeof err), EB_OK);
        peer thief;
        peer_open(&thief, b.front, false);
        eb_proto_msg m;
        eb_proto_msg_init(&m, EB_MSG_C_REGISTER);
        m.u.reg.segment = eb_shm_segment_name(victim);
        m.u.reg.size = eb_shm_segment_size(victim);
        peer_send(&thief, &m, NULL, 0);
        peer *with_thief[] = {&w, &c, &other, &thief};
        assert_true(wait_for(&thief, EB_MSG_C_CHALLENGE, 2000, with_thief, 4) >= 0);
        eb_proto_msg_init(&m, EB_MSG_C_DISCONNECT);
        peer_send(&thief, &m, NULL, 0);
        pump(all, 3, 100);
        assert_true(segment_exists(eb_shm_segment_name(victim)));
        /* ... and the owner can still register it. */
        uint32_t victim_id = 0;
        assert_int_equal(register_segment(&other, all, 3, victim, true, &victim_id), 0);
        peer_close(&thief);
        eb_shm_segment_destroy(&victim);
    }
    /* ... nor use this client's segment id. */
    uint32_t epoch = eb_shm_segment_epoch(seg);
    shm_request(&other, 801, seg_id, epoch, 4096, 10);
    int r = wait_reply(&other, 801, 2000, all, 3);
    assert_true(r >= 0);
    assert_int_equal(other.inbox[r].msg.u.reply.status, EB_ERR_NOT_FOUND);
    /* Out of bounds and stale references never reach the worker. */
    shm_request(&c, 802, seg_id, epoch, eb_shm_segment_size(seg) - 10, 11);
    r = wait_reply(&c, 802, 2000, all, 3);
    assert_true(r >= 0);
    assert_int_equal(c.inbox[r].msg.u.reply.status, EB_ERR_BOUNDS);
    shm_request(&c, 803, seg_id, epoch, UINT64_MAX - 5, 10);
    r = wait_reply(&c, 803, 2000, all, 3);
    assert_true(r >= 0);
    /* off + len overflows: the codec refuses it (INVALID) before the broker's bounds check. */
    assert_true(c.inbox[r].msg.u.reply.status == EB_ERR_BOUNDS ||
                c.inbox[r].msg.u.reply.status == EB_ERR_INVALID);
    shm_request(&c, 804, seg_id, epoch + 1, 4096, 10);
    r = wait_reply(&c, 804, 2000, all, 3);
    assert_true(r >= 0);
    assert_int_equal(c.inbox[r].msg.u.reply.status, EB_ERR_STALE);
    assert_int_equal(inbox_find(&w, EB_MSG_W_REQUEST), -1);
    /* A bad reference fails only its own input: the inline one beside it is served. */
    {
        eb_proto_input in[2];
        memset(in, 0, sizeof in);
        in[0] = (eb_proto_input){.kind = EB_INPUT_IMAGE, .source = EB_SOURCE_SHM, .seg = seg_id,
                                 .epoch = epoch, .off = eb_shm_segment_size(seg) - 10,
                                 .len = 11};
        in[1] = (eb_proto_input){.kind = EB_INPUT_IMAGE, .source = EB_SOURCE_INLINE, .frame = 0};
        zmq_msg_t f;
        zmq_msg_init_size(&f, 50);
        memset(zmq_msg_data(&f), 6, 50);
        eb_proto_msg m;
        eb_proto_msg_init(&m, EB_MSG_C_REQUEST);
        m.u.request.id = 806;
        m.u.request.op = EB_OP_EMBED_IMAGE;
        m.u.request.model = "identity";
        m.u.request.n_inputs = 2;
        m.u.request.inputs = in;
        peer_send(&c, &m, &f, 1);
        zmq_msg_close(&f);
        int j = wait_for(&w, EB_MSG_W_REQUEST, 2000, all, 3);
        assert_true(j >= 0);
        assert_int_equal(w.inbox[j].msg.u.batch.n_items, 1); /* only the good input */
        worker_reply(&w, j, 4, 0);
        inbox_drop(&w, j);
        r = wait_reply(&c, 806, 2000, all, 3);
        assert_true(r >= 0);
        const eb_proto_reply *rep = &c.inbox[r].msg.u.reply;
        assert_int_equal(rep->status, 0);
        assert_int_equal(rep->n_results, 2);
        assert_int_equal(rep->results[0].status, EB_ERR_BOUNDS);
        assert_non_null(rep->results[0].error);
        assert_int_equal(rep->results[1].status, 0);
        assert_int_equal(zmq_msg_size(&c.inbox[r].frames.parts[c.inbox[r].view.first_item]), 0);
        assert_int_equal(zmq_msg_size(&c.inbox[r].frames.parts[c.inbox[r].view.first_item + 1]),
                         16);
    }
    /* A valid reference goes through with the segment's name. */
    eb_shm_ref ref;
    assert_int_equal(eb_shm_segment_alloc(seg, 100, 0, &ref, NULL, err, sizeof err), EB_OK);
    shm_request(&c, 805, seg_id, ref.epoch, ref.offset, ref.length);
    int i = wait_for(&w, EB_MSG_W_REQUEST, 2000, all, 3);
    assert_true(i >= 0);
    const eb_proto_item *it = &w.inbox[i].msg.u.batch.items[0];
    assert_int_equal(it->source, EB_SOURCE_SHM);
    assert_string_equal(it->segment, eb_shm_segment_name(seg));
    assert_true(it->off == ref.offset && it->len == ref.length && it->epoch == ref.epoch);
    worker_reply(&w, i, 4, 0);
    inbox_drop(&w, i);
    assert_true(wait_reply(&c, 805, 2000, all, 3) >= 0);

    /* The client goes silent: its segment survives 3 intervals, then is unlinked and every
     * worker is told to release it. */
    char name[128];
    snprintf(name, sizeof name, "%s", eb_shm_segment_name(seg));
    c.heartbeat = false;
    int64_t silent = c.last_send_us; /* the client's last message */
    pump(all, 3, 2 * HB_MS);
    assert_true(segment_exists(name));
    int64_t gone_at = 0;
    while (eb_now_us() - silent < (3 * HB_MS + 2000) * 1000) {
        pump(all, 3, 10);
        if (!segment_exists(name)) {
            gone_at = eb_now_us();
            break;
        }
    }
    assert_true(gone_at != 0);
    assert_true(gone_at - silent >= 3 * HB_MS * 1000);
    i = wait_for(&w, EB_MSG_W_RELEASE_SEGMENT, 1000, all, 3);
    assert_true(i >= 0);
    assert_string_equal(w.inbox[i].msg.u.release.segment, name);
    eb_shm_segment_destroy(&seg);
    peer_close(&w);
    peer_close(&c);
    peer_close(&other);
    broker_stop(&b);
}

static void test_health(void **state)
{
    (void)state;
    setup_ctx();
    broker_proc b;
    broker_start(&b, NULL);
    peer w, c;
    peer_open(&w, b.back, true);
    peer_open(&c, b.front, false);
    w.heartbeat = c.heartbeat = true;
    peer *all[] = {&w, &c};
    worker_ready_credit(&w, "host:10:w", 16, 8);
    wait_workers(&c, 1, all, 2);
    pump(all, 2, 2 * HB_MS); /* a heartbeat with warm=true arrives */
    msgpack_unpacked up;
    const msgpack_object *h = get_health(&c, &up, all, 2);
    const msgpack_object *br = mp_get(h, "broker");
    char inst[17];
    snprintf(inst, sizeof inst, "%016llx", (unsigned long long)c.bid);
    assert_true(mp_str_eq(mp_get(br, "instance"), inst));
    assert_true((uint64_t)mp_int(mp_get(br, "bid")) == c.bid);
    assert_non_null(mp_get(br, "uptime_s"));
    assert_non_null(mp_get(br, "errors"));
    assert_int_equal(mp_int(mp_get(br, "clients")), 1);
    assert_true(mp_int(mp_get(br, "uptime_ms")) >= 0);
    assert_int_equal(mp_int(mp_get(br, "pid")), b.pid);
    assert_non_null(mp_get(mp_get(br, "counters"), "requests"));
    const msgpack_object *ws = mp_get(h, "workers");
    assert_int_equal(ws->via.array.size, 1);
    const msgpack_object *w0 = &ws->via.array.ptr[0];
    assert_true(mp_str_eq(mp_get(w0, "id"), "host:10:w"));
    assert_true(mp_str_eq(mp_get(w0, "backend"), "cpu"));
    assert_true(mp_str_eq(mp_get(w0, "device"), "test device"));
    assert_int_equal(mp_get(w0, "warm")->type, MSGPACK_OBJECT_BOOLEAN);
    assert_true(mp_get(w0, "warm")->via.boolean);
    assert_int_equal(mp_int(mp_get(w0, "inflight")), 0);
    assert_int_equal(mp_int(mp_get(w0, "max_batch")), 16);
    int64_t age = mp_int(mp_get(w0, "heartbeat_age_ms"));
    assert_true(age >= 0 && age < 3 * HB_MS);
    assert_true(mp_str_eq(&mp_get(w0, "models")->via.array.ptr[0], "identity"));
    assert_int_equal(mp_get(h, "models")->via.map.size, 1);
    const msgpack_object *m0 = mp_get(mp_get(h, "models"), "identity");
    assert_non_null(m0);
    assert_int_equal(mp_int(mp_get(m0, "dims")), 8);
    assert_int_equal(mp_int(mp_get(m0, "workers")), 1);
    assert_int_equal(mp_int(mp_get(m0, "queue_interactive")), 0);
    assert_int_equal(mp_int(mp_get(m0, "queue_bulk")), 0);
    assert_int_equal(mp_int(mp_get(w0, "credit")), 16);
    msgpack_unpacked_destroy(&up);
    peer_close(&w);
    peer_close(&c);
    broker_stop(&b);
}

/* SIGTERM: new requests refused, in-flight work answered EB_ERR_SHUTDOWN after the grace
 * period, workers told, exit 0. */
static void test_sigterm(void **state)
{
    (void)state;
    setup_ctx();
    broker_proc b;
    broker_start(&b, "--shutdown-grace-ms", "400", NULL);
    peer w, c;
    peer_open(&w, b.back, true);
    peer_open(&c, b.front, false);
    w.heartbeat = c.heartbeat = true;
    peer *all[] = {&w, &c};
    worker_ready_credit(&w, "host:11:w", 4, 4);
    wait_workers(&c, 1, all, 2);
    client_request(&c, 1100, 1, 1, 0);
    assert_true(wait_for(&w, EB_MSG_W_REQUEST, 2000, all, 2) >= 0);
    int64_t t0 = eb_now_us();
    kill(b.pid, SIGTERM);
    pump(all, 2, 50);
    client_request(&c, 1101, 1, 1, 0);
    int r = wait_reply(&c, 1101, 1000, all, 2);
    assert_true(r >= 0);
    assert_int_equal(c.inbox[r].msg.u.reply.status, EB_ERR_SHUTDOWN);
    r = wait_reply(&c, 1100, 2000, all, 2);
    assert_true(r >= 0);
    assert_int_equal(c.inbox[r].msg.u.reply.status, EB_ERR_SHUTDOWN);
    int64_t answered_ms = (eb_now_us() - t0) / 1000;
    assert_true(answered_ms >= 300 && answered_ms < 1500);
    assert_true(wait_for(&w, EB_MSG_W_DISCONNECT, 1000, all, 2) >= 0);
    assert_true(wait_for(&c, EB_MSG_C_DISCONNECT, 1000, all, 2) >= 0);
    int rc = broker_wait(&b, 3000);
    if (rc != 0)
        dump_log(&b);
    assert_int_equal(rc, 0);
    peer_close(&w);
    peer_close(&c);
    broker_stop(&b);
}

/* A run dir open to others is refused; a second broker on the same run dir is refused. */
static void test_run_dir(void **state)
{
    (void)state;
    setup_ctx();
    broker_proc b;
    broker_start(&b, NULL);
    struct stat st;
    assert_int_equal(stat(b.run_dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    char bin[1024];
    find_broker_bin(bin, sizeof bin);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s --run-dir %s 2>/dev/null", bin, b.run_dir);
    int rc = system(cmd);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
    char open_dir[600];
    snprintf(open_dir, sizeof open_dir, "%s/open", b.dir);
    assert_int_equal(mkdir(open_dir, 0755), 0);
    chmod(open_dir, 0755);
    snprintf(cmd, sizeof cmd, "%s --run-dir %s 2>/dev/null", bin, open_dir);
    rc = system(cmd);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
    broker_stop(&b);
}

/* A client on tcp:// sends inline inputs; it may not register shared memory. */
static void test_tcp_frontend(void **state)
{
    (void)state;
    setup_ctx();
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", 20000 + (int)(getpid() % 20000));
    broker_proc b;
    broker_start(&b, "--frontend-tcp", ep, NULL);
    peer w, c;
    peer_open(&w, b.back, true);
    peer_open(&c, ep, false);
    w.heartbeat = c.heartbeat = true;
    peer *all[] = {&w, &c};
    worker_ready_credit(&w, "host:12:w", 4, 4);
    wait_workers(&c, 1, all, 2);
    char err[256];
    eb_shm_segment *seg = NULL;
    assert_int_equal(eb_shm_segment_create(1 << 16, &seg, err, sizeof err), EB_OK);
    uint32_t seg_id = 0;
    assert_int_equal(register_segment(&c, all, 2, seg, true, &seg_id), EB_ERR_DENIED);
    eb_shm_segment_destroy(&seg);
    client_request(&c, 1200, 1, 5, 0);
    int i = wait_for(&w, EB_MSG_W_REQUEST, 2000, all, 2);
    assert_true(i >= 0);
    worker_reply(&w, i, 4, 0);
    int r = wait_reply(&c, 1200, 2000, all, 2);
    assert_true(r >= 0);
    assert_int_equal(c.inbox[r].msg.u.reply.status, 0);
    peer_close(&w);
    peer_close(&c);
    broker_stop(&b);
}

/* Supervisor mode: workers are started with the broker's endpoint, restarted with growing
 * delays when they exit, and stopped with the broker. */
static void test_supervisor(void **state)
{
    (void)state;
    setup_ctx();
    char *dir = eb_test_tmpdir("sup");
    assert_non_null(dir);
    char script[700], starts[700];
    snprintf(script, sizeof script, "%s/fake-worker.sh", dir);
    snprintf(starts, sizeof starts, "%s/starts", dir);
    FILE *f = fopen(script, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\n"
               "echo \"$EMBROKER_WORKER_INDEX $(date +%%s%%N) $$ $EMBROKER_BROKER [$1] [$2]\" >> %s\n"
               "if [ \"$1\" = sleep ]; then exec sleep 30; fi\n"
               "exit 3\n", starts);
    fclose(f);
    chmod(script, 0700);

    broker_proc b;
    broker_start(&b, "--workers", "2", "--worker-cmd", script, "--worker-args",
                 "crash 'two words'", NULL);
    peer c;
    peer_open(&c, b.front, false);
    c.heartbeat = true;
    peer *all[] = {&c};
    pump(all, 1, 1200);
    msgpack_unpacked up;
    const msgpack_object *h = get_health(&c, &up, all, 1);
    int64_t restarts = mp_int(mp_get(mp_get(h, "broker"), "worker_restarts"));
    msgpack_unpacked_destroy(&up);
    assert_true(restarts >= 4);
    size_t len = 0;
    char *text = (char *)eb_test_read_file(starts, &len);
    assert_non_null(text);
    int count[2] = {0, 0};
    long long last[2] = {0, 0}, gap[2][16];
    char expect_ep[700];
    snprintf(expect_ep, sizeof expect_ep, "%s", b.back);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        int idx;
        long long ns;
        char ep[700], a1[64], a2[64];
        assert_int_equal(sscanf(line, "%d %lld %*d %699s %63s %63[^\n]", &idx, &ns, ep, a1, a2),
                         5);
        assert_true(idx == 0 || idx == 1);
        assert_string_equal(ep, expect_ep);
        assert_string_equal(a1, "[crash]");
        assert_string_equal(a2, "[two words]");
        if (count[idx] > 0 && count[idx] <= 16)
            gap[idx][count[idx] - 1] = (ns - last[idx]) / 1000000;
        last[idx] = ns;
        count[idx]++;
    }
    free(text);
    for (int k = 0; k < 2; k++) {
        /* Restarts at +100, +200, +400 ms (plus the script's own run time): never a tight
         * loop. */
        assert_true(count[k] >= 2 && count[k] <= 6);
        assert_true(gap[k][0] >= 90);
    }
    /* The broker's schedule doubles: 100, 200, 400 ms for each slot. */
    char log[700];
    snprintf(log, sizeof log, "%s/broker.log", b.dir);
    text = (char *)eb_test_read_file(log, &len);
    assert_non_null(text);
    int delays[2][8], n_delays[2] = {0, 0};
    for (char *p = strstr(text, "worker_restart_scheduled"); p;
         p = strstr(p + 1, "worker_restart_scheduled")) {
        int slot, delay;
        if (sscanf(p, "worker_restart_scheduled slot=%d delay_ms=%d", &slot, &delay) == 2 &&
            slot >= 0 && slot < 2 && n_delays[slot] < 8)
            delays[slot][n_delays[slot]++] = delay;
    }
    free(text);
    for (int k = 0; k < 2; k++) {
        assert_true(n_delays[k] >= 2);
        for (int j = 0; j < n_delays[k] && j < 6; j++)
            assert_int_equal(delays[k][j], 100 << j);
    }
    peer_close(&c);
    broker_stop(&b);

    /* Long-running workers end with the broker. */
    remove(starts);
    broker_start(&b, "--workers", "1", "--worker-cmd", script, "--worker-args", "sleep", NULL);
    pid_t child = 0;
    for (int i = 0; i < 200 && !child; i++) {
        usleep(10000);
        text = (char *)eb_test_read_file(starts, &len);
        if (text) {
            int pid = 0;
            if (sscanf(text, "%*d %*d %d", &pid) == 1)
                child = pid;
            free(text);
        }
    }
    assert_true(child > 0);
    usleep(50000);
    assert_int_equal(kill(child, 0), 0);
    broker_stop(&b);
    assert_int_equal(kill(child, 0), -1); /* reaped by the broker */
    eb_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_batching),
        cmocka_unit_test(test_lru),
        cmocka_unit_test(test_busy),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_worker_death_requeue),
        cmocka_unit_test(test_worker_lost_twice),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_garbage_random),
        cmocka_unit_test(test_segments),
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_sigterm),
        cmocka_unit_test(test_run_dir),
        cmocka_unit_test(test_tcp_frontend),
        cmocka_unit_test(test_supervisor),
    };
    signal(SIGPIPE, SIG_IGN);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    /* A failed test leaves its broker and sockets behind: kill the brokers; the context is
     * not terminated (zmq_ctx_term would wait for the abandoned sockets). */
    for (int i = 0; i < g_n_brokers; i++)
        if (kill(g_brokers[i], 0) == 0 && waitpid(g_brokers[i], NULL, WNOHANG) == 0) {
            kill(g_brokers[i], SIGKILL);
            waitpid(g_brokers[i], NULL, 0);
        }
    return rc;
}
