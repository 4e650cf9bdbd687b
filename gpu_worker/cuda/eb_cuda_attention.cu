/* eb_cuda_attention — fused multi-head attention for the encoder (flash-attention style).
 *
 * Promoted from bench/kernels/attention.cu, version 2. The T×T score matrix is never
 * materialised: a block owns 16 query rows of one (item, head) (2 per warp), walks the keys in
 * tiles of 32 staged in shared memory, and keeps a running max, a running sum and an unnormalised
 * output per query row (online softmax, Milakov & Gimelshein 2018 / FlashAttention). Inside a
 * tile lane j scores key j against the warp's two queries (keys padded to D+1 floats in shared
 * memory so the 32 lanes hit 32 banks), then each lane accumulates the output dims it owns
 * (d = lane, lane+32, ...), with the probabilities broadcast by shuffles. Everything is fp32:
 * the op interface passes fp32 activations, and softmax must be fp32 anyway.
 * Head dims up to 128 (SigLIP: 64 base, 72 so400m; 128 for Qwen3); any T.
 * Version 1 (one block per query row, scores in shared memory) stays in the lab as the simple
 * reference; the tensor-core version is future work there.
 */
#include "eb_cuda_common.cuh"
#include "eb_cuda_kernels.h"

#define ATT_WARPS 8
#define ATT_QPW 2                        /* query rows per warp */
#define ATT_QPB (ATT_WARPS * ATT_QPW)    /* query rows per block */
#define ATT_BK 32                        /* keys per tile */

template <int NPL> // output dims per lane: D <= 32*NPL
__global__ void __launch_bounds__(ATT_WARPS * 32)
    attention_kernel2(float *__restrict__ out, const float *__restrict__ q,
                      const float *__restrict__ k, const float *__restrict__ v,
                      eb_cuda_attn_args a)
{
    extern __shared__ float smem[];
    const int D = a.D, ks = a.D + 1;
    float *sQ = smem;                  // (ATT_QPB, D), pre-scaled
    float *sK = sQ + ATT_QPB * D;      // (ATT_BK, D+1)
    float *sV = sK + ATT_BK * ks;      // (ATT_BK, D+1)

    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * ATT_QPB;
    const int hk = h / (a.H / a.Hkv);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int klen = a.kv_lens ? min(a.kv_lens[b], a.Tk) : a.Tk;
    const float *qb = q + (int64_t)b * a.q_bs + (int64_t)h * D;
    const float *kb = k + (int64_t)b * a.k_bs + (int64_t)hk * D;
    const float *vb = v + (int64_t)b * a.v_bs + (int64_t)hk * D;

    for (int i = threadIdx.x; i < ATT_QPB * D; i += blockDim.x) {
        int r = i / D, d = i % D, t = q0 + r;
        sQ[i] = t < a.Tq ? qb[(int64_t)t * a.q_ts + d] * a.scale : 0.0f;
    }

    float m[ATT_QPW], l[ATT_QPW], o[ATT_QPW][NPL];
    int tq[ATT_QPW];
#pragma unroll
    for (int r = 0; r < ATT_QPW; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
        tq[r] = q0 + warp * ATT_QPW + r;
#pragma unroll
        for (int i = 0; i < NPL; i++)
            o[r][i] = 0.0f;
    }
    // Keys this block needs: all valid ones, or (causal) up to its last query row.
    int kend = klen;
    if (a.causal)
        kend = min(kend, min(q0 + ATT_QPB, a.Tq));

    for (int k0 = 0; k0 < kend; k0 += ATT_BK) {
        __syncthreads(); // previous tile fully consumed (and sQ written on the first pass)
        for (int i = threadIdx.x; i < ATT_BK * D; i += blockDim.x) {
            int j = i / D, d = i % D, t = k0 + j;
            bool ok = t < kend;
            sK[j * ks + d] = ok ? kb[(int64_t)t * a.k_ts + d] : 0.0f;
            sV[j * ks + d] = ok ? vb[(int64_t)t * a.v_ts + d] : 0.0f;
        }
        __syncthreads();

        const int key = k0 + lane;
        float s[ATT_QPW];
#pragma unroll
        for (int r = 0; r < ATT_QPW; r++)
            s[r] = 0.0f;
        const float *kr = sK + lane * ks;
        const float *q_w = sQ + (warp * ATT_QPW) * D;
        for (int d = 0; d < D; d++) {
            float kv = kr[d];
#pragma unroll
            for (int r = 0; r < ATT_QPW; r++)
                s[r] = fmaf(q_w[r * D + d], kv, s[r]);
        }
        float p[ATT_QPW], corr[ATT_QPW];
#pragma unroll
        for (int r = 0; r < ATT_QPW; r++) {
            bool ok = key < kend && (!a.causal || key <= tq[r]);
            float sv = ok ? s[r] : -INFINITY;
            float mt = eb_warp_max(sv);
            float mn = fmaxf(m[r], mt);
            if (mn == -INFINITY) { // nothing valid yet for this row
                p[r] = 0.0f;
                corr[r] = 1.0f;
            } else {
                // expf, not __expf: the fast intrinsic's error grows with |x| and the CPU
                // reference uses expf; the cost is small next to the D-long dot products.
                p[r] = ok ? expf(sv - mn) : 0.0f;
                corr[r] = expf(m[r] - mn);
            }
            m[r] = mn;
            l[r] = l[r] * corr[r] + eb_warp_sum(p[r]);
#pragma unroll
            for (int i = 0; i < NPL; i++)
                o[r][i] *= corr[r];
        }
        const int jmax = min(ATT_BK, kend - k0);
        for (int j = 0; j < jmax; j++) {
            float pj[ATT_QPW];
#pragma unroll
            for (int r = 0; r < ATT_QPW; r++)
                pj[r] = __shfl_sync(0xffffffffu, p[r], j);
            const float *vr = sV + j * ks;
#pragma unroll
            for (int i = 0; i < NPL; i++) {
                int d = lane + 32 * i;
                float vv = d < D ? vr[d] : 0.0f;
#pragma unroll
                for (int r = 0; r < ATT_QPW; r++)
                    o[r][i] = fmaf(pj[r], vv, o[r][i]);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < ATT_QPW; r++) {
        if (tq[r] >= a.Tq)
            continue;
        float *orow = out + (int64_t)b * a.o_bs + (int64_t)tq[r] * a.o_ts + (int64_t)h * D;
        bool zero = tq[r] >= klen && a.kv_lens; // padded query rows are written as zeros
        float inv = (l[r] > 0.0f && !zero) ? 1.0f / l[r] : 0.0f;
#pragma unroll
        for (int i = 0; i < NPL; i++) {
            int d = lane + 32 * i;
            if (d < D)
                orow[d] = o[r][i] * inv;
        }
    }
}

cudaError_t eb_cuda_attention(cudaStream_t s, float *out, const float *q, const float *k,
                              const float *v, const eb_cuda_attn_args *a)
{
    if (a->B <= 0 || a->Tq <= 0 || a->H <= 0)
        return cudaSuccess;
    if (a->D <= 0 || a->D > 128 || a->Hkv <= 0 || a->H % a->Hkv != 0 || a->B > 65535 ||
        a->H > 65535)
        return cudaErrorInvalidValue;
    dim3 grid((unsigned)((a->Tq + ATT_QPB - 1) / ATT_QPB), (unsigned)a->H, (unsigned)a->B);
    size_t shmem = sizeof(float) * ((size_t)ATT_QPB * a->D + 2 * (size_t)ATT_BK * (a->D + 1));
    if (a->D <= 64)
        attention_kernel2<2><<<grid, ATT_WARPS * 32, shmem, s>>>(out, q, k, v, *a);
    else if (a->D <= 96)
        attention_kernel2<3><<<grid, ATT_WARPS * 32, shmem, s>>>(out, q, k, v, *a);
    else
        attention_kernel2<4><<<grid, ATT_WARPS * 32, shmem, s>>>(out, q, k, v, *a);
    return cudaGetLastError();
}
