/* Kernel lab: fused multi-head attention for the ViT encoder (no mask), fp32.
 *
 *   nvcc -O3 -std=c++17 -arch=sm_90 -o lab_attention attention.cu && ./lab_attention
 *
 * Layout as the model uses it: q, k, v inside one fused (B, T, 3C) projection, out (B, T, C).
 * version 1: one block per (item, head, query row): the row's T scores in shared memory
 *            (materialised per row, never T×T), block softmax, then p·v. Simple reference.
 * version 2: flash-attention style: 16 query rows per block (2 per warp), keys and values in
 *            tiles of 32 in shared memory (padded to D+1 against bank conflicts), online
 *            softmax (running max / sum / unnormalised output), lane j scores key j, each lane
 *            owns output dims lane, lane+32, ... PROMOTED to gpu_worker/cuda/eb_cuda_attention.cu
 *            as attention_kernel2 (which adds GQA, causal masking and key lengths).
 * Next (not written yet): tensor-core version (mma.sync bf16 for q·kᵀ and p·v).
 * Checked against a double-precision CPU reference at base (T=196, H=12, D=64), so400m (T=729,
 * H=16, D=72), D=128 and odd sizes; timed at SigLIP-base batch 256 (TFLOP/s counts 4·T²·D per
 * head).
 */
#include "lab_common.cuh"

// ---- version 1 -------------------------------------------------------------------------------
__global__ void attention_kernel1(float *out, const float *qkv, int T, int H, int D, float scale)
{
    extern __shared__ float sh[]; // scores (T) + 32 for reductions
    float *sc = sh, *red = sh + T;
    int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z, C = H * D;
    int lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    const float *q = qkv + ((int64_t)b * T + t) * 3 * C + h * D;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        const float *k = qkv + ((int64_t)b * T + j) * 3 * C + C + h * D;
        float s = 0;
        for (int d = 0; d < D; d++)
            s += q[d] * k[d];
        sc[j] = s * scale;
        mx = fmaxf(mx, sc[j]);
    }
    mx = lab_dwarp_max(mx);
    if (lane == 0)
        red[threadIdx.x >> 5] = mx;
    __syncthreads();
    mx = lab_dwarp_max(lane < nw ? red[lane] : -INFINITY);
    __syncthreads();
    float sum = 0;
    for (int j = threadIdx.x; j < T; j += blockDim.x) {
        sc[j] = expf(sc[j] - mx);
        sum += sc[j];
    }
    sum = lab_dwarp_sum(sum);
    if (lane == 0)
        red[threadIdx.x >> 5] = sum;
    __syncthreads();
    sum = lab_dwarp_sum(lane < nw ? red[lane] : 0.0f);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float o = 0;
        for (int j = 0; j < T; j++)
            o += sc[j] * qkv[((int64_t)b * T + j) * 3 * C + 2 * C + h * D + d];
        out[((int64_t)b * T + t) * C + h * D + d] = o / sum;
    }
}

// ---- version 2 (promoted) ----------------------------------------------------------------------
#define ATT_WARPS 8
#define ATT_QPW 2
#define ATT_QPB (ATT_WARPS * ATT_QPW)
#define ATT_BK 32

template <int NPL>
__global__ void __launch_bounds__(ATT_WARPS * 32)
    attention_kernel2(float *out, const float *qkv, int T, int H, int D, float scale)
{
    extern __shared__ float smem[];
    const int ks = D + 1, C = H * D;
    float *sQ = smem, *sK = sQ + ATT_QPB * D, *sV = sK + ATT_BK * ks;
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ATT_QPB;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t ts = 3 * C;
    const float *qb = qkv + (int64_t)b * T * ts + h * D, *kb = qb + C, *vb = qb + 2 * C;
    for (int i = threadIdx.x; i < ATT_QPB * D; i += blockDim.x) {
        int r = i / D, d = i % D, t = q0 + r;
        sQ[i] = t < T ? qb[(int64_t)t * ts + d] * scale : 0.0f;
    }
    float m[ATT_QPW], l[ATT_QPW], o[ATT_QPW][NPL];
    for (int r = 0; r < ATT_QPW; r++) {
        m[r] = -INFINITY, l[r] = 0;
        for (int i = 0; i < NPL; i++)
            o[r][i] = 0;
    }
    for (int k0 = 0; k0 < T; k0 += ATT_BK) {
        __syncthreads();
        for (int i = threadIdx.x; i < ATT_BK * D; i += blockDim.x) {
            int j = i / D, d = i % D, t = k0 + j;
            sK[j * ks + d] = t < T ? kb[(int64_t)t * ts + d] : 0.0f;
            sV[j * ks + d] = t < T ? vb[(int64_t)t * ts + d] : 0.0f;
        }
        __syncthreads();
        float s[ATT_QPW] = {};
        const float *kr = sK + lane * ks, *qw = sQ + warp * ATT_QPW * D;
        for (int d = 0; d < D; d++) {
            float kv = kr[d];
            for (int r = 0; r < ATT_QPW; r++)
                s[r] = fmaf(qw[r * D + d], kv, s[r]);
        }
        bool ok = k0 + lane < T;
        float p[ATT_QPW];
        for (int r = 0; r < ATT_QPW; r++) {
            float sv = ok ? s[r] : -INFINITY;
            float mn = fmaxf(m[r], lab_dwarp_max(sv));
            p[r] = ok ? expf(sv - mn) : 0.0f;
            float corr = expf(m[r] - mn);
            m[r] = mn;
            l[r] = l[r] * corr + lab_dwarp_sum(p[r]);
            for (int i = 0; i < NPL; i++)
                o[r][i] *= corr;
        }
        int jmax = min(ATT_BK, T - k0);
        for (int j = 0; j < jmax; j++) {
            const float *vr = sV + j * ks;
            float pj[ATT_QPW];
            for (int r = 0; r < ATT_QPW; r++)
                pj[r] = __shfl_sync(0xffffffffu, p[r], j);
            for (int i = 0; i < NPL; i++) {
                int d = lane + 32 * i;
                float vv = d < D ? vr[d] : 0.0f;
                for (int r = 0; r < ATT_QPW; r++)
                    o[r][i] = fmaf(pj[r], vv, o[r][i]);
            }
        }
    }
    for (int r = 0; r < ATT_QPW; r++) {
        int t = q0 + warp * ATT_QPW + r;
        if (t >= T)
            continue;
        for (int i = 0; i < NPL; i++) {
            int d = lane + 32 * i;
            if (d < D)
                out[((int64_t)b * T + t) * C + h * D + d] = o[r][i] / l[r];
        }
    }
}

static void launch(int v, float *out, const float *qkv, int B, int T, int H, int D)
{
    float scale = 1.0f / sqrtf((float)D);
    if (v == 1) {
        attention_kernel1<<<dim3(T, H, B), 128, (T + 32) * sizeof(float)>>>(out, qkv, T, H, D,
                                                                            scale);
        return;
    }
    dim3 grid((T + ATT_QPB - 1) / ATT_QPB, H, B);
    size_t sm = sizeof(float) * (ATT_QPB * D + 2 * ATT_BK * (D + 1));
    if (D <= 64)
        attention_kernel2<2><<<grid, ATT_WARPS * 32, sm>>>(out, qkv, T, H, D, scale);
    else if (D <= 96)
        attention_kernel2<3><<<grid, ATT_WARPS * 32, sm>>>(out, qkv, T, H, D, scale);
    else
        attention_kernel2<4><<<grid, ATT_WARPS * 32, sm>>>(out, qkv, T, H, D, scale);
}

static void cpu_attention(float *out, const float *qkv, int B, int T, int H, int D)
{
    int C = H * D;
    double *sc = (double *)malloc(T * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < T; t++) {
                const float *q = qkv + ((int64_t)b * T + t) * 3 * C + h * D;
                double mx = -1e300, sum = 0;
                for (int j = 0; j < T; j++) {
                    const float *k = qkv + ((int64_t)b * T + j) * 3 * C + C + h * D;
                    double s = 0;
                    for (int d = 0; d < D; d++)
                        s += (double)q[d] * k[d];
                    sc[j] = s / sqrt((double)D);
                    if (sc[j] > mx)
                        mx = sc[j];
                }
                for (int j = 0; j < T; j++)
                    sum += sc[j] = exp(sc[j] - mx);
                for (int d = 0; d < D; d++) {
                    double o = 0;
                    for (int j = 0; j < T; j++)
                        o += sc[j] * qkv[((int64_t)b * T + j) * 3 * C + 2 * C + h * D + d];
                    out[((int64_t)b * T + t) * C + h * D + d] = (float)(o / sum);
                }
            }
    free(sc);
}

int main(void)
{
    const struct {
        const char *name;
        int B, T, H, D;
    } shapes[] = {{"base 2x196 H12 D64", 2, 196, 12, 64},
                  {"so400m 1x729 H16 D72", 1, 729, 16, 72},
                  {"D128 1x1024 H2", 1, 1024, 2, 128},
                  {"odd 3x37 H3 D40", 3, 37, 3, 40}};
    for (auto &sh : shapes) {
        size_t nq = (size_t)sh.B * sh.T * 3 * sh.H * sh.D, no = (size_t)sh.B * sh.T * sh.H * sh.D;
        float *qkv = lab_rand_host(nq, 7, 2.0f), *ref = (float *)malloc(no * 4);
        cpu_attention(ref, qkv, sh.B, sh.T, sh.H, sh.D);
        float *dq = lab_to_device(qkv, nq), *dout;
        CK(cudaMalloc(&dout, no * 4));
        for (int v = 1; v <= 2; v++) {
            CK(cudaMemset(dout, 0xff, no * 4)); // NaN: unwritten outputs fail the check
            launch(v, dout, dq, sh.B, sh.T, sh.H, sh.D);
            CK(cudaGetLastError());
            char what[96];
            snprintf(what, sizeof(what), "v%d attention %s", v, sh.name);
            lab_check(what, dout, ref, no, 1e-5);
        }
        free(qkv), free(ref);
        cudaFree(dq), cudaFree(dout);
    }
    // timing: SigLIP-base batch 256 and so400m batch 32
    const struct {
        const char *name;
        int B, T, H, D;
    } timed[] = {{"base B=256 T=196 H12 D64", 256, 196, 12, 64},
                 {"so400m B=32 T=729 H16 D72", 32, 729, 16, 72}};
    for (auto &sh : timed) {
        size_t nq = (size_t)sh.B * sh.T * 3 * sh.H * sh.D, no = (size_t)sh.B * sh.T * sh.H * sh.D;
        float *dq, *dout;
        CK(cudaMalloc(&dq, nq * 4));
        CK(cudaMalloc(&dout, no * 4));
        CK(cudaMemset(dq, 0, nq * 4));
        double flops = 4.0 * sh.B * sh.H * (double)sh.T * sh.T * sh.D;
        for (int v = 1; v <= 2; v++) {
            double us = lab_time_us([&] { launch(v, dout, dq, sh.B, sh.T, sh.H, sh.D); }, 5);
            printf("v%d timing %s: %.1f us, %.2f TFLOP/s\n", v, sh.name, us,
                   flops / (us * 1e-6) / 1e12);
        }
        cudaFree(dq), cudaFree(dout);
    }
    printf("%s\n", lab_failures ? "FAILED" : "all versions match the CPU reference");
    return lab_failures ? 1 : 0;
}
