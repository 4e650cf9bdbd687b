/* eb_cpu_ops — CPU implementation of the op interface (fp32, one thread pool).
 *
 * The backend exists twice over: it serves embeddings on machines without a GPU, and it is the
 * reference every CUDA op is compared with. So each op is the straightforward algorithm, made
 * fast only in ways that keep it obviously right: a tuned GEMM for every matrix product,
 * row-parallel loops for the rest, and a polynomial exp (Cephes, ~1 ulp) so softmax, GELU and
 * SiLU vectorise.
 *
 * Matrix products: on CPUs with AVX-512, eb_cpu_gemm with the weight repacked once, in place,
 * into its panel layout at its first matmul (see "packed weights" below), and attention's two
 * products per head through the same kernel; elsewhere OpenBLAS sgemm, which repacks the weight
 * on every call. Both compute each output element as one chain over K in a fixed order, so a
 * row's result does not depend on which other rows are in the batch.
 *
 * Threading: OpenBLAS is set to one thread and each of its products is split over our pool by
 * output columns. Packed products, attention heads and row-wise ops are cut into pieces the
 * pool's threads claim dynamically (eb_cpu_pool_run_dynamic), so on a shared machine a thread
 * the OS pauses does not hold up the others; every piece is computed the same way whichever
 * thread runs it, so results do not depend on the schedule.
 */
#include "eb_cpu_ops.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "eb_cpu_gemm.h"
#include "eb_cpu_pool.h"
#include "eb_log.h"

// Hot elementwise loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked at load
// time by CPU feature (not CPU model: "arch=" clones fall back to baseline on CPUs the compiler
// does not know), so the build stays portable while servers get wide vectors. The project builds
// with -O2, where GCC vectorises only loops of known trip count; these loops need the full
// vectoriser, hence the per-file optimisation level.
#if defined(__x86_64__) && !defined(__clang__)
#pragma GCC optimize("O3", "no-trapping-math", "no-math-errno")
#define EB_VEC __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define EB_VEC
#endif

// Below this many multiply-adds a product runs on the calling thread (dispatch costs more).
#define GEMM_SERIAL_MNK (1 << 17)
// Below this many elements an elementwise op runs on the calling thread.
#define ELEMWISE_SERIAL_N (1 << 14)
// Output columns per sgemm block (a multiple of every sgemm kernel's unroll).
#define GEMM_COL_BLOCK 16

struct eb_buffer {
    void *base;
    size_t size;
    eb_buffer_usage usage;
};

typedef struct cpu_ctx {
    eb_cpu_pool *pool;
    int n_threads;
    // Attention scores: one (max_tokens x max_tokens) block per thread.
    float *attn_scratch;
    size_t attn_scratch_per_thread; // floats
    // im2col for patch_embed: (B*T, Cin*P*P).
    float *im2col;
    size_t im2col_floats;
    // Packed-weight GEMM (eb_cpu_gemm, AVX-512): weights are repacked in place into its panel
    // layout at their first matmul, and `packed` (sorted) lists the data pointers that are; the
    // activations operand is packed per call into `apack`. Without AVX-512 every product goes
    // to OpenBLAS and nothing is packed.
    bool packed_gemm;
    const void **packed;
    size_t packed_count, packed_cap;
    float *apack;
    size_t apack_floats;
    // Attention with the packed GEMM: per thread, packed q, k, v and probabilities.
    float *attn_pack;
    size_t attn_pack_per_thread; // floats
} cpu_ctx;

static cpu_ctx *ctx_of(eb_backend *be)
{
    return be->ctx;
}

// Chunks per thread for dynamically scheduled ops: enough that a thread the OS pauses leaves
// little behind, few enough that claiming them costs nothing.
#define CHUNKS_PER_THREAD 8

static int64_t chunk_for(const cpu_ctx *c, int64_t n)
{
    int64_t chunk = n / ((int64_t)c->n_threads * CHUNKS_PER_THREAD);
    return chunk > 0 ? chunk : 1;
}

/* ---- scalar math ------------------------------------------------------------------------------ */

/* exp(x) for fp32 with Cephes' expf polynomial: relative error ~1e-7 over the whole range; no
 * libm call so loops around it vectorise. Inputs below -87.3 give ~1e-38 (callers that need an
 * exact zero, such as masked attention keys, skip those entries). */
static inline float exp_fast(float x)
{
    x = x > 88.3762626647949f ? 88.3762626647949f : x;
    x = x < -87.3365478515625f ? -87.3365478515625f : x;
    // Nearest integer by the 1.5 * 2^23 trick (exact for |fx| < 2^22, branch-free).
    float nf = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    int n = (int)nf;
    float r = x - nf * 0.693359375f + nf * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        int i;
        float f;
    } scale = {.i = (n + 127) << 23};
    return p * scale.f;
}

/* gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x³). */
static inline float gelu_tanh_one(float x)
{
    float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return x / (1.0f + exp_fast(-2.0f * u));
}

/* ---- packed weights ----------------------------------------------------------------------------
 * A weight's bytes are either the (N, K) row-major matrix model code uploaded, or, once a matmul
 * has used it with the packed GEMM, the same floats in eb_cpu_gemm's panel layout. The sorted
 * pointer list says which; everything that reads a weight as a plain matrix (upload, get_rows,
 * the OpenBLAS path) turns it back first, so the layout is invisible outside this file. */

// Index of the first entry >= p.
static size_t packed_lower_bound(const cpu_ctx *c, const void *p)
{
    size_t lo = 0, hi = c->packed_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if ((const char *)c->packed[mid] < (const char *)p)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool is_packed(const cpu_ctx *c, const void *p)
{
    size_t i = packed_lower_bound(c, p);
    return i < c->packed_count && c->packed[i] == p;
}

static eb_status mark_packed(cpu_ctx *c, const void *p)
{
    if (c->packed_count == c->packed_cap) {
        size_t cap = c->packed_cap ? 2 * c->packed_cap : 256;
        const void **grown = realloc(c->packed, cap * sizeof(*grown));
        if (!grown)
            return EB_ERR_NOMEM;
        c->packed = grown;
        c->packed_cap = cap;
    }
    size_t i = packed_lower_bound(c, p);
    memmove(c->packed + i + 1, c->packed + i, (c->packed_count - i) * sizeof(*c->packed));
    c->packed[i] = p;
    c->packed_count++;
    return EB_OK;
}

// Forget every packed weight inside [lo, hi) (a weights buffer being freed).
static void unmark_range(cpu_ctx *c, const void *lo, const void *hi)
{
    size_t a = packed_lower_bound(c, lo), b = packed_lower_bound(c, hi);
    if (a == b)
        return; /* nothing packed in the range (c->packed may still be NULL) */
    memmove(c->packed + a, c->packed + b, (c->packed_count - b) * sizeof(*c->packed));
    c->packed_count -= b - a;
}

typedef struct repack_job {
    float *dst;
    const float *src;
    int64_t N, K;
    bool to_panels; // plain -> panels, else panels -> plain
} repack_job;

static void repack_task(void *arg, int64_t begin, int64_t end, int thread_index)
{
    (void)thread_index;
    const repack_job *j = arg;
    int64_t n0 = begin * EB_CPU_GEMM_NR, n1 = end * EB_CPU_GEMM_NR;
    if (n1 > j->N)
        n1 = j->N;
    // Panels start at n0*K in both layouts (n0 is a multiple of the panel width).
    if (j->to_panels)
        eb_cpu_gemm_pack_b_nk(j->dst + n0 * j->K, j->src + n0 * j->K, j->K, n1 - n0, j->K);
    else
        eb_cpu_gemm_unpack_b_nk(j->dst + n0 * j->K, j->src + n0 * j->K, n1 - n0, j->K);
}

// Rewrite the (N, K) fp32 matrix at data in place, through a temporary copy.
static eb_status repack(cpu_ctx *c, float *data, int64_t N, int64_t K, bool to_panels)
{
    size_t bytes = (size_t)N * (size_t)K * sizeof(float);
    float *tmp = malloc(bytes ? bytes : 1);
    if (!tmp)
        return EB_ERR_NOMEM;
    memcpy(tmp, data, bytes);
    repack_job j = {.dst = data, .src = tmp, .N = N, .K = K, .to_panels = to_panels};
    int64_t panels = eb_cpu_gemm_panels(N);
    if (c->n_threads <= 1 || N * K < ELEMWISE_SERIAL_N)
        repack_task(&j, 0, panels, 0);
    else
        eb_cpu_pool_run(c->pool, panels, repack_task, &j);
    free(tmp);
    return EB_OK;
}

// The weight as packed panels for the GEMM: false (left plain) when it cannot be packed.
static bool ensure_packed(cpu_ctx *c, const eb_tensor *w)
{
    if (is_packed(c, w->data))
        return true;
    if (w->dtype != EB_DTYPE_F32 || w->ndim != 2 || mark_packed(c, w->data) != EB_OK)
        return false;
    if (repack(c, w->data, w->shape[0], w->shape[1], true) != EB_OK) {
        unmark_range(c, w->data, (const char *)w->data + 1);
        return false;
    }
    return true;
}

// The weight back in its plain (N, K) layout (before a partial upload or a row gather).
static eb_status ensure_plain(cpu_ctx *c, const eb_tensor *t)
{
    if (!is_packed(c, t->data))
        return EB_OK;
    eb_status st = repack(c, t->data, t->shape[0], eb_tensor_nelem(t) / t->shape[0], false);
    if (st == EB_OK)
        unmark_range(c, t->data, (const char *)t->data + 1);
    return st;
}

/* ---- buffers and weights ---------------------------------------------------------------------- */

static eb_buffer *cpu_buffer_alloc(eb_backend *be, size_t bytes, eb_buffer_usage usage)
{
    (void)be;
    if (bytes == 0)
        return NULL;
    eb_buffer *buf = calloc(1, sizeof(*buf));
    if (!buf)
        return NULL;
    // mmap: page-aligned (>= EB_OPS_ALIGN), zeroed, and returned to the OS on free.
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        free(buf);
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    if (bytes >= (2u << 20))
        madvise(p, bytes, MADV_HUGEPAGE);
#endif
    buf->base = p;
    buf->size = bytes;
    buf->usage = usage;
    return buf;
}

static void cpu_buffer_free(eb_backend *be, eb_buffer *buf)
{
    if (!buf)
        return;
    unmark_range(ctx_of(be), buf->base, (char *)buf->base + buf->size);
    munmap(buf->base, buf->size);
    free(buf);
}

static void *cpu_buffer_base(eb_backend *be, eb_buffer *buf)
{
    (void)be;
    return buf->base;
}

static size_t cpu_buffer_size(eb_backend *be, eb_buffer *buf)
{
    (void)be;
    return buf->size;
}

static eb_dtype cpu_weight_dtype(eb_backend *be, eb_dtype src, eb_weight_kind kind)
{
    (void)be;
    (void)src;
    (void)kind;
    return EB_DTYPE_F32;
}

static eb_status cpu_weight_upload(eb_backend *be, eb_tensor *t, int64_t elem_offset,
                                   const void *host, eb_dtype src_dtype, int64_t n)
{
    if (!t || !t->data || !host || elem_offset < 0 || n < 0 ||
        elem_offset + n > eb_tensor_nelem(t) || t->dtype != EB_DTYPE_F32)
        return EB_ERR_INVALID;
    eb_status st = ensure_plain(ctx_of(be), t);
    if (st != EB_OK)
        return st;
    return eb_ops_to_f32((float *)t->data + elem_offset, host, src_dtype, (size_t)n);
}

static eb_status cpu_upload(eb_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes && (!dst || !src))
        return EB_ERR_INVALID;
    if (bytes)
        memmove(dst, src, bytes);
    return EB_OK;
}

static eb_status cpu_synchronize(eb_backend *be)
{
    (void)be;
    return EB_OK;
}

static eb_status ensure_attn_scratch(cpu_ctx *c, int64_t rows, int64_t cols)
{
    size_t need = (size_t)rows * (size_t)cols;
    if (need <= c->attn_scratch_per_thread)
        return EB_OK;
    size_t stride = eb_ops_align(need * sizeof(float)); // bytes per thread, aligned
    float *p = aligned_alloc(EB_OPS_ALIGN, stride * (size_t)c->n_threads);
    if (!p)
        return EB_ERR_NOMEM;
    free(c->attn_scratch);
    c->attn_scratch = p;
    c->attn_scratch_per_thread = stride / sizeof(float);
    return EB_OK;
}

/* Grow an aligned scratch array of floats (contents not kept). */
static eb_status ensure_floats(float **buf, size_t *have, size_t floats)
{
    if (floats <= *have)
        return EB_OK;
    float *p = aligned_alloc(EB_OPS_ALIGN, eb_ops_align(floats * sizeof(float)));
    if (!p)
        return EB_ERR_NOMEM;
    free(*buf);
    *buf = p;
    *have = floats;
    return EB_OK;
}

static eb_status ensure_im2col(cpu_ctx *c, size_t floats)
{
    return ensure_floats(&c->im2col, &c->im2col_floats, floats);
}

static eb_status ensure_apack(cpu_ctx *c, size_t floats)
{
    return ensure_floats(&c->apack, &c->apack_floats, floats);
}

static eb_status cpu_reserve(eb_backend *be, const eb_ops_limits *l)
{
    cpu_ctx *c = ctx_of(be);
    if (!l || l->max_batch < 0 || l->max_tokens < 0)
        return EB_ERR_INVALID;
    eb_status st = ensure_attn_scratch(c, l->max_tokens, l->max_tokens);
    if (st != EB_OK)
        return st;
    if (l->max_patch_dim > 0)
        st = ensure_im2col(c, (size_t)l->max_batch * (size_t)l->max_tokens *
                                  (size_t)l->max_patch_dim);
    // Packed activations for the largest product: all tokens by the widest row (K <= max_hidden).
    if (st == EB_OK && c->packed_gemm) {
        int64_t k = l->max_hidden > l->max_patch_dim ? l->max_hidden : l->max_patch_dim;
        st = ensure_apack(c, eb_cpu_gemm_a_floats(l->max_batch * l->max_tokens, k));
    }
    return st;
}

/* ---- matmul ----------------------------------------------------------------------------------- */

typedef struct gemm_job {
    float *y;
    int64_t ldy;
    const float *x;
    int64_t ldx;
    const float *w; // (N, K)
    int64_t M, N, K;
    const float *bias;   // (N) or NULL
    const float *rowadd; // (period, N) added to row i as rowadd[i % period], or NULL
    int64_t period;
    bool accumulate;
    bool gelu;
} gemm_job;

EB_VEC static void gemm_prefill(const gemm_job *j, int64_t n0, int64_t n1)
{
    for (int64_t i = 0; i < j->M; i++) {
        float *yr = j->y + i * j->ldy;
        const float *ar = j->rowadd ? j->rowadd + (i % j->period) * j->N : NULL;
        if (j->accumulate) {
            if (j->bias)
                for (int64_t n = n0; n < n1; n++)
                    yr[n] += j->bias[n];
        } else if (ar && j->bias) {
            for (int64_t n = n0; n < n1; n++)
                yr[n] = j->bias[n] + ar[n];
        } else if (ar) {
            for (int64_t n = n0; n < n1; n++)
                yr[n] = ar[n];
        } else {
            for (int64_t n = n0; n < n1; n++)
                yr[n] = j->bias[n];
        }
    }
}

EB_VEC static void gemm_gelu_epilogue(const gemm_job *j, int64_t n0, int64_t n1)
{
    for (int64_t i = 0; i < j->M; i++) {
        float *yr = j->y + i * j->ldy;
        if (j->bias)
            for (int64_t n = n0; n < n1; n++)
                yr[n] = gelu_tanh_one(yr[n] + j->bias[n]);
        else
            for (int64_t n = n0; n < n1; n++)
                yr[n] = gelu_tanh_one(yr[n]);
    }
}

static void gemm_columns(const gemm_job *j, int64_t n0, int64_t n1)
{
    if (n1 <= n0)
        return;
    float beta = 0.0f;
    // With GELU the bias goes in the epilogue (gelu(acc + b)); otherwise it is written into y
    // first and sgemm adds the product to it (beta = 1), which saves a pass over y.
    if (!j->gelu && (j->bias || j->rowadd || j->accumulate)) {
        if (j->bias || j->rowadd)
            gemm_prefill(j, n0, n1);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)j->M, (int)(n1 - n0), (int)j->K,
                1.0f, j->x, (int)j->ldx, j->w + n0 * j->K, (int)j->K, beta, j->y + n0,
                (int)j->ldy);
    if (j->gelu)
        gemm_gelu_epilogue(j, n0, n1);
}

static void gemm_task(void *arg, int64_t begin, int64_t end, int thread_index)
{
    (void)thread_index;
    const gemm_job *j = arg;
    int64_t n0 = begin * GEMM_COL_BLOCK;
    int64_t n1 = end * GEMM_COL_BLOCK;
    if (n1 > j->N)
        n1 = j->N;
    gemm_columns(j, n0, n1);
}

static void run_gemm(cpu_ctx *c, const gemm_job *j)
{
    int64_t blocks = (j->N + GEMM_COL_BLOCK - 1) / GEMM_COL_BLOCK;
    if (c->n_threads <= 1 || j->M * j->N * j->K < GEMM_SERIAL_MNK || blocks < 2)
        gemm_columns(j, 0, j->N);
    else
        eb_cpu_pool_run(c->pool, blocks, gemm_task, (void *)j);
}

/* ---- matmul with the packed GEMM ----
 * Two pool jobs per product: pack the activations into MR-row tiles (split by tiles), then the
 * product (split by 32-column weight panels, so each thread reads only its part of W). Each
 * output element is one FMA chain over K, whatever the split, as with the OpenBLAS path. */

typedef struct packed_gemm_job {
    cpu_ctx *c;
    const gemm_job *j;
    eb_cpu_gemm_args g;
    eb_cpu_gemm_plan plan;
} packed_gemm_job;

static void pack_a_task(void *arg, int64_t begin, int64_t end, int thread_index)
{
    (void)thread_index;
    const packed_gemm_job *p = arg;
    eb_cpu_gemm_pack_a(p->c->apack, p->j->x, p->j->ldx, p->j->M, p->j->K, begin, end);
}

static void packed_gemm_task(void *arg, int64_t begin, int64_t end, int thread_index)
{
    (void)thread_index;
    const packed_gemm_job *p = arg;
    eb_cpu_gemm_run_items(&p->g, &p->plan, begin, end);
}

EB_VEC static void gelu_post(void *arg, float *y, int64_t ldy, int64_t m0, int64_t m1,
                             int64_t n0, int64_t n1)
{
    (void)arg;
    for (int64_t i = m0; i < m1; i++) {
        float *yr = y + i * ldy;
        for (int64_t n = n0; n < n1; n++)
            yr[n] = gelu_tanh_one(yr[n]);
    }
}

// j->w must be packed (ensure_packed). False when scratch is short (the caller falls back).
static bool run_packed_gemm(cpu_ctx *c, const gemm_job *j)
{
    if (ensure_apack(c, eb_cpu_gemm_a_floats(j->M, j->K)) != EB_OK)
        return false;
    packed_gemm_job p = {
        .c = c, .j = j,
        .g = {.y = j->y, .ldy = j->ldy, .ap = c->apack, .bp = j->w, .M = j->M, .N = j->N,
              .K = j->K, .bias = j->bias, .load_y = j->accumulate,
              .post = j->gelu ? gelu_post : NULL},
    };
    bool serial = c->n_threads <= 1 || j->M * j->N * j->K < GEMM_SERIAL_MNK;
    if (j->rowadd) {
        // y = bias + rowadd first, then the product accumulates onto it.
        gemm_prefill(j, 0, j->N);
        p.g.bias = NULL;
        p.g.load_y = true;
    }
    int64_t tiles = eb_cpu_gemm_a_tiles(j->M);
    if (serial) {
        pack_a_task(&p, 0, tiles, 0);
        eb_cpu_gemm_run(&p.g, 0, eb_cpu_gemm_panels(j->N));
    } else {
        eb_cpu_gemm_plan_init(&p.plan, j->M, j->N, c->n_threads);
        eb_cpu_pool_run_dynamic(c->pool, tiles, chunk_for(c, tiles), pack_a_task, &p);
        eb_cpu_pool_run_dynamic(c->pool, p.plan.items, 1, packed_gemm_task, &p);
    }
    return true;
}

// Every weight product goes through here: the packed GEMM when the CPU has it, else OpenBLAS
// (with the weight in its plain layout).
static eb_status run_weight_gemm(cpu_ctx *c, gemm_job *j, const eb_tensor *w)
{
    if (c->packed_gemm && ensure_packed(c, w) && run_packed_gemm(c, j))
        return EB_OK;
    eb_status st = ensure_plain(c, w);
    if (st != EB_OK)
        return st;
    run_gemm(c, j);
    return EB_OK;
}

static eb_status cpu_matmul(eb_backend *be, float *y, int64_t ldy, const float *x, int64_t ldx,
                            const eb_tensor *w, const eb_tensor *bias, int64_t M, unsigned flags)
{
    if (!y || !x || !w || w->ndim != 2 || M < 0 || (flags & ~3u))
        return EB_ERR_INVALID;
    int64_t N = w->shape[0], K = w->shape[1];
    if (ldx < K || ldy < N || (bias && eb_tensor_nelem(bias) != N))
        return EB_ERR_INVALID;
    if ((flags & EB_MATMUL_GELU_TANH) && (flags & EB_MATMUL_ACCUMULATE))
        return EB_ERR_UNSUPPORTED;
    if (M == 0)
        return EB_OK;
    gemm_job j = {
        .y = y, .ldy = ldy, .x = x, .ldx = ldx, .w = w->data, .M = M, .N = N, .K = K,
        .bias = bias ? bias->data : NULL, .rowadd = NULL, .period = 1,
        .accumulate = (flags & EB_MATMUL_ACCUMULATE) != 0,
        .gelu = (flags & EB_MATMUL_GELU_TANH) != 0,
    };
    return run_weight_gemm(ctx_of(be), &j, w);
}

/* ---- norms ------------------------------------------------------------------------------------ */

typedef struct norm_job {
    float *y;
    float *x;
    const float *residual;
    const float *gain;
    const float *shift;
    int64_t C, ld;
    float eps;
} norm_job;

// Sums with 16 independent lanes so the loop vectorises without -ffast-math; the lane order is
// fixed, so the result is deterministic.
EB_VEC static float sum_lanes(const float *x, int64_t n)
{
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++)
            acc[l] += x[i + l];
    float s = 0.0f;
    for (; i < n; i++)
        s += x[i];
    for (int l = 0; l < 16; l++)
        s += acc[l];
    return s;
}

EB_VEC static float sumsq_dev_lanes(const float *x, int64_t n, float mean)
{
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) {
            float d = x[i + l] - mean;
            acc[l] += d * d;
        }
    float s = 0.0f;
    for (; i < n; i++) {
        float d = x[i] - mean;
        s += d * d;
    }
    for (int l = 0; l < 16; l++)
        s += acc[l];
    return s;
}

EB_VEC static void add_rows(float *x, const float *r, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] += r[i];
}

EB_VEC static void layernorm_task(void *arg, int64_t begin, int64_t end, int thread_index)
{
    (void)thread_index;
    const norm_job *j = arg;
    int64_t C = j->C;
    for (int64_t r = begin; r < end; r++) {
        float *x = j->x + r * C;
        float *y = j->y + r * C;
        if (j->residual)
            add_rows(x, j->residual + r * C, C);
        float mean = sum_lanes(x, C) / (float)C;
        float var = sumsq_dev_lanes(x, C, mean) / (float)C;
        float inv = 1.0f / sqrtf(var + j->eps);
        if (j->shift)
            for (int64_t i = 0; i < C; i++)
                y[i] = (x[i] - mean) * inv * j->gain[i] + j->shift[i];
        else
            for (int64_t i = 0; i < C; i++)
                y[i] = (x[i] - mean) * inv * j->gain[i];
    }
}

// Row-wise ops: each row is independent, so the rows are claimed dynamically (see
// eb_cpu_pool_run_dynamic).
static void run_rows(cpu_ctx *c, int64_t rows, int64_t row_len, eb_cpu_task_fn fn, void *arg)
{
    if (c->n_threads <= 1 || rows * row_len < ELEMWISE_SERIAL_N)
        fn(arg, 0, rows, 0);
    else
        eb_cpu_pool_run_dynamic(c->pool, rows, chunk_for(c, rows), fn, arg);
}

static eb_status cpu_layernorm(eb_backend *be, float *y, float *x, const float *residual,
                               const eb_tensor *gain, const eb_tensor *shift, int64_t rows,
                               int64_t C, float eps)
{
    if (!y || !x || !gain || rows < 0 || C <= 0 || eb_tensor_nelem(gain) != C ||
        (shift && eb_tensor_nelem(shift) != C) || (residual && y == x))
        return EB_ERR_INVALID;
    norm_job j = {.y = y, .x = x, .residual = residual, .gain = gain->data,
                  .shift = shift ? shift->data : NULL, .C = C, .ld = C, .eps = eps};
    run_rows(ctx_of(be), rows, C, layernorm_task, &j);
    return EB_OK;
}

EB_VEC static float sumsq_lanes(const float *x, int64_t n)
{
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++)
            acc[l] += x[i + l] * x[i + l];
    float s = 0.0f;
    for (; i < n; i++)
        s += x[i] * x[i];
    for (int l = 0; l < 16; l++)
        s += acc[l];
    return s;
}

EB_VEC static void rmsnorm_task(void *arg, int64_t begin, int64_t end, int thread_index)
{
    (void)thread_index;
    const norm_job *j = arg;
    int64_t C = j->C;
    for (int64_t r = begin; r < end; r++) {
        float *x = j->x + r * j->ld;
        float *y = j->y + r * j->ld;
        if (j->residual)
            add_rows(x, j->residual + r * j->ld, C);
        float inv = 1.0f / sqrtf(sumsq_lanes(x, C) / (float)C + j->eps);
        for (int64_t i = 0; i < C; i++)
            y[i] = j->gain[i] * (x[i] * inv);
    }
}

static eb_status cpu_rmsnorm(eb_backend *be, float *y, float *x, const float *residual,
                             const eb_tensor *gain, int64_t rows, int64_t C, int64_t ld, float eps)
{
    if (!y || !x || !gain || rows < 0 || C <= 0 || ld < C || eb_tensor_nelem(gain) != C ||
        (residual && y == x))
        return EB_ERR_INVALID;
    norm_job j = {.y = y, .x = x, .residual = residual, .gain = gain->data, .C = C, .ld = ld,
                  .eps = eps};
    run_rows(ctx_of(be), rows, C, rmsnorm_task, &j);
    return EB_OK;
}

/* ---- elementwise ------------------------------------------------------------------------------ */

typedef struct elem_job {
    float *y;
    const float *a;
    const float *b;
    int64_t n;  // row length for row-wise jobs
    int64_t ld; // input row stride
    float s;
} elem_job;

// Elementwise ops run over blocks of 4096 elements so the pool split is cheap to compute.
#define ELEM_BLOCK 4096

EB_VEC static void gelu_task(void *arg, int64_t begin, int64_t end, int thread_index)
{
    (void)thread_index;
    const elem_job *j = arg;
    int64_t i0 = begin * ELEM_BLOCK, i1 = end * ELEM_BLOCK;
    if (i1 > j->n)
        i1 = j->n;
    for (int64_t i = i0; i < i1; i++)
        j->y[i] = gelu_tanh_one(j->a[i]);
}

static void run_blocks(cpu_ctx *c, int64_t n, eb_cpu_task_fn fn, void *arg)
{
    int64_t blocks = (n + ELEM_BLOCK - 1) / ELEM_BLOCK;
    if (c->n_threads <= 1 || n < ELEMWISE_SERIAL_N)
        fn(arg, 0, blocks, 0);
    else
        eb_cpu_pool_run_dynamic(c->pool, blocks, chunk_for(c, blocks), fn, arg);
}

static eb_status cpu_gelu_tanh(eb_backend *be, float *y, const float *x, int64_t n)
{
    if (!y || !x || n < 0)
        return EB_ERR_INVALID;
    elem_job j = {.y = y, .a = x, .n = n};
    run_blocks(ctx_of(be), n, gelu_task, &j);
    return EB_OK;
}

EB_VEC static void add_task(void *arg, int64_t begin, int64_t end, int thread_index)
{
    (void)thread_index;
    const elem_job *j = arg;
    int64_t i0 = begin * ELEM_BLOCK, i1 = end * ELEM_BLOCK;
    if (i1 > j->n)
        i1 = j->n;
    for (int64_t i = i0; i < i1; i++)
        j->y[i] = j->a[i] + j->b[i];
}

static eb_status cpu_add(eb_backend *be, float *y, const float *a, const float *b, int64_t n)
{
    if (!y || !a || !b || n < 0)
        return EB_ERR_INVALID;
    elem_job j = {.y = y, .a = a, .b = b, .n = n};
    run_blocks(ctx_of(be), n, add_task, &j);
    return EB_OK;
}

EB_VEC static void silu_mul_task(void *arg, int64_t begin, int64_t end, int thread_index)
{
    (void)thread_index;
    const elem_job *j = arg;
    for (int64_t r = begin; r < end; r++) {
        const float *g = j->a + r * j->ld;
        const float *u = j->b + r * j->ld;
        float *y = j->y + r * j->n;
        for (int64_t i = 0; i < j->n; i++)
            y[i] = g[i] / (1.0f + exp_fast(-g[i])) * u[i];
    }
}

static eb_status cpu_silu_mul(eb_backend *be, float *y, const float *gate, const float *up,
                              int64_t rows, int64_t F, int64_t ld_in)
{
    if (!y || !gate || !up || rows < 0 || F <= 0 || ld_in < F || (y == gate && ld_in != F))
        return EB_ERR_INVALID;
    elem_job j = {.y = y, .a = gate, .b = up, .n = F, .ld = ld_in};
    run_rows(ctx_of(be), rows, F, silu_mul_task, &j);
    return EB_OK;
}

// In place: x[0..n) = softmax(scale * x). Returns nothing; n >= 1.
EB_VEC static void softmax_row(float *x, int64_t n, float scale)
{
    float lane_max[16];
    for (int l = 0; l < 16; l++)
        lane_max[l] = x[0];
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++)
            lane_max[l] = x[i + l] > lane_max[l] ? x[i + l] : lane_max[l];
    float m = x[0];
    for (; i < n; i++)
        m = x[i] > m ? x[i] : m;
    for (int l = 0; l < 16; l++)
        m = lane_max[l] > m ? lane_max[l] : m;
    float acc[16] = {0};
    i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) {
            float e = exp_fast(scale * (x[i + l] - m));
            x[i + l] = e;
            acc[l] += e;
        }
    float s = 0.0f;
    for (; i < n; i++) {
        float e = exp_fast(scale * (x[i] - m));
        x[i] = e;
        s += e;
    }
    for (int l = 0; l < 16; l++)
        s += acc[l];
    float inv = 1.0f / s;
    for (i = 0; i < n; i++)
        x[i] *= inv;
}

static void softmax_task(void *arg, int64_t begin, int64_t end, int thread_index)
{
    (void)thread_index;
    const elem_job *j = arg;
    for (int64_t r = begin; r < end; r++)
        softmax_row(j->y + r * j->n, j->n, j->s);
}

static eb_status cpu_softmax(eb_backend *be, float *x, int64_t rows, int64_t n, float scale)
{
    if (!x || rows < 0 || n <= 0 || scale < 0.0f)
        return EB_ERR_INVALID;
    elem_job j = {.y = x, .n = n, .s = scale};
    run_rows(ctx_of(be), rows, n, softmax_task, &j);
    return EB_OK;
}

EB_VEC static void l2norm_task(void *arg, int64_t begin, int64_t end, int thread_index)
{
    (void)thread_index;
    const elem_job *j = arg;
    for (int64_t r = begin; r < end; r++) {
        const float *x = j->a + r * j->ld;
        float *y = j->y + r * j->n;
        float norm = sqrtf(sumsq_lanes(x, j->n));
        float inv = 1.0f / (norm > j->s ? norm : j->s);
        for (int64_t i = 0; i < j->n; i++)
            y[i] = x[i] * inv;
    }
}

static eb_status cpu_l2norm(eb_backend *be, float *y, const float *x, int64_t rows, int64_t C,
                            int64_t ldx, float eps)
{
    if (!y || !x || rows < 0 || C <= 0 || ldx < C || (y == x && ldx != C))
        return EB_ERR_INVALID;
    elem_job j = {.y = y, .a = x, .n = C, .ld = ldx, .s = eps};
    run_rows(ctx_of(be), rows, C, l2norm_task, &j);
    return EB_OK;
}

/* ---- attention -------------------------------------------------------------------------------- */

typedef struct attn_job {
    cpu_ctx *c;
    float *out;
    const float *q, *k, *v;
    const eb_attn_desc *d;
} attn_job;

/* Per thread: packed q (Tq x D), k and v (Tk x D each) and probabilities (Tq x Tk). */
static size_t attn_pack_floats(int64_t Tq, int64_t Tk, int64_t D)
{
    return eb_cpu_gemm_a_floats(Tq, D) + 2 * (size_t)Tk * (size_t)D +
           eb_cpu_gemm_a_floats(Tq, Tk) + 4 * EB_OPS_ALIGN / sizeof(float);
}

static eb_status ensure_attn_pack(cpu_ctx *c, int64_t Tq, int64_t Tk, int64_t D)
{
    size_t need = attn_pack_floats(Tq, Tk, D);
    if (need <= c->attn_pack_per_thread)
        return EB_OK;
    size_t stride = eb_ops_align(need * sizeof(float));
    float *p = aligned_alloc(EB_OPS_ALIGN, stride * (size_t)c->n_threads);
    if (!p)
        return EB_ERR_NOMEM;
    free(c->attn_pack);
    c->attn_pack = p;
    c->attn_pack_per_thread = stride / sizeof(float);
    return EB_OK;
}

// Carve n floats from *p, keeping EB_OPS_ALIGN alignment.
static float *carve(float **p, size_t n)
{
    float *r = *p;
    *p += eb_ops_align(n * sizeof(float)) / sizeof(float);
    return r;
}

/* attn_task with the packed GEMM: S = q·kᵀ and out = P·v per (item, head), each operand packed
 * into this thread's scratch (k as an (Tk, D) "weight", v as a (D, Tk) one). */
static void attn_task_packed(void *arg, int64_t begin, int64_t end, int thread_index)
{
    const attn_job *j = arg;
    const eb_attn_desc *d = j->d;
    float *S = j->c->attn_scratch + (size_t)thread_index * j->c->attn_scratch_per_thread;
    float *scratch = j->c->attn_pack + (size_t)thread_index * j->c->attn_pack_per_thread;
    float *qp = carve(&scratch, eb_cpu_gemm_a_floats(d->Tq, d->D));
    float *kp = carve(&scratch, (size_t)(d->Tk * d->D));
    float *vp = carve(&scratch, (size_t)(d->Tk * d->D));
    float *sp = carve(&scratch, eb_cpu_gemm_a_floats(d->Tq, d->Tk));
    int64_t group = d->H / d->Hkv;
    for (int64_t bh = begin; bh < end; bh++) {
        int64_t b = bh / d->H, h = bh % d->H, hk = h / group;
        int64_t len = d->kv_lens ? d->kv_lens[b] : d->Tk;
        const float *q = j->q + b * d->q_batch_stride + h * d->D;
        const float *k = j->k + b * d->k_batch_stride + hk * d->D;
        const float *v = j->v + b * d->v_batch_stride + hk * d->D;
        float *o = j->out + b * d->out_batch_stride + h * d->D;
        int64_t tq = d->kv_lens && len < d->Tq ? len : d->Tq;
        if (tq > 0 && len > 0) {
            // S (tq, len) = q · kᵀ
            eb_cpu_gemm_pack_a(qp, q, d->q_token_stride, tq, d->D, 0, eb_cpu_gemm_a_tiles(tq));
            eb_cpu_gemm_pack_b_nk(kp, k, d->k_token_stride, len, d->D);
            eb_cpu_gemm_args g = {.y = S, .ldy = len, .ap = qp, .bp = kp, .M = tq, .N = len,
                                  .K = d->D};
            eb_cpu_gemm_run(&g, 0, eb_cpu_gemm_panels(len));
            for (int64_t t = 0; t < tq; t++) {
                float *row = S + t * len;
                int64_t n = len;
                if (d->flags & EB_ATTN_CAUSAL) {
                    n = t + 1 < len ? t + 1 : len;
                    for (int64_t i = n; i < len; i++)
                        row[i] = 0.0f;
                }
                softmax_row(row, n, d->scale);
            }
            // out (tq, D) = P · v
            eb_cpu_gemm_pack_a(sp, S, len, tq, len, 0, eb_cpu_gemm_a_tiles(tq));
            eb_cpu_gemm_pack_b_kn(vp, v, d->v_token_stride, len, d->D);
            eb_cpu_gemm_args g2 = {.y = o, .ldy = d->out_token_stride, .ap = sp, .bp = vp,
                                   .M = tq, .N = d->D, .K = len};
            eb_cpu_gemm_run(&g2, 0, eb_cpu_gemm_panels(d->D));
        }
        for (int64_t t = tq > 0 && len > 0 ? tq : 0; t < d->Tq; t++)
            memset(o + t * d->out_token_stride, 0, (size_t)d->D * sizeof(float));
    }
}

static void attn_task(void *arg, int64_t begin, int64_t end, int thread_index)
{
    const attn_job *j = arg;
    const eb_attn_desc *d = j->d;
    float *S = j->c->attn_scratch + (size_t)thread_index * j->c->attn_scratch_per_thread;
    int64_t group = d->H / d->Hkv;
    for (int64_t bh = begin; bh < end; bh++) {
        int64_t b = bh / d->H, h = bh % d->H, hk = h / group;
        int64_t len = d->kv_lens ? d->kv_lens[b] : d->Tk;
        const float *q = j->q + b * d->q_batch_stride + h * d->D;
        const float *k = j->k + b * d->k_batch_stride + hk * d->D;
        const float *v = j->v + b * d->v_batch_stride + hk * d->D;
        float *o = j->out + b * d->out_batch_stride + h * d->D;
        // Query rows at or beyond the sequence length (padding) produce zeros.
        int64_t tq = d->kv_lens && len < d->Tq ? len : d->Tq;
        if (tq > 0 && len > 0) {
            // S (tq, len) = q · kᵀ
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)tq, (int)len, (int)d->D,
                        1.0f, q, (int)d->q_token_stride, k, (int)d->k_token_stride, 0.0f, S,
                        (int)len);
            for (int64_t t = 0; t < tq; t++) {
                float *row = S + t * len;
                int64_t n = len;
                if (d->flags & EB_ATTN_CAUSAL) {
                    n = t + 1 < len ? t + 1 : len;
                    for (int64_t i = n; i < len; i++)
                        row[i] = 0.0f;
                }
                softmax_row(row, n, d->scale);
            }
            // out (tq, D) = P · v
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)tq, (int)d->D, (int)len,
                        1.0f, S, (int)len, v, (int)d->v_token_stride, 0.0f, o,
                        (int)d->out_token_stride);
        }
        for (int64_t t = tq > 0 && len > 0 ? tq : 0; t < d->Tq; t++)
            memset(o + t * d->out_token_stride, 0, (size_t)d->D * sizeof(float));
    }
}

static eb_status cpu_attention(eb_backend *be, float *out, const float *q, const float *k,
                               const float *v, const eb_attn_desc *d)
{
    if (!out || !q || !k || !v || !d || d->B < 0 || d->Tq < 0 || d->Tk < 0 || d->H <= 0 ||
        d->Hkv <= 0 || d->H % d->Hkv || d->D <= 0 || (d->flags & ~EB_ATTN_CAUSAL) ||
        d->q_token_stride < d->H * d->D || d->k_token_stride < d->Hkv * d->D ||
        d->v_token_stride < d->Hkv * d->D || d->out_token_stride < d->H * d->D ||
        ((d->flags & EB_ATTN_CAUSAL) && d->Tq != d->Tk))
        return EB_ERR_INVALID;
    if (d->kv_lens)
        for (int64_t b = 0; b < d->B; b++)
            if (d->kv_lens[b] < 0 || d->kv_lens[b] > d->Tk)
                return EB_ERR_INVALID;
    cpu_ctx *c = ctx_of(be);
    eb_status st = ensure_attn_scratch(c, d->Tq, d->Tk);
    if (st != EB_OK)
        return st;
    attn_job j = {.c = c, .out = out, .q = q, .k = k, .v = v, .d = d};
    eb_cpu_task_fn fn = attn_task;
    if (c->packed_gemm && ensure_attn_pack(c, d->Tq, d->Tk, d->D) == EB_OK)
        fn = attn_task_packed;
    int64_t tasks = d->B * d->H;
    if (c->n_threads <= 1 || tasks < 2 || d->Tq * d->Tk * d->D * tasks < GEMM_SERIAL_MNK)
        fn(&j, 0, tasks, 0);
    else if (fn == attn_task_packed)
        eb_cpu_pool_run_dynamic(c->pool, tasks, 1, fn, &j);
    else
        eb_cpu_pool_run(c->pool, tasks, fn, &j);
    return EB_OK;
}

/* ---- rope ------------------------------------------------------------------------------------- */

typedef struct rope_job {
    float *x;
    int64_t T, H, D, batch_stride, token_stride;
    float theta;
} rope_job;

static void rope_task(void *arg, int64_t begin, int64_t end, int thread_index)
{
    (void)thread_index;
    const rope_job *j = arg;
    int64_t half = j->D / 2;
    for (int64_t bt = begin; bt < end; bt++) {
        int64_t b = bt / j->T, t = bt % j->T;
        float *xt = j->x + b * j->batch_stride + t * j->token_stride;
        for (int64_t i = 0; i < half; i++) {
            // As transformers: inv_freq = 1 / theta^(2i/D) in fp32, angle = t * inv_freq.
            float inv_freq = 1.0f / powf(j->theta, (float)(2 * i) / (float)j->D);
            float angle = (float)t * inv_freq;
            float cs = cosf(angle), sn = sinf(angle);
            for (int64_t h = 0; h < j->H; h++) {
                float *xh = xt + h * j->D;
                float a = xh[i], bb = xh[i + half];
                xh[i] = a * cs - bb * sn;
                xh[i + half] = bb * cs + a * sn;
            }
        }
    }
}

static eb_status cpu_rope(eb_backend *be, float *x, int64_t B, int64_t T, int64_t H, int64_t D,
                          int64_t batch_stride, int64_t token_stride, float theta)
{
    if (!x || B < 0 || T < 0 || H <= 0 || D <= 0 || D % 2 || token_stride < H * D ||
        theta <= 0.0f)
        return EB_ERR_INVALID;
    rope_job j = {.x = x, .T = T, .H = H, .D = D, .batch_stride = batch_stride,
                  .token_stride = token_stride, .theta = theta};
    run_rows(ctx_of(be), B * T, H * D * 8, rope_task, &j);
    return EB_OK;
}

/* ---- patch embedding, gathers, pooling -------------------------------------------------------- */

typedef struct im2col_job {
    float *col;
    const float *pixels;
    int64_t T, Cin, Himg, Wimg, P, grid_w, K;
} im2col_job;

static void im2col_task(void *arg, int64_t begin, int64_t end, int thread_index)
{
    (void)thread_index;
    const im2col_job *j = arg;
    for (int64_t bt = begin; bt < end; bt++) {
        int64_t b = bt / j->T, t = bt % j->T;
        int64_t py = t / j->grid_w, px = t % j->grid_w;
        float *dst = j->col + bt * j->K;
        for (int64_t c = 0; c < j->Cin; c++) {
            const float *plane = j->pixels + (b * j->Cin + c) * j->Himg * j->Wimg;
            for (int64_t ky = 0; ky < j->P; ky++) {
                const float *src = plane + (py * j->P + ky) * j->Wimg + px * j->P;
                memcpy(dst + (c * j->P + ky) * j->P, src, (size_t)j->P * sizeof(float));
            }
        }
    }
}

static eb_status cpu_patch_embed(eb_backend *be, float *out, const float *pixels,
                                 const eb_tensor *w, const eb_tensor *bias, const eb_tensor *pos,
                                 int64_t B, int64_t Cin, int64_t Himg, int64_t Wimg, int64_t P)
{
    if (!out || !pixels || !w || B < 0 || Cin <= 0 || P <= 0 || Himg < P || Wimg < P)
        return EB_ERR_INVALID;
    int64_t C = w->shape[0], K = Cin * P * P;
    if (eb_tensor_nelem(w) != C * K || (bias && eb_tensor_nelem(bias) != C))
        return EB_ERR_INVALID;
    int64_t grid_w = Wimg / P, T = (Himg / P) * grid_w; // floor, like Conv2d
    if (pos && eb_tensor_nelem(pos) != T * C)
        return EB_ERR_INVALID;
    if (B == 0)
        return EB_OK;
    cpu_ctx *c = ctx_of(be);
    eb_status st = ensure_im2col(c, (size_t)(B * T * K));
    if (st != EB_OK)
        return st;
    im2col_job ij = {.col = c->im2col, .pixels = pixels, .T = T, .Cin = Cin, .Himg = Himg,
                     .Wimg = Wimg, .P = P, .grid_w = grid_w, .K = K};
    run_rows(c, B * T, K, im2col_task, &ij);
    gemm_job j = {
        .y = out, .ldy = C, .x = c->im2col, .ldx = K, .w = w->data, .M = B * T, .N = C, .K = K,
        .bias = bias ? bias->data : NULL, .rowadd = pos ? pos->data : NULL, .period = T,
    };
    return run_weight_gemm(c, &j, w);
}

static eb_status cpu_get_rows(eb_backend *be, float *y, const eb_tensor *table,
                              const int32_t *ids, int64_t n)
{
    if (!y || !table || (n && !ids) || n < 0 || table->ndim < 1)
        return EB_ERR_INVALID;
    eb_status st = ensure_plain(ctx_of(be), table); // a table a matmul also used (tied weights)
    if (st != EB_OK)
        return st;
    int64_t V = table->shape[0];
    int64_t C = eb_tensor_nelem(table) / (V ? V : 1);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return EB_ERR_INVALID;
    const float *t = table->data;
    for (int64_t i = 0; i < n; i++)
        memcpy(y + i * C, t + (int64_t)ids[i] * C, (size_t)C * sizeof(float));
    return EB_OK;
}

static eb_status cpu_pool_last(eb_backend *be, float *y, const float *x, const int32_t *lens,
                               int64_t B, int64_t T, int64_t C)
{
    (void)be;
    if (!y || !x || !lens || B < 0 || T <= 0 || C <= 0)
        return EB_ERR_INVALID;
    for (int64_t b = 0; b < B; b++)
        if (lens[b] < 1 || lens[b] > T)
            return EB_ERR_INVALID;
    for (int64_t b = 0; b < B; b++)
        memcpy(y + b * C, x + (b * T + lens[b] - 1) * C, (size_t)C * sizeof(float));
    return EB_OK;
}

static eb_status cpu_copy_rows(eb_backend *be, float *dst, int64_t ld_dst, const float *src,
                               int64_t ld_src, int64_t rows, int64_t cols)
{
    (void)be;
    if (!dst || !src || rows < 0 || cols < 0 || ld_dst < cols || ld_src < cols)
        return EB_ERR_INVALID;
    for (int64_t r = 0; r < rows; r++)
        memcpy(dst + r * ld_dst, src + r * ld_src, (size_t)cols * sizeof(float));
    return EB_OK;
}

/* ---- backend object --------------------------------------------------------------------------- */

static bool cpu_supports(eb_backend *be, eb_op op, unsigned flags)
{
    (void)be;
    switch (op) {
    case EB_OP_MATMUL:
        return (flags & ~3u) == 0 &&
               (flags & (EB_MATMUL_GELU_TANH | EB_MATMUL_ACCUMULATE)) !=
                   (EB_MATMUL_GELU_TANH | EB_MATMUL_ACCUMULATE);
    case EB_OP_ATTENTION: return (flags & ~EB_ATTN_CAUSAL) == 0;
    default: return (int)op >= 0 && op < EB_OP_COUNT && flags == 0;
    }
}

static void cpu_destroy(eb_backend *be)
{
    if (!be)
        return;
    cpu_ctx *c = be->ctx;
    if (c) {
        eb_cpu_pool_destroy(&c->pool);
        free(c->attn_scratch);
        free(c->im2col);
        free(c->apack);
        free(c->attn_pack);
        free(c->packed);
        free(c);
    }
    free(be);
}

static bool generic_corename(const char *name)
{
    static const char *const generic[] = {"prescott", "core2",  "penryn",  "dunnington",
                                          "nehalem",  "katmai", "coppermine", "northwood",
                                          "banias",   "atom",   "sandybridge", "unknown"};
    for (size_t i = 0; i < sizeof(generic) / sizeof(generic[0]); i++)
        if (strcasecmp(name, generic[i]) == 0)
            return true;
    return false;
}

const char *eb_cpu_blas_corename(void)
{
    const char *name = openblas_get_corename();
    return name ? name : "unknown";
}

void eb_cpu_blas_ensure_coretype(char **argv)
{
    if (!argv || !argv[0] || getenv("OPENBLAS_CORETYPE") || getenv("EB_BLAS_REEXEC"))
        return;
    if (!generic_corename(eb_cpu_blas_corename()))
        return;
    const char *want = NULL;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        want = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        want = "Haswell";
#endif
    if (!want)
        return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("EB_BLAS_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    // exec failed: carry on with the slow kernels (the backend logs which ones).
    unsetenv("OPENBLAS_CORETYPE");
}

eb_backend *eb_cpu_backend_create(const eb_backend_params *params, char *err, size_t err_len)
{
    int n_threads = params ? params->n_threads : 0;
    eb_backend *be = calloc(1, sizeof(*be));
    cpu_ctx *c = calloc(1, sizeof(*c));
    if (!be || !c) {
        free(be);
        free(c);
        snprintf(err, err_len, "cannot create CPU backend: out of memory");
        return NULL;
    }
    be->ctx = c;
    c->pool = eb_cpu_pool_create(n_threads);
    if (!c->pool) {
        snprintf(err, err_len, "cannot create CPU backend: starting %d threads failed",
                 n_threads);
        cpu_destroy(be);
        return NULL;
    }
    c->n_threads = eb_cpu_pool_threads(c->pool);
    c->packed_gemm = eb_cpu_gemm_available() && !getenv("EB_CPU_NO_PACKED_GEMM");
    // Our pool splits every product; OpenBLAS's own threads would compete for the same cores.
    openblas_set_num_threads(1);
    be->name = "cpu";
    be->n_threads = c->n_threads;
    snprintf(be->device, sizeof(be->device), "%d threads, %sOpenBLAS %s", c->n_threads,
             c->packed_gemm ? "AVX-512 packed GEMM + " : "", openblas_get_config());
    if (generic_corename(eb_cpu_blas_corename()))
        eb_log_warn("cpu_blas_generic_kernels",
                    "core=%s hint=\"OpenBLAS does not know this CPU and runs slow generic kernels; "
                    "set OPENBLAS_CORETYPE=SkylakeX (AVX-512) or Haswell (AVX2) or call "
                    "eb_cpu_blas_ensure_coretype() in main\"",
                    eb_cpu_blas_corename());
    be->iface = (eb_backend_iface){
        .destroy = cpu_destroy,
        .supports = cpu_supports,
        .reserve = cpu_reserve,
        .buffer_alloc = cpu_buffer_alloc,
        .buffer_free = cpu_buffer_free,
        .buffer_base = cpu_buffer_base,
        .buffer_size = cpu_buffer_size,
        .weight_dtype = cpu_weight_dtype,
        .weight_upload = cpu_weight_upload,
        .upload = cpu_upload,
        .download = cpu_upload,
        .synchronize = cpu_synchronize,
        .matmul = cpu_matmul,
        .layernorm = cpu_layernorm,
        .rmsnorm = cpu_rmsnorm,
        .gelu_tanh = cpu_gelu_tanh,
        .silu_mul = cpu_silu_mul,
        .softmax = cpu_softmax,
        .attention = cpu_attention,
        .rope = cpu_rope,
        .add = cpu_add,
        .l2norm = cpu_l2norm,
        .patch_embed = cpu_patch_embed,
        .get_rows = cpu_get_rows,
        .pool_last = cpu_pool_last,
        .copy_rows = cpu_copy_rows,
    };
    return be;
}
