/* Integration tests for broker/eb_cache against a real Redis (EMBROKER_REDIS_URL): bit-identical
 * round trip with a TTL, misses, corrupt values, per-command timeouts while Redis is paused,
 * and going down / coming back when Redis is stopped and restarted (scripts/services). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "eb_cache.h"
#include "eb_clock.h"
#include "eb_loop.h"
#include "eb_test.h"

static const char *redis_url;
static char redis_host[64];
static int redis_port;

typedef struct got {
    int calls;
    eb_status status;
    float values[1024];
    uint32_t dims;
    int64_t at_us;
} got;

static void on_get(void *arg, eb_status status, const float *values, uint32_t dims)
{
    got *g = arg;
    g->calls++;
    g->status = status;
    g->dims = dims;
    g->at_us = eb_now_us();
    if (values && dims <= 1024)
        memcpy(g->values, values, dims * sizeof *values);
}

static void run_for(eb_loop *loop, int64_t ms)
{
    int64_t end = eb_now_us() + ms * 1000;
    while (eb_now_us() < end)
        eb_loop_run_once(loop, 5000);
}

static bool run_until_calls(eb_loop *loop, const got *g, int want, int64_t ms)
{
    int64_t end = eb_now_us() + ms * 1000;
    while (g->calls < want && eb_now_us() < end)
        eb_loop_run_once(loop, 5000);
    return g->calls >= want;
}

static bool wait_up(eb_loop *loop, eb_cache *c, bool want, int64_t ms)
{
    int64_t end = eb_now_us() + ms * 1000;
    while (eb_cache_is_up(c) != want && eb_now_us() < end)
        eb_loop_run_once(loop, 5000);
    return eb_cache_is_up(c) == want;
}

static eb_cache *make_cache(eb_loop *loop, uint32_t timeout_ms)
{
    eb_cache_options o;
    eb_cache_options_default(&o);
    o.url = redis_url;
    o.ttl_ms = 60000;
    o.command_timeout_ms = timeout_ms;
    o.backoff_min_ms = 50;
    o.backoff_max_ms = 300;
    char err[256];
    eb_cache *c = eb_cache_new(loop, &o, err, sizeof err);
    assert_non_null(c);
    assert_true(wait_up(loop, c, true, 5000));
    return c;
}

/* A plain blocking connection for checking what the cache wrote. */
static redisContext *direct(void)
{
    struct timeval tv = {2, 0};
    redisContext *r = redisConnectWithTimeout(redis_host, redis_port, tv);
    assert_non_null(r);
    assert_int_equal(r->err, 0);
    return r;
}

static void fill_hash(uint8_t h[EB_HASH_LEN], const char *seed)
{
    eb_sha256(seed, strlen(seed), h);
}

static int services(const char *what)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/scripts/services %s >/dev/null 2>&1", eb_test_root(), what);
    return system(cmd);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_key_and_value_codec(void **state)
{
    (void)state;
    uint8_t h[EB_HASH_LEN];
    fill_hash(h, "abc");
    char key[256];
    size_t n = eb_cache_key(key, sizeof key, "siglip", "r1", "p2", h);
    assert_int_equal(n, strlen(key));
    char hex[65];
    eb_hex(h, EB_HASH_LEN, hex);
    char want[256];
    snprintf(want, sizeof want, "emb:siglip:r1:p2:%s", hex);
    assert_string_equal(key, want);
    assert_int_equal(eb_cache_key(key, 20, "siglip", "r1", "p2", h), 0); /* too small */

    float v[3] = {1.5f, -0.0f, 3e-40f}, out[3];
    uint8_t buf[EB_CACHE_VALUE_HEADER + 12];
    assert_int_equal(eb_cache_value_size(3), sizeof buf);
    assert_int_equal(eb_cache_value_encode(v, 3, EB_CACHE_FLAG_NORMALIZED, buf, sizeof buf),
                     EB_OK);
    assert_memory_equal(buf, "EBCV\x01\x01\x01\x00\x03\x00\x00\x00", 12);
    uint32_t dims = 0;
    uint16_t flags = 0;
    assert_int_equal(eb_cache_value_decode(buf, sizeof buf, 3, out, 3, &dims, &flags), EB_OK);
    assert_memory_equal(out, v, sizeof v);
    assert_int_equal(flags, EB_CACHE_FLAG_NORMALIZED);
    assert_int_equal(eb_cache_value_decode(buf, sizeof buf, 4, out, 3, NULL, NULL),
                     EB_ERR_PROTOCOL); /* wrong dims */
    assert_int_equal(eb_cache_value_decode(buf, sizeof buf - 1, 0, out, 3, NULL, NULL),
                     EB_ERR_PROTOCOL); /* short */
    buf[EB_CACHE_VALUE_HEADER + 5] ^= 1;
    assert_int_equal(eb_cache_value_decode(buf, sizeof buf, 0, out, 3, NULL, NULL),
                     EB_ERR_PROTOCOL); /* checksum */
}

static void test_bad_url(void **state)
{
    (void)state;
    eb_loop *loop = eb_loop_new();
    eb_cache_options o;
    eb_cache_options_default(&o);
    char err[256] = "";
    o.url = "http://127.0.0.1:1";
    assert_null(eb_cache_new(loop, &o, err, sizeof err));
    assert_non_null(strstr(err, "redis://"));
    o.url = "redis://127.0.0.1:99999";
    assert_null(eb_cache_new(loop, &o, err, sizeof err));
    assert_non_null(strstr(err, "port"));
    eb_loop_destroy(&loop);
}

static void test_round_trip_ttl_and_miss(void **state)
{
    (void)state;
    eb_loop *loop = eb_loop_new();
    eb_cache *c = make_cache(loop, 500);
    float v[768];
    for (int i = 0; i < 768; i++)
        v[i] = (float)sin(i * 0.37) * 1e-3f * (float)(i + 1);
    v[5] = -0.0f;
    v[6] = 1.4e-45f; /* denormal */
    uint8_t h[EB_HASH_LEN];
    fill_hash(h, "round-trip");
    assert_int_equal(eb_cache_put(c, "siglip", "rev1", "pp1", h, v, 768, 0), EB_OK);
    eb_cache_stats st;
    int64_t end = eb_now_us() + 3000000;
    do {
        eb_loop_run_once(loop, 5000);
        eb_cache_get_stats(c, &st);
    } while (st.puts_done < 1 && eb_now_us() < end);
    assert_int_equal(st.puts_done, 1);

    got g = {0};
    assert_int_equal(eb_cache_get(c, "siglip", "rev1", "pp1", h, 768, on_get, &g), EB_OK);
    assert_int_equal(g.calls, 0); /* never called from inside the call */
    assert_true(run_until_calls(loop, &g, 1, 3000));
    assert_int_equal(g.status, EB_OK);
    assert_int_equal(g.dims, 768);
    assert_memory_equal(g.values, v, sizeof v);

    /* What Redis holds: the documented layout, and a TTL. */
    redisContext *r = direct();
    char key[256];
    eb_cache_key(key, sizeof key, "siglip", "rev1", "pp1", h);
    redisReply *rep = redisCommand(r, "PTTL %s", key);
    assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
    assert_true(rep->integer > 0 && rep->integer <= 60000);
    freeReplyObject(rep);
    rep = redisCommand(r, "GET %s", key);
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    assert_int_equal(rep->len, 16 + 768 * 4);
    assert_memory_equal(rep->str, "EBCV", 4);
    freeReplyObject(rep);
    redisFree(r);

    /* Another preproc revision is another key: a miss. */
    got m = {0};
    assert_int_equal(eb_cache_get(c, "siglip", "rev1", "pp2", h, 768, on_get, &m), EB_OK);
    assert_true(run_until_calls(loop, &m, 1, 3000));
    assert_int_equal(m.status, EB_ERR_NOT_FOUND);
    eb_cache_get_stats(c, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.errors, 0);
    assert_true(st.up);
    eb_cache_destroy(&c);
    assert_null(c);
    eb_loop_destroy(&loop);
}

static void test_corrupt_values_are_misses(void **state)
{
    (void)state;
    eb_loop *loop = eb_loop_new();
    eb_cache *c = make_cache(loop, 500);
    redisContext *r = direct();
    uint8_t h1[EB_HASH_LEN], h2[EB_HASH_LEN], h3[EB_HASH_LEN];
    fill_hash(h1, "garbage");
    fill_hash(h2, "wrong-dims");
    fill_hash(h3, "flipped");
    char k1[256], k2[256], k3[256];
    eb_cache_key(k1, sizeof k1, "m", "r", "p", h1);
    eb_cache_key(k2, sizeof k2, "m", "r", "p", h2);
    eb_cache_key(k3, sizeof k3, "m", "r", "p", h3);
    freeReplyObject(redisCommand(r, "SET %s %b", k1, "not an embedding", (size_t)16));
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint8_t val[16 + 32];
    eb_cache_value_encode(v, 8, 0, val, sizeof val);
    freeReplyObject(redisCommand(r, "SET %s %b", k2, val, sizeof val));
    val[20] ^= 0x40;
    freeReplyObject(redisCommand(r, "SET %s %b", k3, val, sizeof val));
    redisFree(r);

    got g[3] = {{0}};
    assert_int_equal(eb_cache_get(c, "m", "r", "p", h1, 8, on_get, &g[0]), EB_OK);
    assert_int_equal(eb_cache_get(c, "m", "r", "p", h2, 16, on_get, &g[1]), EB_OK);
    assert_int_equal(eb_cache_get(c, "m", "r", "p", h3, 8, on_get, &g[2]), EB_OK);
    for (int i = 0; i < 3; i++) {
        assert_true(run_until_calls(loop, &g[i], 1, 3000));
        assert_int_equal(g[i].status, EB_ERR_NOT_FOUND);
    }
    eb_cache_stats st;
    eb_cache_get_stats(c, &st);
    assert_int_equal(st.corrupt, 3);
    assert_int_equal(st.misses, 3);
    assert_int_equal(st.hits, 0);
    assert_true(st.errors >= 3);
    assert_non_null(strstr(st.last_error, "corrupt"));
    assert_true(eb_cache_is_up(c)); /* corrupt data is not an outage */
    eb_cache_destroy(&c);
    eb_loop_destroy(&loop);
}

static void test_slow_redis_times_out_then_recovers(void **state)
{
    (void)state;
    eb_loop *loop = eb_loop_new();
    eb_cache *c = make_cache(loop, 60);
    uint8_t h[EB_HASH_LEN];
    fill_hash(h, "slow");
    redisContext *r = direct();
    redisReply *rep = redisCommand(r, "CLIENT PAUSE 1500");
    assert_int_equal(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    redisFree(r);

    got g[3] = {{0}};
    int64_t t0 = eb_now_us();
    for (int i = 0; i < 3; i++)
        assert_int_equal(eb_cache_get(c, "m", "r", "p", h, 0, on_get, &g[i]), EB_OK);
    for (int i = 0; i < 3; i++) {
        assert_true(run_until_calls(loop, &g[i], 1, 1000));
        assert_int_equal(g[i].status, EB_ERR_TIMEOUT);
        assert_true(g[i].at_us - t0 < 400000); /* 60 ms timeout, not the 1.5 s pause */
    }
    /* Three consecutive timeouts: marked down; calls now fail at once. */
    assert_false(eb_cache_is_up(c));
    got refused = {0};
    assert_int_equal(eb_cache_get(c, "m", "r", "p", h, 0, on_get, &refused),
                     EB_ERR_UNAVAILABLE);
    eb_cache_stats st;
    eb_cache_get_stats(c, &st);
    assert_int_equal(st.timeouts, 3);
    assert_false(st.up);
    assert_true(st.unavailable >= 1);

    /* After the pause it reconnects by itself and answers; late replies never reached the
     * callbacks a second time. */
    int64_t end = eb_now_us() + 8000000;
    got after = {0};
    while (eb_now_us() < end) {
        eb_loop_run_once(loop, 5000);
        if (eb_cache_is_up(c) && after.calls == 0 &&
            eb_cache_get(c, "m", "r", "p", h, 0, on_get, &after) == EB_OK) {
            run_until_calls(loop, &after, 1, 1000);
            if (after.status != EB_ERR_NOT_FOUND)
                after.calls = 0; /* still paused: try again */
            else
                break;
        }
    }
    assert_int_equal(after.status, EB_ERR_NOT_FOUND);
    run_for(loop, 100);
    for (int i = 0; i < 3; i++)
        assert_int_equal(g[i].calls, 1);
    assert_int_equal(refused.calls, 0);
    eb_cache_destroy(&c);
    eb_loop_destroy(&loop);
}

static void test_redis_stopped_and_restarted(void **state)
{
    (void)state;
    if (!getenv("EMBROKER_SERVICES_DIR")) {
        print_message("EMBROKER_SERVICES_DIR unset: cannot stop/start Redis; skipped\n");
        skip();
    }
    eb_loop *loop = eb_loop_new();
    eb_cache *c = make_cache(loop, 100);
    uint8_t h[EB_HASH_LEN];
    fill_hash(h, "outage");
    float v[4] = {0.5f, 0.25f, -1.0f, 2.0f};

    assert_int_equal(services("stop-redis"), 0);
    /* The first call after the stop fails promptly one way or the other. */
    got g = {0};
    int64_t t0 = eb_now_us();
    eb_status st = eb_cache_get(c, "m", "r", "p", h, 4, on_get, &g);
    if (st == EB_OK) {
        assert_true(run_until_calls(loop, &g, 1, 1000));
        assert_true(g.status == EB_ERR_UNAVAILABLE || g.status == EB_ERR_TIMEOUT);
    } else {
        assert_int_equal(st, EB_ERR_UNAVAILABLE);
    }
    assert_true(eb_now_us() - t0 < 500000);
    assert_true(wait_up(loop, c, false, 2000));
    got refused = {0};
    assert_int_equal(eb_cache_get(c, "m", "r", "p", h, 4, on_get, &refused), EB_ERR_UNAVAILABLE);
    assert_int_equal(eb_cache_put(c, "m", "r", "p", h, v, 4, 0), EB_ERR_UNAVAILABLE);
    run_for(loop, 400); /* a few failed reconnects */
    eb_cache_stats stats;
    eb_cache_get_stats(c, &stats);
    assert_false(stats.up);
    char addr[80];
    snprintf(addr, sizeof addr, "Redis at %s:%d", redis_host, redis_port);
    assert_non_null(strstr(stats.last_error, addr));
    print_message("while down: %s\n", stats.last_error);

    assert_int_equal(services("start-redis"), 0);
    assert_true(wait_up(loop, c, true, 5000));
    assert_int_equal(eb_cache_put(c, "m", "r", "p", h, v, 4, 0), EB_OK);
    got back = {0};
    assert_int_equal(eb_cache_get(c, "m", "r", "p", h, 4, on_get, &back), EB_OK);
    assert_true(run_until_calls(loop, &back, 1, 2000));
    assert_int_equal(back.status, EB_OK); /* commands on one connection run in order */
    assert_memory_equal(back.values, v, sizeof v);
    eb_cache_get_stats(c, &stats);
    assert_true(stats.connects >= 2);
    assert_int_equal(refused.calls, 0);
    eb_cache_destroy(&c);
    eb_loop_destroy(&loop);
}

static void test_destroy_answers_pending(void **state)
{
    (void)state;
    eb_loop *loop = eb_loop_new();
    eb_cache *c = make_cache(loop, 1000);
    uint8_t h[EB_HASH_LEN];
    fill_hash(h, "pending");
    got g = {0};
    assert_int_equal(eb_cache_get(c, "m", "r", "p", h, 0, on_get, &g), EB_OK);
    eb_cache_destroy(&c); /* before the loop ran: the reply never came */
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.status, EB_ERR_SHUTDOWN);
    eb_loop_destroy(&loop);
}

int main(void)
{
    redis_url = getenv("EMBROKER_REDIS_URL");
    if (!redis_url || !*redis_url) {
        printf("EMBROKER_REDIS_URL not set (tests/run starts Redis and sets it); skipped\n");
        return 77;
    }
    if (sscanf(redis_url, "redis://%63[^:]:%d", redis_host, &redis_port) != 2) {
        printf("EMBROKER_REDIS_URL=%s is not redis://host:port\n", redis_url);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_and_value_codec),
        cmocka_unit_test(test_bad_url),
        cmocka_unit_test(test_round_trip_ttl_and_miss),
        cmocka_unit_test(test_corrupt_values_are_misses),
        cmocka_unit_test(test_destroy_answers_pending),
        cmocka_unit_test(test_slow_redis_times_out_then_recovers),
        cmocka_unit_test(test_redis_stopped_and_restarted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
