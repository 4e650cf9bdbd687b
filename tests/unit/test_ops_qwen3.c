/* test_ops_qwen3 — the Qwen3 CUDA ops against the CPU backend (the backend-ops test for issue 9).
 *
 *   test_ops_qwen3 [-o rmsnorm|silu_mul|embed|rope|attention|pool]
 *
 * Every op runs on the CPU backend (the numerical reference, itself checked against
 * transformers) and on the CUDA backend with the same random inputs (fixed seeds), at the
 * shapes of qwen3-tiny (hidden 64, heads 4, kv 2, head_dim 32, MLP 128) and Qwen3-Embedding-0.6B
 * (hidden 1024, heads 16, kv 8, head_dim 128, MLP 3072), odd sizes, and packed batches of mixed
 * lengths including 1 and 8,192 tokens. Two routes to the CUDA kernels are checked:
 *   - the op table (rmsnorm, silu_mul, get_rows, rope, attention causal+GQA+kv_lens, pool_last),
 *     i.e. what eb_qwen3.c calls today;
 *   - the kernels with no op-table entry yet, through libeb_cuda.so's eb_cuda_qwen3_ext.h entry
 *     points: packed varlen attention (fp32 and BF16 tensor cores), q_norm/k_norm fused with
 *     RoPE over packed sequences, the pooling tail (last token + final RMSNorm + L2 + output
 *     dim), the BF16 embedding gather, and the fused RMSNorm/SwiGLU kernels directly.
 * The CPU reference for a packed batch is the CPU op run once per sequence on its rows.
 *
 * Every output region has guard floats before and after it (and in row gaps for strided
 * outputs) holding a NaN sentinel that must survive bit for bit; every checked value must be
 * finite. Tolerances (rel_l2 = ||cuda - cpu|| / ||cpu||; max = max|cuda - cpu| / rms(cpu)):
 *
 *   op                                      dtype            rel_l2   max
 *   rmsnorm (+residual), q/k_norm + rope    fp32             1e-5     1e-4   (positions < 8192)
 *   silu_mul / swiglu                       fp32             1e-6     1e-5
 *   attention, varlen attention             fp32             1e-5     1e-4
 *   varlen attention, tensor cores          BF16 in, fp32 acc 2e-2     2e-1   (inputs rounded)
 *   pool_last + norm + l2                   fp32             1e-6     1e-5
 *   get_rows / embed (fp32 or BF16 table)   exact            0        0
 *   batch composition (same sequence alone
 *   and inside a packed batch)              bitwise          0        0
 *
 * Without a CUDA device (or without libeb_cuda.so) it prints why and exits 77 (skipped).
 * EB_TEST_OPS_QWEN3_DRY_RUN=1 runs the whole harness CPU against CPU (see dry_* below).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eb_cuda_loader.h"
#include "eb_cuda_qwen3_ext.h"
#include "eb_ops.h"

#define GUARD 64             /* floats of guard before and after every output region */
#define SENTINEL 0x7fa5a5a5u /* a NaN no op produces */

typedef struct tol {
    double l2, max;
} tol;

static const tol TOL_NORM = {1e-5, 1e-4};
static const tol TOL_ELEM = {1e-6, 1e-5};
static const tol TOL_ATTN = {1e-5, 1e-4};
static const tol TOL_ATTN_TC = {2e-2, 2e-1};
static const tol TOL_POOL = {1e-6, 1e-5};
static const tol TOL_EXACT = {0, 0};

static eb_backend *g_cpu, *g_cuda;

/* ---- random numbers (xorshift64*, fixed seeds) ------------------------------------------------ */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static float *rand_floats(int64_t n, uint64_t seed, float scale)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    assert_non_null(p);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)((double)(rng_next(&s) >> 11) * (2.0 / 9007199254740992.0) - 1.0) * scale;
    return p;
}

/* ---- dry run: the harness itself, CPU against CPU ------------------------------------------------
 * EB_TEST_OPS_QWEN3_DRY_RUN=1 replaces the CUDA backend by a second CPU backend and the
 * extension entry points by the CPU op sequences below (the same ones the references use), so
 * the harness (regions, guards, shapes, comparisons) can be checked on a machine without a GPU.
 * CPU backend memory is host memory, so these read the "backend" pointers directly. */

static bool g_dry;

static eb_tensor dry_vec(const float *data, int64_t n)
{
    eb_tensor t;
    memset(&t, 0, sizeof(t));
    t.data = (void *)data;
    t.dtype = EB_DTYPE_F32;
    t.kind = EB_WEIGHT_VECTOR;
    t.ndim = 1;
    t.shape[0] = n;
    t.shape[1] = t.shape[2] = t.shape[3] = 1;
    return t;
}

static eb_status dry_rmsnorm(float *y, float *x, const float *residual, const float *gain,
                             int64_t rows, int64_t C, int64_t ld, float eps)
{
    eb_tensor g = dry_vec(gain, C);
    return g_cuda->iface.rmsnorm(g_cuda, y, x, residual, &g, rows, C, ld, eps);
}

static eb_status dry_swiglu(float *y, const float *gate, const float *up, int64_t rows, int64_t F,
                            int64_t ld_in)
{
    return g_cuda->iface.silu_mul(g_cuda, y, gate, up, rows, F, ld_in);
}

static eb_status dry_embed(float *y, const void *table, int table_is_bf16, int64_t V, int64_t C,
                           const int32_t *ids, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= V)
            return EB_ERR_INVALID;
        if (table_is_bf16)
            eb_ops_bf16_to_f32(y + i * C, (const uint16_t *)table + (int64_t)ids[i] * C, (size_t)C);
        else
            memcpy(y + i * C, (const float *)table + (int64_t)ids[i] * C, (size_t)C * 4);
    }
    return EB_OK;
}

static eb_status dry_qk_norm_rope(float *q, float *k, const float *q_gain, const float *k_gain,
                                  int64_t q_ts, int64_t q_bs, int64_t k_ts, int64_t k_bs,
                                  int64_t tokens, int64_t T, int H, int Hkv, int D, int B,
                                  const int32_t *cu, float eps, float theta)
{
    (void)q_bs, (void)k_bs, (void)T;
    if (!cu || q_ts != (int64_t)H * D || k_ts != (int64_t)Hkv * D)
        return EB_ERR_UNSUPPORTED; // only what the test uses
    eb_tensor gq = dry_vec(q_gain, D), gk = dry_vec(k_gain, D);
    eb_backend *be = g_cuda;
    eb_status st = be->iface.rmsnorm(be, q, q, NULL, &gq, tokens * H, D, D, eps);
    if (st == EB_OK)
        st = be->iface.rmsnorm(be, k, k, NULL, &gk, tokens * Hkv, D, D, eps);
    for (int b = 0; st == EB_OK && b < B; b++) {
        int64_t L = cu[b + 1] - cu[b];
        st = be->iface.rope(be, q + (int64_t)cu[b] * q_ts, 1, L, H, D, L * q_ts, q_ts, theta);
        if (st == EB_OK)
            st = be->iface.rope(be, k + (int64_t)cu[b] * k_ts, 1, L, Hkv, D, L * k_ts, k_ts, theta);
    }
    return st;
}

static eb_status dry_attn_varlen(float *out, const float *q, const float *k, const float *v,
                                 const eb_cuda_q3_varlen *a)
{
    eb_attn_desc d = {.H = a->H, .Hkv = a->Hkv, .D = a->D, .q_token_stride = a->q_ts,
                      .k_token_stride = a->k_ts, .v_token_stride = a->v_ts,
                      .out_token_stride = a->o_ts, .scale = a->scale,
                      .flags = a->causal ? EB_ATTN_CAUSAL : 0};
    if (a->cu_seqlens) {
        d.B = 1;
        for (int b = 0; b < a->B; b++) {
            int64_t r0 = a->cu_seqlens[b], L = a->cu_seqlens[b + 1] - r0;
            d.Tq = d.Tk = L;
            d.q_batch_stride = L * a->q_ts, d.k_batch_stride = L * a->k_ts;
            d.v_batch_stride = L * a->v_ts, d.out_batch_stride = L * a->o_ts;
            eb_status st = g_cuda->iface.attention(g_cuda, out + r0 * a->o_ts, q + r0 * a->q_ts,
                                                   k + r0 * a->k_ts, v + r0 * a->v_ts, &d);
            if (st != EB_OK)
                return st;
        }
        return EB_OK;
    }
    d.B = a->B, d.Tq = d.Tk = a->Tq > 0 ? a->Tq : a->max_seqlen, d.kv_lens = a->lens;
    d.q_batch_stride = a->q_bs, d.k_batch_stride = a->k_bs, d.v_batch_stride = a->v_bs;
    d.out_batch_stride = a->o_bs;
    return g_cuda->iface.attention(g_cuda, out, q, k, v, &d);
}

static eb_status dry_pool_last_l2(float *y, const float *x, int64_t ldx, int64_t C, int64_t dim,
                                  int64_t T, int B, const int32_t *cu, const int32_t *lens,
                                  const float *gain, float eps)
{
    float *last = malloc((size_t)(B * C) * 4), *h = malloc((size_t)(B * C) * 4);
    if (!last || !h) {
        free(last), free(h);
        return EB_ERR_NOMEM;
    }
    for (int b = 0; b < B; b++) {
        int64_t r = cu ? cu[b + 1] - 1 : lens ? b * T + lens[b] - 1 : b;
        memcpy(last + b * C, x + r * ldx, (size_t)C * 4);
    }
    eb_tensor g = dry_vec(gain, C);
    eb_status st = gain ? g_cuda->iface.rmsnorm(g_cuda, h, last, NULL, &g, B, C, C, eps) : EB_OK;
    if (st == EB_OK)
        st = g_cuda->iface.l2norm(g_cuda, y, gain ? h : last, B, dim, C, 1e-12f);
    free(last), free(h);
    return st;
}

static void *ext(const char *name)
{
    if (g_dry) {
        static const struct {
            const char *name;
            void (*fn)(void);
        } dry[] = {
            {EB_CUDA_Q3_RMSNORM, (void (*)(void))dry_rmsnorm},
            {EB_CUDA_Q3_SWIGLU, (void (*)(void))dry_swiglu},
            {EB_CUDA_Q3_EMBED, (void (*)(void))dry_embed},
            {EB_CUDA_Q3_QK_NORM_ROPE, (void (*)(void))dry_qk_norm_rope},
            {EB_CUDA_Q3_ATTN_VARLEN, (void (*)(void))dry_attn_varlen},
            {EB_CUDA_Q3_POOL_LAST_L2, (void (*)(void))dry_pool_last_l2},
        };
        for (size_t i = 0; i < sizeof(dry) / sizeof(dry[0]); i++)
            if (strcmp(dry[i].name, name) == 0)
                return (void *)dry[i].fn;
        fail_msg("no dry-run stand-in for %s", name);
    }
    char err[512];
    void *sym = eb_cuda_loader_symbol(name, err, sizeof(err));
    if (!sym)
        fail_msg("libeb_cuda.so lacks %s (%s): rebuild it with gpu_worker/cuda/eb_cuda_qwen3_ext.cu",
                 name, err);
    return sym;
}

/* ---- one side (backend) of a comparison ------------------------------------------------------- */

typedef struct side {
    eb_backend *be;
    eb_buffer *act, *wts;
    size_t act_off, wts_off;
} side;

static void side_open(side *s, eb_backend *be, int64_t act_floats, int64_t wts_floats)
{
    memset(s, 0, sizeof(*s));
    s->be = be;
    size_t act = (size_t)act_floats * 4 + 64 * EB_OPS_ALIGN + 32 * GUARD * 4;
    s->act = be->iface.buffer_alloc(be, act, EB_BUFFER_ACTIVATIONS);
    assert_non_null(s->act);
    if (wts_floats) {
        s->wts = be->iface.buffer_alloc(be, (size_t)wts_floats * 4 + 16 * EB_OPS_ALIGN,
                                        EB_BUFFER_WEIGHTS);
        assert_non_null(s->wts);
    }
}

static void side_close(side *s)
{
    if (s->act)
        s->be->iface.buffer_free(s->be, s->act);
    if (s->wts)
        s->be->iface.buffer_free(s->be, s->wts);
    memset(s, 0, sizeof(*s));
}

/* n floats with GUARD sentinel floats on each side; `init` uploaded, or the sentinel when NULL. */
static float *side_region(side *s, int64_t n, const float *init)
{
    int64_t total = n + 2 * GUARD;
    float *p = eb_ops_act_carve(s->be, s->act, &s->act_off, total);
    assert_non_null(p);
    float *host = malloc((size_t)total * sizeof(float));
    assert_non_null(host);
    uint32_t sent = SENTINEL;
    for (int64_t i = 0; i < total; i++)
        memcpy(&host[i], &sent, 4);
    if (init)
        memcpy(host + GUARD, init, (size_t)n * sizeof(float));
    assert_int_equal(s->be->iface.upload(s->be, p, host, (size_t)total * sizeof(float)), EB_OK);
    free(host);
    return p + GUARD;
}

/* Raw bytes (ids, BF16 tables) in the activation buffer, without guards. */
static void *side_bytes(side *s, const void *init, size_t bytes)
{
    float *p = eb_ops_act_carve(s->be, s->act, &s->act_off, (int64_t)((bytes + 3) / 4));
    assert_non_null(p);
    assert_int_equal(s->be->iface.upload(s->be, p, init, bytes), EB_OK);
    return p;
}

static void side_fetch(side *s, const float *r, int64_t n, float *out, const char *what)
{
    int64_t total = n + 2 * GUARD;
    float *host = malloc((size_t)total * sizeof(float));
    assert_non_null(host);
    assert_int_equal(s->be->iface.synchronize(s->be), EB_OK);
    assert_int_equal(s->be->iface.download(s->be, host, r - GUARD, (size_t)total * sizeof(float)),
                     EB_OK);
    for (int64_t i = 0; i < total; i++) {
        if (i >= GUARD && i < GUARD + n)
            continue;
        uint32_t u;
        memcpy(&u, &host[i], 4);
        if (u != SENTINEL) {
            print_error("%s on %s wrote guard float %lld (%s the region)\n", what, s->be->name,
                        (long long)(i < GUARD ? i - GUARD : i - GUARD - n),
                        i < GUARD ? "before" : "after");
            fail();
        }
    }
    memcpy(out, host + GUARD, (size_t)n * sizeof(float));
    free(host);
}

static eb_tensor side_weight(side *s, eb_weight_kind kind, int ndim, const int64_t *shape,
                             const void *data, eb_dtype src)
{
    eb_tensor t;
    assert_int_equal(eb_ops_weight_place(s->be, &t, s->wts, &s->wts_off, src, kind, ndim, shape),
                     EB_OK);
    assert_int_equal(s->be->iface.weight_upload(s->be, &t, 0, data, src, eb_tensor_nelem(&t)),
                     EB_OK);
    return t;
}

/* ---- comparison ------------------------------------------------------------------------------- */

/* rows of cols values, rows ld apart; gaps (cols..ld) of got must hold the sentinel when
 * gaps_sentinel. */
static void compare(const char *what, const float *got, const float *ref, int64_t rows,
                    int64_t cols, int64_t ld, tol t, bool gaps_sentinel)
{
    double se = 0, sr = 0, maxd = 0;
    int64_t bad_finite = 0, bad_gap = 0, worst = -1;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < ld; c++) {
            int64_t i = r * ld + c;
            if (c >= cols) {
                uint32_t u;
                memcpy(&u, &got[i], 4);
                bad_gap += gaps_sentinel && u != SENTINEL;
                continue;
            }
            if (!isfinite(got[i]) || !isfinite(ref[i])) {
                bad_finite++;
                continue;
            }
            double d = fabs((double)got[i] - (double)ref[i]);
            se += d * d;
            sr += (double)ref[i] * ref[i];
            if (d > maxd) {
                maxd = d;
                worst = i;
            }
        }
    double n = (double)(rows * cols);
    double rms = sqrt(sr / (n > 0 ? n : 1));
    double rel_l2 = sr > 0 ? sqrt(se / sr) : sqrt(se);
    double rel_max = rms > 0 ? maxd / rms : maxd;
    bool ok = bad_finite == 0 && bad_gap == 0 && rel_l2 <= t.l2 && rel_max <= t.max;
    printf("  %-58s rel_l2 %.2e (tol %.0e)  max %.2e (tol %.0e)  %s\n", what, rel_l2, t.l2,
           rel_max, t.max, ok ? "ok" : "FAIL");
    fflush(stdout);
    if (!ok) {
        if (bad_finite)
            printf("    %lld non-finite values\n", (long long)bad_finite);
        if (bad_gap)
            printf("    %lld row-gap floats overwritten\n", (long long)bad_gap);
        if (worst >= 0)
            printf("    worst at %lld: cuda %.9g cpu %.9g\n", (long long)worst, got[worst],
                   ref[worst]);
        fail_msg("%s differs from the CPU beyond tolerance", what);
    }
}

static float *alloc_floats(int64_t n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    assert_non_null(p);
    return p;
}

/* Cumulative offsets of `lens` (B entries) into cu (B+1); returns the total. */
static int64_t cumulate(const int32_t *lens, int B, int32_t *cu)
{
    cu[0] = 0;
    for (int b = 0; b < B; b++)
        cu[b + 1] = cu[b] + lens[b];
    return cu[B];
}

/* ---- rmsnorm ---------------------------------------------------------------------------------- */

static void test_rmsnorm(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int64_t rows, C, ld;
        bool residual, in_place;
    } cases[] = {
        {"0.6B hidden (333x1024) +residual", 333, 1024, 1024, true, false},
        {"0.6B q_norm rows (77 tok x 16 heads, D 128) in place", 77 * 16, 128, 128, false, true},
        {"tiny hidden (9x64) +residual", 9, 64, 64, true, false},
        {"tiny k_norm rows (9 tok x 2 heads, D 32)", 18, 32, 32, false, false},
        {"odd strided (17x30 ld 33) +residual", 17, 30, 33, true, false},
        {"one row (1x1024)", 1, 1024, 1024, false, false},
    };
    eb_cuda_q3_rmsnorm_fn fn = (eb_cuda_q3_rmsnorm_fn)ext(EB_CUDA_Q3_RMSNORM);
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        int64_t rows = cases[ci].rows, C = cases[ci].C, ld = cases[ci].ld, n = rows * ld;
        bool res = cases[ci].residual, inpl = cases[ci].in_place;
        float *x = rand_floats(n, 101 + ci, 3.0f), *r = rand_floats(n, 201 + ci, 1.0f);
        float *g = rand_floats(C, 301 + ci, 0.5f);
        for (int64_t i = 0; i < C; i++)
            g[i] += 1.0f;
        // row gaps of y start as the sentinel (and must stay so); of x, as x.
        float *y0 = alloc_floats(n);
        uint32_t sent = SENTINEL;
        for (int64_t i = 0; i < n; i++)
            memcpy(&y0[i], &sent, 4);
        float *out[3][2]; // [cpu, table, ext][y, x]
        for (int p = 0; p < 3; p++) {
            side s;
            side_open(&s, p == 0 ? g_cpu : g_cuda, 3 * n, C);
            int64_t shape[1] = {C};
            eb_tensor tg = side_weight(&s, EB_WEIGHT_VECTOR, 1, shape, g, EB_DTYPE_F32);
            float *dx = side_region(&s, n, x), *dr = side_region(&s, n, r);
            float *dy = inpl ? dx : side_region(&s, n, y0);
            if (p < 2)
                assert_int_equal(s.be->iface.rmsnorm(s.be, dy, dx, res ? dr : NULL, &tg, rows, C,
                                                     ld, 1e-6f),
                                 EB_OK);
            else {
                assert_int_equal(s.be->iface.synchronize(s.be), EB_OK);
                assert_int_equal(fn(dy, dx, res ? dr : NULL, (const float *)tg.data, rows, C, ld,
                                    1e-6f),
                                 EB_OK);
            }
            out[p][0] = alloc_floats(n);
            out[p][1] = alloc_floats(n);
            side_fetch(&s, dy, n, out[p][0], cases[ci].name);
            side_fetch(&s, dx, n, out[p][1], cases[ci].name);
            side_close(&s);
        }
        char what[160];
        for (int p = 1; p < 3; p++) {
            snprintf(what, sizeof(what), "rmsnorm %s %s", p == 1 ? "op" : "kernel2",
                     cases[ci].name);
            compare(what, out[p][0], out[0][0], rows, C, ld, TOL_NORM, !inpl && ld > C);
            if (res) {
                snprintf(what, sizeof(what), "rmsnorm %s residual stream x += r",
                         p == 1 ? "op" : "kernel2");
                compare(what, out[p][1], out[0][1], rows, ld, ld, TOL_NORM, false);
            }
        }
        for (int p = 0; p < 3; p++)
            free(out[p][0]), free(out[p][1]);
        free(x), free(r), free(g), free(y0);
    }
}

/* ---- silu_mul / swiglu ------------------------------------------------------------------------ */

static void test_silu_mul(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int64_t rows, F, ld;
    } cases[] = {
        {"0.6B fused gate|up (333x3072, ld 6144)", 333, 3072, 6144},
        {"tiny (9x128, ld 256)", 9, 128, 256},
        {"odd (7x13, ld 26)", 7, 13, 26},
        {"one row (1x3072, ld 6144)", 1, 3072, 6144},
    };
    eb_cuda_q3_swiglu_fn fn = (eb_cuda_q3_swiglu_fn)ext(EB_CUDA_Q3_SWIGLU);
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        int64_t rows = cases[ci].rows, F = cases[ci].F, ld = cases[ci].ld;
        float *in = rand_floats(rows * ld, 401 + ci, 6.0f);
        float *out[3];
        for (int p = 0; p < 3; p++) {
            side s;
            side_open(&s, p == 0 ? g_cpu : g_cuda, rows * ld + rows * F, 0);
            float *din = side_region(&s, rows * ld, in), *dy = side_region(&s, rows * F, NULL);
            if (p < 2)
                assert_int_equal(s.be->iface.silu_mul(s.be, dy, din, din + F, rows, F, ld), EB_OK);
            else {
                assert_int_equal(s.be->iface.synchronize(s.be), EB_OK);
                assert_int_equal(fn(dy, din, din + F, rows, F, ld), EB_OK);
            }
            out[p] = alloc_floats(rows * F);
            side_fetch(&s, dy, rows * F, out[p], cases[ci].name);
            side_close(&s);
        }
        char what[160];
        for (int p = 1; p < 3; p++) {
            snprintf(what, sizeof(what), "silu_mul %s %s", p == 1 ? "op" : "swiglu kernel1",
                     cases[ci].name);
            compare(what, out[p], out[0], rows, F, F, TOL_ELEM, false);
        }
        for (int p = 0; p < 3; p++)
            free(out[p]);
        free(in);
    }
}

/* ---- embedding gather -------------------------------------------------------------------------- */

static void test_embed(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int64_t V, C, n;
    } cases[] = {
        {"0.6B width (1000x1024 table, 77 ids)", 1000, 1024, 77},
        {"tiny width (500x64 table, 9 ids)", 500, 64, 9},
        {"odd width (50x30 table, 5 ids)", 50, 30, 5},
    };
    eb_cuda_q3_embed_fn fn = (eb_cuda_q3_embed_fn)ext(EB_CUDA_Q3_EMBED);
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        int64_t V = cases[ci].V, C = cases[ci].C, n = cases[ci].n;
        float *tf = rand_floats(V * C, 501 + ci, 1.0f);
        uint16_t *tb = malloc((size_t)(V * C) * 2);
        assert_non_null(tb);
        eb_ops_f32_to_bf16(tb, tf, (size_t)(V * C));
        int32_t *ids = malloc((size_t)n * sizeof(int32_t));
        assert_non_null(ids);
        uint64_t s64 = 601 + ci;
        for (int64_t i = 0; i < n; i++)
            ids[i] = (int32_t)(rng_next(&s64) % (uint64_t)V);
        ids[0] = (int32_t)(V - 1), ids[n - 1] = 0; // both ends of the table
        float *out[4]; // cpu fp32 table, cuda op fp32 table, cpu bf16-sourced, cuda bf16 kernel
        int64_t shape[2] = {V, C};
        for (int p = 0; p < 2; p++) {
            side s;
            side_open(&s, p == 0 ? g_cpu : g_cuda, 2 * n * C + V * C / 2 + 2 * n, 2 * V * C);
            eb_tensor t32 = side_weight(&s, EB_WEIGHT_TABLE, 2, shape, tf, EB_DTYPE_F32);
            eb_tensor t16 = side_weight(&s, EB_WEIGHT_TABLE, 2, shape, tb, EB_DTYPE_BF16);
            int32_t *dids = side_bytes(&s, ids, (size_t)n * sizeof(int32_t));
            float *y32 = side_region(&s, n * C, NULL), *y16 = side_region(&s, n * C, NULL);
            assert_int_equal(s.be->iface.get_rows(s.be, y32, &t32, dids, n), EB_OK);
            if (p == 0) {
                // the CPU converted the BF16 source exactly: its get_rows is the reference
                assert_int_equal(s.be->iface.get_rows(s.be, y16, &t16, dids, n), EB_OK);
            } else {
                // the kernel reads a BF16 table as the checkpoint stores it
                void *draw = side_bytes(&s, tb, (size_t)(V * C) * 2);
                assert_int_equal(s.be->iface.synchronize(s.be), EB_OK);
                assert_int_equal(fn(y16, draw, 1, V, C, dids, n), EB_OK);
            }
            out[p] = alloc_floats(n * C);
            out[2 + p] = alloc_floats(n * C);
            side_fetch(&s, y32, n * C, out[p], cases[ci].name);
            side_fetch(&s, y16, n * C, out[2 + p], cases[ci].name);
            side_close(&s);
        }
        char what[160];
        snprintf(what, sizeof(what), "get_rows op fp32 table %s", cases[ci].name);
        compare(what, out[1], out[0], n, C, C, TOL_EXACT, false);
        snprintf(what, sizeof(what), "embed kernel1 bf16 table %s", cases[ci].name);
        compare(what, out[3], out[2], n, C, C, TOL_EXACT, false);
        for (int p = 0; p < 4; p++)
            free(out[p]);
        free(tf), free(tb), free(ids);
    }
}

/* ---- rope (op) and q_norm/k_norm + rope (fused kernel) --------------------------------------- */

static void test_rope(void **state)
{
    (void)state;
    // The op: (B, T, H, D) inside a fused row, positions up to 8191.
    static const struct {
        const char *name;
        int64_t B, T, H, D;
        float theta;
    } ops[] = {
        {"rope op 0.6B D128 (1x8192, H2, theta 1e6)", 1, 8192, 2, 128, 1000000.0f},
        {"rope op tiny D32 (3x37, H4, theta 1e4)", 3, 37, 4, 32, 10000.0f},
    };
    for (size_t ci = 0; ci < sizeof(ops) / sizeof(ops[0]); ci++) {
        int64_t B = ops[ci].B, T = ops[ci].T, H = ops[ci].H, D = ops[ci].D;
        int64_t ts = 3 * H * D, bs = T * ts, n = B * bs;
        float *x = rand_floats(n, 701 + ci, 1.0f);
        float *out[2];
        for (int p = 0; p < 2; p++) {
            side s;
            side_open(&s, p == 0 ? g_cpu : g_cuda, n, 0);
            float *dx = side_region(&s, n, x);
            assert_int_equal(s.be->iface.rope(s.be, dx, B, T, H, D, bs, ts, ops[ci].theta),
                             EB_OK);
            out[p] = alloc_floats(n);
            side_fetch(&s, dx, n, out[p], ops[ci].name);
            side_close(&s);
        }
        compare(ops[ci].name, out[1], out[0], 1, n, n, TOL_NORM, false);
        free(out[0]), free(out[1]), free(x);
    }

    // The fused kernel on packed sequences vs the CPU's rmsnorm + rope per sequence.
    static const struct {
        const char *name;
        int32_t lens[8];
        int B, H, Hkv, D;
        float theta, eps;
    } fz[] = {
        {"qk_norm_rope 0.6B packed lens 1,7,64,129,300,8192", {1, 7, 64, 129, 300, 8192}, 6, 16, 8,
         128, 1000000.0f, 1e-6f},
        {"qk_norm_rope tiny packed lens 5,1,33", {5, 1, 33}, 3, 4, 2, 32, 10000.0f, 1e-5f},
    };
    eb_cuda_q3_qk_norm_rope_fn fn = (eb_cuda_q3_qk_norm_rope_fn)ext(EB_CUDA_Q3_QK_NORM_ROPE);
    for (size_t ci = 0; ci < sizeof(fz) / sizeof(fz[0]); ci++) {
        int B = fz[ci].B, H = fz[ci].H, Hkv = fz[ci].Hkv, D = fz[ci].D;
        int32_t cu[9];
        int64_t T = cumulate(fz[ci].lens, B, cu);
        int64_t nq = T * H * D, nk = T * Hkv * D;
        float *q = rand_floats(nq, 801 + ci, 2.0f), *k = rand_floats(nk, 811 + ci, 2.0f);
        float *gq = rand_floats(D, 821 + ci, 0.3f), *gk = rand_floats(D, 831 + ci, 0.3f);
        for (int i = 0; i < D; i++)
            gq[i] += 1.0f, gk[i] += 1.0f;
        float *oq[2], *ok_[2];
        for (int p = 0; p < 2; p++) {
            side s;
            side_open(&s, p == 0 ? g_cpu : g_cuda, nq + nk, 2 * D);
            int64_t shape[1] = {D};
            eb_tensor tq = side_weight(&s, EB_WEIGHT_VECTOR, 1, shape, gq, EB_DTYPE_F32);
            eb_tensor tk = side_weight(&s, EB_WEIGHT_VECTOR, 1, shape, gk, EB_DTYPE_F32);
            float *dq = side_region(&s, nq, q), *dk = side_region(&s, nk, k);
            if (p == 0) {
                eb_backend *be = s.be;
                assert_int_equal(be->iface.rmsnorm(be, dq, dq, NULL, &tq, T * H, D, D, fz[ci].eps),
                                 EB_OK);
                assert_int_equal(
                    be->iface.rmsnorm(be, dk, dk, NULL, &tk, T * Hkv, D, D, fz[ci].eps), EB_OK);
                for (int b = 0; b < B; b++) {
                    int64_t L = fz[ci].lens[b];
                    assert_int_equal(be->iface.rope(be, dq + (int64_t)cu[b] * H * D, 1, L, H, D,
                                                    L * H * D, H * D, fz[ci].theta),
                                     EB_OK);
                    assert_int_equal(be->iface.rope(be, dk + (int64_t)cu[b] * Hkv * D, 1, L, Hkv,
                                                    D, L * Hkv * D, Hkv * D, fz[ci].theta),
                                     EB_OK);
                }
            } else {
                assert_int_equal(s.be->iface.synchronize(s.be), EB_OK);
                assert_int_equal(fn(dq, dk, (const float *)tq.data, (const float *)tk.data,
                                    (int64_t)H * D, 0, (int64_t)Hkv * D, 0, T, 0, H, Hkv, D, B, cu,
                                    fz[ci].eps, fz[ci].theta),
                                 EB_OK);
            }
            oq[p] = alloc_floats(nq);
            ok_[p] = alloc_floats(nk);
            side_fetch(&s, dq, nq, oq[p], fz[ci].name);
            side_fetch(&s, dk, nk, ok_[p], fz[ci].name);
            side_close(&s);
        }
        char what[160];
        snprintf(what, sizeof(what), "%s (q)", fz[ci].name);
        compare(what, oq[1], oq[0], T, H * D, H * D, TOL_NORM, false);
        snprintf(what, sizeof(what), "%s (k)", fz[ci].name);
        compare(what, ok_[1], ok_[0], T, Hkv * D, Hkv * D, TOL_NORM, false);
        free(oq[0]), free(oq[1]), free(ok_[0]), free(ok_[1]);
        free(q), free(k), free(gq), free(gk);
    }
}

/* ---- attention -------------------------------------------------------------------------------- */

typedef struct va_case {
    const char *name;
    int32_t lens[8];
    int B, H, Hkv, D;
    int tensor_cores;
} va_case;

/* out (T, H*D) on the CPU: the causal attention op once per sequence of the packed batch. */
static void cpu_packed_attention(side *s, float *out, const float *q, const float *k,
                                 const float *v, const va_case *c, const int32_t *cu)
{
    int64_t HD = (int64_t)c->H * c->D, KD = (int64_t)c->Hkv * c->D;
    for (int b = 0; b < c->B; b++) {
        int64_t L = c->lens[b], r0 = cu[b];
        eb_attn_desc d = {.B = 1, .Tq = L, .Tk = L, .H = c->H, .Hkv = c->Hkv, .D = c->D,
                          .q_batch_stride = L * HD, .q_token_stride = HD,
                          .k_batch_stride = L * KD, .k_token_stride = KD,
                          .v_batch_stride = L * KD, .v_token_stride = KD,
                          .out_batch_stride = L * HD, .out_token_stride = HD,
                          .scale = 1.0f / sqrtf((float)c->D), .flags = EB_ATTN_CAUSAL};
        assert_int_equal(s->be->iface.attention(s->be, out + r0 * HD, q + r0 * HD, k + r0 * KD,
                                                v + r0 * KD, &d),
                         EB_OK);
    }
}

static void test_attention(void **state)
{
    (void)state;
    eb_cuda_q3_attn_varlen_fn fn = (eb_cuda_q3_attn_varlen_fn)ext(EB_CUDA_Q3_ATTN_VARLEN);
    static const va_case cases[] = {
        {"varlen tiny H4/2 D32 lens 1,5,17,64", {1, 5, 17, 64}, 4, 4, 2, 32, 0},
        {"varlen 0.6B H16/8 D128 lens 1,7,64,129,300", {1, 7, 64, 129, 300}, 5, 16, 8, 128, 0},
        {"varlen long H2/1 D128 lens 8192,1,33", {8192, 1, 33}, 3, 2, 1, 128, 0},
        {"varlen TC 0.6B H16/8 D128 lens 1,7,64,129,300", {1, 7, 64, 129, 300}, 5, 16, 8, 128, 1},
        {"varlen TC long H2/1 D128 lens 8192,3", {8192, 3}, 2, 2, 1, 128, 1},
    };
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        const va_case *c = &cases[ci];
        int32_t cu[9];
        int64_t T = cumulate(c->lens, c->B, cu);
        int maxlen = 0;
        for (int b = 0; b < c->B; b++)
            maxlen = c->lens[b] > maxlen ? c->lens[b] : maxlen;
        int64_t HD = (int64_t)c->H * c->D, KD = (int64_t)c->Hkv * c->D;
        float *q = rand_floats(T * HD, 901 + ci, 2.0f), *k = rand_floats(T * KD, 911 + ci, 2.0f);
        float *v = rand_floats(T * KD, 921 + ci, 1.0f);
        if (c->tensor_cores) { // the reference sees the same BF16-rounded inputs
            uint16_t *tmp = malloc((size_t)(T * HD) * 2);
            assert_non_null(tmp);
            float *arrs[3] = {q, k, v};
            int64_t ns[3] = {T * HD, T * KD, T * KD};
            for (int a = 0; a < 3; a++) {
                eb_ops_f32_to_bf16(tmp, arrs[a], (size_t)ns[a]);
                eb_ops_bf16_to_f32(arrs[a], tmp, (size_t)ns[a]);
            }
            free(tmp);
        }
        float *out[2];
        float *alone = NULL; // the last sequence run on its own (batch composition)
        for (int p = 0; p < 2; p++) {
            side s;
            side_open(&s, p == 0 ? g_cpu : g_cuda, 3 * T * HD + 2 * T * KD, 0);
            float *dq = side_region(&s, T * HD, q), *dk = side_region(&s, T * KD, k);
            float *dv = side_region(&s, T * KD, v), *dout = side_region(&s, T * HD, NULL);
            if (p == 0) {
                cpu_packed_attention(&s, dout, dq, dk, dv, c, cu);
            } else {
                eb_cuda_q3_varlen a = {.B = c->B, .H = c->H, .Hkv = c->Hkv, .D = c->D,
                                       .max_seqlen = maxlen, .q_ts = HD, .k_ts = KD, .v_ts = KD,
                                       .o_ts = HD, .scale = 1.0f / sqrtf((float)c->D),
                                       .causal = 1, .use_tensor_cores = c->tensor_cores,
                                       .cu_seqlens = cu};
                assert_int_equal(s.be->iface.synchronize(s.be), EB_OK);
                assert_int_equal(fn(dout, dq, dk, dv, &a), EB_OK);
                // the last sequence alone, into its own region
                int bl = c->B - 1;
                int64_t L = c->lens[bl], r0 = cu[bl];
                int32_t cu1[2] = {0, (int32_t)L};
                float *dsolo = side_region(&s, L * HD, NULL);
                eb_cuda_q3_varlen a1 = a;
                a1.B = 1, a1.max_seqlen = (int)L, a1.cu_seqlens = cu1;
                assert_int_equal(fn(dsolo, dq + r0 * HD, dk + r0 * KD, dv + r0 * KD, &a1), EB_OK);
                alone = alloc_floats(L * HD);
                side_fetch(&s, dsolo, L * HD, alone, c->name);
            }
            out[p] = alloc_floats(T * HD);
            side_fetch(&s, dout, T * HD, out[p], c->name);
            side_close(&s);
        }
        compare(c->name, out[1], out[0], T, HD, HD, c->tensor_cores ? TOL_ATTN_TC : TOL_ATTN,
                false);
        int64_t L = c->lens[c->B - 1], r0 = cu[c->B - 1];
        char what[200];
        snprintf(what, sizeof(what), "  batch composition: seq of %lld alone == in the batch",
                 (long long)L);
        compare(what, alone, out[1] + r0 * HD, L, HD, HD, TOL_EXACT, false);
        free(out[0]), free(out[1]), free(alone), free(q), free(k), free(v);
    }

    // The op table: causal GQA with kv_lens (the model's padded layout), and the padded varlen
    // kernel against the same CPU op.
    {
        const int64_t B = 3, T = 65, H = 16, Hkv = 8, D = 128, HD = H * D, KD = Hkv * D;
        int32_t lens[3] = {65, 30, 1};
        float *q = rand_floats(B * T * HD, 951, 2.0f), *k = rand_floats(B * T * KD, 952, 2.0f);
        float *v = rand_floats(B * T * KD, 953, 1.0f);
        eb_attn_desc d = {.B = B, .Tq = T, .Tk = T, .H = H, .Hkv = Hkv, .D = D,
                          .q_batch_stride = T * HD, .q_token_stride = HD,
                          .k_batch_stride = T * KD, .k_token_stride = KD,
                          .v_batch_stride = T * KD, .v_token_stride = KD,
                          .out_batch_stride = T * HD, .out_token_stride = HD,
                          .scale = 1.0f / sqrtf((float)D), .flags = EB_ATTN_CAUSAL,
                          .kv_lens = lens};
        float *out[3];
        for (int p = 0; p < 3; p++) {
            side s;
            side_open(&s, p == 0 ? g_cpu : g_cuda, B * T * (2 * HD + 2 * KD), 0);
            float *dq = side_region(&s, B * T * HD, q), *dk = side_region(&s, B * T * KD, k);
            float *dv = side_region(&s, B * T * KD, v), *dout = side_region(&s, B * T * HD, NULL);
            if (p < 2) {
                assert_int_equal(s.be->iface.attention(s.be, dout, dq, dk, dv, &d), EB_OK);
            } else {
                eb_cuda_q3_varlen a = {.B = (int)B, .H = (int)H, .Hkv = (int)Hkv, .D = (int)D,
                                       .max_seqlen = (int)T, .Tq = (int)T,
                                       .q_bs = T * HD, .q_ts = HD, .k_bs = T * KD, .k_ts = KD,
                                       .v_bs = T * KD, .v_ts = KD, .o_bs = T * HD, .o_ts = HD,
                                       .scale = 1.0f / sqrtf((float)D), .causal = 1,
                                       .lens = lens};
                assert_int_equal(s.be->iface.synchronize(s.be), EB_OK);
                assert_int_equal(fn(dout, dq, dk, dv, &a), EB_OK);
            }
            out[p] = alloc_floats(B * T * HD);
            side_fetch(&s, dout, B * T * HD, out[p], "attention padded");
            side_close(&s);
        }
        compare("attention op causal GQA kv_lens 65,30,1 (H16/8 D128)", out[1], out[0], B * T, HD,
                HD, TOL_ATTN, false);
        compare("varlen kernel padded lens 65,30,1 (zero rows)", out[2], out[0], B * T, HD, HD,
                TOL_ATTN, false);
        for (int p = 0; p < 3; p++)
            free(out[p]);
        free(q), free(k), free(v);
    }
}

/* ---- pooling ---------------------------------------------------------------------------------- */

static void test_pool(void **state)
{
    (void)state;
    eb_cuda_q3_pool_last_l2_fn fn = (eb_cuda_q3_pool_last_l2_fn)ext(EB_CUDA_Q3_POOL_LAST_L2);
    static const struct {
        const char *name;
        int32_t lens[8];
        int B;
        int64_t C, dim;
        bool gain;
    } cases[] = {
        {"pool+norm+l2 0.6B lens 1,7,64,300 dim 1024", {1, 7, 64, 300}, 4, 1024, 1024, true},
        {"pool+norm+l2 0.6B lens 3,2 dim 256 (Matryoshka)", {3, 2}, 2, 1024, 256, true},
        {"pool+l2 tiny lens 5 dim 32, no norm", {5}, 1, 64, 32, false},
    };
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        int B = cases[ci].B;
        int64_t C = cases[ci].C, dim = cases[ci].dim;
        int32_t cu[9];
        int64_t T = cumulate(cases[ci].lens, B, cu);
        float *x = rand_floats(T * C, 1001 + ci, 4.0f), *g = rand_floats(C, 1011 + ci, 0.5f);
        for (int64_t i = 0; i < C; i++)
            g[i] += 1.0f;
        float *out[2];
        for (int p = 0; p < 2; p++) {
            side s;
            side_open(&s, p == 0 ? g_cpu : g_cuda, T * C + 3 * B * C, C);
            int64_t shape[1] = {C};
            eb_tensor tg = side_weight(&s, EB_WEIGHT_VECTOR, 1, shape, g, EB_DTYPE_F32);
            float *dx = side_region(&s, T * C, x), *dy = side_region(&s, B * dim, NULL);
            if (p == 0) {
                eb_backend *be = s.be;
                float *last = side_region(&s, B * C, NULL), *h = side_region(&s, B * C, NULL);
                for (int b = 0; b < B; b++)
                    assert_int_equal(be->iface.copy_rows(be, last + b * C, C,
                                                         dx + (int64_t)(cu[b + 1] - 1) * C, C, 1,
                                                         C),
                                     EB_OK);
                if (cases[ci].gain)
                    assert_int_equal(be->iface.rmsnorm(be, h, last, NULL, &tg, B, C, C, 1e-6f),
                                     EB_OK);
                else
                    assert_int_equal(be->iface.copy_rows(be, h, C, last, C, B, C), EB_OK);
                assert_int_equal(be->iface.l2norm(be, dy, h, B, dim, C, 1e-12f), EB_OK);
            } else {
                assert_int_equal(s.be->iface.synchronize(s.be), EB_OK);
                assert_int_equal(fn(dy, dx, C, C, dim, 0, B, cu, NULL,
                                    cases[ci].gain ? (const float *)tg.data : NULL, 1e-6f),
                                 EB_OK);
            }
            out[p] = alloc_floats(B * dim);
            side_fetch(&s, dy, B * dim, out[p], cases[ci].name);
            side_close(&s);
        }
        compare(cases[ci].name, out[1], out[0], B, dim, dim, TOL_POOL, false);
        free(out[0]), free(out[1]), free(x), free(g);
    }
    // The op table's pool_last on the padded layout.
    {
        const int64_t B = 4, T = 9, C = 1024;
        int32_t lens[4] = {9, 1, 5, 2};
        float *x = rand_floats(B * T * C, 1021, 1.0f);
        float *out[2];
        for (int p = 0; p < 2; p++) {
            side s;
            side_open(&s, p == 0 ? g_cpu : g_cuda, B * T * C + B * C, 0);
            float *dx = side_region(&s, B * T * C, x), *dy = side_region(&s, B * C, NULL);
            assert_int_equal(s.be->iface.pool_last(s.be, dy, dx, lens, B, T, C), EB_OK);
            out[p] = alloc_floats(B * C);
            side_fetch(&s, dy, B * C, out[p], "pool_last");
            side_close(&s);
        }
        compare("pool_last op padded (4x9x1024, lens 9,1,5,2)", out[1], out[0], B, C, C,
                TOL_EXACT, false);
        free(out[0]), free(out[1]), free(x);
    }
}

/* ---- main ------------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
            only = argv[++i];
        } else {
            fprintf(stderr, "usage: test_ops_qwen3 [-o rmsnorm|silu_mul|embed|rope|attention|pool]\n");
            return 2;
        }
    }
    char err[1024], libpath[4096];
    eb_backend_params params = {.n_threads = 0, .device_index = 0,
                                .cuda_library = eb_cuda_loader_path(libpath, sizeof(libpath))};
    const char *dry = getenv("EB_TEST_OPS_QWEN3_DRY_RUN");
    g_dry = dry && strcmp(dry, "1") == 0;
    setenv("EB_CUDA_PRECISION", "fp32", 1); // only matters for matmul; none here
    g_cuda = eb_backend_create(g_dry ? "cpu" : "cuda", &params, err, sizeof(err));
    unsetenv("EB_CUDA_PRECISION");
    if (g_dry)
        printf("test_ops_qwen3: DRY RUN: CPU against CPU (checks the harness, not CUDA)\n");
    if (!g_cuda) {
        printf("test_ops_qwen3: skipped: no CUDA backend: %s\n", err);
        return 77;
    }
    g_cpu = eb_backend_create("cpu", &params, err, sizeof(err));
    if (!g_cpu) {
        printf("test_ops_qwen3: cannot create the CPU backend: %s\n", err);
        return 1;
    }
    eb_ops_limits lim = {.max_batch = 8, .max_tokens = 8192, .max_heads = 16,
                         .max_head_dim = 128, .max_hidden = 3072, .max_patch_dim = 0};
    if (g_cpu->iface.reserve(g_cpu, &lim) != EB_OK || g_cuda->iface.reserve(g_cuda, &lim) != EB_OK) {
        printf("test_ops_qwen3: reserve failed\n");
        return 1;
    }
    printf("test_ops_qwen3: cpu = %s; cuda = %s\n", g_cpu->device, g_cuda->device);
    static const struct CMUnitTest all[] = {
        cmocka_unit_test(test_rmsnorm), cmocka_unit_test(test_silu_mul),
        cmocka_unit_test(test_embed),   cmocka_unit_test(test_rope),
        cmocka_unit_test(test_attention), cmocka_unit_test(test_pool),
    };
    struct CMUnitTest chosen[sizeof(all) / sizeof(all[0])];
    size_t n = 0;
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (!only || strcmp(all[i].name + 5, only) == 0)
            chosen[n++] = all[i];
    if (n == 0) {
        fprintf(stderr, "test_ops_qwen3: no test named %s\n", only);
        return 2;
    }
    int failed = _cmocka_run_group_tests("test_ops_qwen3", chosen, n, NULL, NULL);
    eb_backend_destroy(&g_cuda);
    eb_backend_destroy(&g_cpu);
    return failed ? 1 : 0;
}
