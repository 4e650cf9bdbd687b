/* eb_cuda_qwen3_ext — the C entry points of eb_cuda_qwen3_ext.h: thin wrappers that copy the
 * host integer arrays to the device, launch one Qwen3 kernel on the default stream and wait.
 * For tests and benchmarks only (they allocate and synchronise).
 */
#include <stdio.h>
#include <string.h>

extern "C" {
#include "eb_cuda_qwen3_ext.h"
}
#include "eb_cuda_qwen3.h"

#define Q3_EXPORT extern "C" __attribute__((visibility("default")))

// Map a launch or device status to eb_status, printing device failures.
static eb_status q3_status(cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        e = cudaDeviceSynchronize();
    if (e == cudaSuccess)
        return EB_OK;
    if (e == cudaErrorInvalidValue) {
        cudaGetLastError(); // not sticky
        return EB_ERR_INVALID;
    }
    fprintf(stderr, "level=error event=cuda_qwen3_ext op=%s msg=\"%s (%s)\"\n", what,
            cudaGetErrorString(e), cudaGetErrorName(e));
    return EB_ERR_INTERNAL;
}

// A device copy of n host int32 values (NULL for NULL or n == 0); *e set on failure.
static int32_t *q3_ints(const int32_t *host, int64_t n, cudaError_t *e)
{
    if (!host || n <= 0 || *e != cudaSuccess)
        return nullptr;
    int32_t *d = nullptr;
    *e = cudaMalloc((void **)&d, (size_t)n * sizeof(int32_t));
    if (*e == cudaSuccess)
        *e = cudaMemcpy(d, host, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice);
    return d;
}

Q3_EXPORT eb_status eb_cuda_q3_attn_varlen(float *out, const float *q, const float *k,
                                           const float *v, const eb_cuda_q3_varlen *h);
Q3_EXPORT eb_status eb_cuda_q3_attn_varlen(float *out, const float *q, const float *k,
                                           const float *v, const eb_cuda_q3_varlen *h)
{
    if (!h)
        return EB_ERR_INVALID;
    eb_cuda_varlen_args a;
    memset(&a, 0, sizeof(a));
    a.B = h->B, a.H = h->H, a.Hkv = h->Hkv, a.D = h->D, a.max_seqlen = h->max_seqlen;
    a.Tq = h->Tq;
    a.q_bs = h->q_bs, a.q_ts = h->q_ts, a.k_bs = h->k_bs, a.k_ts = h->k_ts;
    a.v_bs = h->v_bs, a.v_ts = h->v_ts, a.o_bs = h->o_bs, a.o_ts = h->o_ts;
    a.scale = h->scale, a.causal = h->causal, a.use_tensor_cores = h->use_tensor_cores;
    cudaError_t e = cudaSuccess;
    int32_t *cu = q3_ints(h->cu_seqlens, h->B + 1, &e);
    int32_t *lens = q3_ints(h->lens, h->B, &e);
    a.cu_seqlens = cu, a.lens = lens;
    if (e == cudaSuccess)
        e = eb_cuda_attn_varlen(0, out, q, k, v, &a);
    eb_status st = q3_status(e, "attn_varlen");
    cudaFree(cu);
    cudaFree(lens);
    return st;
}

Q3_EXPORT eb_status eb_cuda_q3_qk_norm_rope(float *q, float *k, const float *q_gain,
                                            const float *k_gain, int64_t q_ts, int64_t q_bs,
                                            int64_t k_ts, int64_t k_bs, int64_t tokens, int64_t T,
                                            int H, int Hkv, int D, int B,
                                            const int32_t *cu_seqlens, float eps, float theta);
Q3_EXPORT eb_status eb_cuda_q3_qk_norm_rope(float *q, float *k, const float *q_gain,
                                            const float *k_gain, int64_t q_ts, int64_t q_bs,
                                            int64_t k_ts, int64_t k_bs, int64_t tokens, int64_t T,
                                            int H, int Hkv, int D, int B,
                                            const int32_t *cu_seqlens, float eps, float theta)
{
    eb_cuda_qk_rope_args a;
    memset(&a, 0, sizeof(a));
    a.q = q, a.k = k, a.q_gain = q_gain, a.k_gain = k_gain;
    a.q_ts = q_ts, a.q_bs = q_bs, a.k_ts = k_ts, a.k_bs = k_bs, a.tokens = tokens, a.T = T;
    a.H = H, a.Hkv = Hkv, a.D = D, a.B = B, a.eps = eps, a.theta = theta;
    cudaError_t e = cudaSuccess;
    int32_t *cu = q3_ints(cu_seqlens, (int64_t)B + 1, &e);
    a.cu_seqlens = cu;
    if (e == cudaSuccess)
        e = eb_cuda_qk_norm_rope(0, &a);
    eb_status st = q3_status(e, "qk_norm_rope");
    cudaFree(cu);
    return st;
}

Q3_EXPORT eb_status eb_cuda_q3_pool_last_l2(float *y, const float *x, int64_t ldx, int64_t C,
                                            int64_t dim, int64_t T, int B,
                                            const int32_t *cu_seqlens, const int32_t *lens,
                                            const float *gain, float eps);
Q3_EXPORT eb_status eb_cuda_q3_pool_last_l2(float *y, const float *x, int64_t ldx, int64_t C,
                                            int64_t dim, int64_t T, int B,
                                            const int32_t *cu_seqlens, const int32_t *lens,
                                            const float *gain, float eps)
{
    eb_cuda_pool_args a;
    memset(&a, 0, sizeof(a));
    a.y = y, a.x = x, a.ldx = ldx, a.C = C, a.dim = dim, a.T = T, a.B = B, a.gain = gain;
    a.eps = eps;
    cudaError_t e = cudaSuccess;
    int32_t *cu = q3_ints(cu_seqlens, (int64_t)B + 1, &e);
    int32_t *dl = q3_ints(lens, B, &e);
    a.cu_seqlens = cu, a.lens = dl;
    if (e == cudaSuccess)
        e = eb_cuda_pool_last_l2(0, &a);
    eb_status st = q3_status(e, "pool_last_l2");
    cudaFree(cu);
    cudaFree(dl);
    return st;
}

Q3_EXPORT eb_status eb_cuda_q3_rmsnorm(float *y, float *x, const float *residual,
                                       const float *gain, int64_t rows, int64_t C, int64_t ld,
                                       float eps);
Q3_EXPORT eb_status eb_cuda_q3_rmsnorm(float *y, float *x, const float *residual,
                                       const float *gain, int64_t rows, int64_t C, int64_t ld,
                                       float eps)
{
    return q3_status(eb_cuda_rmsnorm_residual(0, y, x, residual, gain, rows, C, ld, eps),
                     "rmsnorm");
}

Q3_EXPORT eb_status eb_cuda_q3_swiglu(float *y, const float *gate, const float *up, int64_t rows,
                                      int64_t F, int64_t ld_in);
Q3_EXPORT eb_status eb_cuda_q3_swiglu(float *y, const float *gate, const float *up, int64_t rows,
                                      int64_t F, int64_t ld_in)
{
    return q3_status(eb_cuda_swiglu(0, y, gate, up, rows, F, ld_in), "swiglu");
}

Q3_EXPORT eb_status eb_cuda_q3_embed(float *y, const void *table, int table_is_bf16, int64_t V,
                                     int64_t C, const int32_t *ids, int64_t n);
Q3_EXPORT eb_status eb_cuda_q3_embed(float *y, const void *table, int table_is_bf16, int64_t V,
                                     int64_t C, const int32_t *ids, int64_t n)
{
    return q3_status(eb_cuda_embed(0, y, table, table_is_bf16, V, C, ids, n), "embed");
}
