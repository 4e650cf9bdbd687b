/* eb_bench_serving — `load` and `coldwarm`, the scenarios that measure the serving path whole.
 *
 *   embroker-bench load [--mode closed|open] [--clients 1,4,16] [--rates 500,1000,...]
 *                       [--duration 5] [--warmup 1] [--requests N]
 *                       [--op embed-image|embed-text|mix] [--mix embed-image:3,embed-text:1]
 *                       [--images DIR | --input-bytes 4095 | --raw-dims WxH] [--texts FILE]
 *                       [--transport shm|inline] [--model M] [--text-model M]
 *                       [--workers 1,2] [--max-batch 1,8,32] [--siglip-dir DIR] [--threads T]
 *                       [--worker-models a,b] [--worker-args "..."] [--queue-limit N]
 *                       [--db-url URL] [--broker-args "..."] [--template demo] [--k 10]
 *                       [--stop-at-saturation true] [--run-dir DIR] [--name load]
 *       Closed loop: one level per --clients value. Open loop: one level per --rates value, over
 *       --clients connections (default 4). Each --workers x --max-batch combination gets its own
 *       broker + workers (identity and identity-text unless --siglip-dir or --worker-models say
 *       otherwise), started in a private run directory and stopped after; with --run-dir the
 *       levels run against the broker already there. --stop-at-saturation ends an open-loop
 *       sweep after the first level that completes under 90% of its arrivals per second or
 *       fails more than 1% of its requests. --op scan searches template --template: it needs a
 *       broker with a database holding that template (--db-url for the broker started here, or
 *       --run-dir of one set up already, e.g. by `embroker-bench scan`). Output: NAME.csv/.md
 *       (one row per level), NAME-stages.csv (the per-stage breakdown), NAME.json (everything,
 *       errors by code included).
 *
 *   embroker-bench coldwarm --siglip-dir DIR --file IMAGE [--cold-runs 3] [--warm-requests 20]
 *                           [--threads 2] [--name coldwarm]
 *       The table this project exists to fix: a request served by a worker started for it (the
 *       weights loaded on the request path, as a script that loads the model per call does)
 *       against the same request to the warm broker. Columns: loading (the request waiting in the
 *       broker's queue while its worker starts and loads), embedding (decode + preprocess +
 *       inference), search (empty: an embed request does not search; `embroker-bench scan`
 *       measures scans), other (the rest: transport, connecting) and total, in ms. */
#include "eb_bench_serving.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "eb_bench_cluster.h"
#include "eb_bench_load.h"
#include "eb_bench_stats.h"
#include "eb_clock.h"
#include "embroker.h"

#define MAX_LEVELS 32
#define MAX_ROWS 128

/* ---- helpers ------------------------------------------------------------------------------ */

static int parse_doubles(const char *s, double *out, int max)
{
    int n = 0;
    while (s && *s && n < max) {
        char *end;
        out[n++] = strtod(s, &end);
        s = *end == ',' ? end + 1 : NULL;
    }
    return n;
}

/* "embed-image:3,embed-text:1" -> weights; returns 0 or -1 on an unknown op name. */
static int parse_mix(const char *s, double weights[EB_LOAD_N_OPS])
{
    char copy[512];
    snprintf(copy, sizeof copy, "%s", s);
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        double w = colon ? strtod(colon + 1, NULL) : 1.0;
        if (colon)
            *colon = '\0';
        int op = -1;
        for (int k = 0; k < EB_LOAD_N_OPS; k++)
            if (strcmp(tok, eb_load_op_name((eb_load_op)k)) == 0)
                op = k;
        if (op < 0) {
            fprintf(stderr,
                    "bench load: unknown operation \"%s\" in --mix (embed-image, "
                    "embed-text, scan)\n",
                    tok);
            return -1;
        }
        weights[op] = w;
    }
    return 0;
}

static FILE *open_out(const char *dir, const char *name, const char *ext)
{
    char path[1400];
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/%s%s", dir, name, ext);
    FILE *f = fopen(path, "w");
    if (!f)
        fprintf(stderr, "bench: cannot write %s: %m\n", path);
    return f;
}

static void write_tables(const char *dir, const char *name, const char *title, const eb_row *rows,
                         size_t n, const char *notes)
{
    eb_rows_print_table(stdout, title, rows, n);
    if (notes)
        printf("%s\n", notes);
    FILE *f = open_out(dir, name, ".csv");
    if (f) {
        eb_rows_write_csv(f, rows, n);
        fclose(f);
    }
    if ((f = open_out(dir, name, ".md"))) {
        char host[256] = "?", date[64];
        gethostname(host, sizeof host);
        time_t now = time(NULL);
        strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
        fprintf(f, "# %s\n\nmachine: %s, %ld cores; %s\n", title, host,
                sysconf(_SC_NPROCESSORS_ONLN), date);
        eb_rows_write_markdown(f, NULL, rows, n);
        if (notes)
            fprintf(f, "\n%s\n", notes);
        fclose(f);
    }
    printf("results: %s/%s.{csv,md}\n", dir, name);
}

/* ---- load --------------------------------------------------------------------------------- */

/* Past saturation the system completes less than what arrived (the queue grows and drains after
 * the window, or the broker refuses work). Compared with the arrivals actually drawn, not the
 * target rate: a Poisson count with mean 40 may well be 33. */
static bool saturated(const eb_load_result *r)
{
    if (r->sent_rps > 0 && r->achieved_rps < 0.9 * r->sent_rps)
        return true;
    return r->sent > 0 && (double)(r->errors + r->backlog) > 0.01 * (double)r->sent;
}

int eb_bench_cmd_load(const eb_bench_paths *paths, const eb_config *cfg)
{
    const char *mode_s = eb_config_get(cfg, "mode", "closed");
    bool open_loop = strcmp(mode_s, "open") == 0;
    if (!open_loop && strcmp(mode_s, "closed") != 0) {
        fprintf(stderr, "bench load: --mode must be closed or open, not \"%s\"\n", mode_s);
        return 2;
    }
    double clients[MAX_LEVELS], rates[MAX_LEVELS], workers[8], batches[8];
    int nclients = parse_doubles(eb_config_get(cfg, "clients", open_loop ? "4" : "1,4,16"), clients,
                                 MAX_LEVELS);
    const char *rates_s = eb_config_get(cfg, "rates", eb_config_get(cfg, "rate", "1000"));
    int nrates = parse_doubles(rates_s, rates, MAX_LEVELS);
    int nworkers = parse_doubles(eb_config_get(cfg, "workers", "1"), workers, 8);
    int nbatches = parse_doubles(eb_config_get(cfg, "max_batch", "0"), batches, 8);
    const char *name = eb_config_get(cfg, "name", "load");
    const char *external = eb_config_get(cfg, "run_dir", NULL);
    const char *siglip_dir = eb_config_get(cfg, "siglip_dir", NULL);
    const char *threads = eb_config_get(cfg, "threads", "2");
    bool stop_at_saturation = eb_config_get_bool(cfg, "stop_at_saturation", false);

    eb_load_config lc = {0};
    lc.mode = open_loop ? EB_LOAD_OPEN : EB_LOAD_CLOSED;
    lc.duration_s = atof(eb_config_get(cfg, "duration", "5"));
    lc.warmup_s = atof(eb_config_get(cfg, "warmup", "1"));
    lc.max_requests = atoll(eb_config_get(cfg, "requests", "0"));
    lc.force_inline = strcmp(eb_config_get(cfg, "transport", "shm"), "inline") == 0;
    lc.timeout_ms = atoi(eb_config_get(cfg, "timeout_ms", "60000"));
    lc.seed = (uint64_t)atoll(eb_config_get(cfg, "seed", "1"));
    lc.image_model = eb_config_get(cfg, "model", siglip_dir ? "siglip" : "identity");
    lc.text_model = eb_config_get(cfg, "text_model", "identity-text");
    lc.scan_template = eb_config_get(cfg, "template", "demo");
    lc.scan_k = (uint32_t)atoi(eb_config_get(cfg, "k", "0"));
    const char *op = eb_config_get(cfg, "op", "embed-image");
    if (strcmp(op, "embed-image") == 0)
        lc.weights[EB_LOAD_EMBED_IMAGE] = 1;
    else if (strcmp(op, "embed-text") == 0)
        lc.weights[EB_LOAD_EMBED_TEXT] = 1;
    else if (strcmp(op, "scan") == 0)
        lc.weights[EB_LOAD_SCAN] = 1;
    else if (strcmp(op, "mix") == 0) {
        if (parse_mix(eb_config_get(cfg, "mix", "embed-image:1,embed-text:1"), lc.weights) != 0)
            return 2;
    } else {
        fprintf(stderr,
                "bench load: --op must be embed-image, embed-text, scan or mix, not "
                "\"%s\"\n",
                op);
        return 2;
    }

    eb_load_inputs inputs = {0};
    char err[512];
    const char *images = eb_config_get(cfg, "images", NULL);
    if (images && eb_load_inputs_images(&inputs, images, err, sizeof err) != 0) {
        fprintf(stderr, "bench load: %s\n", err);
        eb_load_inputs_free(&inputs);
        return 1;
    }
    size_t raw = (size_t)atoll(eb_config_get(cfg, "input_bytes", "4095"));
    inputs.raw_bytes = raw - raw % 3;
    const char *dims = eb_config_get(cfg, "raw_dims", NULL); /* "WxH": an image-shaped input */
    if (dims && sscanf(dims, "%ux%u", &inputs.raw_width, &inputs.raw_height) == 2 &&
        inputs.raw_width && inputs.raw_height)
        inputs.raw_bytes = (size_t)inputs.raw_width * inputs.raw_height * 3;
    else
        inputs.raw_width = inputs.raw_height = 0;
    if (eb_load_inputs_texts(&inputs, eb_config_get(cfg, "texts", NULL), 256, err, sizeof err)) {
        fprintf(stderr, "bench load: %s\n", err);
        eb_load_inputs_free(&inputs);
        return 1;
    }
    lc.inputs = &inputs;

    char worker_models[256], worker_args[2048];
    const char *default_models = !siglip_dir                          ? "identity,identity-text"
                                 : lc.weights[EB_LOAD_EMBED_TEXT] > 0 ? "siglip,identity-text"
                                                                      : "siglip";
    snprintf(worker_models, sizeof worker_models, "%s",
             eb_config_get(cfg, "worker_models", default_models));
    snprintf(worker_args, sizeof worker_args, "%s%s%s%s%s", eb_config_get(cfg, "worker_args", ""),
             siglip_dir ? " --siglip-dir " : "", siglip_dir ? siglip_dir : "",
             siglip_dir ? " --siglip-threads " : "", siglip_dir ? threads : "");

    bool image_ops = lc.weights[EB_LOAD_EMBED_IMAGE] > 0 || lc.weights[EB_LOAD_SCAN] > 0;
    char broker_args[2048]; /* scan needs the broker's database (and a loaded template) */
    const char *db_url = eb_config_get(cfg, "db_url", NULL);
    snprintf(broker_args, sizeof broker_args, "%s%s%s", eb_config_get(cfg, "broker_args", ""),
             db_url ? " --db-url " : "", db_url ? db_url : "");

    eb_row *rows = calloc(MAX_ROWS, sizeof *rows), *stage_rows = calloc(MAX_ROWS * 2, sizeof *rows);
    size_t nrows = 0, nstage = 0;
    FILE *json = open_out(paths->out_dir, name, ".json");
    if (json)
        fprintf(json, "[\n");
    int rc = 0;
    bool first_json = true;
    for (int wi = 0; wi < (external ? 1 : nworkers) && rc == 0; wi++) {
        for (int bi = 0; bi < (external ? 1 : nbatches) && rc == 0; bi++) {
            eb_cluster cluster = {0};
            char run_dir[1024];
            int nw = (int)workers[wi], mb = (int)batches[bi];
            if (external) {
                snprintf(run_dir, sizeof run_dir, "%s", external);
            } else {
                snprintf(run_dir, sizeof run_dir, "%s/w%db%d", paths->run_dir, nw, mb);
                mkdir(run_dir, 0700);
                eb_cluster_options co = {.bin_dir = paths->bin_dir,
                                         .run_dir = run_dir,
                                         .workers = nw,
                                         .models = worker_models,
                                         .worker_args = worker_args,
                                         .max_batch = mb,
                                         .queue_limit =
                                             atoi(eb_config_get(cfg, "queue_limit", "0")),
                                         .broker_args = broker_args[0] ? broker_args : NULL,
                                         .ready_model = image_ops ? lc.image_model : lc.text_model,
                                         .ready_text = !image_ops,
                                         .ready_timeout_ms = 120000};
                if (eb_cluster_start(&cluster, &co) != 0) {
                    rc = 1;
                    break;
                }
            }
            lc.run_dir = run_dir;
            int nlevels = open_loop ? nrates : nclients;
            for (int li = 0; li < nlevels; li++) {
                lc.clients = (int)(open_loop ? clients[0] : clients[li]);
                lc.rate = open_loop ? rates[li] : NAN;
                eb_load_result r;
                if (eb_load_run(&lc, &r, err, sizeof err) != 0) {
                    fprintf(stderr, "bench load: %s\n", err);
                    eb_load_result_free(&r);
                    rc = 1;
                    break;
                }
                char label[96];
                if (open_loop)
                    snprintf(label, sizeof label, "open %g/s w%d b%d", lc.rate, nw, mb);
                else
                    snprintf(label, sizeof label, "closed c%d w%d b%d", lc.clients, nw, mb);
                if (nrows < MAX_ROWS) {
                    eb_row_init(&rows[nrows], label);
                    eb_row_add(&rows[nrows], "workers", external ? NAN : nw);
                    eb_row_add(&rows[nrows], "max_batch", external || mb == 0 ? NAN : mb);
                    eb_row_add(&rows[nrows], "clients", lc.clients);
                    eb_load_result_row(&r, &rows[nrows]);
                    /* progress; the table comes at the end */
                    fprintf(stderr,
                            "bench load: %s: %.0f/s, p50 %.0f us, p99 %.0f us, %lld "
                            "errors\n",
                            label, r.achieved_rps, rows[nrows].values[8], rows[nrows].values[10],
                            (long long)(r.errors + r.backlog));
                    nrows++;
                }
                nstage += (size_t)eb_load_stage_rows(&r, label, stage_rows + nstage,
                                                     (int)(MAX_ROWS * 2 - nstage));
                if (json) {
                    if (!first_json)
                        fprintf(json, ",");
                    eb_load_result_json(json, &lc, &r, label);
                    first_json = false;
                }
                bool sat = saturated(&r);
                eb_load_result_free(&r);
                if (open_loop && stop_at_saturation && sat)
                    break;
            }
            if (!external)
                eb_cluster_stop(&cluster);
        }
    }
    if (json) {
        fprintf(json, "]\n");
        fclose(json);
    }
    char notes[1024], title[256], stage_name[256], raw_desc[96];
    if (inputs.raw_width)
        snprintf(raw_desc, sizeof raw_desc, "synthetic raw RGB %ux%u", inputs.raw_width,
                 inputs.raw_height);
    else
        snprintf(raw_desc, sizeof raw_desc, "synthetic raw RGB %zu bytes", inputs.raw_bytes);
    snprintf(notes, sizeof notes,
             "%s loop, %g s measured after %g s warm-up per level; op %s; inputs %s, %s; image "
             "model %s, text model %s. Latency in us from the %s send time; p99 needs >= 1,000 "
             "samples, p99.9 >= 10,000 (else -). errors = failed + not sent (open-loop in-flight "
             "cap); NAME.json has them by code.",
             open_loop ? "Open" : "Closed", lc.duration_s, lc.warmup_s, op,
             images ? images : raw_desc, lc.force_inline ? "inline" : "shared memory",
             lc.image_model, lc.text_model, open_loop ? "intended (Poisson)" : "actual");
    snprintf(title, sizeof title, "Load: %s", name);
    if (nrows)
        write_tables(paths->out_dir, name, title, rows, nrows, notes);
    if (nstage) {
        snprintf(stage_name, sizeof stage_name, "%s-stages", name);
        FILE *f = open_out(paths->out_dir, stage_name, ".csv");
        if (f) {
            eb_rows_write_csv(f, stage_rows, nstage);
            fclose(f);
        }
    }
    free(rows);
    free(stage_rows);
    eb_load_inputs_free(&inputs);
    return rc;
}

/* ---- cold vs warm ------------------------------------------------------------------------- */

typedef struct cw_sample {
    double loading_ms, embedding_ms, other_ms, total_ms;
} cw_sample;

static double stage_ms(int64_t us)
{
    return us > 0 ? (double)us / 1000.0 : 0.0;
}

/* One blocking image request on a fresh handle; fills *s. Returns the request status. */
static eb_status timed_request(const char *run_dir, const char *model, const uint8_t *bytes,
                               size_t len, int64_t t_start, bool loading_is_queue, cw_sample *s)
{
    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.run_dir = run_dir;
    opt.timeout_ms = 180000;
    embroker_t *eb = NULL;
    char err[512];
    eb_status st = embroker_connect(&opt, &eb, err, sizeof err);
    if (st != EB_OK) {
        fprintf(stderr, "bench coldwarm: %s\n", err);
        return st;
    }
    embroker_request_t *req = NULL;
    int64_t t0 = t_start ? t_start : eb_now_us();
    st = embroker_embed_image(eb, model, bytes, len, EMBROKER_FORMAT_AUTO, &req);
    int64_t t1 = eb_now_us();
    if (st == EB_OK) {
        const embroker_timings_t *t = embroker_request_timings(req);
        s->total_ms = (double)(t1 - t0) / 1000.0;
        s->embedding_ms =
            stage_ms(t->decode_us) + stage_ms(t->preprocess_us) + stage_ms(t->infer_us);
        s->loading_ms = loading_is_queue ? stage_ms(t->queue_us) : 0.0;
        s->other_ms = s->total_ms - s->embedding_ms - s->loading_ms;
    } else {
        fprintf(stderr, "bench coldwarm: request failed: %s (%s)\n", eb_status_str(st),
                req ? embroker_request_error(req) : "");
    }
    embroker_request_free(&req);
    embroker_close(&eb);
    return st;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median_of(const cw_sample *s, size_t n, size_t field_offset)
{
    double *v = calloc(n ? n : 1, sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = *(const double *)((const char *)&s[i] + field_offset);
    qsort(v, n, sizeof *v, cmp_double);
    double m = n ? (n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2) : NAN;
    free(v);
    return m;
}

static void cw_row(eb_row *row, const char *label, size_t n, double loading, double embedding,
                   double other, double total)
{
    eb_row_init(row, label);
    eb_row_add(row, "n", (double)n);
    eb_row_add(row, "loading_ms", loading);
    eb_row_add(row, "embedding_ms", embedding);
    eb_row_add(row, "search_ms", NAN);
    eb_row_add(row, "other_ms", other);
    eb_row_add(row, "total_ms", total);
}

int eb_bench_cmd_coldwarm(const eb_bench_paths *paths, const eb_config *cfg)
{
    const char *siglip_dir = eb_config_get(cfg, "siglip_dir", NULL);
    const char *file = eb_config_get(cfg, "file", NULL);
    int cold_runs = atoi(eb_config_get(cfg, "cold_runs", "3"));
    int warm_requests = atoi(eb_config_get(cfg, "warm_requests", "20"));
    const char *threads = eb_config_get(cfg, "threads", "2");
    const char *name = eb_config_get(cfg, "name", "coldwarm");
    if (!siglip_dir || !file) {
        fprintf(stderr, "bench coldwarm: --siglip-dir DIR and --file IMAGE are required\n");
        return 2;
    }
    FILE *f = fopen(file, "rb");
    if (!f) {
        fprintf(stderr, "bench coldwarm: cannot open \"%s\": %m\n", file);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    size_t len = (size_t)ftell(f);
    rewind(f);
    uint8_t *bytes = malloc(len ? len : 1);
    bool ok = fread(bytes, 1, len, f) == len;
    fclose(f);
    if (!ok) {
        free(bytes);
        return 1;
    }
    char worker_args[1400];
    snprintf(worker_args, sizeof worker_args, "--siglip-dir %s --siglip-threads %s", siglip_dir,
             threads);
    eb_cluster_options co = {.bin_dir = paths->bin_dir,
                             .run_dir = paths->run_dir,
                             .workers = 0,
                             .models = "siglip",
                             .worker_args = worker_args,
                             .ready_model = "siglip",
                             .ready_timeout_ms = 120000};
    eb_cluster cluster;
    if (eb_cluster_start(&cluster, &co) != 0) {
        free(bytes);
        return 1;
    }
    int rc = 0;
    cw_sample cold[32] = {0}, warm[1024] = {0};
    size_t ncold = 0, nwarm = 0;
    eb_row rows[48];
    size_t nrows = 0;
    /* cold: the worker is started for the request; the request is sent at once and waits in
     * the broker's queue until the worker has loaded the weights and registered */
    for (int i = 0; i < cold_runs && i < 32 && rc == 0; i++) {
        int64_t t0 = eb_now_us();
        pid_t pid = eb_cluster_spawn_worker(&cluster, &co);
        if (pid < 0 ||
            timed_request(cluster.run_dir, "siglip", bytes, len, t0, true, &cold[ncold]) != EB_OK)
            rc = 1;
        else
            ncold++;
        eb_cluster_stop_worker(&cluster, pid);
    }
    /* warm: one worker kept running; one untimed request first (the readiness check) */
    if (rc == 0) {
        eb_cluster_spawn_worker(&cluster, &co);
        cw_sample ignore;
        if (timed_request(cluster.run_dir, "siglip", bytes, len, 0, false, &ignore) != EB_OK)
            rc = 1;
        for (int i = 0; i < warm_requests && i < 1024 && rc == 0; i++)
            if (timed_request(cluster.run_dir, "siglip", bytes, len, 0, false, &warm[nwarm]) ==
                EB_OK)
                nwarm++;
    }
    eb_cluster_stop(&cluster);
    for (size_t i = 0; i < ncold; i++) {
        char label[96];
        snprintf(label, sizeof label, "cold: worker started per request, run %zu", i + 1);
        cw_row(&rows[nrows++], label, 1, cold[i].loading_ms, cold[i].embedding_ms, cold[i].other_ms,
               cold[i].total_ms);
    }
#define MED(arr, n, field) median_of(arr, n, offsetof(cw_sample, field))
    double cold_total = MED(cold, ncold, total_ms), warm_total = MED(warm, nwarm, total_ms);
    if (ncold)
        cw_row(&rows[nrows++], "cold (median)", ncold, MED(cold, ncold, loading_ms),
               MED(cold, ncold, embedding_ms), MED(cold, ncold, other_ms), cold_total);
    if (nwarm)
        cw_row(&rows[nrows++], "warm broker (median)", nwarm, 0.0, MED(warm, nwarm, embedding_ms),
               MED(warm, nwarm, other_ms), warm_total);
#undef MED
    if (ncold && nwarm) {
        eb_row_init(&rows[nrows], "cold / warm");
        eb_row_add(&rows[nrows], "n", NAN);
        eb_row_add(&rows[nrows], "loading_ms", NAN);
        eb_row_add(&rows[nrows], "embedding_ms", NAN);
        eb_row_add(&rows[nrows], "search_ms", NAN);
        eb_row_add(&rows[nrows], "other_ms", NAN);
        eb_row_add(&rows[nrows], "total_ms", cold_total / warm_total);
        nrows++;
    }
    char notes[1200];
    snprintf(notes, sizeof notes,
             "SigLIP checkpoint %s, %s threads, image %s (%zu bytes) through shared memory, one "
             "request at a time. cold: embroker-worker is started for the request and stopped "
             "after it; loading = the request's time in the broker queue while that worker "
             "starts, loads the weights and registers. warm: the same request to a running "
             "worker. search: empty, an embed request does not search (embroker-bench scan "
             "measures scans). The last row divides the total medians.",
             siglip_dir, threads, file, len);
    if (nrows)
        write_tables(paths->out_dir, name,
                     "Cold vs warm: a worker per request against the warm "
                     "broker",
                     rows, nrows, notes);
    free(bytes);
    return rc;
}
