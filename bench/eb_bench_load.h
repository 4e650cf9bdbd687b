/* eb_bench_load — the load generator of embroker-bench, over the public client library.
 *
 * Two ways to offer load:
 *   closed loop  N clients, each with one request in flight: submit, wait, repeat. Throughput is
 *                what the system gives back; latency is measured from the real submit.
 *   open loop    requests arrive as a Poisson process at a target rate, whatever the system does
 *                with them, spread over `clients` connections (each connection draws its own
 *                Poisson stream at rate/clients; their sum is Poisson at `rate`). Latency is
 *                measured from the INTENDED send time, so when the generator or the system falls
 *                behind, the wait is charged to the requests that waited (no coordinated
 *                omission). Past saturation the queues grow until the broker answers
 *                EB_ERR_BUSY or the generator's in-flight cap refuses to send ("backlog").
 *
 * Operations: embed-image (files from a directory, or synthetic raw RGB inputs of a given
 * size), embed-text (short generated texts, or lines of a file), scan (an image search against
 * the catalogue; needs a broker with --db-url and a loaded template), and weighted mixes.
 *
 * Results: the latency distribution (p50/p90/p99/p99.9/max, p99 only from 1,000 samples),
 * throughput, errors by status code, and the per-stage breakdown from the replies' timings
 * (queue, copy, hash, decode, preprocess, infer, broker total, and the client's own share). */
#ifndef EB_BENCH_LOAD_H
#define EB_BENCH_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "eb_bench_stats.h"
#include "eb_status.h"

typedef enum eb_load_mode {
    EB_LOAD_CLOSED = 0,
    EB_LOAD_OPEN = 1,
} eb_load_mode;

typedef enum eb_load_op {
    EB_LOAD_EMBED_IMAGE = 0,
    EB_LOAD_EMBED_TEXT = 1,
    EB_LOAD_SCAN = 2, /* embed the image and search the catalogue (embroker_submit_scan) */
    EB_LOAD_N_OPS = 3,
} eb_load_op;

/* Stages of the per-stage breakdown, in the order they are reported. */
typedef enum eb_load_stage {
    EB_LOAD_STAGE_QUEUE = 0,
    EB_LOAD_STAGE_COPY,
    EB_LOAD_STAGE_HASH,
    EB_LOAD_STAGE_DECODE,
    EB_LOAD_STAGE_PREPROCESS,
    EB_LOAD_STAGE_INFER,
    EB_LOAD_STAGE_SEARCH,       /* scan: the pgvector search */
    EB_LOAD_STAGE_BROKER_TOTAL, /* broker receive to broker reply */
    EB_LOAD_STAGE_CLIENT,       /* client total - broker total: library, sockets, process hops */
    EB_LOAD_N_STAGES,
} eb_load_stage;

/* What the generator sends: inputs are loaded once and reused round-robin (an image model with
 * a cache would need distinct inputs; the benchmark broker runs without one). */
typedef struct eb_load_inputs {
    uint8_t **images; /* encoded image files, or NULL entries; owned by this struct */
    size_t *image_lens;
    size_t n_images;
    size_t raw_bytes;   /* n_images == 0: synthetic raw RGB inputs of this many bytes, */
    uint32_t raw_width; /* as raw_width x raw_height pixels (0: one row of raw_bytes / 3) */
    uint32_t raw_height;
    char **texts; /* owned by this struct */
    size_t n_texts;
} eb_load_inputs;

/* Read every .jpg/.jpeg/.png/.webp file of `dir` (sorted by name; at most 1000). Returns 0, or
 * -1 with the reason in err (no such directory, no image in it, a read failed). */
int eb_load_inputs_images(eb_load_inputs *in, const char *dir, char *err, size_t err_len);

/* Texts: the lines of `path` (at most 10000, empty ones skipped), or when path is NULL `count`
 * generated sentences of about 12 words. Returns 0, or -1 with the reason in err. */
int eb_load_inputs_texts(eb_load_inputs *in, const char *path, size_t count, char *err,
                         size_t err_len);

void eb_load_inputs_free(eb_load_inputs *in);

typedef struct eb_load_config {
    const char *run_dir; /* broker's run directory */
    eb_load_mode mode;
    int clients;                   /* closed: concurrent clients; open: connections */
    double rate;                   /* open: mean arrivals per second */
    double duration_s;             /* measured phase */
    double warmup_s;               /* unmeasured phase before it (same load) */
    int64_t max_requests;          /* closed: stop after this many measured requests (0: none) */
    double weights[EB_LOAD_N_OPS]; /* relative frequency of each op (all 0: embed-image only) */
    const char *image_model;       /* default "identity" */
    const char *text_model;        /* default "identity-text" */
    const char *scan_template;     /* scan: BusinessTemplate searched (default "demo") */
    uint32_t scan_k;               /* scan: matches (0: the broker's default) */
    const eb_load_inputs *inputs;
    bool force_inline; /* inputs inline in the message instead of shared memory */
    int timeout_ms;    /* per request (default 60000) */
    int max_in_flight; /* open: per connection (default 4096) */
    uint64_t seed;     /* arrival process and op choice (default 1) */
} eb_load_config;

/* Error counts by eb_status (index -status), plus the generator's own refusals. */
#define EB_LOAD_ERROR_SLOTS (-EB_STATUS_MIN + 1)

typedef struct eb_load_result {
    eb_samples latency; /* all measured requests that succeeded */
    eb_samples op_latency[EB_LOAD_N_OPS];
    eb_samples stages[EB_LOAD_N_STAGES];
    int64_t errors_by_code[EB_LOAD_ERROR_SLOTS]; /* [0]: unused */
    int64_t backlog; /* open loop: arrivals not sent because the in-flight cap was hit */
    int64_t sent, completed, errors;
    double wall_s;          /* measured phase, first intended send to last completion */
    double offered_rps;     /* open: the target rate; closed: NaN */
    double sent_rps;        /* sends per second of the measured phase (open: the rate the
                               Poisson draw actually offered) */
    double achieved_rps;    /* successful completions per second inside the measured phase
                               (whenever sent: warm-up requests finishing in it count, the drain
                               after it does not) */
    double send_lag_p99_us; /* open: how late sends went out behind their intended time */
} eb_load_result;

/* Run one load level and fill *out (free with eb_load_result_free). Returns 0, or -1 with the
 * reason in err when the generator could not run at all (no connection); failed requests are
 * counted in *out, not returned. */
int eb_load_run(const eb_load_config *cfg, eb_load_result *out, char *err, size_t err_len);

void eb_load_result_free(eb_load_result *r);

/* Append the summary columns (offered/sent/achieved rps, n, errors, p50..max, mean, send lag) to an
 * initialised row, for the table and the CSV (12 columns). */
void eb_load_result_row(const eb_load_result *r, eb_row *row);

/* Per-stage rows: p50/p90/p99 of each stage that ran (label "<label> <stage>"); returns how
 * many were written (at most max). */
int eb_load_stage_rows(eb_load_result *r, const char *label, eb_row *rows, int max);

/* The whole result as one JSON object (config, summary, percentiles, errors by code name,
 * stages) on one line to f. */
void eb_load_result_json(FILE *f, const eb_load_config *cfg, eb_load_result *r, const char *label);

const char *eb_load_op_name(eb_load_op op);
const char *eb_load_stage_name(eb_load_stage stage);

#endif
