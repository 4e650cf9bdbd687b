// bench/kernels/emu/emu_test.cpp — the Qwen3 CUDA kernels run under the CPU emulation (see run) and
// checked against double-precision references: logic only (indexing, masking, online softmax).
#include "cuda_runtime.h"
thread_local dim3 threadIdx, blockIdx;
dim3 gridDim, blockDim;
thread_local emu_block *emu_cur;
int emu_last_error;

#include "attn_varlen.cpp"
#include "rope.cpp"
#include "rmsnorm.cpp"
#include "swiglu.cpp"
#include "pool_last.cpp"
#include "embed.cpp"

#include <cstdio>
#include <vector>
static int fails = 0;
static uint64_t rs = 88172645463325252ull;
static float rnd() { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return (float)((rs >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1; }
static void check(const char *what, const std::vector<float> &got, const std::vector<double> &ref, double tol)
{
    double se = 0, sr = 0; size_t bad = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        if (!std::isfinite(got[i])) { bad++; continue; }
        double d = got[i] - ref[i]; se += d * d; sr += ref[i] * ref[i];
    }
    double r = sr > 0 ? sqrt(se / sr) : sqrt(se);
    bool ok = bad == 0 && r <= tol;
    printf("  %-60s rel_l2 %.2e %s\n", what, r, ok ? "ok" : "FAIL");
    fails += !ok;
}
static float bfr(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

// attention reference: packed or padded; returns (rows, H*D) output with zeros where required
static void attn_case(const char *name, std::vector<int> lens, int H, int Hkv, int D, bool fused, bool padded, int tc)
{
    int B = lens.size(), G = H / Hkv, HD = H * D, KD = Hkv * D;
    int maxlen = *std::max_element(lens.begin(), lens.end());
    std::vector<int> cu(B + 1, 0);
    for (int b = 0; b < B; b++) cu[b + 1] = cu[b] + lens[b];
    int64_t rowsT = padded ? (int64_t)B * maxlen : cu[B];
    int64_t rs_ = fused ? HD + 2 * KD : 0;
    int64_t qts = fused ? rs_ : HD, kts = fused ? rs_ : KD;
    std::vector<float> q(rowsT * qts), k(fused ? 0 : rowsT * KD), v(fused ? 0 : rowsT * KD);
    for (auto &x : q) x = rnd() * 2; for (auto &x : k) x = rnd() * 2; for (auto &x : v) x = rnd();
    if (tc) { for (auto &x : q) x = bfr(x); for (auto &x : k) x = bfr(x); for (auto &x : v) x = bfr(x); }
    const float *Q = q.data(), *K = fused ? q.data() + HD : k.data(), *V = fused ? q.data() + HD + KD : v.data();
    std::vector<double> ref(rowsT * HD, 0.0);
    for (int b = 0; b < B; b++) {
        int64_t st = padded ? (int64_t)b * maxlen : cu[b];
        for (int t = 0; t < lens[b]; t++) for (int h = 0; h < H; h++) {
            int hk = h / G, nk = t + 1;
            std::vector<double> s(nk); double mx = -1e300;
            for (int j = 0; j < nk; j++) { double a = 0; for (int d = 0; d < D; d++) a += (double)Q[(st + t) * qts + h * D + d] * K[(st + j) * kts + hk * D + d]; s[j] = a / sqrt((double)D); mx = std::max(mx, s[j]); }
            double sum = 0; for (auto &x : s) { x = exp(x - mx); sum += x; }
            for (int d = 0; d < D; d++) { double a = 0; for (int j = 0; j < nk; j++) a += s[j] * V[(st + j) * kts + hk * D + d]; ref[(st + t) * HD + h * D + d] = a / sum; }
        }
    }
    eb_cuda_varlen_args a; memset(&a, 0, sizeof(a));
    a.B = B, a.H = H, a.Hkv = Hkv, a.D = D, a.max_seqlen = maxlen, a.q_ts = qts, a.k_ts = a.v_ts = kts, a.o_ts = HD;
    a.scale = 1.0f / sqrtf((float)D), a.causal = 1, a.use_tensor_cores = tc;
    std::vector<int32_t> l32(lens.begin(), lens.end());
    if (padded) {
        a.Tq = maxlen, a.lens = l32.data();
        a.q_bs = (int64_t)maxlen * qts, a.k_bs = a.v_bs = (int64_t)maxlen * kts, a.o_bs = (int64_t)maxlen * HD;
    } else a.cu_seqlens = cu.data();
    std::vector<float> out(rowsT * HD + 64, NAN);
    int e = eb_cuda_attn_varlen(0, out.data(), Q, K, V, &a);
    if (e) { printf("  %s: launch error %d FAIL\n", name, e); fails++; return; }
    e = cudaGetLastError();
    if (e) { printf("  %s: kernel error %d FAIL\n", name, e); fails++; return; }
    for (int i = 0; i < 64; i++) if (!std::isnan(out[rowsT * HD + i])) { printf("  %s: wrote past the end FAIL\n", name); fails++; break; }
    out.resize(rowsT * HD);
    char w[200]; snprintf(w, sizeof(w), "attn v%d %s", tc ? 3 : 2, name);
    check(w, out, ref, tc ? 2e-2 : 1e-5);
}

static void attn_bf16io()
{
    std::vector<int> lens = {3, 50}; int B = 2, H = 2, Hkv = 1, D = 64, HD = H * D, KD = Hkv * D;
    std::vector<int> cu = {0, 3, 53}; int T = 53;
    std::vector<__nv_bfloat16> q(T * HD), k(T * KD), v(T * KD), o(T * HD);
    for (auto &e : q) e = __float2bfloat16_rn(rnd() * 2); for (auto &e : k) e = __float2bfloat16_rn(rnd() * 2);
    for (auto &e : v) e = __float2bfloat16_rn(rnd());
    std::vector<double> ref(T * HD);
    for (int b = 0; b < B; b++) for (int t = 0; t < lens[b]; t++) for (int h = 0; h < H; h++) {
        int nk = t + 1; std::vector<double> s(nk); double mx = -1e300;
        for (int j = 0; j < nk; j++) { double a = 0; for (int d = 0; d < D; d++) a += (double)__bfloat162float(q[(cu[b] + t) * HD + h * D + d]) * __bfloat162float(k[(cu[b] + j) * KD + d]); s[j] = a / 8.0; mx = std::max(mx, s[j]); }
        double sum = 0; for (auto &x : s) { x = exp(x - mx); sum += x; }
        for (int d = 0; d < D; d++) { double a = 0; for (int j = 0; j < nk; j++) a += s[j] * __bfloat162float(v[(cu[b] + j) * KD + d]); ref[(cu[b] + t) * HD + h * D + d] = a / sum; }
    }
    eb_cuda_varlen_args a; memset(&a, 0, sizeof(a));
    a.B = B, a.H = H, a.Hkv = Hkv, a.D = D, a.max_seqlen = 50, a.q_ts = HD, a.k_ts = a.v_ts = KD, a.o_ts = HD;
    a.scale = 0.125f, a.causal = 1, a.cu_seqlens = cu.data();
    for (int tc = 0; tc < 2; tc++) {
        a.use_tensor_cores = tc;
        eb_cuda_attn_varlen_bf16io(0, o.data(), q.data(), k.data(), v.data(), &a);
        std::vector<float> got(T * HD); for (int i = 0; i < T * HD; i++) got[i] = __bfloat162float(o[i]);
        check(tc ? "attn v3 bf16 in/out" : "attn v2 bf16 in/out", got, ref, 1e-2);
    }
}

int main()
{
    attn_bf16io();
    attn_case("tiny H4/2 D32 lens 1,5,17,64", {1, 5, 17, 64}, 4, 2, 32, false, false, 0);
    attn_case("fused qkv H4/2 D32 lens 3,33", {3, 33}, 4, 2, 32, true, false, 0);
    attn_case("H4/2 D128 lens 1,7,40,70", {1, 7, 40, 70}, 4, 2, 128, false, false, 0);
    attn_case("H4/2 D128 lens 1,7,40,70", {1, 7, 40, 70}, 4, 2, 128, false, false, 1);
    attn_case("H2/2 D64 lens 100,31", {100, 31}, 2, 2, 64, false, false, 0);
    attn_case("H2/2 D64 lens 100,31", {100, 31}, 2, 2, 64, false, false, 1);
    attn_case("padded H4/2 D32 lens 40,17,1", {40, 17, 1}, 4, 2, 32, false, true, 0);
    attn_case("padded H4/2 D128 lens 40,17,1", {40, 17, 1}, 4, 2, 128, false, true, 1);
    attn_case("fused H2/1 D128 lens 130,2", {130, 2}, 2, 1, 128, true, false, 1);

    // rope + norm, packed
    {
        std::vector<int> lens = {1, 5, 70}; int B = 3, H = 4, Hkv = 2, D = 128; float theta = 1e6f, eps = 1e-6f;
        std::vector<int> cu(B + 1, 0); for (int b = 0; b < B; b++) cu[b + 1] = cu[b] + lens[b];
        int T = cu[B];
        std::vector<float> q(T * H * D), k(T * Hkv * D), gq(D), gk(D);
        for (auto &x : q) x = rnd(); for (auto &x : k) x = rnd(); for (auto &x : gq) x = 1 + 0.3f * rnd(); for (auto &x : gk) x = 1 + 0.3f * rnd();
        std::vector<double> rq(q.size()), rk(k.size());
        for (int b = 0; b < B; b++) for (int t = 0; t < lens[b]; t++) for (int w = 0; w < 2; w++) {
            int nh = w ? Hkv : H; auto &src = w ? k : q; auto &g = w ? gk : gq; auto &dst = w ? rk : rq;
            for (int h = 0; h < nh; h++) {
                size_t o = ((size_t)(cu[b] + t) * nh + h) * D; double sq = 0;
                for (int d = 0; d < D; d++) sq += (double)src[o + d] * src[o + d];
                double inv = 1 / sqrt(sq / D + eps);
                for (int i = 0; i < D / 2; i++) {
                    float ang = (float)t * (1.0f / powf(theta, (float)(2 * i) / (float)D));
                    double c = (float)cos((double)ang), s = (float)sin((double)ang);
                    double a = g[i] * (src[o + i] * inv), bb = g[i + D / 2] * (src[o + i + D / 2] * inv);
                    dst[o + i] = a * c - bb * s; dst[o + i + D / 2] = bb * c + a * s;
                }
            }
        }
        eb_cuda_qk_rope_args a; memset(&a, 0, sizeof(a));
        a.q = q.data(), a.k = k.data(), a.q_gain = gq.data(), a.k_gain = gk.data(), a.q_ts = H * D, a.k_ts = Hkv * D;
        a.tokens = T, a.H = H, a.Hkv = Hkv, a.D = D, a.B = B, a.cu_seqlens = cu.data(), a.eps = eps, a.theta = theta;
        if (eb_cuda_qk_norm_rope(0, &a)) { printf("rope launch FAIL\n"); fails++; }
        check("qk_norm_rope packed q", q, rq, 1e-5);
        check("qk_norm_rope packed k", k, rk, 1e-5);
    }
    // rope as the op table uses it: no norm, (B, T, H, D) inside a fused row, position t
    {
        int B = 2, T = 9, H = 3, D = 32; float theta = 10000.f;
        int64_t ts = 3 * H * D, bs = T * ts;
        std::vector<float> x(B * bs); for (auto &e : x) e = rnd();
        std::vector<double> rx(x.begin(), x.end());
        for (int b = 0; b < B; b++) for (int t = 0; t < T; t++) for (int h = 0; h < H; h++) for (int i = 0; i < D / 2; i++) {
            size_t o = b * bs + t * ts + h * D;
            float ang = (float)t * (1.0f / powf(theta, (float)(2 * i) / (float)D));
            double c = (float)cos((double)ang), s = (float)sin((double)ang);
            double a = x[o + i], bb = x[o + i + D / 2];
            rx[o + i] = a * c - bb * s; rx[o + i + D / 2] = bb * c + a * s;
        }
        eb_cuda_qk_rope_args a; memset(&a, 0, sizeof(a));
        a.q = x.data(), a.q_ts = ts, a.q_bs = bs, a.tokens = (int64_t)B * T, a.T = T, a.H = H, a.D = D, a.theta = theta;
        if (eb_cuda_qk_norm_rope(0, &a)) { printf("rope launch FAIL\n"); fails++; }
        check("rope only, padded addressing in a fused row", x, rx, 1e-6);
    }
    // rmsnorm with residual, strided (scalar path) and vector path
    for (int vec = 0; vec < 2; vec++) {
        int rows = 5, C = vec ? 256 : 30, ld = vec ? 256 : 33;
        std::vector<float> x(rows * ld), r(rows * ld), g(C), y(rows * ld, 0.f);
        for (auto &e : x) e = rnd() * 3; for (auto &e : r) e = rnd(); for (auto &e : g) e = 1 + rnd() * 0.5f;
        std::vector<double> ry(rows * ld, 0.0);
        for (int i = 0; i < rows; i++) { double sq = 0; for (int c = 0; c < C; c++) { double v = (float)(x[i * ld + c] + r[i * ld + c]); sq += v * v; }
            double inv = 1 / sqrt(sq / C + 1e-6); for (int c = 0; c < C; c++) ry[i * ld + c] = g[c] * ((float)(x[i * ld + c] + r[i * ld + c]) * inv); }
        if (eb_cuda_rmsnorm_residual(0, y.data(), x.data(), r.data(), g.data(), rows, C, ld, 1e-6f)) { printf("rms launch FAIL\n"); fails++; }
        check(vec ? "rmsnorm float4 +res" : "rmsnorm scalar strided +res", y, ry, 1e-6);
    }
    // swiglu
    {
        int rows = 3, F = 12, ld = 24;
        std::vector<float> in(rows * ld), y(rows * F);
        for (auto &e : in) e = rnd() * 5;
        std::vector<double> ry(rows * F);
        for (int i = 0; i < rows; i++) for (int c = 0; c < F; c++) { double g = in[i * ld + c], u = in[i * ld + F + c]; ry[i * F + c] = g / (1 + exp(-g)) * u; }
        eb_cuda_swiglu(0, y.data(), in.data(), in.data() + F, rows, F, ld);
        check("swiglu float4", y, ry, 1e-6);
        std::vector<float> y2(rows * 7); std::vector<double> r2(rows * 7);
        for (int i = 0; i < rows; i++) for (int c = 0; c < 7; c++) { double g = in[i * 14 + c], u = in[i * 14 + 7 + c]; r2[i * 7 + c] = g / (1 + exp(-g)) * u; }
        eb_cuda_swiglu(0, y2.data(), in.data(), in.data() + 7, rows, 7, 14);
        check("swiglu scalar", y2, r2, 1e-6);
    }
    // pool
    {
        std::vector<int> cu = {0, 1, 6, 40}; int B = 3, C = 300, dim = 100;
        std::vector<float> x(40 * C), g(C), y(B * dim);
        for (auto &e : x) e = rnd() * 4; for (auto &e : g) e = 1 + 0.5f * rnd();
        std::vector<double> ry(B * dim);
        for (int b = 0; b < B; b++) { const float *r = &x[(cu[b + 1] - 1) * C]; double sq = 0; for (int c = 0; c < C; c++) sq += (double)r[c] * r[c];
            double inv = 1 / sqrt(sq / C + 1e-6), s2 = 0; std::vector<double> h(dim);
            for (int c = 0; c < dim; c++) { h[c] = g[c] * (r[c] * inv); s2 += h[c] * h[c]; }
            for (int c = 0; c < dim; c++) ry[b * dim + c] = h[c] / sqrt(s2); }
        eb_cuda_pool_args a; memset(&a, 0, sizeof(a));
        a.y = y.data(), a.x = x.data(), a.ldx = C, a.C = C, a.dim = dim, a.B = B, a.cu_seqlens = cu.data(), a.gain = g.data(), a.eps = 1e-6f;
        eb_cuda_pool_last_l2(0, &a);
        check("pool_last_l2 packed, dim 100 of 300", y, ry, 1e-6);
    }
    // embed bf16 vec and scalar, out-of-range id -> NaN
    for (int vec = 0; vec < 2; vec++) {
        int V = 20, C = vec ? 64 : 30, n = 4;
        std::vector<__nv_bfloat16> t(V * C); for (auto &e : t) e = __float2bfloat16_rn(rnd());
        std::vector<int32_t> ids = {19, 0, 7, 7};
        std::vector<float> y(n * C); std::vector<double> ry(n * C);
        for (int i = 0; i < n; i++) for (int c = 0; c < C; c++) ry[i * C + c] = __bfloat162float(t[ids[i] * C + c]);
        eb_cuda_embed(0, y.data(), t.data(), 1, V, C, ids.data(), n);
        check(vec ? "embed bf16 16-byte" : "embed bf16 scalar", y, ry, 0.0);
    }
    printf("emu: %d failure(s)\n", fails);
    return fails ? 1 : 0;
}
