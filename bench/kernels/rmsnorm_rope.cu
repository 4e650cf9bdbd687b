/* Kernel lab: Qwen3's row-wise kernels — RMSNorm (+ residual), per-head q_norm/k_norm fused
 * with RoPE, SwiGLU, last-token pooling + final norm + L2, token embedding gather (BF16).
 *
 *   nvcc -O3 -std=c++17 -arch=sm_90 -o lab_rmsnorm_rope rmsnorm_rope.cu && ./lab_rmsnorm_rope
 *
 * rmsnorm     version 1 (here): one block of 256 threads per row, shared-memory reduction.
 *             version 2: one warp per row, float4. PROMOTED: eb_cuda_rmsnorm.cu rmsnorm_kernel2.
 * qk_norm_rope version 1 (here): the unfused sequence — rmsnorm_kernel1 over every (token, head)
 *             row, then one thread per rotation pair computing its own angle.
 *             version 2: one warp per token, cos/sin once per token, every head normalised and
 *             rotated in registers. PROMOTED: eb_cuda_rope.cu qk_norm_rope_kernel2.
 * swiglu      version 1 (promoted as is): eb_cuda_swiglu.cu swiglu_kernel1 (float4).
 * pool_last   version 1 (promoted as is): eb_cuda_pool_last.cu pool_last_l2_kernel1.
 * embed       version 1 (promoted as is): eb_cuda_embed.cu embed_kernel1 (16-byte BF16 loads).
 * The promoted files are included, so the lab checks and times the backend's code. References
 * are on the CPU, in double except where the CPU backend's fp32 steps define the result (RoPE's
 * inv_freq and angle, computed here exactly as eb_cpu_ops.c does: powf and fp32 products).
 * Tolerances (rel_l2): rmsnorm, rope 1e-5 (positions up to 8,191); swiglu, pool 1e-6; embed 0.
 * Timing at 1,024 texts x 64 tokens (65,536 rows: the host-side inputs of larger shapes take
 * longer to make than the kernels take to run).
 */
#include "lab_common.cuh"

#include "../../gpu_worker/cuda/eb_cuda_embed.cu"
#include "../../gpu_worker/cuda/eb_cuda_pool_last.cu"
#include "../../gpu_worker/cuda/eb_cuda_rmsnorm.cu"
#include "../../gpu_worker/cuda/eb_cuda_rope.cu"
#include "../../gpu_worker/cuda/eb_cuda_swiglu.cu"

#include <vector>

// ---- version 1 kernels -----------------------------------------------------------------------
__global__ void rmsnorm_kernel1(float *y, float *x, const float *res, const float *g, int C,
                                int64_t ld, float eps)
{
    __shared__ float red[32];
    float *xr = x + blockIdx.x * ld, *yr = y + blockIdx.x * ld;
    float sq = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float v = xr[i];
        if (res) {
            v += res[blockIdx.x * ld + i];
            xr[i] = v;
        }
        sq += v * v;
    }
    sq = eb_block_sum(sq, red);
    float inv = 1.0f / sqrtf(sq / (float)C + eps);
    for (int i = threadIdx.x; i < C; i += blockDim.x)
        yr[i] = g[i] * (xr[i] * inv);
}

// x (rows = tokens*H, D) in place: rotate pair i of row r at the position of its token
// (r / H) in a packed batch (its sequence by binary search in cu).
__global__ void rope_kernel1(float *x, int64_t rows, int H, int D, const int32_t *cu, int B,
                             float theta)
{
    int64_t n = rows * (D / 2);
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / (D / 2);
        int j = (int)(i % (D / 2));
        int64_t tok = r / H;
        int b = seq_of_row(cu, B, tok);
        float pos = (float)(tok - cu[b]);
        float inv_freq = 1.0f / (float)pow((double)theta, (double)((float)(2 * j) / (float)D));
        float ang = pos * inv_freq;
        float c = (float)cos((double)ang), s = (float)sin((double)ang);
        float *p = x + r * D;
        float a = p[j], bb = p[j + D / 2];
        p[j] = a * c - bb * s;
        p[j + D / 2] = bb * c + a * s;
    }
}

// ---- helpers -----------------------------------------------------------------------------------
static double rel_l2_host(const float *got, const double *ref, size_t n, size_t *bad)
{
    double se = 0, sr = 0;
    *bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) {
            (*bad)++;
            continue;
        }
        double d = got[i] - ref[i];
        se += d * d, sr += ref[i] * ref[i];
    }
    return sr > 0 ? sqrt(se / sr) : sqrt(se);
}

static void report(const char *what, const float *dev, const double *ref, size_t n, double tol)
{
    std::vector<float> h(n);
    CK(cudaMemcpy(h.data(), dev, n * 4, cudaMemcpyDeviceToHost));
    size_t bad;
    double rl2 = rel_l2_host(h.data(), ref, n, &bad);
    bool ok = bad == 0 && rl2 <= tol;
    printf("  %-60s rel_l2 %.2e (tol %.0e) %s\n", what, rl2, tol, ok ? "ok" : "FAIL");
    if (!ok)
        lab_failures++;
}

// ---- rmsnorm -----------------------------------------------------------------------------------
static void lab_rmsnorm(int64_t rows, int C, int64_t ld, bool residual, bool time_it)
{
    size_t n = (size_t)rows * ld;
    float *hx = lab_rand_host(n, 11 + C, 3.0f), *hr = lab_rand_host(n, 12 + C, 1.0f);
    float *hg = lab_rand_host((size_t)C, 13, 1.0f);
    bool check = !time_it; // the timing shape is only timed (its reference would take GBs)
    std::vector<double> ref(check ? n : 0, 0.0), refx(check ? n : 0, 0.0);
    for (size_t i = 0; i < refx.size(); i++)
        refx[i] = hx[i]; // gaps between rows keep x
    for (int64_t r = 0; check && r < rows; r++) {
        double sq = 0;
        for (int c = 0; c < C; c++) {
            // the residual sum is an fp32 addition on the device too
            double v = residual ? (double)(hx[r * ld + c] + hr[r * ld + c]) : (double)hx[r * ld + c];
            refx[r * ld + c] = v;
            sq += v * v;
        }
        double inv = 1.0 / sqrt(sq / C + 1e-6);
        for (int c = 0; c < C; c++)
            ref[r * ld + c] = hg[c] * (refx[r * ld + c] * inv);
    }
    float *dx = lab_to_device(hx, n), *dr = lab_to_device(hr, n), *dg = lab_to_device(hg, C);
    float *dy;
    CK(cudaMalloc(&dy, n * 4));
    char what[128];
    for (int ver = 1; ver <= 2; ver++) {
        CK(cudaMemcpy(dx, hx, n * 4, cudaMemcpyHostToDevice));
        CK(cudaMemset(dy, 0, n * 4)); // gaps between rows stay 0 like the reference
        if (ver == 1)
            rmsnorm_kernel1<<<(unsigned)rows, 256>>>(dy, dx, residual ? dr : nullptr, dg, C, ld,
                                                      1e-6f);
        else
            CK(eb_cuda_rmsnorm_residual(0, dy, dx, residual ? dr : nullptr, dg, rows, C, ld, 1e-6f));
        CK(cudaDeviceSynchronize());
        if (!check)
            continue;
        snprintf(what, sizeof(what), "rmsnorm v%d %lldx%d ld %lld%s", ver, (long long)rows, C,
                 (long long)ld, residual ? " +residual" : "");
        report(what, dy, ref.data(), n, 1e-5);
        if (residual) {
            snprintf(what, sizeof(what), "rmsnorm v%d residual stream x += r", ver);
            report(what, dx, refx.data(), n, 1e-7);
        }
    }
    if (time_it) {
        double bytes = (double)rows * C * 4 * (residual ? 4 : 2);
        double us1 = lab_time_us([&] { rmsnorm_kernel1<<<(unsigned)rows, 256>>>(dy, dx, residual ? dr : nullptr, dg, C, ld, 1e-6f); }, 20);
        double us2 = lab_time_us([&] { CK(eb_cuda_rmsnorm_residual(0, dy, dx, residual ? dr : nullptr, dg, rows, C, ld, 1e-6f)); }, 20);
        printf("  timing rmsnorm %lldx%d: v1 %.1f us (%.0f GB/s), v2 %.1f us (%.0f GB/s)\n",
               (long long)rows, C, us1, bytes / us1 / 1e3, us2, bytes / us2 / 1e3);
    }
    free(hx), free(hr), free(hg);
    cudaFree(dx), cudaFree(dr), cudaFree(dg), cudaFree(dy);
}

// ---- q_norm/k_norm + RoPE --------------------------------------------------------------------
static void lab_qk_rope(const std::vector<int> &lens, int H, int Hkv, int D, float theta,
                        bool time_it)
{
    int B = (int)lens.size();
    std::vector<int32_t> cu(B + 1, 0);
    for (int b = 0; b < B; b++)
        cu[b + 1] = cu[b] + lens[b];
    int64_t T = cu[B];
    size_t nq = (size_t)T * H * D, nk = (size_t)T * Hkv * D;
    float *hq = lab_rand_host(nq, 21, 2.0f), *hk = lab_rand_host(nk, 22, 2.0f);
    float *gq = lab_rand_host(D, 23, 1.0f), *gk = lab_rand_host(D, 24, 1.0f);
    for (int d = 0; d < D; d++)
        gq[d] += 1.0f, gk[d] += 1.0f;
    bool check = !time_it;
    std::vector<double> rq(check ? nq : 0), rk(check ? nk : 0);
    int half = D / 2;
    std::vector<float> cs(half), sn(half);
    for (int b = 0; check && b < B; b++)
        for (int t = 0; t < lens[b]; t++) {
            for (int i = 0; i < half; i++) { // exactly the CPU backend's fp32 steps
                float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)D);
                float ang = (float)t * inv_freq;
                cs[i] = (float)cos((double)ang), sn[i] = (float)sin((double)ang);
            }
            for (int which = 0; which < 2; which++) {
                int nh = which ? Hkv : H;
                const float *src = which ? hk : hq;
                const float *g = which ? gk : gq;
                std::vector<double> &dst = which ? rk : rq;
                for (int h = 0; h < nh; h++) {
                    size_t o = ((size_t)(cu[b] + t) * nh + h) * D;
                    double sq = 0;
                    for (int d = 0; d < D; d++)
                        sq += (double)src[o + d] * src[o + d];
                    double inv = 1.0 / sqrt(sq / D + 1e-6);
                    for (int i = 0; i < half; i++) {
                        double a = g[i] * (src[o + i] * inv), bb = g[i + half] * (src[o + i + half] * inv);
                        dst[o + i] = a * cs[i] - bb * sn[i];
                        dst[o + i + half] = bb * cs[i] + a * sn[i];
                    }
                }
            }
        }
    float *dq = lab_to_device(hq, nq), *dk = lab_to_device(hk, nk);
    float *dgq = lab_to_device(gq, D), *dgk = lab_to_device(gk, D);
    int32_t *dcu;
    CK(cudaMalloc(&dcu, (B + 1) * 4));
    CK(cudaMemcpy(dcu, cu.data(), (B + 1) * 4, cudaMemcpyHostToDevice));
    eb_cuda_qk_rope_args a;
    memset(&a, 0, sizeof(a));
    a.q = dq, a.k = dk, a.q_gain = dgq, a.k_gain = dgk;
    a.q_ts = (int64_t)H * D, a.k_ts = (int64_t)Hkv * D, a.tokens = T, a.H = H, a.Hkv = Hkv;
    a.D = D, a.B = B, a.cu_seqlens = dcu, a.eps = 1e-6f, a.theta = theta;
    auto run_v1 = [&] {
        rmsnorm_kernel1<<<(unsigned)(T * H), 128>>>(dq, dq, nullptr, dgq, D, D, 1e-6f);
        rmsnorm_kernel1<<<(unsigned)(T * Hkv), 128>>>(dk, dk, nullptr, dgk, D, D, 1e-6f);
        rope_kernel1<<<eb_grid_for(T * H * half, 256), 256>>>(dq, T * H, H, D, dcu, B, theta);
        rope_kernel1<<<eb_grid_for(T * Hkv * half, 256), 256>>>(dk, T * Hkv, Hkv, D, dcu, B, theta);
    };
    char what[160];
    int maxlen = 0;
    for (int l : lens)
        maxlen = l > maxlen ? l : maxlen;
    for (int ver = 1; ver <= 2; ver++) {
        CK(cudaMemcpy(dq, hq, nq * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dk, hk, nk * 4, cudaMemcpyHostToDevice));
        if (ver == 1)
            run_v1();
        else
            CK(eb_cuda_qk_norm_rope(0, &a));
        CK(cudaDeviceSynchronize());
        if (!check)
            continue;
        snprintf(what, sizeof(what), "qk_norm_rope v%d q: %d seqs (max %d) H%d D%d", ver, B, maxlen,
                 H, D);
        report(what, dq, rq.data(), nq, 1e-5);
        snprintf(what, sizeof(what), "qk_norm_rope v%d k: Hkv%d", ver, Hkv);
        report(what, dk, rk.data(), nk, 1e-5);
    }
    // padded addressing (no cu_seqlens) on a single sequence gives the same result
    if (B == 1 && check) {
        CK(cudaMemcpy(dq, hq, nq * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dk, hk, nk * 4, cudaMemcpyHostToDevice));
        eb_cuda_qk_rope_args pa = a;
        pa.cu_seqlens = nullptr, pa.T = T, pa.q_bs = T * H * D, pa.k_bs = T * Hkv * D;
        CK(eb_cuda_qk_norm_rope(0, &pa));
        CK(cudaDeviceSynchronize());
        report("qk_norm_rope v2 padded addressing (T = len) q", dq, rq.data(), nq, 1e-5);
    }
    if (time_it) {
        double bytes = 2.0 * 4 * (nq + nk);
        double us1 = lab_time_us(run_v1, 10);
        double us2 = lab_time_us([&] { CK(eb_cuda_qk_norm_rope(0, &a)); }, 10);
        printf("  timing qk_norm_rope %lld tokens H%d/%d D%d: v1 %.1f us, v2 %.1f us (%.0f GB/s)\n",
               (long long)T, H, Hkv, D, us1, us2, bytes / us2 / 1e3);
    }
    free(hq), free(hk), free(gq), free(gk);
    cudaFree(dq), cudaFree(dk), cudaFree(dgq), cudaFree(dgk), cudaFree(dcu);
}

// ---- swiglu ------------------------------------------------------------------------------------
static void lab_swiglu(int64_t rows, int64_t F, int64_t ld, bool time_it)
{
    size_t n = (size_t)rows * ld;
    float *hin = lab_rand_host(n, 31, 6.0f);
    bool check = !time_it;
    std::vector<double> ref(check ? (size_t)rows * F : 0);
    for (int64_t r = 0; check && r < rows; r++)
        for (int64_t c = 0; c < F; c++) {
            double g = hin[r * ld + c], u = hin[r * ld + F + c];
            ref[r * F + c] = g / (1.0 + exp(-g)) * u;
        }
    float *din = lab_to_device(hin, n), *dy;
    CK(cudaMalloc(&dy, (size_t)rows * F * 4));
    CK(eb_cuda_swiglu(0, dy, din, din + F, rows, F, ld));
    CK(cudaDeviceSynchronize());
    char what[128];
    snprintf(what, sizeof(what), "swiglu v1 %lldx%lld ld %lld", (long long)rows, (long long)F,
             (long long)ld);
    if (check)
        report(what, dy, ref.data(), (size_t)rows * F, 1e-6);
    if (time_it) {
        double us = lab_time_us([&] { CK(eb_cuda_swiglu(0, dy, din, din + F, rows, F, ld)); }, 20);
        printf("  timing swiglu %lldx%lld: %.1f us (%.0f GB/s)\n", (long long)rows, (long long)F,
               us, 12.0 * rows * F / us / 1e3);
    }
    free(hin);
    cudaFree(din), cudaFree(dy);
}

// ---- pool_last + final norm + l2 -----------------------------------------------------------------
static void lab_pool(const std::vector<int> &lens, int C, int dim, bool gain)
{
    int B = (int)lens.size();
    std::vector<int32_t> cu(B + 1, 0);
    for (int b = 0; b < B; b++)
        cu[b + 1] = cu[b] + lens[b];
    size_t n = (size_t)cu[B] * C;
    float *hx = lab_rand_host(n, 41, 5.0f), *hg = lab_rand_host(C, 42, 1.0f);
    std::vector<double> ref((size_t)B * dim);
    for (int b = 0; b < B; b++) {
        const float *x = hx + (size_t)(cu[b + 1] - 1) * C;
        double sq = 0, inv = 1.0;
        for (int c = 0; c < C; c++)
            sq += (double)x[c] * x[c];
        if (gain)
            inv = 1.0 / sqrt(sq / C + 1e-6);
        std::vector<double> h(dim);
        double s2 = 0;
        for (int c = 0; c < dim; c++) {
            h[c] = gain ? hg[c] * (x[c] * inv) : x[c];
            s2 += h[c] * h[c];
        }
        for (int c = 0; c < dim; c++)
            ref[(size_t)b * dim + c] = h[c] / sqrt(s2);
    }
    float *dx = lab_to_device(hx, n), *dg = lab_to_device(hg, C), *dy;
    CK(cudaMalloc(&dy, (size_t)B * dim * 4));
    int32_t *dcu;
    CK(cudaMalloc(&dcu, (B + 1) * 4));
    CK(cudaMemcpy(dcu, cu.data(), (B + 1) * 4, cudaMemcpyHostToDevice));
    eb_cuda_pool_args a;
    memset(&a, 0, sizeof(a));
    a.y = dy, a.x = dx, a.ldx = C, a.C = C, a.dim = dim, a.B = B, a.cu_seqlens = dcu;
    a.gain = gain ? dg : nullptr, a.eps = 1e-6f;
    CK(eb_cuda_pool_last_l2(0, &a));
    CK(cudaDeviceSynchronize());
    char what[128];
    snprintf(what, sizeof(what), "pool_last_l2 v1 %d seqs C%d dim %d%s", B, C, dim,
             gain ? " +final norm" : "");
    report(what, dy, ref.data(), (size_t)B * dim, 1e-6);
    free(hx), free(hg);
    cudaFree(dx), cudaFree(dg), cudaFree(dy), cudaFree(dcu);
}

// ---- embed (BF16 table) ------------------------------------------------------------------------
static void lab_embed(int64_t V, int64_t C, int64_t n, bool time_it)
{
    std::vector<__nv_bfloat16> tab((size_t)(V * C));
    uint64_t s = 51;
    for (auto &t : tab)
        t = __float2bfloat16_rn(lab_rand(&s));
    std::vector<int32_t> ids((size_t)n);
    for (int64_t i = 0; i < n; i++) {
        int64_t id = (int64_t)((lab_rand(&s) * 0.5f + 0.5f) * (float)V);
        ids[i] = (int32_t)(i == 0 ? V - 1 : i == 1 ? 0 : (id < V ? id : V - 1)); // both ends
    }
    bool check = !time_it;
    std::vector<double> ref(check ? (size_t)(n * C) : 0);
    for (int64_t i = 0; check && i < n; i++)
        for (int64_t c = 0; c < C; c++)
            ref[i * C + c] = __bfloat162float(tab[ids[i] * C + c]);
    __nv_bfloat16 *dt;
    int32_t *di;
    float *dy;
    CK(cudaMalloc(&dt, tab.size() * 2));
    CK(cudaMalloc(&di, ids.size() * 4));
    CK(cudaMalloc(&dy, (size_t)(n * C) * 4));
    CK(cudaMemcpy(dt, tab.data(), tab.size() * 2, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(di, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice));
    CK(eb_cuda_embed(0, dy, dt, 1, V, C, di, n));
    CK(cudaDeviceSynchronize());
    char what[128];
    snprintf(what, sizeof(what), "embed v1 bf16 %lld ids of %lldx%lld", (long long)n, (long long)V,
             (long long)C);
    if (check)
        report(what, dy, ref.data(), (size_t)(n * C), 0.0);
    if (time_it) {
        double us = lab_time_us([&] { CK(eb_cuda_embed(0, dy, dt, 1, V, C, di, n)); }, 20);
        printf("  timing embed %lld rows of %lld: %.1f us (%.0f GB/s)\n", (long long)n,
               (long long)C, us, 6.0 * n * C / us / 1e3);
    }
    cudaFree(dt), cudaFree(di), cudaFree(dy);
}

int main(void)
{
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("lab_rmsnorm_rope: skipped: no CUDA device\n");
        return 77;
    }
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, 0));
    printf("lab_rmsnorm_rope on %s\n", p.name);
    // LAB_QUICK=1 (bench/kernels/emu/run: the CPU emulation) skips the large and timed shapes.
    const char *qk = getenv("LAB_QUICK");
    bool quick = qk && strcmp(qk, "1") == 0;
    lab_rmsnorm(333, 1024, 1024, true, false);
    lab_rmsnorm(quick ? 64 : 4096, 128, 128, false, false); // per-head norm rows
    lab_rmsnorm(17, 30, 33, true, false);                   // odd: scalar path
    if (!quick)
        lab_rmsnorm(65536, 1024, 1024, true, true); // 1,024 texts x 64 tokens
    lab_qk_rope({1, 7, 64, 129, 300}, 16, 8, 128, 1000000.0f, false);
    if (!quick)
        lab_qk_rope({8192}, 16, 8, 128, 1000000.0f, false);
    lab_qk_rope({5, 1, 33}, 4, 2, 32, 10000.0f, false); // qwen3-tiny
    if (!quick)
        lab_qk_rope(std::vector<int>(1024, 64), 16, 8, 128, 1000000.0f, true);
    lab_swiglu(333, 3072, 6144, false);
    lab_swiglu(7, 13, 26, false); // odd: scalar path
    if (!quick)
        lab_swiglu(65536, 3072, 6144, true);
    lab_pool({1, 7, 64, 8192}, 1024, 1024, true);
    lab_pool({3, 2}, 1024, 256, true); // Matryoshka truncation
    lab_pool({5}, 64, 32, false);
    lab_embed(quick ? 5000 : 151669, 1024, quick ? 100 : 1000, false);
    lab_embed(50, 30, 9, false); // odd: scalar path
    if (!quick)
        lab_embed(151669, 1024, 65536, true);
    printf("lab_rmsnorm_rope: %d failure(s)\n", lab_failures);
    return lab_failures ? 1 : 0;
}
