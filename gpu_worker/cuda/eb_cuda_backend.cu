/* eb_cuda_backend — the CUDA implementation of the op interface (eb_ops.h), as a shared library.
 *
 * The worker never links CUDA: eb_backend_create("cuda") dlopen()s libeb_cuda.so and calls
 * eb_cuda_backend_create(), so the same worker binary runs on machines without a driver (the
 * call then fails with a message and "auto" falls back to the CPU).
 *
 * Memory: every buffer_alloc is one cudaMalloc (the model asks for one weights buffer and one
 * activations buffer); reserve() makes the only other allocations, once, at load time: the
 * cuBLASLt workspace and a scratch area for GEMM inputs converted to BF16 / im2col columns.
 * Nothing is allocated on the request path.
 *
 * Streams: ops run in order on one compute stream. upload() copies through pinned staging
 * (two slots, so the memcpy into one slot overlaps the DMA from the other) on a copy stream that
 * first waits for the compute work already queued (the destination may still be read by it) and
 * that the compute stream then waits for. So the host work of the next batch (decode, resize,
 * staging) overlaps the GPU work of the current one; the device copy of batch i+1 overlapping
 * the compute of batch i would also need the model to alternate between two input regions.
 *
 * Graphs: graph_record_begin/end capture the ops of one forward on the compute stream into a
 * CUDA graph per key (the model uses the batch size); graph_replay launches it: one launch
 * instead of ~200. upload/download are not allowed while recording.
 *
 * Precision (EB_CUDA_PRECISION=fp32|tf32|bf16, default bf16): BF16 keeps weight matrices in
 * BF16 and converts GEMM inputs to BF16 (FP32 accumulate, FP32 out); TF32 and FP32 keep
 * everything fp32 and differ only in cuBLASLt's compute type. Every other op is fp32.
 *
 * Errors: every CUDA / cuBLASLt call goes through CUDA_TRY / LT_CHECK. The first failure is
 * logged to stderr, remembered, and every later op and synchronize() return EB_ERR_INTERNAL:
 * a sticky CUDA error poisons the context, so the worker must exit and be restarted.
 */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "eb_ops.h"
}
#include "eb_cuda_common.cuh"
#include "eb_cuda_gemm.h"
#include "eb_cuda_kernels.h"
#include "eb_cuda_qwen3.h"

#define STAGING_SLOT_BYTES (8u << 20)
#define WORKSPACE_BYTES (64u << 20)
#define MAX_GRAPHS 64
#define MAX_LENS 65536 /* kv_lens / pool_last lens: Qwen3 batches of up to 65,535 texts */

struct eb_buffer {
    void *dev;
    size_t size;
    eb_buffer_usage usage;
};

typedef struct cuda_graph_entry {
    uint64_t key;
    cudaGraphExec_t exec;
} cuda_graph_entry;

typedef struct cuda_ctx {
    int device;
    eb_cuda_precision prec;
    bool gelu_epilogue; /* cuBLASLt GELU epilogue (else a separate kernel) */
    bool tiled_gemm;    /* EB_CUDA_GEMM=tiled: the hand-written GEMM instead of cuBLASLt */
    bool warned_fallback;
    bool attn_tc;       /* EB_CUDA_ATTN=tc: causal attention on BF16 tensor cores (bf16 only) */
    cudaStream_t compute, copy;
    cudaEvent_t ev_compute_tail, ev_copy_done, ev_slot[2];
    void *staging[2];
    int next_slot;
    void *workspace;
    eb_cuda_gemm *gemm;
    void *scratch; /* bf16 GEMM inputs or fp32/bf16 im2col columns */
    size_t scratch_bytes;
    int32_t *lens_dev; /* pool_last lens (device, MAX_LENS) */
    int32_t *lens_pinned;
    bool capturing;
    bool capture_failed; /* an op failed while recording: the graph must not be kept */
    uint64_t capture_key;
    cuda_graph_entry graphs[MAX_GRAPHS];
    int n_graphs;
    bool failed;
    char failure[EB_CUDA_ERRMSG_LEN];
} cuda_ctx;

static cuda_ctx *ctx_of(eb_backend *be) { return (cuda_ctx *)be->ctx; }

/* eb_tensor_nelem's arithmetic, local: the library must not need symbols of the program that
 * loads it (it is dlopen()ed with RTLD_NOW by programs that may not export them). */
static int64_t nelem(const eb_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

static void fail(cuda_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(cuda_ctx *c, const char *fmt, ...)
{
    char msg[EB_CUDA_ERRMSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (!c->failed) {
        c->failed = true;
        snprintf(c->failure, sizeof(c->failure), "%s", msg);
    }
    fprintf(stderr, "level=error event=cuda_failure device=%d msg=\"%s\" hint=\"the CUDA context "
                    "is unusable; the worker must exit and be restarted\"\n",
            c->device, msg);
}

#define CUDA_TRY(c, call)                                                                        \
    do {                                                                                         \
        cudaError_t e_ = (call);                                                                 \
        if (e_ != cudaSuccess) {                                                                 \
            fail((c), "%s failed at %s:%d: %s (%s)", #call, __FILE__, __LINE__,                  \
                 cudaGetErrorString(e_), cudaGetErrorName(e_));                                  \
            return EB_ERR_INTERNAL;                                                              \
        }                                                                                        \
    } while (0)

#define LT_CHECK(c, call)                                                                        \
    do {                                                                                         \
        cublasStatus_t s_ = (call);                                                              \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                       \
            fail((c), "%s failed at %s:%d: %s (%d)", #call, __FILE__, __LINE__,                  \
                 eb_cuda_lt_status_str(s_), (int)s_);                                            \
            return EB_ERR_INTERNAL;                                                              \
        }                                                                                        \
    } while (0)

/* An op's error return: while a graph is being recorded it also spoils the recording, so that a
 * forward that failed half-way is never replayed as if it were complete. */
static eb_status capture_err(cuda_ctx *c, eb_status st)
{
    if (c->capturing)
        c->capture_failed = true;
    return st;
}

#define ALIVE(c)                                                                                 \
    do {                                                                                         \
        if ((c)->failed)                                                                         \
            return EB_ERR_INTERNAL;                                                              \
    } while (0)

/* ---- lifetime and memory ---------------------------------------------------------------------- */

static void release_graphs(cuda_ctx *c)
{
    for (int i = 0; i < c->n_graphs; i++)
        cudaGraphExecDestroy(c->graphs[i].exec);
    c->n_graphs = 0;
}

static void cuda_destroy(eb_backend *be)
{
    if (!be)
        return;
    cuda_ctx *c = ctx_of(be);
    if (c) {
        if (!c->failed)
            cudaDeviceSynchronize();
        release_graphs(c);
        eb_cuda_gemm_destroy(c->gemm);
        cudaFree(c->workspace);
        cudaFree(c->scratch);
        cudaFree(c->lens_dev);
        cudaFreeHost(c->lens_pinned);
        for (int i = 0; i < 2; i++) {
            cudaFreeHost(c->staging[i]);
            if (c->ev_slot[i])
                cudaEventDestroy(c->ev_slot[i]);
        }
        if (c->ev_compute_tail)
            cudaEventDestroy(c->ev_compute_tail);
        if (c->ev_copy_done)
            cudaEventDestroy(c->ev_copy_done);
        if (c->compute)
            cudaStreamDestroy(c->compute);
        if (c->copy)
            cudaStreamDestroy(c->copy);
        free(c);
    }
    free(be);
}

static bool cuda_supports(eb_backend *be, eb_op op, unsigned flags)
{
    (void)be;
    switch (op) {
    case EB_OP_MATMUL:
        // y += gelu(...) cannot use the epilogue (it applies GELU after adding C); the CPU
        // backend does not offer it either.
        return (flags & ~3u) == 0 && flags != 3u;
    case EB_OP_ATTENTION: return (flags & ~EB_ATTN_CAUSAL) == 0;
    case EB_OP_COUNT: return false;
    default: return flags == 0;
    }
}

static eb_status cuda_reserve(eb_backend *be, const eb_ops_limits *l)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (!l || l->max_batch <= 0 || l->max_tokens <= 0)
        return capture_err(c, EB_ERR_INVALID);
    // The largest GEMM input (M, K): M = tokens of the batch, K up to the MLP width or the
    // patch dim. BF16 inputs take 2 bytes; fp32 im2col columns 4.
    size_t M = (size_t)l->max_batch * (size_t)l->max_tokens;
    size_t K = (size_t)(l->max_hidden > l->max_patch_dim ? l->max_hidden : l->max_patch_dim);
    size_t need = (c->prec == EB_CUDA_BF16) ? M * K * 2 : M * (size_t)l->max_patch_dim * 4;
    need = (need + 255) & ~(size_t)255;
    if (need == 0)
        need = 256;
    if (need <= c->scratch_bytes)
        return EB_OK;
    if (c->capturing)
        return capture_err(c, EB_ERR_INVALID);
    CUDA_TRY(c, cudaStreamSynchronize(c->compute));
    cudaFree(c->scratch);
    c->scratch = NULL;
    c->scratch_bytes = 0;
    cudaError_t e = cudaMalloc(&c->scratch, need);
    if (e != cudaSuccess) {
        fprintf(stderr,
                "level=error event=cuda_reserve msg=\"cannot allocate %zu bytes of GEMM scratch "
                "(batch %lld, tokens %lld): %s\" hint=\"lower max_batch\"\n",
                need, (long long)l->max_batch, (long long)l->max_tokens, cudaGetErrorString(e));
        cudaGetLastError(); // out-of-memory is not sticky
        c->scratch = NULL;
        return EB_ERR_NOMEM;
    }
    c->scratch_bytes = need;
    return EB_OK;
}

static eb_buffer *cuda_buffer_alloc(eb_backend *be, size_t bytes, eb_buffer_usage usage)
{
    cuda_ctx *c = ctx_of(be);
    if (c->failed || bytes == 0 || c->capturing)
        return NULL;
    eb_buffer *b = (eb_buffer *)calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    cudaError_t e = cudaMalloc(&b->dev, bytes);
    if (e != cudaSuccess) {
        fprintf(stderr,
                "level=error event=cuda_alloc msg=\"cudaMalloc of %zu bytes (%s) failed: %s\"\n",
                bytes, usage == EB_BUFFER_WEIGHTS ? "weights" : "activations",
                cudaGetErrorString(e));
        cudaGetLastError();
        free(b);
        return NULL;
    }
    b->size = bytes;
    b->usage = usage;
    return b;
}

static void cuda_buffer_free(eb_backend *be, eb_buffer *buf)
{
    (void)be;
    if (!buf)
        return;
    cudaFree(buf->dev);
    free(buf);
}

static void *cuda_buffer_base(eb_backend *be, eb_buffer *buf)
{
    (void)be;
    return buf ? buf->dev : NULL;
}

static size_t cuda_buffer_size(eb_backend *be, eb_buffer *buf)
{
    (void)be;
    return buf ? buf->size : 0;
}

static eb_dtype cuda_weight_dtype(eb_backend *be, eb_dtype src, eb_weight_kind kind)
{
    (void)src;
    if (kind == EB_WEIGHT_MATRIX && ctx_of(be)->prec == EB_CUDA_BF16)
        return EB_DTYPE_BF16;
    return EB_DTYPE_F32;
}

/* Host conversions (the library must not depend on the worker's symbols). */
static float h_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static float h_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        float v = (float)mant * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exp == 31)
        u = sign | 0x7f800000u | (mant << 13);
    else
        u = sign | ((exp + 112u) << 23) | (mant << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t h_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float src_elem(const void *src, eb_dtype dt, int64_t i)
{
    switch (dt) {
    case EB_DTYPE_F32: return ((const float *)src)[i];
    case EB_DTYPE_BF16: return h_bf16_to_f32(((const uint16_t *)src)[i]);
    case EB_DTYPE_F16: return h_f16_to_f32(((const uint16_t *)src)[i]);
    default: return 0.0f;
    }
}

static eb_status cuda_weight_upload(eb_backend *be, eb_tensor *t, int64_t elem_offset,
                                    const void *host, eb_dtype src_dtype, int64_t n)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (!t || !host || n < 0 || elem_offset < 0 || elem_offset + n > nelem(t) ||
        (src_dtype != EB_DTYPE_F32 && src_dtype != EB_DTYPE_BF16 && src_dtype != EB_DTYPE_F16) ||
        c->capturing)
        return capture_err(c, EB_ERR_INVALID);
    size_t esz = (t->dtype == EB_DTYPE_F32 ? 4u : 2u);
    char *dst = (char *)t->data + (size_t)elem_offset * esz;
    // Convert in chunks through pinned slot 0 (synchronous: load time).
    size_t chunk = STAGING_SLOT_BYTES / 4;
    for (int64_t done = 0; done < n;) {
        int64_t m = n - done < (int64_t)chunk ? n - done : (int64_t)chunk;
        CUDA_TRY(c, cudaEventSynchronize(c->ev_slot[0]));
        if (t->dtype == EB_DTYPE_BF16) {
            uint16_t *s = (uint16_t *)c->staging[0];
            if (src_dtype == EB_DTYPE_BF16)
                memcpy(s, (const uint16_t *)host + done, (size_t)m * 2);
            else
                for (int64_t i = 0; i < m; i++)
                    s[i] = h_f32_to_bf16(src_elem(host, src_dtype, done + i));
        } else {
            float *s = (float *)c->staging[0];
            if (src_dtype == EB_DTYPE_F32)
                memcpy(s, (const float *)host + done, (size_t)m * 4);
            else
                for (int64_t i = 0; i < m; i++)
                    s[i] = src_elem(host, src_dtype, done + i);
        }
        CUDA_TRY(c, cudaMemcpyAsync(dst + (size_t)done * esz, c->staging[0], (size_t)m * esz,
                                    cudaMemcpyHostToDevice, c->copy));
        CUDA_TRY(c, cudaEventRecord(c->ev_slot[0], c->copy));
        done += m;
    }
    CUDA_TRY(c, cudaStreamSynchronize(c->copy));
    return EB_OK;
}

static eb_status cuda_upload(eb_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (c->capturing) {
        fprintf(stderr, "level=error event=cuda_upload msg=\"upload while recording a graph\"\n");
        return capture_err(c, EB_ERR_INVALID);
    }
    if (bytes == 0)
        return EB_OK;
    if (!dst || !src)
        return capture_err(c, EB_ERR_INVALID);
    // The destination may still be read by queued compute work: the copy waits for it.
    CUDA_TRY(c, cudaEventRecord(c->ev_compute_tail, c->compute));
    CUDA_TRY(c, cudaStreamWaitEvent(c->copy, c->ev_compute_tail, 0));
    for (size_t off = 0; off < bytes;) {
        size_t n = bytes - off < STAGING_SLOT_BYTES ? bytes - off : STAGING_SLOT_BYTES;
        int s = c->next_slot;
        c->next_slot ^= 1;
        CUDA_TRY(c, cudaEventSynchronize(c->ev_slot[s])); // the slot's previous copy is done
        memcpy(c->staging[s], (const char *)src + off, n);
        CUDA_TRY(c, cudaMemcpyAsync((char *)dst + off, c->staging[s], n, cudaMemcpyHostToDevice,
                                    c->copy));
        CUDA_TRY(c, cudaEventRecord(c->ev_slot[s], c->copy));
        off += n;
    }
    CUDA_TRY(c, cudaEventRecord(c->ev_copy_done, c->copy));
    CUDA_TRY(c, cudaStreamWaitEvent(c->compute, c->ev_copy_done, 0));
    return EB_OK;
}

static eb_status cuda_download(eb_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (c->capturing) {
        fprintf(stderr,
                "level=error event=cuda_download msg=\"download while recording a graph\"\n");
        return capture_err(c, EB_ERR_INVALID);
    }
    if (bytes == 0)
        return EB_OK;
    if (!dst || !src)
        return capture_err(c, EB_ERR_INVALID);
    for (size_t off = 0; off < bytes;) {
        size_t n = bytes - off < STAGING_SLOT_BYTES ? bytes - off : STAGING_SLOT_BYTES;
        CUDA_TRY(c, cudaEventSynchronize(c->ev_slot[0]));
        CUDA_TRY(c, cudaMemcpyAsync(c->staging[0], (const char *)src + off, n,
                                    cudaMemcpyDeviceToHost, c->compute));
        CUDA_TRY(c, cudaStreamSynchronize(c->compute));
        memcpy((char *)dst + off, c->staging[0], n);
        off += n;
    }
    return EB_OK;
}

static eb_status cuda_synchronize(eb_backend *be)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    CUDA_TRY(c, cudaStreamSynchronize(c->copy));
    CUDA_TRY(c, cudaStreamSynchronize(c->compute));
    CUDA_TRY(c, cudaGetLastError());
    return EB_OK;
}

/* ---- ops -------------------------------------------------------------------------------------- */

#define LAUNCH(c, call) CUDA_TRY(c, call)

static const float *vec_f32(const eb_tensor *t)
{
    return t ? (const float *)t->data : NULL;
}

// The fp32 -> bf16 copy of x for a BF16 GEMM, into scratch. NULL when scratch is too small.
static __nv_bfloat16 *bf16_input(cuda_ctx *c, const float *x, int64_t ldx, int64_t M, int64_t K,
                                 eb_status *st)
{
    size_t need = (size_t)M * (size_t)K * 2;
    if (!c->scratch || need > c->scratch_bytes) {
        fprintf(stderr,
                "level=error event=cuda_matmul msg=\"GEMM input (%lld x %lld) exceeds the "
                "reserved scratch (%zu bytes)\" hint=\"call reserve() with the largest shapes\"\n",
                (long long)M, (long long)K, c->scratch_bytes);
        *st = EB_ERR_INVALID;
        return NULL;
    }
    cudaError_t e = eb_cuda_f32_to_bf16(c->compute, (__nv_bfloat16 *)c->scratch, x, M, K, ldx);
    if (e != cudaSuccess) {
        fail(c, "f32_to_bf16 launch: %s", cudaGetErrorString(e));
        *st = EB_ERR_INTERNAL;
        return NULL;
    }
    *st = EB_OK;
    return (__nv_bfloat16 *)c->scratch;
}

// y (M, N) [+]= x (M, K) · wᵀ + bias [GELU]; x already in the GEMM's input dtype.
static eb_status gemm_common(cuda_ctx *c, float *y, int64_t ldy, const void *x_in, int64_t ldx,
                             const eb_tensor *w, const eb_tensor *bias, int64_t M, int64_t N,
                             int64_t K, bool accumulate, bool gelu)
{
    eb_cuda_gemm_args a;
    memset(&a, 0, sizeof(a));
    a.y = y;
    a.ldy = ldy;
    a.x = x_in;
    a.ldx = ldx;
    a.w = w->data;
    a.bias = vec_f32(bias);
    a.M = M;
    a.N = N;
    a.K = K;
    a.accumulate = accumulate;
    a.gelu = gelu && c->gelu_epilogue;
    if (c->tiled_gemm) {
        a.gelu = gelu;
        LAUNCH(c, eb_cuda_gemm_tiled(c->compute, &a, c->prec == EB_CUDA_BF16));
        return EB_OK;
    }
    cublasStatus_t ls = eb_cuda_gemm_run(c->gemm, c->compute, &a);
    if (ls == CUBLAS_STATUS_NOT_SUPPORTED) {
        // No cuBLASLt algorithm for this shape/alignment/epilogue: the tiled kernel instead
        // (correct, slower). Logged once per backend so a slow path shows in the logs.
        if (!c->warned_fallback) {
            c->warned_fallback = true;
            fprintf(stderr,
                    "level=warn event=cuda_gemm_fallback M=%lld N=%lld K=%lld ldx=%lld ldy=%lld "
                    "msg=\"cuBLASLt has no algorithm; using the tiled kernel\"\n",
                    (long long)M, (long long)N, (long long)K, (long long)ldx, (long long)ldy);
        }
        a.gelu = gelu;
        LAUNCH(c, eb_cuda_gemm_tiled(c->compute, &a, c->prec == EB_CUDA_BF16));
        return EB_OK;
    }
    LT_CHECK(c, ls);
    if (gelu && !c->gelu_epilogue)
        LAUNCH(c, eb_cuda_gelu_rows(c->compute, y, ldy, M, N));
    return EB_OK;
}

static eb_status cuda_matmul(eb_backend *be, float *y, int64_t ldy, const float *x, int64_t ldx,
                             const eb_tensor *w, const eb_tensor *bias, int64_t M, unsigned flags)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (!y || !x || !w || w->ndim != 2 || M < 0 || (flags & ~3u))
        return capture_err(c, EB_ERR_INVALID);
    int64_t N = w->shape[0], K = w->shape[1];
    if (ldx < K || ldy < N || (bias && nelem(bias) != N))
        return capture_err(c, EB_ERR_INVALID);
    if ((flags & EB_MATMUL_GELU_TANH) && (flags & EB_MATMUL_ACCUMULATE))
        return capture_err(c, EB_ERR_UNSUPPORTED);
    if (M == 0)
        return EB_OK;
    bool acc = (flags & EB_MATMUL_ACCUMULATE) != 0, gelu = (flags & EB_MATMUL_GELU_TANH) != 0;
    if (c->prec == EB_CUDA_BF16) {
        if (w->dtype != EB_DTYPE_BF16)
            return capture_err(c, EB_ERR_INVALID);
        eb_status st;
        __nv_bfloat16 *xb = bf16_input(c, x, ldx, M, K, &st);
        if (!xb)
            return capture_err(c, st);
        return gemm_common(c, y, ldy, xb, K, w, bias, M, N, K, acc, gelu);
    }
    if (w->dtype != EB_DTYPE_F32)
        return capture_err(c, EB_ERR_INVALID);
    return gemm_common(c, y, ldy, x, ldx, w, bias, M, N, K, acc, gelu);
}

static eb_status cuda_layernorm(eb_backend *be, float *y, float *x, const float *residual,
                                const eb_tensor *gain, const eb_tensor *shift, int64_t rows,
                                int64_t C, float eps)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (!y || !x || !gain || rows < 0 || C <= 0 || nelem(gain) != C ||
        (shift && nelem(shift) != C) || (residual && y == x))
        return capture_err(c, EB_ERR_INVALID);
    LAUNCH(c, eb_cuda_layernorm(c->compute, y, x, residual, vec_f32(gain), vec_f32(shift), rows,
                                C, eps));
    return EB_OK;
}

static eb_status cuda_rmsnorm(eb_backend *be, float *y, float *x, const float *residual,
                              const eb_tensor *gain, int64_t rows, int64_t C, int64_t ld,
                              float eps)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (!y || !x || !gain || rows < 0 || C <= 0 || ld < C || nelem(gain) != C ||
        (residual && y == x))
        return capture_err(c, EB_ERR_INVALID);
    // Qwen3's kernel (eb_cuda_rmsnorm.cu): warp per row, float4, residual add fused.
    LAUNCH(c, eb_cuda_rmsnorm_residual(c->compute, y, x, residual, vec_f32(gain), rows, C, ld,
                                       eps));
    return EB_OK;
}

static eb_status cuda_gelu_tanh(eb_backend *be, float *y, const float *x, int64_t n)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (!y || !x || n < 0)
        return capture_err(c, EB_ERR_INVALID);
    LAUNCH(c, eb_cuda_gelu_tanh(c->compute, y, x, n));
    return EB_OK;
}

static eb_status cuda_silu_mul(eb_backend *be, float *y, const float *gate, const float *up,
                               int64_t rows, int64_t F, int64_t ld_in)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (!y || !gate || !up || rows < 0 || F <= 0 || ld_in < F || (y == gate && ld_in != F))
        return capture_err(c, EB_ERR_INVALID);
    LAUNCH(c, eb_cuda_swiglu(c->compute, y, gate, up, rows, F, ld_in)); // eb_cuda_swiglu.cu
    return EB_OK;
}

static eb_status cuda_softmax(eb_backend *be, float *x, int64_t rows, int64_t n, float scale)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (!x || rows < 0 || n <= 0)
        return capture_err(c, EB_ERR_INVALID);
    LAUNCH(c, eb_cuda_softmax(c->compute, x, rows, n, scale));
    return EB_OK;
}

static eb_status cuda_attention(eb_backend *be, float *out, const float *q, const float *k,
                                const float *v, const eb_attn_desc *d)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (!out || !q || !k || !v || !d || d->B < 0 || d->Tq < 0 || d->Tk < 0 || d->H <= 0 ||
        d->Hkv <= 0 || d->H % d->Hkv || d->D <= 0 || (d->flags & ~EB_ATTN_CAUSAL) ||
        ((d->flags & EB_ATTN_CAUSAL) && d->Tq != d->Tk))
        return capture_err(c, EB_ERR_INVALID);
    if (d->D > 128 || d->B > 65535 || d->H > 65535 || (d->kv_lens && d->B > MAX_LENS))
        return capture_err(c, EB_ERR_UNSUPPORTED);
    eb_cuda_attn_args a;
    memset(&a, 0, sizeof(a));
    a.B = (int)d->B, a.Tq = (int)d->Tq, a.Tk = (int)d->Tk, a.H = (int)d->H, a.Hkv = (int)d->Hkv;
    a.D = (int)d->D;
    a.q_bs = d->q_batch_stride, a.q_ts = d->q_token_stride;
    a.k_bs = d->k_batch_stride, a.k_ts = d->k_token_stride;
    a.v_bs = d->v_batch_stride, a.v_ts = d->v_token_stride;
    a.o_bs = d->out_batch_stride, a.o_ts = d->out_token_stride;
    a.scale = d->scale;
    a.causal = (d->flags & EB_ATTN_CAUSAL) != 0;
    if (d->kv_lens) {
        if (c->capturing)
            return capture_err(c, EB_ERR_UNSUPPORTED); // host lengths cannot be baked into a graph
        for (int64_t b = 0; b < d->B; b++)
            if (d->kv_lens[b] < 0 || d->kv_lens[b] > d->Tk)
                return capture_err(c, EB_ERR_INVALID);
        // An async copy from pageable memory: CUDA stages the few bytes before returning (the
        // caller may reuse kv_lens at once) and the stream orders the copy after the kernels
        // still reading lens_dev, so no synchronisation (Qwen3's padded layout calls this once
        // per layer).
        CUDA_TRY(c, cudaMemcpyAsync(c->lens_dev, d->kv_lens, (size_t)d->B * sizeof(int32_t),
                                    cudaMemcpyHostToDevice, c->compute));
        a.kv_lens = c->lens_dev;
    }
    if (a.causal) {
        // Qwen3: causal grouped-query attention (eb_cuda_attn_varlen.cu) — the query heads of a
        // KV group share the staged keys, padded keys and queries are skipped; version 2 (fp32)
        // or version 3 (BF16 tensor cores, EB_CUDA_ATTN=tc with EB_CUDA_PRECISION=bf16).
        eb_cuda_varlen_args va;
        memset(&va, 0, sizeof(va));
        va.B = a.B, va.H = a.H, va.Hkv = a.Hkv, va.D = a.D, va.max_seqlen = a.Tq, va.Tq = a.Tq;
        va.q_bs = a.q_bs, va.q_ts = a.q_ts, va.k_bs = a.k_bs, va.k_ts = a.k_ts;
        va.v_bs = a.v_bs, va.v_ts = a.v_ts, va.o_bs = a.o_bs, va.o_ts = a.o_ts;
        va.scale = a.scale, va.causal = 1, va.lens = a.kv_lens;
        va.use_tensor_cores = c->attn_tc && (a.D == 64 || a.D == 128);
        LAUNCH(c, eb_cuda_attn_varlen(c->compute, out, q, k, v, &va));
        return EB_OK;
    }
    LAUNCH(c, eb_cuda_attention(c->compute, out, q, k, v, &a));
    return EB_OK;
}

static eb_status cuda_rope(eb_backend *be, float *x, int64_t B, int64_t T, int64_t H, int64_t D,
                           int64_t batch_stride, int64_t token_stride, float theta)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (!x || B < 0 || T < 0 || H <= 0 || D <= 0 || (D & 1) || token_stride < H * D ||
        !(theta > 0.0f))
        return capture_err(c, EB_ERR_INVALID);
    if (B * T == 0)
        return EB_OK;
    if (D <= 256) {
        // eb_cuda_rope.cu: warp per token, angles computed exactly as the CPU (fp32 inv_freq
        // from a correctly rounded pow), so long positions agree.
        eb_cuda_qk_rope_args ra;
        memset(&ra, 0, sizeof(ra));
        ra.q = x, ra.q_ts = token_stride, ra.q_bs = batch_stride, ra.tokens = B * T, ra.T = T;
        ra.H = (int)H, ra.D = (int)D, ra.theta = theta;
        LAUNCH(c, eb_cuda_qk_norm_rope(c->compute, &ra));
        return EB_OK;
    }
    LAUNCH(c, eb_cuda_rope(c->compute, x, B, T, H, D, batch_stride, token_stride, theta));
    return EB_OK;
}

static eb_status cuda_add(eb_backend *be, float *y, const float *a, const float *b, int64_t n)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (!y || !a || !b || n < 0)
        return capture_err(c, EB_ERR_INVALID);
    LAUNCH(c, eb_cuda_add(c->compute, y, a, b, n));
    return EB_OK;
}

static eb_status cuda_l2norm(eb_backend *be, float *y, const float *x, int64_t rows, int64_t C,
                             int64_t ldx, float eps)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (!y || !x || rows < 0 || C <= 0 || ldx < C || (y == x && ldx != C))
        return capture_err(c, EB_ERR_INVALID);
    LAUNCH(c, eb_cuda_l2norm(c->compute, y, x, rows, C, ldx, eps));
    return EB_OK;
}

static eb_status cuda_patch_embed(eb_backend *be, float *out, const float *pixels,
                                  const eb_tensor *w, const eb_tensor *bias, const eb_tensor *pos,
                                  int64_t B, int64_t Cin, int64_t Himg, int64_t Wimg, int64_t P)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    // Like Conv2d (and unlike the letter of eb_ops.h), a size that is not a multiple of P drops
    // the last partial row/column of patches: so400m is 384 px with 14 px patches (27 x 27).
    if (!out || !pixels || !w || B < 0 || Cin <= 0 || P <= 0 || Himg < P || Wimg < P)
        return capture_err(c, EB_ERR_INVALID);
    int64_t C = w->shape[0], T = (Himg / P) * (Wimg / P), K = Cin * P * P, M = B * T;
    if (nelem(w) != C * K ||
        w->dtype != (c->prec == EB_CUDA_BF16 ? EB_DTYPE_BF16 : EB_DTYPE_F32))
        return capture_err(c, EB_ERR_INVALID);
    if ((bias && nelem(bias) != C) || (pos && nelem(pos) != T * C))
        return capture_err(c, EB_ERR_INVALID);
    if (B == 0)
        return EB_OK;
    size_t need = (size_t)M * (size_t)K * (c->prec == EB_CUDA_BF16 ? 2 : 4);
    if (!c->scratch || need > c->scratch_bytes) {
        fprintf(stderr,
                "level=error event=cuda_patch_embed msg=\"im2col (%lld x %lld) exceeds the "
                "reserved scratch (%zu bytes)\" hint=\"call reserve() with max_patch_dim\"\n",
                (long long)M, (long long)K, c->scratch_bytes);
        return capture_err(c, EB_ERR_INVALID);
    }
    if (c->prec == EB_CUDA_BF16) {
        LAUNCH(c, eb_cuda_im2col(c->compute, NULL, (__nv_bfloat16 *)c->scratch, pixels, B, Cin,
                                 Himg, Wimg, P));
    } else {
        LAUNCH(c, eb_cuda_im2col(c->compute, (float *)c->scratch, NULL, pixels, B, Cin, Himg,
                                 Wimg, P));
    }
    eb_status st = gemm_common(c, out, C, c->scratch, K, w, bias, M, C, K, false, false);
    if (st != EB_OK)
        return st;
    if (pos)
        LAUNCH(c, eb_cuda_add_rows_bcast(c->compute, out, vec_f32(pos), B, T, C));
    return EB_OK;
}

static eb_status cuda_get_rows(eb_backend *be, float *y, const eb_tensor *table,
                               const int32_t *ids, int64_t n)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (!y || !table || (n && !ids) || n < 0 || table->ndim < 1 || table->shape[0] <= 0)
        return capture_err(c, EB_ERR_INVALID);
    // (V, C) or e.g. the probe's (1, 1, C): rows are the outermost dim. ids are device memory
    // and cannot be range-checked here without a synchronisation (eb_ops.h allows that).
    int64_t C = nelem(table) / table->shape[0];
    // eb_cuda_embed.cu: a block per row, 16-byte loads; an id outside the table gives NaN rows.
    LAUNCH(c, eb_cuda_embed(c->compute, y, table->data, table->dtype == EB_DTYPE_BF16,
                            table->shape[0], C, ids, n));
    return EB_OK;
}

static eb_status cuda_pool_last(eb_backend *be, float *y, const float *x, const int32_t *lens,
                                int64_t B, int64_t T, int64_t C)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (!y || !x || !lens || B < 0 || T <= 0 || C <= 0)
        return capture_err(c, EB_ERR_INVALID);
    if (B > MAX_LENS || c->capturing)
        return capture_err(c, EB_ERR_UNSUPPORTED);
    for (int64_t b = 0; b < B; b++)
        if (lens[b] < 1 || lens[b] > T)
            return capture_err(c, EB_ERR_INVALID);
    CUDA_TRY(c, cudaStreamSynchronize(c->compute)); // lens_pinned may still be in flight
    memcpy(c->lens_pinned, lens, (size_t)B * sizeof(int32_t));
    CUDA_TRY(c, cudaMemcpyAsync(c->lens_dev, c->lens_pinned, (size_t)B * sizeof(int32_t),
                                cudaMemcpyHostToDevice, c->compute));
    LAUNCH(c, eb_cuda_pool_last(c->compute, y, x, c->lens_dev, B, T, C));
    return EB_OK;
}

static eb_status cuda_copy_rows(eb_backend *be, float *dst, int64_t ld_dst, const float *src,
                                int64_t ld_src, int64_t rows, int64_t cols)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (!dst || !src || rows < 0 || cols < 0 || ld_dst < cols || ld_src < cols)
        return capture_err(c, EB_ERR_INVALID);
    LAUNCH(c, eb_cuda_copy_rows(c->compute, dst, ld_dst, src, ld_src, rows, cols));
    return EB_OK;
}

/* ---- graphs ----------------------------------------------------------------------------------- */

static bool cuda_graph_replay(eb_backend *be, uint64_t key)
{
    cuda_ctx *c = ctx_of(be);
    if (c->failed || c->capturing || getenv("EB_CUDA_NO_GRAPHS"))
        return false;
    for (int i = 0; i < c->n_graphs; i++) {
        if (c->graphs[i].key == key) {
            cudaError_t e = cudaGraphLaunch(c->graphs[i].exec, c->compute);
            if (e != cudaSuccess) {
                fail(c, "cudaGraphLaunch(key %llu): %s", (unsigned long long)key,
                     cudaGetErrorString(e));
                return false; // the model then runs the ops, which report the failure
            }
            return true;
        }
    }
    return false;
}

static eb_status cuda_graph_record_begin(eb_backend *be, uint64_t key)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (c->capturing)
        return capture_err(c, EB_ERR_INVALID);
    if (c->n_graphs >= MAX_GRAPHS || getenv("EB_CUDA_NO_GRAPHS"))
        return EB_OK; // ignoring a record request is allowed
    // Work queued before the capture must not be part of it; the copy stream must be idle.
    CUDA_TRY(c, cudaStreamSynchronize(c->copy));
    CUDA_TRY(c, cudaStreamBeginCapture(c->compute, cudaStreamCaptureModeThreadLocal));
    c->capturing = true;
    c->capture_failed = false;
    c->capture_key = key;
    return EB_OK;
}

static eb_status cuda_graph_record_end(eb_backend *be, uint64_t key)
{
    cuda_ctx *c = ctx_of(be);
    if (!c->capturing)
        return c->failed ? EB_ERR_INTERNAL : EB_OK; // the begin was ignored
    c->capturing = false;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->compute, &g);
    if (e != cudaSuccess || !g) {
        fail(c, "cudaStreamEndCapture(key %llu): %s", (unsigned long long)key,
             cudaGetErrorString(e));
        return EB_ERR_INTERNAL;
    }
    if (key != c->capture_key || c->capture_failed || c->failed) {
        // A recording whose ops did not all succeed is dropped; the caller reports its error.
        cudaGraphDestroy(g);
        return c->failed ? EB_ERR_INTERNAL : EB_ERR_INVALID;
    }
    cudaGraphExec_t exec = NULL;
    e = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    CUDA_TRY(c, e);
    // Capturing only recorded the work: run it once now so this forward has its results.
    CUDA_TRY(c, cudaGraphLaunch(exec, c->compute));
    for (int i = 0; i < c->n_graphs; i++) {
        if (c->graphs[i].key == key) { // re-recorded: replace
            cudaGraphExecDestroy(c->graphs[i].exec);
            c->graphs[i].exec = exec;
            return EB_OK;
        }
    }
    c->graphs[c->n_graphs].key = key;
    c->graphs[c->n_graphs].exec = exec;
    c->n_graphs++;
    return EB_OK;
}

/* ---- creation --------------------------------------------------------------------------------- */

static eb_status init_ctx(cuda_ctx *c, char *err, size_t err_len)
{
#define INIT_TRY(call)                                                                           \
    do {                                                                                         \
        cudaError_t e_ = (call);                                                                 \
        if (e_ != cudaSuccess) {                                                                 \
            snprintf(err, err_len, "CUDA backend: %s failed: %s", #call, cudaGetErrorString(e_)); \
            return EB_ERR_UNAVAILABLE;                                                           \
        }                                                                                        \
    } while (0)
    INIT_TRY(cudaSetDevice(c->device));
    INIT_TRY(cudaStreamCreateWithFlags(&c->compute, cudaStreamNonBlocking));
    INIT_TRY(cudaStreamCreateWithFlags(&c->copy, cudaStreamNonBlocking));
    INIT_TRY(cudaEventCreateWithFlags(&c->ev_compute_tail, cudaEventDisableTiming));
    INIT_TRY(cudaEventCreateWithFlags(&c->ev_copy_done, cudaEventDisableTiming));
    for (int i = 0; i < 2; i++) {
        INIT_TRY(cudaEventCreateWithFlags(&c->ev_slot[i], cudaEventDisableTiming));
        INIT_TRY(cudaHostAlloc(&c->staging[i], STAGING_SLOT_BYTES, cudaHostAllocDefault));
    }
    INIT_TRY(cudaMalloc(&c->workspace, WORKSPACE_BYTES));
    INIT_TRY(cudaMalloc((void **)&c->lens_dev, MAX_LENS * sizeof(int32_t)));
    INIT_TRY(cudaHostAlloc((void **)&c->lens_pinned, MAX_LENS * sizeof(int32_t),
                           cudaHostAllocDefault));
    c->gemm = eb_cuda_gemm_create(c->prec, c->workspace, WORKSPACE_BYTES, err, err_len);
    if (!c->gemm)
        return EB_ERR_UNAVAILABLE;
    return EB_OK;
#undef INIT_TRY
}

extern "C" __attribute__((visibility("default"))) eb_backend *
eb_cuda_backend_create(const eb_backend_params *params, char *err, size_t err_len);

extern "C" eb_backend *eb_cuda_backend_create(const eb_backend_params *params, char *err,
                                              size_t err_len)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        snprintf(err, err_len,
                 "no usable CUDA device: cudaGetDeviceCount: %s (%d devices); check the NVIDIA "
                 "driver (nvidia-smi) or use --backend cpu",
                 e == cudaSuccess ? "ok" : cudaGetErrorString(e), n);
        return NULL;
    }
    int dev = params ? params->device_index : 0;
    if (dev < 0 || dev >= n) {
        snprintf(err, err_len, "CUDA device index %d out of range: %d device(s) present", dev, n);
        return NULL;
    }
    const char *ps = getenv("EB_CUDA_PRECISION");
    int prec = ps && *ps ? eb_cuda_precision_parse(ps) : EB_CUDA_BF16;
    if (prec < 0) {
        snprintf(err, err_len, "EB_CUDA_PRECISION=\"%s\" is not one of fp32, tf32, bf16", ps);
        return NULL;
    }
    eb_backend *be = (eb_backend *)calloc(1, sizeof(*be));
    cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof(*c));
    if (!be || !c) {
        free(be);
        free(c);
        snprintf(err, err_len, "out of memory creating the CUDA backend");
        return NULL;
    }
    be->ctx = c;
    c->device = dev;
    c->prec = (eb_cuda_precision)prec;
    const char *ge = getenv("EB_CUDA_GELU_EPILOGUE");
    c->gelu_epilogue = !(ge && strcmp(ge, "0") == 0);
    const char *tg = getenv("EB_CUDA_GEMM");
    c->tiled_gemm = tg && strcmp(tg, "tiled") == 0;
    const char *ta = getenv("EB_CUDA_ATTN");
    c->attn_tc = ta && strcmp(ta, "tc") == 0 && c->prec == EB_CUDA_BF16;
    if (init_ctx(c, err, err_len) != EB_OK) {
        cuda_destroy(be);
        return NULL;
    }
    cudaDeviceProp prop;
    memset(&prop, 0, sizeof(prop));
    cudaGetDeviceProperties(&prop, dev);
    int rt = 0, drv = 0;
    cudaRuntimeGetVersion(&rt);
    cudaDriverGetVersion(&drv);
    be->name = "cuda";
    char name[64];
    snprintf(name, sizeof(name), "%.63s", prop.name);
    snprintf(be->device, sizeof(be->device), "%s (sm_%d%d, %.0f GiB), %s, runtime %d, driver %d",
             name, prop.major, prop.minor, (double)prop.totalGlobalMem / (1 << 30),
             eb_cuda_precision_name(c->prec), rt, drv);
    be->n_threads = 0;
    eb_backend_iface *f = &be->iface;
    f->destroy = cuda_destroy;
    f->supports = cuda_supports;
    f->reserve = cuda_reserve;
    f->buffer_alloc = cuda_buffer_alloc;
    f->buffer_free = cuda_buffer_free;
    f->buffer_base = cuda_buffer_base;
    f->buffer_size = cuda_buffer_size;
    f->weight_dtype = cuda_weight_dtype;
    f->weight_upload = cuda_weight_upload;
    f->upload = cuda_upload;
    f->download = cuda_download;
    f->synchronize = cuda_synchronize;
    f->matmul = cuda_matmul;
    f->layernorm = cuda_layernorm;
    f->rmsnorm = cuda_rmsnorm;
    f->gelu_tanh = cuda_gelu_tanh;
    f->silu_mul = cuda_silu_mul;
    f->softmax = cuda_softmax;
    f->attention = cuda_attention;
    f->rope = cuda_rope;
    f->add = cuda_add;
    f->l2norm = cuda_l2norm;
    f->patch_embed = cuda_patch_embed;
    f->get_rows = cuda_get_rows;
    f->pool_last = cuda_pool_last;
    f->copy_rows = cuda_copy_rows;
    f->graph_replay = cuda_graph_replay;
    f->graph_record_begin = cuda_graph_record_begin;
    f->graph_record_end = cuda_graph_record_end;
    return be;
}

/* ---- extensions (eb_cuda_ext.h) --------------------------------------------------------------- */

extern "C" {
#include "eb_cuda_ext.h"
}

#define EXPORT extern "C" __attribute__((visibility("default")))

EXPORT eb_status eb_cuda_ext_resize(eb_backend *be, const uint8_t *src, int in_w, int in_h,
                                    int out_w, int out_h, const int32_t *bounds_x,
                                    const int32_t *taps_x, int ksize_x, const int32_t *bounds_y,
                                    const int32_t *taps_y, int ksize_y, const float mean[3],
                                    const float std[3], uint8_t *out_u8, float *out_f32);
EXPORT eb_status eb_cuda_ext_resize(eb_backend *be, const uint8_t *src, int in_w, int in_h,
                                    int out_w, int out_h, const int32_t *bounds_x,
                                    const int32_t *taps_x, int ksize_x, const int32_t *bounds_y,
                                    const int32_t *taps_y, int ksize_y, const float mean[3],
                                    const float std[3], uint8_t *out_u8, float *out_f32)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (!src || in_w <= 0 || in_h <= 0 || out_w <= 0 || out_h <= 0 || ksize_x <= 0 ||
        ksize_y <= 0 || !bounds_x || !taps_x || !bounds_y || !taps_y || c->capturing)
        return capture_err(c, EB_ERR_INVALID);
    size_t n_src = (size_t)in_w * in_h * 3;
    size_t n_tmp = 3 * ((size_t)out_w * in_h > (size_t)in_w * out_h ? (size_t)out_w * in_h
                                                                     : (size_t)in_w * out_h);
    size_t n_out = (size_t)out_w * out_h * 3;
    size_t n_kx = (size_t)out_w * ksize_x, n_ky = (size_t)out_h * ksize_y;
    size_t bytes = n_src + n_tmp + n_out + 4 * (n_kx + n_ky + 2 * (size_t)out_w + 2 * (size_t)out_h)
                   + 4 * n_out + 8 * 256;
    char *base = NULL;
    CUDA_TRY(c, cudaMalloc((void **)&base, bytes));
    size_t off = 0;
    auto carve = [&](size_t n) {
        char *p = base + off;
        off += (n + 255) & ~(size_t)255;
        return p;
    };
    uint8_t *d_src = (uint8_t *)carve(n_src), *d_tmp = (uint8_t *)carve(n_tmp);
    uint8_t *d_u8 = (uint8_t *)carve(n_out);
    float *d_f32 = (float *)carve(4 * n_out);
    int32_t *d_kx = (int32_t *)carve(4 * n_kx), *d_ky = (int32_t *)carve(4 * n_ky);
    int32_t *d_bx = (int32_t *)carve(8 * (size_t)out_w), *d_by = (int32_t *)carve(8 * (size_t)out_h);
    eb_status st = EB_OK;
    cudaError_t e = cudaMemcpy(d_src, src, n_src, cudaMemcpyHostToDevice);
    if (e == cudaSuccess)
        e = cudaMemcpy(d_kx, taps_x, 4 * n_kx, cudaMemcpyHostToDevice);
    if (e == cudaSuccess)
        e = cudaMemcpy(d_ky, taps_y, 4 * n_ky, cudaMemcpyHostToDevice);
    if (e == cudaSuccess)
        e = cudaMemcpy(d_bx, bounds_x, 8 * (size_t)out_w, cudaMemcpyHostToDevice);
    if (e == cudaSuccess)
        e = cudaMemcpy(d_by, bounds_y, 8 * (size_t)out_h, cudaMemcpyHostToDevice);
    if (e == cudaSuccess) {
        eb_cuda_resize_plan p = {in_w, in_h, out_w, out_h, ksize_x, ksize_y, d_kx, d_bx, d_ky, d_by};
        e = eb_cuda_resize(c->compute, d_u8, d_f32, d_tmp, d_src, &p, mean, std);
    }
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(c->compute);
    if (e == cudaSuccess && out_u8)
        e = cudaMemcpy(out_u8, d_u8, n_out, cudaMemcpyDeviceToHost);
    if (e == cudaSuccess && out_f32)
        e = cudaMemcpy(out_f32, d_f32, 4 * n_out, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) {
        fail(c, "resize: %s", cudaGetErrorString(e));
        st = EB_ERR_INTERNAL;
    }
    cudaFree(base);
    return st;
}

__global__ void fill_bf16_kernel1(__nv_bfloat16 *p, int64_t n, uint32_t seed)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        p[i] = __float2bfloat16_rn(((float)(h & 0xffff) / 65536.0f - 0.5f));
    }
}

EXPORT eb_status eb_cuda_ext_gemm_peak(eb_backend *be, int n, int iters, double *tflops);
EXPORT eb_status eb_cuda_ext_gemm_peak(eb_backend *be, int n, int iters, double *tflops)
{
    cuda_ctx *c = ctx_of(be);
    ALIVE(c);
    if (n <= 0 || iters <= 0 || !tflops || c->capturing)
        return capture_err(c, EB_ERR_INVALID);
    size_t elems = (size_t)n * n;
    __nv_bfloat16 *m = NULL;
    CUDA_TRY(c, cudaMalloc((void **)&m, 3 * elems * sizeof(__nv_bfloat16)));
    __nv_bfloat16 *a = m, *b = m + elems, *d = m + 2 * elems;
    eb_status st = EB_OK;
    cudaEvent_t t0 = NULL, t1 = NULL;
    cudaError_t e = cudaEventCreate(&t0);
    if (e == cudaSuccess)
        e = cudaEventCreate(&t1);
    if (e == cudaSuccess) {
        fill_bf16_kernel1<<<eb_grid_for((int64_t)elems, 256), 256, 0, c->compute>>>(a, (int64_t)elems, 1u);
        fill_bf16_kernel1<<<eb_grid_for((int64_t)elems, 256), 256, 0, c->compute>>>(b, (int64_t)elems, 2u);
        e = cudaGetLastError();
    }
    cublasStatus_t ls = CUBLAS_STATUS_SUCCESS;
    for (int i = 0; i < 3 && e == cudaSuccess && ls == CUBLAS_STATUS_SUCCESS; i++)
        ls = eb_cuda_gemm_bf16_peak(c->gemm, c->compute, d, a, b, n);
    if (e == cudaSuccess && ls == CUBLAS_STATUS_SUCCESS)
        e = cudaEventRecord(t0, c->compute);
    for (int i = 0; i < iters && e == cudaSuccess && ls == CUBLAS_STATUS_SUCCESS; i++)
        ls = eb_cuda_gemm_bf16_peak(c->gemm, c->compute, d, a, b, n);
    if (e == cudaSuccess && ls == CUBLAS_STATUS_SUCCESS)
        e = cudaEventRecord(t1, c->compute);
    if (e == cudaSuccess)
        e = cudaEventSynchronize(t1);
    float ms = 0.0f;
    if (e == cudaSuccess && ls == CUBLAS_STATUS_SUCCESS)
        e = cudaEventElapsedTime(&ms, t0, t1);
    if (ls != CUBLAS_STATUS_SUCCESS) {
        fail(c, "GEMM peak (n=%d): %s", n, eb_cuda_lt_status_str(ls));
        st = EB_ERR_INTERNAL;
    } else if (e != cudaSuccess) {
        fail(c, "GEMM peak (n=%d): %s", n, cudaGetErrorString(e));
        st = EB_ERR_INTERNAL;
    } else {
        *tflops = 2.0 * (double)n * n * n * iters / (ms * 1e-3) / 1e12;
    }
    if (t0)
        cudaEventDestroy(t0);
    if (t1)
        cudaEventDestroy(t1);
    cudaFree(m);
    return st;
}

EXPORT const char *eb_cuda_ext_failure(eb_backend *be);
EXPORT const char *eb_cuda_ext_failure(eb_backend *be)
{
    return be && be->ctx ? ctx_of(be)->failure : "";
}
