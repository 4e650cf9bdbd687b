/* eb_cpu_gemm — packed-weight fp32 GEMM with an AVX-512 micro-kernel (see eb_cpu_gemm.h).
 *
 * The classic Goto/BLIS structure, cut down to what a transformer's linear layers need:
 *   for each K block (KC):             chains continue across blocks through y (exact)
 *     for each block of MC rows:       its packed A (MC x KC) stays in L2
 *       for each B panel (32 columns): its K block (KC x 32) stays in L2/L1
 *         for each A tile (MR rows):   micro-kernel, MR x 32 accumulators in registers
 * B is packed once (the weight, at first use); A is packed per call, which is cheap next to
 * the product (one pass over x per call against N/16 FMAs per element). The micro-kernel is
 * compiled for AVX-512 with a target attribute, so the rest of the build stays baseline x86-64
 * and the backend calls it only when the CPU has AVX-512F.
 */
#include "eb_cpu_gemm.h"

#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EB_GEMM_X86 1
#include <immintrin.h>
#endif

#define NR EB_CPU_GEMM_NR
#define MR EB_CPU_GEMM_MR

// K block: a B panel block is KC x 32 floats (64 KiB at 512) and an A tile block MR x KC.
#define KC_MAX 512
// Rows per M block: the packed A block (MC x KC, 512 KiB at 256 x 512) stays in the 1-2 MiB
// L2 of current server cores while the panels of a work item stream past it. 256 keeps a
// batch-1 ViT (196 or 197 tokens) in one block.
#define MC_MAX 256

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

int64_t eb_cpu_gemm_panels(int64_t N)
{
    return (N + NR - 1) / NR;
}

int64_t eb_cpu_gemm_a_tiles(int64_t M)
{
    return (M + MR - 1) / MR;
}

size_t eb_cpu_gemm_a_floats(int64_t M, int64_t K)
{
    return (size_t)M * (size_t)K;
}

bool eb_cpu_gemm_available(void)
{
#ifdef EB_GEMM_X86
    // Pool threads ask too (pack_a); the answer never changes, so a relaxed cache suffices.
    static _Atomic int cached = -1;
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx512f") ? 1 : 0;
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v == 1;
#else
    return false;
#endif
}

/* ---- packing ---------------------------------------------------------------------------------- */

void eb_cpu_gemm_pack_b_nk(float *dst, const float *w, int64_t ldw, int64_t N, int64_t K)
{
    for (int64_t n0 = 0; n0 < N; n0 += NR) {
        int64_t width = min64(NR, N - n0);
        float *panel = dst + n0 * K;
        for (int64_t j = 0; j < width; j++) {
            const float *row = w + (n0 + j) * ldw;
            for (int64_t k = 0; k < K; k++)
                panel[k * width + j] = row[k];
        }
    }
}

void eb_cpu_gemm_pack_b_kn(float *dst, const float *v, int64_t ldv, int64_t K, int64_t N)
{
    for (int64_t n0 = 0; n0 < N; n0 += NR) {
        int64_t width = min64(NR, N - n0);
        float *panel = dst + n0 * K;
        for (int64_t k = 0; k < K; k++)
            memcpy(panel + k * width, v + k * ldv + n0, (size_t)width * sizeof(float));
    }
}

void eb_cpu_gemm_unpack_b_nk(float *w, const float *src, int64_t N, int64_t K)
{
    for (int64_t n0 = 0; n0 < N; n0 += NR) {
        int64_t width = min64(NR, N - n0);
        const float *panel = src + n0 * K;
        for (int64_t j = 0; j < width; j++) {
            float *row = w + (n0 + j) * K;
            for (int64_t k = 0; k < K; k++)
                row[k] = panel[k * width + j];
        }
    }
}

#ifdef EB_GEMM_X86
/* One full tile (MR = 12 rows) with AVX-512: 16 columns at a time, 12 rows loaded as vectors
 * (4 zero rows pad to 16), a 16x16 register transpose, and 16 masked stores of 12 floats. About
 * 5x fewer instructions than the scalar gather. */
static __attribute__((target("avx512f"))) void pack_a_tile12(float *tile, const float *x,
                                                             int64_t ldx, int64_t K)
{
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 r[16], t[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++)
            r[i] = i < MR ? _mm512_loadu_ps(x + i * ldx + k) : _mm512_setzero_ps();
#pragma GCC unroll 16
        for (int p = 0; p < 8; p++) {
            t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
            t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
        }
        // r[4g + j], 128-bit lane L: rows 4g..4g+3 of column 4L + j.
#pragma GCC unroll 16
        for (int g = 0; g < 4; g++) {
            r[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
            r[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
            r[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
            r[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
        }
#pragma GCC unroll 16
        for (int j = 0; j < 4; j++) {
            __m512 u0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x44);
            __m512 u1 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xEE);
            __m512 v0 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x44);
            __m512 v1 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xEE);
            // column c = 4L + j holds lane L of r[j], r[4+j], r[8+j], r[12+j]: rows 0..15.
            _mm512_mask_storeu_ps(tile + (k + j) * MR, 0x0FFF, _mm512_shuffle_f32x4(u0, v0, 0x88));
            _mm512_mask_storeu_ps(tile + (k + 4 + j) * MR, 0x0FFF,
                                  _mm512_shuffle_f32x4(u0, v0, 0xDD));
            _mm512_mask_storeu_ps(tile + (k + 8 + j) * MR, 0x0FFF,
                                  _mm512_shuffle_f32x4(u1, v1, 0x88));
            _mm512_mask_storeu_ps(tile + (k + 12 + j) * MR, 0x0FFF,
                                  _mm512_shuffle_f32x4(u1, v1, 0xDD));
        }
    }
    for (; k < K; k++)
        for (int i = 0; i < MR; i++)
            tile[k * MR + i] = x[i * ldx + k];
}
#endif

void eb_cpu_gemm_pack_a(float *ap, const float *x, int64_t ldx, int64_t M, int64_t K, int64_t t0,
                        int64_t t1)
{
    for (int64_t t = t0; t < t1; t++) {
        int64_t m0 = t * MR, rows = min64(MR, M - m0);
        float *tile = ap + m0 * K;
#ifdef EB_GEMM_X86
        if (rows == MR && eb_cpu_gemm_available()) {
            pack_a_tile12(tile, x + m0 * ldx, ldx, K);
            continue;
        }
#endif
        for (int64_t i = 0; i < rows; i++) {
            const float *row = x + (m0 + i) * ldx;
            for (int64_t k = 0; k < K; k++)
                tile[k * rows + i] = row[k];
        }
    }
}

/* ---- micro-kernels ---------------------------------------------------------------------------- */

#ifdef EB_GEMM_X86

#define KERNEL_INLINE static inline __attribute__((always_inline, target("avx512f")))
#define KERNEL_FN static __attribute__((noinline, target("avx512f")))

/* c (rows x 32) [+]= a (tile [kc][rows]) · b (panel block [kc][32]) [+ bias]. `rows` is a
 * compile-time constant after inlining, so the accumulators live in registers. */
KERNEL_INLINE void kernel_full(const int rows, const float *a, const float *b, int64_t kc,
                               float *c, int64_t ldc, bool load_c, const float *bias)
{
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 12
    for (int i = 0; i < rows; i++) {
        if (load_c) {
            c0[i] = _mm512_loadu_ps(c + i * ldc);
            c1[i] = _mm512_loadu_ps(c + i * ldc + 16);
        } else {
            c0[i] = _mm512_setzero_ps();
            c1[i] = _mm512_setzero_ps();
        }
    }
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; k++) {
        __m512 b0 = _mm512_loadu_ps(b);
        __m512 b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 12
        for (int i = 0; i < rows; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
            c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
        }
        a += rows;
        b += NR;
    }
    if (bias) {
        __m512 bb0 = _mm512_loadu_ps(bias), bb1 = _mm512_loadu_ps(bias + 16);
#pragma GCC unroll 12
        for (int i = 0; i < rows; i++) {
            c0[i] = _mm512_add_ps(c0[i], bb0);
            c1[i] = _mm512_add_ps(c1[i], bb1);
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < rows; i++) {
        _mm512_storeu_ps(c + i * ldc, c0[i]);
        _mm512_storeu_ps(c + i * ldc + 16, c1[i]);
    }
}

/* The same for a last panel narrower than 32 columns (width 1..31): masked loads and stores.
 * `nv` (1 or 2 vectors) and `rows` are compile-time constants after inlining. */
KERNEL_INLINE void kernel_narrow(const int rows, const int nv, int width, const float *a,
                                 const float *b, int64_t kc, float *c, int64_t ldc, bool load_c,
                                 const float *bias)
{
    __mmask16 m0 = (__mmask16)(width >= 16 ? 0xFFFFu : (1u << width) - 1u);
    __mmask16 m1 = (__mmask16)(width > 16 ? (1u << (width - 16)) - 1u : 0u);
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 12
    for (int i = 0; i < rows; i++) {
        c0[i] = load_c ? _mm512_maskz_loadu_ps(m0, c + i * ldc) : _mm512_setzero_ps();
        c1[i] = load_c && nv == 2 ? _mm512_maskz_loadu_ps(m1, c + i * ldc + 16)
                                  : _mm512_setzero_ps();
    }
    for (int64_t k = 0; k < kc; k++) {
        __m512 b0 = _mm512_maskz_loadu_ps(m0, b);
        __m512 b1 = nv == 2 ? _mm512_maskz_loadu_ps(m1, b + 16) : _mm512_setzero_ps();
#pragma GCC unroll 12
        for (int i = 0; i < rows; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
            c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
            if (nv == 2)
                c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
        }
        a += rows;
        b += width;
    }
    if (bias) {
        __m512 bb0 = _mm512_maskz_loadu_ps(m0, bias), bb1 = _mm512_maskz_loadu_ps(m1, bias + 16);
#pragma GCC unroll 12
        for (int i = 0; i < rows; i++) {
            c0[i] = _mm512_add_ps(c0[i], bb0);
            c1[i] = _mm512_add_ps(c1[i], bb1);
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < rows; i++) {
        _mm512_mask_storeu_ps(c + i * ldc, m0, c0[i]);
        if (nv == 2)
            _mm512_mask_storeu_ps(c + i * ldc + 16, m1, c1[i]);
    }
}

#define KERNEL_CASES(R)                                                                           \
    KERNEL_FN void kernel_full_##R(int width, const float *a, const float *b, int64_t kc,      \
                                   float *c, int64_t ldc, bool load_c, const float *bias)       \
    {                                                                                             \
        (void)width;                                                                              \
        kernel_full(R, a, b, kc, c, ldc, load_c, bias);                                           \
    }                                                                                             \
    KERNEL_FN void kernel_half_##R(int width, const float *a, const float *b, int64_t kc,      \
                                   float *c, int64_t ldc, bool load_c, const float *bias)       \
    {                                                                                             \
        kernel_narrow(R, 1, width, a, b, kc, c, ldc, load_c, bias);                               \
    }                                                                                             \
    KERNEL_FN void kernel_wide_##R(int width, const float *a, const float *b, int64_t kc,      \
                                   float *c, int64_t ldc, bool load_c, const float *bias)       \
    {                                                                                             \
        kernel_narrow(R, 2, width, a, b, kc, c, ldc, load_c, bias);                               \
    }
KERNEL_CASES(1)
KERNEL_CASES(2)
KERNEL_CASES(3)
KERNEL_CASES(4)
KERNEL_CASES(5)
KERNEL_CASES(6)
KERNEL_CASES(7)
KERNEL_CASES(8)
KERNEL_CASES(9)
KERNEL_CASES(10)
KERNEL_CASES(11)
KERNEL_CASES(12)

typedef void (*kernel_fn)(int, const float *, const float *, int64_t, float *, int64_t, bool,
                          const float *);
// [variant][rows]: 0 = full 32-column panel, 1 = up to 16 columns, 2 = 17..31 columns.
#define KERNEL_ROW(v)                                                                             \
    {NULL,           kernel_##v##_1, kernel_##v##_2,  kernel_##v##_3,  kernel_##v##_4,            \
     kernel_##v##_5, kernel_##v##_6, kernel_##v##_7,  kernel_##v##_8,  kernel_##v##_9,            \
     kernel_##v##_10, kernel_##v##_11, kernel_##v##_12}
static const kernel_fn kernels[3][MR + 1] = {KERNEL_ROW(full), KERNEL_ROW(half), KERNEL_ROW(wide)};

// Rows of A tiles [t0, t1) by B panels [p0, p1): K blocks outermost (the chains continue
// through y), then panels, then tiles, so the A block (tiles x KC) stays in L2 across panels.
static void run_block(const eb_cpu_gemm_args *g, int64_t t0, int64_t t1, int64_t p0, int64_t p1)
{
    int64_t M = g->M, N = g->N, K = g->K;
    // Even K blocks (a ragged last block would waste a pass of the cache).
    int64_t kblocks = (K + KC_MAX - 1) / KC_MAX;
    int64_t kc_step = (K + kblocks - 1) / kblocks;
    for (int64_t k0 = 0; k0 < K; k0 += kc_step) {
        int64_t kc = min64(kc_step, K - k0);
        bool first = k0 == 0, last = k0 + kc == K;
        bool load_c = !first || g->load_y;
        for (int64_t p = p0; p < p1; p++) {
            int64_t n0 = p * NR, width = min64(NR, N - n0);
            const float *bpanel = g->bp + n0 * K + k0 * width;
            const float *bias = last && g->bias ? g->bias + n0 : NULL;
            int variant = width == NR ? 0 : width <= 16 ? 1 : 2;
            for (int64_t t = t0; t < t1; t++) {
                int64_t m0 = t * MR, rows = min64(MR, M - m0);
                const float *atile = g->ap + m0 * K + k0 * rows;
                float *c = g->y + m0 * g->ldy + n0;
                kernels[variant][rows]((int)width, atile, bpanel, kc, c, g->ldy, load_c, bias);
            }
            if (last && g->post)
                g->post(g->post_arg, g->y, g->ldy, t0 * MR, min64(t1 * MR, M), n0, n0 + width);
        }
    }
}

void eb_cpu_gemm_run(const eb_cpu_gemm_args *g, int64_t p0, int64_t p1)
{
    if (g->M <= 0 || p1 <= p0)
        return;
    // Even M blocks.
    int64_t tiles = eb_cpu_gemm_a_tiles(g->M);
    int64_t mblocks = (g->M + MC_MAX - 1) / MC_MAX;
    int64_t per = (tiles + mblocks - 1) / mblocks;
    for (int64_t t0 = 0; t0 < tiles; t0 += per)
        run_block(g, t0, min64(t0 + per, tiles), p0, p1);
}

void eb_cpu_gemm_plan_init(eb_cpu_gemm_plan *plan, int64_t M, int64_t N, int threads)
{
    int64_t tiles = eb_cpu_gemm_a_tiles(M), panels = eb_cpu_gemm_panels(N);
    int64_t mblocks = (M + MC_MAX - 1) / MC_MAX;
    if (mblocks < 1)
        mblocks = 1;
    plan->tiles = tiles;
    plan->tiles_per_block = (tiles + mblocks - 1) / mblocks;
    plan->row_blocks = tiles > 0 ? (tiles + plan->tiles_per_block - 1) / plan->tiles_per_block : 0;
    // About eight items per thread, each of 1..8 panels: the last item leaves the other threads
    // idle for at most ~1/16 of the product, and a paused thread holds up little. Smaller items
    // cost little: an item re-reads its row block of A (from L2/L3) once per K block, ~16 bytes
    // per kFLOP with four panels.
    int64_t want = 8 * (int64_t)(threads > 0 ? threads : 1);
    int64_t groups_wanted = (want + plan->row_blocks - 1) / (plan->row_blocks ? plan->row_blocks : 1);
    int64_t per = panels / (groups_wanted > 0 ? groups_wanted : 1);
    plan->panels_per_group = per < 1 ? 1 : per > 8 ? 8 : per;
    plan->groups = (panels + plan->panels_per_group - 1) / plan->panels_per_group;
    plan->panels = panels;
    plan->items = plan->row_blocks * plan->groups;
}

void eb_cpu_gemm_run_items(const eb_cpu_gemm_args *g, const eb_cpu_gemm_plan *plan,
                           int64_t i0, int64_t i1)
{
    for (int64_t i = i0; i < i1; i++) {
        int64_t rb = i / plan->groups, grp = i % plan->groups;
        int64_t t0 = rb * plan->tiles_per_block, p0 = grp * plan->panels_per_group;
        run_block(g, t0, min64(t0 + plan->tiles_per_block, plan->tiles), p0,
                  min64(p0 + plan->panels_per_group, plan->panels));
    }
}

#else

void eb_cpu_gemm_run(const eb_cpu_gemm_args *g, int64_t p0, int64_t p1)
{
    (void)g;
    (void)p0;
    (void)p1;
}

void eb_cpu_gemm_plan_init(eb_cpu_gemm_plan *plan, int64_t M, int64_t N, int threads)
{
    (void)M;
    (void)N;
    (void)threads;
    memset(plan, 0, sizeof(*plan));
}

void eb_cpu_gemm_run_items(const eb_cpu_gemm_args *g, const eb_cpu_gemm_plan *plan,
                           int64_t i0, int64_t i1)
{
    (void)g;
    (void)plan;
    (void)i0;
    (void)i1;
}

#endif
