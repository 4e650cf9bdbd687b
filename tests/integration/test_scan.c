/* Integration tests for the quick-scan path inside the broker: a real embrokerd with a
 * supervised real embroker-worker, a real Redis (EMBROKER_REDIS_URL) and a real PostgreSQL +
 * pgvector (EMBROKER_PG_URL, a fresh database per run), talking the raw protocol over ipc://.
 *
 * The worker serves the test-only identity models ("identity" for images, "identity-text" for
 * texts: the vector is a deterministic expansion of the SHA-256 of the exact input bytes), with
 * a delay per batch so that identical requests sent together really overlap in flight. What is
 * checked:
 *   - op store then scan: a stored product ranks itself first with score 1 (image, text and
 *     combined queries through one index); a repeated scan is answered from Redis with
 *     bit-identical vectors;
 *   - a client lying about its content hash, at the same time as an honest client asks for the
 *     same key, changes nothing the honest client gets, now or later (merge + cache);
 *   - bad input: unknown template, k too large, missing template, a worker whose dimensions
 *     disagree with the table (refused);
 *   - delete; Redis stopped (scans still work, health says so); PostgreSQL killed during a load
 *     of stores and restarted: every stored row arrives exactly once. */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <msgpack.h>
#include <zmq.h>

#include "eb_clock.h"
#include "eb_frames.h"
#include "eb_hash.h"
#include "eb_migrate.h"
#include "eb_proto.h"
#include "eb_test.h"

#define DIMS 32
#define DELAY_MS 150

static const char *base_url, *redis_url;
static char db_url[512], db_name[64];
static char *tmp;
static char run_dir[512], frontend[600];
static int broker_pid = -1;
static void *ctx;
static uint64_t next_id = 1;

/* ---- processes and database ------------------------------------------------------------- */

static void url_with_db(char *out, size_t cap, const char *name)
{
    const char *slash = strrchr(base_url, '/');
    assert_non_null(slash);
    snprintf(out, cap, "%.*s/%s", (int)(slash - base_url), base_url, name);
}

static void admin_exec(const char *sql)
{
    PGconn *pg = PQconnectdb(base_url);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(pg);
}

static long db_long(const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    PGconn *pg = PQconnectdb(db_url);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    long v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    PQfinish(pg);
    return v;
}

static int services(const char *what)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/scripts/services %s >/dev/null 2>&1", eb_test_root(), what);
    return system(cmd);
}

static void bin_path(char *out, size_t cap, const char *name)
{
    const char *bin = getenv("EMBROKER_BIN");
    if (bin && *bin)
        snprintf(out, cap, "%s/%s", bin, name);
    else
        snprintf(out, cap, "%s/build/bin/%s", eb_test_root(), name);
}

/* ---- raw protocol client ---------------------------------------------------------------- */

typedef struct reply {
    eb_proto_msg msg;
    eb_frames frames;
    eb_frames_view view;
} reply;

static void *client_open(void)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(s, frontend), 0);
    return s;
}

typedef struct input_spec {
    bool text;
    const void *bytes; /* image bytes, or the text */
    size_t len;
    bool send_hash;
    const uint8_t *hash; /* NULL: the true hash of bytes (when send_hash) */
} input_spec;

static void true_hash(const input_spec *in, uint8_t out[32])
{
    assert_int_equal(eb_content_hash(in->text ? "text" : "image", 0, 0, "", in->bytes, in->len,
                                     out),
                     EB_OK);
}

/* Send one request; returns its id. */
static uint64_t send_req(void *sock, eb_proto_op op, const input_spec *ins, uint32_t n,
                         const eb_proto_options *opts)
{
    eb_proto_input inputs[4];
    zmq_msg_t frames[4];
    uint32_t n_frames = 0;
    char texts[4][256];
    for (uint32_t i = 0; i < n; i++) {
        eb_proto_input *in = &inputs[i];
        memset(in, 0, sizeof *in);
        if (ins[i].text) {
            in->kind = EB_INPUT_TEXT;
            snprintf(texts[i], sizeof texts[i], "%.*s", (int)ins[i].len,
                     (const char *)ins[i].bytes);
            in->text = texts[i];
            in->text_len = (uint32_t)ins[i].len;
        } else {
            in->kind = EB_INPUT_IMAGE;
            in->source = EB_SOURCE_INLINE;
            in->frame = n_frames;
            zmq_msg_init_size(&frames[n_frames], ins[i].len);
            memcpy(zmq_msg_data(&frames[n_frames]), ins[i].bytes, ins[i].len);
            n_frames++;
        }
        if (ins[i].send_hash) {
            in->has_hash = true;
            if (ins[i].hash)
                memcpy(in->hash, ins[i].hash, 32);
            else
                true_hash(&ins[i], in->hash);
        }
    }
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_REQUEST);
    uint64_t id = next_id++;
    m.u.request.id = id;
    m.u.request.op = op;
    if (op == EB_OP_EMBED_IMAGE)
        m.u.request.model = "identity";
    if (op == EB_OP_EMBED_TEXT)
        m.u.request.model = "identity-text";
    m.u.request.n_inputs = n;
    m.u.request.inputs = inputs;
    if (opts) {
        m.u.request.options = *opts;
    } else if (op == EB_OP_SCAN || op == EB_OP_STORE) {
        m.u.request.options.return_embedding = false;
    }
    char err[256];
    assert_int_equal(eb_frames_send_msg(sock, NULL, 0, &m, frames, n_frames, 0, err, sizeof err),
                     EB_OK);
    for (uint32_t f = 0; f < n_frames; f++)
        zmq_msg_close(&frames[f]);
    return id;
}

static void reply_free(reply *r)
{
    eb_proto_msg_free(&r->msg);
    eb_frames_close(&r->frames);
}

/* The REPLY to request id (other messages are dropped); fails the test after timeout_ms. */
static void recv_reply(void *sock, uint64_t id, int timeout_ms, reply *out)
{
    int64_t until = eb_now_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        int64_t left = (until - eb_now_us()) / 1000;
        if (left <= 0)
            fail_msg("no reply to request %llu within %d ms", (unsigned long long)id, timeout_ms);
        zmq_pollitem_t pi = {.socket = sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&pi, 1, (long)left) <= 0)
            continue;
        memset(out, 0, sizeof *out);
        eb_frames_init(&out->frames);
        char err[512];
        assert_int_equal(eb_frames_recv(sock, 0, 1024, 1ull << 30, &out->frames, err, sizeof err),
                         EB_OK);
        eb_status st = eb_frames_decode(&out->frames, false, true, NULL, &out->view, &out->msg,
                                        NULL, err, sizeof err);
        if (st != EB_OK)
            fail_msg("undecodable message from the broker: %s", err);
        if (out->msg.kind == EB_MSG_C_REPLY && out->msg.u.reply.id == id)
            return;
        reply_free(out);
    }
}

static void request(void *sock, eb_proto_op op, const input_spec *ins, uint32_t n,
                    const eb_proto_options *opts, reply *out)
{
    uint64_t id = send_req(sock, op, ins, n, opts);
    recv_reply(sock, id, 30000, out);
}

/* Item frame i of a reply as floats (NULL when absent). */
static const float *reply_vec(const reply *r, uint32_t i, uint32_t *dims)
{
    if (i >= r->view.n_items)
        return NULL;
    zmq_msg_t *f = &((reply *)r)->frames.parts[r->view.first_item + i];
    *dims = (uint32_t)(zmq_msg_size(f) / 4);
    return zmq_msg_size(f) ? zmq_msg_data(f) : NULL;
}

static eb_proto_options scan_opts(const char *template_name, uint32_t k)
{
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_REQUEST);
    eb_proto_options o = m.u.request.options;
    o.template_name = template_name;
    o.k = k;
    o.return_embedding = false;
    return o;
}

/* ---- health ------------------------------------------------------------------------------ */

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
    if (!o)
        return -1;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (int64_t)o->via.u64;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return o->via.i64;
    if (o->type == MSGPACK_OBJECT_BOOLEAN)
        return o->via.boolean;
    return -1;
}

/* health[section][key] as an integer (booleans 0/1), -1 when absent; section "counters" is
 * health.broker.counters, section "workers" gives the number of workers. */
static int64_t health_value(void *sock, const char *section, const char *key)
{
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_REQUEST);
    uint64_t id = next_id++;
    m.u.request.id = id;
    m.u.request.op = EB_OP_HEALTH;
    char err[256];
    assert_int_equal(eb_frames_send_msg(sock, NULL, 0, &m, NULL, 0, 0, err, sizeof err), EB_OK);
    reply r;
    recv_reply(sock, id, 10000, &r);
    assert_non_null(r.msg.u.reply.health);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    assert_int_equal(msgpack_unpack_next(&up, (const char *)r.msg.u.reply.health,
                                         r.msg.u.reply.health_len, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *sec = strcmp(section, "counters") == 0
                                    ? mp_get(mp_get(&up.data, "broker"), "counters")
                                    : mp_get(&up.data, section);
    int64_t v = -1;
    if (strcmp(section, "workers") == 0)
        v = sec && sec->type == MSGPACK_OBJECT_ARRAY ? (int64_t)sec->via.array.size : -1;
    else
        v = mp_int(mp_get(sec, key));
    msgpack_unpacked_destroy(&up);
    reply_free(&r);
    return v;
}

static bool wait_health(void *sock, const char *section, const char *key, int64_t want,
                        int timeout_ms)
{
    int64_t until = eb_now_us() + (int64_t)timeout_ms * 1000;
    while (eb_now_us() < until) {
        if (health_value(sock, section, key) == want)
            return true;
        usleep(50000);
    }
    return false;
}

/* ---- setup -------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    tmp = eb_test_tmpdir("scan");
    assert_non_null(tmp);
    snprintf(db_name, sizeof db_name, "scan_%d", (int)getpid());
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", db_name);
    admin_exec(sql);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db_name);
    admin_exec(sql);
    url_with_db(db_url, sizeof db_url, db_name);
    char sql_dir[1024], err[512];
    eb_test_path(sql_dir, sizeof sql_dir, "sql");
    if (eb_migrate_run_dir(db_url, sql_dir, DIMS, DIMS, NULL, err, sizeof err) != EB_OK)
        fail_msg("migrate: %s", err);

    snprintf(run_dir, sizeof run_dir, "%s/run", tmp);
    snprintf(frontend, sizeof frontend, "ipc://%s/frontend.sock", run_dir);
    char broker[1024], worker_args[512], spool[600], log[600];
    bin_path(broker, sizeof broker, "embrokerd");
    snprintf(worker_args, sizeof worker_args,
             "--models identity,identity-text --identity-dims %d --identity-forward-delay-ms %d "
             "--heartbeat-interval-ms 200",
             DIMS, DELAY_MS);
    snprintf(spool, sizeof spool, "%s/spool", tmp);
    snprintf(log, sizeof log, "%s/embrokerd.log", tmp);
    char *argv[] = {broker, "--run-dir", run_dir, "--workers", "1", "--worker-args", worker_args,
                    "--cache-url", (char *)redis_url, "--db-url", db_url, "--spool-dir", spool,
                    "--scan-image-model", "identity", "--scan-text-model", "identity-text",
                    "--heartbeat-interval-ms", "200", "--client-timeout-ms", "600000",
                    "--store-retry-ms", "100", "--bulk-max-batch", "32", NULL};
    broker_pid = eb_test_spawn(argv, log);
    assert_true(broker_pid > 0);
    ctx = zmq_ctx_new();
    for (int i = 0; i < 300; i++) {
        if (access(run_dir, F_OK) == 0) {
            char sock_path[600];
            snprintf(sock_path, sizeof sock_path, "%s/frontend.sock", run_dir);
            if (access(sock_path, F_OK) == 0)
                break;
        }
        usleep(20000);
    }
    void *c = client_open();
    bool up = false;
    for (int i = 0; i < 200 && !up; i++) {
        up = health_value(c, "workers", NULL) >= 1 && health_value(c, "postgres", "ok") == 1 &&
             health_value(c, "redis", "ok") == 1;
        if (!up)
            usleep(50000);
    }
    zmq_close(c);
    if (!up)
        fail_msg("broker, worker, Redis or PostgreSQL not ready; see %s", log);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    if (broker_pid > 0)
        eb_test_stop(broker_pid);
    /* The context is not terminated: a failed test may have left its socket open, and
     * zmq_ctx_term would wait for it forever. The process exits right after. */
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", db_name);
    admin_exec(sql);
    eb_test_rmtree(tmp);
    free(tmp);
    return 0;
}

static void random_bytes(uint8_t *b, size_t n)
{
    assert_int_equal(getrandom(b, n, 0), (ssize_t)n);
}

/* Store n products "<prefix><i>" under template with random images (and texts when text). */
static void store_products(void *c, const char *prefix, const char *template_name, int n,
                           uint8_t (*images)[600], bool with_text)
{
    uint64_t ids[64];
    char texts[64][64], pids[64][64];
    assert_true(n <= 64);
    for (int i = 0; i < n; i++) {
        random_bytes(images[i], 600);
        snprintf(texts[i], sizeof texts[i], "%s description %d", prefix, i);
        snprintf(pids[i], sizeof pids[i], "%s%d", prefix, i);
        input_spec ins[2] = {{.bytes = images[i], .len = 600},
                             {.text = true, .bytes = texts[i], .len = strlen(texts[i])}};
        eb_proto_options o = scan_opts(template_name, 0);
        o.product_id = pids[i];
        o.priority = EB_PRIORITY_BULK;
        ids[i] = send_req(c, EB_OP_STORE, ins, with_text ? 2 : 1, &o);
    }
    for (int i = 0; i < n; i++) {
        reply r;
        recv_reply(c, ids[i], 30000, &r);
        if (r.msg.u.reply.status != 0)
            fail_msg("store %d: %s", i, r.msg.u.reply.error);
        assert_non_null(r.msg.u.reply.store_id);
        assert_int_equal(strlen(r.msg.u.reply.store_id), 36);
        reply_free(&r);
    }
}

/* Wait until the spool has nothing pending (every store acknowledged by PostgreSQL). */
static void wait_stored(void *c)
{
    assert_true(wait_health(c, "postgres", "spool_pending", 0, 30000));
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_store_then_scan_ranks_itself_first(void **state)
{
    (void)state;
    void *c = client_open();
    static uint8_t images[20][600];
    store_products(c, "shoe-", "shoes", 20, images, true);
    wait_stored(c);
    assert_int_equal(db_long("SELECT count(*) FROM \"ProductEmbeddings\" WHERE "
                             "\"BusinessTemplate\" = 'shoes' AND \"SourceType\" = 'catalogue'"),
                     20);
    /* Image only: w_img (1) x cosine 1 for itself, far less for random others. */
    for (int p = 3; p < 20; p += 8) {
        input_spec in = {.bytes = images[p], .len = 600};
        eb_proto_options o = scan_opts("shoes", 5);
        reply r;
        request(c, EB_OP_SCAN, &in, 1, &o, &r);
        assert_int_equal(r.msg.u.reply.status, 0);
        assert_false(r.msg.u.reply.has_search_error);
        assert_int_equal(r.msg.u.reply.n_matches, 5);
        char want[32];
        snprintf(want, sizeof want, "shoe-%d", p);
        assert_string_equal(r.msg.u.reply.matches[0].product_id, want);
        assert_true(fabs(r.msg.u.reply.matches[0].score - 1.0) < 1e-4);
        assert_true(r.msg.u.reply.matches[1].score < 0.9);
        for (uint32_t i = 1; i < r.msg.u.reply.n_matches; i++)
            assert_true(r.msg.u.reply.matches[i - 1].score >= r.msg.u.reply.matches[i].score);
        assert_true(r.msg.u.reply.timings.us[EB_STAGE_SEARCH] >= 0);
        reply_free(&r);
    }
    /* Text only, through the same index: the text half alone. */
    const char *text = "shoe- description 11";
    input_spec tin = {.text = true, .bytes = text, .len = strlen(text)};
    eb_proto_options o = scan_opts("shoes", 3);
    reply r;
    request(c, EB_OP_SCAN, &tin, 1, &o, &r);
    assert_int_equal(r.msg.u.reply.status, 0);
    assert_true(r.msg.u.reply.n_matches >= 1);
    assert_string_equal(r.msg.u.reply.matches[0].product_id, "shoe-11");
    assert_true(fabs(r.msg.u.reply.matches[0].score - 1.0) < 1e-4);
    reply_free(&r);
    /* Combined: the image and the text of product 4 score 1 + 1 against its row. */
    char t4[64];
    snprintf(t4, sizeof t4, "shoe- description %d", 4);
    input_spec both[2] = {{.bytes = images[4], .len = 600},
                          {.text = true, .bytes = t4, .len = strlen(t4)}};
    request(c, EB_OP_SCAN, both, 2, &o, &r);
    assert_int_equal(r.msg.u.reply.status, 0);
    assert_string_equal(r.msg.u.reply.matches[0].product_id, "shoe-4");
    assert_true(fabs(r.msg.u.reply.matches[0].score - 2.0) < 1e-4);
    reply_free(&r);
    zmq_close(c);
}

static void test_repeated_scan_hits_cache_bit_identical(void **state)
{
    (void)state;
    void *c = client_open();
    uint8_t img[600];
    random_bytes(img, sizeof img);
    input_spec in = {.bytes = img, .len = sizeof img, .send_hash = true};
    eb_proto_options o = scan_opts("shoes", 3);
    o.return_embedding = true;
    reply first;
    request(c, EB_OP_SCAN, &in, 1, &o, &first);
    assert_int_equal(first.msg.u.reply.status, 0);
    assert_int_equal(first.msg.u.reply.n_results, 1);
    assert_false(first.msg.u.reply.results[0].cached);
    assert_non_null(first.msg.u.reply.results[0].worker);
    uint32_t d1 = 0;
    const float *v1 = reply_vec(&first, 0, &d1);
    assert_non_null(v1);
    assert_int_equal(d1, DIMS);
    int64_t hits_before = health_value(c, "counters", "cache_hits");
    bool cached = false;
    /* The cache write is fire-and-forget: allow it a few milliseconds to land. */
    for (int attempt = 0; attempt < 50 && !cached; attempt++) {
        reply again;
        request(c, EB_OP_SCAN, &in, 1, &o, &again);
        assert_int_equal(again.msg.u.reply.status, 0);
        cached = again.msg.u.reply.results[0].cached;
        if (cached) {
            uint32_t d2 = 0;
            const float *v2 = reply_vec(&again, 0, &d2);
            assert_int_equal(d2, d1);
            assert_memory_equal(v1, v2, d1 * sizeof(float));
            assert_null(again.msg.u.reply.results[0].worker);
            assert_memory_equal(again.msg.u.reply.results[0].hash, first.msg.u.reply.results[0].hash,
                                32);
            assert_true(again.msg.u.reply.timings.us[EB_STAGE_CACHE] >= 0);
            assert_int_equal(again.msg.u.reply.n_matches, first.msg.u.reply.n_matches);
        }
        reply_free(&again);
        if (!cached)
            usleep(20000);
    }
    assert_true(cached);
    assert_true(health_value(c, "counters", "cache_hits") > hits_before);
    reply_free(&first);
    zmq_close(c);
}

static void test_lying_hash_cannot_poison(void **state)
{
    (void)state;
    void *liar = client_open(), *honest = client_open();
    uint8_t a[600], b[600], ha[32];
    random_bytes(a, sizeof a);
    random_bytes(b, sizeof b);
    input_spec honest_in = {.bytes = a, .len = sizeof a, .send_hash = true};
    true_hash(&honest_in, ha);
    /* The liar sends B but claims A's hash, first, so it leads; the honest request for A with
     * the same key arrives while the liar's is in flight (the worker takes DELAY_MS). */
    input_spec liar_in = {.bytes = b, .len = sizeof b, .send_hash = true, .hash = ha};
    int64_t merged0 = health_value(honest, "counters", "merged");
    int64_t mismatch0 = health_value(honest, "counters", "merge_mismatch");
    uint64_t lid = send_req(liar, EB_OP_EMBED_IMAGE, &liar_in, 1, NULL);
    usleep(20000);
    uint64_t hid = send_req(honest, EB_OP_EMBED_IMAGE, &honest_in, 1, NULL);
    reply lr, hr;
    recv_reply(liar, lid, 30000, &lr);
    recv_reply(honest, hid, 30000, &hr);
    assert_int_equal(health_value(honest, "counters", "merged"), merged0 + 1);
    assert_int_equal(health_value(honest, "counters", "merge_mismatch"), mismatch0 + 1);
    /* Truth: each input embedded on its own, without any hash (no cache, no merging). */
    input_spec a_plain = {.bytes = a, .len = sizeof a}, b_plain = {.bytes = b, .len = sizeof b};
    reply ta, tb;
    request(honest, EB_OP_EMBED_IMAGE, &a_plain, 1, NULL, &ta);
    request(honest, EB_OP_EMBED_IMAGE, &b_plain, 1, NULL, &tb);
    uint32_t d = 0, dt = 0;
    const float *hv = reply_vec(&hr, 0, &d), *tav = reply_vec(&ta, 0, &dt);
    assert_non_null(hv);
    assert_int_equal(d, dt);
    assert_memory_equal(hv, tav, d * 4);
    assert_memory_equal(hr.msg.u.reply.results[0].hash, ha, 32);
    const float *lv = reply_vec(&lr, 0, &d), *tbv = reply_vec(&tb, 0, &dt);
    assert_memory_equal(lv, tbv, d * 4); /* the liar got its own bytes' vector */
    assert_memory_not_equal(lv, tav, d * 4);
    /* Later: A's key in the cache holds A's vector (the liar's result went under B's hash). */
    bool cached = false;
    for (int attempt = 0; attempt < 50 && !cached; attempt++) {
        reply later;
        request(honest, EB_OP_EMBED_IMAGE, &honest_in, 1, NULL, &later);
        cached = later.msg.u.reply.results[0].cached;
        const float *v = reply_vec(&later, 0, &d);
        assert_memory_equal(v, tav, d * 4);
        reply_free(&later);
        if (!cached)
            usleep(20000);
    }
    assert_true(cached);
    reply_free(&lr);
    reply_free(&hr);
    reply_free(&ta);
    reply_free(&tb);
    zmq_close(liar);
    zmq_close(honest);
}

static void test_identical_requests_merge(void **state)
{
    (void)state;
    void *c1 = client_open(), *c2 = client_open();
    uint8_t a[600];
    random_bytes(a, sizeof a);
    input_spec in = {.bytes = a, .len = sizeof a, .send_hash = true};
    int64_t merged0 = health_value(c1, "counters", "merged");
    uint64_t id1 = send_req(c1, EB_OP_EMBED_IMAGE, &in, 1, NULL);
    usleep(20000);
    uint64_t id2 = send_req(c2, EB_OP_EMBED_IMAGE, &in, 1, NULL);
    reply r1, r2;
    recv_reply(c1, id1, 30000, &r1);
    recv_reply(c2, id2, 30000, &r2);
    assert_int_equal(r1.msg.u.reply.status, 0);
    assert_int_equal(r2.msg.u.reply.status, 0);
    assert_int_equal(health_value(c1, "counters", "merged"), merged0 + 1);
    uint32_t d1 = 0, d2 = 0;
    const float *v1 = reply_vec(&r1, 0, &d1), *v2 = reply_vec(&r2, 0, &d2);
    assert_int_equal(d1, d2);
    assert_memory_equal(v1, v2, d1 * 4);
    reply_free(&r1);
    reply_free(&r2);
    zmq_close(c1);
    zmq_close(c2);
}

static void test_bad_input(void **state)
{
    (void)state;
    void *c = client_open();
    uint8_t img[600];
    random_bytes(img, sizeof img);
    input_spec in = {.bytes = img, .len = sizeof img};
    reply r;
    /* Unknown template: the embedding is computed, the search says what is wrong. */
    eb_proto_options o = scan_opts("no-such-template", 5);
    request(c, EB_OP_SCAN, &in, 1, &o, &r);
    assert_int_equal(r.msg.u.reply.status, 0);
    assert_true(r.msg.u.reply.has_search_error);
    assert_int_equal(r.msg.u.reply.search_error.code, EB_ERR_NOT_FOUND);
    assert_non_null(strstr(r.msg.u.reply.search_error.message, "no-such-template"));
    assert_int_equal(r.msg.u.reply.n_matches, 0);
    reply_free(&r);
    /* An input the model cannot embed (for a real model: bytes that are not an image; the
     * identity model fails inputs that start with "identity:fail"): the scan fails with the
     * model's error and searches nothing. */
    const char *bad = "identity:fail this input";
    input_spec bad_in = {.bytes = bad, .len = strlen(bad)};
    o = scan_opts("shoes", 5);
    request(c, EB_OP_SCAN, &bad_in, 1, &o, &r);
    assert_int_equal(r.msg.u.reply.status, EB_ERR_MODEL);
    assert_non_null(r.msg.u.reply.error);
    assert_int_equal(r.msg.u.reply.n_matches, 0);
    assert_int_equal(r.msg.u.reply.results[0].status, EB_ERR_MODEL);
    assert_true(r.msg.u.reply.timings.us[EB_STAGE_SEARCH] < 0);
    reply_free(&r);
    /* k above max_k (1000): refused by the codec with the limit in the message. */
    o = scan_opts("shoes", 100000);
    request(c, EB_OP_SCAN, &in, 1, &o, &r);
    assert_int_not_equal(r.msg.u.reply.status, 0);
    assert_non_null(r.msg.u.reply.error);
    reply_free(&r);
    /* No template. */
    o = scan_opts(NULL, 5);
    request(c, EB_OP_SCAN, &in, 1, &o, &r);
    assert_int_equal(r.msg.u.reply.status, EB_ERR_INVALID);
    assert_non_null(strstr(r.msg.u.reply.error, "template"));
    reply_free(&r);
    /* output_dim on a scan. */
    o = scan_opts("shoes", 5);
    o.output_dim = 8;
    request(c, EB_OP_SCAN, &in, 1, &o, &r);
    assert_int_equal(r.msg.u.reply.status, EB_ERR_INVALID);
    reply_free(&r);
    /* A store may not use the scans' SourceType. */
    o = scan_opts("shoes", 0);
    o.product_id = "x";
    o.source_type = "scan";
    request(c, EB_OP_STORE, &in, 1, &o, &r);
    assert_int_equal(r.msg.u.reply.status, EB_ERR_INVALID);
    reply_free(&r);
    /* A worker whose dimensions disagree with the table is refused, and says why. */
    int64_t refused0 = health_value(c, "counters", "workers_refused");
    char worker[1024], log[600];
    bin_path(worker, sizeof worker, "embroker-worker");
    snprintf(log, sizeof log, "%s/bad-worker.log", tmp);
    char *argv[] = {worker, "--run-dir", run_dir, "--models", "identity", "--identity-dims", "8",
                    "--worker-id", "bad-dims", NULL};
    int pid = eb_test_spawn(argv, log);
    assert_true(pid > 0);
    bool refused = false;
    for (int i = 0; i < 100 && !refused; i++) {
        refused = health_value(c, "counters", "workers_refused") > refused0;
        if (!refused)
            usleep(50000);
    }
    eb_test_stop(pid);
    assert_true(refused);
    assert_int_equal(health_value(c, "workers", NULL), 1);
    zmq_close(c);
}

static void test_delete(void **state)
{
    (void)state;
    void *c = client_open();
    static uint8_t images[2][600];
    store_products(c, "gone-", "deltest", 2, images, false);
    wait_stored(c);
    input_spec in = {.bytes = images[0], .len = 600};
    eb_proto_options o = scan_opts("deltest", 5);
    reply r;
    request(c, EB_OP_SCAN, &in, 1, &o, &r);
    assert_string_equal(r.msg.u.reply.matches[0].product_id, "gone-0");
    reply_free(&r);
    eb_proto_options d = scan_opts(NULL, 0);
    d.product_id = "gone-0";
    request(c, EB_OP_DELETE, NULL, 0, &d, &r);
    assert_int_equal(r.msg.u.reply.status, 0);
    assert_true(r.msg.u.reply.has_deleted);
    assert_int_equal(r.msg.u.reply.deleted, 1);
    reply_free(&r);
    request(c, EB_OP_SCAN, &in, 1, &o, &r);
    assert_int_equal(r.msg.u.reply.status, 0);
    assert_int_equal(r.msg.u.reply.n_matches, 1);
    assert_string_equal(r.msg.u.reply.matches[0].product_id, "gone-1");
    reply_free(&r);
    zmq_close(c);
}

static void test_redis_down(void **state)
{
    (void)state;
    void *c = client_open();
    assert_int_equal(services("stop-redis"), 0);
    uint8_t img[600];
    random_bytes(img, sizeof img);
    input_spec in = {.bytes = img, .len = sizeof img, .send_hash = true};
    eb_proto_options o = scan_opts("shoes", 3);
    for (int i = 0; i < 5; i++) {
        reply r;
        request(c, EB_OP_SCAN, &in, 1, &o, &r);
        assert_int_equal(r.msg.u.reply.status, 0);
        assert_false(r.msg.u.reply.has_search_error);
        assert_int_equal(r.msg.u.reply.n_matches, 3);
        assert_false(r.msg.u.reply.results[0].cached);
        reply_free(&r);
    }
    assert_true(wait_health(c, "redis", "ok", 0, 5000));
    assert_int_equal(services("start-redis"), 0);
    assert_true(wait_health(c, "redis", "ok", 1, 20000));
    zmq_close(c);
}

static void test_postgres_killed_during_stores(void **state)
{
    (void)state;
    void *c = client_open();
    enum { N = 60 };
    char store_ids[N][40];
    int n_ids = 0, n_search_errors = 0;
    for (int i = 0; i < N; i++) {
        if (i == N / 3)
            assert_int_equal(services("stop-pg"), 0);
        if (i == 2 * N / 3) {
            assert_int_equal(health_value(c, "postgres", "ok"), 0);
            assert_true(health_value(c, "postgres", "spool_pending") > 0);
            assert_int_equal(services("start-pg"), 0);
        }
        uint8_t img[600];
        random_bytes(img, sizeof img);
        input_spec in = {.bytes = img, .len = sizeof img};
        eb_proto_options o = scan_opts("shoes", 3);
        o.store = true;
        reply r;
        request(c, EB_OP_SCAN, &in, 1, &o, &r);
        /* The embedding and the store id come back whether or not PostgreSQL is there. */
        assert_int_equal(r.msg.u.reply.status, 0);
        assert_non_null(r.msg.u.reply.store_id);
        snprintf(store_ids[n_ids++], sizeof store_ids[0], "%s", r.msg.u.reply.store_id);
        if (r.msg.u.reply.has_search_error) {
            assert_int_equal(r.msg.u.reply.search_error.code, EB_ERR_UNAVAILABLE);
            n_search_errors++;
        }
        reply_free(&r);
    }
    assert_true(n_search_errors > 0);
    assert_true(wait_health(c, "postgres", "ok", 1, 30000));
    wait_stored(c);
    /* Every store exactly once. */
    assert_int_equal(db_long("SELECT count(*) FROM \"ProductEmbeddings\" WHERE \"SourceType\" = "
                             "'scan'"),
                     N);
    assert_int_equal(db_long("SELECT count(DISTINCT \"StoreId\") FROM \"ProductEmbeddings\" "
                             "WHERE \"SourceType\" = 'scan'"),
                     N);
    for (int i = 0; i < n_ids; i++)
        assert_int_equal(db_long("SELECT count(*) FROM \"ProductEmbeddings\" WHERE \"StoreId\" = "
                                 "'%s'",
                                 store_ids[i]),
                         1);
    zmq_close(c);
}

/* Backfill killed halfway (SIGKILL, no chance to tidy up) and run again with the same
 * checkpoint: every product ends up in the table exactly once. */
static void test_backfill_killed_and_resumed(void **state)
{
    (void)state;
    enum { ROWS = 1500 };
    char input[600], checkpoint[600], log[600], cli[1024];
    snprintf(input, sizeof input, "%s/products.jsonl", tmp);
    snprintf(checkpoint, sizeof checkpoint, "%s/products.checkpoint", tmp);
    snprintf(log, sizeof log, "%s/backfill.log", tmp);
    bin_path(cli, sizeof cli, "embroker");
    FILE *f = fopen(input, "w");
    assert_non_null(f);
    for (int i = 0; i < ROWS; i++)
        fprintf(f, "{\"product_id\": \"bf-%05d\", \"template\": \"bf\", \"text\": "
                "\"backfill product %d\"}\n", i, i);
    fclose(f);
    char *argv[] = {cli, "--run-dir", run_dir, "backfill", "--input", input, "--checkpoint",
                    checkpoint, "--batch", "64", "--quiet", NULL};
    int pid = eb_test_spawn(argv, log);
    assert_true(pid > 0);
    /* Kill it once some rows are stored and others are not. */
    long stored = 0;
    for (int i = 0; i < 600; i++) {
        usleep(20000);
        stored = db_long("SELECT count(*) FROM \"ProductEmbeddings\" WHERE "
                         "\"BusinessTemplate\" = 'bf'");
        if (stored >= ROWS / 4)
            break;
    }
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status));
    assert_true(stored > 0);
    void *c = client_open();
    wait_stored(c);
    long at_kill = db_long("SELECT count(*) FROM \"ProductEmbeddings\" WHERE "
                           "\"BusinessTemplate\" = 'bf'");
    assert_true(at_kill < ROWS);
    pid = eb_test_spawn(argv, log);
    assert_true(pid > 0);
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    wait_stored(c);
    assert_int_equal(db_long("SELECT count(*) FROM \"ProductEmbeddings\" WHERE "
                             "\"BusinessTemplate\" = 'bf'"),
                     ROWS);
    assert_int_equal(db_long("SELECT count(DISTINCT \"ProductId\") FROM \"ProductEmbeddings\" "
                             "WHERE \"BusinessTemplate\" = 'bf'"),
                     ROWS);
    /* A row stored by the backfill is found by a text scan. */
    const char *text = "backfill product 1234";
    input_spec in = {.text = true, .bytes = text, .len = strlen(text)};
    eb_proto_options o = scan_opts("bf", 1);
    reply r;
    request(c, EB_OP_SCAN, &in, 1, &o, &r);
    assert_int_equal(r.msg.u.reply.status, 0);
    assert_string_equal(r.msg.u.reply.matches[0].product_id, "bf-01234");
    reply_free(&r);
    zmq_close(c);
}

int main(void)
{
    base_url = getenv("EMBROKER_PG_URL");
    redis_url = getenv("EMBROKER_REDIS_URL");
    if (!base_url || !*base_url || !redis_url || !*redis_url) {
        printf("EMBROKER_PG_URL/EMBROKER_REDIS_URL not set (tests/run starts both); skipped\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_then_scan_ranks_itself_first),
        cmocka_unit_test(test_repeated_scan_hits_cache_bit_identical),
        cmocka_unit_test(test_lying_hash_cannot_poison),
        cmocka_unit_test(test_identical_requests_merge),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_delete),
        cmocka_unit_test(test_redis_down),
        cmocka_unit_test(test_postgres_killed_during_stores),
        cmocka_unit_test(test_backfill_killed_and_resumed),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
