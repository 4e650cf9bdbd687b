/* emu_check — the CUDA backend's kernels (gpu_worker/cuda/*.cu, run through cuda_emu.h on the
 * CPU) against straightforward double-precision references and the CPU resize.
 * Built and run by bench/kernels/emu/run; exit status 0 when everything matches. */
#include "cuda_emu.h"
#include "eb_cuda_kernels.h"

extern "C" {
#include "eb_resize.h"
}

static int failures;

// From eb_cuda_gemm.cu (the tiled fallback/comparison kernel), same struct layout.
typedef struct eb_cuda_gemm_args {
    float *y;
    int64_t ldy;
    const void *x;
    int64_t ldx;
    const void *w;
    const float *bias;
    int64_t M, N, K;
    int accumulate;
    int gelu;
} eb_cuda_gemm_args;
cudaError_t eb_cuda_gemm_tiled(cudaStream_t stream, const eb_cuda_gemm_args *a, int bf16);

static std::vector<float> rnd(size_t n, uint64_t seed, float scale)
{
    std::vector<float> v(n);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (auto &x : v) {
        s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
        x = (float)((double)((s * 2685821657736338717ull) >> 11) / 9007199254740992.0 * 2 - 1) *
            scale;
    }
    return v;
}

static void check(const char *what, const float *got, const double *ref, size_t n, double tol)
{
    double se = 0, sr = 0, mx = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!std::isfinite(got[i])) {
            bad++;
            continue;
        }
        double d = got[i] - ref[i];
        se += d * d, sr += ref[i] * ref[i], mx = std::max(mx, std::fabs(d));
    }
    double rl2 = sr > 0 ? std::sqrt(se / sr) : std::sqrt(se);
    bool ok = !bad && rl2 <= tol;
    printf("  %-52s rel_l2 %.2e max %.2e %s\n", what, rl2, mx, ok ? "ok" : "FAIL");
    if (!ok) {
        failures++;
        for (size_t i = 0; i < n && i < 8; i++)
            printf("    [%zu] got %.7g ref %.7g\n", i, got[i], ref[i]);
    }
}

static void test_layernorm(int rows, int C, bool residual)
{
    auto x = rnd((size_t)rows * C, 1, 2), r = rnd((size_t)rows * C, 2, 1), g = rnd(C, 3, 1),
         b = rnd(C, 4, 0.5);
    std::vector<double> ref((size_t)rows * C), xref((size_t)rows * C);
    for (int i = 0; i < rows; i++) {
        double s = 0, q = 0;
        for (int c = 0; c < C; c++) {
            size_t k = (size_t)i * C + c;
            xref[k] = (double)(residual ? x[k] + r[k] : x[k]);
            s += xref[k];
        }
        double mean = s / C;
        for (int c = 0; c < C; c++)
            q += (xref[(size_t)i * C + c] - mean) * (xref[(size_t)i * C + c] - mean);
        double rstd = 1 / std::sqrt(q / C + 1e-6);
        for (int c = 0; c < C; c++)
            ref[(size_t)i * C + c] = (xref[(size_t)i * C + c] - mean) * rstd * g[c] + b[c];
    }
    std::vector<float> y((size_t)rows * C, NAN);
    eb_cuda_layernorm(nullptr, y.data(), x.data(), residual ? r.data() : nullptr, g.data(),
                      b.data(), rows, C, 1e-6f);
    char w[96];
    snprintf(w, sizeof(w), "layernorm %dx%d%s", rows, C, residual ? " +residual" : "");
    check(w, y.data(), ref.data(), y.size(), 1e-6);
    snprintf(w, sizeof(w), "  x += residual %dx%d", rows, C);
    check(w, x.data(), xref.data(), x.size(), 1e-7);
}

static void test_rms_l2(void)
{
    int rows = 9, C = 40, ld = 45;
    auto x = rnd((size_t)rows * ld, 5, 2), g = rnd(C, 6, 1);
    std::vector<double> ref((size_t)rows * C), refl((size_t)rows * C);
    for (int i = 0; i < rows; i++) {
        double q = 0;
        for (int c = 0; c < C; c++)
            q += (double)x[(size_t)i * ld + c] * x[(size_t)i * ld + c];
        double r = 1 / std::sqrt(q / C + 1e-6), n = std::sqrt(q);
        for (int c = 0; c < C; c++) {
            ref[(size_t)i * C + c] = x[(size_t)i * ld + c] * r * g[c];
            refl[(size_t)i * C + c] = x[(size_t)i * ld + c] / std::max(n, 1e-12);
        }
    }
    std::vector<float> y((size_t)rows * ld, NAN), yl((size_t)rows * C, NAN), got((size_t)rows * C);
    eb_cuda_l2norm(nullptr, yl.data(), x.data(), rows, C, ld, 1e-12f);
    check("l2norm 9x40 ld 45", yl.data(), refl.data(), yl.size(), 1e-6);
    eb_cuda_rmsnorm(nullptr, y.data(), x.data(), nullptr, g.data(), rows, C, ld, 1e-6f);
    for (int i = 0; i < rows; i++)
        for (int c = 0; c < C; c++)
            got[(size_t)i * C + c] = y[(size_t)i * ld + c];
    check("rmsnorm 9x40 ld 45", got.data(), ref.data(), got.size(), 1e-6);
}

static void test_softmax(int rows, int n)
{
    auto x = rnd((size_t)rows * n, 7, 30);
    std::vector<double> ref(x.size());
    for (int i = 0; i < rows; i++) {
        double m = -1e300, s = 0;
        for (int j = 0; j < n; j++)
            m = std::max(m, 0.125 * x[(size_t)i * n + j]);
        for (int j = 0; j < n; j++)
            s += ref[(size_t)i * n + j] = std::exp(0.125 * x[(size_t)i * n + j] - m);
        for (int j = 0; j < n; j++)
            ref[(size_t)i * n + j] /= s;
    }
    eb_cuda_softmax(nullptr, x.data(), rows, n, 0.125f);
    char w[64];
    snprintf(w, sizeof(w), "softmax %dx%d", rows, n);
    check(w, x.data(), ref.data(), x.size(), 1e-6);
}

struct att_case {
    const char *name;
    int B, Tq, Tk, H, Hkv, D;
    bool packed, shared_q, causal, lens;
};

static void test_attention(const att_case &c)
{
    int C = c.H * c.D, Ckv = c.Hkv * c.D;
    eb_cuda_attn_args a{};
    a.B = c.B, a.Tq = c.Tq, a.Tk = c.Tk, a.H = c.H, a.Hkv = c.Hkv, a.D = c.D;
    a.scale = 1.0f / std::sqrt((float)c.D);
    a.causal = c.causal;
    std::vector<float> qbuf, kbuf, vbuf;
    const float *q, *k, *v;
    if (c.packed) {
        qbuf = rnd((size_t)c.B * c.Tq * 3 * C, 11, 2);
        q = qbuf.data(), k = q + C, v = q + 2 * C;
        a.q_ts = a.k_ts = a.v_ts = 3 * C;
        a.q_bs = a.k_bs = a.v_bs = (int64_t)c.Tq * 3 * C;
    } else {
        qbuf = rnd((size_t)(c.shared_q ? 1 : c.B) * c.Tq * C, 12, 2);
        kbuf = rnd((size_t)c.B * c.Tk * Ckv, 13, 2);
        vbuf = rnd((size_t)c.B * c.Tk * Ckv, 14, 1);
        q = qbuf.data(), k = kbuf.data(), v = vbuf.data();
        a.q_ts = C, a.q_bs = c.shared_q ? 0 : (int64_t)c.Tq * C;
        a.k_ts = a.v_ts = Ckv, a.k_bs = a.v_bs = (int64_t)c.Tk * Ckv;
    }
    a.o_ts = C, a.o_bs = (int64_t)c.Tq * C;
    std::vector<int32_t> lens(c.B, c.Tk);
    if (c.lens) {
        for (int b = 0; b < c.B; b++)
            lens[b] = std::max(1, c.Tk - 7 * b - 1);
        a.kv_lens = lens.data();
    }
    std::vector<double> ref((size_t)c.B * c.Tq * C);
    std::vector<double> sc(c.Tk);
    for (int b = 0; b < c.B; b++)
        for (int h = 0; h < c.H; h++) {
            int hk = h / (c.H / c.Hkv);
            int klen = c.lens ? lens[b] : c.Tk;
            for (int t = 0; t < c.Tq; t++) {
                double *o = &ref[((size_t)b * c.Tq + t) * C + h * c.D];
                if (c.lens && t >= klen) {
                    for (int d = 0; d < c.D; d++)
                        o[d] = 0;
                    continue;
                }
                int kend = c.causal ? std::min(klen, t + 1) : klen;
                double m = -1e300, s = 0;
                for (int j = 0; j < kend; j++) {
                    double dot = 0;
                    for (int d = 0; d < c.D; d++)
                        dot += (double)q[b * a.q_bs + t * a.q_ts + h * c.D + d] *
                               k[b * a.k_bs + j * a.k_ts + hk * c.D + d];
                    sc[j] = dot * a.scale;
                    m = std::max(m, sc[j]);
                }
                for (int j = 0; j < kend; j++)
                    s += sc[j] = std::exp(sc[j] - m);
                for (int d = 0; d < c.D; d++) {
                    double acc = 0;
                    for (int j = 0; j < kend; j++)
                        acc += sc[j] * v[b * a.v_bs + j * a.v_ts + hk * c.D + d];
                    o[d] = acc / s;
                }
            }
        }
    std::vector<float> out(ref.size(), NAN);
    eb_cuda_attention(nullptr, out.data(), q, k, v, &a);
    check(c.name, out.data(), ref.data(), out.size(), 2e-6);
}

static void test_elementwise(void)
{
    int rows = 7, N = 300, ld = 333;
    auto x = rnd((size_t)rows * ld, 21, 6), t = rnd((size_t)rows * N, 22, 6), b2 = rnd(N * 3, 23, 1);
    auto gelu = [](double v) { return 0.5 * v * (1 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))); };
    std::vector<float> y(x.size());
    std::vector<double> ref(x.size());
    eb_cuda_gelu_tanh(nullptr, y.data(), x.data(), (int64_t)x.size());
    for (size_t i = 0; i < x.size(); i++)
        ref[i] = gelu(x[i]);
    check("gelu_tanh 2331", y.data(), ref.data(), y.size(), 1e-6);
    // y += gelu(t) into a strided destination; gelu_rows in place
    std::vector<float> z = x;
    eb_cuda_add_gelu(nullptr, z.data(), ld, t.data(), rows, N);
    std::vector<float> zc((size_t)rows * N);
    std::vector<double> zr((size_t)rows * N);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < N; c++) {
            zc[(size_t)r * N + c] = z[(size_t)r * ld + c];
            zr[(size_t)r * N + c] = x[(size_t)r * ld + c] + gelu(t[(size_t)r * N + c]);
        }
    check("add_gelu 7x300 ld 333", zc.data(), zr.data(), zc.size(), 1e-6);
    std::vector<float> w = x;
    eb_cuda_gelu_rows(nullptr, w.data(), ld, rows, N);
    bool gaps_ok = true;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < ld; c++) {
            size_t i = (size_t)r * ld + c;
            if (c < N) {
                zc[(size_t)r * N + c] = w[i];
                zr[(size_t)r * N + c] = gelu(x[i]);
            } else if (w[i] != x[i]) {
                gaps_ok = false;
            }
        }
    check("gelu_rows 7x300 ld 333", zc.data(), zr.data(), zc.size(), 1e-6);
    if (!gaps_ok) {
        printf("  gelu_rows wrote the row gaps FAIL\n");
        failures++;
    }
    // bf16 conversion (strided), copy_rows, add_rows_bcast, silu_mul
    std::vector<__nv_bfloat16> bf((size_t)rows * N);
    eb_cuda_f32_to_bf16(nullptr, bf.data(), x.data(), rows, N, ld);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < N; c++) {
            zc[(size_t)r * N + c] = __bfloat162float(bf[(size_t)r * N + c]);
            zr[(size_t)r * N + c] = x[(size_t)r * ld + c];
        }
    check("f32_to_bf16 7x300 ld 333 (bf16 rounding)", zc.data(), zr.data(), zc.size(), 4e-3);
    std::vector<float> cp((size_t)rows * 310, -7.0f);
    eb_cuda_copy_rows(nullptr, cp.data(), 310, x.data(), ld, rows, N);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < N; c++) {
            zc[(size_t)r * N + c] = cp[(size_t)r * 310 + c];
            zr[(size_t)r * N + c] = x[(size_t)r * ld + c];
        }
    check("copy_rows 7x300", zc.data(), zr.data(), zc.size(), 0);
    int B = 3, T = 5, C = 60;
    std::vector<float> yy = rnd((size_t)B * T * C, 24, 1), pos = rnd((size_t)T * C, 25, 1);
    std::vector<double> yr(yy.size());
    for (size_t i = 0; i < yy.size(); i++)
        yr[i] = (double)yy[i] + pos[i % (T * C)];
    eb_cuda_add_rows_bcast(nullptr, yy.data(), pos.data(), B, T, C);
    check("add_rows_bcast 3x5x60", yy.data(), yr.data(), yy.size(), 1e-7);
    int F = 50;
    std::vector<float> gu = rnd((size_t)rows * 2 * F, 26, 4), so((size_t)rows * F);
    std::vector<double> sr((size_t)rows * F);
    eb_cuda_silu_mul(nullptr, so.data(), gu.data(), gu.data() + F, rows, F, 2 * F);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < F; c++) {
            double g = gu[(size_t)r * 2 * F + c], u = gu[(size_t)r * 2 * F + F + c];
            sr[(size_t)r * F + c] = g / (1 + std::exp(-g)) * u;
        }
    check("silu_mul 7x50 fused", so.data(), sr.data(), so.size(), 1e-6);
    // get_rows (fp32 and bf16 tables), pool_last
    int V = 10;
    auto table = rnd((size_t)V * C, 27, 1);
    std::vector<__nv_bfloat16> tb(table.size());
    for (size_t i = 0; i < table.size(); i++)
        tb[i] = __float2bfloat16_rn(table[i]);
    int32_t ids[4] = {9, 0, 3, 3};
    std::vector<float> gr(4 * C), gb(4 * C);
    std::vector<double> grr(4 * C), gbr(4 * C);
    eb_cuda_get_rows(nullptr, gr.data(), table.data(), 0, ids, 4, C);
    eb_cuda_get_rows(nullptr, gb.data(), tb.data(), 1, ids, 4, C);
    for (int i = 0; i < 4; i++)
        for (int c = 0; c < C; c++) {
            grr[(size_t)i * C + c] = table[(size_t)ids[i] * C + c];
            gbr[(size_t)i * C + c] = __bfloat162float(tb[(size_t)ids[i] * C + c]);
        }
    check("get_rows fp32", gr.data(), grr.data(), gr.size(), 0);
    check("get_rows bf16", gb.data(), gbr.data(), gb.size(), 0);
    int32_t lens[3] = {1, 5, 3};
    std::vector<float> pl((size_t)B * C);
    std::vector<double> plr((size_t)B * C);
    eb_cuda_pool_last(nullptr, pl.data(), yy.data(), lens, B, T, C);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            plr[(size_t)b * C + c] = yy[((size_t)b * T + lens[b] - 1) * C + c];
    check("pool_last 3x5x60", pl.data(), plr.data(), pl.size(), 0);
}

static void test_gemm_tiled(int M, int N, int K, int ldx, int ldy, bool bias, bool acc, bool gelu,
                            bool bf16)
{
    auto x = rnd((size_t)M * ldx, 51, 1), w = rnd((size_t)N * K, 52, 0.1f), b = rnd(N, 53, 0.1f);
    auto y = rnd((size_t)M * ldy, 54, 1);
    std::vector<__nv_bfloat16> xb(x.size()), wb(w.size());
    if (bf16) { // the reference uses the bf16-rounded values
        for (size_t i = 0; i < x.size(); i++)
            xb[i] = __float2bfloat16_rn(x[i]), x[i] = __bfloat162float(xb[i]);
        for (size_t i = 0; i < w.size(); i++)
            wb[i] = __float2bfloat16_rn(w[i]), w[i] = __bfloat162float(wb[i]);
    }
    auto gl = [](double v) { return 0.5 * v * (1 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))); };
    std::vector<double> ref((size_t)M * N);
    for (int i = 0; i < M; i++)
        for (int n = 0; n < N; n++) {
            double s = bias ? b[n] : 0;
            for (int k = 0; k < K; k++)
                s += (double)x[(size_t)i * ldx + k] * w[(size_t)n * K + k];
            if (gelu)
                s = gl(s);
            ref[(size_t)i * N + n] = s + (acc ? y[(size_t)i * ldy + n] : 0.0);
        }
    eb_cuda_gemm_args a{y.data(), ldy, bf16 ? (const void *)xb.data() : x.data(), ldx,
                        bf16 ? (const void *)wb.data() : w.data(), bias ? b.data() : nullptr,
                        M, N, K, acc, gelu};
    eb_cuda_gemm_tiled(nullptr, &a, bf16);
    std::vector<float> got((size_t)M * N);
    for (int i = 0; i < M; i++)
        for (int n = 0; n < N; n++)
            got[(size_t)i * N + n] = y[(size_t)i * ldy + n];
    char wh[96];
    snprintf(wh, sizeof(wh), "gemm_tiled %dx%dx%d%s%s%s%s", M, N, K, bias ? " bias" : "",
             acc ? " acc" : "", gelu ? " gelu" : "", bf16 ? " bf16" : "");
    check(wh, got.data(), ref.data(), got.size(), 1e-6);
}

static void test_rope(void)
{
    int B = 2, T = 9, H = 3, D = 16, ts = 2 * H * D, bs = T * ts;
    auto x = rnd((size_t)B * bs, 31, 1);
    std::vector<double> ref(x.begin(), x.end());
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < D / 2; i++) {
                    float inv = 1.0f / std::pow(10000.0f, (float)(2 * i) / (float)D);
                    float ang = (float)t * inv;
                    size_t p = (size_t)b * bs + (size_t)t * ts + h * D;
                    double x0 = x[p + i], x1 = x[p + i + D / 2];
                    ref[p + i] = x0 * std::cos(ang) - x1 * std::sin(ang);
                    ref[p + i + D / 2] = x1 * std::cos(ang) + x0 * std::sin(ang);
                }
    eb_cuda_rope(nullptr, x.data(), B, T, H, D, bs, ts, 10000.0f);
    check("rope 2x9 H3 D16 (in a fused row)", x.data(), ref.data(), x.size(), 1e-6);
}

static void test_im2col(int B, int Cin, int Himg, int Wimg, int P)
{
    auto pix = rnd((size_t)B * Cin * Himg * Wimg, 41, 1);
    int gh = Himg / P, gw = Wimg / P, T = gh * gw, K = Cin * P * P;
    std::vector<double> ref((size_t)B * T * K);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < Cin; c++)
                for (int ky = 0; ky < P; ky++)
                    for (int kx = 0; kx < P; kx++)
                        ref[((size_t)b * T + t) * K + (c * P + ky) * P + kx] =
                            pix[(((size_t)b * Cin + c) * Himg + (t / gw) * P + ky) * Wimg +
                                (t % gw) * P + kx];
    std::vector<float> cols(ref.size(), NAN);
    std::vector<__nv_bfloat16> colsb(ref.size());
    eb_cuda_im2col(nullptr, cols.data(), nullptr, pix.data(), B, Cin, Himg, Wimg, P);
    char w[96];
    snprintf(w, sizeof(w), "im2col %dx%dx%dx%d P%d (fp32)", B, Cin, Himg, Wimg, P);
    check(w, cols.data(), ref.data(), cols.size(), 0);
    eb_cuda_im2col(nullptr, nullptr, colsb.data(), pix.data(), B, Cin, Himg, Wimg, P);
    for (size_t i = 0; i < cols.size(); i++)
        cols[i] = __bfloat162float(colsb[i]);
    snprintf(w, sizeof(w), "im2col %dx%dx%dx%d P%d (bf16)", B, Cin, Himg, Wimg, P);
    check(w, cols.data(), ref.data(), cols.size(), 4e-3);
}

static void test_resize(int iw, int ih, int o)
{
    size_t nsrc = (size_t)iw * ih * 3, nout = (size_t)o * o * 3;
    std::vector<uint8_t> src(nsrc), ref(nout), got(nout), tmp((size_t)std::max(ih, iw) * o * 3);
    uint64_t s = 5;
    for (size_t i = 0; i < nsrc; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        src[i] = (uint8_t)((i * 7 / 3 + (s & 63)) & 255);
    }
    eb_resize_bicubic_rgb8(src.data(), iw, ih, ref.data(), o, o);
    int kx = eb_resize_ksize(iw, o), ky = eb_resize_ksize(ih, o);
    std::vector<int32_t> bx(2 * o), by(2 * o), tx((size_t)o * kx), ty((size_t)o * ky);
    eb_resize_coeffs(iw, o, kx, bx.data(), tx.data());
    eb_resize_coeffs(ih, o, ky, by.data(), ty.data());
    eb_cuda_resize_plan p{iw, ih, o, o, kx, ky, tx.data(), bx.data(), ty.data(), by.data()};
    std::vector<float> f(nout);
    const float mean[3] = {0.5f, 0.5f, 0.5f}, sd[3] = {0.5f, 0.5f, 0.5f};
    eb_cuda_resize(nullptr, got.data(), f.data(), tmp.data(), src.data(), &p, mean, sd);
    size_t diff = 0, fdiff = 0;
    for (size_t i = 0; i < nout; i++)
        diff += got[i] != ref[i];
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < o; y++)
            for (int x = 0; x < o; x++) {
                float e = ((float)((double)ref[((size_t)y * o + x) * 3 + c] * (1.0 / 255.0)) - 0.5f) / 0.5f;
                fdiff += std::memcmp(&e, &f[((size_t)c * o + y) * o + x], 4) != 0;
            }
    printf("  resize %dx%d -> %d: %zu uint8 and %zu float values differ %s\n", iw, ih, o, diff,
           fdiff, diff || fdiff ? "FAIL" : "ok");
    failures += diff || fdiff;
}

int main(int argc, char **argv)
{
    // optional filter: run only the tests whose group name contains argv[1]
    auto want = [&](const char *g) { return argc < 2 || std::strstr(g, argv[1]) != nullptr; };
    if (want("layernorm")) {
        test_layernorm(37, 100, true);
        test_layernorm(9, 768, false);
        test_layernorm(5, 1152, true);
        test_rms_l2();
    }
    if (want("softmax")) {
        test_softmax(5, 196);
        test_softmax(3, 1000);
        test_softmax(4, 1);
    }
    const att_case cases[] = {
        {"attention packed 2x37 H3 D40", 2, 37, 37, 3, 3, 40, true, false, false, false},
        {"attention 1x70 H2 D72", 1, 70, 70, 2, 2, 72, false, false, false, false},
        {"attention 1x33 H1 D128", 1, 33, 33, 1, 1, 128, false, false, false, false},
        {"attention packed base-like 1x196 H1 D64", 1, 196, 196, 1, 1, 64, true, false, false, false},
        {"attention pool head 3x1x50 H2 D64 (shared q)", 3, 1, 50, 2, 2, 64, false, true, false, false},
        {"attention causal GQA 2x50 H4/2 D64", 2, 50, 50, 4, 2, 64, false, false, true, false},
        {"attention kv_lens 3x33 H2 D32", 3, 33, 33, 2, 2, 32, false, false, false, true},
        {"attention causal+lens 2x40 H2 D128", 2, 40, 40, 2, 2, 128, false, false, true, true},
        {"attention D16 2x16 H4 (tiny)", 2, 16, 16, 4, 4, 16, true, false, false, false},
    };
    if (want("attention"))
        for (auto &c : cases)
            test_attention(c);
    if (want("elementwise")) {
        test_elementwise();
        test_rope();
    }
    if (want("gemm")) {
        test_gemm_tiled(37, 53, 71, 80, 61, true, false, false, false);
        test_gemm_tiled(33, 65, 17, 17, 65, false, false, true, false);
        test_gemm_tiled(5, 7, 3, 3, 9, false, true, false, false);
        test_gemm_tiled(40, 40, 100, 100, 40, true, true, true, true);
    }
    if (want("im2col")) {
        test_im2col(2, 3, 32, 48, 16);
        test_im2col(1, 3, 30, 30, 14); // not a multiple: 2x2 patches, last 2 px dropped
    }
    if (want("resize")) {
    test_resize(64, 48, 32);
    test_resize(20, 70, 32);
    test_resize(32, 32, 32);
    test_resize(70, 20, 32);
    test_resize(40, 200, 32); // vertical first (height shrinks much more)
    test_resize(33, 32, 32);
    }
    printf("%s\n", failures ? "emu_check: FAILED" : "emu_check: all kernels match");
    return failures ? 1 : 0;
}
