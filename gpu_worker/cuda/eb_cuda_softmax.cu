/* eb_cuda_softmax — in-place row softmax with a scale, fp32.
 *
 * One block per row, three passes over the row (max, sum of exponentials, normalise): the rows
 * this serves (pooling-head scores, debugging the attention kernel) are short, so the simple
 * form is fast enough and matches the CPU's expf-based reference to a few ulp.
 */
#include "eb_cuda_common.cuh"
#include "eb_cuda_kernels.h"

#define SOFTMAX_THREADS 256

// x (rows, n), in place: x = softmax(scale * x) per row.
__global__ void softmax_kernel1(float *x, int64_t rows, int64_t n, float scale)
{
    __shared__ float red[32];
    float *xr = x + (int64_t)blockIdx.x * n;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        m = fmaxf(m, scale * xr[i]);
    // block max via the sum helper's pattern
    m = eb_warp_max(m);
    __syncthreads();
    if ((threadIdx.x & 31) == 0)
        red[threadIdx.x >> 5] = m;
    __syncthreads();
    m = (int)(threadIdx.x & 31) < (int)(blockDim.x >> 5) ? red[threadIdx.x & 31] : -INFINITY;
    m = eb_warp_max(m);
    float sum = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        sum += expf(scale * xr[i] - m);
    sum = eb_block_sum(sum, red);
    float inv = 1.0f / sum;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        xr[i] = expf(scale * xr[i] - m) * inv;
    (void)rows;
}

cudaError_t eb_cuda_softmax(cudaStream_t s, float *x, int64_t rows, int64_t n, float scale)
{
    if (rows <= 0 || n <= 0)
        return cudaSuccess;
    softmax_kernel1<<<(unsigned)rows, SOFTMAX_THREADS, 0, s>>>(x, rows, n, scale);
    return cudaGetLastError();
}
