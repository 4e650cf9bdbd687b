/* eb_cpu_gemm — fp32 matrix product y = x·Wᵀ for the CPU backend, with W packed once.
 *
 * OpenBLAS repacks both operands on every call; for a model's linear layers one operand (the
 * weight) never changes, so this module keeps it in the layout its micro-kernel reads and packs
 * only the activations per call. The kernel is an AVX-512 register tile (MR rows x 32 columns,
 * 24 accumulators); eb_cpu_gemm_available() says whether this CPU can run it (the backend falls
 * back to OpenBLAS otherwise).
 *
 * Layouts
 *   - Packed B ("panels"): an (N, K) matrix W as ceil(N/32) panels of 32 rows of W; panel p is
 *     stored [K][w_p] (w_p = 32, or N mod 32 for the last one) at element offset p*32*K. Same
 *     size as W, so a weight can be packed in place.
 *   - Packed A ("tiles"): an (M, K) matrix x as ceil(M/MR) tiles of MR rows, tile t stored
 *     [K][m_t] at element offset t*MR*K (m_t = MR or the remainder). eb_cpu_gemm_a_floats()
 *     floats of scratch.
 *
 * Numerics: every output element is one fused multiply-add chain over k = 0..K-1 in order,
 * started from 0 (or from y's old value with load_y), then + bias. Nothing depends on M, on
 * the tile an element falls in or on the split over threads, so a row's result does not depend
 * on the other rows of the batch.
 */
#ifndef EB_CPU_GEMM_H
#define EB_CPU_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EB_CPU_GEMM_NR 32 /* columns per B panel */
#define EB_CPU_GEMM_MR 12 /* rows per A tile */

/* True when the CPU runs the AVX-512 kernel (AVX-512F, checked once). */
bool eb_cpu_gemm_available(void);

/* Number of B panels of an N-column product, and of A tiles of an M-row one. */
int64_t eb_cpu_gemm_panels(int64_t N);
int64_t eb_cpu_gemm_a_tiles(int64_t M);

/* Floats of packed-A scratch for an (M, K) operand. */
size_t eb_cpu_gemm_a_floats(int64_t M, int64_t K);

/* Pack rows of W (N, K) (row n at w + n*ldw) into panels at dst (N*K floats). dst and w must
 * not overlap (pack in place through a copy). */
void eb_cpu_gemm_pack_b_nk(float *dst, const float *w, int64_t ldw, int64_t N, int64_t K);

/* Pack V (K, N) (row k at v + k*ldv) as the B operand of y = x·V, i.e. W = Vᵀ. */
void eb_cpu_gemm_pack_b_kn(float *dst, const float *v, int64_t ldv, int64_t K, int64_t N);

/* Inverse of eb_cpu_gemm_pack_b_nk with ldw = K: panels at src back to W (N, K) at w. */
void eb_cpu_gemm_unpack_b_nk(float *w, const float *src, int64_t N, int64_t K);

/* Pack A tiles [t0, t1) of x (M, K) (row i at x + i*ldx) into ap (eb_cpu_gemm_a_floats). */
void eb_cpu_gemm_pack_a(float *ap, const float *x, int64_t ldx, int64_t M, int64_t K, int64_t t0,
                        int64_t t1);

/* Called once per finished output block (rows [m0, m1), columns [n0, n1)) after its final
 * values are stored, while it is still in cache (e.g. an activation function). */
typedef void (*eb_cpu_gemm_post_fn)(void *arg, float *y, int64_t ldy, int64_t m0, int64_t m1,
                                    int64_t n0, int64_t n1);

typedef struct eb_cpu_gemm_args {
    float *y;          /* (M, N), row i at y + i*ldy */
    int64_t ldy;
    const float *ap;   /* packed A (M, K) */
    const float *bp;   /* packed B (N, K) */
    int64_t M, N, K;
    const float *bias; /* (N) added after the product, or NULL */
    bool load_y;       /* start every chain from y's current value (y += x·Wᵀ) */
    eb_cpu_gemm_post_fn post; /* or NULL */
    void *post_arg;
} eb_cpu_gemm_args;

/* Compute the output columns of B panels [p0, p1) for all M rows. Callers split panels over
 * threads; the packed A must be complete before any thread starts. Requires
 * eb_cpu_gemm_available(). */
void eb_cpu_gemm_run(const eb_cpu_gemm_args *g, int64_t p0, int64_t p1);

/* Work items for several threads: the product cut into (row block, panel group) pieces, row
 * block major, so threads claiming items in order share each row block's packed A while it is
 * in cache. Any item may run on any thread, in any order (they write disjoint outputs). */
typedef struct eb_cpu_gemm_plan {
    int64_t tiles, tiles_per_block, row_blocks;
    int64_t panels, panels_per_group, groups;
    int64_t items; /* row_blocks * groups */
} eb_cpu_gemm_plan;

/* Cut an (M, N) product into items for `threads` threads. */
void eb_cpu_gemm_plan_init(eb_cpu_gemm_plan *plan, int64_t M, int64_t N, int threads);

/* Compute items [i0, i1) of `plan` (made for g->M, g->N). Same results as eb_cpu_gemm_run. */
void eb_cpu_gemm_run_items(const eb_cpu_gemm_args *g, const eb_cpu_gemm_plan *plan,
                           int64_t i0, int64_t i1);

#endif
