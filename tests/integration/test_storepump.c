/* Integration test for broker/eb_storepump, the store path spool → pool → ack, against a real
 * PostgreSQL: PostgreSQL is stopped in the middle of a stream of stores and restarted, and the
 * broker side (pool, pump, spool) is torn down with stores pending and reopened; every store
 * arrives exactly once. A record the database can never take is dropped with a count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "eb_clock.h"
#include "eb_loop.h"
#include "eb_migrate.h"
#include "eb_pgpool.h"
#include "eb_pgvector.h"
#include "eb_search.h"
#include "eb_spool.h"
#include "eb_storepump.h"
#include "eb_storerec.h"
#include "eb_test.h"

#define IMG 64
#define TXT 64

static const char *base_url;
static char db_url[512], db_name[64];

typedef struct rig {
    eb_loop *loop;
    eb_spool *spool;
    eb_pgpool *pool;
    eb_search *search;
    eb_storepump *pump;
} rig;

static void rig_open(rig *r, const char *spool_dir)
{
    char err[512];
    r->loop = eb_loop_new();
    eb_spool_options so;
    eb_spool_options_default(&so);
    r->spool = eb_spool_open(spool_dir, &so, err, sizeof err);
    if (!r->spool)
        fail_msg("spool: %s", err);
    eb_pgpool_options po;
    eb_pgpool_options_default(&po);
    po.conninfo = db_url;
    po.connections = 2;
    po.backoff_min_ms = 50;
    po.backoff_max_ms = 300;
    r->pool = eb_pgpool_new(r->loop, &po, err, sizeof err);
    assert_non_null(r->pool);
    eb_search_options eo;
    eb_search_options_default(&eo);
    eo.image_dims = IMG;
    eo.text_dims = TXT;
    r->search = eb_search_new(r->pool, &eo, err, sizeof err);
    assert_non_null(r->search);
    eb_storepump_options pu;
    eb_storepump_options_default(&pu);
    pu.max_inflight = 16;
    pu.retry_ms = 100;
    r->pump = eb_storepump_new(r->loop, r->spool, r->pool, r->search, &pu, err, sizeof err);
    assert_non_null(r->pump);
    assert_int_equal(eb_pgpool_start(r->pool), EB_OK);
}

static void rig_close(rig *r)
{
    eb_pgpool_destroy(&r->pool); /* first: its callbacks still point at the pump */
    eb_storepump_destroy(&r->pump);
    eb_search_destroy(&r->search);
    eb_spool_close(&r->spool);
    eb_loop_destroy(&r->loop);
}

static void run_for(eb_loop *loop, int64_t ms)
{
    int64_t end = eb_now_us() + ms * 1000;
    while (eb_now_us() < end)
        eb_loop_run_once(loop, 5000);
}

static uint64_t pending(rig *r)
{
    eb_spool_stats st;
    eb_spool_get_stats(r->spool, &st);
    return st.pending;
}

static bool drain(rig *r, int64_t ms)
{
    int64_t end = eb_now_us() + ms * 1000;
    while (pending(r) > 0 && eb_now_us() < end)
        eb_loop_run_once(r->loop, 5000);
    return pending(r) == 0;
}

static void store_one(rig *r, const char *prefix, int i)
{
    float img[IMG], comb[IMG + TXT];
    for (int k = 0; k < IMG; k++)
        img[k] = (float)((i * 31 + k * 7) % 17) - 8.0f + 0.5f;
    assert_int_equal(eb_combined_build(img, IMG, NULL, TXT, 1.0f, 1.0f, comb), EB_OK);
    char pid[64];
    snprintf(pid, sizeof pid, "%s-%d", prefix, i);
    eb_store_record rec = {.product_id = pid, .business_template = "t", .source_type = "scan",
                           .model = "m", .model_rev = "r", .preproc_rev = "p", .image = img,
                           .image_dims = IMG, .combined = comb, .combined_dims = IMG + TXT};
    assert_int_equal(eb_store_id_new(rec.store_id), EB_OK);
    assert_int_equal(eb_storepump_store(r->pump, &rec, NULL), EB_OK);
}

static long count(const char *sql)
{
    PGconn *pg = PQconnectdb(db_url);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    PGresult *res = PQexec(pg, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(res));
    long v = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    PQfinish(pg);
    return v;
}

static int services(const char *what)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/scripts/services %s >/dev/null 2>&1", eb_test_root(), what);
    return system(cmd);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(db_name, sizeof db_name, "eb_test_storepump_%d", (int)getpid());
    const char *slash = strrchr(base_url, '/');
    snprintf(db_url, sizeof db_url, "%.*s/%s", (int)(slash - base_url), base_url, db_name);
    PGconn *pg = PQconnectdb(base_url);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "cannot connect: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return -1;
    }
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db_name);
    PQclear(PQexec(pg, sql));
    PQfinish(pg);
    char dir[1024], err[512];
    eb_test_path(dir, sizeof dir, "sql");
    if (eb_migrate_run_dir(db_url, dir, IMG, TXT, NULL, err, sizeof err) != EB_OK) {
        fprintf(stderr, "migrate: %s\n", err);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    PGconn *pg = PQconnectdb(base_url);
    if (PQstatus(pg) == CONNECTION_OK) {
        char sql[128];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", db_name);
        PQclear(PQexec(pg, sql));
    }
    PQfinish(pg);
    return 0;
}

static void test_stores_survive_postgres_restart(void **state)
{
    (void)state;
    if (!getenv("EMBROKER_SERVICES_DIR")) {
        print_message("EMBROKER_SERVICES_DIR unset: cannot stop/start PostgreSQL; skipped\n");
        skip();
    }
    char *dir = eb_test_tmpdir("storepump");
    assert_non_null(dir);
    rig r;
    rig_open(&r, dir);
    /* A stream of 300 stores; PostgreSQL is stopped after the 100th and back after the 220th. */
    for (int i = 0; i < 300; i++) {
        store_one(&r, "live", i);
        run_for(r.loop, 3);
        if (i == 100)
            assert_int_equal(services("stop-pg"), 0);
        if (i == 220) {
            assert_true(pending(&r) >= 100); /* the spool holds them meanwhile */
            assert_int_equal(services("start-pg"), 0);
        }
    }
    assert_true(drain(&r, 30000));
    eb_storepump_stats st;
    eb_storepump_get_stats(r.pump, &st);
    print_message("sent %llu, stored %llu, duplicates %llu, failed %llu\n",
                  (unsigned long long)st.sent, (unsigned long long)st.stored,
                  (unsigned long long)st.duplicates, (unsigned long long)st.failed);
    eb_pgpool_stats ps;
    eb_pgpool_get_stats(r.pool, &ps);
    assert_true(ps.disconnects > 0); /* the outage was felt */
    assert_true(st.sent >= 300);
    assert_int_equal(st.rejected, 0);
    /* A store whose reply was lost with the connection is resent and found already there
     * (a duplicate): acked once either way. */
    assert_int_equal(st.stored + st.duplicates, 300);
    assert_int_equal(count("SELECT count(*) FROM \"ProductEmbeddings\" WHERE \"ProductId\" "
                           "LIKE 'live-%'"),
                     300);
    assert_int_equal(count("SELECT count(DISTINCT \"ProductId\") FROM \"ProductEmbeddings\" "
                           "WHERE \"ProductId\" LIKE 'live-%'"),
                     300);
    rig_close(&r);
    eb_test_rmtree(dir);
    free(dir);
}

static void test_pending_stores_replayed_after_broker_restart(void **state)
{
    (void)state;
    if (!getenv("EMBROKER_SERVICES_DIR")) {
        print_message("EMBROKER_SERVICES_DIR unset: cannot stop/start PostgreSQL; skipped\n");
        skip();
    }
    char *dir = eb_test_tmpdir("storepump");
    assert_non_null(dir);
    rig r;
    rig_open(&r, dir);
    /* 10 stores arrive, then PostgreSQL goes, 30 more are accepted into the spool only. */
    for (int i = 0; i < 10; i++)
        store_one(&r, "replay", i);
    assert_true(drain(&r, 10000));
    assert_int_equal(services("stop-pg"), 0);
    for (int i = 10; i < 40; i++)
        store_one(&r, "replay", i);
    run_for(r.loop, 500);
    assert_int_equal(pending(&r), 30);
    /* The broker stops with them pending... */
    rig_close(&r);
    assert_int_equal(services("start-pg"), 0);
    /* ...and a new one sends them from the spool on disk. */
    rig_open(&r, dir);
    assert_true(drain(&r, 20000));
    eb_storepump_stats st;
    eb_storepump_get_stats(r.pump, &st);
    assert_int_equal(st.stored + st.duplicates, 30);
    assert_int_equal(count("SELECT count(*) FROM \"ProductEmbeddings\" WHERE \"ProductId\" "
                           "LIKE 'replay-%'"),
                     40);

    /* A record the table cannot take is dropped (logged, counted), not retried forever. */
    float img[32] = {1};
    eb_store_record bad = {.product_id = "bad", .business_template = "t", .source_type = "scan",
                           .model = "m", .model_rev = "r", .preproc_rev = "p", .image = img,
                           .image_dims = 32};
    eb_store_id_new(bad.store_id);
    assert_int_equal(eb_storepump_store(r.pump, &bad, NULL), EB_OK);
    assert_true(drain(&r, 5000));
    eb_storepump_get_stats(r.pump, &st);
    assert_int_equal(st.rejected, 1);
    rig_close(&r);
    eb_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    base_url = getenv("EMBROKER_PG_URL");
    if (!base_url || !*base_url) {
        printf("EMBROKER_PG_URL not set (tests/run starts PostgreSQL and sets it); skipped\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stores_survive_postgres_restart),
        cmocka_unit_test(test_pending_stores_replayed_after_broker_restart),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
