/* Kernel lab: causal grouped-query attention over packed variable-length sequences (Qwen3).
 *
 *   nvcc -O3 -std=c++17 -arch=sm_90 -o lab_attn_varlen attn_varlen.cu && ./lab_attn_varlen
 *
 * version 1 (here): one block per (token, query head); the scores of that row in shared memory
 *            (up to 8,192 floats), block-wide max and sum, then p·v. Obviously right, slow: the
 *            GPU reference for the long cases the CPU cannot afford in full.
 * version 2: fp32 SIMT flash attention (online softmax, key tiles in shared memory, the query
 *            heads of a KV group in one block). PROMOTED: gpu_worker/cuda/eb_cuda_attn_varlen.cu
 *            attn_varlen_kernel2, the backend's exact path.
 * version 3: BF16 tensor cores (WMMA), 64 rows x 64 keys per tile, fp32 softmax and output
 *            accumulator in shared memory. PROMOTED beside version 2 (attn_varlen_kernel3),
 *            opt-in (BF16 numerics).
 * Versions 2 and 3 are included from gpu_worker/cuda/ so this lab checks and times exactly the
 * code the backend runs.
 *
 * Checks: every version against a double-precision CPU reference (all rows for short
 * sequences; a sample of rows, always including the last ones, for 8,192 tokens), and versions
 * 2/3 against version 1 on every row of the long cases. Shapes: Qwen3-0.6B (H 16, Hkv 8, D 128)
 * and qwen3-tiny (H 4, Hkv 2, D 32), packed batches of mixed lengths including 1 and 8,192,
 * odd lengths, a fused qkv row stride, the padded layout with lengths (zero rows), BF16 I/O.
 * Tolerances (rel_l2 over the checked rows): fp32 1e-5; BF16 inputs or tensor cores 2e-2.
 * Timing at Qwen3-0.6B shapes: 4,096 texts x 64 tokens, 256 x 64, and one 8,192-token document.
 */
#include "lab_common.cuh"

#include "../../gpu_worker/cuda/eb_cuda_attn_varlen.cu"

#include <vector>

// ---- version 1 ---------------------------------------------------------------------------------
#define V1_THREADS 128

__device__ float v1_block_reduce(float v, float *red, bool is_max)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = is_max ? lab_dwarp_max(v) : lab_dwarp_sum(v);
    __syncthreads();
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    float r = lane < nw ? red[lane] : (is_max ? -INFINITY : 0.0f);
    return is_max ? lab_dwarp_max(r) : lab_dwarp_sum(r);
}

// grid (total tokens, H). Packed layout only (cu_seqlens).
__global__ void attn_varlen_kernel1(float *out, const float *q, const float *k, const float *v,
                                    eb_cuda_varlen_args a)
{
    extern __shared__ float sm1[];
    __shared__ float red[32];
    const int D = a.D, G = a.H / a.Hkv;
    int r = blockIdx.x, h = blockIdx.y, hk = h / G;
    int lo = 0, hi = a.B - 1; // sequence of row r
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (a.cu_seqlens[mid] <= r)
            lo = mid;
        else
            hi = mid - 1;
    }
    int start = a.cu_seqlens[lo], len = a.cu_seqlens[lo + 1] - start, t = r - start;
    float *sq = sm1, *ss = sm1 + D;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        sq[d] = q[(int64_t)r * a.q_ts + h * D + d];
    __syncthreads();
    int nk = a.causal ? t + 1 : len;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < nk; j += blockDim.x) {
        const float *kr = k + (int64_t)(start + j) * a.k_ts + hk * D;
        float s = 0.0f;
        for (int d = 0; d < D; d++)
            s += sq[d] * kr[d];
        s *= a.scale;
        ss[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = v1_block_reduce(mx, red, true);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < nk; j += blockDim.x) {
        float p = expf(ss[j] - mx);
        ss[j] = p;
        sum += p;
    }
    sum = v1_block_reduce(sum, red, false);
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < nk; j++)
            acc += ss[j] * v[(int64_t)(start + j) * a.v_ts + hk * D + d];
        out[(int64_t)r * a.o_ts + h * D + d] = acc / sum;
    }
}

// ---- CPU reference (double) ------------------------------------------------------------------
// One output row (token t of the sequence starting at row `start`, head h) of the packed layout.
static void cpu_row(double *o, const float *q, const float *k, const float *v,
                    const eb_cuda_varlen_args &a, int64_t start, int len, int t, int h)
{
    int D = a.D, hk = h / (a.H / a.Hkv), nk = a.causal ? t + 1 : len;
    std::vector<double> s(nk);
    double mx = -1e300;
    const float *qr = q + (start + t) * a.q_ts + (int64_t)h * D;
    for (int j = 0; j < nk; j++) {
        const float *kr = k + (start + j) * a.k_ts + (int64_t)hk * D;
        double acc = 0;
        for (int d = 0; d < D; d++)
            acc += (double)qr[d] * kr[d];
        s[j] = acc * a.scale;
        mx = s[j] > mx ? s[j] : mx;
    }
    double sum = 0;
    for (int j = 0; j < nk; j++) {
        s[j] = exp(s[j] - mx);
        sum += s[j];
    }
    for (int d = 0; d < D; d++) {
        double acc = 0;
        for (int j = 0; j < nk; j++)
            acc += s[j] * v[(start + j) * a.v_ts + (int64_t)hk * D + d];
        o[d] = acc / sum;
    }
}

static float bf16_round(float x)
{
    return __bfloat162float(__float2bfloat16_rn(x));
}

// Compare rows `rows` (token rows of the packed layout, all heads) of got against ref.
static void check_rows(const char *what, const std::vector<int64_t> &rows, const float *got,
                       const double *ref, int64_t o_ts, int HD, double tol)
{
    double se = 0, sr = 0, maxd = 0;
    size_t bad = 0;
    for (size_t i = 0; i < rows.size(); i++)
        for (int c = 0; c < HD; c++) {
            float g = got[rows[i] * o_ts + c];
            double r = ref[i * HD + c];
            if (!isfinite(g)) {
                bad++;
                continue;
            }
            double d = fabs(g - r);
            se += d * d, sr += r * r;
            maxd = d > maxd ? d : maxd;
        }
    double rl2 = sr > 0 ? sqrt(se / sr) : sqrt(se);
    bool ok = bad == 0 && rl2 <= tol;
    printf("  %-62s rel_l2 %.2e max_abs %.2e (tol %.0e) %s\n", what, rl2, maxd, tol,
           ok ? "ok" : "FAIL");
    if (!ok)
        lab_failures++;
}

struct vcase {
    const char *name;
    std::vector<int> lens;
    int H, Hkv, D;
    bool fused; // q, k, v inside one (tokens, (H + 2 Hkv) D) row
    int sample; // 0: check every row against the CPU; else this many rows per long sequence
};

static void run_case(const vcase &c, uint64_t seed)
{
    int B = (int)c.lens.size();
    std::vector<int32_t> cu(B + 1, 0);
    int maxlen = 0;
    for (int b = 0; b < B; b++) {
        cu[b + 1] = cu[b] + c.lens[b];
        maxlen = c.lens[b] > maxlen ? c.lens[b] : maxlen;
    }
    int64_t T = cu[B];
    int HD = c.H * c.D, KD = c.Hkv * c.D;
    int64_t row = c.fused ? HD + 2 * KD : 0;
    int64_t nq = c.fused ? T * row : T * HD, nk = c.fused ? 0 : T * KD;
    float *hq = lab_rand_host((size_t)nq, seed, 2.0f);
    float *hk = nk ? lab_rand_host((size_t)nk, seed + 1, 2.0f) : nullptr;
    float *hv = nk ? lab_rand_host((size_t)nk, seed + 2, 1.0f) : nullptr;
    eb_cuda_varlen_args a;
    memset(&a, 0, sizeof(a));
    a.B = B, a.H = c.H, a.Hkv = c.Hkv, a.D = c.D, a.max_seqlen = maxlen;
    a.q_ts = c.fused ? row : HD, a.k_ts = a.v_ts = c.fused ? row : KD, a.o_ts = HD;
    a.scale = 1.0f / sqrtf((float)c.D);
    a.causal = 1;
    const float *cq = hq, *ck = c.fused ? hq + HD : hk, *cv = c.fused ? hq + HD + KD : hv;

    // rows to check against the CPU
    std::vector<int64_t> rows;
    for (int b = 0; b < B; b++) {
        int len = c.lens[b];
        if (!c.sample || len <= 2 * c.sample) {
            for (int t = 0; t < len; t++)
                rows.push_back(cu[b] + t);
        } else {
            uint64_t s = seed * 31 + b;
            for (int i = 0; i < c.sample / 2; i++)
                rows.push_back(cu[b] + (int64_t)((lab_rand(&s) * 0.5f + 0.5f) * (len - 1)));
            for (int t = len - c.sample / 2; t < len; t++)
                rows.push_back(cu[b] + t);
        }
    }
    std::vector<double> ref(rows.size() * HD), ref_b(rows.size() * HD);
    // BF16-rounded inputs for the BF16 I/O and tensor-core references
    float *rq = (float *)malloc((size_t)nq * 4), *rk = nk ? (float *)malloc((size_t)nk * 4) : 0,
          *rv = nk ? (float *)malloc((size_t)nk * 4) : 0;
    for (int64_t i = 0; i < nq; i++)
        rq[i] = bf16_round(hq[i]);
    for (int64_t i = 0; i < nk; i++)
        rk[i] = bf16_round(hk[i]), rv[i] = bf16_round(hv[i]);
    const float *bq = rq, *bk = c.fused ? rq + HD : rk, *bv = c.fused ? rq + HD + KD : rv;
    for (size_t i = 0; i < rows.size(); i++) {
        int b = 0;
        while (cu[b + 1] <= rows[i])
            b++;
        int t = (int)(rows[i] - cu[b]);
        for (int h = 0; h < c.H; h++) {
            cpu_row(&ref[i * HD + (size_t)h * c.D], cq, ck, cv, a, cu[b], c.lens[b], t, h);
            cpu_row(&ref_b[i * HD + (size_t)h * c.D], bq, bk, bv, a, cu[b], c.lens[b], t, h);
        }
    }

    float *dq = lab_to_device(hq, (size_t)nq);
    float *dk = nk ? lab_to_device(hk, (size_t)nk) : nullptr, *dv = nk ? lab_to_device(hv, (size_t)nk) : nullptr;
    const float *qk = dq, *kk = c.fused ? dq + HD : dk, *vk = c.fused ? dq + HD + KD : dv;
    int32_t *dcu;
    CK(cudaMalloc(&dcu, (B + 1) * sizeof(int32_t)));
    CK(cudaMemcpy(dcu, cu.data(), (B + 1) * sizeof(int32_t), cudaMemcpyHostToDevice));
    a.cu_seqlens = dcu;
    float *dout, *dout1;
    CK(cudaMalloc(&dout, (size_t)T * HD * 4));
    CK(cudaMalloc(&dout1, (size_t)T * HD * 4));
    float *hout = (float *)malloc((size_t)T * HD * 4), *hout1 = (float *)malloc((size_t)T * HD * 4);
    char what[160];

    // version 1
    CK(cudaMemset(dout1, 0xff, (size_t)T * HD * 4)); // NaN: every row must be written
    size_t sm1 = (size_t)(c.D + maxlen) * 4;
    if (sm1 > 48 * 1024)
        CK(cudaFuncSetAttribute(attn_varlen_kernel1, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)sm1));
    attn_varlen_kernel1<<<dim3((unsigned)T, (unsigned)c.H), V1_THREADS, sm1>>>(dout1, qk, kk, vk, a);
    CK(cudaGetLastError());
    CK(cudaMemcpy(hout1, dout1, (size_t)T * HD * 4, cudaMemcpyDeviceToHost));
    snprintf(what, sizeof(what), "v1 %s", c.name);
    check_rows(what, rows, hout1, ref.data(), HD, HD, 1e-5);

    // versions 2 (fp32) and 3 (tensor cores)
    for (int ver = 2; ver <= 3; ver++) {
        if (ver == 3 && c.D != 64 && c.D != 128)
            continue;
        a.use_tensor_cores = ver == 3;
        CK(cudaMemset(dout, 0xff, (size_t)T * HD * 4));
        CK(eb_cuda_attn_varlen(0, dout, qk, kk, vk, &a));
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(hout, dout, (size_t)T * HD * 4, cudaMemcpyDeviceToHost));
        snprintf(what, sizeof(what), "v%d %s vs CPU", ver, c.name);
        check_rows(what, rows, hout, ver == 2 ? ref.data() : ref_b.data(), HD, HD,
                   ver == 2 ? 1e-5 : 2e-2);
        // every row against version 1 (fp32 GPU reference)
        std::vector<int64_t> all((size_t)T);
        std::vector<double> r1((size_t)T * HD);
        for (int64_t i = 0; i < T; i++)
            all[i] = i;
        for (int64_t i = 0; i < T * HD; i++)
            r1[i] = hout1[i];
        snprintf(what, sizeof(what), "v%d %s vs v1 (all %lld rows)", ver, c.name, (long long)T);
        check_rows(what, all, hout, r1.data(), HD, HD, ver == 2 ? 1e-5 : 2e-2);
    }
    a.use_tensor_cores = 0;

    // version 2 with BF16 in and out (packed, non-fused only)
    if (!c.fused) {
        std::vector<__nv_bfloat16> bq_((size_t)nq), bk_((size_t)nk), bv_((size_t)nk), bo((size_t)T * HD);
        for (int64_t i = 0; i < nq; i++)
            bq_[i] = __float2bfloat16_rn(hq[i]);
        for (int64_t i = 0; i < nk; i++)
            bk_[i] = __float2bfloat16_rn(hk[i]), bv_[i] = __float2bfloat16_rn(hv[i]);
        __nv_bfloat16 *dbq, *dbk, *dbv, *dbo;
        CK(cudaMalloc(&dbq, nq * 2));
        CK(cudaMalloc(&dbk, nk * 2));
        CK(cudaMalloc(&dbv, nk * 2));
        CK(cudaMalloc(&dbo, T * HD * 2));
        CK(cudaMemcpy(dbq, bq_.data(), nq * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dbk, bk_.data(), nk * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dbv, bv_.data(), nk * 2, cudaMemcpyHostToDevice));
        CK(cudaMemset(dbo, 0xff, T * HD * 2));
        CK(eb_cuda_attn_varlen_bf16io(0, dbo, dbq, dbk, dbv, &a));
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(bo.data(), dbo, T * HD * 2, cudaMemcpyDeviceToHost));
        for (int64_t i = 0; i < T * HD; i++)
            hout[i] = __bfloat162float(bo[i]);
        snprintf(what, sizeof(what), "v2 bf16 in/out %s vs CPU", c.name);
        check_rows(what, rows, hout, ref_b.data(), HD, HD, 2e-2);
        cudaFree(dbq), cudaFree(dbk), cudaFree(dbv), cudaFree(dbo);
    }
    free(hq), free(hk), free(hv), free(rq), free(rk), free(rv), free(hout), free(hout1);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dcu), cudaFree(dout), cudaFree(dout1);
}

// Padded layout (B, Tq) with lengths: rows >= len must be zeros, the rest as the packed result.
static void run_padded(int D)
{
    const int B = 3, Tq = 40, H = 4, Hkv = 2, HD = H * D, KD = Hkv * D;
    int lens[B] = {40, 17, 1};
    float *hq = lab_rand_host((size_t)B * Tq * HD, 91, 2.0f);
    float *hk = lab_rand_host((size_t)B * Tq * KD, 92, 2.0f);
    float *hv = lab_rand_host((size_t)B * Tq * KD, 93, 1.0f);
    float *dq = lab_to_device(hq, (size_t)B * Tq * HD), *dk = lab_to_device(hk, (size_t)B * Tq * KD);
    float *dv = lab_to_device(hv, (size_t)B * Tq * KD), *dout;
    int32_t *dl;
    CK(cudaMalloc(&dl, sizeof(lens)));
    CK(cudaMemcpy(dl, lens, sizeof(lens), cudaMemcpyHostToDevice));
    CK(cudaMalloc(&dout, (size_t)B * Tq * HD * 4));
    eb_cuda_varlen_args a;
    memset(&a, 0, sizeof(a));
    a.B = B, a.H = H, a.Hkv = Hkv, a.D = D, a.max_seqlen = Tq, a.Tq = Tq;
    a.q_ts = HD, a.k_ts = a.v_ts = KD, a.o_ts = HD;
    a.q_bs = (int64_t)Tq * HD, a.k_bs = a.v_bs = (int64_t)Tq * KD, a.o_bs = (int64_t)Tq * HD;
    a.scale = 1.0f / sqrtf((float)D), a.causal = 1, a.lens = dl;
    float *hout = (float *)malloc((size_t)B * Tq * HD * 4);
    for (int ver = 2; ver <= 3; ver++) {
        if (ver == 3 && D != 64 && D != 128)
            continue;
        a.use_tensor_cores = ver == 3;
        CK(cudaMemset(dout, 0xff, (size_t)B * Tq * HD * 4));
        CK(eb_cuda_attn_varlen(0, dout, dq, dk, dv, &a));
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(hout, dout, (size_t)B * Tq * HD * 4, cudaMemcpyDeviceToHost));
        double se = 0, sr = 0;
        size_t nonzero_pad = 0, bad = 0;
        std::vector<double> o(D);
        eb_cuda_varlen_args pa = a;
        pa.q_ts = HD, pa.k_ts = pa.v_ts = KD;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < Tq; t++)
                for (int h = 0; h < H; h++) {
                    const float *g = hout + ((size_t)b * Tq + t) * HD + (size_t)h * D;
                    if (t >= lens[b]) {
                        for (int d = 0; d < D; d++)
                            nonzero_pad += g[d] != 0.0f;
                        continue;
                    }
                    cpu_row(o.data(), hq + (size_t)b * Tq * HD, hk + (size_t)b * Tq * KD,
                            hv + (size_t)b * Tq * KD, pa, 0, lens[b], t, h);
                    for (int d = 0; d < D; d++) {
                        if (!isfinite(g[d]))
                            bad++;
                        se += (g[d] - o[d]) * (g[d] - o[d]), sr += o[d] * o[d];
                    }
                }
        double rl2 = sqrt(se / sr), tol = ver == 2 ? 1e-5 : 2e-2;
        bool ok = rl2 <= tol && nonzero_pad == 0 && bad == 0;
        printf("  v%d padded (3x40, lens 40/17/1, H4/2 D%d): rel_l2 %.2e, %zu non-zero padding "
               "values, %zu non-finite %s\n",
               ver, D, rl2, nonzero_pad, bad, ok ? "ok" : "FAIL");
        if (!ok)
            lab_failures++;
    }
    free(hq), free(hk), free(hv), free(hout);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dout), cudaFree(dl);
}

static void time_case(const char *name, int B, int len, int H, int Hkv, int D)
{
    int64_t T = (int64_t)B * len;
    int HD = H * D, KD = Hkv * D;
    float *dq, *dk, *dv, *dout;
    CK(cudaMalloc(&dq, (size_t)T * HD * 4));
    CK(cudaMalloc(&dk, (size_t)T * KD * 4));
    CK(cudaMalloc(&dv, (size_t)T * KD * 4));
    CK(cudaMalloc(&dout, (size_t)T * HD * 4));
    CK(cudaMemset(dq, 0, (size_t)T * HD * 4));
    CK(cudaMemset(dk, 0, (size_t)T * KD * 4));
    CK(cudaMemset(dv, 0, (size_t)T * KD * 4));
    std::vector<int32_t> cu(B + 1);
    for (int b = 0; b <= B; b++)
        cu[b] = b * len;
    int32_t *dcu;
    CK(cudaMalloc(&dcu, (B + 1) * 4));
    CK(cudaMemcpy(dcu, cu.data(), (B + 1) * 4, cudaMemcpyHostToDevice));
    eb_cuda_varlen_args a;
    memset(&a, 0, sizeof(a));
    a.B = B, a.H = H, a.Hkv = Hkv, a.D = D, a.max_seqlen = len;
    a.q_ts = HD, a.k_ts = a.v_ts = KD, a.o_ts = HD, a.scale = 1.0f / sqrtf((float)D);
    a.causal = 1, a.cu_seqlens = dcu;
    // causal flops: 4 · H · D · (len (len + 1) / 2) per sequence
    double flops = 4.0 * H * D * ((double)len * (len + 1) / 2) * B;
    for (int ver = 2; ver <= 3; ver++) {
        a.use_tensor_cores = ver == 3;
        int reps = len >= 4096 ? 3 : 20;
        double us = lab_time_us([&] { CK(eb_cuda_attn_varlen(0, dout, dq, dk, dv, &a)); }, reps);
        printf("  timing attn_varlen v%d %-28s %10.1f us  %7.2f TFLOP/s\n", ver, name, us,
               flops / (us * 1e-6) / 1e12);
    }
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dout), cudaFree(dcu);
}

int main(void)
{
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("lab_attn_varlen: skipped: no CUDA device\n");
        return 77;
    }
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, 0));
    printf("lab_attn_varlen on %s\n", p.name);
    const vcase cases[] = {
        {"tiny H4/2 D32 lens 1,5,17,64", {1, 5, 17, 64}, 4, 2, 32, false, 0},
        {"tiny fused qkv lens 3,33", {3, 33}, 4, 2, 32, true, 0},
        {"0.6B H16/8 D128 lens 1,7,64,129,300", {1, 7, 64, 129, 300}, 16, 8, 128, false, 0},
        {"0.6B fused qkv lens 65,2", {65, 2}, 16, 8, 128, true, 0},
        {"D64 H8/8 lens 100,31", {100, 31}, 8, 8, 64, false, 0},
        {"0.6B one 8192-token document", {8192}, 16, 8, 128, false, 24},
        {"0.6B packed 1,8192,3,64", {1, 8192, 3, 64}, 16, 8, 128, false, 16},
    };
    // LAB_QUICK=1 (bench/kernels/emu/run: the CPU emulation) skips the 8,192-token cases and the
    // timing.
    const char *qk = getenv("LAB_QUICK");
    bool quick = qk && strcmp(qk, "1") == 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (!quick || cases[i].sample == 0)
            run_case(cases[i], 1000 + 17 * i);
    run_padded(32);
    run_padded(128);
    if (!quick) {
        time_case("256 x 64 tokens", 256, 64, 16, 8, 128);
        time_case("4096 x 64 tokens", 4096, 64, 16, 8, 128);
        time_case("1 x 8192 tokens", 1, 8192, 16, 8, 128);
    }
    printf("lab_attn_varlen: %d failure(s)\n", lab_failures);
    return lab_failures ? 1 : 0;
}
