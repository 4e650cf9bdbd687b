/* embroker-gpu-bench — SigLIP forward latency and throughput on the CUDA backend.
 *
 *   embroker-gpu-bench CKPT_DIR [--out DIR] [--batches 1,32,128,256] [--seconds S]
 *                      [--precision bf16] [--gemm-n 8192] [--latency-runs 200]
 *
 * Measures, from preprocessed pixels already on the device (the model's input area is filled
 * once; every forward reads it, so no host copy is timed):
 *   - batch-1 forward latency: p50 / p90 / min of single forwards, each timed to completion
 *     (launch + synchronise), with CUDA graphs (the worker's path) and without;
 *   - throughput at each batch size: back-to-back forwards for about S seconds, images/s;
 *   - achieved TFLOP/s = images/s x 35.42 GFLOP (SigLIP-base per image; scaled by the model's
 *     own count for other shapes) and its share of the card's BF16 matrix peak, measured in the
 *     same run as an n x n x n BF16 cuBLASLt GEMM.
 * Writes gpu_bench.md (a table) and gpu_bench.csv into DIR (default bench/results) and prints
 * the table. Exit status 77 without a CUDA backend, 1 on a failure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "eb_checkpoint.h"
#include "eb_clock.h"
#include "eb_cuda_ext.h"
#include "eb_cuda_loader.h"
#include "eb_ops.h"
#include "eb_siglip.h"

#define MAX_ROWS 32

typedef struct row {
    char what[96];
    double value;
    char unit[24];
    char note[160];
} row;

static row rows[MAX_ROWS];
static int nrows;

static void add_row(const char *what, double value, const char *unit, const char *note)
{
    if (nrows >= MAX_ROWS)
        return;
    row *r = &rows[nrows++];
    snprintf(r->what, sizeof(r->what), "%s", what);
    r->value = value;
    snprintf(r->unit, sizeof(r->unit), "%s", unit);
    snprintf(r->note, sizeof(r->note), "%s", note ? note : "");
    printf("  %-44s %12.3f %-10s %s\n", what, value, unit, r->note);
    fflush(stdout);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* FLOPs of one image's forward (matrix products and attention; what the 35.42 GFLOP of
 * SigLIP-base counts: 2 per multiply-add). */
static double forward_flops(const eb_siglip_config *c)
{
    double T = (double)c->tokens, C = (double)c->hidden, F = (double)c->mlp, L = (double)c->layers;
    double P = (double)(c->channels * c->patch_size * c->patch_size);
    double per_layer = 2 * T * C * 3 * C + 2 * 2 * T * T * C + 2 * T * C * C + 2 * 2 * T * C * F;
    double head = 2 * T * C * 2 * C + 2 * 2 * T * C + 2 * C * C + 2 * 2 * C * F;
    return 2 * T * P * C + L * per_layer + head;
}

static eb_status one_forward(eb_siglip *m, eb_backend *be, int64_t B, char *err, size_t err_len)
{
    eb_status st = eb_siglip_forward(m, B, err, err_len);
    if (st == EB_OK)
        st = be->iface.synchronize(be);
    return st;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *out = "bench/results", *batches = "1,32,128,256", *prec = "bf16";
    double seconds = 2.0;
    int gemm_n = 8192, lat_runs = 200;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--out") == 0 && v)
            out = v, i++;
        else if (strcmp(a, "--batches") == 0 && v)
            batches = v, i++;
        else if (strcmp(a, "--seconds") == 0 && v)
            seconds = atof(v), i++;
        else if (strcmp(a, "--precision") == 0 && v)
            prec = v, i++;
        else if (strcmp(a, "--gemm-n") == 0 && v)
            gemm_n = atoi(v), i++;
        else if (strcmp(a, "--latency-runs") == 0 && v)
            lat_runs = atoi(v), i++;
        else if (a[0] != '-' && !dir)
            dir = a;
        else {
            fprintf(stderr, "usage: embroker-gpu-bench CKPT_DIR [--out DIR] [--batches LIST] "
                            "[--seconds S] [--precision P] [--gemm-n N] [--latency-runs N]\n");
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "embroker-gpu-bench: give a checkpoint directory\n");
        return 2;
    }
    char err[1024], libpath[4096];
    eb_backend_params params = {.cuda_library = eb_cuda_loader_path(libpath, sizeof(libpath))};
    setenv("EB_CUDA_PRECISION", prec, 1);
    eb_backend *be = eb_backend_create("cuda", &params, err, sizeof(err));
    if (!be) {
        printf("embroker-gpu-bench: skipped: no CUDA backend: %s\n", err);
        return 77;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); // progress shows even if a step is killed by a timeout
    printf("embroker-gpu-bench: %s\n", be->device);
    eb_checkpoint *ck = eb_checkpoint_open(dir, err, sizeof(err));
    if (!ck) {
        printf("embroker-gpu-bench: %s\n", err);
        return 1;
    }
    int64_t bl[16];
    int nb = 0;
    int64_t max_b = 1;
    char list[128];
    snprintf(list, sizeof(list), "%s", batches);
    for (char *s = NULL, *p = strtok_r(list, ",", &s); p && nb < 16; p = strtok_r(NULL, ",", &s)) {
        bl[nb] = atoll(p);
        if (bl[nb] > max_b)
            max_b = bl[nb];
        nb++;
    }
    int64_t t0 = eb_now_us();
    eb_siglip *m = eb_siglip_load(be, ck, max_b, err, sizeof(err));
    if (!m) {
        printf("embroker-gpu-bench: %s\n", err);
        return 1;
    }
    const eb_siglip_config *cfg = eb_siglip_get_config(m);
    double flops = forward_flops(cfg);
    printf("  model %s: %.2f GFLOP per image; load %.2f s; weights %.1f MB, activations %.1f MB "
           "(max batch %lld)\n",
           dir, flops / 1e9, (double)(eb_now_us() - t0) / 1e6,
           (double)eb_siglip_weight_bytes(m) / 1e6, (double)eb_siglip_activation_bytes(m) / 1e6,
           (long long)max_b);
    // Pixels on the device: synthetic values in [-1, 1] for the largest batch, uploaded once.
    size_t npix = (size_t)max_b * cfg->channels * cfg->image_size * cfg->image_size;
    float *pix = malloc(npix * sizeof(float));
    if (!pix)
        return 1;
    uint64_t s = 42;
    for (size_t i = 0; i < npix; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        pix[i] = (float)(s % 2001) / 1000.0f - 1.0f;
    }
    if (be->iface.upload(be, eb_siglip_input(m), pix, npix * sizeof(float)) != EB_OK ||
        be->iface.synchronize(be) != EB_OK) {
        printf("embroker-gpu-bench: uploading pixels failed\n");
        return 1;
    }
    free(pix);

    double best_tflops = 0;
    for (int bi = 0; bi < nb; bi++) {
        int64_t B = bl[bi];
        // warm-up: the first forward records the graph for B, the second replays it
        for (int w = 0; w < 3; w++)
            if (one_forward(m, be, B, err, sizeof(err)) != EB_OK) {
                printf("embroker-gpu-bench: batch %lld: %s\n", (long long)B, err);
                return 1;
            }
        if (B == 1) {
            for (int graphs = 1; graphs >= 0; graphs--) {
                if (!graphs)
                    setenv("EB_CUDA_NO_GRAPHS", "1", 1);
                int N = lat_runs < 2 ? 2 : lat_runs > 10000 ? 10000 : lat_runs;
                static double lat[10000];
                for (int i = 0; i < N; i++) {
                    int64_t a = eb_now_us();
                    if (one_forward(m, be, 1, err, sizeof(err)) != EB_OK) {
                        printf("embroker-gpu-bench: %s\n", err);
                        return 1;
                    }
                    lat[i] = (double)(eb_now_us() - a) / 1000.0;
                }
                qsort(lat, N, sizeof(double), cmp_double);
                char note[160];
                snprintf(note, sizeof(note), "p90 %.3f ms, min %.3f ms, %d runs%s", lat[N * 9 / 10],
                         lat[0], N, graphs ? ", CUDA graph (worker path)" : ", no graph");
                add_row(graphs ? "batch-1 forward latency p50" : "batch-1 latency p50, no graphs",
                        lat[N / 2], "ms", note);
                unsetenv("EB_CUDA_NO_GRAPHS");
            }
        }
        int iters = 0;
        int64_t a = eb_now_us(), b = a;
        while ((double)(b - a) < seconds * 1e6 || iters < 3) {
            for (int k = 0; k < 4; k++)
                if (eb_siglip_forward(m, B, err, sizeof(err)) != EB_OK) {
                    printf("embroker-gpu-bench: %s\n", err);
                    return 1;
                }
            iters += 4;
            if (be->iface.synchronize(be) != EB_OK) {
                printf("embroker-gpu-bench: device failure at batch %lld\n", (long long)B);
                return 1;
            }
            b = eb_now_us();
        }
        double ips = (double)(B * iters) / ((double)(b - a) / 1e6);
        double tf = ips * flops / 1e12;
        if (tf > best_tflops)
            best_tflops = tf;
        char what[96], note[160];
        snprintf(what, sizeof(what), "throughput batch %lld", (long long)B);
        snprintf(note, sizeof(note), "%.1f TFLOP/s, %.3f ms per batch, %d batches", tf,
                 (double)(b - a) / 1000.0 / iters, iters);
        add_row(what, ips, "images/s", note);
    }
    eb_siglip_destroy(&m);

    eb_cuda_ext_gemm_peak_fn peak;
    void *sym = eb_cuda_loader_symbol(EB_CUDA_EXT_GEMM_PEAK, err, sizeof(err));
    memcpy(&peak, &sym, sizeof(peak));
    double peak_tf = 0;
    if (peak && peak(be, gemm_n, 20, &peak_tf) == EB_OK) {
        char note[160];
        snprintf(note, sizeof(note), "cuBLASLt %dx%dx%d BF16 GEMM, fp32 accumulate, 20 runs",
                 gemm_n, gemm_n, gemm_n);
        add_row("BF16 matrix peak (measured)", peak_tf, "TFLOP/s", note);
        snprintf(note, sizeof(note), "best throughput row: %.1f TFLOP/s (%.2f GFLOP/image)",
                 best_tflops, flops / 1e9);
        add_row("model share of BF16 peak", 100.0 * best_tflops / peak_tf, "%", note);
    } else {
        printf("embroker-gpu-bench: GEMM peak not measured: %s\n", sym ? "failed" : err);
    }

    // Results files.
    mkdir(out, 0755);
    char path[4096];
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", gmtime(&now));
    snprintf(path, sizeof(path), "%s/gpu_bench.csv", out);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "metric,value,unit,note,device,precision,model,date\n");
        for (int i = 0; i < nrows; i++)
            fprintf(f, "\"%s\",%.4f,%s,\"%s\",\"%s\",%s,\"%s\",%s\n", rows[i].what, rows[i].value,
                    rows[i].unit, rows[i].note, be->device, prec, dir, date);
        fclose(f);
    }
    snprintf(path, sizeof(path), "%s/gpu_bench.md", out);
    f = fopen(path, "w");
    if (f) {
        fprintf(f, "SigLIP on %s, checkpoint %s, %s, %s.\n\n", be->device, dir, prec, date);
        fprintf(f, "| metric | value | unit | note |\n|---|---:|---|---|\n");
        for (int i = 0; i < nrows; i++)
            fprintf(f, "| %s | %.3f | %s | %s |\n", rows[i].what, rows[i].value, rows[i].unit,
                    rows[i].note);
        fclose(f);
    }
    eb_checkpoint_close(&ck);
    eb_backend_destroy(&be);
    return 0;
}
