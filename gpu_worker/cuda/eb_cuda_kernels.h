/* eb_cuda_kernels — host launchers of the CUDA backend's hand-written kernels (internal).
 *
 * Every launcher enqueues its kernel(s) on `stream` and returns the launch status
 * (cudaGetLastError after the launch); it never synchronises and never allocates. All pointers
 * are device pointers; activations are fp32 row-major as in eb_ops.h. Kernels are named
 * `<op>_kernel<N>` where N is the version number from the kernel lab (bench/kernels/<op>.cu)
 * that was promoted here. Only .cu files include this header (nvcc, C++).
 */
#ifndef EB_CUDA_KERNELS_H
#define EB_CUDA_KERNELS_H

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

/* Device failures are sticky for the process; the backend remembers the first one. */
#define EB_CUDA_ERRMSG_LEN 512

/* ---- layernorm (eb_cuda_layernorm.cu) ---- */
/* y (rows, C) = LN(x [+= residual]) * gain + shift; fp32 statistics, two-pass variance.
 * residual may be NULL; shift may be NULL. */
cudaError_t eb_cuda_layernorm(cudaStream_t s, float *y, float *x, const float *residual,
                              const float *gain, const float *shift, int64_t rows, int64_t C,
                              float eps);
/* Row-wise RMSNorm, rows `ld` apart; y may equal x. */
cudaError_t eb_cuda_rmsnorm(cudaStream_t s, float *y, float *x, const float *residual,
                            const float *gain, int64_t rows, int64_t C, int64_t ld, float eps);
/* y (rows, C) = x / max(||x||, eps); rows of x are ldx apart. */
cudaError_t eb_cuda_l2norm(cudaStream_t s, float *y, const float *x, int64_t rows, int64_t C,
                           int64_t ldx, float eps);

/* ---- elementwise (eb_cuda_gelu.cu) ---- */
cudaError_t eb_cuda_gelu_tanh(cudaStream_t s, float *y, const float *x, int64_t n);
/* In place over (rows, N) with rows ldy apart: y = gelu_tanh(y). */
cudaError_t eb_cuda_gelu_rows(cudaStream_t s, float *y, int64_t ldy, int64_t rows, int64_t N);
/* y += gelu_tanh(t) elementwise over (rows, N): y rows ldy apart, t contiguous. */
cudaError_t eb_cuda_add_gelu(cudaStream_t s, float *y, int64_t ldy, const float *t,
                             int64_t rows, int64_t N);
cudaError_t eb_cuda_add(cudaStream_t s, float *y, const float *a, const float *b, int64_t n);
cudaError_t eb_cuda_silu_mul(cudaStream_t s, float *y, const float *gate, const float *up,
                             int64_t rows, int64_t F, int64_t ld_in);
/* dst (rows, cols) bf16 contiguous = src rows ld_src apart (fp32), rounded to nearest even. */
cudaError_t eb_cuda_f32_to_bf16(cudaStream_t s, __nv_bfloat16 *dst, const float *src,
                                int64_t rows, int64_t cols, int64_t ld_src);
cudaError_t eb_cuda_copy_rows(cudaStream_t s, float *dst, int64_t ld_dst, const float *src,
                              int64_t ld_src, int64_t rows, int64_t cols);
/* y (B*T, C) += pos (T, C) broadcast over B. */
cudaError_t eb_cuda_add_rows_bcast(cudaStream_t s, float *y, const float *pos, int64_t B,
                                   int64_t T, int64_t C);
/* Gather rows of a table stored as fp32 or bf16 into fp32. */
cudaError_t eb_cuda_get_rows(cudaStream_t s, float *y, const void *table, int table_is_bf16,
                             const int32_t *ids, int64_t n, int64_t C);
/* y (B, C) row b = x row (b, lens[b]-1); lens device, B entries. */
cudaError_t eb_cuda_pool_last(cudaStream_t s, float *y, const float *x, const int32_t *lens,
                              int64_t B, int64_t T, int64_t C);
cudaError_t eb_cuda_rope(cudaStream_t s, float *x, int64_t B, int64_t T, int64_t H, int64_t D,
                         int64_t batch_stride, int64_t token_stride, float theta);

/* ---- softmax (eb_cuda_softmax.cu) ---- */
/* In place per row: x (rows, n) = softmax(scale * x). */
cudaError_t eb_cuda_softmax(cudaStream_t s, float *x, int64_t rows, int64_t n, float scale);

/* ---- attention (eb_cuda_attention.cu) ---- */
typedef struct eb_cuda_attn_args {
    int B, Tq, Tk, H, Hkv, D;
    int64_t q_bs, q_ts, k_bs, k_ts, v_bs, v_ts, o_bs, o_ts; /* batch / token strides */
    float scale;
    int causal;
    const int32_t *kv_lens; /* device, B entries, or NULL */
} eb_cuda_attn_args;
/* Flash-style fused attention, fp32 in/out, fp32 softmax; D <= 128. */
cudaError_t eb_cuda_attention(cudaStream_t s, float *out, const float *q, const float *k,
                              const float *v, const eb_cuda_attn_args *a);

/* ---- patch embedding (eb_cuda_patch.cu) ---- */
/* cols (B*T, Cin*P*P) = im2col of pixels (B, Cin, H, W), columns in (c, ky, kx) order, as fp32
 * (cols_f32) or bf16 (cols_bf16; exactly one of the two is non-NULL). */
cudaError_t eb_cuda_im2col(cudaStream_t s, float *cols_f32, __nv_bfloat16 *cols_bf16,
                           const float *pixels, int64_t B, int64_t Cin, int64_t H, int64_t W,
                           int64_t P);

/* ---- resize + normalise (eb_cuda_resize.cu) ---- */
/* Pillow's antialiased bicubic resize (22-bit fixed point, uint8 intermediate after the
 * horizontal pass), optionally followed by (x/255 - mean[c]) / std[c], channels-first.
 * The taps come from eb_resize_coeffs() (gpu_worker/eb_resize.h) computed on the host: they
 * are double-precision arithmetic whose exact rounding matters.
 *   src (in_h, in_w, 3) uint8 interleaved RGB; tmp uint8 scratch of
 *   max(in_h * out_w, out_h * in_w) * 3 bytes (the intermediate of either pass order). */
typedef struct eb_cuda_resize_plan {
    int in_w, in_h, out_w, out_h;
    int ksize_x, ksize_y;       /* taps per output sample along each axis */
    const int32_t *taps_x;      /* device (out_w, ksize_x) fixed point */
    const int32_t *bounds_x;    /* device (out_w, 2): first input sample, taps used */
    const int32_t *taps_y;      /* device (out_h, ksize_y) */
    const int32_t *bounds_y;    /* device (out_h, 2) */
} eb_cuda_resize_plan;
/* True when Pillow 13 runs the vertical pass first for this resize (see eb_resize.c). */
int eb_cuda_resize_vertical_first(int in_w, int in_h, int out_w, int out_h);
/* out_u8 (out_h, out_w, 3) or NULL; out_f32 (3, out_h, out_w) normalised or NULL. */
cudaError_t eb_cuda_resize(cudaStream_t s, uint8_t *out_u8, float *out_f32, uint8_t *tmp,
                           const uint8_t *src, const eb_cuda_resize_plan *plan,
                           const float mean[3], const float std[3]);

#endif
