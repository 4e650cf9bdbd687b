/* eb_cuda_gelu — elementwise ops: GELU (tanh form), residual add of a GELU, add, SwiGLU,
 * fp32 -> bf16 conversion for GEMM inputs, strided row copies, broadcasts, gathers, RoPE.
 *
 * All are memory-bound one-pass kernels with grid-stride loops; nothing clever is needed beyond
 * coalesced access. GELU uses tanhf (not the hardware tanh.approx) so it agrees with the CPU to
 * a few ulp.
 */
#include "eb_cuda_common.cuh"
#include "eb_cuda_kernels.h"

__global__ void gelu_tanh_kernel1(float *y, const float *x, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = eb_gelu_tanh_f(x[i]);
}

cudaError_t eb_cuda_gelu_tanh(cudaStream_t s, float *y, const float *x, int64_t n)
{
    if (n <= 0)
        return cudaSuccess;
    gelu_tanh_kernel1<<<eb_grid_for(n, 256), 256, 0, s>>>(y, x, n);
    return cudaGetLastError();
}

__global__ void gelu_rows_kernel1(float *y, int64_t ldy, int64_t rows, int64_t N)
{
    int64_t n = rows * N;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float *p = y + (i / N) * ldy + i % N;
        *p = eb_gelu_tanh_f(*p);
    }
}

cudaError_t eb_cuda_gelu_rows(cudaStream_t s, float *y, int64_t ldy, int64_t rows, int64_t N)
{
    if (rows * N <= 0)
        return cudaSuccess;
    gelu_rows_kernel1<<<eb_grid_for(rows * N, 256), 256, 0, s>>>(y, ldy, rows, N);
    return cudaGetLastError();
}

// y (rows, N), rows ldy apart, += gelu(t), t (rows, N) contiguous.
__global__ void add_gelu_kernel1(float *y, int64_t ldy, const float *t, int64_t rows, int64_t N)
{
    int64_t n = rows * N;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / N, c = i % N;
        y[r * ldy + c] += eb_gelu_tanh_f(t[i]);
    }
}

cudaError_t eb_cuda_add_gelu(cudaStream_t s, float *y, int64_t ldy, const float *t,
                             int64_t rows, int64_t N)
{
    if (rows * N <= 0)
        return cudaSuccess;
    add_gelu_kernel1<<<eb_grid_for(rows * N, 256), 256, 0, s>>>(y, ldy, t, rows, N);
    return cudaGetLastError();
}

__global__ void add_kernel1(float *y, const float *a, const float *b, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] = a[i] + b[i];
}

cudaError_t eb_cuda_add(cudaStream_t s, float *y, const float *a, const float *b, int64_t n)
{
    if (n <= 0)
        return cudaSuccess;
    add_kernel1<<<eb_grid_for(n, 256), 256, 0, s>>>(y, a, b, n);
    return cudaGetLastError();
}

__global__ void silu_mul_kernel1(float *y, const float *gate, const float *up, int64_t rows,
                                 int64_t F, int64_t ld_in)
{
    int64_t n = rows * F;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / F, c = i % F;
        float g = gate[r * ld_in + c];
        float u = up[r * ld_in + c];
        y[i] = g / (1.0f + expf(-g)) * u;
    }
}

cudaError_t eb_cuda_silu_mul(cudaStream_t s, float *y, const float *gate, const float *up,
                             int64_t rows, int64_t F, int64_t ld_in)
{
    if (rows * F <= 0)
        return cudaSuccess;
    silu_mul_kernel1<<<eb_grid_for(rows * F, 256), 256, 0, s>>>(y, gate, up, rows, F, ld_in);
    return cudaGetLastError();
}

__global__ void f32_to_bf16_kernel1(__nv_bfloat16 *dst, const float *src, int64_t rows,
                                    int64_t cols, int64_t ld_src)
{
    int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / cols, c = i % cols;
        dst[i] = __float2bfloat16_rn(src[r * ld_src + c]);
    }
}

cudaError_t eb_cuda_f32_to_bf16(cudaStream_t s, __nv_bfloat16 *dst, const float *src,
                                int64_t rows, int64_t cols, int64_t ld_src)
{
    if (rows * cols <= 0)
        return cudaSuccess;
    f32_to_bf16_kernel1<<<eb_grid_for(rows * cols, 256), 256, 0, s>>>(dst, src, rows, cols,
                                                                        ld_src);
    return cudaGetLastError();
}

__global__ void copy_rows_kernel1(float *dst, int64_t ld_dst, const float *src, int64_t ld_src,
                                  int64_t rows, int64_t cols)
{
    int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / cols, c = i % cols;
        dst[r * ld_dst + c] = src[r * ld_src + c];
    }
}

cudaError_t eb_cuda_copy_rows(cudaStream_t s, float *dst, int64_t ld_dst, const float *src,
                              int64_t ld_src, int64_t rows, int64_t cols)
{
    if (rows * cols <= 0)
        return cudaSuccess;
    copy_rows_kernel1<<<eb_grid_for(rows * cols, 256), 256, 0, s>>>(dst, ld_dst, src, ld_src,
                                                                      rows, cols);
    return cudaGetLastError();
}

__global__ void add_rows_bcast_kernel1(float *y, const float *pos, int64_t B, int64_t TC)
{
    int64_t n = B * TC;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        y[i] += pos[i % TC];
}

cudaError_t eb_cuda_add_rows_bcast(cudaStream_t s, float *y, const float *pos, int64_t B,
                                   int64_t T, int64_t C)
{
    if (B * T * C <= 0)
        return cudaSuccess;
    add_rows_bcast_kernel1<<<eb_grid_for(B * T * C, 256), 256, 0, s>>>(y, pos, B, T * C);
    return cudaGetLastError();
}

__global__ void get_rows_kernel1(float *y, const void *table, int is_bf16, const int32_t *ids,
                                 int64_t n, int64_t C)
{
    int64_t total = n * C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / C, c = i % C;
        int64_t src = (int64_t)ids[r] * C + c;
        y[i] = is_bf16 ? __bfloat162float(((const __nv_bfloat16 *)table)[src])
                       : ((const float *)table)[src];
    }
}

cudaError_t eb_cuda_get_rows(cudaStream_t s, float *y, const void *table, int table_is_bf16,
                             const int32_t *ids, int64_t n, int64_t C)
{
    if (n * C <= 0)
        return cudaSuccess;
    get_rows_kernel1<<<eb_grid_for(n * C, 256), 256, 0, s>>>(y, table, table_is_bf16, ids, n, C);
    return cudaGetLastError();
}

__global__ void pool_last_kernel1(float *y, const float *x, const int32_t *lens, int64_t B,
                                  int64_t T, int64_t C)
{
    int64_t total = B * C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t b = i / C, c = i % C;
        y[i] = x[(b * T + (lens[b] - 1)) * C + c];
    }
}

cudaError_t eb_cuda_pool_last(cudaStream_t s, float *y, const float *x, const int32_t *lens,
                              int64_t B, int64_t T, int64_t C)
{
    if (B * C <= 0)
        return cudaSuccess;
    pool_last_kernel1<<<eb_grid_for(B * C, 256), 256, 0, s>>>(y, x, lens, B, T, C);
    return cudaGetLastError();
}

// One thread per (b, t, h, i < D/2) pair; fp32 angles like transformers.
__global__ void rope_kernel1(float *x, int64_t B, int64_t T, int64_t H, int64_t D,
                             int64_t batch_stride, int64_t token_stride, float theta)
{
    int64_t half = D / 2;
    int64_t total = B * T * H * half;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t j = i % half;
        int64_t h = (i / half) % H;
        int64_t t = (i / (half * H)) % T;
        int64_t b = i / (half * H * T);
        float inv_freq = 1.0f / powf(theta, (float)(2 * j) / (float)D);
        float ang = (float)t * inv_freq;
        float c = cosf(ang), sn = sinf(ang);
        float *p = x + b * batch_stride + t * token_stride + h * D;
        float x0 = p[j], x1 = p[j + half];
        p[j] = x0 * c - x1 * sn;
        p[j + half] = x1 * c + x0 * sn;
    }
}

cudaError_t eb_cuda_rope(cudaStream_t s, float *x, int64_t B, int64_t T, int64_t H, int64_t D,
                         int64_t batch_stride, int64_t token_stride, float theta)
{
    if (B * T * H * (D / 2) <= 0)
        return cudaSuccess;
    rope_kernel1<<<eb_grid_for(B * T * H * (D / 2), 256), 256, 0, s>>>(
        x, B, T, H, D, batch_stride, token_stride, theta);
    return cudaGetLastError();
}
