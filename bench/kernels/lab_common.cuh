/* lab_common — helpers shared by the kernel lab files (bench/kernels/<op>.cu), after llm.c's
 * dev/cuda/common.h: a checking macro, random inputs, a comparison against the CPU reference
 * and a timer. Each lab file is one program: nvcc -O3 -arch=sm_90 -o lab X.cu && ./lab
 * (scripts/gpu-check builds and runs them). Only CUDA and libc. */
#ifndef LAB_COMMON_CUH
#define LAB_COMMON_CUH

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(call)                                                                                 \
    do {                                                                                         \
        cudaError_t e_ = (call);                                                                 \
        if (e_ != cudaSuccess) {                                                                 \
            fprintf(stderr, "CUDA error %s at %s:%d: %s\n", #call, __FILE__, __LINE__,           \
                    cudaGetErrorString(e_));                                                     \
            exit(1);                                                                             \
        }                                                                                        \
    } while (0)

static int lab_failures = 0;

static inline float lab_rand(uint64_t *s) /* [-1, 1) */
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (float)((double)((*s * 2685821657736338717ull) >> 11) * (2.0 / 9007199254740992.0) -
                   1.0);
}

static inline float *lab_rand_host(size_t n, uint64_t seed, float scale)
{
    float *p = (float *)malloc(n * sizeof(float));
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++)
        p[i] = lab_rand(&s) * scale;
    return p;
}

static inline float *lab_to_device(const float *h, size_t n)
{
    float *d;
    CK(cudaMalloc(&d, n * sizeof(float)));
    CK(cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}

/* Compare device result (n floats) with the host reference; prints and counts failures. */
static inline bool lab_check(const char *what, const float *dev, const float *ref, size_t n,
                             double tol_rel_l2)
{
    float *h = (float *)malloc(n * sizeof(float));
    CK(cudaMemcpy(h, dev, n * sizeof(float), cudaMemcpyDeviceToHost));
    double se = 0, sr = 0, maxd = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(h[i])) {
            bad++;
            continue;
        }
        double d = fabs((double)h[i] - ref[i]);
        se += d * d;
        sr += (double)ref[i] * ref[i];
        if (d > maxd)
            maxd = d;
    }
    double rl2 = sr > 0 ? sqrt(se / sr) : sqrt(se);
    bool ok = bad == 0 && rl2 <= tol_rel_l2;
    printf("  %-48s rel_l2 %.2e max_abs %.2e %s\n", what, rl2, maxd, ok ? "ok" : "FAIL");
    if (!ok)
        lab_failures++;
    free(h);
    return ok;
}

/* Mean time of `reps` launches of fn (after 2 warm-ups), in microseconds. */
template <typename F> static inline double lab_time_us(F fn, int reps)
{
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    fn();
    fn();
    CK(cudaEventRecord(a));
    for (int i = 0; i < reps; i++)
        fn();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    CK(cudaGetLastError());
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return 1000.0 * ms / reps;
}

__device__ __forceinline__ float lab_dwarp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float lab_dwarp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#endif
