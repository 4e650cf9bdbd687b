/* eb_cuda_layernorm — row normalisations: LayerNorm fused with the residual add, RMSNorm, L2.
 *
 * One warp per row (promoted from bench/kernels/layernorm.cu, version 2): SigLIP's rows are
 * 768 or 1152 floats, so a warp streams a row through L1 three times (sum, squared deviations,
 * write) with float4-free scalar loads that stay coalesced, and no block-level synchronisation
 * is needed. Statistics are fp32 and the variance is two-pass (mean first, then the mean of
 * squared deviations), like the CPU reference, so no catastrophic cancellation.
 */
#include "eb_cuda_common.cuh"
#include "eb_cuda_kernels.h"

#define LN_WARPS 4

// x, y, residual are (rows, C). If residual: x += residual (written back), y = LN(x).
__global__ void layernorm_kernel2(float *__restrict__ y, float *x, const float *residual,
                                  const float *__restrict__ gain,
                                  const float *__restrict__ shift, int64_t rows, int C,
                                  float eps)
{
    int64_t row = (int64_t)blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows)
        return;
    float *xr = x + row * C;
    const float *rr = residual ? residual + row * C : nullptr;
    float sum = 0.0f;
    for (int i = lane; i < C; i += 32) {
        float v = xr[i];
        if (rr) {
            v += rr[i];
            xr[i] = v;
        }
        sum += v;
    }
    float mean = eb_warp_sum(sum) / (float)C;
    float sq = 0.0f;
    for (int i = lane; i < C; i += 32) {
        float d = xr[i] - mean;
        sq += d * d;
    }
    float var = eb_warp_sum(sq) / (float)C;
    float rstd = rsqrtf(var + eps);
    float *yr = y + row * C;
    for (int i = lane; i < C; i += 32) {
        float v = (xr[i] - mean) * rstd * gain[i];
        yr[i] = shift ? v + shift[i] : v;
    }
}

cudaError_t eb_cuda_layernorm(cudaStream_t s, float *y, float *x, const float *residual,
                              const float *gain, const float *shift, int64_t rows, int64_t C,
                              float eps)
{
    if (rows <= 0)
        return cudaSuccess;
    unsigned blocks = (unsigned)((rows + LN_WARPS - 1) / LN_WARPS);
    layernorm_kernel2<<<blocks, LN_WARPS * 32, 0, s>>>(y, x, residual, gain, shift, rows, (int)C,
                                                       eps);
    return cudaGetLastError();
}

// Rows `ld` apart; y may equal x.
__global__ void rmsnorm_kernel1(float *y, float *x, const float *residual,
                                const float *__restrict__ gain, int64_t rows, int C, int64_t ld,
                                float eps)
{
    int64_t row = (int64_t)blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows)
        return;
    float *xr = x + row * ld;
    const float *rr = residual ? residual + row * ld : nullptr;
    float sq = 0.0f;
    for (int i = lane; i < C; i += 32) {
        float v = xr[i];
        if (rr) {
            v += rr[i];
            xr[i] = v;
        }
        sq += v * v;
    }
    float r = rsqrtf(eb_warp_sum(sq) / (float)C + eps);
    float *yr = y + row * ld;
    for (int i = lane; i < C; i += 32)
        yr[i] = xr[i] * r * gain[i];
}

cudaError_t eb_cuda_rmsnorm(cudaStream_t s, float *y, float *x, const float *residual,
                            const float *gain, int64_t rows, int64_t C, int64_t ld, float eps)
{
    if (rows <= 0)
        return cudaSuccess;
    unsigned blocks = (unsigned)((rows + LN_WARPS - 1) / LN_WARPS);
    rmsnorm_kernel1<<<blocks, LN_WARPS * 32, 0, s>>>(y, x, residual, gain, rows, (int)C, ld, eps);
    return cudaGetLastError();
}

// y (rows, C) contiguous = x / max(||x||, eps), x rows ldx apart; y may equal x.
__global__ void l2norm_kernel1(float *y, const float *x, int64_t rows, int C, int64_t ldx,
                               float eps)
{
    int64_t row = (int64_t)blockIdx.x * LN_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows)
        return;
    const float *xr = x + row * ldx;
    float sq = 0.0f;
    for (int i = lane; i < C; i += 32)
        sq += xr[i] * xr[i];
    float norm = sqrtf(eb_warp_sum(sq));
    float inv = 1.0f / fmaxf(norm, eps);
    float *yr = y + row * C;
    for (int i = lane; i < C; i += 32)
        yr[i] = xr[i] * inv;
}

cudaError_t eb_cuda_l2norm(cudaStream_t s, float *y, const float *x, int64_t rows, int64_t C,
                           int64_t ldx, float eps)
{
    if (rows <= 0)
        return cudaSuccess;
    unsigned blocks = (unsigned)((rows + LN_WARPS - 1) / LN_WARPS);
    l2norm_kernel1<<<blocks, LN_WARPS * 32, 0, s>>>(y, x, rows, (int)C, ldx, eps);
    return cudaGetLastError();
}
