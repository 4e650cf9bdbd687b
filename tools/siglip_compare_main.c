/* siglip-compare — SigLIP embeddings on the CUDA backend against the CPU backend.
 *
 *   siglip-compare [--precision LIST] [--images DIR] [--count N] [--csv FILE] [--cpu-only]
 *                  CKPT_DIR...
 *
 * For every checkpoint directory: the CPU backend (the reference, itself checked against
 * transformers) embeds N preprocessed images as one batch; then, for every CUDA precision in
 * LIST (default fp32,tf32,bf16), the CUDA backend embeds the same pixels, as one batch and
 * each image alone. Reported per (model, precision): the largest relative L2 distance of
 * pooler_output to the CPU's, the smallest cosine similarity, and the largest difference between
 * an image embedded alone and inside the batch (batch invariance on the GPU).
 *
 * Pass criteria (the issue's): FP32 relative L2 <= 1e-4; BF16 cosine >= 0.999 (the floor);
 * TF32 and BF16 relative L2 are measured and reported, with a provisional bound of 2e-2 (TF32)
 * and 5e-2 (BF16) so a gross error still fails.
 *
 * Inputs: the images of DIR (JPEG/PNG/WebP, decoded and preprocessed exactly like the worker),
 * or, without --images or when DIR does not exist, N synthetic images (smooth gradients plus
 * noise, seeded) already normalised to [-1, 1]. Exit status: 0 all pass, 1 a failure, 77 no
 * CUDA backend (printed why), 2 usage.
 */
#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eb_checkpoint.h"
#include "eb_clock.h"
#include "eb_cuda_loader.h"
#include "eb_image.h"
#include "eb_ops.h"
#include "eb_preprocess.h"
#include "eb_siglip.h"

#define MAX_IMAGES 64

typedef struct opts {
    const char *precisions;
    const char *images;
    const char *csv;
    int count;
    bool cpu_only; /* --cpu-only: only the CPU forward (a check of the harness without a GPU) */
} opts;

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = n > 0 ? malloc((size_t)n) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Fill pixels (count, 3, S, S) from the images of dir (sorted by name), preprocessed like the
 * worker. Returns how many were loaded (0 when dir is unusable). */
static int load_images(const char *dir, int count, int S, const eb_image_preproc *pp,
                       float *pixels)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256)
        if (e->d_name[0] != '.')
            names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof(names[0]), cmp_str);
    int got = 0;
    for (int i = 0; i < n && got < count; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        size_t len = 0;
        uint8_t *bytes = read_file(path, &len);
        if (!bytes)
            continue;
        eb_image img;
        char err[256];
        if (eb_image_decode(bytes, len, EB_IMAGE_AUTO, NULL, &img, err, sizeof(err)) == EB_OK) {
            if (eb_preprocess_siglip(&img, S, pp->mean, pp->std,
                                     pixels + (size_t)got * 3 * S * S) == EB_OK) {
                printf("  image %d: %s (%dx%d)\n", got, names[i], img.width, img.height);
                got++;
            }
            eb_image_free(&img);
        }
        free(bytes);
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    return got;
}

static void synthetic_images(int count, int S, float *pixels)
{
    uint64_t s = 0x5eed;
    for (int b = 0; b < count; b++)
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++) {
                    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
                    float noise = (float)(s % 1000) / 1000.0f - 0.5f;
                    float v = sinf(0.05f * (float)(x * (b + 1)) + (float)c) *
                                  cosf(0.03f * (float)y) * 0.7f + 0.3f * noise;
                    pixels[(((size_t)b * 3 + c) * S + y) * S + x] = fmaxf(-1.0f, fminf(1.0f, v));
                }
}

typedef struct stats {
    double max_rel_l2, min_cos, max_batch_diff;
} stats;

static void compare_vecs(const float *got, const float *ref, int64_t n, double *rel_l2,
                         double *cosine)
{
    double se = 0, sr = 0, sg = 0, dot = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)got[i] - ref[i];
        se += d * d;
        sr += (double)ref[i] * ref[i];
        sg += (double)got[i] * got[i];
        dot += (double)got[i] * ref[i];
    }
    *rel_l2 = sr > 0 ? sqrt(se / sr) : sqrt(se);
    *cosine = (sr > 0 && sg > 0) ? dot / sqrt(sr * sg) : 0.0;
    if (!isfinite(*rel_l2))
        *rel_l2 = INFINITY, *cosine = -1;
}

static int run_model(const char *dir, const opts *o, FILE *csv, const char *libpath)
{
    char err[1024];
    eb_checkpoint *ck = eb_checkpoint_open(dir, err, sizeof(err));
    if (!ck) {
        printf("siglip-compare: %s\n", err);
        return 1;
    }
    eb_siglip_config cfg;
    if (eb_siglip_parse_config(eb_checkpoint_config(ck), &cfg, err, sizeof(err)) != EB_OK) {
        printf("siglip-compare: %s\n", err);
        eb_checkpoint_close(&ck);
        return 1;
    }
    int S = (int)cfg.image_size, N = o->count;
    int64_t Cdim = cfg.hidden;
    eb_image_preproc pp;
    if (eb_checkpoint_image_preproc(ck, S, &pp, err, sizeof(err)) != EB_OK) {
        for (int c = 0; c < 3; c++)
            pp.mean[c] = pp.std[c] = 0.5f;
    }
    float *pixels = malloc((size_t)N * 3 * S * S * sizeof(float));
    float *ref = malloc((size_t)N * Cdim * sizeof(float));
    float *got = malloc((size_t)N * Cdim * sizeof(float));
    float *one = malloc((size_t)Cdim * sizeof(float));
    if (!pixels || !ref || !got || !one) {
        printf("siglip-compare: out of memory\n");
        return 1;
    }
    int loaded = o->images ? load_images(o->images, N, S, &pp, pixels) : 0;
    if (loaded < N)
        synthetic_images(N - loaded, S, pixels + (size_t)loaded * 3 * S * S);
    printf("model %s: hidden %lld, layers %lld, heads %lld, image %d, patch %lld; %d images "
           "(%d decoded, %d synthetic)\n",
           dir, (long long)cfg.hidden, (long long)cfg.layers, (long long)cfg.heads, S,
           (long long)cfg.patch_size, N, loaded, N - loaded);

    eb_backend_params params = {.n_threads = 0, .device_index = 0, .cuda_library = libpath};
    eb_backend *cpu = eb_backend_create("cpu", &params, err, sizeof(err));
    if (!cpu) {
        printf("siglip-compare: CPU backend: %s\n", err);
        return 1;
    }
    int64_t t0 = eb_now_us();
    eb_siglip *m = eb_siglip_load(cpu, ck, N, err, sizeof(err));
    if (!m || eb_siglip_embed(m, pixels, N, ref, NULL, err, sizeof(err)) != EB_OK) {
        printf("siglip-compare: CPU forward: %s\n", err);
        return 1;
    }
    printf("  cpu: %s, %.2f s for load + %d images\n", cpu->device,
           (double)(eb_now_us() - t0) / 1e6, N);
    eb_siglip_destroy(&m);
    eb_backend_destroy(&cpu);

    int failures = 0;
    if (o->cpu_only) {
        printf("  cpu pooler_output[0][0..3] = %.6f %.6f %.6f %.6f\n", ref[0], ref[1], ref[2],
               ref[3]);
        eb_checkpoint_close(&ck);
        free(pixels), free(ref), free(got), free(one);
        return 0;
    }
    char list[64];
    snprintf(list, sizeof(list), "%s", o->precisions);
    for (char *save = NULL, *p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        setenv("EB_CUDA_PRECISION", p, 1);
        eb_backend *be = eb_backend_create("cuda", &params, err, sizeof(err));
        if (!be) {
            printf("siglip-compare: skipped: no CUDA backend: %s\n", err);
            return 77;
        }
        t0 = eb_now_us();
        m = eb_siglip_load(be, ck, N, err, sizeof(err));
        eb_status st = m ? eb_siglip_embed(m, pixels, N, got, NULL, err, sizeof(err))
                         : EB_ERR_MODEL;
        if (st != EB_OK) {
            printf("  cuda %s: FAIL: %s\n", p, err);
            fprintf(csv, "%s,%s,,,,FAIL\n", dir, p);
            failures++;
            eb_siglip_destroy(&m);
            eb_backend_destroy(&be);
            continue;
        }
        double load_s = (double)(eb_now_us() - t0) / 1e6;
        stats s = {0, 1, 0};
        for (int b = 0; b < N; b++) {
            double rl2, cosv;
            compare_vecs(got + (size_t)b * Cdim, ref + (size_t)b * Cdim, Cdim, &rl2, &cosv);
            if (rl2 > s.max_rel_l2)
                s.max_rel_l2 = rl2;
            if (cosv < s.min_cos)
                s.min_cos = cosv;
            // the same image alone (batch invariance on the GPU)
            if (eb_siglip_embed(m, pixels + (size_t)b * 3 * S * S, 1, one, NULL, err,
                                sizeof(err)) == EB_OK) {
                double d, c2;
                compare_vecs(one, got + (size_t)b * Cdim, Cdim, &d, &c2);
                if (d > s.max_batch_diff)
                    s.max_batch_diff = d;
            } else {
                s.max_batch_diff = INFINITY;
            }
        }
        bool ok;
        const char *rule;
        if (strcmp(p, "fp32") == 0) {
            ok = s.max_rel_l2 <= 1e-4;
            rule = "rel_l2 <= 1e-4";
        } else if (strcmp(p, "tf32") == 0) {
            ok = s.max_rel_l2 <= 2e-2;
            rule = "rel_l2 <= 2e-2 (provisional; measured value reported)";
        } else {
            ok = s.min_cos >= 0.999 && s.max_rel_l2 <= 5e-2;
            rule = "cosine >= 0.999, rel_l2 <= 5e-2 (provisional)";
        }
        printf("  cuda %-4s: max rel_l2 %.3e  min cosine %.7f  batch-vs-alone rel %.2e  "
               "(load+run %.2f s)  %s  [%s]\n",
               p, s.max_rel_l2, s.min_cos, s.max_batch_diff, load_s, ok ? "ok" : "FAIL", rule);
        fprintf(csv, "%s,%s,%.6e,%.9f,%.3e,%s\n", dir, p, s.max_rel_l2, s.min_cos,
                s.max_batch_diff, ok ? "ok" : "FAIL");
        failures += !ok;
        eb_siglip_destroy(&m);
        eb_backend_destroy(&be);
    }
    unsetenv("EB_CUDA_PRECISION");
    eb_checkpoint_close(&ck);
    free(pixels), free(ref), free(got), free(one);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    opts o = {.precisions = "fp32,tf32,bf16", .images = NULL, .csv = NULL, .count = 2};
    const char *dirs[16];
    int ndirs = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--precision") == 0 && v)
            o.precisions = v, i++;
        else if (strcmp(a, "--images") == 0 && v)
            o.images = v, i++;
        else if (strcmp(a, "--csv") == 0 && v)
            o.csv = v, i++;
        else if (strcmp(a, "--cpu-only") == 0)
            o.cpu_only = true;
        else if (strcmp(a, "--count") == 0 && v)
            o.count = atoi(v), i++;
        else if (a[0] != '-' && ndirs < 16)
            dirs[ndirs++] = a;
        else {
            fprintf(stderr, "usage: siglip-compare [--precision fp32,tf32,bf16] [--images DIR] "
                            "[--count N] [--csv FILE] CKPT_DIR...\n");
            return 2;
        }
    }
    if (ndirs == 0 || o.count < 1 || o.count > MAX_IMAGES) {
        fprintf(stderr, "siglip-compare: give at least one checkpoint directory and 1..%d "
                        "images\n", MAX_IMAGES);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); // progress shows even if a step is killed by a timeout
    char libpath[4096];
    const char *lp = eb_cuda_loader_path(libpath, sizeof(libpath));
    // Probe the CUDA backend first so a machine without a GPU skips before any CPU work.
    char err[1024];
    eb_backend_params params = {.cuda_library = lp};
    eb_backend *probe = o.cpu_only ? NULL : eb_backend_create("cuda", &params, err, sizeof(err));
    if (!probe && !o.cpu_only) {
        printf("siglip-compare: skipped: no CUDA backend: %s\n", err);
        return 77;
    }
    if (probe)
        printf("siglip-compare: cuda device %s\n", probe->device);
    eb_backend_destroy(&probe);
    FILE *csv = o.csv ? fopen(o.csv, "w") : NULL;
    if (!csv)
        csv = fopen("/dev/null", "w");
    fprintf(csv, "model,precision,max_rel_l2,min_cosine,batch_vs_alone_rel_l2,result\n");
    int rc = 0;
    for (int i = 0; i < ndirs; i++) {
        int r = run_model(dirs[i], &o, csv, lp);
        if (r == 77)
            return 77;
        if (r)
            rc = 1;
    }
    fclose(csv);
    printf("siglip-compare: %s\n", rc ? "FAILED" : "all comparisons within tolerance");
    return rc;
}
