/* qwen3-gpu-bench — Qwen3-Embedding on the CUDA backend: the model comparison against the CPU
 * backend and the GPU benchmark of issue 9 (scripts/gpu-check-qwen3 runs both).
 *
 *   qwen3-gpu-bench compare CKPT_DIR --case NAME [--fixtures DIR] [--csv FILE]
 *   qwen3-gpu-bench bench CKPT_DIR [--out DIR] [--seconds S] [--quick] [--doc TOKENS]
 *
 * compare: embeds the reference corpus of fixture case NAME (tests/fixtures/qwen3/index.json:
 *   token ids written by tools/reference/qwen3.py with the tokenizers library, so no tokenizer
 *   is needed here; the checkpoint must be the one the case names, made with mkcheckpoint) on
 *   the CPU backend and on the CUDA backend in FP32 and BF16, in the case's mixed-length batches
 *   of consecutive texts, and checks per text:
 *     FP32: relative L2 to the CPU <= 1e-4 (and reports the distance to transformers' vectors);
 *     BF16: cosine to the CPU >= 0.999 (the floor), reporting the measured max relative L2;
 *     batch composition: every text alone (B = 1), regrouped in batches of 7 in reverse order,
 *     and through the padded layout (one attention call with kv_lens) must give the batched
 *     result within the same tolerance (FP32 1e-4 relative; BF16 cosine >= 0.999).
 *   Prints one line per (precision, check) ending in ok/FAIL; exit 1 on any FAIL.
 * bench (BF16, the serving precision): on the Qwen3-Embedding-0.6B layout with random token ids
 *   (the weights are random too, so only speed is meaningful):
 *     batch-1 latency of a 16-token query, end to end through eb_qwen3_embed (ids upload,
 *     forward, embedding download) on a packed-layout instance: p50 / p90 / min;
 *     tokens/s for batches of 16, 256 and 4,096 texts of 64 tokens, and one 8,192-token
 *     document (padded layout: one attention call per layer for equal lengths), the document
 *     both with the default fp32 attention and with EB_CUDA_ATTN=tc (tensor cores);
 *     achieved TFLOP/s = tokens/s x (0.88 GFLOP + attention per token) and its share of the
 *     card's BF16 peak, measured in the same run with an 8192^3 cuBLASLt GEMM;
 *     the varlen attention kernel alone on the 8,192-token document, fp32 vs tensor cores.
 *   Writes qwen3_gpu_bench.md and .csv into DIR (default bench/results).
 * Exit status 77 without a CUDA backend (or device), 1 on a failure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cJSON.h>

#include "eb_checkpoint.h"
#include "eb_clock.h"
#include "eb_cpu_ops.h"
#include "eb_cuda_ext.h"
#include "eb_cuda_loader.h"
#include "eb_cuda_qwen3_ext.h"
#include "eb_ops.h"
#include "eb_qwen3.h"

#define EOS_ID 151643

static char g_libpath[4096];

/* ---- small helpers ---------------------------------------------------------------------------- */

static void *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    if (p) {
        p[n] = 0;
        *len = (size_t)n;
    }
    return p;
}

static eb_backend *make_backend(const char *name, const char *prec, char *err, size_t err_len)
{
    eb_backend_params params = {.n_threads = 0, .device_index = 0,
                                .cuda_library = eb_cuda_loader_path(g_libpath, sizeof(g_libpath))};
    // QWEN3_GPU_BENCH_CPU_ONLY=1 runs every "cuda" step on the CPU backend: a dry run of this
    // program's own logic on a machine without a GPU (results are then CPU vs CPU).
    const char *dry = getenv("QWEN3_GPU_BENCH_CPU_ONLY");
    if (dry && strcmp(dry, "1") == 0)
        name = "cpu";
    if (prec)
        setenv("EB_CUDA_PRECISION", prec, 1);
    eb_backend *be = eb_backend_create(name, &params, err, err_len);
    unsetenv("EB_CUDA_PRECISION");
    return be;
}

static eb_qwen3 *load_model(eb_backend *be, const char *dir, int64_t max_batch, int64_t max_tokens,
                            int64_t max_total, eb_qwen3_layout layout)
{
    char err[1024];
    eb_checkpoint *ck = eb_checkpoint_open(dir, err, sizeof(err));
    if (!ck) {
        printf("qwen3-gpu-bench: %s\n", err);
        return NULL;
    }
    eb_qwen3_params p = {.max_batch = max_batch, .max_tokens = max_tokens,
                         .max_total_tokens = max_total, .layout = layout};
    eb_qwen3 *m = eb_qwen3_load(be, ck, &p, err, sizeof(err));
    eb_checkpoint_close(&ck);
    if (!m)
        printf("qwen3-gpu-bench: loading %s on %s: %s\n", dir, be->name, err);
    return m;
}

static double dot(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

static double rel_l2(const float *got, const float *ref, int64_t n)
{
    double se = 0, sr = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)got[i] - ref[i];
        se += d * d;
        sr += (double)ref[i] * ref[i];
    }
    return sr > 0 ? sqrt(se / sr) : sqrt(se);
}

static double cosine(const float *a, const float *b, int64_t n)
{
    double na = sqrt(dot(a, a, n)), nb = sqrt(dot(b, b, n));
    return na > 0 && nb > 0 ? dot(a, b, n) / (na * nb) : 0.0;
}

/* ---- compare ---------------------------------------------------------------------------------- */

typedef struct corpus {
    int64_t n, hidden, max_tokens, batch;
    int32_t *lens;
    int64_t *off; /* first id of each text */
    int32_t *ids;
    float *ref;   /* transformers' embeddings (n, hidden) */
} corpus;

static int load_corpus(const char *fixdir, const char *name, corpus *c)
{
    memset(c, 0, sizeof(*c));
    char path[4096];
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/index.json", fixdir);
    char *txt = read_all(path, &len);
    cJSON *root = txt ? cJSON_Parse(txt) : NULL;
    free(txt);
    if (!root) {
        printf("qwen3-gpu-bench: cannot read %s\n", path);
        return -1;
    }
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases"), *cs = NULL, *it;
    cJSON_ArrayForEach(it, cases)
    {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name");
        if (cJSON_IsString(nm) && strcmp(nm->valuestring, name) == 0)
            cs = it;
    }
    if (!cs) {
        printf("qwen3-gpu-bench: no case \"%s\" in %s\n", name, path);
        cJSON_Delete(root);
        return -1;
    }
    const cJSON *lens = cJSON_GetObjectItemCaseSensitive(cs, "lens");
    c->n = cJSON_GetArraySize(lens);
    c->hidden = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(cs, "hidden_size"));
    c->max_tokens = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(cs, "max_tokens"));
    c->batch = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(cs, "batch"));
    c->lens = calloc((size_t)c->n + 1, sizeof(int32_t));
    c->off = calloc((size_t)c->n + 1, sizeof(int64_t));
    int64_t i = 0, total = 0;
    cJSON_ArrayForEach(it, lens)
    {
        c->lens[i] = (int32_t)it->valuedouble;
        c->off[i] = total;
        total += c->lens[i];
        i++;
    }
    char ids_path[4096], emb_path[4096];
    snprintf(ids_path, sizeof(ids_path), "%s/%s", fixdir,
             cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cs, "ids_file")));
    snprintf(emb_path, sizeof(emb_path), "%s/%s", fixdir,
             cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cs, "emb_file")));
    cJSON_Delete(root);
    c->ids = read_all(ids_path, &len);
    if (!c->ids || len != (size_t)total * 4) {
        printf("qwen3-gpu-bench: %s: %zu bytes, expected %lld ids\n", ids_path, len,
               (long long)total);
        return -1;
    }
    c->ref = read_all(emb_path, &len);
    if (!c->ref || len != (size_t)(c->n * c->hidden) * 4) {
        printf("qwen3-gpu-bench: %s: %zu bytes, expected %lld x %lld floats\n", emb_path, len,
               (long long)c->n, (long long)c->hidden);
        return -1;
    }
    if (c->n <= 0 || c->hidden <= 0 || c->batch <= 0 || c->max_tokens <= 0) {
        printf("qwen3-gpu-bench: case %s has an empty corpus or bad sizes\n", name);
        return -1;
    }
    return 0;
}

static void free_corpus(corpus *c)
{
    free(c->lens), free(c->off), free(c->ids), free(c->ref);
    memset(c, 0, sizeof(*c));
}

/* Embed texts order[0..count-1] of the corpus in groups of `group` (in that order) into out
 * (indexed by text number). */
static eb_status embed_groups(eb_qwen3 *m, const corpus *c, const int64_t *order, int64_t count,
                              int64_t group, float *out)
{
    char err[1024];
    int32_t *ids = malloc((size_t)(c->batch > group ? c->batch : group) * (size_t)c->max_tokens *
                          sizeof(int32_t));
    int32_t *lens = malloc((size_t)group * sizeof(int32_t));
    float *emb = malloc((size_t)(group * c->hidden) * sizeof(float));
    eb_status st = ids && lens && emb ? EB_OK : EB_ERR_NOMEM;
    for (int64_t s = 0; st == EB_OK && s < count; s += group) {
        int64_t B = count - s < group ? count - s : group, at = 0;
        for (int64_t b = 0; b < B; b++) {
            int64_t t = order[s + b];
            lens[b] = c->lens[t];
            memcpy(ids + at, c->ids + c->off[t], (size_t)c->lens[t] * sizeof(int32_t));
            at += c->lens[t];
        }
        st = eb_qwen3_embed(m, ids, lens, B, 0, emb, err, sizeof(err));
        if (st != EB_OK)
            printf("qwen3-gpu-bench: embed: %s\n", err);
        for (int64_t b = 0; st == EB_OK && b < B; b++)
            memcpy(out + order[s + b] * c->hidden, emb + b * c->hidden,
                   (size_t)c->hidden * sizeof(float));
    }
    free(ids), free(lens), free(emb);
    return st;
}

typedef struct stat2 {
    double max_rel, min_cos;
} stat2;

static stat2 diff_stats(const float *got, const float *ref, int64_t n, int64_t C)
{
    stat2 s = {0, 1};
    for (int64_t i = 0; i < n; i++) {
        double r = rel_l2(got + i * C, ref + i * C, C), cs = cosine(got + i * C, ref + i * C, C);
        s.max_rel = r > s.max_rel ? r : s.max_rel;
        s.min_cos = cs < s.min_cos ? cs : s.min_cos;
    }
    return s;
}

static int g_fails;

static void verdict(FILE *csv, const char *ckname, const char *prec, const char *what, stat2 s,
                    bool fp32)
{
    bool ok = fp32 ? s.max_rel <= 1e-4 : s.min_cos >= 0.999;
    printf("  cuda %-4s %-12s %-40s max rel_l2 %.2e  min cos %.7f  (%s)  %s\n", prec, ckname, what,
           s.max_rel, s.min_cos, fp32 ? "tol rel_l2 1e-4" : "floor cos 0.999", ok ? "ok" : "FAIL");
    fflush(stdout);
    if (csv)
        fprintf(csv, "%s,%s,%s,%.3e,%.8f,%s\n", ckname, prec, what, s.max_rel, s.min_cos,
                ok ? "ok" : "FAIL");
    g_fails += !ok;
}

static int cmd_compare(int argc, char **argv)
{
    const char *ckpt = NULL, *name = NULL, *fixdir = "tests/fixtures/qwen3", *csvp = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--case") == 0 && v)
            name = v, i++;
        else if (strcmp(a, "--fixtures") == 0 && v)
            fixdir = v, i++;
        else if (strcmp(a, "--csv") == 0 && v)
            csvp = v, i++;
        else if (a[0] != '-' && !ckpt)
            ckpt = a;
        else {
            fprintf(stderr, "usage: qwen3-gpu-bench compare CKPT_DIR --case NAME [--fixtures DIR] "
                            "[--csv FILE]\n");
            return 2;
        }
    }
    if (!ckpt || !name) {
        fprintf(stderr, "qwen3-gpu-bench compare: give a checkpoint directory and --case\n");
        return 2;
    }
    char err[1024];
    eb_backend *probe = make_backend("cuda", "fp32", err, sizeof(err));
    if (!probe) {
        printf("qwen3-gpu-bench: skipped: no CUDA backend: %s\n", err);
        return 77;
    }
    eb_backend_destroy(&probe);
    corpus c;
    if (load_corpus(fixdir, name, &c) != 0)
        return 1;
    int64_t n = c.n, C = c.hidden;
    int64_t *order = malloc((size_t)n * sizeof(int64_t)), *rev = malloc((size_t)n * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++)
        order[i] = i, rev[i] = n - 1 - i;
    float *cpu = malloc((size_t)(n * C) * 4), *got = malloc((size_t)(n * C) * 4);
    float *alt = malloc((size_t)(n * C) * 4);
    FILE *csv = csvp ? fopen(csvp, "a") : NULL;

    eb_backend *be = make_backend("cpu", NULL, err, sizeof(err));
    eb_qwen3 *m = be ? load_model(be, ckpt, c.batch, c.max_tokens, 0, EB_QWEN3_LAYOUT_PACKED) : NULL;
    if (!m || embed_groups(m, &c, order, n, c.batch, cpu) != EB_OK) {
        printf("qwen3-gpu-bench: the CPU reference failed\n");
        return 1;
    }
    eb_qwen3_destroy(&m);
    eb_backend_destroy(&be);
    stat2 ct = diff_stats(cpu, c.ref, n, C);
    printf("model %s (%s): %lld texts, %lld ids, batches of %lld; cpu vs transformers max rel_l2 "
           "%.2e min cos %.7f\n",
           name, ckpt, (long long)n, (long long)(c.off[n - 1] + c.lens[n - 1]),
           (long long)c.batch, ct.max_rel, ct.min_cos);

    static const char *const precs[2] = {"fp32", "bf16"};
    for (int p = 0; p < 2; p++) {
        bool fp32 = p == 0;
        be = make_backend("cuda", precs[p], err, sizeof(err));
        if (!be) {
            printf("qwen3-gpu-bench: CUDA backend (%s): %s\n", precs[p], err);
            return 1;
        }
        int64_t t0 = eb_now_us();
        m = load_model(be, ckpt, c.batch, c.max_tokens, 0, EB_QWEN3_LAYOUT_PACKED);
        if (!m || embed_groups(m, &c, order, n, c.batch, got) != EB_OK) {
            g_fails++;
            printf("  cuda %s %s: FAIL (load or embed)\n", precs[p], name);
            eb_qwen3_destroy(&m);
            eb_backend_destroy(&be);
            continue;
        }
        printf("  (%s: loaded and embedded in %.1f s on %s)\n", precs[p],
               (double)(eb_now_us() - t0) / 1e6, be->device);
        verdict(csv, name, precs[p], "vs CPU, mixed-length batches", diff_stats(got, cpu, n, C),
                fp32);
        stat2 tr = diff_stats(got, c.ref, n, C);
        printf("  cuda %-4s %-12s %-40s max rel_l2 %.2e  min cos %.7f  (information)\n", precs[p],
               name, "vs transformers", tr.max_rel, tr.min_cos);
        if (embed_groups(m, &c, order, n, 1, alt) == EB_OK)
            verdict(csv, name, precs[p], "composition: each text alone",
                    diff_stats(alt, got, n, C), fp32);
        else
            g_fails++;
        if (embed_groups(m, &c, rev, n, 7, alt) == EB_OK)
            verdict(csv, name, precs[p], "composition: batches of 7, reversed",
                    diff_stats(alt, got, n, C), fp32);
        else
            g_fails++;
        eb_qwen3_destroy(&m);
        m = load_model(be, ckpt, c.batch, c.max_tokens, 0, EB_QWEN3_LAYOUT_PADDED);
        if (m && embed_groups(m, &c, order, n, c.batch, alt) == EB_OK)
            verdict(csv, name, precs[p], "padded layout (attention with kv_lens)",
                    diff_stats(alt, got, n, C), fp32);
        else
            g_fails++;
        eb_qwen3_destroy(&m);
        eb_backend_destroy(&be);
    }
    if (csv)
        fclose(csv);
    free(order), free(rev), free(cpu), free(got), free(alt);
    free_corpus(&c);
    printf("qwen3-gpu-bench compare %s: %d failure(s)\n", name, g_fails);
    return g_fails ? 1 : 0;
}

/* ---- bench ------------------------------------------------------------------------------------ */

#define MAX_ROWS 24

typedef struct row {
    char what[96];
    double value;
    char unit[16];
    char note[200];
} row;

static row g_rows[MAX_ROWS];
static int g_nrows;

static void add_row(const char *what, double value, const char *unit, const char *note)
{
    if (g_nrows >= MAX_ROWS)
        return;
    row *r = &g_rows[g_nrows++];
    snprintf(r->what, sizeof(r->what), "%s", what);
    r->value = value;
    snprintf(r->unit, sizeof(r->unit), "%s", unit);
    snprintf(r->note, sizeof(r->note), "%s", note ? note : "");
    printf("  %-48s %12.3f %-10s %s\n", what, value, unit, r->note);
    fflush(stdout);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* FLOPs of one batch: 2 per multiply-add of every matrix product (0.88 GFLOP per token for the
 * 0.6B layout) plus causal attention, 4·H·D·L·T(T+1)/2 per sequence of T tokens. */
static double batch_flops(const eb_qwen3_config *c, int64_t B, int64_t T)
{
    double C = (double)c->hidden, F = (double)c->intermediate, L = (double)c->layers;
    double QD = (double)(c->heads * c->head_dim), KD = (double)(c->kv_heads * c->head_dim);
    double per_token = 2.0 * L * (C * QD + 2 * C * KD + QD * C + C * 2 * F + F * C);
    double attn = 4.0 * QD * L * (double)T * (double)(T + 1) / 2.0;
    return (double)B * ((double)T * per_token + attn);
}

static void fill_ids(int32_t *ids, int64_t B, int64_t T, int64_t vocab, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < B * T; i++) {
        s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
        ids[i] = (int32_t)((s * 2685821657736338717ull >> 20) % (uint64_t)(vocab - 1000));
        if (i % T == T - 1)
            ids[i] = vocab > EOS_ID ? EOS_ID : (int32_t)(vocab - 1); // the appended eos
    }
}

/* Seconds per embed of B texts of T tokens: `warm` untimed calls, then repeat until `seconds`
 * passed (at least `min_iters`). */
static double time_embed(eb_qwen3 *m, const int32_t *ids, int32_t *lens, int64_t B, int64_t T,
                         float *out, double seconds, int warm, int min_iters, int *iters_out)
{
    char err[1024];
    for (int64_t b = 0; b < B; b++)
        lens[b] = (int32_t)T;
    for (int i = 0; i < warm; i++)
        if (eb_qwen3_embed(m, ids, lens, B, 0, out, err, sizeof(err)) != EB_OK) {
            printf("qwen3-gpu-bench: embed %lldx%lld: %s\n", (long long)B, (long long)T, err);
            return -1;
        }
    int iters = 0;
    int64_t t0 = eb_now_us(), t1 = t0;
    while (iters < min_iters || (double)(t1 - t0) / 1e6 < seconds) {
        if (eb_qwen3_embed(m, ids, lens, B, 0, out, err, sizeof(err)) != EB_OK) {
            printf("qwen3-gpu-bench: embed %lldx%lld: %s\n", (long long)B, (long long)T, err);
            return -1;
        }
        iters++;
        t1 = eb_now_us();
        if (iters >= 1000)
            break;
    }
    *iters_out = iters;
    return (double)(t1 - t0) / 1e6 / iters;
}

static int cmd_bench(int argc, char **argv)
{
    const char *ckpt = NULL, *out = "bench/results";
    double seconds = 1.0;
    int64_t doc_len = 8192;
    bool quick = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--out") == 0 && v)
            out = v, i++;
        else if (strcmp(a, "--seconds") == 0 && v)
            seconds = atof(v), i++;
        else if (strcmp(a, "--quick") == 0)
            quick = true;
        else if (strcmp(a, "--doc") == 0 && v)
            doc_len = atoll(v), i++;
        else if (a[0] != '-' && !ckpt)
            ckpt = a;
        else {
            fprintf(stderr, "usage: qwen3-gpu-bench bench CKPT_DIR [--out DIR] [--seconds S] "
                            "[--quick] [--doc TOKENS]\n");
            return 2;
        }
    }
    if (!ckpt) {
        fprintf(stderr, "qwen3-gpu-bench bench: give a checkpoint directory\n");
        return 2;
    }
    char err[1024];
    eb_backend *be = make_backend("cuda", "bf16", err, sizeof(err));
    if (!be) {
        printf("qwen3-gpu-bench: skipped: no CUDA backend: %s\n", err);
        return 77;
    }
    printf("qwen3-gpu-bench: %s\n", be->device);
    const int64_t short_len = 64, big_batch = quick ? 256 : 4096;
    if (doc_len < 64) {
        fprintf(stderr, "qwen3-gpu-bench bench: --doc %lld is below 64 tokens\n",
                (long long)doc_len);
        return 2;
    }
    int64_t max_total = big_batch * short_len > doc_len ? big_batch * short_len : doc_len;
    int64_t t0 = eb_now_us();
    // Padded layout: equal-length batches are one attention call per layer (no padding to
    // waste), and the 8,192-token document is one sequence either way.
    eb_qwen3 *m = load_model(be, ckpt, big_batch, doc_len, max_total, EB_QWEN3_LAYOUT_PADDED);
    if (!m)
        return 1;
    const eb_qwen3_config *cfg = eb_qwen3_get_config(m);
    printf("  loaded %s in %.1f s: weights %.2f GB, activations %.2f GB\n", ckpt,
           (double)(eb_now_us() - t0) / 1e6, (double)eb_qwen3_weight_bytes(m) / 1e9,
           (double)eb_qwen3_activation_bytes(m) / 1e9);
    int32_t *ids = malloc((size_t)max_total * sizeof(int32_t));
    int32_t *lens = malloc((size_t)big_batch * sizeof(int32_t));
    float *emb = malloc((size_t)(big_batch * cfg->hidden) * sizeof(float));
    if (!ids || !lens || !emb)
        return 1;
    fill_ids(ids, 1, max_total, cfg->vocab, 7);

    // BF16 peak of this card, same run.
    double peak = 0;
    void *sym = eb_cuda_loader_symbol(EB_CUDA_EXT_GEMM_PEAK, err, sizeof(err));
    if (sym) {
        eb_cuda_ext_gemm_peak_fn fn;
        memcpy(&fn, &sym, sizeof(fn));
        if (fn(be, 8192, quick ? 5 : 20, &peak) != EB_OK)
            peak = 0;
    }
    add_row("BF16 GEMM peak (8192^3, cuBLASLt, measured)", peak, "TFLOP/s", "");

    // Batch-1 latency of a 16-token query, end to end through the model. A second, small model
    // instance in the packed layout: with one sequence it passes no kv_lens, so its attention
    // needs no host lengths (the worker would keep such an instance for interactive queries).
    {
        char e2[1024];
        int32_t l16 = 16;
        eb_qwen3 *m1 = load_model(be, ckpt, 1, 64, 64, EB_QWEN3_LAYOUT_PACKED);
        if (!m1)
            return 1;
        fill_ids(ids, 1, 16, cfg->vocab, 11);
        for (int i = 0; i < 5; i++)
            if (eb_qwen3_embed(m1, ids, &l16, 1, 0, emb, e2, sizeof(e2)) != EB_OK) {
                printf("qwen3-gpu-bench: %s\n", e2);
                return 1;
            }
        enum { N_LAT = 50 };
        double lat[N_LAT];
        for (int i = 0; i < N_LAT; i++) {
            int64_t a = eb_now_us();
            if (eb_qwen3_embed(m1, ids, &l16, 1, 0, emb, e2, sizeof(e2)) != EB_OK) {
                printf("qwen3-gpu-bench: %s\n", e2);
                return 1;
            }
            lat[i] = (double)(eb_now_us() - a) / 1000.0;
        }
        eb_qwen3_destroy(&m1);
        qsort(lat, N_LAT, sizeof(double), cmp_double);
        char note[200];
        snprintf(note, sizeof(note), "p90 %.3f ms, min %.3f ms, %d runs; target < 2 ms",
                 lat[N_LAT * 9 / 10], lat[0], N_LAT);
        add_row("batch-1 latency, 16-token query (p50)", lat[N_LAT / 2], "ms", note);
    }

    // Throughput: texts of 64 tokens, and one long document.
    struct {
        int64_t B, T;
    } shapes[4] = {{16, short_len}, {256, short_len}, {big_batch, short_len}, {1, doc_len}};
    int nshapes = 4;
    if (quick)
        shapes[2].B = 128, shapes[2].T = 128; // within max_total = 256 x 64
    for (int si = 0; si < nshapes; si++) {
        int64_t B = shapes[si].B, T = shapes[si].T;
        fill_ids(ids, B, T, cfg->vocab, 100 + (uint64_t)si);
        int iters = 0;
        double sec = time_embed(m, ids, lens, B, T, emb, seconds, 1, T >= 4096 || B >= 4096 ? 2 : 3,
                                &iters);
        char what[96], note[200];
        snprintf(what, sizeof(what), "tokens/s, %lld x %lld tokens", (long long)B, (long long)T);
        if (sec < 0) { // reported above; the other rows still run
            add_row(what, 0, "FAILED", "see the log");
            g_fails++;
            continue;
        }
        double toks = (double)(B * T) / sec, fl = batch_flops(cfg, B, T) / sec / 1e12;
        snprintf(note, sizeof(note), "%.2f ms per batch (%d runs); %.1f TFLOP/s = %.1f%% of peak%s",
                 sec * 1e3, iters, fl, peak > 0 ? 100.0 * fl / peak : 0.0,
                 B * T >= 4096 * 64 ? "; target >= 200,000 tokens/s" : "");
        add_row(what, toks, "tokens/s", note);
    }

    // The document again with the tensor-core attention (EB_CUDA_ATTN=tc, read when a backend
    // is created): a second backend and model instance sized for the document alone.
    if (!quick) {
        setenv("EB_CUDA_ATTN", "tc", 1);
        eb_backend *be2 = make_backend("cuda", "bf16", err, sizeof(err));
        unsetenv("EB_CUDA_ATTN");
        eb_qwen3 *m2 = be2 ? load_model(be2, ckpt, 1, doc_len, doc_len, EB_QWEN3_LAYOUT_PADDED)
                           : NULL;
        int iters = 0;
        double sec = m2 ? time_embed(m2, ids, lens, 1, doc_len, emb, seconds, 1, 2, &iters) : -1;
        char what[96], note[200];
        snprintf(what, sizeof(what), "tokens/s, 1 x %lld tokens, tensor-core attention",
                 (long long)doc_len);
        if (sec > 0) {
            double fl = batch_flops(cfg, 1, doc_len) / sec / 1e12;
            snprintf(note, sizeof(note),
                     "EB_CUDA_ATTN=tc; %.2f ms per batch (%d runs); %.1f TFLOP/s = %.1f%% of peak",
                     sec * 1e3, iters, fl, peak > 0 ? 100.0 * fl / peak : 0.0);
            add_row(what, (double)doc_len / sec, "tokens/s", note);
        } else {
            add_row(what, 0, "FAILED", "see the log");
            g_fails++;
        }
        eb_qwen3_destroy(&m2);
        eb_backend_destroy(&be2);
    }

    // The varlen attention kernel alone on the document: fp32 SIMT vs BF16 tensor cores.
    void *asym = eb_cuda_loader_symbol(EB_CUDA_Q3_ATTN_VARLEN, err, sizeof(err));
    if (asym && !quick) {
        eb_cuda_q3_attn_varlen_fn afn;
        memcpy(&afn, &asym, sizeof(afn));
        int64_t T = doc_len, QD = cfg->heads * cfg->head_dim, KD = cfg->kv_heads * cfg->head_dim;
        eb_buffer *buf = be->iface.buffer_alloc(be, (size_t)(T * (2 * QD + 2 * KD)) * 4 + 4096,
                                                EB_BUFFER_ACTIVATIONS);
        if (buf) {
            float *base = be->iface.buffer_base(be, buf);
            float *q = base, *k = q + T * QD, *v = k + T * KD, *o = v + T * KD;
            float *init = malloc((size_t)(T * QD) * 4);
            for (int64_t i = 0; init && i < T * QD; i++)
                init[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
            if (init) {
                be->iface.upload(be, q, init, (size_t)(T * QD) * 4);
                be->iface.upload(be, k, init, (size_t)(T * KD) * 4);
                be->iface.upload(be, v, init + 7, (size_t)(T * KD) * 4);
                be->iface.synchronize(be);
            }
            free(init);
            int32_t cu[2] = {0, (int32_t)T};
            double fl = 4.0 * (double)QD * (double)T * (double)(T + 1) / 2.0;
            for (int tc = 0; tc < 2; tc++) {
                eb_cuda_q3_varlen a = {.B = 1, .H = (int)cfg->heads, .Hkv = (int)cfg->kv_heads,
                                       .D = (int)cfg->head_dim, .max_seqlen = (int)T,
                                       .q_ts = QD, .k_ts = KD, .v_ts = KD, .o_ts = QD,
                                       .scale = 1.0f / sqrtf((float)cfg->head_dim), .causal = 1,
                                       .use_tensor_cores = tc, .cu_seqlens = cu};
                if (afn(o, q, k, v, &a) != EB_OK)
                    break;
                int64_t a0 = eb_now_us();
                for (int i = 0; i < 3; i++)
                    afn(o, q, k, v, &a);
                double ms = (double)(eb_now_us() - a0) / 3000.0;
                char what[96], note[200];
                snprintf(what, sizeof(what), "attention, %lld-token doc, one layer (%s)",
                         (long long)T, tc ? "BF16 tensor cores" : "fp32");
                snprintf(note, sizeof(note), "%.1f TFLOP/s; x %lld layers = %.0f ms per forward",
                         fl / (ms * 1e-3) / 1e12, (long long)cfg->layers, ms * (double)cfg->layers);
                add_row(what, ms, "ms", note);
            }
            be->iface.buffer_free(be, buf);
        }
    }

    // Write the table.
    mkdir(out, 0755);
    char path[4096];
    snprintf(path, sizeof(path), "%s/qwen3_gpu_bench.md", out);
    FILE *f = fopen(path, "w");
    snprintf(path, sizeof(path), "%s/qwen3_gpu_bench.csv", out);
    FILE *cf = fopen(path, "w");
    time_t now = time(NULL);
    char date[64];
    strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", gmtime(&now));
    if (f) {
        fprintf(f, "Qwen3-Embedding-0.6B layout (random weights) on %s, BF16, %s.\n\n", be->device,
                date);
        fprintf(f, "| measurement | value | unit | notes |\n|---|---:|---|---|\n");
        for (int i = 0; i < g_nrows; i++)
            fprintf(f, "| %s | %.3f | %s | %s |\n", g_rows[i].what, g_rows[i].value,
                    g_rows[i].unit, g_rows[i].note);
        fclose(f);
    }
    if (cf) {
        fprintf(cf, "measurement,value,unit,notes\n");
        for (int i = 0; i < g_nrows; i++)
            fprintf(cf, "\"%s\",%.6g,%s,\"%s\"\n", g_rows[i].what, g_rows[i].value, g_rows[i].unit,
                    g_rows[i].note);
        fclose(cf);
    }
    printf("qwen3-gpu-bench: wrote %s/qwen3_gpu_bench.md\n", out);
    free(ids), free(lens), free(emb);
    eb_qwen3_destroy(&m);
    eb_backend_destroy(&be);
    return g_fails ? 1 : 0;
}

int main(int argc, char **argv)
{
    eb_cpu_blas_ensure_coretype(argv); // the CPU reference with OpenBLAS's fast kernels
    if (argc >= 2 && strcmp(argv[1], "compare") == 0)
        return cmd_compare(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "bench") == 0)
        return cmd_bench(argc - 2, argv + 2);
    fprintf(stderr, "usage: qwen3-gpu-bench compare CKPT_DIR --case NAME [--fixtures DIR] "
                    "[--csv FILE]\n"
                    "       qwen3-gpu-bench bench CKPT_DIR [--out DIR] [--seconds S] [--quick] "
                    "[--doc TOKENS]\n");
    return 2;
}
