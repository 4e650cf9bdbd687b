/* eb_bench_models — time the models the way a worker runs them, without the transport.
 *
 * Each case runs once to warm up, then repeats until `seconds` have passed (at least 3 times)
 * and reports the median: these machines are noisy, and the median of several runs is what a
 * ratio against a peer measured the same way can stand on. */
#include "eb_bench_models.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eb_checkpoint.h"
#include "eb_clock.h"
#include "eb_cpu_ops.h"
#include "eb_ops.h"
#include "eb_qwen3.h"
#include "eb_siglip.h"
#include "eb_tokenizer.h"

void openblas_set_num_threads(int);

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median seconds of fn(arg) over repeats filling `seconds` (3..50 runs). */
static double median_seconds(void (*fn)(void *), void *arg, double seconds)
{
    double t[50];
    int n = 0;
    fn(arg); /* warm-up */
    int64_t start = eb_now_us();
    while (n < 50 && (n < 3 || (double)(eb_now_us() - start) / 1e6 < seconds)) {
        int64_t t0 = eb_now_us();
        fn(arg);
        t[n++] = (double)(eb_now_us() - t0) / 1e6;
    }
    qsort(t, (size_t)n, sizeof t[0], cmp_double);
    return t[n / 2];
}

typedef struct sgemm_job {
    int n;
    float *a, *b, *c;
} sgemm_job;

static void run_sgemm(void *arg)
{
    sgemm_job *j = arg;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->n, j->n, j->n, 1.0f, j->a, j->n, j->b,
                j->n, 0.0f, j->c, j->n);
}

double eb_bench_sgemm_gflops(int n, int threads, int reps)
{
    sgemm_job j = {n, malloc(sizeof(float) * (size_t)n * n), malloc(sizeof(float) * (size_t)n * n),
                   malloc(sizeof(float) * (size_t)n * n)};
    for (size_t i = 0; i < (size_t)n * n; i++) {
        j.a[i] = (float)(i % 17) * 0.01f;
        j.b[i] = (float)(i % 13) * 0.02f;
    }
    openblas_set_num_threads(threads);
    double s = median_seconds(run_sgemm, &j, 0.5 * reps);
    openblas_set_num_threads(1); /* the CPU backend drives OpenBLAS single-threaded */
    free(j.a);
    free(j.b);
    free(j.c);
    return 2.0 * n * (double)n * n / s / 1e9;
}

/* ---- SigLIP ----------------------------------------------------------------------------------- */

typedef struct siglip_job {
    eb_siglip *m;
    float *pixels, *out;
    int64_t batch;
} siglip_job;

static void run_siglip(void *arg)
{
    siglip_job *j = arg;
    char err[256];
    if (eb_siglip_embed(j->m, j->pixels, j->batch, NULL, j->out, err, sizeof err) != EB_OK)
        fprintf(stderr, "siglip forward failed: %s\n", err);
}

int eb_bench_siglip(const eb_config *cfg, eb_row *rows, int max_rows)
{
    char err[512];
    int threads = atoi(eb_config_get(cfg, "threads", "2"));
    double seconds = atof(eb_config_get(cfg, "seconds", "10"));
    const char *dir = eb_config_get(cfg, "siglip_dir", NULL);
    if (!dir) {
        fprintf(stderr, "bench siglip: --siglip-dir DIR is required\n");
        return -1;
    }
    long batches[8];
    int nb = 0;
    for (const char *s = eb_config_get(cfg, "batches", "1,8,32"); s && nb < 8;) {
        batches[nb++] = strtol(s, (char **)&s, 10);
        s = *s == ',' ? s + 1 : NULL;
    }
    double peak = eb_bench_sgemm_gflops(2048, threads, 3);
    eb_backend_params params = {.n_threads = threads};
    eb_backend *be = eb_cpu_backend_create(&params, err, sizeof err);
    eb_checkpoint *ck = be ? eb_checkpoint_open(dir, err, sizeof err) : NULL;
    long max_batch = 1;
    for (int i = 0; i < nb; i++)
        max_batch = batches[i] > max_batch ? batches[i] : max_batch;
    eb_siglip *m = ck ? eb_siglip_load(be, ck, max_batch, err, sizeof err) : NULL;
    if (!m) {
        fprintf(stderr, "bench siglip: %s\n", err);
        eb_checkpoint_close(&ck);
        eb_backend_destroy(&be);
        return -1;
    }
    const eb_siglip_config *c = eb_siglip_get_config(m);
    size_t px = (size_t)3 * (size_t)c->image_size * (size_t)c->image_size;
    siglip_job j = {m, calloc((size_t)max_batch * px, sizeof(float)),
                    calloc((size_t)max_batch * (size_t)c->hidden, sizeof(float)), 1};
    for (size_t i = 0; i < (size_t)max_batch * px; i++)
        j.pixels[i] = (float)((uint32_t)(i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    /* FLOPs per image of the vision tower: 2 per multiply-add of every matmul (patch embedding,
     * q/k/v/o, MLP, attention scores and values, the pooling head). 35.42 GFLOP for base. */
    double T = (double)c->tokens, C = (double)c->hidden, F = (double)c->mlp, L = (double)c->layers;
    double patch = 2.0 * T * C * (3.0 * (double)c->patch_size * (double)c->patch_size);
    double layer = 2.0 * T * C * C * 4 + 2.0 * T * C * F * 2 + 2.0 * 2 * T * T * C;
    double head = 2.0 * (C * C * 3 + T * C * 2 + C * C + C * F * 2) + 2.0 * T * C * 2;
    double gflop = (patch + L * layer + head) / 1e9;
    int n = 0;
    for (int i = 0; i < nb && n < max_rows; i++) {
        j.batch = batches[i];
        double s = median_seconds(run_siglip, &j, seconds);
        char label[96];
        snprintf(label, sizeof label, "embroker siglip batch %ld", batches[i]);
        eb_row_init(&rows[n], label);
        eb_row_add(&rows[n], "ms_per_batch", s * 1e3);
        eb_row_add(&rows[n], "images_per_s", (double)batches[i] / s);
        eb_row_add(&rows[n], "gflop_per_image", gflop);
        eb_row_add(&rows[n], "gflops", gflop * (double)batches[i] / s);
        eb_row_add(&rows[n], "sgemm_peak_gflops", peak);
        eb_row_add(&rows[n], "pct_of_sgemm_peak", 100.0 * gflop * (double)batches[i] / s / peak);
        n++;
    }
    free(j.pixels);
    free(j.out);
    eb_siglip_destroy(&m);
    eb_checkpoint_close(&ck);
    eb_backend_destroy(&be);
    return n;
}

/* ---- Qwen3 ------------------------------------------------------------------------------------ */

typedef struct qwen3_job {
    eb_qwen3 *m;
    int32_t *ids, *lens;
    int64_t batch;
    float *out;
} qwen3_job;

static void run_qwen3(void *arg)
{
    qwen3_job *j = arg;
    char err[256];
    if (eb_qwen3_embed(j->m, j->ids, j->lens, j->batch, 0, j->out, err, sizeof err) != EB_OK)
        fprintf(stderr, "qwen3 forward failed: %s\n", err);
}

int eb_bench_qwen3(const eb_config *cfg, eb_row *rows, int max_rows)
{
    char err[512];
    int threads = atoi(eb_config_get(cfg, "threads", "2"));
    double seconds = atof(eb_config_get(cfg, "seconds", "10"));
    const char *dir = eb_config_get(cfg, "qwen3_dir", NULL);
    if (!dir) {
        fprintf(stderr, "bench qwen3: --qwen3-dir DIR is required\n");
        return -1;
    }
    eb_backend_params params = {.n_threads = threads};
    eb_backend *be = eb_cpu_backend_create(&params, err, sizeof err);
    eb_checkpoint *ck = be ? eb_checkpoint_open(dir, err, sizeof err) : NULL;
    eb_qwen3_params qp = {.max_batch = 16, .max_tokens = 512, .max_total_tokens = 1024,
                          .layout = EB_QWEN3_LAYOUT_PACKED};
    eb_qwen3 *m = ck ? eb_qwen3_load(be, ck, &qp, err, sizeof err) : NULL;
    if (!m) {
        fprintf(stderr, "bench qwen3: %s\n", err);
        eb_checkpoint_close(&ck);
        eb_backend_destroy(&be);
        return -1;
    }
    const eb_qwen3_config *c = eb_qwen3_get_config(m);
    /* the cases of the issue: 16 texts of 64 tokens, one 512-token document, one 16-token query;
     * ids are arbitrary in-vocabulary tokens ending with the eos (the cost does not depend on
     * which tokens they are), the same the PyTorch peer is given */
    struct { const char *label; int64_t batch, len; } cases[] = {
        {"embroker qwen3 16 x 64 tokens", 16, 64},
        {"embroker qwen3 1 x 512 tokens", 1, 512},
        {"embroker qwen3 1 x 16 tokens (query)", 1, 16},
    };
    int n = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0] && n < max_rows; k++) {
        qwen3_job j = {m, malloc(sizeof(int32_t) * (size_t)(cases[k].batch * cases[k].len)),
                       malloc(sizeof(int32_t) * (size_t)cases[k].batch), cases[k].batch,
                       malloc(sizeof(float) * (size_t)(cases[k].batch * c->hidden))};
        for (int64_t i = 0; i < cases[k].batch * cases[k].len; i++)
            j.ids[i] = (int32_t)((i * 7919 + 13) % 150000);
        for (int64_t b = 0; b < cases[k].batch; b++) {
            j.lens[b] = (int32_t)cases[k].len;
            j.ids[(b + 1) * cases[k].len - 1] = 151643;
        }
        double s = median_seconds(run_qwen3, &j, seconds);
        double tokens = (double)(cases[k].batch * cases[k].len);
        eb_row_init(&rows[n], cases[k].label);
        eb_row_add(&rows[n], "ms", s * 1e3);
        eb_row_add(&rows[n], "tokens_per_s", tokens / s);
        n++;
        free(j.ids);
        free(j.lens);
        free(j.out);
    }
    eb_qwen3_destroy(&m);
    eb_checkpoint_close(&ck);
    eb_backend_destroy(&be);
    return n;
}

/* ---- tokenizer -------------------------------------------------------------------------------- */

typedef struct tok_job {
    eb_tokenizer *tok;
    eb_tokenizer_scratch *scratch;
    char **texts;
    size_t *lens;
    size_t n;
    int32_t *ids;
    size_t ids_cap;
} tok_job;

static void run_tokenizer(void *arg)
{
    tok_job *j = arg;
    char err[256];
    for (size_t i = 0; i < j->n; i++) {
        size_t n_ids;
        eb_tokenizer_encode(j->tok, j->scratch, j->texts[i], j->lens[i], NULL, j->ids, j->ids_cap,
                            &n_ids, err, sizeof err);
    }
}

/* The corpus is read as JSON lines {"text": ...}; only the text field is used. */
int eb_bench_tokenizer(const eb_config *cfg, eb_row *rows, int max_rows)
{
    char err[512];
    const char *path = eb_config_get(cfg, "tokenizer", "models/qwen3-tokenizer/tokenizer.json");
    const char *corpus = eb_config_get(cfg, "corpus", "tests/fixtures/qwen3_tokenizer/corpus.jsonl");
    double seconds = atof(eb_config_get(cfg, "seconds", "5"));
    tok_job j = {0};
    j.tok = eb_tokenizer_load(path, err, sizeof err);
    if (!j.tok || max_rows < 1) {
        fprintf(stderr, "bench tokenizer: %s\n", err);
        return -1;
    }
    FILE *f = fopen(corpus, "r");
    if (!f) {
        fprintf(stderr, "bench tokenizer: cannot read %s\n", corpus);
        eb_tokenizer_destroy(&j.tok);
        return -1;
    }
    size_t cap = 0, bytes = 0;
    char *line = NULL;
    size_t line_cap = 0;
    while (getline(&line, &line_cap, f) > 0) {
        cJSON *o = cJSON_Parse(line);
        const char *t = cJSON_GetStringValue(cJSON_GetObjectItem(o, "text"));
        if (t) {
            if (j.n == cap) {
                cap = cap ? cap * 2 : 1024;
                j.texts = realloc(j.texts, cap * sizeof *j.texts);
                j.lens = realloc(j.lens, cap * sizeof *j.lens);
            }
            j.lens[j.n] = strlen(t);
            j.texts[j.n++] = strdup(t);
            bytes += strlen(t);
            if (eb_tokenizer_max_ids(strlen(t)) > j.ids_cap)
                j.ids_cap = eb_tokenizer_max_ids(strlen(t));
        }
        cJSON_Delete(o);
    }
    free(line);
    fclose(f);
    j.ids = malloc(j.ids_cap * sizeof *j.ids);
    j.scratch = eb_tokenizer_scratch_new(j.tok);
    double s = median_seconds(run_tokenizer, &j, seconds);
    eb_row_init(&rows[0], "embroker tokenizer (1 thread)");
    eb_row_add(&rows[0], "texts", (double)j.n);
    eb_row_add(&rows[0], "MB", (double)bytes / 1e6);
    eb_row_add(&rows[0], "MB_per_s", (double)bytes / 1e6 / s);
    for (size_t i = 0; i < j.n; i++)
        free(j.texts[i]);
    free(j.texts);
    free(j.lens);
    free(j.ids);
    eb_tokenizer_scratch_destroy(&j.scratch);
    eb_tokenizer_destroy(&j.tok);
    return 1;
}
