/* eb_bench_search — search latency and recall of the production search path on synthetic
 * clustered rows.
 *
 * The rows imitate a catalogue embedded by an image model and a text model: `clusters`
 * products families, each with an image centre and a text centre on the unit sphere; a row
 * draws a family, then its image and text vectors as the centres plus Gaussian noise of the
 * family's spread, and stores [w_img · î ; w_txt · t̂] (a share of rows has no text: text half
 * zero). Queries are fresh draws from a family (near the centres, never a stored row), in the
 * three forms the broker builds (eb_combined_query): image only, text only, both.
 *
 * Recall needs the exact answer. A sequential scan in PostgreSQL costs a second per query at
 * 100,000 × 1,792 floats, so the exact top-k of every query is computed here, once, by sgemm
 * over the same float32 rows that were loaded (all rows share SourceType and ModelRev, so the
 * only filter is the template); a handful of queries per cell are then also run through
 * PostgreSQL's exact scan (index scans off) to show both ground truths agree. A returned row
 * counts as a hit when its exact score reaches the k-th exact score (1e-5 slack for float
 * ties); the strict id-set overlap is reported beside it.
 *
 * Latency is one search at a time through eb_pgpool + eb_search on an eb_loop, exactly as the
 * broker runs it (prepared statement, binary vector, SET LOCAL iterative scan and ef_search in
 * one pipelined transaction). The unfiltered cell cannot go through eb_search, which always
 * filters on a template: it runs the same job with eb_search's SELECT minus the template
 * predicate (the SourceType/ModelRev predicates stay and match every row). */
#include "eb_bench_search.h"

#include <cblas.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "eb_clock.h"
#include "eb_loop.h"
#include "eb_migrate.h"
#include "eb_pgpool.h"
#include "eb_pgvector.h"
#include "eb_search.h"

void openblas_set_num_threads(int);

#define MAX_K 100
#define SOURCE_TYPE "catalogue"
#define MODEL_REV "bench-rev-1"
#define STMT_UNFILTERED "eb_bench_search_unfiltered"
#define SCORE_SLACK 1e-5

enum { QT_IMAGE, QT_TEXT, QT_COMBINED, QT_COUNT };
static const char *const qt_names[QT_COUNT] = {"image-only", "text-only", "combined"};

/* Filter modes: none; one template through eb_search as the broker runs it (the planner picks
 * the plan); the same with the planner steered onto the HNSW index (what iterative scan gives
 * when the index is used, as tests/integration/test_search.c steers it). */
enum { F_NONE, F_TEMPLATE, F_TEMPLATE_HNSW, F_COUNT };
#define STEER_HNSW                                                                                 \
    "SELECT set_config('enable_seqscan', 'off', false), "                                          \
    "set_config('enable_bitmapscan', 'off', false), "                                              \
    "set_config('enable_sort', 'off', false)"

typedef struct params {
    const char *pg_url;
    uint32_t img, txt, cd, rows, clusters, templates, queries, warmup, k, ef_search;
    int m, ef_construction, build_workers, verify, threads;
    const char *maintenance_work_mem;
    float w_img, w_txt;
    int text_missing_pct;
    uint64_t seed;
    bool keep_db, steered;
} params;

/* ---- random numbers (deterministic for a seed) ------------------------------------------ */

typedef struct gauss {
    uint64_t state;
    bool has_spare;
    double spare;
} gauss;

static uint64_t next_u64(gauss *g)
{
    uint64_t z = (g->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double next_unit(gauss *g) /* (0, 1) */
{
    return ((double)(next_u64(g) >> 11) + 0.5) / 9007199254740992.0;
}

static double next_normal(gauss *g)
{
    if (g->has_spare) {
        g->has_spare = false;
        return g->spare;
    }
    double r = sqrt(-2.0 * log(next_unit(g))), a = 2.0 * M_PI * next_unit(g);
    g->spare = r * sin(a);
    g->has_spare = true;
    return r * cos(a);
}

/* out = centre + sigma · N(0, I/dim): noise of norm ≈ sigma around a unit centre. */
static void draw_near(gauss *g, const float *centre, uint32_t dim, double sigma, float *out)
{
    double s = sigma / sqrt((double)dim);
    for (uint32_t i = 0; i < dim; i++)
        out[i] = (float)((centre ? centre[i] : 0.0) + s * next_normal(g));
}

static void normalise(float *v, uint32_t n)
{
    double ss = 0;
    for (uint32_t i = 0; i < n; i++)
        ss += (double)v[i] * v[i];
    double inv = 1.0 / sqrt(ss);
    for (uint32_t i = 0; i < n; i++)
        v[i] = (float)(v[i] * inv);
}

/* ---- the synthetic catalogue ------------------------------------------------------------ */

typedef struct dataset {
    float *centre_img; /* (clusters, img) unit */
    float *centre_txt; /* (clusters, txt) unit */
    float *spread;     /* (clusters) noise norm of the family */
    float *data;       /* (rows, cd) CombinedEmbedding as loaded */
    uint16_t *tmpl;    /* (rows) template index */
} dataset;

typedef struct query_set {
    uint32_t n;     /* per type, measured (ground truth kept) + warm-up after them */
    uint32_t total; /* n + warm-up */
    float *vec;     /* (QT_COUNT, total, cd) query vectors */
    uint16_t *tmpl; /* (QT_COUNT, total) template of the filtered cell */
    int32_t *truth; /* (QT_COUNT, 2 filters, n, k) exact top-k row indexes */
    double *kth;    /* (QT_COUNT, 2, n) k-th exact score */
} query_set;

static void dataset_free(dataset *d)
{
    free(d->centre_img);
    free(d->centre_txt);
    free(d->spread);
    free(d->data);
    free(d->tmpl);
    memset(d, 0, sizeof *d);
}

static void query_set_free(query_set *q)
{
    free(q->vec);
    free(q->tmpl);
    free(q->truth);
    free(q->kth);
    memset(q, 0, sizeof *q);
}

static int dataset_make(const params *p, dataset *d)
{
    d->centre_img = malloc((size_t)p->clusters * p->img * sizeof(float));
    d->centre_txt = malloc((size_t)p->clusters * p->txt * sizeof(float));
    d->spread = malloc(p->clusters * sizeof(float));
    d->data = malloc((size_t)p->rows * p->cd * sizeof(float));
    d->tmpl = malloc(p->rows * sizeof(uint16_t));
    float *img = malloc(p->img * sizeof(float)), *txt = malloc(p->txt * sizeof(float));
    if (!d->centre_img || !d->centre_txt || !d->spread || !d->data || !d->tmpl || !img || !txt) {
        free(img);
        free(txt);
        fprintf(stderr, "bench search: out of memory for %u rows × %u dims\n", p->rows, p->cd);
        return -1;
    }
    gauss g = {.state = p->seed};
    for (uint32_t c = 0; c < p->clusters; c++) {
        draw_near(&g, NULL, p->img, 1.0, d->centre_img + (size_t)c * p->img);
        normalise(d->centre_img + (size_t)c * p->img, p->img);
        draw_near(&g, NULL, p->txt, 1.0, d->centre_txt + (size_t)c * p->txt);
        normalise(d->centre_txt + (size_t)c * p->txt, p->txt);
        /* family spread 0.4..0.9: rows of a family have cosine ≈ 0.55..0.86 with each other */
        d->spread[c] = (float)(0.4 + 0.5 * next_unit(&g));
    }
    for (uint32_t r = 0; r < p->rows; r++) {
        uint32_t c = (uint32_t)(next_u64(&g) % p->clusters);
        d->tmpl[r] = (uint16_t)(next_u64(&g) % p->templates);
        bool has_text = (int)(next_u64(&g) % 100) >= p->text_missing_pct;
        draw_near(&g, d->centre_img + (size_t)c * p->img, p->img, d->spread[c], img);
        draw_near(&g, d->centre_txt + (size_t)c * p->txt, p->txt, d->spread[c], txt);
        if (eb_combined_build(img, p->img, has_text ? txt : NULL, p->txt, p->w_img, p->w_txt,
                              d->data + (size_t)r * p->cd) != EB_OK) {
            fprintf(stderr, "bench search: eb_combined_build failed for row %u\n", r);
            free(img);
            free(txt);
            return -1;
        }
    }
    free(img);
    free(txt);
    return 0;
}

static double dot(const float *a, const float *b, uint32_t n)
{
    double s = 0;
    for (uint32_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* Insert (score, row) into the descending top-k list (ids/scores, *n entries). */
static void topk_push(float *scores, int32_t *ids, uint32_t *n, uint32_t k, float s, int32_t row)
{
    if (*n == k && s <= scores[k - 1])
        return;
    uint32_t i = *n < k ? (*n)++ : k - 1;
    while (i > 0 && scores[i - 1] < s) {
        scores[i] = scores[i - 1];
        ids[i] = ids[i - 1];
        i--;
    }
    scores[i] = s;
    ids[i] = row;
}

static int queries_make(const params *p, const dataset *d, query_set *q)
{
    q->n = p->queries;
    q->total = p->queries + p->warmup;
    q->vec = malloc((size_t)QT_COUNT * q->total * p->cd * sizeof(float));
    q->tmpl = malloc((size_t)QT_COUNT * q->total * sizeof(uint16_t));
    q->truth = malloc((size_t)QT_COUNT * 2 * q->n * p->k * sizeof(int32_t));
    q->kth = malloc((size_t)QT_COUNT * 2 * q->n * sizeof(double));
    float *img = malloc(p->img * sizeof(float)), *txt = malloc(p->txt * sizeof(float));
    if (!q->vec || !q->tmpl || !q->truth || !q->kth || !img || !txt) {
        free(img);
        free(txt);
        return -1;
    }
    gauss g = {.state = p->seed * 7919u + 17u};
    for (int t = 0; t < QT_COUNT; t++) {
        for (uint32_t i = 0; i < q->total; i++) {
            uint32_t c = (uint32_t)(next_u64(&g) % p->clusters);
            q->tmpl[(size_t)t * q->total + i] = (uint16_t)(next_u64(&g) % p->templates);
            draw_near(&g, d->centre_img + (size_t)c * p->img, p->img, d->spread[c], img);
            draw_near(&g, d->centre_txt + (size_t)c * p->txt, p->txt, d->spread[c], txt);
            eb_combined_query(t == QT_TEXT ? NULL : img, p->img, t == QT_IMAGE ? NULL : txt, p->txt,
                              q->vec + ((size_t)t * q->total + i) * p->cd);
        }
    }
    free(img);
    free(txt);

    /* Exact top-k of every measured query: scores = Q · Dᵀ in blocks of queries. */
    const uint32_t block = 64;
    float *scores = malloc((size_t)block * p->rows * sizeof(float));
    if (!scores)
        return -1;
    openblas_set_num_threads(p->threads);
    float top_s[2][MAX_K];
    int32_t top_i[2][MAX_K];
    for (int t = 0; t < QT_COUNT; t++) {
        for (uint32_t b0 = 0; b0 < q->n; b0 += block) {
            uint32_t nb = q->n - b0 < block ? q->n - b0 : block;
            const float *qv = q->vec + ((size_t)t * q->total + b0) * p->cd;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)p->rows, (int)p->cd,
                        1.0f, qv, (int)p->cd, d->data, (int)p->cd, 0.0f, scores, (int)p->rows);
            for (uint32_t j = 0; j < nb; j++) {
                uint32_t qi = b0 + j;
                uint16_t want = q->tmpl[(size_t)t * q->total + qi];
                uint32_t n_all = 0, n_tpl = 0;
                const float *row = scores + (size_t)j * p->rows;
                for (uint32_t r = 0; r < p->rows; r++) {
                    topk_push(top_s[0], top_i[0], &n_all, p->k, row[r], (int32_t)r);
                    if (d->tmpl[r] == want)
                        topk_push(top_s[1], top_i[1], &n_tpl, p->k, row[r], (int32_t)r);
                }
                for (int f = 0; f < 2; f++) {
                    size_t cell = ((size_t)t * 2 + (size_t)f) * q->n + qi;
                    uint32_t have = f ? n_tpl : n_all;
                    double kth = INFINITY;
                    for (uint32_t x = 0; x < p->k; x++) {
                        int32_t id = x < have ? top_i[f][x] : -1;
                        q->truth[cell * p->k + x] = id;
                        if (id >= 0) { /* the k-th score again in double, as hits are scored */
                            double s =
                                dot(qv + (size_t)j * p->cd, d->data + (size_t)id * p->cd, p->cd);
                            kth = s < kth ? s : kth;
                        }
                    }
                    q->kth[cell] = kth;
                }
            }
        }
    }
    openblas_set_num_threads(1);
    free(scores);
    return 0;
}

/* ---- database setup (blocking libpq: before any loop runs) ------------------------------ */

static int exec_ok(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType s = PQresultStatus(r);
    if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench search: %s\n  failed: %s", sql, PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    PQclear(r);
    return 0;
}

static int query_text(PGconn *pg, const char *sql, char *out, size_t cap)
{
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1) {
        fprintf(stderr, "bench search: %s\n  failed: %s", sql, PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    snprintf(out, cap, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

static void url_with_db(const char *base, const char *db, char *out, size_t cap)
{
    const char *slash = strrchr(base, '/');
    const char *q = strchr(base, '?');
    if (slash && slash > strstr(base, "//") + 1)
        snprintf(out, cap, "%.*s/%s%s", (int)(slash - base), base, db, q ? q : "");
    else
        snprintf(out, cap, "%s/%s", base, db);
}

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static int buf_reserve(buf *b, size_t more)
{
    if (b->n + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1 << 20;
    while (cap < b->n + more)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static void put_u16(buf *b, uint16_t v)
{
    b->p[b->n++] = (uint8_t)(v >> 8);
    b->p[b->n++] = (uint8_t)v;
}

static void put_u32(buf *b, uint32_t v)
{
    for (int s = 24; s >= 0; s -= 8)
        b->p[b->n++] = (uint8_t)(v >> s);
}

static void put_field(buf *b, const void *data, size_t len)
{
    put_u32(b, (uint32_t)len);
    memcpy(b->p + b->n, data, len);
    b->n += len;
}

static void put_text(buf *b, const char *s)
{
    put_field(b, s, strlen(s));
}

/* COPY the rows in PostgreSQL's binary format: no text parsing of 1,792 floats per row. */
static int copy_rows(PGconn *pg, const params *p, const dataset *d)
{
    PGresult *start = PQexec(pg, "COPY \"ProductEmbeddings\" (\"StoreId\", \"ProductId\", "
                                 "\"BusinessTemplate\", \"SourceType\", \"CombinedEmbedding\", "
                                 "\"Model\", \"ModelRev\", \"PreprocRev\") FROM STDIN "
                                 "(FORMAT binary)");
    if (PQresultStatus(start) != PGRES_COPY_IN) {
        fprintf(stderr, "bench search: COPY did not start: %s", PQresultErrorMessage(start));
        PQclear(start);
        return -1;
    }
    PQclear(start);
    buf b = {0};
    size_t vlen = eb_pgvector_size(p->cd);
    int rc = 0;
    static const uint8_t header[19] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0};
    if (buf_reserve(&b, sizeof header) != 0)
        return -1;
    memcpy(b.p, header, sizeof header);
    b.n = sizeof header;
    for (uint32_t r = 0; r < p->rows && rc == 0; r++) {
        if (buf_reserve(&b, 256 + vlen) != 0) {
            rc = -1;
            break;
        }
        put_u16(&b, 8);
        uint8_t uuid[16] = {0};
        uint64_t x = 0x5eed0000u + r, y = p->seed;
        memcpy(uuid, &x, 8);
        memcpy(uuid + 8, &y, 8);
        uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x40);
        uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80);
        put_field(&b, uuid, 16);
        char pid[32], tpl[32];
        snprintf(pid, sizeof pid, "p%07u", r);
        snprintf(tpl, sizeof tpl, "tpl-%02u", d->tmpl[r]);
        put_text(&b, pid);
        put_text(&b, tpl);
        put_text(&b, SOURCE_TYPE);
        put_u32(&b, (uint32_t)vlen);
        if (eb_pgvector_encode(d->data + (size_t)r * p->cd, p->cd, b.p + b.n, vlen) != EB_OK)
            rc = -1;
        b.n += vlen;
        put_text(&b, "bench-synthetic");
        put_text(&b, MODEL_REV);
        put_text(&b, "bench-pp-1");
        if (b.n > (4u << 20)) {
            if (PQputCopyData(pg, (const char *)b.p, (int)b.n) != 1)
                rc = -1;
            b.n = 0;
        }
    }
    if (rc == 0 && buf_reserve(&b, 2) == 0) {
        put_u16(&b, 0xffff);
        if (PQputCopyData(pg, (const char *)b.p, (int)b.n) != 1)
            rc = -1;
    }
    free(b.p);
    if (PQputCopyEnd(pg, rc == 0 ? NULL : "bench aborted") != 1)
        rc = -1;
    PGresult *res;
    while ((res = PQgetResult(pg)) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            fprintf(stderr, "bench search: COPY failed: %s", PQresultErrorMessage(res));
            rc = -1;
        }
        PQclear(res);
    }
    return rc;
}

typedef struct setup_figures {
    double gen_s, truth_s, copy_s, index_s, analyze_s;
    double table_mb, index_mb;
    char shared_buffers[32];
    char index_def[640];
    char pgvector[32];
} setup_figures;

static int load_database(const params *p, const char *db_url, const dataset *d, setup_figures *fig)
{
    PGconn *pg = PQconnectdb(db_url);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "bench search: cannot connect to %s: %s", db_url, PQerrorMessage(pg));
        PQfinish(pg);
        return -1;
    }
    int rc = -1;
    char def[512], sql[1400];
    /* Keep the migration's own index definition (vector or halfvec expression), rebuilt after
     * the load with the chosen m / ef_construction: one build beats 100,000 index inserts. */
    if (query_text(pg, "SELECT pg_get_indexdef('\"ProductEmbeddings_combined_hnsw\"'::regclass)",
                   def, sizeof def) != 0)
        goto out;
    char *with = strstr(def, " WITH (");
    if (with)
        *with = '\0';
    snprintf(fig->index_def, sizeof fig->index_def, "%s WITH (m = %d, ef_construction = %d)", def,
             p->m, p->ef_construction);
    query_text(pg, "SHOW shared_buffers", fig->shared_buffers, sizeof fig->shared_buffers);
    query_text(pg, "SELECT extversion FROM pg_extension WHERE extname = 'vector'", fig->pgvector,
               sizeof fig->pgvector);
    if (exec_ok(pg, "DROP INDEX \"ProductEmbeddings_combined_hnsw\"") != 0)
        goto out;
    int64_t t0 = eb_now_us();
    if (copy_rows(pg, p, d) != 0)
        goto out;
    fig->copy_s = (double)(eb_now_us() - t0) / 1e6;
    snprintf(sql, sizeof sql, "SET maintenance_work_mem = '%s'", p->maintenance_work_mem);
    if (exec_ok(pg, sql) != 0)
        goto out;
    snprintf(sql, sizeof sql, "SET max_parallel_maintenance_workers = %d", p->build_workers);
    if (exec_ok(pg, sql) != 0)
        goto out;
    fprintf(stderr, "bench search: %u rows copied in %.1f s; building %s\n", p->rows, fig->copy_s,
            fig->index_def);
    t0 = eb_now_us();
    if (exec_ok(pg, fig->index_def) != 0)
        goto out;
    fig->index_s = (double)(eb_now_us() - t0) / 1e6;
    t0 = eb_now_us();
    if (exec_ok(pg, "ANALYZE \"ProductEmbeddings\"") != 0)
        goto out;
    fig->analyze_s = (double)(eb_now_us() - t0) / 1e6;
    char v[64];
    if (query_text(pg,
                   "SELECT pg_total_relation_size('\"ProductEmbeddings\"') - "
                   "pg_indexes_size('\"ProductEmbeddings\"')",
                   v, sizeof v) == 0)
        fig->table_mb = atof(v) / 1048576.0;
    if (query_text(pg, "SELECT pg_relation_size('\"ProductEmbeddings_combined_hnsw\"')", v,
                   sizeof v) == 0)
        fig->index_mb = atof(v) / 1048576.0;
    rc = 0;
out:
    PQfinish(pg);
    return rc;
}

/* ---- searches through the pool ---------------------------------------------------------- */

typedef struct wait_result {
    bool done;
    eb_status status;
    int64_t end_us;
    uint32_t n;
    int32_t rows[MAX_K];
    char error[256];
} wait_result;

static int32_t row_of(const char *product_id)
{
    return product_id && product_id[0] == 'p' ? (int32_t)atol(product_id + 1) : -1;
}

static void on_search(void *arg, eb_status status, const eb_search_hit *hits, size_t n,
                      const char *error)
{
    wait_result *w = arg;
    w->end_us = eb_now_us();
    w->done = true;
    w->status = status;
    w->n = 0;
    for (size_t i = 0; i < n && i < MAX_K; i++)
        w->rows[w->n++] = row_of(hits[i].product_id);
    if (error)
        snprintf(w->error, sizeof w->error, "%s", error);
}

static void on_unfiltered(void *arg, eb_status status, const PGresult *result, const char *error)
{
    wait_result *w = arg;
    w->end_us = eb_now_us();
    w->done = true;
    w->status = status;
    w->n = 0;
    if (status == EB_OK && result)
        for (int i = 0; i < PQntuples(result) && i < MAX_K; i++)
            w->rows[w->n++] = row_of(PQgetvalue(result, i, 0)); /* binary text = bytes + NUL */
    if (error)
        snprintf(w->error, sizeof w->error, "%s", error);
}

/* The unfiltered twin of eb_search_run: the same job shape on the same pool. */
static eb_status submit_unfiltered(eb_pgpool *pool, const params *p, const float *vec,
                                   wait_result *w)
{
    size_t vlen = eb_pgvector_size(p->cd);
    uint8_t *v = malloc(vlen);
    eb_pgjob *job = eb_pgjob_new(on_unfiltered, w);
    if (!v || !job || eb_pgvector_encode(vec, p->cd, v, vlen) != EB_OK) {
        free(v);
        eb_pgjob_free(&job);
        return EB_ERR_NOMEM;
    }
    char k_text[16], ef_sql[64];
    snprintf(k_text, sizeof k_text, "%u", p->k);
    snprintf(ef_sql, sizeof ef_sql, "SET LOCAL hnsw.ef_search = %u",
             p->k > p->ef_search ? p->k : p->ef_search);
    const char *values[5] = {(const char *)v, "any", SOURCE_TYPE, MODEL_REV, k_text};
    const int lengths[5] = {(int)vlen, 0, 0, 0, 0};
    const int formats[5] = {1, 0, 0, 0, 0};
    eb_status st = eb_pgjob_add_sql(job, "BEGIN");
    if (st == EB_OK)
        st = eb_pgjob_add_sql(job, "SET LOCAL hnsw.iterative_scan = relaxed_order");
    if (st == EB_OK)
        st = eb_pgjob_add_sql(job, ef_sql);
    if (st == EB_OK)
        st = eb_pgjob_add_prepared(job, STMT_UNFILTERED, 5, values, lengths, formats, 1);
    if (st == EB_OK)
        st = eb_pgjob_add_sql(job, "COMMIT");
    free(v);
    if (st != EB_OK) {
        eb_pgjob_free(&job);
        return st;
    }
    return eb_pgpool_submit(pool, job, 0);
}

typedef struct cell_result {
    eb_samples latency;
    uint32_t short_answers; /* fewer than k rows */
    double recall_sum, recall_ids_sum, recall_min;
    uint32_t scored;
} cell_result;

/* Run one search and wait for it; returns the latency in µs or -1. */
static int64_t run_one(eb_loop *loop, eb_pgpool *pool, eb_search *search, const params *p,
                       const float *vec, int filtered, uint16_t tmpl, wait_result *w)
{
    memset(w, 0, sizeof *w);
    char tpl[32], err[256] = "";
    snprintf(tpl, sizeof tpl, "tpl-%02u", tmpl);
    int64_t t0 = eb_now_us();
    eb_status st;
    if (filtered) {
        eb_search_query q = {.business_template = tpl,
                             .source_type = SOURCE_TYPE,
                             .model_rev = MODEL_REV,
                             .vector = vec,
                             .dims = p->cd,
                             .k = p->k};
        st = eb_search_run(search, &q, on_search, w, err, sizeof err);
    } else {
        st = submit_unfiltered(pool, p, vec, w);
    }
    if (st != EB_OK) {
        snprintf(w->error, sizeof w->error, "submit: %s %.200s", eb_status_str(st), err);
        return -1;
    }
    while (!w->done)
        eb_loop_run_once(loop, 1000);
    return w->status == EB_OK ? w->end_us - t0 : -1;
}

static void score_answer(const params *p, const dataset *d, const float *vec, const int32_t *truth,
                         double kth, const wait_result *w, cell_result *c)
{
    uint32_t hits = 0, same = 0;
    for (uint32_t i = 0; i < w->n; i++) {
        int32_t r = w->rows[i];
        if (r < 0 || (uint32_t)r >= p->rows)
            continue;
        if (dot(vec, d->data + (size_t)r * p->cd, p->cd) >= kth - SCORE_SLACK)
            hits++;
        for (uint32_t x = 0; x < p->k; x++)
            same += truth[x] == r;
    }
    double recall = (double)(hits > p->k ? p->k : hits) / p->k;
    c->recall_sum += recall;
    c->recall_ids_sum += (double)same / p->k;
    c->recall_min = c->scored == 0 || recall < c->recall_min ? recall : c->recall_min;
    c->scored++;
    if (w->n < p->k)
        c->short_answers++;
}

/* Check `count` queries of a cell against PostgreSQL's exact scan (no index scans): returns
 * how many agree with the sgemm ground truth (every exact row reaches the k-th score). */
static int verify_exact(PGconn *pg, const params *p, const dataset *d, const query_set *qs, int t,
                        int filtered, int count)
{
    char sql[640];
    snprintf(sql, sizeof sql,
             "SELECT \"ProductId\" FROM \"ProductEmbeddings\" WHERE %s \"SourceType\" = $3::text "
             "AND \"ModelRev\" = $4::text AND \"CombinedEmbedding\" IS NOT NULL "
             "ORDER BY \"CombinedEmbedding\" <#> $1::vector(%u) LIMIT $5::integer",
             filtered ? "\"BusinessTemplate\" = $2::text AND" : "$2::text IS NOT NULL AND", p->cd);
    size_t vlen = eb_pgvector_size(p->cd);
    uint8_t *v = malloc(vlen);
    int agree = 0;
    exec_ok(pg, "SET enable_indexscan = off");
    for (int i = 0; i < count && (uint32_t)i < qs->n; i++) {
        const float *vec = qs->vec + ((size_t)t * qs->total + (size_t)i) * p->cd;
        eb_pgvector_encode(vec, p->cd, v, vlen);
        char tpl[32], k_text[16];
        snprintf(tpl, sizeof tpl, "tpl-%02u", qs->tmpl[(size_t)t * qs->total + (size_t)i]);
        snprintf(k_text, sizeof k_text, "%u", p->k);
        const char *values[5] = {(const char *)v, tpl, SOURCE_TYPE, MODEL_REV, k_text};
        const int lengths[5] = {(int)vlen, 0, 0, 0, 0};
        const int formats[5] = {1, 0, 0, 0, 0};
        PGresult *r = PQexecParams(pg, sql, 5, NULL, values, lengths, formats, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && (uint32_t)PQntuples(r) == p->k) {
            size_t cell = ((size_t)t * 2 + (size_t)filtered) * qs->n + (size_t)i;
            bool ok = true;
            for (int j = 0; j < PQntuples(r); j++) {
                int32_t row = row_of(PQgetvalue(r, j, 0));
                ok = ok && row >= 0 &&
                     dot(vec, d->data + (size_t)row * p->cd, p->cd) >= qs->kth[cell] - SCORE_SLACK;
            }
            agree += ok;
        } else {
            fprintf(stderr, "bench search: exact check failed: %s", PQresultErrorMessage(r));
        }
        PQclear(r);
    }
    exec_ok(pg, "RESET enable_indexscan");
    free(v);
    return agree;
}

/* The plan PostgreSQL picks for a search statement with these parameters, under the same
 * SET LOCALs: returns true when it orders by the HNSW index; plan gets the first lines. */
static bool explain_plan(PGconn *pg, const char *select_sql, const params *p, const float *vec,
                         const char *tpl, char *plan, size_t cap)
{
    char sql[1400], ef_sql[64];
    snprintf(sql, sizeof sql, "EXPLAIN %s", select_sql);
    snprintf(ef_sql, sizeof ef_sql, "SET LOCAL hnsw.ef_search = %u",
             p->k > p->ef_search ? p->k : p->ef_search);
    size_t vlen = eb_pgvector_size(p->cd);
    uint8_t *v = malloc(vlen);
    eb_pgvector_encode(vec, p->cd, v, vlen);
    char k_text[16];
    snprintf(k_text, sizeof k_text, "%u", p->k);
    const char *values[5] = {(const char *)v, tpl, SOURCE_TYPE, MODEL_REV, k_text};
    const int lengths[5] = {(int)vlen, 0, 0, 0, 0};
    const int formats[5] = {1, 0, 0, 0, 0};
    exec_ok(pg, "BEGIN");
    exec_ok(pg, "SET LOCAL hnsw.iterative_scan = relaxed_order");
    exec_ok(pg, ef_sql);
    PGresult *r = PQexecParams(pg, sql, 5, NULL, values, lengths, formats, 0);
    bool hnsw = false;
    plan[0] = '\0';
    size_t used = 0;
    for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++) {
        const char *line = PQgetvalue(r, i, 0);
        hnsw = hnsw || strstr(line, "ProductEmbeddings_combined_hnsw") != NULL;
        /* plan nodes only (the first line and "->" lines), without costs or the vector */
        if (i > 0 && !strstr(line, "->"))
            continue;
        const char *cost = strstr(line, "  (cost");
        while (*line == ' ' || *line == '-' || *line == '>')
            line++;
        int len = cost && cost > line ? (int)(cost - line) : (int)strlen(line);
        if (used + 4 < cap) {
            int n = snprintf(plan + used, cap - used, "%s%.*s", used ? " / " : "", len, line);
            used += n > 0 ? (size_t)n : 0;
            if (used >= cap)
                used = cap - 1;
        }
    }
    PQclear(r);
    exec_ok(pg, "COMMIT");
    free(v);
    return hnsw;
}

/* ---- entry ------------------------------------------------------------------------------ */

static uint32_t cfg_u32(const eb_config *cfg, const char *key, const char *fallback)
{
    return (uint32_t)strtoul(eb_config_get(cfg, key, fallback), NULL, 10);
}

static int read_params(const eb_config *cfg, params *p)
{
    p->pg_url = eb_config_get(cfg, "pg_url", getenv("EMBROKER_PG_URL"));
    p->img = cfg_u32(cfg, "image_dim", "768");
    p->txt = cfg_u32(cfg, "text_dim", "1024");
    p->cd = p->img + p->txt;
    p->rows = cfg_u32(cfg, "rows", "100000");
    p->clusters = cfg_u32(cfg, "clusters", "1000");
    p->templates = cfg_u32(cfg, "templates", "20");
    p->queries = cfg_u32(cfg, "queries", "1000");
    p->warmup = cfg_u32(cfg, "warmup", "100");
    p->k = cfg_u32(cfg, "k", "10");
    p->ef_search = cfg_u32(cfg, "ef_search", "100");
    p->m = atoi(eb_config_get(cfg, "m", "16"));
    p->ef_construction = atoi(eb_config_get(cfg, "ef_construction", "64"));
    p->build_workers = atoi(eb_config_get(cfg, "build_workers", "1"));
    p->maintenance_work_mem = eb_config_get(cfg, "maintenance_work_mem", "2GB");
    p->w_img = strtof(eb_config_get(cfg, "w_img", "1.0"), NULL);
    p->w_txt = strtof(eb_config_get(cfg, "w_txt", "1.0"), NULL);
    p->text_missing_pct = atoi(eb_config_get(cfg, "text_missing_pct", "10"));
    p->seed = strtoull(eb_config_get(cfg, "seed", "1"), NULL, 10);
    p->verify = atoi(eb_config_get(cfg, "verify", "5"));
    p->threads = atoi(eb_config_get(cfg, "threads", "2"));
    p->keep_db = atoi(eb_config_get(cfg, "keep_db", "0")) != 0;
    p->steered = atoi(eb_config_get(cfg, "steered", "1")) != 0;
    if (!p->pg_url || !*p->pg_url) {
        fprintf(stderr, "bench search: no PostgreSQL: pass --pg-url or set EMBROKER_PG_URL "
                        "(eval \"$(scripts/services start --export)\")\n");
        return -1;
    }
    if (p->img == 0 || p->txt == 0 || p->cd > EB_PGHALFVEC_HNSW_MAX_DIM || p->rows == 0 ||
        p->clusters == 0 || p->templates == 0 || p->templates > 1000 || p->queries == 0 ||
        p->k == 0 || p->k > MAX_K || p->rows < p->k * p->templates * 4 || p->m < 2 ||
        p->ef_construction < 2 * p->m || p->threads < 1) {
        fprintf(stderr,
                "bench search: bad parameters (dims %u+%u, rows %u, clusters %u, "
                "templates %u, queries %u, k %u, m %d, ef_construction %d)\n",
                p->img, p->txt, p->rows, p->clusters, p->templates, p->queries, p->k, p->m,
                p->ef_construction);
        return -1;
    }
    return 0;
}

static void write_json(const char *path, const params *p, const setup_figures *fig,
                       const eb_row *rows, int n, double total_s)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    fprintf(f,
            "{\n  \"setup\": {\"rows\": %u, \"clusters\": %u, \"templates\": %u, "
            "\"image_dim\": %u, \"text_dim\": %u, \"combined_dim\": %u, \"k\": %u, "
            "\"ef_search\": %u, \"m\": %d, \"ef_construction\": %d, \"build_workers\": %d, "
            "\"w_img\": %g, \"w_txt\": %g, \"text_missing_pct\": %d, \"queries_per_cell\": %u, "
            "\"warmup_per_cell\": %u, \"seed\": %llu, \"generate_s\": %.2f, "
            "\"exact_topk_s\": %.2f, \"copy_s\": %.2f, \"index_build_s\": %.2f, "
            "\"analyze_s\": %.2f, \"table_mb\": %.1f, \"index_mb\": %.1f, "
            "\"shared_buffers\": \"%s\", \"pgvector\": \"%s\", \"total_s\": %.1f},\n"
            "  \"rows\": [\n",
            p->rows, p->clusters, p->templates, p->img, p->txt, p->cd, p->k, p->ef_search, p->m,
            p->ef_construction, p->build_workers, p->w_img, p->w_txt, p->text_missing_pct,
            p->queries, p->warmup, (unsigned long long)p->seed, fig->gen_s, fig->truth_s,
            fig->copy_s, fig->index_s, fig->analyze_s, fig->table_mb, fig->index_mb,
            fig->shared_buffers, fig->pgvector, total_s);
    for (int i = 0; i < n; i++) {
        fprintf(f, "    {\"case\": \"%s\"", rows[i].label);
        for (int c = 0; c < rows[i].ncols; c++) {
            if (isnan(rows[i].values[c]))
                fprintf(f, ", \"%s\": null", rows[i].names[c]);
            else
                fprintf(f, ", \"%s\": %.6g", rows[i].names[c], rows[i].values[c]);
        }
        fprintf(f, "}%s\n", i + 1 < n ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    fclose(f);
}

int eb_bench_search(const eb_config *cfg, const char *out_dir, eb_row *rows, int max_rows,
                    char *notes, size_t notes_len, char *name, size_t name_len)
{
    params p;
    if (read_params(cfg, &p) != 0 || max_rows < F_COUNT * QT_COUNT)
        return -1;
    int64_t start = eb_now_us();
    bool halfvec = p.cd > EB_PGVECTOR_HNSW_MAX_DIM;
    snprintf(name, name_len, "%s", halfvec ? "search-halfvec" : "search");
    setup_figures fig = {0};
    dataset d = {0};
    query_set qs = {0};
    eb_loop *loop = NULL;
    eb_pgpool *pool = NULL;
    eb_search *search = NULL;
    eb_pgpool *steer_pool = NULL; /* F_TEMPLATE_HNSW: its connections are set up with STEER */
    eb_search *steer_search = NULL;
    PGconn *check = NULL;
    cell_result cells[QT_COUNT][F_COUNT];
    memset(cells, 0, sizeof cells);
    int nrows = -1;
    char db[64], db_url[1024], err[1024] = "", sql[256];
    snprintf(db, sizeof db, "eb_bench_search_%d", (int)getpid());
    url_with_db(p.pg_url, db, db_url, sizeof db_url);

    PGconn *admin = PQconnectdb(p.pg_url);
    if (PQstatus(admin) != CONNECTION_OK) {
        fprintf(stderr, "bench search: cannot connect to %s: %s", p.pg_url, PQerrorMessage(admin));
        PQfinish(admin);
        return -1;
    }
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
    if (exec_ok(admin, sql) != 0) {
        PQfinish(admin);
        return -1;
    }

    int64_t t0 = eb_now_us();
    fprintf(stderr, "bench search: generating %u rows × %u dims in %u clusters\n", p.rows, p.cd,
            p.clusters);
    if (dataset_make(&p, &d) != 0)
        goto out;
    fig.gen_s = (double)(eb_now_us() - t0) / 1e6;
    unsigned applied = 0;
    if (eb_migrate_run_dir(db_url, eb_migrate_sql_dir(), p.img, p.txt, &applied, err, sizeof err) !=
        EB_OK) {
        fprintf(stderr, "bench search: migrate: %s\n", err);
        goto out;
    }
    if (load_database(&p, db_url, &d, &fig) != 0)
        goto out;
    fprintf(stderr, "bench search: index built in %.1f s; exact top-%u of %u queries\n",
            fig.index_s, p.k, QT_COUNT * p.queries);
    t0 = eb_now_us();
    if (queries_make(&p, &d, &qs) != 0) {
        fprintf(stderr, "bench search: out of memory for the queries\n");
        goto out;
    }
    fig.truth_s = (double)(eb_now_us() - t0) / 1e6;

    /* The production path: loop + pool + prepared statements. */
    loop = eb_loop_new();
    eb_pgpool_options po;
    eb_pgpool_options_default(&po);
    po.conninfo = db_url;
    po.connections = 2;
    po.application_name = "embroker-bench-search";
    pool = loop ? eb_pgpool_new(loop, &po, err, sizeof err) : NULL;
    eb_search_options so;
    eb_search_options_default(&so);
    so.image_dims = p.img;
    so.text_dims = p.txt;
    so.ef_search = p.ef_search;
    search = pool ? eb_search_new(pool, &so, err, sizeof err) : NULL;
    if (!search) {
        fprintf(stderr, "bench search: %s\n", err);
        goto out;
    }
    /* The unfiltered statement: eb_search's SELECT with the template predicate made inert. */
    const char *sel = eb_search_select_sql(search);
    const char *pred = "\"BusinessTemplate\" = $2::text";
    const char *at = strstr(sel, pred);
    char unfiltered[1400];
    if (!at) {
        fprintf(stderr, "bench search: eb_search's SELECT has no template predicate: %s\n", sel);
        goto out;
    }
    snprintf(unfiltered, sizeof unfiltered, "%.*s$2::text IS NOT NULL%s", (int)(at - sel), sel,
             at + strlen(pred));
    if (eb_pgpool_add_statement(pool, STMT_UNFILTERED, unfiltered) != EB_OK ||
        eb_pgpool_start(pool) != EB_OK)
        goto out;
    if (p.steered) {
        po.setup_sql = STEER_HNSW;
        po.connections = 1;
        steer_pool = eb_pgpool_new(loop, &po, err, sizeof err);
        steer_search = steer_pool ? eb_search_new(steer_pool, &so, err, sizeof err) : NULL;
        if (!steer_search || eb_pgpool_start(steer_pool) != EB_OK) {
            fprintf(stderr, "bench search: steered pool: %s\n", err);
            goto out;
        }
    }
    int64_t up_by = eb_now_us() + 10000000;
    while ((!eb_pgpool_is_up(pool) || (steer_pool && !eb_pgpool_is_up(steer_pool))) &&
           eb_now_us() < up_by)
        eb_loop_run_once(loop, 10000);
    if (!eb_pgpool_is_up(pool) || (steer_pool && !eb_pgpool_is_up(steer_pool))) {
        fprintf(stderr, "bench search: the pool did not connect to %s\n", db_url);
        goto out;
    }

    const char *mode_names[F_COUNT] = {"unfiltered", "filtered", "filtered, HNSW steered"};
    for (int t = 0; t < QT_COUNT; t++) {
        for (int f = 0; f < F_COUNT; f++) {
            if (f == F_TEMPLATE_HNSW && !steer_search)
                continue;
            cell_result *c = &cells[t][f];
            eb_search *via = f == F_TEMPLATE_HNSW ? steer_search : search;
            int filtered = f != F_NONE;
            wait_result w;
            for (uint32_t i = qs.n; i < qs.total; i++) /* warm-up queries, not measured */
                run_one(loop, pool, via, &p, qs.vec + ((size_t)t * qs.total + i) * p.cd, filtered,
                        qs.tmpl[(size_t)t * qs.total + i], &w);
            for (uint32_t i = 0; i < qs.n; i++) {
                const float *vec = qs.vec + ((size_t)t * qs.total + i) * p.cd;
                int64_t us = run_one(loop, pool, via, &p, vec, filtered,
                                     qs.tmpl[(size_t)t * qs.total + i], &w);
                if (us < 0) {
                    if (c->latency.errors++ < 3)
                        fprintf(stderr, "bench search: %s\n", w.error);
                    continue;
                }
                eb_samples_add(&c->latency, us);
                size_t cell = ((size_t)t * 2 + (size_t)filtered) * qs.n + i;
                score_answer(&p, &d, vec, qs.truth + cell * p.k, qs.kth[cell], &w, c);
            }
            fprintf(stderr, "bench search: %s %s: %u queries, recall %.3f\n", qt_names[t],
                    mode_names[f], c->scored, c->scored ? c->recall_sum / c->scored : NAN);
        }
    }

    /* Cross-checks on a plain connection: plans, and PostgreSQL's exact scan. */
    check = PQconnectdb(db_url);
    char plan_f[400] = "", plan_u[400] = "", plan_s[400] = "";
    bool hnsw_f = false, hnsw_u = false, hnsw_s = false;
    int agree[QT_COUNT][2] = {{0}};
    int verified = p.verify < (int)qs.n ? p.verify : (int)qs.n;
    if (PQstatus(check) == CONNECTION_OK) {
        char tpl[32];
        snprintf(tpl, sizeof tpl, "tpl-%02u", qs.tmpl[0]);
        hnsw_f = explain_plan(check, sel, &p, qs.vec, tpl, plan_f, sizeof plan_f);
        hnsw_u = explain_plan(check, unfiltered, &p, qs.vec, "any", plan_u, sizeof plan_u);
        if (steer_search && exec_ok(check, STEER_HNSW) == 0) {
            hnsw_s = explain_plan(check, sel, &p, qs.vec, tpl, plan_s, sizeof plan_s);
            exec_ok(check, "RESET ALL");
        }
        for (int t = 0; t < QT_COUNT; t++)
            for (int f = 0; f < 2; f++)
                agree[t][f] = verify_exact(check, &p, &d, &qs, t, f, verified);
    }

    nrows = 0;
    int agree_total = 0;
    for (int t = 0; t < QT_COUNT; t++) {
        for (int f = 0; f < F_COUNT; f++) {
            if (f == F_TEMPLATE_HNSW && !steer_search)
                continue;
            cell_result *c = &cells[t][f];
            char label[96];
            if (f == F_NONE)
                snprintf(label, sizeof label, "%s, no filter", qt_names[t]);
            else
                snprintf(label, sizeof label, "%s, 1/%u templates%s", qt_names[t], p.templates,
                         f == F_TEMPLATE_HNSW ? ", HNSW steered" : "");
            eb_row *r = &rows[nrows++];
            eb_row_init(r, label);
            eb_summary s;
            eb_samples_summarise(&c->latency, &s);
            eb_row_add(r, "n", (double)s.n);
            eb_row_add(r, "errors", (double)s.errors);
            eb_row_add(r, "recall_at_k", c->scored ? c->recall_sum / c->scored : NAN);
            eb_row_add(r, "recall_ids", c->scored ? c->recall_ids_sum / c->scored : NAN);
            eb_row_add(r, "recall_min", c->scored ? c->recall_min : NAN);
            eb_row_add(r, "short_answers", (double)c->short_answers);
            eb_row_add(r, "p50_us", s.p50_us);
            eb_row_add(r, "p90_us", s.p90_us);
            eb_row_add(r, "p99_us", s.p99_us < 0 ? NAN : s.p99_us);
            eb_row_add(r, "max_us", s.max_us);
            eb_row_add(r, "pg_exact_agree", f == F_TEMPLATE_HNSW ? NAN : (double)agree[t][f]);
            agree_total += f == F_TEMPLATE_HNSW ? 0 : agree[t][f];
            eb_samples_free(&c->latency);
        }
    }
    double total_s = (double)(eb_now_us() - start) / 1e6;
    snprintf(notes, notes_len,
             "%u synthetic rows (%u clusters, spread 0.4-0.9; %d%% without text) in %u templates "
             "(~%.0f%% each), combined %u = %u image + %u text (w_img %.2f, w_txt %.2f), %s "
             "HNSW m=%d ef_construction=%d, %d parallel build worker(s), maintenance_work_mem "
             "%s; pgvector %s, shared_buffers %s. Binary COPY %.1f s, index build %.1f s "
             "(index %.0f MB, table %.0f MB), ANALYZE %.1f s; data generation %.1f s, exact "
             "top-%u by sgemm %.1f s; whole run %.0f s. Searches: one at a time through "
             "eb_pgpool + eb_search (iterative scan relaxed_order, ef_search %u), k=%u, %u "
             "measured queries per row after %u warm-up ones; p99 only with >= 1,000 samples. "
             "recall_at_k: returned rows whose exact score reaches the exact k-th score "
             "(slack %.0e), mean over queries; recall_ids: strict id-set overlap; recall_min: "
             "worst query; short_answers: queries with fewer than k rows. no filter = "
             "eb_search's SELECT without the template predicate (same job shape). "
             "pg_exact_agree: of %d queries per row run through PostgreSQL's exact scan "
             "(enable_indexscan off), how many matched the sgemm ground truth (%d of %d in "
             "all). Plans (EXPLAIN, custom plan): filtered %s [%s]; unfiltered %s [%s]; steered %s "
             "[%s]. HNSW steered = the filtered search on a pool whose connections run \"%s\" "
             "(not what the broker does: shows what iterative scan gives when the index is used).",
             p.rows, p.clusters, p.text_missing_pct, p.templates, 100.0 / p.templates, p.cd, p.img,
             p.txt, p.w_img, p.w_txt, halfvec ? "halfvec" : "vector", p.m, p.ef_construction,
             p.build_workers, p.maintenance_work_mem, fig.pgvector, fig.shared_buffers, fig.copy_s,
             fig.index_s, fig.index_mb, fig.table_mb, fig.analyze_s, fig.gen_s, p.k, fig.truth_s,
             total_s, p.ef_search, p.k, qs.n, p.warmup, SCORE_SLACK, verified, agree_total,
             verified * QT_COUNT * 2,
             hnsw_f ? "uses the HNSW index" : "does NOT use the HNSW index", plan_f,
             hnsw_u ? "uses the HNSW index" : "does NOT use the HNSW index", plan_u,
             hnsw_s ? "uses the HNSW index" : "does NOT use the HNSW index", plan_s, STEER_HNSW);
    char path[1200];
    mkdir(out_dir, 0755);
    snprintf(path, sizeof path, "%s/%s.json", out_dir, name);
    write_json(path, &p, &fig, rows, nrows, total_s);
out:
    PQfinish(check);
    eb_search_destroy(&search);
    eb_pgpool_destroy(&pool);
    eb_search_destroy(&steer_search);
    eb_pgpool_destroy(&steer_pool);
    eb_loop_destroy(&loop);
    dataset_free(&d);
    query_set_free(&qs);
    if (!p.keep_db) {
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
        exec_ok(admin, sql);
    } else {
        fprintf(stderr, "bench search: database kept: %s\n", db_url);
    }
    PQfinish(admin);
    return nrows;
}
