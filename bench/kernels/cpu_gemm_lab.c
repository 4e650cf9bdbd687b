/* cpu_gemm_lab — the packed-weight AVX-512 GEMM (gpu_worker/cpu/eb_cpu_gemm.c) against
 * OpenBLAS sgemm on SigLIP's linear-layer shapes, checked and timed side by side.
 *
 * Both sides run on the same eb_cpu_pool threads the way the CPU backend drives them: OpenBLAS
 * single-threaded on a static split of the output columns, the packed GEMM as (row block, panel
 * group) items claimed dynamically, after packing x (timed with it). Repetitions alternate
 * between the two so a noisy neighbour slows both alike; medians are reported. With one thread
 * the lab times thread CPU time, which other tenants of a shared machine barely disturb.
 *
 *   gcc -O2 -std=c11 -D_GNU_SOURCE -Igpu_worker/cpu -Igpu_worker -Icommon \
 *       bench/kernels/cpu_gemm_lab.c gpu_worker/cpu/eb_cpu_gemm.c gpu_worker/cpu/eb_cpu_pool.c \
 *       -lopenblas -lpthread -lm -o /tmp/cpu_gemm_lab
 *   /tmp/cpu_gemm_lab [threads] [reps]
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eb_cpu_gemm.h"
#include "eb_cpu_pool.h"

// With one thread the lab times the thread's CPU time, which a busy neighbour does not inflate.
static clockid_t g_clock = CLOCK_MONOTONIC;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(g_clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct job {
    int64_t M, N, K;
    float *x, *w, *wp, *ap, *y, *bias;
} job;

static void blas_task(void *arg, int64_t b, int64_t e, int ti)
{
    (void)ti;
    job *j = arg;
    int64_t n0 = b * 16, n1 = e * 16 < j->N ? e * 16 : j->N;
    for (int64_t i = 0; i < j->M; i++)
        memcpy(j->y + i * j->N + n0, j->bias + n0, (size_t)(n1 - n0) * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->M, (int)(n1 - n0), (int)j->K,
                1.0f, j->x, (int)j->K, j->w + n0 * j->K, (int)j->K, 1.0f, j->y + n0, (int)j->N);
}

static void pack_task(void *arg, int64_t b, int64_t e, int ti)
{
    (void)ti;
    job *j = arg;
    eb_cpu_gemm_pack_a(j->ap, j->x, j->K, j->M, j->K, b, e);
}

static eb_cpu_gemm_plan g_plan;

// The backend's way: (row block, panel group) items claimed dynamically.
static void run_task(void *arg, int64_t b, int64_t e, int ti)
{
    (void)ti;
    job *j = arg;
    eb_cpu_gemm_args g = {.y = j->y, .ldy = j->N, .ap = j->ap, .bp = j->wp, .M = j->M,
                          .N = j->N, .K = j->K, .bias = j->bias};
    eb_cpu_gemm_run_items(&g, &g_plan, b, e);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    int reps = argc > 2 ? atoi(argv[2]) : 15;
    openblas_set_num_threads(1);
    if (threads == 1)
        g_clock = CLOCK_THREAD_CPUTIME_ID;
    eb_cpu_pool *pool = eb_cpu_pool_create(threads);
    if (!eb_cpu_gemm_available()) {
        fprintf(stderr, "no AVX-512F\n");
        return 1;
    }
    const int64_t shapes[][3] = {
        {196, 2304, 768}, {196, 768, 768}, {196, 3072, 768}, {196, 768, 3072},
        {1568, 2304, 768}, {1568, 3072, 768}, {1568, 768, 3072}, {729, 4304, 1152},
    };
    printf("| M x N x K | openblas GFLOP/s | packed GFLOP/s | packed/openblas | max rel diff |\n");
    printf("|---|---:|---:|---:|---:|\n");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        job j = {.M = shapes[s][0], .N = shapes[s][1], .K = shapes[s][2]};
        size_t xs = (size_t)j.M * j.K, ws = (size_t)j.N * j.K, ys = (size_t)j.M * j.N;
        j.x = malloc(xs * 4);
        j.w = malloc(ws * 4);
        j.wp = malloc(ws * 4);
        j.ap = malloc(eb_cpu_gemm_a_floats(j.M, j.K) * 4);
        j.y = malloc(ys * 4);
        float *yref = malloc(ys * 4);
        j.bias = malloc((size_t)j.N * 4);
        for (size_t i = 0; i < xs; i++)
            j.x[i] = (float)((i * 2654435761u) % 2001) / 1000.0f - 1.0f;
        for (size_t i = 0; i < ws; i++)
            j.w[i] = (float)((i * 40503u) % 1001) / 20000.0f - 0.025f;
        for (int64_t i = 0; i < j.N; i++)
            j.bias[i] = (float)i * 1e-4f;
        eb_cpu_gemm_pack_b_nk(j.wp, j.w, j.K, j.N, j.K);
        int64_t blocks = (j.N + 15) / 16, tiles = eb_cpu_gemm_a_tiles(j.M);
        // Plan for two threads even when timing one, so the items are the backend's.
        eb_cpu_gemm_plan_init(&g_plan, j.M, j.N, threads > 1 ? threads : 2);
        eb_cpu_pool_run(pool, blocks, blas_task, &j);
        memcpy(yref, j.y, ys * 4);
        eb_cpu_pool_run_dynamic(pool, tiles, 1, pack_task, &j);
        eb_cpu_pool_run_dynamic(pool, g_plan.items, 1, run_task, &j);
        double maxrel = 0;
        for (size_t i = 0; i < ys; i++) {
            double d = fabs((double)j.y[i] - yref[i]) / (1e-3 + fabs((double)yref[i]));
            maxrel = d > maxrel ? d : maxrel;
        }
        double tb[64], tp[64];
        for (int r = 0; r < reps && r < 64; r++) {
            double t0 = now_s();
            eb_cpu_pool_run(pool, blocks, blas_task, &j);
            double t1 = now_s();
            eb_cpu_pool_run(pool, tiles, pack_task, &j);
            eb_cpu_pool_run_dynamic(pool, g_plan.items, 1, run_task, &j);
            double t2 = now_s();
            tb[r] = t1 - t0;
            tp[r] = t2 - t1;
        }
        qsort(tb, (size_t)reps, sizeof(double), cmp_double);
        qsort(tp, (size_t)reps, sizeof(double), cmp_double);
        double fl = 2.0 * (double)j.M * j.N * j.K;
        double gb = fl / tb[reps / 2] / 1e9, gp = fl / tp[reps / 2] / 1e9;
        printf("| %ld x %ld x %ld | %.1f | %.1f | %.3f | %.2e |\n", (long)j.M, (long)j.N,
               (long)j.K, gb, gp, gp / gb, maxrel);
        fflush(stdout);
        free(j.x);
        free(j.w);
        free(j.wp);
        free(j.ap);
        free(j.y);
        free(yref);
        free(j.bias);
    }
    eb_cpu_pool_destroy(&pool);
    return 0;
}
