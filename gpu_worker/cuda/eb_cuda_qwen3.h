/* eb_cuda_qwen3 — host launchers of the CUDA kernels written for Qwen3-Embedding (internal).
 *
 * Same contract as eb_cuda_kernels.h: every launcher enqueues its kernel(s) on `stream`, returns
 * the launch status (cudaErrorInvalidValue for shapes it cannot do, else cudaGetLastError()),
 * never synchronises and never allocates, so all of them can be captured into a CUDA graph. All
 * pointers are device pointers; activations are fp32 row-major (eb_ops.h) unless a launcher
 * says otherwise. Kernels are `<op>_kernel<N>`, N being the version in the kernel lab
 * (bench/kernels/attn_varlen.cu, bench/kernels/rmsnorm_rope.cu).
 *
 * Packed batches: B sequences stored back to back without padding, as flash-attention's varlen
 * kernels take them: `cu_seqlens` (device int32, B+1 entries) holds the cumulative lengths,
 * cu_seqlens[0] = 0 and sequence b owns rows cu_seqlens[b] .. cu_seqlens[b+1]-1. A token's
 * position (RoPE) is its index inside its own sequence.
 *
 * Only .cu files include this header (nvcc, C++).
 */
#ifndef EB_CUDA_QWEN3_H
#define EB_CUDA_QWEN3_H

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

/* ---- RMSNorm (eb_cuda_rmsnorm.cu) -------------------------------------------------------------
 * Row-wise RMSNorm with fp32 statistics, fused with the residual add, like eb_ops.h's rmsnorm:
 *   if residual: x += residual (x updated in place: the residual stream)
 *   y = gain * (x * (1 / sqrt(mean(x²) + eps)))      (the CPU backend's order of operations)
 * x, y, residual: (rows, C) with rows `ld` apart (ld >= C; per-head q_norm/k_norm use
 * rows = tokens*heads, C = ld = head_dim). y may equal x only without residual. gain (C). */
cudaError_t eb_cuda_rmsnorm_residual(cudaStream_t s, float *y, float *x, const float *residual,
                                     const float *gain, int64_t rows, int64_t C, int64_t ld,
                                     float eps);

/* ---- per-head q_norm/k_norm fused with RoPE (eb_cuda_rope.cu) ---------------------------------
 * In place on q (tokens, H, D) and, when k is not NULL, k (tokens, Hkv, D): for every (token,
 * head) row, x = RMSNorm_D(x) * gain when gain is not NULL (q_gain for q, k_gain for k), then the
 * rotate_half rotation at the token's position p:
 *   inv_freq_i = 1 / theta^(2i/D) (fp32, as transformers), angle = p * inv_freq_i (fp32),
 *   x'[i] = x[i] cos - x[i+D/2] sin,  x'[i+D/2] = x[i+D/2] cos + x[i] sin,   i < D/2.
 * Addressing: with cu_seqlens (packed), token r (0 <= r < tokens) is at x + r*ts and its position
 * is r - cu_seqlens[seq(r)]; without (padded or single sequence), token r is item r / T,
 * position r % T, at x + (r / T)*bs + (r % T)*ts. D even, D <= 256. */
typedef struct eb_cuda_qk_rope_args {
    float *q;                /* (tokens, H, D) rows q_ts apart (items q_bs apart) */
    float *k;                /* (tokens, Hkv, D) or NULL */
    const float *q_gain;     /* (D) or NULL (no norm) */
    const float *k_gain;     /* (D) or NULL */
    int64_t q_ts, q_bs, k_ts, k_bs;
    int64_t tokens;          /* rows of q (and k): packed total, or B*T */
    int64_t T;               /* padded: tokens per item (ignored with cu_seqlens) */
    int H, Hkv, D;
    int B;                   /* entries of cu_seqlens minus one (packed) */
    const int32_t *cu_seqlens; /* device (B+1) or NULL */
    float eps, theta;
} eb_cuda_qk_rope_args;
cudaError_t eb_cuda_qk_norm_rope(cudaStream_t s, const eb_cuda_qk_rope_args *a);

/* ---- SwiGLU (eb_cuda_swiglu.cu) -----------------------------------------------------------------
 * y (rows, F) contiguous = silu(gate) * up, silu(g) = g / (1 + exp(-g)); gate and up rows ld_in
 * apart (a fused (rows, 2F) projection: up = gate + F, ld_in = 2F). y may equal gate only when
 * ld_in == F. */
cudaError_t eb_cuda_swiglu(cudaStream_t s, float *y, const float *gate, const float *up,
                           int64_t rows, int64_t F, int64_t ld_in);

/* ---- last-token pooling + final norm + L2 (eb_cuda_pool_last.cu) ------------------------------
 * For each of B sequences, with r its last row:
 *   packed (cu_seqlens != NULL):   r = cu_seqlens[b+1] - 1
 *   padded (lens != NULL):          r = b*T + lens[b] - 1       (lens device, B entries)
 *   compact (both NULL):            r = b                       (rows already gathered)
 *   h = x[r] (C floats, rows ldx apart); if gain: h = gain * (h / sqrt(mean(h²) + eps))
 *   y[b] (dim floats, contiguous) = h[0:dim] / max(||h[0:dim]||, 1e-12)
 * dim in 1..C (Matryoshka truncation; C for the full embedding). One block per sequence. */
typedef struct eb_cuda_pool_args {
    float *y;                  /* (B, dim) */
    const float *x;            /* rows ldx apart */
    int64_t ldx, C, dim, T;
    int B;
    const int32_t *cu_seqlens; /* device (B+1) or NULL */
    const int32_t *lens;       /* device (B) or NULL */
    const float *gain;         /* (C) final RMSNorm weight, or NULL */
    float eps;                 /* RMSNorm eps */
} eb_cuda_pool_args;
cudaError_t eb_cuda_pool_last_l2(cudaStream_t s, const eb_cuda_pool_args *a);

/* ---- token embedding gather (eb_cuda_embed.cu) --------------------------------------------------
 * y (n, C) fp32 row i = table row ids[i]; table (V, C) BF16 (table_is_bf16) or fp32. ids device,
 * n entries. An id outside [0, V) yields a row of NaN (visible, never a wild read): validate ids
 * on the host first (the model does). */
cudaError_t eb_cuda_embed(cudaStream_t s, float *y, const void *table, int table_is_bf16,
                          int64_t V, int64_t C, const int32_t *ids, int64_t n);

/* ---- varlen causal grouped-query attention (eb_cuda_attn_varlen.cu) ---------------------------
 * out = softmax(scale * q·kᵀ [causal]) · v per head, fp32 softmax and accumulation, never a T×T
 * matrix. Query head h reads KV head h / (H / Hkv). Element (token t of sequence b, head h, d)
 * of q is at
 *   q[b*q_bs + (start_b + t)*q_ts + h*D + d],   start_b = cu_seqlens ? cu_seqlens[b] : 0
 * and likewise for k, v (KV head) and out. Length of sequence b:
 *   cu_seqlens[b+1] - cu_seqlens[b] (packed; set the batch strides to 0), else lens[b] (padded,
 *   device, keys >= lens[b] are ignored and query rows lens[b] .. Tq-1 are written as zeros),
 *   else Tq. Causal means key j is seen by query i when j <= i (Tq == Tk per sequence).
 * max_seqlen bounds every length (it sizes the grid: a graph may be captured with the largest
 * value and replayed for any batch under it). D <= 128 (128 for Qwen3), H % Hkv == 0.
 * Element type: fp32 (eb_cuda_attn_varlen) or BF16 in and out (eb_cuda_attn_varlen_bf16io).
 * `use_tensor_cores`: BF16 tensor-core tiles (WMMA, fp32 accumulate; inputs rounded to BF16,
 * so ~3e-3 relative difference from fp32) instead of the exact fp32 SIMT kernel; D must then be
 * a multiple of 16. */
typedef struct eb_cuda_varlen_args {
    int B, H, Hkv, D;
    int max_seqlen;            /* >= every sequence length (padded: Tq) */
    int Tq;                    /* padded: rows per item to write (lens mode); else 0 */
    int64_t q_bs, q_ts, k_bs, k_ts, v_bs, v_ts, o_bs, o_ts;
    float scale;
    int causal;
    const int32_t *cu_seqlens; /* device (B+1) or NULL */
    const int32_t *lens;       /* device (B) or NULL */
    int use_tensor_cores;
} eb_cuda_varlen_args;
cudaError_t eb_cuda_attn_varlen(cudaStream_t s, float *out, const float *q, const float *k,
                                const float *v, const eb_cuda_varlen_args *a);
cudaError_t eb_cuda_attn_varlen_bf16io(cudaStream_t s, __nv_bfloat16 *out,
                                       const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                                       const __nv_bfloat16 *v, const eb_cuda_varlen_args *a);

#endif
