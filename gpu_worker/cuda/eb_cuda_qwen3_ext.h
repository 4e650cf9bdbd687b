/* eb_cuda_qwen3_ext — C entry points of libeb_cuda.so that reach the Qwen3 kernels directly
 * (for tests/unit/test_ops_qwen3.c and the Qwen3 GPU benchmark; found with
 * eb_cuda_loader_symbol()).
 *
 * The op table (eb_ops.h) has no packed-varlen attention and no fused q_norm/k_norm + RoPE or
 * pooling tail, so these are how the kernels behind them are checked against the CPU before the
 * interface grows. Activation pointers are backend (device) pointers, e.g. regions carved from
 * an eb_buffer of the CUDA backend; integer arrays are host memory and are copied to the device
 * here. Each call allocates what it needs, runs on the default stream and synchronises the
 * device before returning: tests and benchmarks only, never the request path. The caller must
 * synchronize() the backend first so its queued work (uploads) is done.
 * Return: EB_OK; EB_ERR_INVALID for shapes the kernel rejects; EB_ERR_INTERNAL on a device
 * failure (printed to stderr).
 */
#ifndef EB_CUDA_QWEN3_EXT_H
#define EB_CUDA_QWEN3_EXT_H

#include <stdint.h>

#include "eb_status.h"

/* eb_cuda_qwen3.h's eb_cuda_varlen_args with host integer arrays. */
typedef struct eb_cuda_q3_varlen {
    int B, H, Hkv, D, max_seqlen, Tq;
    int64_t q_bs, q_ts, k_bs, k_ts, v_bs, v_ts, o_bs, o_ts;
    float scale;
    int causal;
    int use_tensor_cores;
    const int32_t *cu_seqlens; /* host (B+1) or NULL */
    const int32_t *lens;       /* host (B) or NULL */
} eb_cuda_q3_varlen;

#define EB_CUDA_Q3_ATTN_VARLEN "eb_cuda_q3_attn_varlen"
typedef eb_status (*eb_cuda_q3_attn_varlen_fn)(float *out, const float *q, const float *k,
                                               const float *v, const eb_cuda_q3_varlen *a);

/* q (tokens, H, D) rows q_ts apart, k (tokens, Hkv, D) rows k_ts apart or NULL; gains device
 * (D) or NULL; cu_seqlens host (B+1) or NULL (then single/padded addressing with T, q_bs, k_bs
 * as in eb_cuda_qwen3.h). */
#define EB_CUDA_Q3_QK_NORM_ROPE "eb_cuda_q3_qk_norm_rope"
typedef eb_status (*eb_cuda_q3_qk_norm_rope_fn)(float *q, float *k, const float *q_gain,
                                                const float *k_gain, int64_t q_ts, int64_t q_bs,
                                                int64_t k_ts, int64_t k_bs, int64_t tokens,
                                                int64_t T, int H, int Hkv, int D, int B,
                                                const int32_t *cu_seqlens, float eps,
                                                float theta);

/* Last-token pooling + optional final RMSNorm (gain device or NULL) + L2 over the first dim
 * values; cu_seqlens host (B+1), or lens host (B) with T, or neither (row b). */
#define EB_CUDA_Q3_POOL_LAST_L2 "eb_cuda_q3_pool_last_l2"
typedef eb_status (*eb_cuda_q3_pool_last_l2_fn)(float *y, const float *x, int64_t ldx, int64_t C,
                                                int64_t dim, int64_t T, int B,
                                                const int32_t *cu_seqlens, const int32_t *lens,
                                                const float *gain, float eps);

/* The row kernels as the op table will call them (eb_cuda_qwen3.h documents each). */
#define EB_CUDA_Q3_RMSNORM "eb_cuda_q3_rmsnorm"
typedef eb_status (*eb_cuda_q3_rmsnorm_fn)(float *y, float *x, const float *residual,
                                           const float *gain, int64_t rows, int64_t C, int64_t ld,
                                           float eps);
#define EB_CUDA_Q3_SWIGLU "eb_cuda_q3_swiglu"
typedef eb_status (*eb_cuda_q3_swiglu_fn)(float *y, const float *gate, const float *up,
                                          int64_t rows, int64_t F, int64_t ld_in);
/* table device (V, C) BF16 (table_is_bf16) or fp32; ids device (n). */
#define EB_CUDA_Q3_EMBED "eb_cuda_q3_embed"
typedef eb_status (*eb_cuda_q3_embed_fn)(float *y, const void *table, int table_is_bf16,
                                         int64_t V, int64_t C, const int32_t *ids, int64_t n);

#endif
