/* eb_cuda_embed — token embedding gather from a BF16 (or fp32) table into fp32 rows.
 *
 * One block per token row; the threads copy the row with 16-byte loads (8 BF16 values or 4
 * floats) when the row length and the table allow, element by element otherwise. BF16 -> fp32
 * is exact. Ids are validated by the model on the host before upload; an id outside [0, V)
 * still never reads outside the table: its row is written as NaN so any use shows.
 */
#include "eb_cuda_common.cuh"
#include "eb_cuda_qwen3.h"

#define EMBED_THREADS 128

template <int BF16, int VEC>
__global__ void __launch_bounds__(EMBED_THREADS)
    embed_kernel1(float *y, const void *table, int64_t V, int64_t C, const int32_t *ids)
{
    int64_t i = blockIdx.x;
    int32_t id = ids[i];
    float *dst = y + i * C;
    if (id < 0 || (int64_t)id >= V) {
        for (int64_t c = threadIdx.x; c < C; c += EMBED_THREADS)
            dst[c] = __int_as_float(0x7fc00000);
        return;
    }
    if (BF16) {
        const __nv_bfloat16 *src = (const __nv_bfloat16 *)table + (int64_t)id * C;
        if (VEC) { // 8 values per thread and step
            for (int64_t c = threadIdx.x * 8; c < C; c += EMBED_THREADS * 8) {
                uint4 raw = *(const uint4 *)(src + c);
                const __nv_bfloat162 *h2 = (const __nv_bfloat162 *)&raw;
                float2 f0 = __bfloat1622float2(h2[0]), f1 = __bfloat1622float2(h2[1]);
                float2 f2 = __bfloat1622float2(h2[2]), f3 = __bfloat1622float2(h2[3]);
                *(float4 *)(dst + c) = make_float4(f0.x, f0.y, f1.x, f1.y);
                *(float4 *)(dst + c + 4) = make_float4(f2.x, f2.y, f3.x, f3.y);
            }
        } else {
            for (int64_t c = threadIdx.x; c < C; c += EMBED_THREADS)
                dst[c] = __bfloat162float(src[c]);
        }
    } else {
        const float *src = (const float *)table + (int64_t)id * C;
        if (VEC) {
            for (int64_t c = threadIdx.x * 4; c < C; c += EMBED_THREADS * 4)
                *(float4 *)(dst + c) = *(const float4 *)(src + c);
        } else {
            for (int64_t c = threadIdx.x; c < C; c += EMBED_THREADS)
                dst[c] = src[c];
        }
    }
}

cudaError_t eb_cuda_embed(cudaStream_t s, float *y, const void *table, int table_is_bf16,
                          int64_t V, int64_t C, const int32_t *ids, int64_t n)
{
    if (n <= 0 || C == 0)
        return cudaSuccess; // nothing to copy
    if (!y || !table || !ids || V <= 0 || C < 0 || n > 0x7fffffffLL)
        return cudaErrorInvalidValue;
    bool al = (((uintptr_t)y | (uintptr_t)table) & 15u) == 0;
    // 16-byte steps need every row start aligned: C a multiple of 8 (bf16) or 4 (fp32).
    bool vec = al && (table_is_bf16 ? C % 8 == 0 : C % 4 == 0);
    unsigned grid = (unsigned)n;
    if (table_is_bf16) {
        if (vec)
            embed_kernel1<1, 1><<<grid, EMBED_THREADS, 0, s>>>(y, table, V, C, ids);
        else
            embed_kernel1<1, 0><<<grid, EMBED_THREADS, 0, s>>>(y, table, V, C, ids);
    } else {
        if (vec)
            embed_kernel1<0, 1><<<grid, EMBED_THREADS, 0, s>>>(y, table, V, C, ids);
        else
            embed_kernel1<0, 0><<<grid, EMBED_THREADS, 0, s>>>(y, table, V, C, ids);
    }
    return cudaGetLastError();
}
