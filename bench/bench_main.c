/* embroker-bench — measure the serving path against floors taken in the same run.
 *
 *   embroker-bench roundtrip [--clients 1,8] [--requests 2000] [--rounds 6] [--input-bytes 4096]
 *                            [--out DIR]
 *       identity-model round trips through embrokerd + one embroker-worker (inputs through the
 *       client's shared-memory segment), against the floor: the same four hops through a plain
 *       zmq_proxy relay and an echo worker (bench/eb_bench_floor.c). Closed loop, one request in
 *       flight per client; every client alternates between the two systems in --rounds phases.
 *   embroker-bench transport [--sizes 65536,1048576,6291456,25165824] [--requests 40] [--out DIR]
 *   embroker-bench image --run-dir DIR --file IMAGE [--model siglip] [--requests 1000]
 *       end-to-end latency against a broker + worker that are already running
 *   embroker-bench siglip --siglip-dir DIR [--threads 2] [--batches 1,8,32] [--seconds 10]
 *   embroker-bench qwen3 --qwen3-dir DIR [--threads 2] [--seconds 10]
 *   embroker-bench tokenizer [--tokenizer FILE] [--corpus FILE.jsonl]
 *   embroker-bench search [--rows 100000] [--queries 1000] [--pg-url URL]  (eb_bench_search.h)
 *   embroker-bench scan --catalogue DIR --siglip-dir DIR [--requests 100]  (eb_bench_scan.h)
 *       the models alone, on the CPU (the PyTorch/tokenizers peers run in bench/peers/ with the
 *       same inputs and threads; bench/run puts them side by side)
 *       the same path at growing input sizes, shared memory against inline bytes, with the
 *       worker's hash and copy stages reported on their own.
 *
 *   embroker-bench load [--mode closed|open] [--clients N,..] [--rates R,..] [--op ...] ...
 *   embroker-bench coldwarm --siglip-dir DIR --file IMAGE [--cold-runs 3]
 *       the load generator (closed/open loop, latency from the intended send time) and the
 *       cold-vs-warm table; flags in bench/eb_bench_serving.c
 *
 * The broker and worker are started by the benchmark (binaries from --bin, default the directory
 * of this program) in a private run directory and stopped at the end. Results: a table on
 * stdout, CSV and markdown files in --out (default bench/results/, or $EMBROKER_RESULTS_DIR).
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "eb_bench_cluster.h"
#include "eb_bench_floor.h"
#include "eb_bench_models.h"
#include "eb_bench_scan.h"
#include "eb_bench_search.h"
#include "eb_bench_serving.h"
#include "eb_bench_stats.h"
#include "eb_clock.h"
#include "eb_config.h"
#include "eb_cpu_ops.h"
#include "eb_status.h"
#include "embroker.h"

typedef struct bench_env {
    char bin_dir[1024];
    char run_dir[1024];
    char out_dir[1024];
    pid_t broker_pid, worker_pid;
} bench_env;

/* ---- processes ---------------------------------------------------------------------------- */

/* Start embrokerd and one identity worker; wait until a request succeeds. */
static int start_embroker(bench_env *env, uint32_t max_batch)
{
    char broker[1100], worker[1100], log[1100], batch[32];
    snprintf(broker, sizeof broker, "%s/embrokerd", env->bin_dir);
    snprintf(worker, sizeof worker, "%s/embroker-worker", env->bin_dir);
    snprintf(log, sizeof log, "%s/bench.log", env->run_dir);
    snprintf(batch, sizeof batch, "%u", max_batch);
    char *bargv[] = {broker, "--run-dir", env->run_dir, "--max-input-bytes", "33554432",
                     "--max-message-bytes", "67108864", "--log-level", "warn", NULL};
    env->broker_pid = eb_cluster_spawn(bargv, log);
    char *wargv[] = {worker, "--run-dir", env->run_dir, "--models", "identity",
                     "--identity-max-batch", batch, "--log-level", "warn", NULL};
    env->worker_pid = eb_cluster_spawn(wargv, log);

    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.run_dir = env->run_dir;
    opt.timeout_ms = 2000;
    for (int attempt = 0; attempt < 50; attempt++) {
        embroker_t *eb = NULL;
        char err[512];
        if (embroker_connect(&opt, &eb, err, sizeof err) == EB_OK) {
            embroker_request_t *req = NULL;
            static const uint8_t pixel[3 * 4] = {1, 2, 3};
            eb_status st = embroker_embed_raw_rgb8(eb, "identity", pixel, 2, 2, &req);
            embroker_request_free(&req);
            embroker_close(&eb);
            if (st == EB_OK)
                return 0;
        }
        eb_sleep_us(100000);
    }
    fprintf(stderr, "bench: broker/worker did not start (log: %s)\n", log);
    return -1;
}

static void stop_embroker(bench_env *env)
{
    eb_cluster_stop_pid(&env->worker_pid);
    eb_cluster_stop_pid(&env->broker_pid);
}

/* ---- closed-loop clients ------------------------------------------------------------------ */

typedef struct client_job {
    const bench_env *env;
    int requests;
    size_t input_bytes;
    bool force_inline;
    const char *floor_endpoint; /* non-NULL: talk to the floor relay instead */
    size_t floor_request_bytes;
    eb_samples total, hash, copy, infer, client_copy;
    pthread_barrier_t *start;
} client_job;

static void fill_input(uint8_t *buf, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        buf[i] = (uint8_t)(seed >> 16);
    }
}

/* One identity request of job->input_bytes (whole RGB pixels) through `eb`; its latency and the
 * reply's stage timings go into job's samples. `i` varies the input so that nothing can be served
 * from a cache. */
static void embroker_one(embroker_t *eb, uint8_t *input, int i, client_job *job)
{
    embroker_request_options_t ro = {.force_inline = job->force_inline};
    fill_input(input, job->input_bytes < 64 ? job->input_bytes : 64, (unsigned)i * 7919u + 1);
    /* raw pixels: one row of input_bytes/3 RGB pixels (input_bytes is a multiple of 3) */
    embroker_input_t in = {.kind = EMBROKER_INPUT_RAW_RGB8, .bytes = input,
                           .len = job->input_bytes, .width = (uint32_t)(job->input_bytes / 3),
                           .height = 1};
    embroker_request_t *req = NULL;
    int64_t t0 = eb_now_us();
    eb_status st = embroker_embed(eb, "identity", &in, 1, &ro, &req);
    int64_t t1 = eb_now_us();
    if (st == EB_OK) {
        const embroker_timings_t *t = embroker_request_timings(req);
        eb_samples_add(&job->total, t1 - t0);
        if (t->hash_us >= 0)
            eb_samples_add(&job->hash, t->hash_us);
        if (t->copy_us >= 0)
            eb_samples_add(&job->copy, t->copy_us);
        if (t->infer_us >= 0)
            eb_samples_add(&job->infer, t->infer_us);
        if (t->client_copy_us >= 0)
            eb_samples_add(&job->client_copy, t->client_copy_us);
    } else {
        job->total.errors++;
        if (job->total.errors <= 3)
            fprintf(stderr, "bench client: request failed: %s (%s)\n", eb_status_str(st),
                    req ? embroker_request_error(req) : "");
    }
    embroker_request_free(&req);
}

static void *embroker_client(void *arg)
{
    client_job *job = arg;
    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.run_dir = job->env->run_dir;
    opt.timeout_ms = 30000;
    opt.max_inline_bytes = 32u << 20;
    opt.shm_size = 64u << 20;
    embroker_t *eb = NULL;
    char err[512];
    uint8_t *input = malloc(job->input_bytes);
    if (embroker_connect(&opt, &eb, err, sizeof err) != EB_OK) {
        fprintf(stderr, "bench client: %s\n", err);
        job->total.errors = job->requests;
        pthread_barrier_wait(job->start);
        free(input);
        return NULL;
    }
    pthread_barrier_wait(job->start);
    for (int i = 0; i < job->requests; i++)
        embroker_one(eb, input, i, job);
    embroker_close(&eb);
    free(input);
    return NULL;
}

/* The round-trip comparison's client thread: one floor connection and one embroker connection,
 * used in alternating phases (`rounds` of each, `requests / rounds` requests per phase), so that
 * both systems run under the same machine conditions. On a shared VM the speed drifts by tens of
 * percent within a minute; measuring the floor first and embroker second turned that drift into
 * the ratio (1.36 to 1.71 for the same build), alternating spreads it over both. */
static void free_job(client_job *job);

/* Empty sample sets (the memory they pointed to belongs to someone else now, or to nobody). */
static void samples_reset(client_job *job)
{
    job->total = job->hash = job->copy = job->infer = job->client_copy = (eb_samples){0};
}

/* Move every sample of `from` into `into`. */
static void samples_merge_job(client_job *into, client_job *from)
{
    eb_samples_merge(&into->total, &from->total);
    eb_samples_merge(&into->hash, &from->hash);
    eb_samples_merge(&into->copy, &from->copy);
    eb_samples_merge(&into->infer, &from->infer);
    eb_samples_merge(&into->client_copy, &from->client_copy);
}

typedef struct pair_job {
    client_job floor, embroker; /* settings and samples of each side */
    int rounds;
    pthread_barrier_t *phase;
} pair_job;

static void *pair_client(void *arg)
{
    pair_job *job = arg;
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(s, job->floor.floor_endpoint);
    uint8_t *request = calloc(1, job->floor.floor_request_bytes);
    char reply[65536];
    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.run_dir = job->embroker.env->run_dir;
    opt.timeout_ms = 30000;
    opt.max_inline_bytes = 32u << 20;
    opt.shm_size = 64u << 20;
    embroker_t *eb = NULL;
    char err[512];
    uint8_t *input = malloc(job->embroker.input_bytes);
    bool ok = embroker_connect(&opt, &eb, err, sizeof err) == EB_OK && input && request;
    if (!ok)
        fprintf(stderr, "bench client: %s\n", err);
    /* warm-up on both sides, not recorded */
    client_job scratch = job->embroker;
    samples_reset(&scratch);
    for (int i = 0; ok && i < 50; i++) {
        zmq_send(s, request, job->floor.floor_request_bytes, 0);
        zmq_recv(s, reply, sizeof reply, 0);
        embroker_one(eb, input, -1 - i, &scratch);
    }
    free_job(&scratch);
    int per_round = job->floor.requests / job->rounds;
    pthread_barrier_wait(job->phase);
    for (int r = 0; r < job->rounds; r++) {
        for (int i = 0; i < per_round; i++) {
            if (!ok) {
                job->floor.total.errors++;
                continue;
            }
            int64_t t0 = eb_now_us();
            zmq_send(s, request, job->floor.floor_request_bytes, 0);
            int n = zmq_recv(s, reply, sizeof reply, 0);
            int64_t t1 = eb_now_us();
            if (n < 0)
                job->floor.total.errors++;
            else
                eb_samples_add(&job->floor.total, t1 - t0);
        }
        pthread_barrier_wait(job->phase);
        for (int i = 0; i < per_round; i++) {
            if (ok)
                embroker_one(eb, input, r * per_round + i, &job->embroker);
            else
                job->embroker.total.errors++;
        }
        pthread_barrier_wait(job->phase);
    }
    embroker_close(&eb);
    free(input);
    free(request);
    zmq_close(s);
    zmq_ctx_term(ctx);
    return NULL;
}

/* Run `clients` pair_client threads; merge their samples into floor_out and embroker_out and
 * their phases' wall seconds into *floor_wall and *embroker_wall. */
static void run_pairs(int clients, const pair_job *proto, client_job *floor_out,
                      client_job *embroker_out, double *floor_wall, double *embroker_wall)
{
    pair_job *jobs = calloc((size_t)clients, sizeof *jobs);
    pthread_t *threads = calloc((size_t)clients, sizeof *threads);
    pthread_barrier_t phase;
    pthread_barrier_init(&phase, NULL, (unsigned)clients + 1);
    for (int i = 0; i < clients; i++) {
        jobs[i] = *proto;
        samples_reset(&jobs[i].floor);
        samples_reset(&jobs[i].embroker);
        jobs[i].phase = &phase;
        pthread_create(&threads[i], NULL, pair_client, &jobs[i]);
    }
    *floor_wall = *embroker_wall = 0;
    pthread_barrier_wait(&phase);
    for (int r = 0; r < proto->rounds; r++) {
        int64_t t0 = eb_now_us();
        pthread_barrier_wait(&phase);
        int64_t t1 = eb_now_us();
        pthread_barrier_wait(&phase);
        *floor_wall += (double)(t1 - t0) / 1e6;
        *embroker_wall += (double)(eb_now_us() - t1) / 1e6;
    }
    samples_reset(floor_out);
    samples_reset(embroker_out);
    for (int i = 0; i < clients; i++) {
        pthread_join(threads[i], NULL);
        samples_merge_job(floor_out, &jobs[i].floor);
        samples_merge_job(embroker_out, &jobs[i].embroker);
        free_job(&jobs[i].floor);
        free_job(&jobs[i].embroker);
    }
    pthread_barrier_destroy(&phase);
    free(jobs);
    free(threads);
}

/* Run `clients` threads of `fn`; merge their samples into *out; returns wall seconds. */
static double run_clients(int clients, client_job *proto, void *(*fn)(void *), client_job *out)
{
    client_job *jobs = calloc((size_t)clients, sizeof *jobs);
    pthread_t *threads = calloc((size_t)clients, sizeof *threads);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)clients + 1);
    for (int i = 0; i < clients; i++) {
        jobs[i] = *proto;
        samples_reset(&jobs[i]);
        jobs[i].start = &start;
        pthread_create(&threads[i], NULL, fn, &jobs[i]);
    }
    pthread_barrier_wait(&start);
    int64_t t0 = eb_now_us();
    for (int i = 0; i < clients; i++)
        pthread_join(threads[i], NULL);
    double wall = (double)(eb_now_us() - t0) / 1e6;
    samples_reset(out);
    for (int i = 0; i < clients; i++)
        samples_merge_job(out, &jobs[i]);
    pthread_barrier_destroy(&start);
    free(jobs);
    free(threads);
    return wall;
}

static double p50_of(eb_samples *s)
{
    eb_summary sum;
    eb_samples_summarise(s, &sum);
    return sum.n ? sum.p50_us : NAN;
}

static void free_job(client_job *job)
{
    eb_samples_free(&job->total);
    eb_samples_free(&job->hash);
    eb_samples_free(&job->copy);
    eb_samples_free(&job->infer);
    eb_samples_free(&job->client_copy);
}

static void add_latency_cols(eb_row *row, eb_samples *s, double wall)
{
    eb_summary sum;
    eb_samples_summarise(s, &sum);
    eb_row_add(row, "n", (double)sum.n);
    eb_row_add(row, "errors", (double)sum.errors);
    eb_row_add(row, "p50_us", sum.p50_us);
    eb_row_add(row, "p90_us", sum.p90_us);
    eb_row_add(row, "p99_us", sum.p99_us);
    eb_row_add(row, "max_us", sum.max_us);
    eb_row_add(row, "req_per_s", wall > 0 ? (double)sum.n / wall : NAN);
}

/* ---- output --------------------------------------------------------------------------------- */

static void write_results(const bench_env *env, const char *name, const char *title,
                          const eb_row *rows, size_t n, const char *notes)
{
    eb_rows_print_table(stdout, title, rows, n);
    if (notes)
        printf("%s\n", notes);
    char path[1200];
    mkdir(env->out_dir, 0755);
    snprintf(path, sizeof path, "%s/%s.csv", env->out_dir, name);
    FILE *f = fopen(path, "w");
    if (f) {
        eb_rows_write_csv(f, rows, n);
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/%s.md", env->out_dir, name);
    f = fopen(path, "w");
    if (f) {
        char host[256] = "?";
        gethostname(host, sizeof host);
        time_t now = time(NULL);
        char date[64];
        strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
        fprintf(f, "# %s\n\nmachine: %s, %ld cores; %s\n", title, host, sysconf(_SC_NPROCESSORS_ONLN), date);
        eb_rows_write_markdown(f, NULL, rows, n);
        if (notes)
            fprintf(f, "\n%s\n", notes);
        fclose(f);
        printf("results: %s/%s.{csv,md}\n", env->out_dir, name);
    }
}

/* ---- scenarios ------------------------------------------------------------------------------ */

static int parse_list(const char *s, long *out, int max)
{
    int n = 0;
    while (s && *s && n < max) {
        char *end;
        out[n++] = strtol(s, &end, 10);
        s = *end == ',' ? end + 1 : NULL;
    }
    return n;
}

static int cmd_roundtrip(bench_env *env, const eb_config *cfg)
{
    long clients[8];
    int nclients = parse_list(eb_config_get(cfg, "clients", "1,8"), clients, 8);
    int requests = atoi(eb_config_get(cfg, "requests", "2000"));
    int rounds = atoi(eb_config_get(cfg, "rounds", "6"));
    size_t input_bytes = (size_t)atol(eb_config_get(cfg, "input_bytes", "4095"));
    input_bytes -= input_bytes % 3; /* whole RGB pixels */
    if (rounds < 1 || requests < rounds) {
        fprintf(stderr, "roundtrip: need 1 <= --rounds <= --requests\n");
        return 1;
    }
    eb_row rows[32];
    size_t nrows = 0;

    /* both systems up at once; each client alternates between them (pair_client) */
    eb_floor floor;
    if (eb_floor_start(&floor, env->run_dir, 64 * 4 + 160) != 0)
        return 1;
    if (start_embroker(env, 32) != 0) {
        eb_floor_stop(&floor);
        return 1;
    }
    for (int c = 0; c < nclients; c++) {
        pair_job proto = {.rounds = rounds};
        proto.floor = (client_job){.env = env, .requests = requests,
                                   .floor_endpoint = floor.frontend, .floor_request_bytes = 160};
        proto.embroker = (client_job){.env = env, .requests = requests, .input_bytes = input_bytes};
        client_job fl = {0}, em = {0};
        double floor_wall, embroker_wall;
        run_pairs((int)clients[c], &proto, &fl, &em, &floor_wall, &embroker_wall);
        const char *plural = clients[c] > 1 ? "s" : "";
        char label[96];
        snprintf(label, sizeof label, "floor zmq_proxy, %ld client%s", clients[c], plural);
        eb_row_init(&rows[nrows], label);
        add_latency_cols(&rows[nrows], &fl.total, floor_wall);
        double floor_p50 = rows[nrows].values[2];
        eb_row_add(&rows[nrows], "x_floor_p50", 1.0);
        nrows++;
        snprintf(label, sizeof label, "embroker identity shm, %ld client%s", clients[c], plural);
        eb_row_init(&rows[nrows], label);
        add_latency_cols(&rows[nrows], &em.total, embroker_wall);
        eb_row_add(&rows[nrows], "x_floor_p50", rows[nrows].values[2] / floor_p50);
        nrows++;
        free_job(&fl);
        free_job(&em);
    }
    stop_embroker(env);
    eb_floor_stop(&floor);
    char notes[640];
    snprintf(notes, sizeof notes,
             "Closed loop, one request in flight per client, %d requests per client and system, "
             "%zu-byte input through shared memory; floor = same hops through zmq_proxy + echo "
             "worker with a 160-byte request and 416-byte reply. Both run at once and every client "
             "alternates between them in %d rounds, so machine drift hits both alike. "
             "x_floor_p50 = p50 / floor p50 at the same client count (target <= 1.5).",
             requests, input_bytes, rounds);
    write_results(env, "roundtrip", "Identity round trip vs zmq_proxy floor", rows, nrows, notes);
    return 0;
}

static int cmd_transport(bench_env *env, const eb_config *cfg)
{
    long sizes[8];
    int nsizes = parse_list(eb_config_get(cfg, "sizes", "65536,1048576,6291456,25165824"), sizes, 8);
    int requests = atoi(eb_config_get(cfg, "requests", "40"));
    if (start_embroker(env, 8) != 0)
        return 1;
    eb_row rows[32];
    size_t nrows = 0;
    for (int i = 0; i < nsizes; i++) {
        for (int mode = 0; mode < 2; mode++) {
            size_t bytes = (size_t)sizes[i] - (size_t)sizes[i] % 3; /* whole RGB pixels */
            client_job proto = {.env = env, .requests = requests, .input_bytes = bytes,
                                .force_inline = mode == 1};
            client_job result = {0};
            run_clients(1, &proto, embroker_client, &result);
            char label[96];
            snprintf(label, sizeof label, "%s %.2f MB", mode ? "inline" : "shm", (double)bytes / 1e6);
            eb_row_init(&rows[nrows], label);
            double total = p50_of(&result.total), hash = p50_of(&result.hash),
                   copy = p50_of(&result.copy), infer = p50_of(&result.infer),
                   copy_in = p50_of(&result.client_copy);
            eb_row_add(&rows[nrows], "n", (double)result.total.n);
            eb_row_add(&rows[nrows], "total_p50_us", total);
            eb_row_add(&rows[nrows], "hash_p50_us", hash);
            eb_row_add(&rows[nrows], "copy_in_p50_us", copy_in);
            eb_row_add(&rows[nrows], "copy_p50_us", copy);
            eb_row_add(&rows[nrows], "handoff_us", total - (isnan(hash) ? 0 : hash) -
                                                       (isnan(copy) ? 0 : copy) -
                                                       (isnan(copy_in) ? 0 : copy_in) -
                                                       (isnan(infer) ? 0 : infer));
            eb_row_add(&rows[nrows], "hash_us_per_MB", isnan(hash) ? NAN : hash / ((double)bytes / 1e6));
            nrows++;
            free_job(&result);
        }
    }
    stop_embroker(env);
    char notes[768];
    snprintf(notes, sizeof notes,
             "One client, %d sequential requests per row (p50 shown), identity model. handoff_us = "
             "total - hash - copy_in - copy - infer: the cost of moving the request and reply "
             "between processes. copy_in = the client library's one copy of the caller's bytes "
             "(into the segment, or into an inline frame); copy = the worker's guarded copy out "
             "of the client's segment (shm) or out of the received frame (inline).",
             requests);
    write_results(env, "transport", "Transport: shared memory vs inline bytes", rows, nrows, notes);
    return 0;
}

/* End-to-end latency of one image model against an already running broker + worker: a file is
 * embedded over and over through the client's shared-memory segment, decode included. */
static int cmd_image(bench_env *env, const eb_config *cfg)
{
    const char *file = eb_config_get(cfg, "file", NULL);
    const char *model = eb_config_get(cfg, "model", "siglip");
    int requests = atoi(eb_config_get(cfg, "requests", "1000"));
    const char *run_dir = eb_config_get(cfg, "run_dir", NULL);
    size_t len = 0;
    FILE *f = file ? fopen(file, "rb") : NULL;
    if (!f || !run_dir) {
        fprintf(stderr, "bench image: --run-dir DIR and a readable --file FILE are required\n");
        if (f)
            fclose(f);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    len = (size_t)ftell(f);
    rewind(f);
    uint8_t *bytes = malloc(len);
    if (fread(bytes, 1, len, f) != len) {
        fclose(f);
        free(bytes);
        return 1;
    }
    fclose(f);
    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.run_dir = run_dir;
    opt.timeout_ms = 60000;
    embroker_t *eb = NULL;
    char err[512];
    if (embroker_connect(&opt, &eb, err, sizeof err) != EB_OK) {
        fprintf(stderr, "bench image: %s\n", err);
        free(bytes);
        return 1;
    }
    eb_samples total = {0}, decode = {0}, infer = {0}, queue = {0}, copy = {0}, pre = {0};
    for (int i = -10; i < requests; i++) { /* 10 warm-up requests */
        embroker_request_t *req = NULL;
        int64_t t0 = eb_now_us();
        eb_status st = embroker_embed_image(eb, model, bytes, len, EMBROKER_FORMAT_AUTO, &req);
        int64_t t1 = eb_now_us();
        if (i >= 0 && st == EB_OK) {
            const embroker_timings_t *t = embroker_request_timings(req);
            eb_samples_add(&total, t1 - t0);
            eb_samples_add(&decode, t->decode_us);
            eb_samples_add(&infer, t->infer_us);
            eb_samples_add(&queue, t->queue_us);
            eb_samples_add(&copy, t->copy_us);
            eb_samples_add(&pre, t->preprocess_us);
        } else if (st != EB_OK) {
            total.errors++;
            if (total.errors < 3)
                fprintf(stderr, "bench image: %s %s\n", eb_status_str(st), req ? embroker_request_error(req) : "");
        }
        embroker_request_free(&req);
    }
    embroker_close(&eb);
    free(bytes);
    eb_row rows[6];
    const char *names[6] = {"client total", "decode", "preprocess", "infer", "queue", "copy"};
    eb_samples *sets[6] = {&total, &decode, &pre, &infer, &queue, &copy};
    for (int k = 0; k < 6; k++) {
        char label[96];
        snprintf(label, sizeof label, "%s %s", model, names[k]);
        eb_row_init(&rows[k], label);
        eb_summary sum;
        eb_samples_summarise(sets[k], &sum);
        eb_row_add(&rows[k], "n", (double)sum.n);
        eb_row_add(&rows[k], "errors", (double)sum.errors);
        eb_row_add(&rows[k], "p50_us", sum.p50_us);
        eb_row_add(&rows[k], "p90_us", sum.p90_us);
        eb_row_add(&rows[k], "p99_us", sum.p99_us);
        eb_row_add(&rows[k], "max_us", sum.max_us);
        eb_samples_free(sets[k]);
    }
    char notes[1200];
    snprintf(notes, sizeof notes,
             "One client, sequential requests, the file %s (%zu bytes) through the client's "
             "shared-memory segment to a running embrokerd + embroker-worker; decode is the "
             "worker's image decode, reported as its own stage; no search.", file, len);
    write_results(env, "image-e2e", "End-to-end image embedding latency", rows, 6, notes);
    return 0;
}

/* Models on the CPU, without the transport: rows printed and written like the others. */
static int cmd_models(bench_env *env, const eb_config *cfg, const char *which)
{
    eb_row rows[16];
    int n;
    if (strcmp(which, "siglip") == 0)
        n = eb_bench_siglip(cfg, rows, 16);
    else if (strcmp(which, "qwen3") == 0)
        n = eb_bench_qwen3(cfg, rows, 16);
    else
        n = eb_bench_tokenizer(cfg, rows, 16);
    if (n < 0)
        return 1;
    char name[64], title[128];
    snprintf(name, sizeof name, "%s-cpu", which);
    snprintf(title, sizeof title, "%s on the CPU (%s threads)", which, eb_config_get(cfg, "threads", "2"));
    write_results(env, name, title, rows, (size_t)n, NULL);
    return 0;
}

/* Search latency and recall@k on synthetic clustered rows (bench/eb_bench_search.h). */
static int cmd_search(bench_env *env, const eb_config *cfg)
{
    eb_row rows[12];
    char notes[4096], name[64];
    int n = eb_bench_search(cfg, env->out_dir, rows, 12, notes, sizeof notes, name, sizeof name);
    if (n < 0)
        return 1;
    write_results(env, name, "Search latency and recall@k (eb_search, pgvector HNSW)", rows,
                  (size_t)n, notes);
    return 0;
}

/* Quick scan end to end through a real broker, worker, Redis and PostgreSQL
 * (bench/eb_bench_scan.h). */
static int cmd_scan(bench_env *env, const eb_config *cfg)
{
    eb_row rows[16];
    char notes[4096];
    int n = eb_bench_scan(cfg, env->bin_dir, env->run_dir, rows, 16, notes, sizeof notes);
    if (n < 0)
        return 1;
    write_results(env, "scan-e2e", "Quick scan end to end (model loading | embedding | search | "
                                   "total)", rows, (size_t)n, notes);
    return 0;
}

int main(int argc, char **argv)
{
    eb_cpu_blas_ensure_coretype(argv);
    signal(SIGPIPE, SIG_IGN);
    eb_config *cfg = eb_config_new();
    char *pos[4];
    int npos = 0;
    char err[512];
    if (eb_config_load_args(cfg, argc, argv, NULL, pos, 4, &npos, err, sizeof err) != EB_OK ||
        npos < 1) {
        fprintf(stderr, "usage: embroker-bench roundtrip|transport [--flags]\n%s\n", npos < 1 ? "" : err);
        return 2;
    }
    bench_env env = {0};
    char self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    snprintf(env.bin_dir, sizeof env.bin_dir, "%s", eb_config_get(cfg, "bin", self));
    const char *out = getenv("EMBROKER_RESULTS_DIR");
    snprintf(env.out_dir, sizeof env.out_dir, "%s", eb_config_get(cfg, "out", out ? out : "bench/results"));
    snprintf(env.run_dir, sizeof env.run_dir, "/tmp/embroker-bench.XXXXXX");
    if (!mkdtemp(env.run_dir)) {
        perror("mkdtemp");
        return 1;
    }
    int rc;
    if (strcmp(pos[0], "roundtrip") == 0)
        rc = cmd_roundtrip(&env, cfg);
    else if (strcmp(pos[0], "transport") == 0)
        rc = cmd_transport(&env, cfg);
    else if (strcmp(pos[0], "image") == 0)
        rc = cmd_image(&env, cfg);
    else if (strcmp(pos[0], "search") == 0)
        rc = cmd_search(&env, cfg);
    else if (strcmp(pos[0], "scan") == 0)
        rc = cmd_scan(&env, cfg);
    else if (strcmp(pos[0], "load") == 0 || strcmp(pos[0], "coldwarm") == 0) {
        eb_bench_paths paths = {env.bin_dir, env.run_dir, env.out_dir};
        rc = strcmp(pos[0], "load") == 0 ? eb_bench_cmd_load(&paths, cfg)
                                         : eb_bench_cmd_coldwarm(&paths, cfg);
    } else if (strcmp(pos[0], "siglip") == 0 || strcmp(pos[0], "qwen3") == 0 ||
             strcmp(pos[0], "tokenizer") == 0)
        rc = cmd_models(&env, cfg, pos[0]);
    else {
        fprintf(stderr, "embroker-bench: unknown scenario \"%s\"\n", pos[0]);
        rc = 2;
    }
    stop_embroker(&env);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", env.run_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench: could not remove %s\n", env.run_dir);
    eb_config_destroy(&cfg);
    return rc;
}
