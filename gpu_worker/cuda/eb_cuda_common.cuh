/* eb_cuda_common — small device helpers shared by the CUDA backend's .cu files (internal). */
#ifndef EB_CUDA_COMMON_CUH
#define EB_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

static __device__ __forceinline__ float eb_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float eb_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over a block of blockDim.x threads (a multiple of 32, at most 1024); every thread gets
 * the result. `shared` holds 32 floats. */
static __device__ __forceinline__ float eb_block_sum(float v, float *shared)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = eb_warp_sum(v);
    __syncthreads(); // shared may still be read by a previous call
    if (lane == 0)
        shared[warp] = v;
    __syncthreads();
    v = lane < nwarps ? shared[lane] : 0.0f;
    return eb_warp_sum(v);
}

static __device__ __forceinline__ float eb_gelu_tanh_f(float x)
{
    // transformers' gelu_pytorch_tanh: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    const float k = 0.7978845608028654f;
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

/* Grid size for a grid-stride loop over n items with `threads` per block. */
static inline unsigned eb_grid_for(int64_t n, int threads)
{
    int64_t g = (n + threads - 1) / threads;
    if (g > 65535LL * 32)
        g = 65535LL * 32;
    if (g < 1)
        g = 1;
    return (unsigned)g;
}

#endif
