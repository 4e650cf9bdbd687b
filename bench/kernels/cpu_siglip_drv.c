/* cpu_siglip_drv — one SigLIP forward in a loop, for A/B timing of CPU backend builds.
 *
 * Loads the checkpoint on the CPU backend, runs eb_siglip_embed at one batch size until SECONDS
 * have passed (at least 3 runs, after one warm-up that also repacks the weights) and prints the
 * median and minimum of wall time and of process CPU time. CPU time is what to compare on a
 * machine shared with other work; wall time is what a user sees. Build against a build dir:
 *
 *   PKGS="libzmq msgpack hiredis libpq openblas libturbojpeg spng libwebp libpcre2-8 libutf8proc libcjson openssl"
 *   gcc -O2 -std=c11 -D_GNU_SOURCE -Icommon -Igpu_worker -Igpu_worker/cpu $(pkg-config --cflags $PKGS) \
 *       bench/kernels/cpu_siglip_drv.c build/lib/libeb_worker.a build/lib/libeb_common.a \
 *       $(pkg-config --libs $PKGS) -lpthread -lm -ldl -o /tmp/siglip-drv
 *   /tmp/siglip-drv var/models/siglip-base-patch16-224 THREADS BATCH SECONDS
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "eb_checkpoint.h"
#include "eb_cpu_ops.h"
#include "eb_siglip.h"

#define MAX_RUNS 200

static double now_s(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    eb_cpu_blas_ensure_coretype(argv);
    if (argc != 5) {
        fprintf(stderr, "usage: %s SIGLIP_DIR THREADS BATCH SECONDS\n", argv[0]);
        return 2;
    }
    char err[512];
    int threads = atoi(argv[2]);
    long batch = atol(argv[3]);
    double seconds = atof(argv[4]);
    eb_backend_params params = {.n_threads = threads};
    eb_backend *be = eb_cpu_backend_create(&params, err, sizeof err);
    eb_checkpoint *ck = be ? eb_checkpoint_open(argv[1], err, sizeof err) : NULL;
    eb_siglip *m = ck ? eb_siglip_load(be, ck, batch, err, sizeof err) : NULL;
    if (!m) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const eb_siglip_config *c = eb_siglip_get_config(m);
    size_t px = (size_t)batch * (size_t)(c->channels * c->image_size * c->image_size);
    float *pixels = malloc(px * sizeof(float));
    float *out = malloc((size_t)batch * (size_t)c->hidden * sizeof(float));
    // The pixel pattern of embroker-bench and the PyTorch peer.
    for (size_t i = 0; i < px; i++)
        pixels[i] = (float)((unsigned)(i * 2654435761u) % 2001) / 1000.0f - 1.0f;
    double w0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    if (eb_siglip_embed(m, pixels, batch, NULL, out, err, sizeof err) != EB_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    fprintf(stderr, "first forward (repacks the weights) %.1f ms wall, %.1f ms cpu\n",
            (now_s(CLOCK_MONOTONIC) - w0) * 1e3, (now_s(CLOCK_PROCESS_CPUTIME_ID) - c0) * 1e3);
    double wall[MAX_RUNS], cpu[MAX_RUNS];
    int n = 0;
    double start = now_s(CLOCK_MONOTONIC);
    while (n < MAX_RUNS && (n < 3 || now_s(CLOCK_MONOTONIC) - start < seconds)) {
        w0 = now_s(CLOCK_MONOTONIC);
        c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
        eb_siglip_embed(m, pixels, batch, NULL, out, err, sizeof err);
        wall[n] = now_s(CLOCK_MONOTONIC) - w0;
        cpu[n] = now_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        n++;
    }
    qsort(wall, (size_t)n, sizeof(double), cmp_double);
    qsort(cpu, (size_t)n, sizeof(double), cmp_double);
    printf("B=%ld threads=%d n=%d wall median %.1f min %.1f ms | cpu median %.1f min %.1f ms | "
           "out[0]=%.6f\n",
           batch, threads, n, wall[n / 2] * 1e3, wall[0] * 1e3, cpu[n / 2] * 1e3, cpu[0] * 1e3,
           (double)out[0]);
    eb_siglip_destroy(&m);
    eb_checkpoint_close(&ck);
    eb_backend_destroy(&be);
    free(pixels);
    free(out);
    return 0;
}
