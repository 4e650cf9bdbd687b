/* eb_cuda_rope — Qwen3's per-head q_norm / k_norm fused with RoPE (rotate_half).
 *
 * Promoted from bench/kernels/rmsnorm_rope.cu, version 2. One warp per token: it computes the
 * token's cos/sin once (lane l owns the rotation pairs i = l, l + 32, ... < D/2) and then walks
 * every query head and every key head of that token: load the pair (x[i], x[i + D/2]),
 * RMSNorm over the head's D values (fp32 sum of squares, warp shuffle reduction), multiply by
 * the gain, rotate, store. One read and one write of q and k instead of two of each (norm, then
 * rope), and the transcendental work is per token, not per head.
 *
 * Angles: the CPU backend (like transformers) computes inv_freq = 1 / powf(theta, 2i/D) and
 * angle = p * inv_freq in fp32. At p = 8191 an error of one ulp in inv_freq moves the angle by
 * ~5e-4 rad, so the device must produce the same fp32 inv_freq: powf on the GPU has up to a few
 * ulp of error, so it is computed as pow in double rounded once to fp32 (the correctly rounded
 * value, which is what glibc's powf returns), and cos/sin likewise in double rounded to fp32.
 * The H200's FP64 units make that cheap at one evaluation per (token, pair).
 *
 * Positions: packed batches find a token's sequence by binary search in cu_seqlens (log2 B
 * loads per token); padded or single-sequence batches use r % T.
 */
#include "eb_cuda_common.cuh"
#include "eb_cuda_qwen3.h"

#define ROPE_WARPS 4
#define ROPE_MAX_PAIRS 4 /* pairs per lane: D/2 <= 128, so D <= 256 */

// The sequence holding packed row r: the largest b with cu[b] <= r (cu has B+1 entries).
static __device__ __forceinline__ int seq_of_row(const int32_t *cu, int B, int64_t r)
{
    int lo = 0, hi = B - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (cu[mid] <= r)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

// Norm (when gain) and rotate one head of D values at p, pairs owned as described above.
static __device__ __forceinline__ void norm_rotate_head(float *p, const float *gain, int D,
                                                        float eps, const float *cs,
                                                        const float *sn, int lane)
{
    const int half = D / 2;
    float a[ROPE_MAX_PAIRS], b[ROPE_MAX_PAIRS];
    float sq = 0.0f;
#pragma unroll
    for (int j = 0; j < ROPE_MAX_PAIRS; j++) {
        int i = lane + 32 * j;
        a[j] = b[j] = 0.0f;
        if (i < half) {
            a[j] = p[i];
            b[j] = p[i + half];
            sq += a[j] * a[j] + b[j] * b[j];
        }
    }
    if (gain) {
        float inv = 1.0f / sqrtf(eb_warp_sum(sq) / (float)D + eps);
#pragma unroll
        for (int j = 0; j < ROPE_MAX_PAIRS; j++) {
            int i = lane + 32 * j;
            if (i < half) {
                a[j] = gain[i] * (a[j] * inv);
                b[j] = gain[i + half] * (b[j] * inv);
            }
        }
    }
#pragma unroll
    for (int j = 0; j < ROPE_MAX_PAIRS; j++) {
        int i = lane + 32 * j;
        if (i < half) {
            p[i] = a[j] * cs[j] - b[j] * sn[j];
            p[i + half] = b[j] * cs[j] + a[j] * sn[j];
        }
    }
}

__global__ void __launch_bounds__(ROPE_WARPS * 32) qk_norm_rope_kernel2(eb_cuda_qk_rope_args a)
{
    int64_t r = (int64_t)blockIdx.x * ROPE_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= a.tokens)
        return;
    int64_t pos, qoff, koff;
    if (a.cu_seqlens) {
        int b = seq_of_row(a.cu_seqlens, a.B, r);
        pos = r - a.cu_seqlens[b];
        qoff = r * a.q_ts;
        koff = r * a.k_ts;
    } else {
        int64_t b = r / a.T;
        pos = r % a.T;
        qoff = b * a.q_bs + pos * a.q_ts;
        koff = b * a.k_bs + pos * a.k_ts;
    }
    const int D = a.D, half = D / 2;
    float cs[ROPE_MAX_PAIRS], sn[ROPE_MAX_PAIRS];
#pragma unroll
    for (int j = 0; j < ROPE_MAX_PAIRS; j++) {
        int i = lane + 32 * j;
        cs[j] = 1.0f, sn[j] = 0.0f;
        if (i < half) {
            // fp32 exponent and fp32 inv_freq exactly as the CPU computes them (see the top).
            float e = (float)(2 * i) / (float)D;
            float pw = (float)pow((double)a.theta, (double)e);
            float inv_freq = 1.0f / pw;
            float ang = (float)pos * inv_freq;
            double s, c;
            sincos((double)ang, &s, &c);
            cs[j] = (float)c;
            sn[j] = (float)s;
        }
    }
    for (int h = 0; h < a.H; h++)
        norm_rotate_head(a.q + qoff + (int64_t)h * D, a.q_gain, D, a.eps, cs, sn, lane);
    if (a.k)
        for (int h = 0; h < a.Hkv; h++)
            norm_rotate_head(a.k + koff + (int64_t)h * D, a.k_gain, D, a.eps, cs, sn, lane);
}

cudaError_t eb_cuda_qk_norm_rope(cudaStream_t s, const eb_cuda_qk_rope_args *a)
{
    if (!a)
        return cudaErrorInvalidValue;
    if (a->tokens <= 0)
        return cudaSuccess;
    if (!a->q || a->D <= 0 || (a->D & 1) || a->D / 2 > 32 * ROPE_MAX_PAIRS || a->H <= 0 ||
        (a->k && a->Hkv <= 0) || !(a->theta > 0.0f) ||
        (a->cu_seqlens ? a->B <= 0 : a->T <= 0))
        return cudaErrorInvalidValue;
    unsigned blocks = (unsigned)((a->tokens + ROPE_WARPS - 1) / ROPE_WARPS);
    qk_norm_rope_kernel2<<<blocks, ROPE_WARPS * 32, 0, s>>>(*a);
    return cudaGetLastError();
}
