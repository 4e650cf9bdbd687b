/* eb_bench_load — closed- and open-loop load over the client library (see the header).
 *
 * One thread per connection, each with its own embroker_t (the library's contract). Closed loop
 * uses the blocking submit + wait; open loop submits asynchronously at the times of its own
 * Poisson stream and collects replies with embroker_poll between sends. A request's latency in
 * the open loop runs from its intended send time, so a send that went out late because the
 * connection was busy still counts the delay. Replies that arrive while the thread sleeps
 * towards a send less than 1 ms away are seen when it wakes: completion times are late by at
 * most that sleep (measured and reported as the send lag, which has the same cause).
 *
 * The measured phase is the window [start + warmup, start + warmup + duration) of intended (open)
 * or actual (closed) send times; requests sent in the warm-up are served but not counted. */
#include "eb_bench_load.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "eb_clock.h"
#include "embroker.h"

typedef struct in_flight {
    embroker_request_t *req; /* NULL: free slot */
    int64_t intended_us;     /* open: scheduled send time; closed: submit time */
    int op;
    bool measured;
} in_flight;

typedef struct conn_job {
    const eb_load_config *cfg;
    int index;
    pthread_barrier_t *start;
    _Atomic int64_t *t0_us;  /* set by the main thread after every connection is up */
    _Atomic int64_t *budget; /* closed loop with max_requests: measured requests left */
    eb_load_result result;   /* this connection's share (merged at the end) */
    int64_t last_completion_us;
    int64_t window_start_us, window_end_us; /* the measured phase */
    int64_t window_ok;       /* successes that completed inside it, whenever they were sent */
    eb_samples send_lag;
    char err[512];
    bool failed;
} conn_job;

static const char *const op_names[EB_LOAD_N_OPS] = {"embed-image", "embed-text", "scan"};
static const char *const stage_names[EB_LOAD_N_STAGES] = {
    "queue", "copy", "hash", "decode", "preprocess", "infer", "search", "broker_total", "client"};

/* ---- inputs ------------------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_image_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0 ||
                   strcasecmp(dot, ".png") == 0 || strcasecmp(dot, ".webp") == 0);
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *buf = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long n = ftell(f);
        rewind(f);
        buf = n > 0 ? malloc((size_t)n) : NULL;
        if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        }
        *len = n > 0 ? (size_t)n : 0;
    }
    fclose(f);
    return buf;
}

int eb_load_inputs_images(eb_load_inputs *in, const char *dir, char *err, size_t err_len)
{
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, err_len, "cannot open image directory \"%s\": %m", dir);
        return -1;
    }
    char *names[1000];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 1000)
        if (is_image_name(e->d_name))
            names[n++] = strdup(e->d_name);
    closedir(d);
    if (n == 0) {
        snprintf(err, err_len, "no .jpg/.png/.webp file in \"%s\"", dir);
        return -1;
    }
    qsort(names, n, sizeof *names, cmp_str);
    in->images = calloc(n, sizeof *in->images);
    in->image_lens = calloc(n, sizeof *in->image_lens);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (rc == 0 && !(in->images[i] = read_file(path, &in->image_lens[i]))) {
            snprintf(err, err_len, "cannot read image \"%s\"", path);
            rc = -1;
        }
        free(names[i]);
    }
    in->n_images = n;
    return rc;
}

int eb_load_inputs_texts(eb_load_inputs *in, const char *path, size_t count, char *err,
                         size_t err_len)
{
    static const char *const words[] = {
        "a",      "photo", "of",    "the",   "red",    "cat",   "sleeping", "on",   "wooden",
        "table",  "near",  "blue",  "cup",   "under",  "warm",  "light",    "city", "street",
        "at",     "night", "with",  "rain",  "and",    "neon",  "signs",    "old",  "bridge",
        "across", "river", "green", "hills", "behind", "small", "house"};
    const size_t nwords = sizeof words / sizeof *words;
    if (path) {
        FILE *f = fopen(path, "r");
        if (!f) {
            snprintf(err, err_len, "cannot open text file \"%s\": %m", path);
            return -1;
        }
        in->texts = calloc(10000, sizeof *in->texts);
        char line[8192];
        while (in->n_texts < 10000 && fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = '\0';
            if (line[0])
                in->texts[in->n_texts++] = strdup(line);
        }
        fclose(f);
        if (in->n_texts == 0) {
            snprintf(err, err_len, "no text line in \"%s\"", path);
            return -1;
        }
        return 0;
    }
    in->texts = calloc(count ? count : 1, sizeof *in->texts);
    uint32_t seed = 12345;
    for (size_t i = 0; i < (count ? count : 1); i++) {
        char s[256] = "";
        size_t used = 0;
        for (int w = 0; w < 12; w++) {
            seed = seed * 1103515245u + 12345u;
            used += (size_t)snprintf(s + used, sizeof s - used, "%s%s", w ? " " : "",
                                     words[(seed >> 16) % nwords]);
        }
        in->texts[in->n_texts++] = strdup(s);
    }
    return 0;
}

void eb_load_inputs_free(eb_load_inputs *in)
{
    for (size_t i = 0; i < in->n_images; i++)
        free(in->images[i]);
    free(in->images);
    free(in->image_lens);
    for (size_t i = 0; i < in->n_texts; i++)
        free(in->texts[i]);
    free(in->texts);
    memset(in, 0, sizeof *in);
}

/* ---- one connection ----------------------------------------------------------------------- */

static uint64_t next_random(uint64_t *state)
{
    /* xorshift64*: fast, and independent streams per connection from distinct seeds */
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 2685821657736338717ull;
}

static double uniform01(uint64_t *state)
{
    return ((double)(next_random(state) >> 11) + 0.5) / 9007199254740992.0; /* (0, 1) */
}

static int pick_op(const eb_load_config *cfg, uint64_t *rng)
{
    double total = 0;
    for (int i = 0; i < EB_LOAD_N_OPS; i++)
        total += cfg->weights[i];
    if (total <= 0)
        return EB_LOAD_EMBED_IMAGE;
    double x = uniform01(rng) * total;
    for (int i = 0; i < EB_LOAD_N_OPS; i++) {
        if (x < cfg->weights[i])
            return i;
        x -= cfg->weights[i];
    }
    return EB_LOAD_N_OPS - 1;
}

static void count_error(eb_load_result *r, eb_status st)
{
    int slot = st < 0 && st >= EB_STATUS_MIN ? -(int)st : -(int)EB_ERR_INTERNAL;
    r->errors_by_code[slot]++;
    r->errors++;
}

/* Submit one request of kind `op`; *raw is this connection's synthetic raw input buffer. */
static eb_status submit_op(embroker_t *eb, const eb_load_config *cfg, int op, uint64_t seq,
                           uint8_t *raw, embroker_request_t **req, char *err, size_t err_len)
{
    const eb_load_inputs *in = cfg->inputs;
    embroker_request_options_t ro = {.force_inline = cfg->force_inline};
    embroker_input_t input = {0};
    const char *model;
    if (op == EB_LOAD_EMBED_TEXT) {
        model = cfg->text_model ? cfg->text_model : "identity-text";
        const char *text = in->n_texts ? in->texts[seq % in->n_texts] : "a photo of a cat";
        input.kind = EMBROKER_INPUT_TEXT;
        input.bytes = text;
        input.len = strlen(text);
    } else {
        model = cfg->image_model ? cfg->image_model : "identity";
        if (in->n_images) {
            input.kind = EMBROKER_INPUT_IMAGE;
            input.format = EMBROKER_FORMAT_AUTO;
            input.bytes = in->images[seq % in->n_images];
            input.len = in->image_lens[seq % in->n_images];
        } else {
            /* a different input each time so nothing can be served from a cache */
            uint64_t x = seq * 0x9E3779B97F4A7C15ull + 1;
            size_t n = in->raw_bytes < 64 ? in->raw_bytes : 64;
            for (size_t i = 0; i < n; i++)
                raw[i] = (uint8_t)(next_random(&x) >> 56);
            input.kind = EMBROKER_INPUT_RAW_RGB8;
            input.bytes = raw;
            input.len = in->raw_bytes;
            input.width = in->raw_width ? in->raw_width : (uint32_t)(in->raw_bytes / 3);
            input.height = in->raw_width ? in->raw_height : 1;
        }
    }
    if (op == EB_LOAD_SCAN) {
        embroker_scan_options_t so;
        embroker_scan_options_default(&so);
        so.template_name = cfg->scan_template ? cfg->scan_template : "demo";
        so.k = cfg->scan_k;
        so.image_model = model;
        /* the generator's inputs repeat: without this every scan after the first round would
         * be a cache hit whenever the broker has a cache */
        so.no_client_hash = true;
        return embroker_submit_scan(eb, &input, NULL, &so, req, err, err_len);
    }
    return embroker_submit(eb, model, &input, 1, &ro, req, err, err_len);
}

/* A completed request: record it (when measured) and free it. */
static void complete(conn_job *job, in_flight *f, int64_t now)
{
    eb_load_result *r = &job->result;
    embroker_request_t *req = f->req;
    f->req = NULL;
    eb_status st = embroker_request_status(req);
    const embroker_result_t *res = st == EB_OK ? embroker_request_result(req, 0) : NULL;
    if (st == EB_OK && res && res->status != EB_OK)
        st = res->status;
    const char *search_msg = NULL;
    if (st == EB_OK && f->op == EB_LOAD_SCAN) /* a scan whose search did not run has failed */
        st = embroker_request_search_error(req, &search_msg);
    /* throughput counts what the system finished inside the window, so neither the warm-up's
     * requests nor the drain after the window distort it */
    if (st == EB_OK && now >= job->window_start_us && now < job->window_end_us)
        job->window_ok++;
    if (!f->measured) {
        embroker_request_free(&req);
        return;
    }
    r->completed++;
    if (st != EB_OK) {
        count_error(r, st);
        if (r->errors <= 3)
            fprintf(stderr, "bench load: request failed: %s (%s)\n", eb_status_str(st),
                    search_msg                           ? search_msg
                    : res && res->message && *res->message ? res->message
                                                           : embroker_request_error(req));
    } else {
        int64_t latency = now - f->intended_us;
        eb_samples_add(&r->latency, latency);
        eb_samples_add(&r->op_latency[f->op], latency);
        const embroker_timings_t *t = embroker_request_timings(req);
        int64_t v[EB_LOAD_N_STAGES] = {
            t->queue_us,
            t->copy_us,
            t->hash_us,
            t->decode_us,
            t->preprocess_us,
            t->infer_us,
            t->search_us,
            t->total_us,
            t->total_us >= 0 && t->client_total_us >= 0 ? t->client_total_us - t->total_us : -1};
        for (int s = 0; s < EB_LOAD_N_STAGES; s++)
            if (v[s] >= 0)
                eb_samples_add(&r->stages[s], v[s]);
        if (now > job->last_completion_us)
            job->last_completion_us = now;
    }
    embroker_request_free(&req);
}

static void run_closed(conn_job *job, embroker_t *eb, int64_t measure_start, int64_t end,
                       _Atomic int64_t *budget)
{
    const eb_load_config *cfg = job->cfg;
    uint64_t rng = cfg->seed * 7919u + (uint64_t)job->index * 104729u + 1;
    uint8_t *raw = calloc(1, cfg->inputs->raw_bytes + 1);
    uint64_t seq = (uint64_t)job->index << 32;
    for (;;) {
        int64_t now = eb_now_us();
        if (now >= end)
            break;
        bool measured = now >= measure_start;
        if (measured && cfg->max_requests > 0 && atomic_fetch_sub(budget, 1) <= 0)
            break;
        int op = pick_op(cfg, &rng);
        in_flight f = {.intended_us = now, .op = op, .measured = measured};
        char err[512];
        eb_status st = submit_op(eb, cfg, op, seq++, raw, &f.req, err, sizeof err);
        if (measured)
            job->result.sent++;
        if (st != EB_OK) {
            if (measured) {
                count_error(&job->result, st);
                if (job->result.errors <= 3)
                    fprintf(stderr, "bench load: submit failed: %s\n", err);
            }
            eb_sleep_us(1000); /* a refused submit (busy) must not spin */
            continue;
        }
        eb_status w = embroker_wait(eb, f.req, cfg->timeout_ms > 0 ? cfg->timeout_ms : 60000);
        int64_t done = eb_now_us();
        if (w != EB_OK) {
            if (measured)
                count_error(&job->result, EB_ERR_TIMEOUT);
            embroker_request_free(&f.req);
            continue;
        }
        complete(job, &f, done);
    }
    free(raw);
}

static void run_open(conn_job *job, embroker_t *eb, int64_t t0, int64_t measure_start, int64_t end)
{
    const eb_load_config *cfg = job->cfg;
    double rate = cfg->rate / (cfg->clients > 0 ? cfg->clients : 1); /* this connection's */
    int cap_items = cfg->max_in_flight > 0 ? cfg->max_in_flight : 4096;
    size_t slots = 1;
    while (slots < (size_t)cap_items * 2)
        slots <<= 1;
    in_flight *table = calloc(slots, sizeof *table); /* indexed by request id mod slots */
    uint64_t rng = cfg->seed * 7919u + (uint64_t)job->index * 104729u + 1;
    uint8_t *raw = calloc(1, cfg->inputs->raw_bytes + 1);
    uint64_t seq = (uint64_t)job->index << 32;
    int in_flight_n = 0;
    int64_t timeout_us = (int64_t)(cfg->timeout_ms > 0 ? cfg->timeout_ms : 60000) * 1000;
    /* first arrival: one exponential gap after t0, like every later one */
    int64_t next = t0 + (int64_t)(-log(uniform01(&rng)) / rate * 1e6);
    for (;;) {
        int64_t now = eb_now_us();
        if (next < end && now >= next) {
            bool measured = next >= measure_start;
            if (measured) {
                job->result.sent++;
                eb_samples_add(&job->send_lag, now - next);
            }
            int op = pick_op(cfg, &rng);
            if (in_flight_n >= cap_items) {
                if (measured)
                    job->result.backlog++;
            } else {
                embroker_request_t *req = NULL;
                char err[512];
                eb_status st = submit_op(eb, cfg, op, seq++, raw, &req, err, sizeof err);
                if (st != EB_OK) {
                    if (measured) {
                        count_error(&job->result, st);
                        if (job->result.errors <= 3)
                            fprintf(stderr, "bench load: submit failed: %s\n", err);
                    }
                } else {
                    in_flight *f = &table[embroker_request_id(req) & (slots - 1)];
                    if (f->req) { /* an id `slots` older still pending: treat as backlog */
                        embroker_request_free(&req);
                        if (measured)
                            job->result.backlog++;
                    } else {
                        *f = (in_flight){
                            .req = req, .intended_us = next, .op = op, .measured = measured};
                        in_flight_n++;
                    }
                }
            }
            next += (int64_t)(-log(uniform01(&rng)) / rate * 1e6);
            continue;
        }
        if (next >= end && in_flight_n == 0)
            break;
        if (now >= end + timeout_us)
            break; /* the rest timed out */
        int64_t wait = next < end ? next - now : 1000000;
        embroker_request_t *done = NULL;
        eb_status st = embroker_poll(eb, &done, wait >= 1000 ? (int)(wait / 1000) : 0);
        if (st == EB_OK && done) {
            in_flight *f = &table[embroker_request_id(done) & (slots - 1)];
            if (f->req == done) {
                complete(job, f, eb_now_us());
                in_flight_n--;
            }
        } else if (st == EB_ERR_NOT_FOUND && wait > 0) {
            eb_sleep_us(wait); /* nothing in flight: nothing can arrive before the next send */
        } else if (wait > 0 && wait < 1000) {
            eb_sleep_us(wait);
        }
    }
    for (size_t i = 0; i < slots; i++)
        if (table[i].req) {
            if (table[i].measured) {
                job->result.completed++;
                count_error(&job->result, EB_ERR_TIMEOUT);
            }
            embroker_request_free(&table[i].req);
        }
    free(table);
    free(raw);
}

static void *conn_main(void *arg)
{
    conn_job *job = arg;
    const eb_load_config *cfg = job->cfg;
    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.run_dir = cfg->run_dir;
    opt.timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 60000;
    opt.max_inline_bytes = 32u << 20;
    opt.inline_only = false;
    embroker_t *eb = NULL;
    if (embroker_connect(&opt, &eb, job->err, sizeof job->err) != EB_OK)
        job->failed = true;
    pthread_barrier_wait(job->start); /* everyone connected (or failed) */
    pthread_barrier_wait(job->start); /* the main thread has set t0 */
    if (!job->failed) {
        int64_t t0 = atomic_load(job->t0_us);
        int64_t measure_start = t0 + (int64_t)(cfg->warmup_s * 1e6);
        int64_t end = measure_start + (int64_t)(cfg->duration_s * 1e6);
        job->window_start_us = measure_start;
        job->window_end_us = end;
        if (cfg->mode == EB_LOAD_OPEN)
            run_open(job, eb, t0, measure_start, end);
        else
            run_closed(job, eb, measure_start, end, job->budget);
    }
    embroker_close(&eb);
    return NULL;
}

/* ---- public ------------------------------------------------------------------------------- */

int eb_load_run(const eb_load_config *cfg, eb_load_result *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    int n = cfg->clients > 0 ? cfg->clients : 1;
    if (cfg->mode == EB_LOAD_OPEN && !(cfg->rate > 0)) {
        snprintf(err, err_len, "open loop needs --rate > 0 (got %g)", cfg->rate);
        return -1;
    }
    conn_job *jobs = calloc((size_t)n, sizeof *jobs);
    pthread_t *threads = calloc((size_t)n, sizeof *threads);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n + 1);
    _Atomic int64_t t0 = 0;
    _Atomic int64_t budget = cfg->max_requests;
    for (int i = 0; i < n; i++) {
        jobs[i].cfg = cfg;
        jobs[i].index = i;
        jobs[i].start = &start;
        jobs[i].t0_us = &t0;
        jobs[i].budget = &budget;
        pthread_create(&threads[i], NULL, conn_main, &jobs[i]);
    }
    pthread_barrier_wait(&start);
    atomic_store(&t0, eb_now_us());
    pthread_barrier_wait(&start);
    for (int i = 0; i < n; i++)
        pthread_join(threads[i], NULL);
    int64_t measure_start = atomic_load(&t0) + (int64_t)(cfg->warmup_s * 1e6);
    int64_t last = measure_start + (int64_t)(cfg->duration_s * 1e6);
    eb_samples lag = {0};
    int rc = 0;
    int64_t window_ok = 0;
    for (int i = 0; i < n; i++) {
        conn_job *j = &jobs[i];
        if (j->failed && rc == 0) {
            snprintf(err, err_len, "connection %d: %s", i, j->err);
            rc = -1;
        }
        eb_samples_merge(&out->latency, &j->result.latency);
        for (int k = 0; k < EB_LOAD_N_OPS; k++)
            eb_samples_merge(&out->op_latency[k], &j->result.op_latency[k]);
        for (int k = 0; k < EB_LOAD_N_STAGES; k++)
            eb_samples_merge(&out->stages[k], &j->result.stages[k]);
        for (int k = 0; k < EB_LOAD_ERROR_SLOTS; k++)
            out->errors_by_code[k] += j->result.errors_by_code[k];
        out->backlog += j->result.backlog;
        out->sent += j->result.sent;
        out->completed += j->result.completed;
        out->errors += j->result.errors;
        if (j->last_completion_us > last)
            last = j->last_completion_us;
        window_ok += j->window_ok;
        eb_samples_merge(&lag, &j->send_lag);
    }
    out->latency.errors = out->errors + out->backlog;
    out->wall_s = (double)(last - measure_start) / 1e6;
    out->offered_rps = cfg->mode == EB_LOAD_OPEN ? cfg->rate : NAN;
    out->sent_rps = cfg->duration_s > 0 ? (double)out->sent / cfg->duration_s : NAN;
    /* a run that ended early (closed loop with a request budget) counts its own length */
    double window_s = out->wall_s < cfg->duration_s ? out->wall_s : cfg->duration_s;
    out->achieved_rps = window_s > 0 ? (double)window_ok / window_s : NAN;
    eb_summary ls;
    eb_samples_summarise(&lag, &ls);
    out->send_lag_p99_us = ls.n >= 1000 ? ls.p99_us : ls.max_us;
    eb_samples_free(&lag);
    pthread_barrier_destroy(&start);
    free(jobs);
    free(threads);
    return rc;
}

void eb_load_result_free(eb_load_result *r)
{
    eb_samples_free(&r->latency);
    for (int k = 0; k < EB_LOAD_N_OPS; k++)
        eb_samples_free(&r->op_latency[k]);
    for (int k = 0; k < EB_LOAD_N_STAGES; k++)
        eb_samples_free(&r->stages[k]);
    memset(r, 0, sizeof *r);
}

static double or_nan(double v)
{
    return v < 0 ? NAN : v;
}

void eb_load_result_row(const eb_load_result *r, eb_row *row)
{
    eb_samples copy = r->latency; /* summarising sorts in place; the order does not matter */
    eb_summary s;
    eb_samples_summarise(&copy, &s);
    eb_row_add(row, "offered_rps", r->offered_rps);
    eb_row_add(row, "sent_rps", r->sent_rps);
    eb_row_add(row, "achieved_rps", r->achieved_rps);
    eb_row_add(row, "n", (double)s.n);
    eb_row_add(row, "errors", (double)(r->errors + r->backlog));
    eb_row_add(row, "p50_us", s.p50_us);
    eb_row_add(row, "p90_us", s.p90_us);
    eb_row_add(row, "p99_us", or_nan(s.p99_us));
    eb_row_add(row, "p999_us", or_nan(s.p999_us));
    eb_row_add(row, "max_us", s.max_us);
    eb_row_add(row, "mean_us", s.mean_us);
    eb_row_add(row, "send_lag_p99_us", r->send_lag_p99_us);
}

int eb_load_stage_rows(eb_load_result *r, const char *label, eb_row *rows, int max)
{
    int n = 0;
    for (int k = 0; k < EB_LOAD_N_STAGES && n < max; k++) {
        if (r->stages[k].n == 0)
            continue;
        eb_summary s;
        eb_samples_summarise(&r->stages[k], &s);
        char name[96];
        snprintf(name, sizeof name, "%s %s", label, stage_names[k]);
        eb_row_init(&rows[n], name);
        eb_row_add(&rows[n], "n", (double)s.n);
        eb_row_add(&rows[n], "p50_us", s.p50_us);
        eb_row_add(&rows[n], "p90_us", s.p90_us);
        eb_row_add(&rows[n], "p99_us", or_nan(s.p99_us));
        eb_row_add(&rows[n], "mean_us", s.mean_us);
        n++;
    }
    return n;
}

static void json_num(FILE *f, const char *key, double v, bool comma)
{
    if (isnan(v) || v < 0)
        fprintf(f, "\"%s\": null%s", key, comma ? ", " : "");
    else
        fprintf(f, "\"%s\": %.6g%s", key, v, comma ? ", " : "");
}

static void json_summary(FILE *f, eb_samples *s)
{
    eb_summary sum;
    eb_samples_summarise(s, &sum);
    fprintf(f, "{\"n\": %zu, ", sum.n);
    json_num(f, "mean_us", sum.mean_us, true);
    json_num(f, "p50_us", sum.p50_us, true);
    json_num(f, "p90_us", sum.p90_us, true);
    json_num(f, "p99_us", sum.p99_us, true);
    json_num(f, "p999_us", sum.p999_us, true);
    json_num(f, "max_us", sum.max_us, false);
    fputc('}', f);
}

void eb_load_result_json(FILE *f, const eb_load_config *cfg, eb_load_result *r, const char *label)
{
    fprintf(f, "{\"label\": \"%s\", \"mode\": \"%s\", \"clients\": %d, ", label,
            cfg->mode == EB_LOAD_OPEN ? "open" : "closed", cfg->clients);
    json_num(f, "rate", cfg->mode == EB_LOAD_OPEN ? cfg->rate : NAN, true);
    fprintf(f, "\"duration_s\": %g, \"warmup_s\": %g, \"transport\": \"%s\", ", cfg->duration_s,
            cfg->warmup_s, cfg->force_inline ? "inline" : "shm");
    fprintf(f, "\"image_model\": \"%s\", \"text_model\": \"%s\", \"weights\": {",
            cfg->image_model ? cfg->image_model : "identity",
            cfg->text_model ? cfg->text_model : "identity-text");
    for (int k = 0; k < EB_LOAD_N_OPS; k++)
        fprintf(f, "%s\"%s\": %g", k ? ", " : "", op_names[k], cfg->weights[k]);
    fprintf(f, "}, \"sent\": %lld, \"completed\": %lld, \"errors\": %lld, \"backlog\": %lld, ",
            (long long)r->sent, (long long)r->completed, (long long)r->errors,
            (long long)r->backlog);
    json_num(f, "wall_s", r->wall_s, true);
    json_num(f, "achieved_rps", r->achieved_rps, true);
    json_num(f, "send_lag_p99_us", r->send_lag_p99_us, true);
    fprintf(f, "\"errors_by_code\": {");
    bool first = true;
    for (int k = 1; k < EB_LOAD_ERROR_SLOTS; k++)
        if (r->errors_by_code[k]) {
            fprintf(f, "%s\"%s\": %lld", first ? "" : ", ", eb_status_str((eb_status)-k),
                    (long long)r->errors_by_code[k]);
            first = false;
        }
    fprintf(f, "}, \"latency\": ");
    json_summary(f, &r->latency);
    fprintf(f, ", \"ops\": {");
    first = true;
    for (int k = 0; k < EB_LOAD_N_OPS; k++)
        if (r->op_latency[k].n) {
            fprintf(f, "%s\"%s\": ", first ? "" : ", ", op_names[k]);
            json_summary(f, &r->op_latency[k]);
            first = false;
        }
    fprintf(f, "}, \"stages\": {");
    first = true;
    for (int k = 0; k < EB_LOAD_N_STAGES; k++)
        if (r->stages[k].n) {
            fprintf(f, "%s\"%s\": ", first ? "" : ", ", stage_names[k]);
            json_summary(f, &r->stages[k]);
            first = false;
        }
    fprintf(f, "}}\n");
}

const char *eb_load_op_name(eb_load_op op)
{
    return op >= 0 && op < EB_LOAD_N_OPS ? op_names[op] : "?";
}

const char *eb_load_stage_name(eb_load_stage stage)
{
    return stage >= 0 && stage < EB_LOAD_N_STAGES ? stage_names[stage] : "?";
}
