/* eb_cuda_swiglu — Qwen3's MLP activation: y = silu(gate) * up in one pass.
 *
 * The MLP's gate and up projections are one fused GEMM output (rows, 2F), so gate and up are
 * the two halves of each row. One thread per 4 outputs with float4 loads and stores when F, the
 * input row stride and the pointers allow (Qwen3: F = 3072), one per output otherwise; a 2-D
 * grid (row, column block) so no thread divides by F. silu(g) = g / (1 + expf(-g)), the CPU
 * backend's formula (its exp is a Cephes polynomial within ~1e-7 of expf).
 */
#include "eb_cuda_common.cuh"
#include "eb_cuda_qwen3.h"

#define SWIGLU_THREADS 256

static __device__ __forceinline__ float silu_mul1(float g, float u)
{
    return g / (1.0f + expf(-g)) * u;
}

// y (rows, F) contiguous; gate/up rows ld_in apart. blockIdx.y (and z) = row; x = column block.
template <int V>
__global__ void __launch_bounds__(SWIGLU_THREADS)
    swiglu_kernel1(float *y, const float *gate, const float *up, int64_t rows, int64_t F,
                   int64_t ld_in)
{
    int64_t r = (int64_t)blockIdx.y + (int64_t)blockIdx.z * gridDim.y;
    int64_t c = ((int64_t)blockIdx.x * SWIGLU_THREADS + threadIdx.x) * V;
    if (r >= rows || c >= F)
        return;
    const float *g = gate + r * ld_in + c, *u = up + r * ld_in + c;
    float *o = y + r * F + c;
    if (V == 4) {
        float4 gv = *(const float4 *)g, uv = *(const float4 *)u, ov;
        ov.x = silu_mul1(gv.x, uv.x);
        ov.y = silu_mul1(gv.y, uv.y);
        ov.z = silu_mul1(gv.z, uv.z);
        ov.w = silu_mul1(gv.w, uv.w);
        *(float4 *)o = ov;
    } else {
        *o = silu_mul1(*g, *u);
    }
}

cudaError_t eb_cuda_swiglu(cudaStream_t s, float *y, const float *gate, const float *up,
                           int64_t rows, int64_t F, int64_t ld_in)
{
    if (rows <= 0 || F <= 0)
        return cudaSuccess;
    if (!y || !gate || !up || ld_in < F || (y == gate && ld_in != F))
        return cudaErrorInvalidValue;
    bool vec = F % 4 == 0 && ld_in % 4 == 0 && (((uintptr_t)y | (uintptr_t)gate |
                                                 (uintptr_t)up) & 15u) == 0;
    int V = vec ? 4 : 1;
    int64_t per_block = (int64_t)SWIGLU_THREADS * V;
    // rows split over grid y (<= 65535) and z
    int64_t gy = rows < 65535 ? rows : 65535, gz = (rows + gy - 1) / gy;
    if (gz > 65535)
        return cudaErrorInvalidValue;
    dim3 grid((unsigned)((F + per_block - 1) / per_block), (unsigned)gy, (unsigned)gz);
    if (vec)
        swiglu_kernel1<4><<<grid, SWIGLU_THREADS, 0, s>>>(y, gate, up, rows, F, ld_in);
    else
        swiglu_kernel1<1><<<grid, SWIGLU_THREADS, 0, s>>>(y, gate, up, rows, F, ld_in);
    return cudaGetLastError();
}
