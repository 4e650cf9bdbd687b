/* test_ops — every CUDA op against the CPU op (the backend-ops test, after ggml's).
 *
 *   test_ops [-o OP] [-p fp32|tf32|bf16] [-c CASE-SUBSTRING] [--perf]
 *
 * Each op runs on the CPU backend (the numerical reference, itself checked against
 * transformers) and on the CUDA backend with the same random inputs (fixed seeds), at the shapes
 * of siglip-tiny, siglip-base (T=196, C=768, H=12, D=64, MLP 3072), siglip-so400m (T=729,
 * C=1152, H=16, D=72, MLP 4304) and odd sizes (strides wider than rows, lengths not multiples of
 * anything). Every output region has guard floats before and after it (and, for strided
 * outputs, in the gaps between rows) filled with a NaN sentinel that must survive bit for bit;
 * every written value must be finite. Matrix products run once per CUDA precision.
 *
 * Tolerances (rel_l2 = ||cuda - cpu|| / ||cpu||; max = max|cuda - cpu| / rms(cpu)):
 *
 *   op                          precision   rel_l2    max
 *   matmul, patch_embed         fp32        1e-5      1e-4
 *                               tf32        5e-3      3e-2    (10-bit mantissa inputs)
 *                               bf16        1e-2      6e-2    (8-bit mantissa inputs)
 *   layernorm, rmsnorm, softmax,
 *   attention, l2norm           any (fp32)  1e-5      1e-4
 *   gelu_tanh, silu_mul, add    any (fp32)  1e-6      1e-5
 *   rope                        any (fp32)  1e-5      1e-4    (cos/sin of angles up to ~1000)
 *   copy_rows, get_rows,
 *   pool_last                   any         0         0       (exact copies)
 *   resize (uint8, normalised)  -           0         0       (bit-identical to the CPU)
 *
 * Without a CUDA device (or without libeb_cuda.so) it prints why and exits 77 (skipped).
 * --perf prints, per CUDA op call, µs and GB/s (bytes read + written) or TFLOP/s.
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

#include "eb_clock.h"
#include "eb_cuda_ext.h"
#include "eb_cuda_loader.h"
#include "eb_ops.h"
#include "eb_preprocess.h"
#include "eb_resize.h"

#define GUARD 64                /* floats of guard before and after every output region */
#define SENTINEL 0x7fa5a5a5u    /* a NaN no op produces */
#define N_PREC 3

static const char *const prec_names[N_PREC] = {"fp32", "tf32", "bf16"};

typedef struct tol {
    double l2, max;
} tol;

static eb_backend *g_cpu;
static eb_backend *g_cuda[N_PREC]; /* NULL when that precision is not tested */
static bool g_perf;
static const char *g_case; /* -c SUBSTR: only cases whose name contains it */

static bool case_selected(const char *name)
{
    return !g_case || strstr(name, g_case) != NULL;
}
static int g_failures_logged;

/* ---- random numbers (xorshift64*, fixed seeds) ------------------------------------------------ */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static float rng_uniform(uint64_t *s) /* [-1, 1) */
{
    return (float)((double)(rng_next(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

static float *rand_floats(int64_t n, uint64_t seed, float scale)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    assert_non_null(p);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++)
        p[i] = rng_uniform(&s) * scale;
    return p;
}

/* ---- one side (backend) of a comparison ------------------------------------------------------- */

typedef struct side {
    eb_backend *be;
    eb_buffer *act, *wts;
    size_t act_off, wts_off;
} side;

static void side_open(side *s, eb_backend *be, size_t act_bytes, size_t wts_bytes)
{
    memset(s, 0, sizeof(*s));
    s->be = be;
    s->act = be->iface.buffer_alloc(be, act_bytes + 64 * EB_OPS_ALIGN, EB_BUFFER_ACTIVATIONS);
    assert_non_null(s->act);
    if (wts_bytes) {
        s->wts = be->iface.buffer_alloc(be, wts_bytes + 64 * EB_OPS_ALIGN, EB_BUFFER_WEIGHTS);
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

/* A region of n floats with GUARD sentinel floats on each side; returns the backend pointer of
 * its first data float. `init` (n floats) is uploaded, or the sentinel when NULL. */
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

/* Download n floats of region r (and its guards) into out (n floats); checks the guards. */
static void side_fetch(side *s, const float *r, int64_t n, float *out, const char *what)
{
    int64_t total = n + 2 * GUARD;
    float *host = malloc((size_t)total * sizeof(float));
    assert_non_null(host);
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

/* A weight tensor of `shape` from host fp32 data. */
static eb_tensor side_weight(side *s, eb_weight_kind kind, int ndim, const int64_t *shape,
                             const float *data)
{
    eb_tensor t;
    assert_int_equal(eb_ops_weight_place(s->be, &t, s->wts, &s->wts_off, EB_DTYPE_F32, kind, ndim,
                                         shape),
                     EB_OK);
    assert_int_equal(s->be->iface.weight_upload(s->be, &t, 0, data, EB_DTYPE_F32,
                                                eb_tensor_nelem(&t)),
                     EB_OK);
    return t;
}

/* ---- comparison ------------------------------------------------------------------------------- */

/* Compare `rows` rows of `cols` values (rows `ld` apart; the gaps must hold the sentinel on the
 * CUDA side when gaps_sentinel) of got (CUDA) against ref (CPU). */
static void compare(const char *what, const char *prec, const float *got, const float *ref,
                    int64_t rows, int64_t cols, int64_t ld, tol t, bool gaps_sentinel)
{
    double se = 0, sr = 0, maxd = 0;
    int64_t bad_finite = 0, bad_gap = 0, worst = -1;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < ld; c++) {
            int64_t i = r * ld + c;
            if (c >= cols) {
                uint32_t u;
                memcpy(&u, &got[i], 4);
                if (gaps_sentinel && u != SENTINEL)
                    bad_gap++;
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
    }
    double n = (double)(rows * cols);
    double rms = sqrt(sr / (n > 0 ? n : 1));
    double rel_l2 = sr > 0 ? sqrt(se / sr) : sqrt(se);
    double rel_max = rms > 0 ? maxd / rms : maxd;
    bool ok = bad_finite == 0 && bad_gap == 0 && rel_l2 <= t.l2 && rel_max <= t.max;
    printf("  %-34s %-4s rel_l2 %.2e (tol %.0e)  max %.2e (tol %.0e)  %s\n", what, prec, rel_l2,
           t.l2, rel_max, t.max, ok ? "ok" : "FAIL");
    if (!ok) {
        if (bad_finite)
            printf("    %lld non-finite values\n", (long long)bad_finite);
        if (bad_gap)
            printf("    %lld row-gap floats overwritten\n", (long long)bad_gap);
        if (worst >= 0)
            printf("    worst at %lld: cuda %.9g cpu %.9g\n", (long long)worst, got[worst],
                   ref[worst]);
        g_failures_logged++;
        fail_msg("%s (%s) differs from the CPU beyond tolerance", what, prec);
    }
}

/* ---- perf ------------------------------------------------------------------------------------- */

typedef eb_status (*op_thunk)(side *s, void *arg);

static void perf(const char *what, const char *prec, side *s, op_thunk fn, void *arg,
                 double bytes, double flops)
{
    if (!g_perf)
        return;
    assert_int_equal(fn(s, arg), EB_OK);
    assert_int_equal(s->be->iface.synchronize(s->be), EB_OK);
    int iters = 1;
    int64_t t0 = 0, t1 = 0;
    for (;;) { // grow until >= 20 ms
        t0 = eb_now_us();
        for (int i = 0; i < iters; i++)
            assert_int_equal(fn(s, arg), EB_OK);
        assert_int_equal(s->be->iface.synchronize(s->be), EB_OK);
        t1 = eb_now_us();
        if (t1 - t0 >= 20000 || iters >= 4096)
            break;
        iters *= 4;
    }
    double us = (double)(t1 - t0) / iters;
    printf("  perf %-34s %-4s %10.1f us", what, prec, us);
    if (bytes > 0)
        printf("  %8.1f GB/s", bytes / (us * 1e-6) / 1e9);
    if (flops > 0)
        printf("  %8.2f TFLOP/s", flops / (us * 1e-6) / 1e12);
    printf("\n");
}

/* ---- matmul ----------------------------------------------------------------------------------- */

typedef struct mm_case {
    const char *name;
    int64_t M, N, K, ldx, ldy;
    bool bias;
    unsigned flags;
} mm_case;

typedef struct mm_run {
    float *y, *x;
    eb_tensor w, b;
    int64_t ldy, ldx, M;
    bool bias;
    unsigned flags;
    float *y_init;
    int64_t y_n;
} mm_run;

static eb_status mm_thunk(side *s, void *arg)
{
    mm_run *r = arg;
    return s->be->iface.matmul(s->be, r->y, r->ldy, r->x, r->ldx, &r->w, r->bias ? &r->b : NULL,
                               r->M, r->flags & ~EB_MATMUL_ACCUMULATE);
}

static void run_matmul_on(side *s, const mm_case *c, const float *x, const float *w,
                          const float *b, const float *y0, float *out)
{
    int64_t wshape[2] = {c->N, c->K}, bshape[1] = {c->N};
    mm_run r = {.ldy = c->ldy, .ldx = c->ldx, .M = c->M, .bias = c->bias, .flags = c->flags};
    r.w = side_weight(s, EB_WEIGHT_MATRIX, 2, wshape, w);
    if (c->bias)
        r.b = side_weight(s, EB_WEIGHT_VECTOR, 1, bshape, b);
    r.x = side_region(s, c->M * c->ldx, x);
    r.y = side_region(s, c->M * c->ldy, y0);
    assert_int_equal(s->be->iface.matmul(s->be, r.y, r.ldy, r.x, r.ldx, &r.w,
                                         c->bias ? &r.b : NULL, c->M, c->flags),
                     EB_OK);
    assert_int_equal(s->be->iface.synchronize(s->be), EB_OK);
    side_fetch(s, r.y, c->M * c->ldy, out, c->name);
    if (s->be != g_cpu)
        perf(c->name, "", s, mm_thunk, &r, 4.0 * (double)(c->M * c->K + c->N * c->K + c->M * c->N),
             2.0 * (double)c->M * c->N * c->K);
}

static void test_matmul(void **state)
{
    (void)state;
    static const mm_case cases[] = {
        {"matmul tiny qkv (64x192x64)", 64, 192, 64, 64, 192, true, 0},
        {"matmul tiny fc1+gelu (64x128x64)", 64, 128, 64, 64, 128, true, EB_MATMUL_GELU_TANH},
        {"matmul base qkv (392x2304x768)", 392, 2304, 768, 768, 2304, true, 0},
        {"matmul base fc1+gelu (392x3072x768)", 392, 3072, 768, 768, 3072, true,
         EB_MATMUL_GELU_TANH},
        {"matmul base fc2+acc (392x768x3072)", 392, 768, 3072, 3072, 768, true,
         EB_MATMUL_ACCUMULATE},
        {"matmul base head (1x768x768)", 1, 768, 768, 768, 768, true, 0},
        {"matmul so400m fc1+gelu (729x4304x1152)", 729, 4304, 1152, 1152, 4304, true,
         EB_MATMUL_GELU_TANH},
        {"matmul so400m fc2+acc (729x1152x4304)", 729, 1152, 4304, 4304, 1152, true,
         EB_MATMUL_ACCUMULATE},
        {"matmul odd strided (37x53x71)", 37, 53, 71, 80, 61, true, 0},
        {"matmul odd nobias+acc (5x7x3)", 5, 7, 3, 3, 9, false, EB_MATMUL_ACCUMULATE},
        {"matmul odd gelu nobias (33x65x17)", 33, 65, 17, 17, 65, false, EB_MATMUL_GELU_TANH},
    };
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        const mm_case *c = &cases[ci];
        if (!case_selected(c->name))
            continue;
        float *x = rand_floats(c->M * c->ldx, 11 + ci, 1.0f);
        float *w = rand_floats(c->N * c->K, 23 + ci, 0.05f);
        float *b = rand_floats(c->N, 37 + ci, 0.1f);
        float *y0 = NULL;
        if (c->flags & EB_MATMUL_ACCUMULATE) {
            y0 = rand_floats(c->M * c->ldy, 41 + ci, 1.0f);
            // the row gaps keep the sentinel so overwrites show
            uint32_t sent = SENTINEL;
            for (int64_t r = 0; r < c->M; r++)
                for (int64_t k = c->N; k < c->ldy; k++)
                    memcpy(&y0[r * c->ldy + k], &sent, 4);
        }
        float *ref = malloc((size_t)(c->M * c->ldy) * sizeof(float));
        float *got = malloc((size_t)(c->M * c->ldy) * sizeof(float));
        assert_non_null(ref);
        assert_non_null(got);
        size_t act = (size_t)(c->M * (c->ldx + c->ldy) + 4 * GUARD) * 4 + 4 * EB_OPS_ALIGN;
        size_t wts = (size_t)(c->N * c->K + c->N) * 4 + 4 * EB_OPS_ALIGN;
        side cpu;
        side_open(&cpu, g_cpu, act, wts);
        run_matmul_on(&cpu, c, x, w, b, y0, ref);
        side_close(&cpu);
        for (int p = 0; p < N_PREC; p++) {
            if (!g_cuda[p])
                continue;
            side gpu;
            side_open(&gpu, g_cuda[p], act, wts);
            run_matmul_on(&gpu, c, x, w, b, y0, got);
            side_close(&gpu);
            tol t = p == 0 ? (tol){1e-5, 1e-4} : p == 1 ? (tol){5e-3, 3e-2} : (tol){1e-2, 6e-2};
            compare(c->name, prec_names[p], got, ref, c->M, c->N, c->ldy, t, true);
        }
        free(x), free(w), free(b), free(y0), free(ref), free(got);
    }
}

/* ---- patch_embed ------------------------------------------------------------------------------ */

typedef struct pe_case {
    const char *name;
    int64_t B, Cin, Himg, Wimg, P, C;
} pe_case;

typedef struct pe_run {
    float *out, *pix;
    eb_tensor w, b, pos;
    pe_case c;
} pe_run;

static eb_status pe_thunk(side *s, void *arg)
{
    pe_run *r = arg;
    return s->be->iface.patch_embed(s->be, r->out, r->pix, &r->w, &r->b, &r->pos, r->c.B,
                                    r->c.Cin, r->c.Himg, r->c.Wimg, r->c.P);
}

static void test_patch_embed(void **state)
{
    (void)state;
    static const pe_case cases[] = {
        {"patch_embed tiny (2x3x64x64 P16 C64)", 2, 3, 64, 64, 16, 64},
        {"patch_embed base (2x3x224x224 P16 C768)", 2, 3, 224, 224, 16, 768},
        {"patch_embed so400m (1x3x384x384 P14 C1152)", 1, 3, 384, 384, 14, 1152},
        {"patch_embed odd (3x3x40x24 P8 C20)", 3, 3, 40, 24, 8, 20},
    };
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        const pe_case *c = &cases[ci];
        if (!case_selected(c->name))
            continue;
        int64_t K = c->Cin * c->P * c->P, T = (c->Himg / c->P) * (c->Wimg / c->P);
        int64_t npix = c->B * c->Cin * c->Himg * c->Wimg, nout = c->B * T * c->C;
        float *pix = rand_floats(npix, 101 + ci, 1.0f);
        float *w = rand_floats(c->C * K, 103 + ci, 0.05f);
        float *b = rand_floats(c->C, 107 + ci, 0.1f);
        float *pos = rand_floats(T * c->C, 109 + ci, 0.1f);
        float *ref = malloc((size_t)nout * 4), *got = malloc((size_t)nout * 4);
        assert_non_null(ref);
        assert_non_null(got);
        size_t act = (size_t)(npix + nout + 4 * GUARD) * 4 + 4 * EB_OPS_ALIGN;
        size_t wts = (size_t)(c->C * K + c->C + T * c->C) * 4 + 8 * EB_OPS_ALIGN;
        for (int p = -1; p < N_PREC; p++) {
            if (p >= 0 && !g_cuda[p])
                continue;
            side s;
            side_open(&s, p < 0 ? g_cpu : g_cuda[p], act, wts);
            int64_t ws[2] = {c->C, K}, bs[1] = {c->C}, ps[2] = {T, c->C};
            pe_run r = {.c = *c};
            r.w = side_weight(&s, EB_WEIGHT_MATRIX, 2, ws, w);
            r.b = side_weight(&s, EB_WEIGHT_VECTOR, 1, bs, b);
            r.pos = side_weight(&s, EB_WEIGHT_TABLE, 2, ps, pos);
            r.pix = side_region(&s, npix, pix);
            r.out = side_region(&s, nout, NULL);
            assert_int_equal(pe_thunk(&s, &r), EB_OK);
            assert_int_equal(s.be->iface.synchronize(s.be), EB_OK);
            side_fetch(&s, r.out, nout, p < 0 ? ref : got, c->name);
            if (p >= 0) {
                tol t = p == 0 ? (tol){1e-5, 1e-4} : p == 1 ? (tol){5e-3, 3e-2} : (tol){1e-2, 6e-2};
                compare(c->name, prec_names[p], got, ref, nout / c->C, c->C, c->C, t, false);
                perf(c->name, prec_names[p], &s, pe_thunk, &r, 4.0 * (double)(npix + nout),
                     2.0 * (double)(c->B * T) * c->C * K);
            }
            side_close(&s);
        }
        free(pix), free(w), free(b), free(pos), free(ref), free(got);
    }
}

/* ---- row-wise and elementwise ops (fp32 in every precision: compared once) -------------------- */

/* The CUDA backend used for fp32-only ops: the first one created. */
static eb_backend *cuda_any(void)
{
    for (int p = 0; p < N_PREC; p++)
        if (g_cuda[p])
            return g_cuda[p];
    return NULL;
}

typedef struct ln_run {
    float *y, *x, *res;
    eb_tensor g, b;
    int64_t rows, C;
    bool shift;
} ln_run;

static eb_status ln_thunk(side *s, void *arg)
{
    ln_run *r = arg;
    // perf: without the residual (x stays the same across repetitions)
    return s->be->iface.layernorm(s->be, r->y, r->x, NULL, &r->g, r->shift ? &r->b : NULL,
                                  r->rows, r->C, 1e-6f);
}

static void test_layernorm(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int64_t rows, C;
        bool residual, shift;
    } cases[] = {
        {"layernorm tiny (32x64)", 32, 64, false, true},
        {"layernorm base (392x768) +residual", 392, 768, true, true},
        {"layernorm so400m (729x1152)", 729, 1152, false, true},
        {"layernorm odd (37x100) noshift+res", 37, 100, true, false},
        {"layernorm odd (3x5)", 3, 5, false, true},
    };
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        int64_t rows = cases[ci].rows, C = cases[ci].C, n = rows * C;
        float *x = rand_floats(n, 201 + ci, 2.0f), *res = rand_floats(n, 203 + ci, 1.0f);
        for (int64_t i = 0; i < n; i++)
            x[i] += 0.5f; // a non-zero mean, as in real residual streams
        float *g = rand_floats(C, 205 + ci, 1.0f), *b = rand_floats(C, 207 + ci, 0.5f);
        float *ref_y = malloc((size_t)n * 4), *ref_x = malloc((size_t)n * 4);
        float *got_y = malloc((size_t)n * 4), *got_x = malloc((size_t)n * 4);
        for (int p = 0; p < 2; p++) {
            side s;
            side_open(&s, p == 0 ? g_cpu : cuda_any(), (size_t)(3 * n + 6 * GUARD) * 4 + 8 * 256,
                      (size_t)(2 * C) * 4 + 4 * 256);
            int64_t shape[1] = {C};
            ln_run r = {.rows = rows, .C = C, .shift = cases[ci].shift};
            r.g = side_weight(&s, EB_WEIGHT_VECTOR, 1, shape, g);
            r.b = side_weight(&s, EB_WEIGHT_VECTOR, 1, shape, b);
            r.x = side_region(&s, n, x);
            r.res = side_region(&s, n, res);
            r.y = side_region(&s, n, NULL);
            assert_int_equal(s.be->iface.layernorm(s.be, r.y, r.x,
                                                   cases[ci].residual ? r.res : NULL, &r.g,
                                                   cases[ci].shift ? &r.b : NULL, rows, C, 1e-6f),
                             EB_OK);
            assert_int_equal(s.be->iface.synchronize(s.be), EB_OK);
            side_fetch(&s, r.y, n, p == 0 ? ref_y : got_y, cases[ci].name);
            side_fetch(&s, r.x, n, p == 0 ? ref_x : got_x, cases[ci].name);
            if (p == 1)
                perf(cases[ci].name, "", &s, ln_thunk, &r, 4.0 * (double)(2 * n), 0);
            side_close(&s);
        }
        compare(cases[ci].name, "fp32", got_y, ref_y, rows, C, C, (tol){1e-5, 1e-4}, false);
        if (cases[ci].residual)
            compare("  (x += residual)", "fp32", got_x, ref_x, rows, C, C, (tol){1e-6, 1e-5},
                    false);
        free(x), free(res), free(g), free(b), free(ref_y), free(ref_x), free(got_y), free(got_x);
    }
}

static void test_rmsnorm(void **state)
{
    (void)state;
    // Qwen3-style per-head norm: rows = tokens*heads, C = head_dim, ld = head_dim; and strided.
    static const struct {
        const char *name;
        int64_t rows, C, ld;
        bool residual;
    } cases[] = {
        {"rmsnorm (64x1024)", 64, 1024, 1024, true},
        {"rmsnorm per-head (512x128)", 512, 128, 128, false},
        {"rmsnorm strided (17x30 ld 33)", 17, 30, 33, false},
    };
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        int64_t rows = cases[ci].rows, C = cases[ci].C, ld = cases[ci].ld, n = rows * ld;
        float *x = rand_floats(n, 301 + ci, 2.0f), *res = rand_floats(n, 303 + ci, 1.0f);
        float *g = rand_floats(C, 305 + ci, 1.0f);
        float *ref = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
        for (int p = 0; p < 2; p++) {
            side s;
            side_open(&s, p == 0 ? g_cpu : cuda_any(), (size_t)(3 * n + 6 * GUARD) * 4 + 8 * 256,
                      (size_t)C * 4 + 4 * 256);
            int64_t shape[1] = {C};
            eb_tensor gt = side_weight(&s, EB_WEIGHT_VECTOR, 1, shape, g);
            float *dx = side_region(&s, n, x), *dr = side_region(&s, n, res);
            float *dy = side_region(&s, n, x); // gaps keep x's values on both sides
            assert_int_equal(s.be->iface.rmsnorm(s.be, dy, dx, cases[ci].residual ? dr : NULL,
                                                 &gt, rows, C, ld, 1e-6f),
                             EB_OK);
            assert_int_equal(s.be->iface.synchronize(s.be), EB_OK);
            side_fetch(&s, dy, n, p == 0 ? ref : got, cases[ci].name);
            side_close(&s);
        }
        compare(cases[ci].name, "fp32", got, ref, rows, C, ld, (tol){1e-5, 1e-4}, false);
        free(x), free(res), free(g), free(ref), free(got);
    }
}

typedef struct ew_run {
    float *y, *a, *b;
    int64_t n;
} ew_run;

static eb_status gelu_thunk(side *s, void *arg)
{
    ew_run *r = arg;
    return s->be->iface.gelu_tanh(s->be, r->y, r->a, r->n);
}

static eb_status add_thunk(side *s, void *arg)
{
    ew_run *r = arg;
    return s->be->iface.add(s->be, r->y, r->a, r->b, r->n);
}

static void test_elementwise(void **state)
{
    (void)state;
    static const int64_t sizes[] = {392 * 3072, 729 * 4304, 1001, 1};
    for (size_t ci = 0; ci < sizeof(sizes) / sizeof(sizes[0]); ci++) {
        int64_t n = sizes[ci];
        float *a = rand_floats(n, 401 + ci, 6.0f), *b = rand_floats(n, 403 + ci, 3.0f);
        float *ref_g = malloc((size_t)n * 4), *got_g = malloc((size_t)n * 4);
        float *ref_a = malloc((size_t)n * 4), *got_a = malloc((size_t)n * 4);
        char name_g[64], name_a[64];
        snprintf(name_g, sizeof(name_g), "gelu_tanh (n=%lld)", (long long)n);
        snprintf(name_a, sizeof(name_a), "add (n=%lld)", (long long)n);
        for (int p = 0; p < 2; p++) {
            side s;
            side_open(&s, p == 0 ? g_cpu : cuda_any(), (size_t)(4 * n + 8 * GUARD) * 4 + 8 * 256,
                      0);
            ew_run r = {.n = n};
            r.a = side_region(&s, n, a);
            r.b = side_region(&s, n, b);
            r.y = side_region(&s, n, NULL);
            float *y2 = side_region(&s, n, NULL);
            assert_int_equal(gelu_thunk(&s, &r), EB_OK);
            ew_run r2 = r;
            r2.y = y2;
            assert_int_equal(add_thunk(&s, &r2), EB_OK);
            assert_int_equal(s.be->iface.synchronize(s.be), EB_OK);
            side_fetch(&s, r.y, n, p == 0 ? ref_g : got_g, name_g);
            side_fetch(&s, y2, n, p == 0 ? ref_a : got_a, name_a);
            if (p == 1) {
                perf(name_g, "", &s, gelu_thunk, &r, 8.0 * (double)n, 0);
                perf(name_a, "", &s, add_thunk, &r2, 12.0 * (double)n, 0);
            }
            side_close(&s);
        }
        compare(name_g, "fp32", got_g, ref_g, 1, n, n, (tol){1e-6, 1e-5}, false);
        compare(name_a, "fp32", got_a, ref_a, 1, n, n, (tol){1e-6, 1e-5}, false);
        free(a), free(b), free(ref_g), free(got_g), free(ref_a), free(got_a);
    }
}

static void test_silu_mul(void **state)
{
    (void)state;
    int64_t rows = 33, F = 300, ld = 600, n_in = rows * ld, n = rows * F;
    float *in = rand_floats(n_in, 501, 4.0f);
    float *ref = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
    for (int p = 0; p < 2; p++) {
        side s;
        side_open(&s, p == 0 ? g_cpu : cuda_any(), (size_t)(n_in + n + 4 * GUARD) * 4 + 8 * 256, 0);
        float *din = side_region(&s, n_in, in), *dy = side_region(&s, n, NULL);
        assert_int_equal(s.be->iface.silu_mul(s.be, dy, din, din + F, rows, F, ld), EB_OK);
        assert_int_equal(s.be->iface.synchronize(s.be), EB_OK);
        side_fetch(&s, dy, n, p == 0 ? ref : got, "silu_mul");
        side_close(&s);
    }
    compare("silu_mul (33x300, fused 600)", "fp32", got, ref, rows, F, F, (tol){1e-6, 1e-5},
            false);
    free(in), free(ref), free(got);
}

typedef struct sm_run {
    float *x;
    int64_t rows, n;
} sm_run;

static eb_status sm_thunk(side *s, void *arg)
{
    sm_run *r = arg;
    return s->be->iface.softmax(s->be, r->x, r->rows, r->n, 0.125f);
}

static void test_softmax(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int64_t rows, n;
    } cases[] = {
        {"softmax base scores (2352x196)", 12 * 196, 196},
        {"softmax so400m (16x729)", 16, 729},
        {"softmax odd (7x1000)", 7, 1000},
        {"softmax one (5x1)", 5, 1},
    };
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        int64_t n = cases[ci].rows * cases[ci].n;
        float *x = rand_floats(n, 601 + ci, 40.0f);
        float *ref = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
        for (int p = 0; p < 2; p++) {
            side s;
            side_open(&s, p == 0 ? g_cpu : cuda_any(), (size_t)(n + 2 * GUARD) * 4 + 4 * 256, 0);
            sm_run r = {.rows = cases[ci].rows, .n = cases[ci].n};
            r.x = side_region(&s, n, x);
            assert_int_equal(sm_thunk(&s, &r), EB_OK);
            assert_int_equal(s.be->iface.synchronize(s.be), EB_OK);
            side_fetch(&s, r.x, n, p == 0 ? ref : got, cases[ci].name);
            if (p == 1)
                perf(cases[ci].name, "", &s, sm_thunk, &r, 8.0 * (double)n, 0);
            side_close(&s);
        }
        compare(cases[ci].name, "fp32", got, ref, cases[ci].rows, cases[ci].n, cases[ci].n,
                (tol){1e-5, 1e-4}, false);
        free(x), free(ref), free(got);
    }
}

/* ---- attention -------------------------------------------------------------------------------- */

typedef struct at_case {
    const char *name;
    int64_t B, Tq, Tk, H, Hkv, D;
    bool packed;   /* q, k, v inside one (B, T, 3C) buffer (SigLIP's fused projection) */
    bool shared_q; /* q_batch_stride 0 (pooling head) */
    unsigned flags;
    bool lens;
} at_case;

typedef struct at_run {
    float *out, *q, *k, *v;
    eb_attn_desc d;
} at_run;

static eb_status at_thunk(side *s, void *arg)
{
    at_run *r = arg;
    return s->be->iface.attention(s->be, r->out, r->q, r->k, r->v, &r->d);
}

static void test_attention(void **state)
{
    (void)state;
    static const at_case cases[] = {
        {"attention tiny (2x16, H4 D16)", 2, 16, 16, 4, 4, 16, true, false, 0, false},
        {"attention base (2x196, H12 D64)", 2, 196, 196, 12, 12, 64, true, false, 0, false},
        {"attention so400m (1x729, H16 D72)", 1, 729, 729, 16, 16, 72, true, false, 0, false},
        {"attention D128 (1x1024, H2)", 1, 1024, 1024, 2, 2, 128, false, false, 0, false},
        {"attention pool head (3x1x196, H12 D64)", 3, 1, 196, 12, 12, 64, false, true, 0, false},
        {"attention pool so400m (2x1x729 D72)", 2, 1, 729, 16, 16, 72, false, true, 0, false},
        {"attention odd (3x37, H3 D40)", 3, 37, 37, 3, 3, 40, true, false, 0, false},
        {"attention causal GQA (2x50, H4/2 D64)", 2, 50, 50, 4, 2, 64, false, false,
         EB_ATTN_CAUSAL, false},
        {"attention kv_lens (3x33, H2 D32)", 3, 33, 33, 2, 2, 32, false, false, 0, true},
        {"attention causal+lens (2x40, H2 D128)", 2, 40, 40, 2, 2, 128, false, false,
         EB_ATTN_CAUSAL, true},
    };
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        const at_case *c = &cases[ci];
        if (!case_selected(c->name))
            continue;
        int64_t C = c->H * c->D, Ckv = c->Hkv * c->D;
        eb_attn_desc d = {.B = c->B, .Tq = c->Tq, .Tk = c->Tk, .H = c->H, .Hkv = c->Hkv,
                          .D = c->D, .scale = 1.0f / sqrtf((float)c->D), .flags = c->flags};
        int32_t lens[8] = {0};
        if (c->lens) {
            for (int64_t b = 0; b < c->B; b++)
                lens[b] = (int32_t)(c->Tk - 7 * b - 1 > 1 ? c->Tk - 7 * b - 1 : 1);
            d.kv_lens = lens;
        }
        int64_t nq, nk, nv, nout = c->B * c->Tq * C;
        if (c->packed) {
            d.q_token_stride = d.k_token_stride = d.v_token_stride = 3 * C;
            d.q_batch_stride = d.k_batch_stride = d.v_batch_stride = c->Tq * 3 * C;
            nq = c->B * c->Tq * 3 * C;
            nk = nv = 0;
        } else {
            d.q_token_stride = C;
            d.q_batch_stride = c->shared_q ? 0 : c->Tq * C;
            d.k_token_stride = d.v_token_stride = Ckv;
            d.k_batch_stride = d.v_batch_stride = c->Tk * Ckv;
            nq = (c->shared_q ? 1 : c->B) * c->Tq * C;
            nk = nv = c->B * c->Tk * Ckv;
        }
        d.out_token_stride = C;
        d.out_batch_stride = c->Tq * C;
        float *q = rand_floats(nq, 701 + ci, 2.0f);
        float *k = nk ? rand_floats(nk, 703 + ci, 2.0f) : NULL;
        float *v = nv ? rand_floats(nv, 705 + ci, 1.0f) : NULL;
        float *ref = malloc((size_t)nout * 4), *got = malloc((size_t)nout * 4);
        for (int p = 0; p < 2; p++) {
            side s;
            side_open(&s, p == 0 ? g_cpu : cuda_any(),
                      (size_t)(nq + nk + nv + nout + 8 * GUARD) * 4 + 8 * 256, 0);
            at_run r = {.d = d};
            r.q = side_region(&s, nq, q);
            if (c->packed) {
                r.k = r.q + C;
                r.v = r.q + 2 * C;
            } else {
                r.k = side_region(&s, nk, k);
                r.v = side_region(&s, nv, v);
            }
            r.out = side_region(&s, nout, NULL);
            assert_int_equal(at_thunk(&s, &r), EB_OK);
            assert_int_equal(s.be->iface.synchronize(s.be), EB_OK);
            side_fetch(&s, r.out, nout, p == 0 ? ref : got, c->name);
            if (p == 1 && !c->lens) {
                // flops: 4·B·H·Tq·Tk·D (q·kᵀ and p·v); bytes: q, k, v read once, out written
                double fl = 4.0 * (double)(c->B * c->H * c->Tq * c->Tk * c->D);
                if (c->flags & EB_ATTN_CAUSAL)
                    fl *= 0.5;
                perf(c->name, "", &s, at_thunk, &r, 0, fl);
            }
            side_close(&s);
        }
        compare(c->name, "fp32", got, ref, c->B * c->Tq, C, C, (tol){1e-5, 1e-4}, false);
        free(q), free(k), free(v), free(ref), free(got);
    }
}

/* ---- rope, l2norm, copies --------------------------------------------------------------------- */

static void test_rope(void **state)
{
    (void)state;
    int64_t B = 2, T = 300, H = 4, D = 128, ts = 3 * H * D, bs = T * ts, n = B * bs;
    float *x = rand_floats(n, 801, 1.0f);
    float *ref = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
    for (int p = 0; p < 2; p++) {
        side s;
        side_open(&s, p == 0 ? g_cpu : cuda_any(), (size_t)(n + 2 * GUARD) * 4 + 4 * 256, 0);
        float *dx = side_region(&s, n, x);
        assert_int_equal(s.be->iface.rope(s.be, dx, B, T, H, D, bs, ts, 1000000.0f), EB_OK);
        assert_int_equal(s.be->iface.synchronize(s.be), EB_OK);
        side_fetch(&s, dx, n, p == 0 ? ref : got, "rope");
        side_close(&s);
    }
    compare("rope (2x300, H4 D128, in a fused row)", "fp32", got, ref, 1, n, n,
            (tol){1e-5, 1e-4}, false);
    free(x), free(ref), free(got);
}

static void test_l2norm(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int64_t rows, C, ldx;
    } cases[] = {
        {"l2norm base (256x768)", 256, 768, 768},
        {"l2norm so400m strided (7x1152 ld 2000)", 7, 1152, 2000},
        {"l2norm odd (3x5)", 3, 5, 5},
    };
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        int64_t rows = cases[ci].rows, C = cases[ci].C, ld = cases[ci].ldx;
        int64_t nx = rows * ld, ny = rows * C;
        float *x = rand_floats(nx, 901 + ci, 3.0f);
        float *ref = malloc((size_t)ny * 4), *got = malloc((size_t)ny * 4);
        for (int p = 0; p < 2; p++) {
            side s;
            side_open(&s, p == 0 ? g_cpu : cuda_any(), (size_t)(nx + ny + 4 * GUARD) * 4 + 8 * 256,
                      0);
            float *dx = side_region(&s, nx, x), *dy = side_region(&s, ny, NULL);
            assert_int_equal(s.be->iface.l2norm(s.be, dy, dx, rows, C, ld, 1e-12f), EB_OK);
            assert_int_equal(s.be->iface.synchronize(s.be), EB_OK);
            side_fetch(&s, dy, ny, p == 0 ? ref : got, cases[ci].name);
            side_close(&s);
        }
        compare(cases[ci].name, "fp32", got, ref, rows, C, C, (tol){1e-6, 1e-5}, false);
        free(x), free(ref), free(got);
    }
}

static void test_copies(void **state)
{
    (void)state;
    // copy_rows: token 0 of every item (ld_src = T*C) into a strided destination.
    int64_t B = 5, T = 196, C = 768, ld_dst = 800, nsrc = B * T * C, ndst = B * ld_dst;
    float *src = rand_floats(nsrc, 1001, 1.0f);
    float *ref = malloc((size_t)ndst * 4), *got = malloc((size_t)ndst * 4);
    // get_rows from a (V, C) table and pool_last
    int64_t V = 50, n = 9;
    int32_t ids[9] = {0, 49, 3, 3, 17, 1, 48, 25, 0};
    int32_t lens[5] = {1, 196, 100, 2, 57};
    float *table = rand_floats(V * C, 1003, 1.0f);
    float *ref_g = malloc((size_t)(n * C) * 4), *got_g = malloc((size_t)(n * C) * 4);
    float *ref_p = malloc((size_t)(B * C) * 4), *got_p = malloc((size_t)(B * C) * 4);
    for (int p = 0; p < 2; p++) {
        side s;
        side_open(&s, p == 0 ? g_cpu : cuda_any(),
                  (size_t)(nsrc + ndst + n * C + B * C + 16 + 10 * GUARD) * 4 + 16 * 256,
                  (size_t)(V * C) * 4 + 4 * 256);
        int64_t shape[2] = {V, C};
        eb_tensor tt = side_weight(&s, EB_WEIGHT_TABLE, 2, shape, table);
        float *dsrc = side_region(&s, nsrc, src), *ddst = side_region(&s, ndst, NULL);
        float *dg = side_region(&s, n * C, NULL), *dp = side_region(&s, B * C, NULL);
        int32_t *dids = (int32_t *)eb_ops_act_carve(s.be, s.act, &s.act_off, 16);
        assert_non_null(dids);
        assert_int_equal(s.be->iface.upload(s.be, dids, ids, sizeof(ids)), EB_OK);
        assert_int_equal(s.be->iface.copy_rows(s.be, ddst, ld_dst, dsrc, T * C, B, C), EB_OK);
        assert_int_equal(s.be->iface.get_rows(s.be, dg, &tt, dids, n), EB_OK);
        assert_int_equal(s.be->iface.pool_last(s.be, dp, dsrc, lens, B, T, C), EB_OK);
        assert_int_equal(s.be->iface.synchronize(s.be), EB_OK);
        side_fetch(&s, ddst, ndst, p == 0 ? ref : got, "copy_rows");
        side_fetch(&s, dg, n * C, p == 0 ? ref_g : got_g, "get_rows");
        side_fetch(&s, dp, B * C, p == 0 ? ref_p : got_p, "pool_last");
        side_close(&s);
    }
    compare("copy_rows (5 tokens-0, ld 800)", "-", got, ref, B, C, ld_dst, (tol){0, 0}, true);
    compare("get_rows (9 of 50x768)", "-", got_g, ref_g, n, C, C, (tol){0, 0}, false);
    compare("pool_last (5x196x768)", "-", got_p, ref_p, B, C, C, (tol){0, 0}, false);
    free(src), free(ref), free(got), free(table), free(ref_g), free(got_g), free(ref_p),
        free(got_p);
}

/* ---- resize (extension entry point) ----------------------------------------------------------- */

static void test_resize(void **state)
{
    (void)state;
    char err[512];
    eb_cuda_ext_resize_fn resize;
    void *sym = eb_cuda_loader_symbol(EB_CUDA_EXT_RESIZE, err, sizeof(err));
    assert_non_null(sym);
    memcpy(&resize, &sym, sizeof(resize));
    static const struct {
        int in_w, in_h, out;
    } cases[] = {
        {640, 480, 224}, {1000, 750, 384}, {100, 37, 224}, {224, 224, 224},
        {3001, 1999, 224}, {1, 300, 224}, {225, 223, 224},
        {300, 1500, 224}, {20, 70, 32}, // Pillow 13 runs the vertical pass first here
    };
    const float mean[3] = {0.5f, 0.5f, 0.5f}, std_[3] = {0.5f, 0.5f, 0.5f};
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        int iw = cases[ci].in_w, ih = cases[ci].in_h, o = cases[ci].out;
        size_t nsrc = (size_t)iw * ih * 3, nout = (size_t)o * o * 3;
        uint8_t *src = malloc(nsrc);
        assert_non_null(src);
        uint64_t s = 1101 + ci;
        // smooth gradients plus noise: both the filter's smooth and sharp responses matter
        for (size_t i = 0; i < nsrc; i++)
            src[i] = (uint8_t)((i * 7 / 3 + (rng_next(&s) & 63)) & 255);
        uint8_t *ref = malloc(nout), *got = malloc(nout);
        float *ref_f = malloc(nout * 4), *got_f = malloc(nout * 4);
        assert_int_equal(eb_resize_bicubic_rgb8(src, iw, ih, ref, o, o), EB_OK);
        eb_preprocess_normalize_rgb8(ref, o, o, EB_PREPROCESS_RESCALE_DEFAULT, mean, std_, ref_f);
        int kx = eb_resize_ksize(iw, o), ky = eb_resize_ksize(ih, o);
        int32_t *bx = malloc((size_t)o * 8), *by = malloc((size_t)o * 8);
        int32_t *tx = malloc((size_t)o * kx * 4), *ty = malloc((size_t)o * ky * 4);
        assert_int_equal(eb_resize_coeffs(iw, o, kx, bx, tx), EB_OK);
        assert_int_equal(eb_resize_coeffs(ih, o, ky, by, ty), EB_OK);
        assert_int_equal(resize(cuda_any(), src, iw, ih, o, o, bx, tx, kx, by, ty, ky, mean, std_,
                                got, got_f),
                         EB_OK);
        size_t diff = 0, diff_f = 0;
        for (size_t i = 0; i < nout; i++) {
            diff += got[i] != ref[i];
            diff_f += memcmp(&got_f[i], &ref_f[i], 4) != 0;
        }
        printf("  resize %dx%d -> %d: %zu uint8 and %zu float values differ  %s\n", iw, ih, o,
               diff, diff_f, diff || diff_f ? "FAIL" : "ok");
        assert_int_equal(diff, 0);
        assert_int_equal(diff_f, 0);
        free(src), free(ref), free(got), free(ref_f), free(got_f), free(bx), free(by), free(tx),
            free(ty);
    }
}

/* ---- main ------------------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr, "usage: test_ops [-o OP] [-p fp32|tf32|bf16] [-c CASE-SUBSTRING] [--perf]\n"
                    "  OP: matmul patch_embed layernorm rmsnorm elementwise silu_mul softmax "
                    "attention rope l2norm copies resize\n");
}

int main(int argc, char **argv)
{
    const char *only = NULL, *only_prec = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-o") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "-p") == 0 && i + 1 < argc)
            only_prec = argv[++i];
        else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
            g_case = argv[++i];
        else if (strcmp(argv[i], "--perf") == 0)
            g_perf = true;
        else {
            usage();
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0); // progress shows even if a step is killed by a timeout
    char err[1024];
    char libpath[4096];
    eb_backend_params params = {.n_threads = 0, .device_index = 0,
                                .cuda_library = eb_cuda_loader_path(libpath, sizeof(libpath))};
    int created = 0;
    for (int p = 0; p < N_PREC; p++) {
        if (only_prec && strcmp(only_prec, prec_names[p]) != 0)
            continue;
        setenv("EB_CUDA_PRECISION", prec_names[p], 1);
        g_cuda[p] = eb_backend_create("cuda", &params, err, sizeof(err));
        if (!g_cuda[p]) {
            printf("test_ops: skipped: no CUDA backend: %s\n", err);
            return 77;
        }
        created++;
    }
    unsetenv("EB_CUDA_PRECISION");
    if (!created) {
        usage();
        return 2;
    }
    g_cpu = eb_backend_create("cpu", &params, err, sizeof(err));
    if (!g_cpu) {
        printf("test_ops: cannot create the CPU backend: %s\n", err);
        return 1;
    }
    // Scratch for the largest case of every op, as a model would reserve at load: M up to
    // 4 x 1024 rows, K up to so400m's MLP width, patch dim up to 3*16*16.
    eb_ops_limits lim = {.max_batch = 4, .max_tokens = 1024, .max_heads = 16,
                         .max_head_dim = 128, .max_hidden = 4304, .max_patch_dim = 768};
    if (g_cpu->iface.reserve(g_cpu, &lim) != EB_OK) {
        printf("test_ops: CPU reserve failed\n");
        return 1;
    }
    for (int p = 0; p < N_PREC; p++)
        if (g_cuda[p] && g_cuda[p]->iface.reserve(g_cuda[p], &lim) != EB_OK) {
            printf("test_ops: CUDA reserve failed (%s)\n", prec_names[p]);
            return 1;
        }
    printf("test_ops: cpu = %s; cuda = %s\n", g_cpu->device, cuda_any()->device);

    static const struct CMUnitTest all[] = {
        cmocka_unit_test(test_matmul),    cmocka_unit_test(test_patch_embed),
        cmocka_unit_test(test_layernorm), cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_elementwise), cmocka_unit_test(test_silu_mul),
        cmocka_unit_test(test_softmax),   cmocka_unit_test(test_attention),
        cmocka_unit_test(test_rope),      cmocka_unit_test(test_l2norm),
        cmocka_unit_test(test_copies),    cmocka_unit_test(test_resize),
    };
    struct CMUnitTest chosen[sizeof(all) / sizeof(all[0])];
    size_t n = 0;
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        // names are "test_<op>"
        if (!only || strcmp(all[i].name + 5, only) == 0)
            chosen[n++] = all[i];
    }
    if (n == 0) {
        usage();
        return 2;
    }
    int failed = _cmocka_run_group_tests("test_ops", chosen, n, NULL, NULL);
    for (int p = 0; p < N_PREC; p++)
        eb_backend_destroy(&g_cuda[p]);
    eb_backend_destroy(&g_cpu);
    return failed ? 1 : 0;
}
