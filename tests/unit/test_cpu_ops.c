/* test_cpu_ops — every op of the CPU backend against a naive double-precision loop on random
 * inputs (fixed seeds), at small odd shapes and at shapes large enough to be split over threads.
 * Also the dtype conversions, the buffer layout helpers and the thread pool. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eb_cpu_ops.h"
#include "eb_cpu_pool.h"
#include "eb_ops.h"

static eb_backend *g_be;
static uint64_t g_rng = 12345;

static int setup(void **state)
{
    (void)state;
    char err[256];
    eb_backend_params p = {.n_threads = 3}; // odd split on purpose
    g_be = eb_backend_create("cpu", &p, err, sizeof(err));
    return g_be ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    eb_backend_destroy(&g_be);
    assert_null(g_be);
    return 0;
}

static float frand(void) // uniform [-1, 1)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rng >> 40) / (double)(1 << 23) - 1.0);
}

static float *rand_vec(size_t n, float scale)
{
    float *v = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++)
        v[i] = frand() * scale;
    return v;
}

typedef struct weight {
    eb_buffer *buf;
    eb_tensor t;
} weight;

static weight make_weight(const float *data, int ndim, const int64_t *shape, eb_weight_kind kind)
{
    weight w;
    size_t bytes = eb_ops_weight_bytes(g_be, EB_DTYPE_F32, kind, ndim, shape);
    w.buf = g_be->iface.buffer_alloc(g_be, bytes, EB_BUFFER_WEIGHTS);
    assert_non_null(w.buf);
    size_t off = 0;
    assert_int_equal(
        eb_ops_weight_place(g_be, &w.t, w.buf, &off, EB_DTYPE_F32, kind, ndim, shape), EB_OK);
    assert_int_equal(off, bytes);
    assert_int_equal(g_be->iface.weight_upload(g_be, &w.t, 0, data, EB_DTYPE_F32,
                                               eb_tensor_nelem(&w.t)),
                     EB_OK);
    return w;
}

static void free_weight(weight *w)
{
    g_be->iface.buffer_free(g_be, w->buf);
}

// |got - want| <= tol * (1 + |want|) for every element.
static void assert_close(const float *got, const double *want, size_t n, double tol,
                         const char *what)
{
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= tol * (1.0 + fabs(want[i]))))
            fail_msg("%s: element %zu is %.9g, want %.9g", what, i, (double)got[i], want[i]);
    }
}

static double gelu_ref(double x)
{
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

/* ---- matmul ------------------------------------------------------------------------------------ */

static void check_matmul(int64_t M, int64_t N, int64_t K, int64_t ldx, int64_t ldy, bool bias,
                         unsigned flags)
{
    float *x = rand_vec((size_t)(M * ldx), 1.0f);
    float *wd = rand_vec((size_t)(N * K), 0.2f);
    float *bd = rand_vec((size_t)N, 0.5f);
    float *y = rand_vec((size_t)(M * ldy), 1.0f);
    double *want = calloc((size_t)(M * ldy), sizeof(double));
    for (int64_t i = 0; i < M * ldy; i++)
        want[i] = y[i]; // untouched padding must stay as it was
    for (int64_t i = 0; i < M; i++)
        for (int64_t n = 0; n < N; n++) {
            double acc = bias ? bd[n] : 0.0;
            for (int64_t k = 0; k < K; k++)
                acc += (double)x[i * ldx + k] * wd[n * K + k];
            if (flags & EB_MATMUL_GELU_TANH)
                acc = gelu_ref(acc);
            if (flags & EB_MATMUL_ACCUMULATE)
                acc += y[i * ldy + n];
            want[i * ldy + n] = acc;
        }
    int64_t ws[2] = {N, K}, bs[1] = {N};
    weight w = make_weight(wd, 2, ws, EB_WEIGHT_MATRIX);
    weight b = make_weight(bd, 1, bs, EB_WEIGHT_VECTOR);
    assert_int_equal(
        g_be->iface.matmul(g_be, y, ldy, x, ldx, &w.t, bias ? &b.t : NULL, M, flags), EB_OK);
    char what[128];
    snprintf(what, sizeof(what), "matmul M=%lld N=%lld K=%lld flags=%u", (long long)M,
             (long long)N, (long long)K, flags);
    assert_close(y, want, (size_t)(M * ldy), 2e-5, what);
    free_weight(&w);
    free_weight(&b);
    free(x);
    free(wd);
    free(bd);
    free(y);
    free(want);
}

static void test_matmul(void **state)
{
    (void)state;
    check_matmul(1, 1, 1, 1, 1, false, 0);
    check_matmul(3, 5, 7, 7, 5, true, 0);
    check_matmul(5, 37, 19, 23, 40, true, EB_MATMUL_GELU_TANH);  // strided rows
    check_matmul(7, 33, 64, 64, 33, true, EB_MATMUL_ACCUMULATE);
    check_matmul(7, 33, 64, 64, 33, false, EB_MATMUL_ACCUMULATE);
    check_matmul(1, 300, 128, 128, 300, true, EB_MATMUL_GELU_TANH); // M = 1, threaded by column
    check_matmul(96, 200, 96, 96, 200, true, 0);                     // threaded
    check_matmul(96, 200, 96, 100, 210, true, EB_MATMUL_ACCUMULATE);
    check_matmul(70, 130, 90, 90, 130, false, EB_MATMUL_GELU_TANH);
    // Several K blocks (chains continued through y), several M blocks, a ragged last panel.
    check_matmul(400, 70, 1100, 1100, 70, true, EB_MATMUL_ACCUMULATE);
    check_matmul(203, 48, 1030, 1040, 50, true, EB_MATMUL_GELU_TANH);
    // GELU and accumulate together are not offered by the CPU backend; supports() says so.
    assert_false(g_be->iface.supports(g_be, EB_OP_MATMUL,
                                      EB_MATMUL_GELU_TANH | EB_MATMUL_ACCUMULATE));
    assert_true(g_be->iface.supports(g_be, EB_OP_MATMUL, EB_MATMUL_GELU_TANH));
    int64_t ws[2] = {4, 4};
    float wd[16] = {0};
    weight w = make_weight(wd, 2, ws, EB_WEIGHT_MATRIX);
    float x[16] = {0}, y[16];
    assert_int_equal(g_be->iface.matmul(g_be, y, 4, x, 4, &w.t, NULL, 4,
                                        EB_MATMUL_GELU_TANH | EB_MATMUL_ACCUMULATE),
                     EB_ERR_UNSUPPORTED);
    assert_int_equal(g_be->iface.matmul(g_be, y, 4, x, 3, &w.t, NULL, 4, 0), EB_ERR_INVALID);
    free_weight(&w);
}

/* The CPU backend may keep a weight in its GEMM's packed layout after the first matmul (AVX-512
 * CPUs). That must be invisible: a later partial upload, a row gather from the same tensor, a
 * freed and reused weights buffer and the batch composition must all behave as with a plain
 * (N, K) matrix. */
static void matmul_ref(double *want, const float *x, const float *wd, int64_t M, int64_t N,
                       int64_t K)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t n = 0; n < N; n++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += (double)x[i * K + k] * wd[n * K + k];
            want[i * N + n] = acc;
        }
}

static void test_packed_weights(void **state)
{
    (void)state;
    int64_t M = 37, N = 80, K = 96;
    float *x = rand_vec((size_t)(M * K), 1.0f);
    float *wd = rand_vec((size_t)(N * K), 0.2f);
    float *y = calloc((size_t)(M * N), sizeof(float));
    double *want = calloc((size_t)(M * N), sizeof(double));
    int64_t ws[2] = {N, K};
    weight w = make_weight(wd, 2, ws, EB_WEIGHT_MATRIX);
    assert_int_equal(g_be->iface.matmul(g_be, y, N, x, K, &w.t, NULL, M, 0), EB_OK);
    matmul_ref(want, x, wd, M, N, K);
    assert_close(y, want, (size_t)(M * N), 2e-5, "matmul before upload");

    // Batch invariance: each row alone gives bit-identical results to the same row in the batch.
    float row[80];
    for (int64_t i = 0; i < M; i += 12) {
        assert_int_equal(g_be->iface.matmul(g_be, row, N, x + i * K, K, &w.t, NULL, 1, 0), EB_OK);
        assert_memory_equal(row, y + i * N, (size_t)N * sizeof(float));
    }

    // Rows 10..19 of W replaced by a partial upload after the weight was used.
    float *fresh = rand_vec((size_t)(10 * K), 0.2f);
    memcpy(wd + 10 * K, fresh, (size_t)(10 * K) * sizeof(float));
    assert_int_equal(g_be->iface.weight_upload(g_be, &w.t, 10 * K, fresh, EB_DTYPE_F32, 10 * K),
                     EB_OK);
    assert_int_equal(g_be->iface.matmul(g_be, y, N, x, K, &w.t, NULL, M, 0), EB_OK);
    matmul_ref(want, x, wd, M, N, K);
    assert_close(y, want, (size_t)(M * N), 2e-5, "matmul after partial upload");

    // A gather from the same tensor (tied embeddings) sees plain rows.
    int32_t ids[3] = {79, 0, 15};
    float got[3 * 96];
    assert_int_equal(g_be->iface.get_rows(g_be, got, &w.t, ids, 3), EB_OK);
    for (int i = 0; i < 3; i++)
        assert_memory_equal(got + i * K, wd + ids[i] * K, (size_t)K * sizeof(float));
    assert_int_equal(g_be->iface.matmul(g_be, y, N, x, K, &w.t, NULL, M, 0), EB_OK);
    assert_close(y, want, (size_t)(M * N), 2e-5, "matmul after get_rows");

    // Free the buffer and place new data (usually at the same address, as mmap reuses the
    // range just released): nothing stale remains.
    float *wd2 = rand_vec((size_t)(N * K), 0.2f);
    free_weight(&w);
    weight w2 = make_weight(wd2, 2, ws, EB_WEIGHT_MATRIX);
    assert_int_equal(g_be->iface.matmul(g_be, y, N, x, K, &w2.t, NULL, M, 0), EB_OK);
    matmul_ref(want, x, wd2, M, N, K);
    assert_close(y, want, (size_t)(M * N), 2e-5, "matmul on a reused buffer");
    free_weight(&w2);
    free(x);
    free(wd);
    free(wd2);
    free(fresh);
    free(y);
    free(want);
}

/* ---- norms ------------------------------------------------------------------------------------- */

static void check_layernorm(int64_t rows, int64_t C, bool residual, bool shift)
{
    float *x = rand_vec((size_t)(rows * C), 2.0f);
    for (int64_t i = 0; i < rows * C; i++)
        x[i] += 3.0f; // an offset the mean must remove
    float *r = rand_vec((size_t)(rows * C), 1.0f);
    float *g = rand_vec((size_t)C, 1.0f), *b = rand_vec((size_t)C, 1.0f);
    float *y = calloc((size_t)(rows * C), sizeof(float));
    double *want = calloc((size_t)(rows * C), sizeof(double));
    double *want_x = calloc((size_t)(rows * C), sizeof(double));
    float eps = 1e-6f;
    for (int64_t i = 0; i < rows; i++) {
        double mean = 0, var = 0;
        for (int64_t j = 0; j < C; j++) {
            want_x[i * C + j] = (double)x[i * C + j] + (residual ? r[i * C + j] : 0.0f);
            mean += want_x[i * C + j];
        }
        mean /= (double)C;
        for (int64_t j = 0; j < C; j++)
            var += (want_x[i * C + j] - mean) * (want_x[i * C + j] - mean);
        var /= (double)C;
        for (int64_t j = 0; j < C; j++)
            want[i * C + j] = (want_x[i * C + j] - mean) / sqrt(var + eps) * g[j] +
                              (shift ? b[j] : 0.0);
    }
    int64_t cs[1] = {C};
    weight wg = make_weight(g, 1, cs, EB_WEIGHT_VECTOR), wb = make_weight(b, 1, cs, EB_WEIGHT_VECTOR);
    assert_int_equal(g_be->iface.layernorm(g_be, y, x, residual ? r : NULL, &wg.t,
                                           shift ? &wb.t : NULL, rows, C, eps),
                     EB_OK);
    assert_close(y, want, (size_t)(rows * C), 1e-5, "layernorm");
    if (residual)
        assert_close(x, want_x, (size_t)(rows * C), 1e-6, "layernorm residual stream");
    free_weight(&wg);
    free_weight(&wb);
    free(x);
    free(r);
    free(g);
    free(b);
    free(y);
    free(want);
    free(want_x);
}

static void test_layernorm(void **state)
{
    (void)state;
    check_layernorm(1, 1, false, true);
    check_layernorm(3, 17, false, true);
    check_layernorm(5, 64, true, true);
    check_layernorm(200, 768, false, true); // threaded
    check_layernorm(130, 257, true, false);
}

static void test_rmsnorm(void **state)
{
    (void)state;
    int64_t rows = 150, C = 128, ld = 136; // per-head norm: rows of head_dim inside wider rows
    float *x = rand_vec((size_t)(rows * ld), 2.0f);
    float *r = rand_vec((size_t)(rows * ld), 1.0f);
    float *g = rand_vec((size_t)C, 1.0f);
    float *y = calloc((size_t)(rows * ld), sizeof(float));
    double *want = calloc((size_t)(rows * ld), sizeof(double));
    for (int pass = 0; pass < 2; pass++) {
        bool residual = pass == 1;
        float *x0 = malloc((size_t)(rows * ld) * sizeof(float));
        memcpy(x0, x, (size_t)(rows * ld) * sizeof(float));
        for (int64_t i = 0; i < rows; i++) {
            double ss = 0;
            for (int64_t j = 0; j < C; j++) {
                double v = (double)x0[i * ld + j] + (residual ? r[i * ld + j] : 0.0f);
                ss += v * v;
            }
            double inv = 1.0 / sqrt(ss / (double)C + 1e-6);
            for (int64_t j = 0; j < C; j++)
                want[i * C + j] =
                    ((double)x0[i * ld + j] + (residual ? r[i * ld + j] : 0.0f)) * inv * g[j];
        }
        int64_t cs[1] = {C};
        weight wg = make_weight(g, 1, cs, EB_WEIGHT_VECTOR);
        assert_int_equal(g_be->iface.rmsnorm(g_be, y, x0, residual ? r : NULL, &wg.t, rows, C, ld,
                                             1e-6f),
                         EB_OK);
        for (int64_t i = 0; i < rows; i++)
            assert_close(y + i * ld, want + i * C, (size_t)C, 1e-5, "rmsnorm");
        // In place (Qwen3 q_norm/k_norm).
        if (!residual) {
            assert_int_equal(
                g_be->iface.rmsnorm(g_be, x0, x0, NULL, &wg.t, rows, C, ld, 1e-6f), EB_OK);
            for (int64_t i = 0; i < rows; i++)
                assert_close(x0 + i * ld, want + i * C, (size_t)C, 1e-5, "rmsnorm in place");
        }
        free_weight(&wg);
        free(x0);
    }
    free(x);
    free(r);
    free(g);
    free(y);
    free(want);
}

/* ---- elementwise --------------------------------------------------------------------------------- */

static void test_elementwise(void **state)
{
    (void)state;
    size_t n = 50001;
    float *x = rand_vec(n, 8.0f); // covers the saturated tails of tanh and exp
    float *b = rand_vec(n, 3.0f);
    float *y = calloc(n, sizeof(float));
    double *want = calloc(n, sizeof(double));
    for (size_t i = 0; i < n; i++)
        want[i] = gelu_ref(x[i]);
    assert_int_equal(g_be->iface.gelu_tanh(g_be, y, x, (int64_t)n), EB_OK);
    assert_close(y, want, n, 2e-6, "gelu_tanh");
    for (size_t i = 0; i < n; i++)
        want[i] = (double)x[i] + b[i];
    assert_int_equal(g_be->iface.add(g_be, y, x, b, (int64_t)n), EB_OK);
    assert_close(y, want, n, 1e-7, "add");
    // silu_mul on a fused (rows, 2F) gate|up projection
    int64_t rows = 77, F = 300;
    float *gu = rand_vec((size_t)(rows * 2 * F), 6.0f);
    float *sy = calloc((size_t)(rows * F), sizeof(float));
    double *swant = calloc((size_t)(rows * F), sizeof(double));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < F; j++) {
            double g = gu[r * 2 * F + j], u = gu[r * 2 * F + F + j];
            swant[r * F + j] = g / (1.0 + exp(-g)) * u;
        }
    assert_int_equal(g_be->iface.silu_mul(g_be, sy, gu, gu + F, rows, F, 2 * F), EB_OK);
    assert_close(sy, swant, (size_t)(rows * F), 2e-6, "silu_mul");
    free(gu);
    free(sy);
    free(swant);
    free(x);
    free(b);
    free(y);
    free(want);
}

static void test_softmax_l2norm(void **state)
{
    (void)state;
    int64_t rows = 97, n = 203;
    float *x = rand_vec((size_t)(rows * n), 20.0f);
    double *want = calloc((size_t)(rows * n), sizeof(double));
    float scale = 0.37f;
    for (int64_t r = 0; r < rows; r++) {
        double m = -INFINITY, s = 0;
        for (int64_t j = 0; j < n; j++)
            m = fmax(m, (double)scale * x[r * n + j]);
        for (int64_t j = 0; j < n; j++)
            s += exp((double)scale * x[r * n + j] - m);
        for (int64_t j = 0; j < n; j++)
            want[r * n + j] = exp((double)scale * x[r * n + j] - m) / s;
    }
    assert_int_equal(g_be->iface.softmax(g_be, x, rows, n, scale), EB_OK);
    assert_close(x, want, (size_t)(rows * n), 2e-6, "softmax");
    free(want);
    free(x);

    int64_t C = 65, ldx = 80;
    rows = 40;
    x = rand_vec((size_t)(rows * ldx), 3.0f);
    float *y = calloc((size_t)(rows * C), sizeof(float));
    want = calloc((size_t)(rows * C), sizeof(double));
    for (int64_t r = 0; r < rows; r++) {
        double s = 0;
        for (int64_t j = 0; j < C; j++)
            s += (double)x[r * ldx + j] * x[r * ldx + j];
        for (int64_t j = 0; j < C; j++)
            want[r * C + j] = x[r * ldx + j] / sqrt(s);
    }
    assert_int_equal(g_be->iface.l2norm(g_be, y, x, rows, C, ldx, 1e-12f), EB_OK);
    assert_close(y, want, (size_t)(rows * C), 1e-6, "l2norm");
    // A zero row stays zero (eps guards the division).
    float z[4] = {0}, zy[4] = {1, 1, 1, 1};
    assert_int_equal(g_be->iface.l2norm(g_be, zy, z, 1, 4, 4, 1e-12f), EB_OK);
    for (int i = 0; i < 4; i++)
        assert_float_equal(zy[i], 0.0f, 0);
    free(x);
    free(y);
    free(want);
}

/* ---- attention --------------------------------------------------------------------------------- */

static void attention_ref(double *out, const float *q, const float *k, const float *v,
                          const eb_attn_desc *d)
{
    int64_t group = d->H / d->Hkv;
    double *s = malloc((size_t)d->Tk * sizeof(double));
    for (int64_t b = 0; b < d->B; b++) {
        int64_t len = d->kv_lens ? d->kv_lens[b] : d->Tk;
        for (int64_t h = 0; h < d->H; h++)
            for (int64_t t = 0; t < d->Tq; t++) {
                double *o = out + b * d->out_batch_stride + t * d->out_token_stride + h * d->D;
                int64_t n = len;
                if (d->flags & EB_ATTN_CAUSAL)
                    n = t + 1 < len ? t + 1 : len;
                if (t >= len && d->kv_lens)
                    n = 0;
                if (n == 0) {
                    for (int64_t e = 0; e < d->D; e++)
                        o[e] = 0;
                    continue;
                }
                const float *qr = q + b * d->q_batch_stride + t * d->q_token_stride + h * d->D;
                double m = -INFINITY, sum = 0;
                for (int64_t j = 0; j < n; j++) {
                    const float *kr =
                        k + b * d->k_batch_stride + j * d->k_token_stride + (h / group) * d->D;
                    double acc = 0;
                    for (int64_t e = 0; e < d->D; e++)
                        acc += (double)qr[e] * kr[e];
                    s[j] = acc * d->scale;
                    m = fmax(m, s[j]);
                }
                for (int64_t j = 0; j < n; j++)
                    sum += (s[j] = exp(s[j] - m));
                for (int64_t e = 0; e < d->D; e++) {
                    double acc = 0;
                    for (int64_t j = 0; j < n; j++)
                        acc += s[j] / sum *
                               v[b * d->v_batch_stride + j * d->v_token_stride +
                                 (h / group) * d->D + e];
                    o[e] = acc;
                }
            }
    }
    free(s);
}

static void check_attention(eb_attn_desc d, size_t q_len, size_t kv_len, size_t out_len,
                            const char *what)
{
    float *q = rand_vec(q_len, 2.0f), *k = rand_vec(kv_len, 2.0f), *v = rand_vec(kv_len, 1.0f);
    float *out = calloc(out_len, sizeof(float));
    double *want = calloc(out_len, sizeof(double));
    attention_ref(want, q, k, v, &d);
    assert_int_equal(g_be->iface.attention(g_be, out, q, k, v, &d), EB_OK);
    assert_close(out, want, out_len, 1e-5, what);
    free(q);
    free(k);
    free(v);
    free(out);
    free(want);
}

static void test_attention(void **state)
{
    (void)state;
    // ViT self-attention on a fused (B, T, 3C) qkv: q, k, v are offsets into one buffer.
    int64_t B = 3, T = 37, H = 4, D = 16, C = H * D;
    size_t qkv_len = (size_t)(B * T * 3 * C);
    float *qkv = rand_vec(qkv_len, 2.0f);
    float *out = calloc((size_t)(B * T * C), sizeof(float));
    double *want = calloc((size_t)(B * T * C), sizeof(double));
    eb_attn_desc d = {
        .B = B, .Tq = T, .Tk = T, .H = H, .Hkv = H, .D = D,
        .q_batch_stride = T * 3 * C, .q_token_stride = 3 * C,
        .k_batch_stride = T * 3 * C, .k_token_stride = 3 * C,
        .v_batch_stride = T * 3 * C, .v_token_stride = 3 * C,
        .out_batch_stride = T * C, .out_token_stride = C, .scale = 0.25f,
    };
    attention_ref(want, qkv, qkv + C, qkv + 2 * C, &d);
    assert_int_equal(g_be->iface.attention(g_be, out, qkv, qkv + C, qkv + 2 * C, &d), EB_OK);
    assert_close(out, want, (size_t)(B * T * C), 1e-5, "attention vit");
    free(qkv);
    free(out);
    free(want);

    // Pooling head: one query shared by all items (batch stride 0), Tq = 1.
    eb_attn_desc p = {
        .B = 5, .Tq = 1, .Tk = 50, .H = 4, .Hkv = 4, .D = 8,
        .q_batch_stride = 0, .q_token_stride = 32,
        .k_batch_stride = 50 * 64, .k_token_stride = 64,
        .v_batch_stride = 50 * 64, .v_token_stride = 64,
        .out_batch_stride = 32, .out_token_stride = 32, .scale = 0.35f,
    };
    check_attention(p, 32, 5 * 50 * 64, 5 * 32, "attention pooling");

    // Qwen3: causal, grouped-query (8 query heads on 2 kv heads), right-padded lengths.
    int32_t lens[3] = {9, 1, 5};
    eb_attn_desc g = {
        .B = 3, .Tq = 9, .Tk = 9, .H = 8, .Hkv = 2, .D = 12,
        .q_batch_stride = 9 * 96, .q_token_stride = 96,
        .k_batch_stride = 9 * 24, .k_token_stride = 24,
        .v_batch_stride = 9 * 24, .v_token_stride = 24,
        .out_batch_stride = 9 * 96, .out_token_stride = 96,
        .scale = 0.2887f, .flags = EB_ATTN_CAUSAL, .kv_lens = lens,
    };
    check_attention(g, 3 * 9 * 96, 3 * 9 * 24, 3 * 9 * 96, "attention causal gqa");
    // SigLIP-base-like heads (D = 64, 197 tokens: full and ragged 32-key panels, 17 row tiles).
    eb_attn_desc v = {
        .B = 1, .Tq = 197, .Tk = 197, .H = 2, .Hkv = 2, .D = 64,
        .q_batch_stride = 197 * 384, .q_token_stride = 384,
        .k_batch_stride = 197 * 384, .k_token_stride = 384,
        .v_batch_stride = 197 * 384, .v_token_stride = 384,
        .out_batch_stride = 197 * 128, .out_token_stride = 128, .scale = 0.125f,
    };
    check_attention(v, 197 * 384, 197 * 384, 197 * 128, "attention base heads");
    // Bad shapes are refused.
    g.Hkv = 3;
    float dummy[4];
    assert_int_equal(g_be->iface.attention(g_be, dummy, dummy, dummy, dummy, &g), EB_ERR_INVALID);
}

/* ---- rope -------------------------------------------------------------------------------------- */

static void test_rope(void **state)
{
    (void)state;
    int64_t B = 2, T = 11, H = 3, D = 16, ts = 60, bs = T * ts;
    float theta = 1000000.0f;
    size_t n = (size_t)(B * bs);
    float *x = rand_vec(n, 1.0f);
    double *want = calloc(n, sizeof(double));
    for (size_t i = 0; i < n; i++)
        want[i] = x[i];
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < H; h++) {
                const float *xr = x + b * bs + t * ts + h * D;
                double *wr = want + b * bs + t * ts + h * D;
                for (int64_t i = 0; i < D / 2; i++) {
                    double a = (double)t * pow((double)theta, -2.0 * (double)i / (double)D);
                    wr[i] = xr[i] * cos(a) - xr[i + D / 2] * sin(a);
                    wr[i + D / 2] = xr[i + D / 2] * cos(a) + xr[i] * sin(a);
                }
            }
    assert_int_equal(g_be->iface.rope(g_be, x, B, T, H, D, bs, ts, theta), EB_OK);
    assert_close(x, want, n, 1e-5, "rope");
    free(x);
    free(want);
}

/* ---- patch embedding, gathers -------------------------------------------------------------------- */

static void test_patch_embed(void **state)
{
    (void)state;
    int64_t B = 2, Cin = 3, P = 4, Himg = 12, Wimg = 8, C = 10;
    int64_t gw = Wimg / P, T = (Himg / P) * gw, K = Cin * P * P;
    float *px = rand_vec((size_t)(B * Cin * Himg * Wimg), 1.0f);
    float *wd = rand_vec((size_t)(C * K), 0.3f), *bd = rand_vec((size_t)C, 1.0f);
    float *pos = rand_vec((size_t)(T * C), 1.0f);
    float *out = calloc((size_t)(B * T * C), sizeof(float));
    double *want = calloc((size_t)(B * T * C), sizeof(double));
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t o = 0; o < C; o++) {
                int64_t py = t / gw, pxx = t % gw;
                double acc = (double)bd[o] + pos[t * C + o];
                // Conv2d: weight (C, Cin, P, P)
                for (int64_t c = 0; c < Cin; c++)
                    for (int64_t ky = 0; ky < P; ky++)
                        for (int64_t kx = 0; kx < P; kx++)
                            acc += (double)wd[((o * Cin + c) * P + ky) * P + kx] *
                                   px[((b * Cin + c) * Himg + py * P + ky) * Wimg + pxx * P + kx];
                want[(b * T + t) * C + o] = acc;
            }
    int64_t ws[2] = {C, K}, bs[1] = {C}, ps[2] = {T, C};
    weight w = make_weight(wd, 2, ws, EB_WEIGHT_MATRIX), wb = make_weight(bd, 1, bs, EB_WEIGHT_VECTOR);
    weight wp = make_weight(pos, 2, ps, EB_WEIGHT_TABLE);
    assert_int_equal(
        g_be->iface.patch_embed(g_be, out, px, &w.t, &wb.t, &wp.t, B, Cin, Himg, Wimg, P), EB_OK);
    assert_close(out, want, (size_t)(B * T * C), 1e-5, "patch_embed");
    // Sizes that are not multiples of the patch drop the last pixels, like Conv2d: a 15x11
    // image with P = 4 has the 3x2 patches of its top-left 12x8 corner.
    int64_t H2 = 15, W2 = 11;
    float *px2 = calloc((size_t)(B * Cin * H2 * W2), sizeof(float));
    for (int64_t bc = 0; bc < B * Cin; bc++)
        for (int64_t yy = 0; yy < H2; yy++)
            for (int64_t xx = 0; xx < W2; xx++)
                px2[(bc * H2 + yy) * W2 + xx] =
                    yy < Himg && xx < Wimg ? px[(bc * Himg + yy) * Wimg + xx] : 1e6f;
    memset(out, 0, (size_t)(B * T * C) * sizeof(float));
    assert_int_equal(
        g_be->iface.patch_embed(g_be, out, px2, &w.t, &wb.t, &wp.t, B, Cin, H2, W2, P), EB_OK);
    assert_close(out, want, (size_t)(B * T * C), 1e-5, "patch_embed, partial patches dropped");
    free(px2);
    // Smaller than one patch is refused.
    assert_int_equal(
        g_be->iface.patch_embed(g_be, out, px, &w.t, &wb.t, &wp.t, B, Cin, 3, Wimg, P),
        EB_ERR_INVALID);
    free_weight(&w);
    free_weight(&wb);
    free_weight(&wp);
    free(px);
    free(wd);
    free(bd);
    free(pos);
    free(out);
    free(want);
}

static void test_rows(void **state)
{
    (void)state;
    int64_t V = 7, C = 5;
    float *table = rand_vec((size_t)(V * C), 1.0f);
    int64_t ts[2] = {V, C};
    weight w = make_weight(table, 2, ts, EB_WEIGHT_TABLE);
    int32_t ids[4] = {6, 0, 3, 6};
    float y[20];
    assert_int_equal(g_be->iface.get_rows(g_be, y, &w.t, ids, 4), EB_OK);
    for (int i = 0; i < 4; i++)
        assert_memory_equal(y + i * C, table + ids[i] * C, (size_t)C * sizeof(float));
    int32_t bad[1] = {7};
    assert_int_equal(g_be->iface.get_rows(g_be, y, &w.t, bad, 1), EB_ERR_INVALID);
    free_weight(&w);

    // pool_last: row lens[b]-1 of each item
    float *x = rand_vec(3 * 4 * C, 1.0f);
    int32_t lens[3] = {4, 1, 2};
    float py[15];
    assert_int_equal(g_be->iface.pool_last(g_be, py, x, lens, 3, 4, C), EB_OK);
    for (int b = 0; b < 3; b++)
        assert_memory_equal(py + b * C, x + (b * 4 + lens[b] - 1) * C, (size_t)C * sizeof(float));
    int32_t bad_lens[3] = {4, 0, 2};
    assert_int_equal(g_be->iface.pool_last(g_be, py, x, bad_lens, 3, 4, C), EB_ERR_INVALID);
    // copy_rows: token 0 of each item
    float cy[15];
    assert_int_equal(g_be->iface.copy_rows(g_be, cy, C, x, 4 * C, 3, C), EB_OK);
    for (int b = 0; b < 3; b++)
        assert_memory_equal(cy + b * C, x + b * 4 * C, (size_t)C * sizeof(float));
    free(x);
    free(table);
}

/* ---- dtypes, uploads, layout ------------------------------------------------------------------- */

static void test_dtypes(void **state)
{
    (void)state;
    // bf16 -> f32 is exact; f32 -> bf16 rounds to nearest even.
    float vals[6] = {1.0f, -2.5f, 3.14159265f, 1e-30f, 65504.0f, 0.0f};
    uint16_t h[8];
    float back[8];
    eb_ops_f32_to_bf16(h, vals, 6);
    eb_ops_bf16_to_f32(back, h, 6);
    for (int i = 0; i < 6; i++)
        assert_true(fabsf(back[i] - vals[i]) <= fabsf(vals[i]) * (1.0f / 256.0f));
    assert_int_equal(h[0], 0x3f80);
    assert_int_equal(h[2], 0x4049); // 3.14159 -> 0x40490fdb rounds down to 0x4049
    float tie[2];
    uint32_t bits[2] = {0x3f808000u, 0x3f818000u}; // exact halfway: to even
    memcpy(tie, bits, sizeof(tie));
    eb_ops_f32_to_bf16(h, tie, 2);
    assert_int_equal(h[0], 0x3f80);
    assert_int_equal(h[1], 0x3f82);
    // f16 round trips, including subnormals and the largest finite value.
    float f16vals[7] = {1.0f, -0.333251953125f, 65504.0f, 6.103515625e-05f, 5.960464477539063e-08f,
                        -0.0f, 1.5e-7f};
    eb_ops_f32_to_f16(h, f16vals, 7);
    eb_ops_f16_to_f32(back, h, 7);
    assert_int_equal(h[0], 0x3c00);
    assert_int_equal(h[2], 0x7bff);
    assert_int_equal(h[3], 0x0400); // smallest normal
    assert_int_equal(h[4], 0x0001); // smallest subnormal
    assert_int_equal(h[5], 0x8000);
    assert_int_equal(h[6], 0x0003); // 1.5e-7 / 2^-24 = 2.52 -> 3
    for (int i = 0; i < 6; i++)
        assert_float_equal(back[i], f16vals[i], 0);
    float big = 70000.0f;
    eb_ops_f32_to_f16(h, &big, 1);
    assert_int_equal(h[0], 0x7c00); // overflow -> inf
    assert_int_equal(eb_dtype_size(EB_DTYPE_BF16), 2);
    assert_string_equal(eb_dtype_name(EB_DTYPE_F16), "F16");

    // weight_upload converts from the checkpoint dtype, at an element offset.
    int64_t shape[1] = {8};
    float zeros[8] = {0};
    weight w = make_weight(zeros, 1, shape, EB_WEIGHT_VECTOR);
    uint16_t bf[4];
    float four[4] = {1.5f, -2.0f, 0.25f, 8.0f};
    eb_ops_f32_to_bf16(bf, four, 4);
    assert_int_equal(g_be->iface.weight_upload(g_be, &w.t, 4, bf, EB_DTYPE_BF16, 4), EB_OK);
    const float *wd = w.t.data;
    assert_float_equal(wd[3], 0.0f, 0);
    assert_float_equal(wd[4], 1.5f, 0);
    assert_float_equal(wd[7], 8.0f, 0);
    assert_int_equal(g_be->iface.weight_upload(g_be, &w.t, 6, bf, EB_DTYPE_BF16, 4),
                     EB_ERR_INVALID); // past the end
    free_weight(&w);
}

static void test_layout_helpers(void **state)
{
    (void)state;
    assert_int_equal(eb_ops_align(1), EB_OPS_ALIGN);
    assert_int_equal(eb_ops_align(EB_OPS_ALIGN), EB_OPS_ALIGN);
    size_t off = 0;
    assert_null(eb_ops_act_carve(g_be, NULL, &off, 10)); // sizing pass
    assert_int_equal(off, EB_OPS_ALIGN);
    eb_buffer *buf = g_be->iface.buffer_alloc(g_be, 2 * EB_OPS_ALIGN, EB_BUFFER_ACTIVATIONS);
    assert_non_null(buf);
    off = 0;
    float *a = eb_ops_act_carve(g_be, buf, &off, 10);
    float *b = eb_ops_act_carve(g_be, buf, &off, 64);
    assert_ptr_equal(a, g_be->iface.buffer_base(g_be, buf));
    assert_int_equal((char *)b - (char *)a, EB_OPS_ALIGN);
    assert_null(eb_ops_act_carve(g_be, buf, &off, 1)); // full
    eb_tensor t;
    off = 0;
    int64_t shape[2] = {100, 100};
    assert_int_equal(eb_ops_weight_place(g_be, &t, buf, &off, EB_DTYPE_BF16, EB_WEIGHT_MATRIX, 2,
                                         shape),
                     EB_ERR_INVALID); // does not fit
    g_be->iface.buffer_free(g_be, buf);
    char err[256];
    assert_null(eb_backend_create("tpu", NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "tpu"));
    assert_string_equal(eb_op_name(EB_OP_ATTENTION), "attention");
}

/* ---- thread pool -------------------------------------------------------------------------------- */

typedef struct pool_arg {
    int64_t *hits;
    int max_thread;
} pool_arg;

static void pool_fn(void *arg, int64_t begin, int64_t end, int thread_index)
{
    pool_arg *a = arg;
    for (int64_t i = begin; i < end; i++)
        a->hits[i] += 1 + thread_index * 0; // each index exactly once
    if (thread_index > a->max_thread)
        a->max_thread = thread_index; // benign race: only checked for range
}

static void test_pool(void **state)
{
    (void)state;
    eb_cpu_pool *pool = eb_cpu_pool_create(4);
    assert_non_null(pool);
    assert_int_equal(eb_cpu_pool_threads(pool), 4);
    int64_t sizes[] = {1, 2, 3, 4, 5, 17, 1000};
    for (int rep = 0; rep < 50; rep++)
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
            int64_t n = sizes[s];
            int64_t *hits = calloc((size_t)n, sizeof(int64_t));
            pool_arg a = {hits, 0};
            eb_cpu_pool_run(pool, n, pool_fn, &a);
            for (int64_t i = 0; i < n; i++)
                assert_int_equal(hits[i], 1);
            assert_true(a.max_thread < 4);
            // Dynamic chunks, including chunks that do not divide n and chunks larger than n.
            for (int64_t chunk = 1; chunk <= 7; chunk += 3) {
                eb_cpu_pool_run_dynamic(pool, n, chunk, pool_fn, &a);
                for (int64_t i = 0; i < n; i++)
                    assert_int_equal(hits[i], 2 + (chunk - 1) / 3);
            }
            assert_true(a.max_thread < 4);
            free(hits);
        }
    eb_cpu_pool_destroy(&pool);
    assert_null(pool);
}

int main(int argc, char **argv)
{
    (void)argc;
    eb_cpu_blas_ensure_coretype(argv); // fast OpenBLAS kernels on CPUs it does not know
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),      cmocka_unit_test(test_packed_weights),
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_rmsnorm),     cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_softmax_l2norm), cmocka_unit_test(test_attention),
        cmocka_unit_test(test_rope),        cmocka_unit_test(test_patch_embed),
        cmocka_unit_test(test_rows),        cmocka_unit_test(test_dtypes),
        cmocka_unit_test(test_layout_helpers), cmocka_unit_test(test_pool),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
