/* eb_cuda_rmsnorm — RMSNorm with fp32 statistics fused with the residual add (Qwen3).
 *
 * Promoted from bench/kernels/rmsnorm_rope.cu, version 2: one warp per row, 4 rows per block,
 * float4 loads and stores when the row length, the row stride and the pointers allow (Qwen3's
 * rows are 1024 floats for the hidden state and 128 for the per-head norms: 8 and 1 float4 per
 * lane), scalar otherwise. The residual sum is written back to x in the first pass and read
 * again (from L1) by the same lane in the second, so no value crosses lanes except the sum of
 * squares, reduced with shuffles. The arithmetic is the CPU backend's:
 * y = gain * (x * (1 / sqrtf(mean + eps))) with IEEE division and square root.
 */
#include "eb_cuda_common.cuh"
#include "eb_cuda_qwen3.h"

#define RMS_WARPS 4

// x, y, residual: (rows, C), rows ld apart. V = 4: float4 path (C % 4 == 0, ld % 4 == 0, 16-byte
// aligned pointers); V = 1: scalar.
template <int V>
__global__ void __launch_bounds__(RMS_WARPS * 32)
    rmsnorm_kernel2(float *y, float *x, const float *residual, const float *__restrict__ gain,
                    int64_t rows, int C, int64_t ld, float eps)
{
    int64_t row = (int64_t)blockIdx.x * RMS_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows)
        return;
    float *xr = x + row * ld;
    float *yr = y + row * ld;
    const float *rr = residual ? residual + row * ld : nullptr;
    float sq = 0.0f;
    if (V == 4) {
        for (int i = lane * 4; i < C; i += 32 * 4) {
            float4 v = *(const float4 *)(xr + i);
            if (rr) {
                float4 r = *(const float4 *)(rr + i);
                v.x += r.x, v.y += r.y, v.z += r.z, v.w += r.w;
                *(float4 *)(xr + i) = v;
            }
            sq += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    } else {
        for (int i = lane; i < C; i += 32) {
            float v = xr[i];
            if (rr) {
                v += rr[i];
                xr[i] = v;
            }
            sq += v * v;
        }
    }
    float inv = 1.0f / sqrtf(eb_warp_sum(sq) / (float)C + eps);
    if (V == 4) {
        for (int i = lane * 4; i < C; i += 32 * 4) {
            float4 v = *(const float4 *)(xr + i);
            float4 g = *(const float4 *)(gain + i);
            float4 o;
            o.x = g.x * (v.x * inv), o.y = g.y * (v.y * inv);
            o.z = g.z * (v.z * inv), o.w = g.w * (v.w * inv);
            *(float4 *)(yr + i) = o;
        }
    } else {
        for (int i = lane; i < C; i += 32)
            yr[i] = gain[i] * (xr[i] * inv);
    }
}

static bool rms_aligned16(const void *p)
{
    return ((uintptr_t)p & 15u) == 0;
}

cudaError_t eb_cuda_rmsnorm_residual(cudaStream_t s, float *y, float *x, const float *residual,
                                     const float *gain, int64_t rows, int64_t C, int64_t ld,
                                     float eps)
{
    if (rows <= 0)
        return cudaSuccess;
    if (!y || !x || !gain || C <= 0 || C > (1 << 30) || ld < C || (residual && y == x))
        return cudaErrorInvalidValue;
    unsigned blocks = (unsigned)((rows + RMS_WARPS - 1) / RMS_WARPS);
    bool vec = C % 4 == 0 && ld % 4 == 0 && rms_aligned16(y) && rms_aligned16(x) &&
               rms_aligned16(gain) && (!residual || rms_aligned16(residual));
    if (vec)
        rmsnorm_kernel2<4><<<blocks, RMS_WARPS * 32, 0, s>>>(y, x, residual, gain, rows, (int)C,
                                                             ld, eps);
    else
        rmsnorm_kernel2<1><<<blocks, RMS_WARPS * 32, 0, s>>>(y, x, residual, gain, rows, (int)C,
                                                             ld, eps);
    return cudaGetLastError();
}
