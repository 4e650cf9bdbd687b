/* eb_bench_scan — the quick scan measured end to end, the way a user sees it.
 *
 * Everything is real: embrokerd with its PostgreSQL pool, Redis cache and store spool, one
 * embroker-worker process, clients through the C API with inputs in shared memory. The only
 * trick is how a cache miss is forced without changing the work: every cache-miss scan sends
 * the same JPEG with a different comment segment (FF FE) after the start-of-image marker, so
 * the content hash differs while the decoded pixels, and so the worker's work, are identical.
 *
 * Stage columns come from the reply's timings (per request, the broker's and worker's own
 * clocks): model loading = the time the scan waited in the queue before a worker took it when
 * the worker was just started (0 for a warm worker), search = the pgvector search, total =
 * submit to reply on the client's clock, and embedding = what is left of the total once model
 * loading, search and cache lookup are taken out. Embedding is measured as a remainder on
 * purpose: a worker takes several items at once (batches, and credit for more), so a scan's
 * wait inside the worker appears in no stage of its own, yet it is part of getting the
 * embedding. Each column is the median of that stage over the row's requests, so the columns
 * need not add up.
 */
#include "eb_bench_scan.h"

#include "eb_bench_cluster.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "eb_clock.h"
#include "eb_migrate.h"
#include "embroker.h"

#define MAX_PRODUCTS 4096

typedef struct scan_params {
    const char *catalogue, *file, *siglip_dir, *worker_args, *pg_url, *redis_url, *template_name;
    uint32_t image_dim, text_dim, k;
    int cold, requests, hits, during, backfill_in_flight;
    long concurrency[4];
    int n_concurrency;
} scan_params;

typedef struct bench_procs {
    const char *bin_dir, *run_dir;
    char log[1100], db_url[1024];
    pid_t broker, worker;
} bench_procs;

/* Stage samples of one row. */
typedef struct stage_set {
    eb_samples total, loading, embedding, search, queue, infer, cache;
    uint64_t hits, misses, search_errors;
} stage_set;

/* ---- small helpers ---------------------------------------------------------------------- */

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    uint8_t *b = n > 0 ? malloc((size_t)n) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = b ? (size_t)n : 0;
    return b;
}

/* A copy of a JPEG with a comment segment carrying `nonce` right after SOI: other bytes, same
 * pixels. Caller frees. NULL when jpeg is not a JPEG. */
static uint8_t *jpeg_with_nonce(const uint8_t *jpeg, size_t len, uint64_t nonce, size_t *out_len)
{
    if (len < 4 || jpeg[0] != 0xff || jpeg[1] != 0xd8)
        return NULL;
    char text[48];
    int n = snprintf(text, sizeof text, "embroker-bench %016llx", (unsigned long long)nonce);
    size_t seg = 4 + (size_t)n;
    uint8_t *b = malloc(len + seg);
    if (!b)
        return NULL;
    b[0] = 0xff;
    b[1] = 0xd8;
    b[2] = 0xff;
    b[3] = 0xfe;
    b[4] = (uint8_t)((n + 2) >> 8);
    b[5] = (uint8_t)(n + 2);
    memcpy(b + 6, text, (size_t)n);
    memcpy(b + 6 + n, jpeg + 2, len - 2);
    *out_len = len + seg;
    return b;
}

static int start_worker(bench_procs *pr, const scan_params *p)
{
    char worker[1100];
    snprintf(worker, sizeof worker, "%s/embroker-worker", pr->bin_dir);
    char *argv[40] = {worker,   "--run-dir",    (char *)pr->run_dir,   "--models",
                      "siglip", "--siglip-dir", (char *)p->siglip_dir, "--log-level",
                      "warn"};
    int argc = 9;
    char extra[512];
    snprintf(extra, sizeof extra, "%s", p->worker_args);
    for (char *tok = strtok(extra, " "); tok && argc < 39; tok = strtok(NULL, " "))
        argv[argc++] = tok;
    argv[argc] = NULL;
    pr->worker = eb_cluster_spawn(argv, pr->log);
    return pr->worker > 0 ? 0 : -1;
}

static int start_broker(bench_procs *pr, const scan_params *p)
{
    char broker[1100];
    snprintf(broker, sizeof broker, "%s/embrokerd", pr->bin_dir);
    char *argv[24] = {broker,     "--run-dir",   (char *)pr->run_dir,
                      "--db-url", pr->db_url,    "--scan-image-model",
                      "siglip",   "--log-level", "warn"};
    int argc = 9;
    if (p->redis_url && *p->redis_url) {
        argv[argc++] = "--cache-url";
        argv[argc++] = (char *)p->redis_url;
    }
    argv[argc] = NULL;
    pr->broker = eb_cluster_spawn(argv, pr->log);
    return pr->broker > 0 ? 0 : -1;
}

static embroker_t *connect_client(const bench_procs *pr, int timeout_ms)
{
    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.run_dir = pr->run_dir;
    opt.timeout_ms = timeout_ms;
    embroker_t *eb = NULL;
    char err[512];
    for (int attempt = 0; attempt < 100; attempt++) {
        if (embroker_connect(&opt, &eb, err, sizeof err) == EB_OK)
            return eb;
        eb_sleep_us(100000);
    }
    fprintf(stderr, "bench scan: cannot connect to the broker: %s\n", err);
    return NULL;
}

static void stage_set_free(stage_set *s)
{
    eb_samples_free(&s->total);
    eb_samples_free(&s->loading);
    eb_samples_free(&s->embedding);
    eb_samples_free(&s->search);
    eb_samples_free(&s->queue);
    eb_samples_free(&s->infer);
    eb_samples_free(&s->cache);
}

static void stage_set_merge(stage_set *into, stage_set *from)
{
    eb_samples_merge(&into->total, &from->total);
    eb_samples_merge(&into->loading, &from->loading);
    eb_samples_merge(&into->embedding, &from->embedding);
    eb_samples_merge(&into->search, &from->search);
    eb_samples_merge(&into->queue, &from->queue);
    eb_samples_merge(&into->infer, &from->infer);
    eb_samples_merge(&into->cache, &from->cache);
    into->hits += from->hits;
    into->misses += from->misses;
    into->search_errors += from->search_errors;
}

static int64_t nonneg(int64_t v)
{
    return v > 0 ? v : 0;
}

/* Record one finished scan into s; `cold`: its queue wait was the model loading. Returns 0 when
 * the scan succeeded with a search. */
static int record_scan(stage_set *s, embroker_request_t *req, eb_status st, int64_t wall_us,
                       bool cold)
{
    if (st != EB_OK || !req || embroker_request_status(req) != EB_OK) {
        if (s->total.errors++ < 3)
            fprintf(stderr, "bench scan: scan failed: %s %s\n", eb_status_str(st),
                    req ? embroker_request_error(req) : "");
        return -1;
    }
    const char *msg = NULL;
    if (embroker_request_search_error(req, &msg) != EB_OK) {
        if (s->search_errors++ < 3)
            fprintf(stderr, "bench scan: answered without search: %s\n", msg ? msg : "");
    }
    const embroker_timings_t *t = embroker_request_timings(req);
    const embroker_result_t *r = embroker_request_result(req, 0);
    bool cached = r && r->cached;
    cached ? s->hits++ : s->misses++;
    int64_t loading = cold ? nonneg(t->queue_us) : 0;
    eb_samples_add(&s->total, wall_us);
    eb_samples_add(&s->loading, loading);
    eb_samples_add(&s->queue, cold ? 0 : nonneg(t->queue_us));
    /* Everything the scan spent getting its embedding: hashing, transport, waiting for and in
     * the worker (a batch, or work it had already taken), decode, preprocess, forward. */
    eb_samples_add(&s->embedding,
                   cached ? 0
                          : nonneg(wall_us - loading - nonneg(t->search_us) - nonneg(t->cache_us)));
    eb_samples_add(&s->infer, cached ? 0 : nonneg(t->infer_us));
    eb_samples_add(&s->search, nonneg(t->search_us));
    eb_samples_add(&s->cache, nonneg(t->cache_us));
    return 0;
}

/* One scan of `bytes`, blocking. */
static int scan_once(embroker_t *eb, const scan_params *p, const uint8_t *bytes, size_t len,
                     stage_set *s, bool cold)
{
    embroker_input_t in = {
        .kind = EMBROKER_INPUT_IMAGE, .format = EMBROKER_FORMAT_AUTO, .bytes = bytes, .len = len};
    embroker_scan_options_t o;
    embroker_scan_options_default(&o);
    o.k = p->k;
    o.template_name = p->template_name;
    embroker_request_t *req = NULL;
    int64_t t0 = eb_now_us();
    eb_status st = embroker_scan(eb, &in, NULL, &o, &req);
    int64_t t1 = eb_now_us();
    int rc = record_scan(s, req, st, t1 - t0, cold);
    embroker_request_free(&req);
    return rc;
}

/* ---- closed-loop scan clients ----------------------------------------------------------- */

typedef struct scan_client {
    const bench_procs *pr;
    const scan_params *p;
    const uint8_t *jpeg;
    size_t jpeg_len;
    int requests;
    bool same_bytes; /* cache hits: the same bytes every time */
    uint64_t nonce0;
    stage_set stages;
    pthread_barrier_t *start;
} scan_client;

static void *scan_client_run(void *arg)
{
    scan_client *c = arg;
    embroker_t *eb = connect_client(c->pr, 120000);
    pthread_barrier_wait(c->start);
    if (!eb) {
        c->stages.total.errors += c->requests;
        return NULL;
    }
    for (int i = 0; i < c->requests; i++) {
        size_t len = c->jpeg_len;
        uint8_t *bytes = c->same_bytes
                             ? NULL
                             : jpeg_with_nonce(c->jpeg, c->jpeg_len, c->nonce0 + (uint64_t)i, &len);
        scan_once(eb, c->p, bytes ? bytes : c->jpeg, len, &c->stages, false);
        free(bytes);
    }
    embroker_close(&eb);
    return NULL;
}

/* `clients` closed-loop clients, `total` scans split among them; merged into out. */
static double run_scan_clients(const bench_procs *pr, const scan_params *p, const uint8_t *jpeg,
                               size_t jpeg_len, int clients, int total, bool same_bytes,
                               uint64_t nonce0, stage_set *out)
{
    scan_client *cs = calloc((size_t)clients, sizeof *cs);
    pthread_t *th = calloc((size_t)clients, sizeof *th);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)clients + 1);
    for (int i = 0; i < clients; i++) {
        cs[i] = (scan_client){.pr = pr,
                              .p = p,
                              .jpeg = jpeg,
                              .jpeg_len = jpeg_len,
                              .requests = total / clients + (i < total % clients),
                              .same_bytes = same_bytes,
                              .nonce0 = nonce0 + (uint64_t)i * 1000000u,
                              .start = &start};
        pthread_create(&th[i], NULL, scan_client_run, &cs[i]);
    }
    pthread_barrier_wait(&start);
    int64_t t0 = eb_now_us();
    for (int i = 0; i < clients; i++)
        pthread_join(th[i], NULL);
    double wall = (double)(eb_now_us() - t0) / 1e6;
    for (int i = 0; i < clients; i++) {
        stage_set_merge(out, &cs[i].stages);
    }
    pthread_barrier_destroy(&start);
    free(cs);
    free(th);
    return wall;
}

/* ---- the catalogue and the background backfill ------------------------------------------ */

typedef struct product {
    char id[128];
    char template_name[64];
    char path[1024];
} product;

/* Products of <catalogue>/products-images-only.jsonl (product_id, template, image relative to
 * the catalogue). Returns how many, or -1. */
static int read_catalogue(const char *dir, product *out, int max)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/products-images-only.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "bench scan: cannot open %s (run scripts/make-demo-catalogue %s)\n", path,
                dir);
        return -1;
    }
    char line[4096];
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "product_id");
        const cJSON *tp = cJSON_GetObjectItemCaseSensitive(j, "template");
        const cJSON *im = cJSON_GetObjectItemCaseSensitive(j, "image");
        if (cJSON_IsString(id) && cJSON_IsString(tp) && cJSON_IsString(im)) {
            snprintf(out[n].id, sizeof out[n].id, "%s", id->valuestring);
            snprintf(out[n].template_name, sizeof out[n].template_name, "%s", tp->valuestring);
            snprintf(out[n].path, sizeof out[n].path, "%s/%s", dir, im->valuestring);
            n++;
        }
        cJSON_Delete(j);
    }
    fclose(f);
    return n;
}

typedef struct backfill_job {
    const bench_procs *pr;
    const product *products;
    int n_products;
    const char *template_name;
    const char *id_prefix; /* product ids: prefix + product id (+ round) */
    int in_flight;
    int rounds; /* times through the catalogue; 0 = until *stop */
    volatile int *stop;
    uint64_t nonce0; /* 0: send the files as they are; else unique bytes per store */
    uint64_t done, failed;
    double seconds;
} backfill_job;

/* Stores in the bulk class with `in_flight` requests outstanding. */
static void *backfill_run(void *arg)
{
    backfill_job *b = arg;
    embroker_t *eb = connect_client(b->pr, 300000);
    if (!eb)
        return NULL;
    embroker_request_t **pending = calloc((size_t)b->in_flight, sizeof *pending);
    int64_t t0 = eb_now_us();
    uint64_t next = 0, total = b->rounds > 0 ? (uint64_t)b->rounds * (uint64_t)b->n_products : 0;
    int outstanding = 0;
    for (;;) {
        bool more = total ? next < total : !*b->stop;
        while (more && outstanding < b->in_flight) {
            const product *pd = &b->products[next % (uint64_t)b->n_products];
            size_t len = 0;
            uint8_t *file = read_file(pd->path, &len);
            size_t blen = len;
            uint8_t *bytes =
                file && b->nonce0 ? jpeg_with_nonce(file, len, b->nonce0 + next, &blen) : NULL;
            if (b->nonce0 && !bytes) { /* not a JPEG: it could not be made new, skip it */
                free(file);
                next++;
                more = total ? next < total : !*b->stop;
                continue;
            }
            char id[200];
            if (b->rounds == 1)
                snprintf(id, sizeof id, "%s%s", b->id_prefix, pd->id);
            else
                snprintf(id, sizeof id, "%s%s-%llu", b->id_prefix, pd->id,
                         (unsigned long long)(next / (uint64_t)b->n_products));
            embroker_input_t in = {.kind = EMBROKER_INPUT_IMAGE,
                                   .format = EMBROKER_FORMAT_AUTO,
                                   .bytes = bytes ? bytes : file,
                                   .len = bytes ? blen : len};
            embroker_scan_options_t o;
            embroker_scan_options_default(&o);
            o.template_name = b->template_name ? b->template_name : pd->template_name;
            o.product_id = id;
            o.bulk = true;
            embroker_request_t *req = NULL;
            char err[256];
            int slot = 0;
            while (pending[slot])
                slot++;
            if (file && embroker_submit_store(eb, &in, NULL, &o, &req, err, sizeof err) == EB_OK) {
                pending[slot] = req;
                outstanding++;
            } else {
                b->failed++;
            }
            free(file);
            free(bytes);
            next++;
            more = total ? next < total : !*b->stop;
        }
        if (outstanding == 0)
            break;
        embroker_request_t *done = NULL;
        if (embroker_poll(eb, &done, 1000) == EB_OK && done) {
            for (int i = 0; i < b->in_flight; i++)
                if (pending[i] == done)
                    pending[i] = NULL;
            outstanding--;
            if (embroker_request_status(done) == EB_OK)
                b->done++;
            else if (b->failed++ < 3)
                fprintf(stderr, "bench scan: store failed: %s\n", embroker_request_error(done));
            embroker_request_free(&done);
        }
    }
    b->seconds = (double)(eb_now_us() - t0) / 1e6;
    free(pending);
    embroker_close(&eb);
    return NULL;
}

/* Rows in the table (blocking libpq), -1 when unreachable. */
static long count_rows(const char *db_url, const char *template_name)
{
    PGconn *pg = PQconnectdb(db_url);
    long n = -1;
    if (PQstatus(pg) == CONNECTION_OK) {
        const char *values[1] = {template_name};
        PGresult *r = PQexecParams(pg,
                                   "SELECT count(*) FROM \"ProductEmbeddings\" WHERE "
                                   "\"BusinessTemplate\" = $1",
                                   1, NULL, values, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            n = atol(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    PQfinish(pg);
    return n;
}

/* ---- rows ------------------------------------------------------------------------------- */

static double p50_ms(eb_samples *s)
{
    eb_summary sum;
    eb_samples_summarise(s, &sum);
    return sum.n ? sum.p50_us / 1000.0 : NAN;
}

static void add_row(eb_row *r, const char *label, stage_set *s, double wall_s)
{
    eb_row_init(r, label);
    eb_summary tot;
    eb_samples_summarise(&s->total, &tot);
    eb_row_add(r, "n", (double)tot.n);
    eb_row_add(r, "errors", (double)tot.errors);
    eb_row_add(r, "model_loading_ms", p50_ms(&s->loading));
    eb_row_add(r, "embedding_ms", p50_ms(&s->embedding));
    eb_row_add(r, "search_ms", p50_ms(&s->search));
    eb_row_add(r, "total_p50_ms", tot.n ? tot.p50_us / 1000.0 : NAN);
    eb_row_add(r, "total_p90_ms", tot.n ? tot.p90_us / 1000.0 : NAN);
    eb_row_add(r, "total_p99_ms", tot.p99_us < 0 ? NAN : tot.p99_us / 1000.0);
    eb_row_add(r, "queue_ms", p50_ms(&s->queue));
    eb_row_add(r, "infer_ms", p50_ms(&s->infer));
    eb_row_add(r, "cache_ms", p50_ms(&s->cache));
    eb_row_add(r, "cache_hits", (double)s->hits);
    eb_row_add(r, "scans_per_s", wall_s > 0 ? (double)tot.n / wall_s : NAN);
    stage_set_free(s);
}

/* ---- entry ------------------------------------------------------------------------------ */

static int read_scan_params(const eb_config *cfg, scan_params *p)
{
    p->catalogue = eb_config_get(cfg, "catalogue", "var/demo-catalogue");
    static char file_default[1200];
    snprintf(file_default, sizeof file_default, "%s/queries/coffee.jpg", p->catalogue);
    p->file = eb_config_get(cfg, "file", file_default);
    p->siglip_dir = eb_config_get(cfg, "siglip_dir", "var/models/siglip-base-patch16-224");
    p->worker_args = eb_config_get(cfg, "worker_args", "");
    p->pg_url = eb_config_get(cfg, "pg_url", getenv("EMBROKER_PG_URL"));
    p->redis_url = eb_config_get(cfg, "redis_url", getenv("EMBROKER_REDIS_URL"));
    p->template_name = eb_config_get(cfg, "template", "demo");
    p->image_dim = (uint32_t)atoi(eb_config_get(cfg, "image_dim", "768"));
    p->text_dim = (uint32_t)atoi(eb_config_get(cfg, "text_dim", "1024"));
    p->k = (uint32_t)atoi(eb_config_get(cfg, "k", "10"));
    p->cold = atoi(eb_config_get(cfg, "cold", "3"));
    p->requests = atoi(eb_config_get(cfg, "requests", "100"));
    p->hits = atoi(eb_config_get(cfg, "hits", "1000"));
    p->during = atoi(eb_config_get(cfg, "during", "20"));
    p->backfill_in_flight = atoi(eb_config_get(cfg, "backfill_in_flight", "8"));
    const char *conc = eb_config_get(cfg, "concurrency", "1,8");
    p->n_concurrency = 0;
    for (const char *s = conc; s && *s && p->n_concurrency < 4;) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s)
            break;
        if (v > 0 && v <= 256)
            p->concurrency[p->n_concurrency++] = v;
        s = *end == ',' ? end + 1 : end;
    }
    if (!p->pg_url || !*p->pg_url) {
        fprintf(stderr, "bench scan: no PostgreSQL: pass --pg-url or set EMBROKER_PG_URL "
                        "(eval \"$(scripts/services start --export)\")\n");
        return -1;
    }
    if (p->n_concurrency == 0 || p->k == 0 || p->cold < 1 || p->requests < 1 ||
        p->backfill_in_flight < 1 || p->backfill_in_flight > 256) {
        fprintf(stderr, "bench scan: bad parameters\n");
        return -1;
    }
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

int eb_bench_scan(const eb_config *cfg, const char *bin_dir, const char *run_dir, eb_row *rows,
                  int max_rows, char *notes, size_t notes_len)
{
    scan_params p;
    if (read_scan_params(cfg, &p) != 0)
        return -1;
    if (max_rows < 4 + 2 * p.n_concurrency) {
        fprintf(stderr, "bench scan: room for %d rows, %d needed\n", max_rows,
                4 + 2 * p.n_concurrency);
        return -1;
    }
    bench_procs pr = {.bin_dir = bin_dir, .run_dir = run_dir};
    snprintf(pr.log, sizeof pr.log, "%s/scan-bench.log", run_dir);
    int nrows = -1;
    size_t jpeg_len = 0;
    uint8_t *jpeg = read_file(p.file, &jpeg_len);
    product *products = calloc(MAX_PRODUCTS, sizeof *products);
    int n_products = products ? read_catalogue(p.catalogue, products, MAX_PRODUCTS) : -1;
    embroker_t *eb = NULL;
    PGconn *admin = NULL;
    char db[64], sql[160], err[1024] = "";
    snprintf(db, sizeof db, "eb_bench_scan_%d", (int)getpid());
    bool db_created = false;
    if (!jpeg || jpeg_len < 4 || jpeg[0] != 0xff || jpeg[1] != 0xd8) {
        fprintf(stderr, "bench scan: %s is not a readable JPEG (--file)\n", p.file);
        goto out;
    }
    if (n_products <= 0)
        goto out;

    admin = PQconnectdb(p.pg_url);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", db);
    PGresult *r = PQexec(admin, sql);
    db_created = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!db_created)
        fprintf(stderr, "bench scan: %s: %s", sql, PQerrorMessage(admin));
    PQclear(r);
    if (!db_created)
        goto out;
    url_with_db(p.pg_url, db, pr.db_url, sizeof pr.db_url);
    if (eb_migrate_run_dir(pr.db_url, eb_migrate_sql_dir(), p.image_dim, p.text_dim, NULL, err,
                           sizeof err) != EB_OK) {
        fprintf(stderr, "bench scan: migrate: %s\n", err);
        goto out;
    }
    if (start_broker(&pr, &p) != 0 || !(eb = connect_client(&pr, 180000)))
        goto out;
    uint64_t nonce = ((uint64_t)getpid() << 40) ^ (uint64_t)eb_wall_us();

    /* The catalogue, through the broker in the bulk class, by a first worker (not timed). */
    if (start_worker(&pr, &p) != 0)
        goto out;
    backfill_job load = {.pr = &pr,
                         .products = products,
                         .n_products = n_products,
                         .id_prefix = "",
                         .in_flight = 8,
                         .rounds = 1};
    backfill_run(&load);
    long stored = 0;
    for (int i = 0; i < 200 && stored < n_products; i++) {
        stored = count_rows(pr.db_url, p.template_name);
        if (stored < n_products)
            eb_sleep_us(50000);
    }
    fprintf(stderr,
            "bench scan: catalogue: %llu stores acknowledged in %.1f s, %ld rows in "
            "template \"%s\"\n",
            (unsigned long long)load.done, load.seconds, stored, p.template_name);
    eb_cluster_stop_pid(&pr.worker);

    /* Cold starts: a fresh worker each time; the scan waits in the queue while it loads. */
    stage_set cold = {0};
    double cold_ms[16] = {0};
    int n_cold = p.cold < 16 ? p.cold : 16;
    for (int i = 0; i < n_cold; i++) {
        if (start_worker(&pr, &p) != 0)
            goto out;
        size_t len = 0;
        uint8_t *bytes = jpeg_with_nonce(jpeg, jpeg_len, nonce++, &len);
        int64_t t0 = eb_now_us();
        int rc = scan_once(eb, &p, bytes, len, &cold, true);
        cold_ms[i] = (double)(eb_now_us() - t0) / 1000.0;
        free(bytes);
        if (rc != 0) {
            fprintf(stderr, "bench scan: the first scan after a worker start failed (log: %s)\n",
                    pr.log);
            goto out;
        }
        fprintf(stderr, "bench scan: cold start %d: %.0f ms to the first scan\n", i + 1,
                cold_ms[i]);
        if (i + 1 < n_cold)
            eb_cluster_stop_pid(&pr.worker);
    }

    stage_set warm = {0};
    for (int i = 0; i < 3; i++) { /* warm-up, not recorded */
        size_t len = 0;
        uint8_t *bytes = jpeg_with_nonce(jpeg, jpeg_len, nonce++, &len);
        scan_once(eb, &p, bytes, len, &warm, false);
        free(bytes);
    }
    stage_set_free(&warm);

    nrows = 0;
    add_row(&rows[nrows++], "cold start: new worker, first scan", &cold, 0);
    for (int c = 0; c < p.n_concurrency; c++) {
        stage_set s = {0};
        int clients = (int)p.concurrency[c];
        double wall =
            run_scan_clients(&pr, &p, jpeg, jpeg_len, clients, p.requests, false, nonce, &s);
        nonce += 100000000u;
        char label[96];
        snprintf(label, sizeof label, "scan, cache miss, %d client%s", clients,
                 clients > 1 ? "s" : "");
        fprintf(stderr, "bench scan: %s done in %.1f s\n", label, wall);
        add_row(&rows[nrows++], label, &s, wall);
    }
    /* Cache hits: the same bytes as a scan already answered. */
    size_t hit_len = 0;
    uint8_t *hit_bytes = jpeg_with_nonce(jpeg, jpeg_len, nonce++, &hit_len);
    stage_set prime = {0};
    scan_once(eb, &p, hit_bytes, hit_len, &prime, false);
    stage_set_free(&prime);
    for (int c = 0; c < p.n_concurrency && p.hits > 0; c++) {
        stage_set s = {0};
        int clients = (int)p.concurrency[c];
        double wall = run_scan_clients(&pr, &p, hit_bytes, hit_len, clients, p.hits, true, 0, &s);
        char label[96];
        snprintf(label, sizeof label, "scan, cache hit, %d client%s", clients,
                 clients > 1 ? "s" : "");
        add_row(&rows[nrows++], label, &s, wall);
    }
    free(hit_bytes);

    /* Scans while a backfill keeps the bulk class busy. */
    volatile int stop = 0;
    backfill_job bg = {.pr = &pr,
                       .products = products,
                       .n_products = n_products,
                       .template_name = "bulk-bench",
                       .id_prefix = "bulk-",
                       .in_flight = p.backfill_in_flight,
                       .rounds = 0,
                       .stop = &stop,
                       .nonce0 = nonce + 50000000u};
    pthread_t bg_thread;
    double bg_rate = NAN, during_wall = 0;
    if (p.during > 0 && pthread_create(&bg_thread, NULL, backfill_run, &bg) == 0) {
        eb_sleep_us(3000000); /* let the bulk queue fill and the worker settle into it */
        stage_set s = {0};
        during_wall = run_scan_clients(&pr, &p, jpeg, jpeg_len, 1, p.during, false, nonce, &s);
        nonce += 100000000u;
        stop = 1;
        pthread_join(bg_thread, NULL);
        bg_rate = bg.seconds > 0 ? (double)bg.done / bg.seconds : NAN;
        add_row(&rows[nrows++], "scan, cache miss, 1 client, during bulk backfill", &s,
                during_wall);
        eb_row *br = &rows[nrows++];
        eb_row_init(br, "the bulk backfill meanwhile (stores)");
        eb_row_add(br, "n", (double)bg.done);
        eb_row_add(br, "errors", (double)bg.failed);
        static const char *const blank[] = {
            "model_loading_ms", "embedding_ms", "search_ms", "total_p50_ms", "total_p90_ms",
            "total_p99_ms",     "queue_ms",     "infer_ms",  "cache_ms",     "cache_hits"};
        for (size_t i = 0; i < sizeof blank / sizeof blank[0]; i++)
            eb_row_add(br, blank[i], NAN);      /* same columns as the scan rows */
        eb_row_add(br, "scans_per_s", bg_rate); /* here: stores per second */
    }

    char cold_list[256] = "";
    size_t used = 0;
    for (int i = 0; i < n_cold && used < sizeof cold_list - 16; i++)
        used += (size_t)snprintf(cold_list + used, sizeof cold_list - used, "%s%.0f", i ? ", " : "",
                                 cold_ms[i]);
    snprintf(notes, notes_len,
             "embrokerd (PostgreSQL pool, %s) + one embroker-worker serving siglip from %s %s; "
             "clients through the C API (embroker_scan, inputs in shared memory, client-side "
             "hash), template \"%s\", k=%u. Catalogue: %d products from %s (%ld rows) backfilled "
             "through the broker (bulk stores; embeddings from the Redis cache when an earlier run "
             "stored the same files) in %.1f s. Photo: %s (%zu bytes JPEG); every "
             "cache-miss scan sends it with its own comment segment (same pixels, new hash). "
             "Columns are per-request medians: model loading = the scan's queue wait behind a "
             "just-started worker (0 when warm), embedding = total - model loading - search - "
             "cache (hashing, transport, waiting in or for the worker, decode, preprocess, "
             "forward), search = pgvector search, total = submit to reply on the client's clock "
             "(p90/p99 of it; p99 only with >= 1,000 samples); queue = the broker's queue, "
             "infer = the worker's forward (of the batch the scan was in), cache = Redis lookup. "
             "Cold starts (ms to the first scan answered): %s. During bulk backfill: %d "
             "background stores kept in flight (bulk class, template bulk-bench, the catalogue's "
             "JPEGs each with a new hash), %.2f stores/s completed meanwhile. The search here runs "
             "on a small table; "
             "search cost on 100,000 rows is in search.md.",
             p.redis_url && *p.redis_url ? "Redis cache" : "no cache", p.siglip_dir,
             *p.worker_args ? p.worker_args : "", p.template_name, p.k, n_products, p.catalogue,
             stored, load.seconds, p.file, jpeg_len, cold_list, p.backfill_in_flight, bg_rate);
out:
    embroker_close(&eb);
    eb_cluster_stop_pid(&pr.worker);
    eb_cluster_stop_pid(&pr.broker);
    if (db_created) {
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
        PQclear(PQexec(admin, sql));
    }
    PQfinish(admin);
    free(products);
    free(jpeg);
    return nrows;
}
