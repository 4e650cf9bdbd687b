/* Integration tests for broker/eb_migrate and broker/eb_search against a real PostgreSQL with
 * pgvector (EMBROKER_PG_URL). Each run works in its own fresh database (created and dropped
 * here), so the migrations start from nothing:
 *   - migrations apply once, are idempotent, record themselves, pick the halfvec variant above
 *     2,000 combined dims, and refuse a dimension mismatch;
 *   - stores are exactly-once by StoreId, catalogue rows upsert, deletes remove a product;
 *   - an image-only query scores exactly w_img × cos(image) whatever the rows' text halves;
 *   - the filtered search on 20,000 rows with a 5% filter uses the HNSW index, returns fewer
 *     than k rows with iterative scan off and k rows, in score order, with it on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
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
#include "eb_storerec.h"
#include "eb_test.h"

#define IMG 64
#define TXT 64
#define W_IMG 0.7f
#define W_TXT 0.3f

static const char *base_url;
static char db_url[512];     /* the test's own database */
static char db_url_big[512]; /* another one for the halfvec variant */
static char db_name[64], db_name_big[64];
static char sql_dir[1024];

/* ---- helpers ---------------------------------------------------------------------------- */

/* base_url with its database name replaced by `name`. */
static void url_with_db(char *out, size_t cap, const char *name)
{
    const char *slash = strrchr(base_url, '/');
    assert_non_null(slash);
    snprintf(out, cap, "%.*s/%s", (int)(slash - base_url), base_url, name);
}

static PGconn *connect_to(const char *url)
{
    PGconn *pg = PQconnectdb(url);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    return pg;
}

static void exec_ok(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
}

static long query_long(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    long v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

typedef struct search_out {
    bool done;
    eb_status status;
    size_t n;
    char ids[64][32];
    double scores[64];
    char templates[64][32];
    char error[512];
} search_out;

static void on_search(void *arg, eb_status status, const eb_search_hit *hits, size_t n,
                      const char *error)
{
    search_out *o = arg;
    o->done = true;
    o->status = status;
    o->n = n;
    if (error)
        snprintf(o->error, sizeof o->error, "%s", error);
    for (size_t i = 0; i < n && i < 64; i++) {
        snprintf(o->ids[i], sizeof o->ids[i], "%s", hits[i].product_id);
        snprintf(o->templates[i], sizeof o->templates[i], "%s", hits[i].business_template);
        o->scores[i] = hits[i].score;
    }
}

typedef struct write_out {
    bool done;
    eb_status status;
    uint64_t rows;
    char error[512];
} write_out;

static void on_write(void *arg, eb_status status, uint64_t rows, const char *error)
{
    write_out *o = arg;
    o->done = true;
    o->status = status;
    o->rows = rows;
    if (error)
        snprintf(o->error, sizeof o->error, "%s", error);
}

static bool run_until(eb_loop *loop, const bool *flag, int64_t ms)
{
    int64_t end = eb_now_us() + ms * 1000;
    while (!*flag && eb_now_us() < end)
        eb_loop_run_once(loop, 10000);
    return *flag;
}

typedef struct env {
    eb_loop *loop;
    eb_pgpool *pool;
    eb_search *search;
} env;

static void env_open(env *e, const char *url, uint32_t img, uint32_t txt, const char *setup_sql)
{
    e->loop = eb_loop_new();
    eb_pgpool_options o;
    eb_pgpool_options_default(&o);
    o.conninfo = url;
    o.connections = 2;
    o.setup_sql = setup_sql;
    char err[512];
    e->pool = eb_pgpool_new(e->loop, &o, err, sizeof err);
    assert_non_null(e->pool);
    eb_search_options so;
    eb_search_options_default(&so);
    so.image_dims = img;
    so.text_dims = txt;
    e->search = eb_search_new(e->pool, &so, err, sizeof err);
    assert_non_null(e->search);
    assert_int_equal(eb_pgpool_start(e->pool), EB_OK);
    int64_t end = eb_now_us() + 10000000;
    while (!eb_pgpool_is_up(e->pool) && eb_now_us() < end)
        eb_loop_run_once(e->loop, 10000);
    assert_true(eb_pgpool_is_up(e->pool));
}

typedef struct dims_out {
    bool done;
    eb_status status;
    eb_table_dims dims;
} dims_out;

static void on_dims(void *arg, eb_status status, const eb_table_dims *dims, const char *error)
{
    (void)error;
    dims_out *o = arg;
    o->done = true;
    o->status = status;
    if (dims)
        o->dims = *dims;
}

static eb_table_dims read_dims_async(env *e)
{
    dims_out o = {0};
    assert_int_equal(eb_search_read_dims(e->search, on_dims, &o), EB_OK);
    assert_true(run_until(e->loop, &o.done, 10000));
    assert_int_equal(o.status, EB_OK);
    return o.dims;
}

static void env_close(env *e)
{
    eb_search_destroy(&e->search);
    eb_pgpool_destroy(&e->pool);
    eb_loop_destroy(&e->loop);
}

/* Deterministic pseudo-random unit-ish vector. */
static void make_vec(float *v, uint32_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 12345u;
    for (uint32_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v[i] = (float)((double)(x % 20001) / 10000.0 - 1.0);
    }
}

static write_out store(env *e, const eb_store_record *rec)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(eb_storerec_encode(rec, &buf, &len), EB_OK);
    write_out w = {0};
    char err[512] = "";
    eb_status st = eb_search_store(e->search, buf, len, on_write, &w, err, sizeof err);
    free(buf);
    if (st != EB_OK)
        fail_msg("store refused: %s", err);
    assert_true(run_until(e->loop, &w.done, 10000));
    return w;
}

static double cosine(const float *a, const float *b, uint32_t n)
{
    double ab = 0, aa = 0, bb = 0;
    for (uint32_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return ab / sqrt(aa * bb);
}

/* ---- setup ------------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    snprintf(db_name, sizeof db_name, "eb_test_search_%d", (int)getpid());
    snprintf(db_name_big, sizeof db_name_big, "eb_test_search_big_%d", (int)getpid());
    url_with_db(db_url, sizeof db_url, db_name);
    url_with_db(db_url_big, sizeof db_url_big, db_name_big);
    eb_test_path(sql_dir, sizeof sql_dir, "sql");
    PGconn *pg = PQconnectdb(base_url);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "cannot connect to %s: %s", base_url, PQerrorMessage(pg));
        PQfinish(pg);
        return -1;
    }
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db_name);
    PQclear(PQexec(pg, sql));
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db_name_big);
    PQclear(PQexec(pg, sql));
    PQfinish(pg);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    PGconn *pg = PQconnectdb(base_url);
    if (PQstatus(pg) == CONNECTION_OK) {
        char sql[256];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", db_name);
        PQclear(PQexec(pg, sql));
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", db_name_big);
        PQclear(PQexec(pg, sql));
    }
    PQfinish(pg);
    return 0;
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_fill_placeholders(void **state)
{
    (void)state;
    char err[256];
    char *s = eb_migrate_fill("a {{IMAGE_DIM}} b {{TEXT_DIM}} c {{COMBINED_DIM}}", 768, 1024,
                              err, sizeof err);
    assert_non_null(s);
    assert_string_equal(s, "a 768 b 1024 c 1792");
    free(s);
    assert_null(eb_migrate_fill("x {{NOPE}}", 1, 1, err, sizeof err));
    assert_non_null(strstr(err, "{{NOPE}}"));
}

static void test_migrations(void **state)
{
    (void)state;
    char err[1024] = "";
    unsigned applied = 99;
    eb_status st = eb_migrate_run_dir(db_url, sql_dir, IMG, TXT, &applied, err, sizeof err);
    if (st != EB_OK)
        fail_msg("migrate: %s", err);
    assert_int_equal(applied, 2);
    /* Idempotent: nothing new the second time. */
    assert_int_equal(eb_migrate_run_dir(db_url, sql_dir, IMG, TXT, &applied, err, sizeof err),
                     EB_OK);
    assert_int_equal(applied, 0);
    PGconn *pg = connect_to(db_url);
    assert_int_equal(query_long(pg, "SELECT count(*) FROM schema_migrations"), 2);
    assert_int_equal(query_long(pg, "SELECT count(*) FROM schema_migrations WHERE name = "
                                    "'002_hnsw.sql'"),
                     1);
    assert_int_equal(query_long(pg, "SELECT count(*) FROM pg_indexes WHERE indexname = "
                                    "'ProductEmbeddings_combined_hnsw'"),
                     1);
    PQfinish(pg);

    eb_table_dims d;
    assert_int_equal(eb_migrate_read_dims(db_url, &d, err, sizeof err), EB_OK);
    assert_true(d.exists);
    assert_int_equal(d.image, IMG);
    assert_int_equal(d.text, TXT);
    assert_int_equal(d.combined, IMG + TXT);
    assert_false(d.halfvec_index);
    /* A worker whose dims disagree is rejected with a message naming both sides. */
    assert_int_equal(eb_migrate_check_dims(&d, IMG, TXT, "worker w1", err, sizeof err), EB_OK);
    assert_int_equal(eb_migrate_check_dims(&d, 768, TXT, "worker w1 (siglip)", err, sizeof err),
                     EB_ERR_INVALID);
    assert_non_null(strstr(err, "worker w1 (siglip) gives image 768"));
    assert_non_null(strstr(err, "has image 64 + text 64"));
    /* Migrating the same database for other dims is refused, not silently ignored. */
    assert_int_equal(eb_migrate_run_dir(db_url, sql_dir, 768, TXT, &applied, err, sizeof err),
                     EB_ERR_INVALID);
    assert_non_null(strstr(err, "dimension mismatch"));
    /* Bad dims and a missing directory. */
    assert_int_equal(eb_migrate_run_dir(db_url, sql_dir, 3000, 1200, &applied, err, sizeof err),
                     EB_ERR_INVALID);
    assert_int_equal(eb_migrate_run_dir(db_url, "/nonexistent", IMG, TXT, &applied, err,
                                        sizeof err),
                     EB_ERR_NOT_FOUND);
    /* Unreachable server: a clear error, not a hang. */
    assert_int_equal(eb_migrate_read_dims("postgresql://embroker@127.0.0.1:1/x", &d, err,
                                          sizeof err),
                     EB_ERR_UNAVAILABLE);
    assert_non_null(strstr(err, "cannot connect"));
}

static void test_halfvec_variant(void **state)
{
    (void)state;
    /* so400m + Qwen3 = 1152 + 1024 = 2176 > 2000: the HNSW index goes on a halfvec cast. */
    char err[1024] = "";
    unsigned applied = 0;
    if (eb_migrate_run_dir(db_url_big, sql_dir, 1152, 1024, &applied, err, sizeof err) != EB_OK)
        fail_msg("migrate: %s", err);
    assert_int_equal(applied, 2);
    eb_table_dims d;
    assert_int_equal(eb_migrate_read_dims(db_url_big, &d, err, sizeof err), EB_OK);
    assert_int_equal(d.combined, 2176);
    assert_true(d.halfvec_index);
    PGconn *pg = connect_to(db_url_big);
    assert_int_equal(query_long(pg, "SELECT count(*) FROM schema_migrations WHERE name = "
                                    "'002_hnsw_halfvec.sql'"),
                     1);
    PQfinish(pg);

    /* Store and find a row through the halfvec-ordered search. */
    env e;
    env_open(&e, db_url_big, 1152, 1024, NULL);
    assert_true(eb_search_uses_halfvec(e.search));
    eb_table_dims ad = read_dims_async(&e);
    assert_true(ad.exists);
    assert_int_equal(ad.combined, 2176);
    assert_true(ad.halfvec_index);
    static float img[1152], comb[2176], q[2176];
    make_vec(img, 1152, 7);
    assert_int_equal(eb_combined_build(img, 1152, NULL, 1024, W_IMG, W_TXT, comb), EB_OK);
    eb_store_record rec = {.product_id = "big-1", .business_template = "t", .source_type = "scan",
                           .model = "siglip", .model_rev = "r", .preproc_rev = "p",
                           .image = img, .image_dims = 1152, .combined = comb,
                           .combined_dims = 2176};
    eb_store_id_new(rec.store_id);
    write_out w = store(&e, &rec);
    assert_int_equal(w.status, EB_OK);
    assert_int_equal(w.rows, 1);
    assert_int_equal(eb_combined_query(img, 1152, NULL, 1024, q), EB_OK);
    search_out so = {0};
    eb_search_query sq = {.business_template = "t", .source_type = "scan", .model_rev = "r",
                          .vector = q, .dims = 2176, .k = 5};
    assert_int_equal(eb_search_run(e.search, &sq, on_search, &so, err, sizeof err), EB_OK);
    assert_true(run_until(e.loop, &so.done, 10000));
    assert_int_equal(so.status, EB_OK);
    assert_int_equal(so.n, 1);
    assert_string_equal(so.ids[0], "big-1");
    assert_true(fabs(so.scores[0] - W_IMG) < 1e-5);
    env_close(&e);
}

static void test_store_exactly_once_upsert_delete(void **state)
{
    (void)state;
    env e;
    env_open(&e, db_url, IMG, TXT, NULL);
    /* The pool's non-blocking read of the dims agrees with the migrator's. */
    eb_table_dims ad = read_dims_async(&e);
    assert_true(ad.exists);
    assert_int_equal(ad.image, IMG);
    assert_int_equal(ad.text, TXT);
    assert_int_equal(ad.combined, IMG + TXT);
    assert_false(ad.halfvec_index);
    float img[IMG], txt[TXT], comb[IMG + TXT];
    make_vec(img, IMG, 1);
    make_vec(txt, TXT, 2);
    assert_int_equal(eb_combined_build(img, IMG, txt, TXT, W_IMG, W_TXT, comb), EB_OK);
    uint8_t hash[EB_HASH_LEN];
    eb_sha256("scan bytes", 10, hash);
    eb_store_record rec = {.product_id = "prod-A", .business_template = "shoes",
                           .source_type = "scan", .model = "siglip+qwen3", .model_rev = "rev1",
                           .preproc_rev = "pp1", .content_hash = hash, .image = img,
                           .image_dims = IMG, .text = txt, .text_dims = TXT, .combined = comb,
                           .combined_dims = IMG + TXT};
    assert_int_equal(eb_store_id_new(rec.store_id), EB_OK);
    /* The same record twice (a replay after a crash): one row. */
    write_out w1 = store(&e, &rec);
    write_out w2 = store(&e, &rec);
    assert_int_equal(w1.status, EB_OK);
    assert_int_equal(w1.rows, 1);
    assert_int_equal(w2.status, EB_OK);
    assert_int_equal(w2.rows, 0);
    PGconn *pg = connect_to(db_url);
    char sid[37];
    eb_store_id_str(rec.store_id, sid);
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM \"ProductEmbeddings\" WHERE \"StoreId\" = '%s'",
             sid);
    assert_int_equal(query_long(pg, sql), 1);
    /* What was stored is bit-identical (binary read back) and carries the content hash. */
    snprintf(sql, sizeof sql, "SELECT \"ImageEmbedding\", \"CombinedEmbedding\", \"ContentHash\" "
                              "FROM \"ProductEmbeddings\" WHERE \"StoreId\" = '%s'",
             sid);
    PGresult *r = PQexecParams(pg, sql, 0, NULL, NULL, NULL, NULL, 1);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    float back[IMG + TXT];
    uint32_t dims = 0;
    assert_int_equal(eb_pgvector_decode((const uint8_t *)PQgetvalue(r, 0, 0),
                                        (size_t)PQgetlength(r, 0, 0), back, IMG + TXT, &dims),
                     EB_OK);
    assert_int_equal(dims, IMG);
    assert_memory_equal(back, img, sizeof img);
    assert_int_equal(eb_pgvector_decode((const uint8_t *)PQgetvalue(r, 0, 1),
                                        (size_t)PQgetlength(r, 0, 1), back, IMG + TXT, &dims),
                     EB_OK);
    assert_memory_equal(back, comb, sizeof comb);
    assert_int_equal(PQgetlength(r, 0, 2), EB_HASH_LEN);
    assert_memory_equal(PQgetvalue(r, 0, 2), hash, EB_HASH_LEN);
    PQclear(r);

    /* Catalogue upsert: a second store (new StoreId, new vectors) updates the one row. */
    eb_store_record cat = rec;
    cat.source_type = "catalog";
    cat.upsert = true;
    cat.content_hash = NULL;
    eb_store_id_new(cat.store_id);
    assert_int_equal(store(&e, &cat).rows, 1);
    float img2[IMG], comb2[IMG + TXT];
    make_vec(img2, IMG, 3);
    eb_combined_build(img2, IMG, NULL, TXT, W_IMG, W_TXT, comb2);
    cat.image = img2;
    cat.text = NULL;
    cat.text_dims = 0;
    cat.combined = comb2;
    eb_store_id_new(cat.store_id);
    write_out wu = store(&e, &cat);
    assert_int_equal(wu.status, EB_OK);
    assert_int_equal(query_long(pg, "SELECT count(*) FROM \"ProductEmbeddings\" WHERE "
                                    "\"ProductId\" = 'prod-A' AND \"SourceType\" = 'catalog'"),
                     1);
    assert_int_equal(query_long(pg, "SELECT count(*) FROM \"ProductEmbeddings\" WHERE "
                                    "\"ProductId\" = 'prod-A' AND \"SourceType\" = 'catalog' "
                                    "AND \"TextEmbedding\" IS NULL"),
                     1);
    eb_store_id_str(cat.store_id, sid);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM \"ProductEmbeddings\" WHERE \"StoreId\" = '%s'",
             sid);
    assert_int_equal(query_long(pg, sql), 1);

    /* A record with dims that disagree with the table is refused before it is sent. */
    eb_store_record bad = rec;
    bad.image_dims = 32;
    bad.combined = NULL;
    bad.combined_dims = 0;
    uint8_t *buf;
    size_t len;
    assert_int_equal(eb_storerec_encode(&bad, &buf, &len), EB_OK);
    char err[512];
    write_out wb = {0};
    assert_int_equal(eb_search_store(e.search, buf, len, on_write, &wb, err, sizeof err),
                     EB_ERR_INVALID);
    assert_non_null(strstr(err, "image vector has 32 dims; the table's has 64"));
    free(buf);

    /* Delete removes every row of the product (scan + catalogue). */
    write_out wd = {0};
    assert_int_equal(eb_search_delete(e.search, "prod-A", on_write, &wd), EB_OK);
    assert_true(run_until(e.loop, &wd.done, 10000));
    assert_int_equal(wd.status, EB_OK);
    assert_int_equal(wd.rows, 2);
    assert_int_equal(query_long(pg, "SELECT count(*) FROM \"ProductEmbeddings\" WHERE "
                                    "\"ProductId\" = 'prod-A'"),
                     0);
    PQfinish(pg);
    env_close(&e);
}

static void test_image_only_scores_w_img_cosine(void **state)
{
    (void)state;
    env e;
    env_open(&e, db_url, IMG, TXT, NULL);
    enum { ROWS = 6 };
    float img[ROWS][IMG], txt[ROWS][TXT], comb[IMG + TXT];
    for (int i = 0; i < ROWS; i++) {
        make_vec(img[i], IMG, 100 + (uint32_t)i);
        make_vec(txt[i], TXT, 200 + (uint32_t)i);
        /* Rows differ in their text halves: some have text, some do not. */
        bool has_text = i % 2 == 0;
        assert_int_equal(eb_combined_build(img[i], IMG, has_text ? txt[i] : NULL, TXT, W_IMG,
                                           W_TXT, comb),
                         EB_OK);
        char pid[32];
        snprintf(pid, sizeof pid, "geo-%d", i);
        eb_store_record rec = {.product_id = pid, .business_template = "geometry",
                               .source_type = "catalog", .upsert = true, .model = "m",
                               .model_rev = "rev-geo", .preproc_rev = "p", .image = img[i],
                               .image_dims = IMG, .combined = comb, .combined_dims = IMG + TXT};
        eb_store_id_new(rec.store_id);
        assert_int_equal(store(&e, &rec).status, EB_OK);
    }
    float qimg[IMG], q[IMG + TXT];
    make_vec(qimg, IMG, 999);
    assert_int_equal(eb_combined_query(qimg, IMG, NULL, TXT, q), EB_OK);
    for (int i = IMG; i < IMG + TXT; i++)
        assert_true(q[i] == 0.0f);
    search_out so = {0};
    char err[256];
    eb_search_query sq = {.business_template = "geometry", .source_type = "catalog",
                          .model_rev = "rev-geo", .vector = q, .dims = IMG + TXT, .k = ROWS};
    assert_int_equal(eb_search_run(e.search, &sq, on_search, &so, err, sizeof err), EB_OK);
    assert_true(run_until(e.loop, &so.done, 10000));
    assert_int_equal(so.status, EB_OK);
    assert_int_equal(so.n, ROWS);
    for (size_t k = 0; k < so.n; k++) {
        int i = atoi(so.ids[k] + 4);
        double want = W_IMG * cosine(qimg, img[i], IMG);
        /* float32 arithmetic in pgvector: agreement to ~1e-6 */
        if (fabs(so.scores[k] - want) > 2e-6)
            fail_msg("row %s: score %.9f, w_img*cos = %.9f", so.ids[k], so.scores[k], want);
        if (k > 0)
            assert_true(so.scores[k] <= so.scores[k - 1]);
    }
    /* Text-only query through the same path: w_txt × cos(text) for rows with a text half, 0
     * for rows without one. */
    float qtxt[TXT];
    make_vec(qtxt, TXT, 998);
    assert_int_equal(eb_combined_query(NULL, IMG, qtxt, TXT, q), EB_OK);
    search_out ts = {0};
    assert_int_equal(eb_search_run(e.search, &sq, on_search, &ts, err, sizeof err), EB_OK);
    assert_true(run_until(e.loop, &ts.done, 10000));
    assert_int_equal(ts.status, EB_OK);
    assert_int_equal(ts.n, ROWS);
    for (size_t k = 0; k < ts.n; k++) {
        int i = atoi(ts.ids[k] + 4);
        double want = i % 2 == 0 ? W_TXT * cosine(qtxt, txt[i], TXT) : 0.0;
        if (fabs(ts.scores[k] - want) > 2e-6)
            fail_msg("row %s: text score %.9f, want %.9f", ts.ids[k], ts.scores[k], want);
    }

    /* A wrong model revision finds nothing; bad inputs are refused with a reason. */
    search_out none = {0};
    sq.model_rev = "rev-other";
    assert_int_equal(eb_search_run(e.search, &sq, on_search, &none, err, sizeof err), EB_OK);
    assert_true(run_until(e.loop, &none.done, 10000));
    assert_int_equal(none.n, 0);
    sq.model_rev = "rev-geo";
    sq.k = 0;
    assert_int_equal(eb_search_run(e.search, &sq, on_search, &none, err, sizeof err),
                     EB_ERR_INVALID);
    assert_non_null(strstr(err, "k=0"));
    sq.k = 5;
    sq.dims = IMG;
    assert_int_equal(eb_search_run(e.search, &sq, on_search, &none, err, sizeof err),
                     EB_ERR_INVALID);
    assert_non_null(strstr(err, "64 dims; the table's CombinedEmbedding has 128"));
    env_close(&e);
}

/* Planner steering for the test: with sequential scans and sorts disabled the only plan left
 * that yields rows in distance order is the HNSW index scan (the B-tree filter index would need
 * a sort). */
#define STEER "SELECT set_config('enable_seqscan', 'off', false), " \
              "set_config('enable_sort', 'off', false)"

static void test_filtered_search_20k(void **state)
{
    (void)state;
    PGconn *pg = connect_to(db_url);
    /* 20,000 clustered rows, 5% (1,000) with template 'tpl-sel'. Built without the HNSW index
     * and indexed afterwards: much faster than 20,000 index inserts. */
    exec_ok(pg, "DELETE FROM \"ProductEmbeddings\" WHERE \"ProductId\" LIKE 'gen-%'");
    exec_ok(pg, "DROP INDEX \"ProductEmbeddings_combined_hnsw\"");
    int64_t t0 = eb_now_us();
    exec_ok(pg, "INSERT INTO \"ProductEmbeddings\" (\"StoreId\", \"ProductId\", "
                "\"BusinessTemplate\", \"SourceType\", \"CombinedEmbedding\", \"Model\", "
                "\"ModelRev\", \"PreprocRev\") "
                "SELECT gen_random_uuid(), 'gen-' || i, "
                "CASE WHEN i % 20 = 0 THEN 'tpl-sel' ELSE 'tpl-other' END, 'catalog', "
                "(SELECT array_agg(sin((i % 37) * 1.3 + j * 0.7) + 0.35 * sin(i * 12.9898 + j * "
                "78.233) ORDER BY j) FROM generate_series(1, 128) j)::vector(128), "
                "'m', 'rev-gen', 'p' FROM generate_series(1, 20000) i");
    exec_ok(pg, "CREATE INDEX \"ProductEmbeddings_combined_hnsw\" ON \"ProductEmbeddings\" "
                "USING hnsw (\"CombinedEmbedding\" vector_ip_ops) WITH (m = 16, "
                "ef_construction = 64)");
    exec_ok(pg, "ANALYZE \"ProductEmbeddings\"");
    print_message("20,000 rows generated and indexed in %.1f s\n",
                  (double)(eb_now_us() - t0) / 1e6);
    assert_int_equal(query_long(pg, "SELECT count(*) FROM \"ProductEmbeddings\" WHERE "
                                    "\"BusinessTemplate\" = 'tpl-sel'"),
                     1000);

    /* The query: the vector of one row of the non-selected template. */
    PGresult *r = PQexecParams(pg, "SELECT \"CombinedEmbedding\" FROM \"ProductEmbeddings\" "
                                   "WHERE \"ProductId\" = 'gen-7'",
                               0, NULL, NULL, NULL, NULL, 1);
    assert_int_equal(PQntuples(r), 1);
    float q[128];
    uint32_t dims;
    assert_int_equal(eb_pgvector_decode((const uint8_t *)PQgetvalue(r, 0, 0),
                                        (size_t)PQgetlength(r, 0, 0), q, 128, &dims),
                     EB_OK);
    PQclear(r);

    env e;
    env_open(&e, db_url, IMG, TXT, STEER);
    /* EXPLAIN the prepared SELECT as the search runs it (same settings, same parameters). */
    exec_ok(pg, STEER);
    exec_ok(pg, "BEGIN");
    exec_ok(pg, "SET LOCAL hnsw.iterative_scan = relaxed_order");
    char explain[2048];
    snprintf(explain, sizeof explain, "EXPLAIN %s", eb_search_select_sql(e.search));
    uint8_t qb[4 + 128 * 4];
    eb_pgvector_encode(q, 128, qb, sizeof qb);
    const char *vals[5] = {(const char *)qb, "tpl-sel", "catalog", "rev-gen", "10"};
    const int lens[5] = {sizeof qb, 0, 0, 0, 0};
    const int fmts[5] = {1, 0, 0, 0, 0};
    r = PQexecParams(pg, explain, 5, NULL, vals, lens, fmts, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    bool uses_hnsw = false;
    for (int i = 0; i < PQntuples(r); i++) {
        print_message("  %s\n", PQgetvalue(r, i, 0));
        uses_hnsw = uses_hnsw || strstr(PQgetvalue(r, i, 0), "Index Scan using "
                                                             "\"ProductEmbeddings_combined_hnsw\"");
    }
    PQclear(r);
    exec_ok(pg, "COMMIT");
    assert_true(uses_hnsw);

    const uint32_t k = 10;
    char err[256];
    eb_search_query sq = {.business_template = "tpl-sel", .source_type = "catalog",
                          .model_rev = "rev-gen", .vector = q, .dims = 128, .k = k,
                          .exact_order_only = true};
    /* Iterative scan off: HNSW hands out ef_search (40) candidates, the 5% filter keeps a few. */
    search_out off = {0};
    assert_int_equal(eb_search_run(e.search, &sq, on_search, &off, err, sizeof err), EB_OK);
    assert_true(run_until(e.loop, &off.done, 20000));
    assert_int_equal(off.status, EB_OK);
    print_message("iterative scan off: %zu rows\n", off.n);
    assert_true(off.n < k);
    /* On (relaxed_order): it keeps scanning until k rows pass the filter. */
    search_out on = {0};
    sq.exact_order_only = false;
    assert_int_equal(eb_search_run(e.search, &sq, on_search, &on, err, sizeof err), EB_OK);
    assert_true(run_until(e.loop, &on.done, 20000));
    assert_int_equal(on.status, EB_OK);
    print_message("iterative scan on: %zu rows\n", on.n);
    assert_int_equal(on.n, k);
    for (size_t i = 0; i < on.n; i++) {
        assert_string_equal(on.templates[i], "tpl-sel");
        if (i > 0)
            assert_true(on.scores[i] <= on.scores[i - 1]); /* distance order */
    }
    /* The scores are the true inner products: compare with an exact computation. */
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT \"CombinedEmbedding\" FROM \"ProductEmbeddings\" WHERE "
                              "\"ProductId\" = '%s'",
             on.ids[0]);
    r = PQexecParams(pg, sql, 0, NULL, NULL, NULL, NULL, 1);
    float row[128];
    eb_pgvector_decode((const uint8_t *)PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0), row,
                       128, &dims);
    PQclear(r);
    double ip = 0;
    for (int i = 0; i < 128; i++)
        ip += (double)q[i] * row[i];
    assert_true(fabs(ip - on.scores[0]) < 1e-3 * fabs(ip) + 1e-4);
    PQfinish(pg);
    env_close(&e);
}

int main(void)
{
    base_url = getenv("EMBROKER_PG_URL");
    if (!base_url || !*base_url) {
        printf("EMBROKER_PG_URL not set (tests/run starts PostgreSQL and sets it); skipped\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fill_placeholders),
        cmocka_unit_test(test_migrations),
        cmocka_unit_test(test_halfvec_variant),
        cmocka_unit_test(test_store_exactly_once_upsert_delete),
        cmocka_unit_test(test_image_only_scores_w_img_cosine),
        cmocka_unit_test(test_filtered_search_20k),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
