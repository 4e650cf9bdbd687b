/* eb_cuda_pool_last — the tail of Qwen3-Embedding in one kernel: take each sequence's last
 * token, apply the final RMSNorm, truncate to the output dimension and L2-normalise.
 *
 * One block of 256 threads per sequence (B is at most a few thousand and C = 1024, so this is
 * launch-bound, not bandwidth-bound: one launch instead of pool + norm + l2norm). Two block
 * reductions (sum of squares over C for the RMSNorm, then over dim for the L2 norm) with the
 * row re-read from L1/L2 in between; the arithmetic matches the CPU ops it replaces:
 * h = gain * (x * (1 / sqrtf(mean + eps))), y = h / max(sqrtf(sum h²), 1e-12).
 */
#include "eb_cuda_common.cuh"
#include "eb_cuda_qwen3.h"

#define POOL_THREADS 256

__global__ void __launch_bounds__(POOL_THREADS) pool_last_l2_kernel1(eb_cuda_pool_args a)
{
    __shared__ float red[32];
    int b = blockIdx.x;
    int64_t r;
    if (a.cu_seqlens)
        r = (int64_t)a.cu_seqlens[b + 1] - 1;
    else if (a.lens)
        r = (int64_t)b * a.T + a.lens[b] - 1;
    else
        r = b;
    const float *x = a.x + r * a.ldx;
    float *y = a.y + (int64_t)b * a.dim;
    float inv = 1.0f;
    if (a.gain) {
        float sq = 0.0f;
        for (int64_t c = threadIdx.x; c < a.C; c += POOL_THREADS)
            sq += x[c] * x[c];
        inv = 1.0f / sqrtf(eb_block_sum(sq, red) / (float)a.C + a.eps);
    }
    float sq2 = 0.0f;
    for (int64_t c = threadIdx.x; c < a.dim; c += POOL_THREADS) {
        float h = a.gain ? a.gain[c] * (x[c] * inv) : x[c];
        sq2 += h * h;
    }
    float scale = 1.0f / fmaxf(sqrtf(eb_block_sum(sq2, red)), 1e-12f);
    for (int64_t c = threadIdx.x; c < a.dim; c += POOL_THREADS) {
        float h = a.gain ? a.gain[c] * (x[c] * inv) : x[c];
        y[c] = h * scale;
    }
}

cudaError_t eb_cuda_pool_last_l2(cudaStream_t s, const eb_cuda_pool_args *a)
{
    if (!a)
        return cudaErrorInvalidValue;
    if (a->B <= 0)
        return cudaSuccess;
    if (!a->y || !a->x || a->C <= 0 || a->dim <= 0 || a->dim > a->C || a->ldx < a->C ||
        (a->lens && !a->cu_seqlens && a->T <= 0))
        return cudaErrorInvalidValue;
    pool_last_l2_kernel1<<<(unsigned)a->B, POOL_THREADS, 0, s>>>(*a);
    return cudaGetLastError();
}
