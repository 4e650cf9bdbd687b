/* Integration tests for broker/eb_pgpool against a real PostgreSQL (EMBROKER_PG_URL):
 * concurrency over several connections, a loop that keeps running while queries run,
 * statement_timeout, transactions on one connection (SET LOCAL scope, ROLLBACK after a failed
 * one), pipelined bulk jobs, pgvector binary formats checked against the server's own casts, and
 * reconnection after PostgreSQL is stopped and restarted (scripts/services stop-pg/start-pg). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eb_clock.h"
#include "eb_loop.h"
#include "eb_pgpool.h"
#include "eb_pgvector.h"
#include "eb_test.h"

static const char *pg_url;

typedef struct outcome {
    bool done;
    int calls;
    eb_status status;
    char error[512];
    char value[256]; /* first column of the first row (text results) */
    int ntuples;
    int64_t done_us;
} outcome;

static void on_result(void *arg, eb_status status, const PGresult *res, const char *error)
{
    outcome *o = arg;
    o->calls++;
    o->done = true;
    o->status = status;
    o->done_us = eb_now_us();
    if (error)
        snprintf(o->error, sizeof o->error, "%s", error);
    if (res) {
        o->ntuples = PQntuples(res);
        if (o->ntuples > 0 && PQnfields(res) > 0)
            snprintf(o->value, sizeof o->value, "%s", PQgetvalue(res, 0, 0));
    }
}

/* Run the loop until *flag or timeout_ms; returns *flag. */
static bool run_until(eb_loop *loop, const bool *flag, int64_t timeout_ms)
{
    int64_t end = eb_now_us() + timeout_ms * 1000;
    while (!*flag && eb_now_us() < end)
        eb_loop_run_once(loop, 10000);
    return *flag;
}

static bool wait_up(eb_loop *loop, eb_pgpool *pool, bool want, int64_t timeout_ms)
{
    int64_t end = eb_now_us() + timeout_ms * 1000;
    while (eb_pgpool_is_up(pool) != want && eb_now_us() < end)
        eb_loop_run_once(loop, 10000);
    return eb_pgpool_is_up(pool) == want;
}

static eb_pgpool *make_pool(eb_loop *loop, uint32_t conns, uint32_t stmt_timeout_ms)
{
    eb_pgpool_options o;
    eb_pgpool_options_default(&o);
    o.conninfo = pg_url;
    o.connections = conns;
    o.statement_timeout_ms = stmt_timeout_ms;
    o.backoff_min_ms = 50;
    o.backoff_max_ms = 400;
    char err[256];
    eb_pgpool *pool = eb_pgpool_new(loop, &o, err, sizeof err);
    assert_non_null(pool);
    return pool;
}

static int services(const char *what)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/scripts/services %s >/dev/null 2>&1", eb_test_root(), what);
    return system(cmd);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_bad_conninfo(void **state)
{
    (void)state;
    eb_loop *loop = eb_loop_new();
    eb_pgpool_options o;
    eb_pgpool_options_default(&o);
    o.conninfo = "host=127.0.0.1 nonsense_keyword=1";
    char err[256] = "";
    assert_null(eb_pgpool_new(loop, &o, err, sizeof err));
    assert_non_null(strstr(err, "nonsense_keyword"));
    eb_loop_destroy(&loop);
}

static void test_concurrent_four_connections(void **state)
{
    (void)state;
    eb_loop *loop = eb_loop_new();
    eb_pgpool *pool = make_pool(loop, 4, 5000);
    assert_int_equal(eb_pgpool_start(pool), EB_OK);
    /* Queued before any connection is up: accepted, run once they are. */
    outcome o[8] = {0};
    for (int i = 0; i < 8; i++)
        assert_int_equal(eb_pgpool_query(pool, "SELECT pg_backend_pid() FROM pg_sleep(0.3)",
                                         on_result, &o[i]),
                         EB_OK);
    uint32_t max_busy = 0;
    int64_t end = eb_now_us() + 10 * 1000000;
    for (;;) {
        bool all = true;
        for (int i = 0; i < 8; i++)
            all = all && o[i].done;
        if (all || eb_now_us() > end)
            break;
        eb_loop_run_once(loop, 10000);
        eb_pgpool_stats st;
        eb_pgpool_get_stats(pool, &st);
        if (st.busy > max_busy)
            max_busy = st.busy;
    }
    char pids[8][32];
    int distinct = 0;
    for (int i = 0; i < 8; i++) {
        assert_true(o[i].done);
        assert_int_equal(o[i].calls, 1);
        assert_int_equal(o[i].status, EB_OK);
        bool seen = false;
        for (int j = 0; j < distinct; j++)
            seen = seen || strcmp(pids[j], o[i].value) == 0;
        if (!seen)
            snprintf(pids[distinct++], sizeof pids[0], "%s", o[i].value);
    }
    assert_int_equal(distinct, 4); /* every connection served */
    assert_int_equal(max_busy, 4); /* and they ran at the same time */
    eb_pgpool_stats st;
    eb_pgpool_get_stats(pool, &st);
    assert_int_equal(st.connected, 4);
    assert_int_equal(st.completed, 8);
    assert_int_equal(st.queued, 0);
    eb_pgpool_destroy(&pool);
    assert_null(pool);
    eb_loop_destroy(&loop);
}

typedef struct ticker {
    eb_loop_timer timer;
    int ticks;
} ticker;

static void on_tick(eb_loop *loop, eb_loop_timer *t, void *arg)
{
    ticker *tk = arg;
    tk->ticks++;
    eb_loop_timer_start(loop, t, eb_now_us() + 10000);
}

static void test_loop_never_blocks(void **state)
{
    (void)state;
    eb_loop *loop = eb_loop_new();
    eb_pgpool *pool = make_pool(loop, 1, 5000);
    eb_pgpool_start(pool);
    assert_true(wait_up(loop, pool, true, 10000));
    ticker tk = {0};
    eb_loop_timer_init(&tk.timer, on_tick, &tk);
    eb_loop_timer_start(loop, &tk.timer, eb_now_us() + 10000);
    outcome o = {0};
    int64_t t0 = eb_now_us();
    assert_int_equal(eb_pgpool_query(pool, "SELECT pg_sleep(0.6)", on_result, &o), EB_OK);
    assert_true(run_until(loop, &o.done, 5000));
    assert_int_equal(o.status, EB_OK);
    double secs = (double)(o.done_us - t0) / 1e6;
    /* A 10 ms timer kept firing during a 0.6 s query: the loop was never held. A blocking
     * call would give ~1 tick. */
    assert_true(secs >= 0.55);
    assert_true(tk.ticks >= (int)(secs * 100 * 0.5));
    eb_loop_timer_stop(loop, &tk.timer);
    eb_pgpool_destroy(&pool);
    eb_loop_destroy(&loop);
}

static void test_statement_timeout(void **state)
{
    (void)state;
    eb_loop *loop = eb_loop_new();
    eb_pgpool *pool = make_pool(loop, 1, 200);
    eb_pgpool_start(pool);
    outcome o = {0};
    int64_t t0 = eb_now_us();
    assert_int_equal(eb_pgpool_query(pool, "SELECT pg_sleep(5)", on_result, &o), EB_OK);
    assert_true(run_until(loop, &o.done, 4000));
    assert_int_equal(o.status, EB_ERR_TIMEOUT);
    assert_non_null(strstr(o.error, "57014"));
    assert_true(eb_now_us() - t0 < 3 * 1000000); /* the server stopped it, not pg_sleep(5) */
    /* The connection is still good afterwards. */
    outcome o2 = {0};
    assert_int_equal(eb_pgpool_query(pool, "SELECT current_setting('statement_timeout')",
                                     on_result, &o2),
                     EB_OK);
    assert_true(run_until(loop, &o2.done, 4000));
    assert_int_equal(o2.status, EB_OK);
    assert_string_equal(o2.value, "200ms");
    eb_pgpool_destroy(&pool);
    eb_loop_destroy(&loop);
}

static void test_caller_deadline(void **state)
{
    (void)state;
    eb_loop *loop = eb_loop_new();
    eb_pgpool *pool = make_pool(loop, 1, 5000);
    eb_pgpool_start(pool);
    assert_true(wait_up(loop, pool, true, 10000));
    outcome o = {0};
    eb_pgjob *job = eb_pgjob_new(on_result, &o);
    eb_pgjob_add_sql(job, "SELECT pg_sleep(0.8)");
    int64_t t0 = eb_now_us();
    assert_int_equal(eb_pgjob_set_deadline(job, t0 + 150000), EB_OK);
    assert_int_equal(eb_pgpool_submit(pool, job, 0), EB_OK);
    /* Queued behind it: a job that waits for the only connection. */
    outcome next = {0};
    assert_int_equal(eb_pgpool_query(pool, "SELECT 'next'", on_result, &next), EB_OK);
    assert_true(run_until(loop, &o.done, 3000));
    assert_int_equal(o.status, EB_ERR_TIMEOUT);
    assert_true(o.done_us - t0 >= 140000 && o.done_us - t0 < 600000);
    assert_non_null(strstr(o.error, "deadline passed"));
    /* The connection was not reset: the statement finished, then the next job ran on it. */
    assert_true(run_until(loop, &next.done, 5000));
    assert_int_equal(next.status, EB_OK);
    assert_string_equal(next.value, "next");
    assert_int_equal(o.calls, 1); /* the late result never reached the callback */
    eb_pgpool_stats st;
    eb_pgpool_get_stats(pool, &st);
    assert_int_equal(st.disconnects, 0);
    assert_int_equal(st.timeouts, 1);
    eb_pgpool_destroy(&pool);
    eb_loop_destroy(&loop);
}

static void test_transaction_on_one_connection(void **state)
{
    (void)state;
    eb_loop *loop = eb_loop_new();
    eb_pgpool *pool = make_pool(loop, 2, 5000);
    eb_pgpool_start(pool);
    /* SET LOCAL inside the job is seen by the job's SELECT and gone afterwards. */
    outcome o = {0};
    eb_pgjob *job = eb_pgjob_new(on_result, &o);
    assert_int_equal(eb_pgjob_add_sql(job, "BEGIN"), EB_OK);
    assert_int_equal(eb_pgjob_add_sql(job, "SET LOCAL work_mem = '7777kB'"), EB_OK);
    assert_int_equal(eb_pgjob_add_params(job, "SELECT current_setting('work_mem') || '/' || "
                                              "pg_backend_pid() || '/' || $1::text",
                                         1, (const char *const[]){"x"}, NULL, NULL, 0),
                     EB_OK);
    assert_int_equal(eb_pgjob_add_sql(job, "COMMIT"), EB_OK);
    assert_int_equal(eb_pgjob_steps(job), 4);
    assert_int_equal(eb_pgpool_submit(pool, job, 0), EB_OK);
    assert_true(run_until(loop, &o.done, 5000));
    assert_int_equal(o.status, EB_OK);
    assert_int_equal(strncmp(o.value, "7777kB/", 7), 0);
    assert_int_equal(o.value[strlen(o.value) - 1], 'x');

    outcome after = {0};
    eb_pgpool_query(pool, "SELECT current_setting('work_mem')", on_result, &after);
    assert_true(run_until(loop, &after.done, 5000));
    assert_string_not_equal(after.value, "7777kB");

    /* A failing transaction reports the error and leaves no aborted block behind: every later
     * job on every connection works. */
    outcome bad = {0};
    job = eb_pgjob_new(on_result, &bad);
    eb_pgjob_add_sql(job, "BEGIN");
    eb_pgjob_add_params(job, "SELECT 1 / $1::integer", 1, (const char *const[]){"0"}, NULL,
                        NULL, 0);
    eb_pgjob_add_sql(job, "COMMIT");
    assert_int_equal(eb_pgpool_submit(pool, job, 0), EB_OK);
    assert_true(run_until(loop, &bad.done, 5000));
    assert_int_equal(bad.status, EB_ERR_INVALID);
    assert_non_null(strstr(bad.error, "22012")); /* division_by_zero */
    outcome later[4] = {0};
    for (int i = 0; i < 4; i++)
        eb_pgpool_query(pool, "SELECT 41 + 1", on_result, &later[i]);
    for (int i = 0; i < 4; i++) {
        assert_true(run_until(loop, &later[i].done, 5000));
        assert_int_equal(later[i].status, EB_OK);
        assert_string_equal(later[i].value, "42");
    }
    eb_pgpool_destroy(&pool);
    eb_loop_destroy(&loop);
}

static void test_bulk_pipelined(void **state)
{
    (void)state;
    eb_loop *loop = eb_loop_new();
    eb_pgpool *pool = make_pool(loop, 2, 5000);
    eb_pgpool_start(pool);
    assert_true(wait_up(loop, pool, true, 10000));
    enum { N = 60 };
    outcome o[N] = {0};
    for (int i = 0; i < N; i++) {
        eb_pgjob *job = eb_pgjob_new(on_result, &o[i]);
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        const char *vals[1] = {v};
        /* Every 7th fails: its neighbours in the same pipeline must not. */
        eb_pgjob_add_params(job, i % 7 == 3 ? "SELECT $1::integer / 0" : "SELECT $1::integer * 2",
                            1, vals, NULL, NULL, 0);
        assert_int_equal(eb_pgpool_submit(pool, job, EB_PGJOB_BULK), EB_OK);
    }
    int64_t end = eb_now_us() + 10 * 1000000;
    uint32_t max_inflight = 0;
    for (int done = 0; done < N && eb_now_us() < end;) {
        eb_loop_run_once(loop, 10000);
        eb_pgpool_stats st;
        eb_pgpool_get_stats(pool, &st);
        if (st.inflight > max_inflight)
            max_inflight = st.inflight;
        done = 0;
        for (int i = 0; i < N; i++)
            done += o[i].done;
    }
    for (int i = 0; i < N; i++) {
        assert_true(o[i].done);
        if (i % 7 == 3) {
            assert_int_equal(o[i].status, EB_ERR_INVALID);
        } else {
            assert_int_equal(o[i].status, EB_OK);
            assert_int_equal(atoi(o[i].value), 2 * i);
        }
    }
    /* Bulk jobs were pipelined (several in flight on a connection) and kept to n-1 = 1
     * connection, so at most pipeline_depth (8) were ever in flight. */
    assert_true(max_inflight > 1);
    assert_true(max_inflight <= 8);
    eb_pgpool_destroy(&pool);
    eb_loop_destroy(&loop);
}

/* Collects the three binary columns of the echo statement. */
typedef struct echo_s {
    bool done;
    eb_status st;
    uint8_t col[3][64];
    int len[3];
} echo_s;

static void echo_cb(void *arg, eb_status st, const PGresult *res, const char *error)
{
    (void)error;
    echo_s *e = arg;
    e->done = true;
    e->st = st;
    if (res && PQntuples(res) == 1)
        for (int c = 0; c < 3; c++) {
            e->len[c] = PQgetlength(res, 0, c);
            if (e->len[c] <= 64)
                memcpy(e->col[c], PQgetvalue(res, 0, c), (size_t)e->len[c]);
        }
}

static void test_vector_binary_matches_server(void **state)
{
    (void)state;
    eb_loop *loop = eb_loop_new();
    eb_pgpool_options o;
    eb_pgpool_options_default(&o);
    o.conninfo = pg_url;
    o.connections = 1;
    eb_pgpool *pool = eb_pgpool_new(loop, &o, NULL, 0);
    assert_int_equal(eb_pgpool_add_statement(pool, "echo", "SELECT $1::vector(9), "
                                                           "($1::vector(9))::halfvec(9), "
                                                           "$2::halfvec(9)::vector(9)"),
                     EB_OK);
    assert_int_equal(eb_pgpool_add_statement(pool, "echo", "SELECT 1"), EB_ERR_INVALID);
    eb_pgpool_start(pool);
    /* Values that exercise rounding: ties, subnormal halves, the largest half, tiny ones. */
    const float v[9] = {1.0f, -0.33333334f, 65504.0f, 1.0009766f, 1.00048828125f, 6.0e-8f,
                        -3.0e-5f, 1e-9f, 0.1f};
    uint8_t vb[4 + 9 * 4], hb[4 + 9 * 2];
    assert_int_equal(eb_pgvector_encode(v, 9, vb, sizeof vb), EB_OK);
    assert_int_equal(eb_pghalfvec_encode(v, 9, hb, sizeof hb), EB_OK);
    echo_s e = {0};
    eb_pgjob *job = eb_pgjob_new(echo_cb, &e);
    const char *vals[2] = {(const char *)vb, (const char *)hb};
    const int lens[2] = {sizeof vb, sizeof hb};
    const int fmts[2] = {1, 1};
    assert_int_equal(eb_pgjob_add_prepared(job, "echo", 2, vals, lens, fmts, 1), EB_OK);
    assert_int_equal(eb_pgpool_submit(pool, job, 0), EB_OK);
    assert_true(run_until(loop, &e.done, 10000));
    assert_int_equal(e.st, EB_OK);
    /* vector round trip: bit-identical. */
    assert_int_equal(e.len[0], (int)sizeof vb);
    assert_memory_equal(e.col[0], vb, sizeof vb);
    /* The server's float4 → halfvec cast gives exactly our encoder's bytes. */
    assert_int_equal(e.len[1], (int)sizeof hb);
    assert_memory_equal(e.col[1], hb, sizeof hb);
    /* halfvec → vector on the server equals our decoder. */
    float back[9], server[9];
    uint32_t dims = 0;
    assert_int_equal(eb_pghalfvec_decode(hb, sizeof hb, back, 9, &dims), EB_OK);
    assert_int_equal(eb_pgvector_decode(e.col[2], (size_t)e.len[2], server, 9, &dims), EB_OK);
    assert_int_equal(dims, 9);
    assert_memory_equal(back, server, sizeof back);
    eb_pgpool_destroy(&pool);
    eb_loop_destroy(&loop);
}

static void test_reconnect_after_restart(void **state)
{
    (void)state;
    if (!getenv("EMBROKER_SERVICES_DIR")) {
        print_message("EMBROKER_SERVICES_DIR unset: cannot stop/start PostgreSQL; skipped\n");
        skip();
    }
    eb_loop *loop = eb_loop_new();
    eb_pgpool *pool = make_pool(loop, 2, 5000);
    eb_pgpool_start(pool);
    assert_true(wait_up(loop, pool, true, 10000));
    outcome inflight = {0};
    assert_int_equal(eb_pgpool_query(pool, "SELECT pg_sleep(3)", on_result, &inflight), EB_OK);
    for (int i = 0; i < 20; i++) /* let it reach the server */
        eb_loop_run_once(loop, 10000);

    assert_int_equal(services("stop-pg"), 0);
    /* The query under way fails cleanly, the pool goes down, new work is refused at once. */
    assert_true(run_until(loop, &inflight.done, 10000));
    assert_int_equal(inflight.status, EB_ERR_UNAVAILABLE);
    assert_true(wait_up(loop, pool, false, 10000));
    outcome refused = {0};
    int64_t t0 = eb_now_us();
    eb_status st = eb_pgpool_query(pool, "SELECT 1", on_result, &refused);
    /* Refused right away, or (if a reconnect attempt was still pending) failed promptly. */
    if (st == EB_OK) {
        assert_true(run_until(loop, &refused.done, 3000));
        assert_int_equal(refused.status, EB_ERR_UNAVAILABLE);
    } else {
        assert_int_equal(st, EB_ERR_UNAVAILABLE);
    }
    assert_true(eb_now_us() - t0 < 3000000);
    eb_pgpool_stats stats;
    eb_pgpool_get_stats(pool, &stats);
    assert_false(stats.up);
    assert_int_equal(stats.connected, 0);
    assert_non_null(strstr(stats.last_error, "PostgreSQL at 127.0.0.1:"));
    print_message("while down: %s\n", stats.last_error);
    /* A few reconnect attempts fail with backoff while it is down. */
    int64_t end = eb_now_us() + 1000000;
    while (eb_now_us() < end)
        eb_loop_run_once(loop, 10000);
    eb_pgpool_get_stats(pool, &stats);
    assert_true(stats.connect_failures >= 2);

    assert_int_equal(services("start-pg"), 0);
    assert_true(wait_up(loop, pool, true, 15000));
    outcome ok = {0};
    assert_int_equal(eb_pgpool_query(pool, "SELECT 'back'", on_result, &ok), EB_OK);
    assert_true(run_until(loop, &ok.done, 5000));
    assert_int_equal(ok.status, EB_OK);
    assert_string_equal(ok.value, "back");
    eb_pgpool_destroy(&pool);
    eb_loop_destroy(&loop);
}

static void test_queue_bound_and_shutdown(void **state)
{
    (void)state;
    eb_loop *loop = eb_loop_new();
    eb_pgpool_options o;
    eb_pgpool_options_default(&o);
    o.conninfo = pg_url;
    o.connections = 1;
    o.max_queue = 3;
    eb_pgpool *pool = eb_pgpool_new(loop, &o, NULL, 0);
    /* Not started: refused. */
    outcome never = {0};
    assert_int_equal(eb_pgpool_query(pool, "SELECT 1", on_result, &never), EB_ERR_UNAVAILABLE);
    eb_pgpool_start(pool);
    outcome q[4] = {0};
    for (int i = 0; i < 3; i++)
        assert_int_equal(eb_pgpool_query(pool, "SELECT 1", on_result, &q[i]), EB_OK);
    assert_int_equal(eb_pgpool_query(pool, "SELECT 1", on_result, &q[3]), EB_ERR_BUSY);
    /* Destroyed with work queued: every accepted job is answered once with SHUTDOWN. */
    eb_pgpool_destroy(&pool);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(q[i].calls, 1);
        assert_int_equal(q[i].status, EB_ERR_SHUTDOWN);
    }
    assert_int_equal(q[3].calls, 0);
    assert_int_equal(never.calls, 0);
    eb_loop_destroy(&loop);
}

int main(void)
{
    pg_url = getenv("EMBROKER_PG_URL");
    if (!pg_url || !*pg_url) {
        printf("EMBROKER_PG_URL not set (tests/run starts PostgreSQL and sets it); skipped\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_conninfo),
        cmocka_unit_test(test_concurrent_four_connections),
        cmocka_unit_test(test_loop_never_blocks),
        cmocka_unit_test(test_statement_timeout),
        cmocka_unit_test(test_caller_deadline),
        cmocka_unit_test(test_transaction_on_one_connection),
        cmocka_unit_test(test_bulk_pipelined),
        cmocka_unit_test(test_vector_binary_matches_server),
        cmocka_unit_test(test_queue_bound_and_shutdown),
        cmocka_unit_test(test_reconnect_after_restart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
