/* eb_cuda_attn_varlen — causal grouped-query attention over variable-length sequences packed
 * without padding (cumulative offsets, as flash-attention's varlen kernels), for Qwen3.
 *
 * The idea: a query "row" is a (token, head) pair, and the H / Hkv query heads that share a KV
 * head are processed by the same block, so a key/value tile staged in shared memory serves all
 * of them (Qwen3-0.6B: 2 query heads per KV head). Rows of one KV-head group are numbered
 * token * G + g; block (tile, kv head, sequence) owns a run of consecutive rows. The T×T score
 * matrix never exists: keys are visited in tiles with an online softmax (running max m, running
 * sum l, unnormalised output o rescaled by exp(m_old - m_new): Milakov & Gimelshein 2018,
 * FlashAttention). Causal blocks stop at their last row's token, so a sequence of T tokens costs
 * ~T²/2. Tiles are launched in reverse order (the longest causal rows first) to even out the
 * tail. The grid is (ceil(max_seqlen * G / rows_per_block), Hkv, B); blocks past the end of their
 * sequence exit at once, so one long document and many short texts share a launch, and a graph
 * captured with the largest max_seqlen replays for any batch below it.
 *
 * Two versions (both checked in bench/kernels/attn_varlen.cu against a CPU reference and the
 * simple version 1 there):
 *   version 2, fp32 SIMT (the exact path; default): 16 rows per block (4 warps x 4), key tiles
 *     of 32 in shared memory padded to D+1 floats (lane j scores key j without bank conflicts),
 *     each lane accumulating the output dims d = lane + 32 i; expf, IEEE division: matches the
 *     CPU backend to ~1e-6.
 *   version 3, BF16 tensor cores (WMMA 16x16x16, fp32 accumulate): 64 rows per block (16 per
 *     warp), key tiles of 64; S = Q·Kᵀ into shared memory (fp32), the softmax and the rescale of
 *     the fp32 output tile in shared memory, P rounded to BF16 for O += P·V. Inputs are rounded
 *     to BF16, so it differs from fp32 by ~3e-3 relative: the choice of a BF16 backend. D must be
 *     64 or 128.
 */
#include <mma.h>

#include "eb_cuda_common.cuh"
#include "eb_cuda_qwen3.h"

/* ---- shared helpers --------------------------------------------------------------------------- */

static __device__ __forceinline__ float av_load(const float *p)
{
    return *p;
}
static __device__ __forceinline__ float av_load(const __nv_bfloat16 *p)
{
    return __bfloat162float(*p);
}
static __device__ __forceinline__ void av_store(float *p, float v)
{
    *p = v;
}
static __device__ __forceinline__ void av_store(__nv_bfloat16 *p, float v)
{
    *p = __float2bfloat16_rn(v);
}

// Where sequence b lives and how long it is (see eb_cuda_qwen3.h).
struct av_seq {
    int64_t start; // first token row (packed), else 0
    int len;       // tokens that take part
    int len_out;   // query tokens to write (padded: Tq; rows len..len_out-1 get zeros)
};

static __device__ __forceinline__ av_seq av_seq_of(const eb_cuda_varlen_args &a, int b)
{
    av_seq s;
    if (a.cu_seqlens) {
        s.start = a.cu_seqlens[b];
        s.len = a.cu_seqlens[b + 1] - a.cu_seqlens[b];
        s.len_out = s.len;
    } else if (a.lens) {
        int tq = a.Tq > 0 ? a.Tq : a.max_seqlen;
        s.start = 0;
        s.len = min(max(a.lens[b], 0), tq);
        s.len_out = tq;
    } else {
        s.start = 0;
        s.len = a.Tq > 0 ? a.Tq : a.max_seqlen;
        s.len_out = s.len;
    }
    return s;
}

/* ---- version 2: fp32 SIMT ------------------------------------------------------------------- */

#define AV2_WARPS 4
#define AV2_QPW 4                       /* query rows per warp */
#define AV2_QPB (AV2_WARPS * AV2_QPW)   /* query rows per block */
#define AV2_BK 32                       /* keys per tile */

template <int NPL, typename T> // output dims per lane: D <= 32 * NPL
__global__ void __launch_bounds__(AV2_WARPS * 32)
    attn_varlen_kernel2(T *__restrict__ out, const T *__restrict__ q, const T *__restrict__ k,
                        const T *__restrict__ v, eb_cuda_varlen_args a)
{
    extern __shared__ float smem[];
    const int D = a.D, ks = a.D + 1, G = a.H / a.Hkv;
    float *sQ = smem;                 // (QPB, D), pre-scaled
    float *sK = sQ + AV2_QPB * D;     // (BK, D+1)
    float *sV = sK + AV2_BK * ks;     // (BK, D+1)

    const int b = blockIdx.z, hk = blockIdx.y;
    const av_seq sq = av_seq_of(a, b);
    const int rows_total = sq.len_out * G;
    const int r0 = (gridDim.x - 1 - blockIdx.x) * AV2_QPB; // heavy (late) causal tiles first
    if (r0 >= rows_total)
        return; // uniform for the block: before any barrier
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const T *qb = q + (int64_t)b * a.q_bs + sq.start * a.q_ts;
    const T *kb = k + (int64_t)b * a.k_bs + sq.start * a.k_ts + (int64_t)hk * D;
    const T *vb = v + (int64_t)b * a.v_bs + sq.start * a.v_ts + (int64_t)hk * D;
    T *ob = out + (int64_t)b * a.o_bs + sq.start * a.o_ts;

    for (int i = threadIdx.x; i < AV2_QPB * D; i += blockDim.x) {
        int r = i / D, d = i % D, qr = r0 + r, t = qr / G, h = hk * G + qr % G;
        sQ[i] = (qr < rows_total && t < sq.len) ? av_load(qb + (int64_t)t * a.q_ts + h * D + d) *
                                                      a.scale
                                                : 0.0f;
    }

    float m[AV2_QPW], l[AV2_QPW], o[AV2_QPW][NPL];
    int tq[AV2_QPW];
#pragma unroll
    for (int r = 0; r < AV2_QPW; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
        tq[r] = (r0 + warp * AV2_QPW + r) / G;
#pragma unroll
        for (int i = 0; i < NPL; i++)
            o[r][i] = 0.0f;
    }
    // Keys this block needs: every valid one, or (causal) up to its last row's token; none when
    // every row of the tile is a padding row.
    const int first_t = r0 / G, last_t = (min(r0 + AV2_QPB, rows_total) - 1) / G;
    int kend = sq.len;
    if (a.causal)
        kend = min(kend, last_t + 1);
    if (first_t >= sq.len)
        kend = 0;

    for (int k0 = 0; k0 < kend; k0 += AV2_BK) {
        __syncthreads(); // the previous tile is consumed (and sQ written on the first pass)
        for (int i = threadIdx.x; i < AV2_BK * D; i += blockDim.x) {
            int j = i / D, d = i % D, t = k0 + j;
            bool ok = t < kend;
            sK[j * ks + d] = ok ? av_load(kb + (int64_t)t * a.k_ts + d) : 0.0f;
            sV[j * ks + d] = ok ? av_load(vb + (int64_t)t * a.v_ts + d) : 0.0f;
        }
        __syncthreads();

        const int key = k0 + lane;
        float s[AV2_QPW];
#pragma unroll
        for (int r = 0; r < AV2_QPW; r++)
            s[r] = 0.0f;
        const float *kr = sK + lane * ks;
        const float *q_w = sQ + (warp * AV2_QPW) * D;
        for (int d = 0; d < D; d++) {
            float kv = kr[d];
#pragma unroll
            for (int r = 0; r < AV2_QPW; r++)
                s[r] = fmaf(q_w[r * D + d], kv, s[r]);
        }
        float p[AV2_QPW];
#pragma unroll
        for (int r = 0; r < AV2_QPW; r++) {
            bool ok = key < kend && (!a.causal || key <= tq[r]);
            float sv = ok ? s[r] : -INFINITY;
            float mn = fmaxf(m[r], eb_warp_max(sv));
            float corr;
            if (mn == -INFINITY) { // nothing valid yet for this row
                p[r] = 0.0f;
                corr = 1.0f;
            } else {
                p[r] = ok ? expf(sv - mn) : 0.0f;
                corr = expf(m[r] - mn); // m = -inf on the first valid tile: exp(-inf) = 0
            }
            m[r] = mn;
            l[r] = l[r] * corr + eb_warp_sum(p[r]);
#pragma unroll
            for (int i = 0; i < NPL; i++)
                o[r][i] *= corr;
        }
        const int jmax = min(AV2_BK, kend - k0);
        for (int j = 0; j < jmax; j++) {
            float pj[AV2_QPW];
#pragma unroll
            for (int r = 0; r < AV2_QPW; r++)
                pj[r] = __shfl_sync(0xffffffffu, p[r], j);
            const float *vr = sV + j * ks;
#pragma unroll
            for (int i = 0; i < NPL; i++) {
                int d = lane + 32 * i;
                float vv = d < D ? vr[d] : 0.0f;
#pragma unroll
                for (int r = 0; r < AV2_QPW; r++)
                    o[r][i] = fmaf(pj[r], vv, o[r][i]);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < AV2_QPW; r++) {
        int qr = r0 + warp * AV2_QPW + r;
        if (qr >= rows_total)
            continue;
        int t = tq[r], h = hk * G + qr % G;
        T *orow = ob + (int64_t)t * a.o_ts + (int64_t)h * D;
        bool zero = t >= sq.len || !(l[r] > 0.0f); // padding rows are written as zeros
        float inv = zero ? 0.0f : 1.0f / l[r];
#pragma unroll
        for (int i = 0; i < NPL; i++) {
            int d = lane + 32 * i;
            if (d < D)
                av_store(orow + d, zero ? 0.0f : o[r][i] * inv);
        }
    }
}

/* ---- version 3: BF16 tensor cores (WMMA) ------------------------------------------------------ */

#define AV3_WARPS 4
#define AV3_BM 64 /* query rows per block: 16 per warp */
#define AV3_BN 64 /* keys per tile */
#define AV3_LDS (AV3_BN + 4) /* fp32 score tile row stride */
#define AV3_LDP (AV3_BN + 8) /* bf16 probability tile row stride */

template <int D> struct av3_layout {
    static constexpr int LDQ = D + 8; // bf16 rows of Q, K, V (multiple of 8; rows 32-byte aligned)
    static constexpr int LDO = D + 4; // fp32 rows of the output accumulator
    static constexpr size_t q_off = 0;
    static constexpr size_t k_off = q_off + (size_t)AV3_BM * LDQ * 2;
    static constexpr size_t v_off = k_off + (size_t)AV3_BN * LDQ * 2;
    static constexpr size_t s_off = v_off + (size_t)AV3_BN * LDQ * 2;
    static constexpr size_t p_off = s_off + (size_t)AV3_BM * AV3_LDS * 4;
    static constexpr size_t o_off = p_off + (size_t)AV3_BM * AV3_LDP * 2;
    static constexpr size_t m_off = o_off + (size_t)AV3_BM * LDO * 4;
    static constexpr size_t l_off = m_off + (size_t)AV3_BM * 4;
    static constexpr size_t bytes = l_off + (size_t)AV3_BM * 4;
};

template <int D, typename T>
__global__ void __launch_bounds__(AV3_WARPS * 32)
    attn_varlen_kernel3(T *__restrict__ out, const T *__restrict__ q, const T *__restrict__ k,
                        const T *__restrict__ v, eb_cuda_varlen_args a)
{
    using namespace nvcuda;
    typedef av3_layout<D> L;
    extern __shared__ __align__(128) unsigned char smem3[];
    __nv_bfloat16 *sQ = (__nv_bfloat16 *)(smem3 + L::q_off); // (BM, LDQ)
    __nv_bfloat16 *sK = (__nv_bfloat16 *)(smem3 + L::k_off); // (BN, LDQ)
    __nv_bfloat16 *sV = (__nv_bfloat16 *)(smem3 + L::v_off); // (BN, LDQ)
    float *sS = (float *)(smem3 + L::s_off);                 // (BM, LDS)
    __nv_bfloat16 *sP = (__nv_bfloat16 *)(smem3 + L::p_off); // (BM, LDP)
    float *sO = (float *)(smem3 + L::o_off);                 // (BM, LDO)
    float *sM = (float *)(smem3 + L::m_off);                 // (BM)
    float *sL = (float *)(smem3 + L::l_off);                 // (BM)

    const int G = a.H / a.Hkv;
    const int b = blockIdx.z, hk = blockIdx.y;
    const av_seq sq = av_seq_of(a, b);
    const int rows_total = sq.len_out * G;
    const int r0 = (gridDim.x - 1 - blockIdx.x) * AV3_BM;
    if (r0 >= rows_total)
        return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const T *qb = q + (int64_t)b * a.q_bs + sq.start * a.q_ts;
    const T *kb = k + (int64_t)b * a.k_bs + sq.start * a.k_ts + (int64_t)hk * D;
    const T *vb = v + (int64_t)b * a.v_bs + sq.start * a.v_ts + (int64_t)hk * D;
    T *ob = out + (int64_t)b * a.o_bs + sq.start * a.o_ts;

    for (int i = threadIdx.x; i < AV3_BM * D; i += blockDim.x) {
        int r = i / D, d = i % D, qr = r0 + r, t = qr / G, h = hk * G + qr % G;
        float val = (qr < rows_total && t < sq.len) ? av_load(qb + (int64_t)t * a.q_ts + h * D + d)
                                                    : 0.0f;
        sQ[r * L::LDQ + d] = __float2bfloat16_rn(val);
        sO[r * L::LDO + d] = 0.0f;
    }
    for (int r = threadIdx.x; r < AV3_BM; r += blockDim.x) {
        sM[r] = -INFINITY;
        sL[r] = 0.0f;
    }
    const int first_t = r0 / G, last_t = (min(r0 + AV3_BM, rows_total) - 1) / G;
    int kend = sq.len;
    if (a.causal)
        kend = min(kend, last_t + 1);
    if (first_t >= sq.len)
        kend = 0;

    const int wr = warp * 16; // this warp's first row in the tile
    for (int k0 = 0; k0 < kend; k0 += AV3_BN) {
        __syncthreads(); // previous K/V tile consumed; sQ/sO/sM/sL initialised
        for (int i = threadIdx.x; i < AV3_BN * D; i += blockDim.x) {
            int j = i / D, d = i % D, t = k0 + j;
            bool ok = t < kend;
            sK[j * L::LDQ + d] = __float2bfloat16_rn(ok ? av_load(kb + (int64_t)t * a.k_ts + d) : 0.0f);
            sV[j * L::LDQ + d] = __float2bfloat16_rn(ok ? av_load(vb + (int64_t)t * a.v_ts + d) : 0.0f);
        }
        __syncthreads();

        // S (16 x BN) of this warp = Q_w (16 x D) · K_tileᵀ (D x BN)
        for (int n = 0; n < AV3_BN / 16; n++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
                wmma::load_matrix_sync(fa, sQ + wr * L::LDQ + kk * 16, L::LDQ);
                // B(d, key) = K[key][d]: column-major with leading dimension LDQ
                wmma::load_matrix_sync(fb, sK + (n * 16) * L::LDQ + kk * 16, L::LDQ);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(sS + wr * AV3_LDS + n * 16, acc, AV3_LDS, wmma::mem_row_major);
        }
        __syncwarp();

        // Online softmax, one row at a time across the warp (2 keys per lane).
        for (int r = 0; r < 16; r++) {
            int row = wr + r, qr = r0 + row, t = qr / G;
            float sv[AV3_BN / 32];
            float mx = -INFINITY;
#pragma unroll
            for (int c = 0; c < AV3_BN / 32; c++) {
                int col = lane + 32 * c, key = k0 + col;
                bool ok = key < kend && (!a.causal || key <= t);
                sv[c] = ok ? sS[row * AV3_LDS + col] * a.scale : -INFINITY;
                mx = fmaxf(mx, sv[c]);
            }
            float m_old = sM[row];
            float mn = fmaxf(m_old, eb_warp_max(mx));
            float corr = 1.0f, psum = 0.0f;
#pragma unroll
            for (int c = 0; c < AV3_BN / 32; c++) {
                float pv = (mn == -INFINITY || sv[c] == -INFINITY) ? 0.0f : expf(sv[c] - mn);
                __nv_bfloat16 pb = __float2bfloat16_rn(pv);
                sP[row * AV3_LDP + lane + 32 * c] = pb;
                psum += __bfloat162float(pb); // l sums the probabilities P·V actually uses
            }
            if (mn != -INFINITY)
                corr = expf(m_old - mn);
            psum = eb_warp_sum(psum);
            __syncwarp(); // every lane has read sM[row] before lane 0 writes it
            if (lane == 0) {
                sM[row] = mn;
                sL[row] = sL[row] * corr + psum;
            }
            for (int d = lane; d < D; d += 32)
                sO[row * L::LDO + d] *= corr;
        }
        __syncwarp();

        // O_w (16 x D) += P_w (16 x BN) · V_tile (BN x D)
        for (int n = 0; n < D / 16; n++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::load_matrix_sync(acc, sO + wr * L::LDO + n * 16, L::LDO, wmma::mem_row_major);
#pragma unroll
            for (int kk = 0; kk < AV3_BN / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
                wmma::load_matrix_sync(fa, sP + wr * AV3_LDP + kk * 16, AV3_LDP);
                wmma::load_matrix_sync(fb, sV + (kk * 16) * L::LDQ + n * 16, L::LDQ);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(sO + wr * L::LDO + n * 16, acc, L::LDO, wmma::mem_row_major);
        }
        __syncwarp();
    }
    __syncthreads(); // with kend == 0 the initialisation must be visible to every warp

    // Write this warp's rows: o / l, zeros for padding rows.
    for (int i = lane; i < 16 * D; i += 32) {
        int r = i / D, d = i % D, row = wr + r, qr = r0 + row;
        if (qr >= rows_total)
            continue;
        int t = qr / G, h = hk * G + qr % G;
        float lr = sL[row];
        bool zero = t >= sq.len || !(lr > 0.0f);
        av_store(ob + (int64_t)t * a.o_ts + (int64_t)h * D + d,
                 zero ? 0.0f : sO[row * L::LDO + d] / lr);
    }
}

/* ---- launchers -------------------------------------------------------------------------------- */

static bool av_args_ok(const eb_cuda_varlen_args *a)
{
    return a && a->H > 0 && a->Hkv > 0 && a->H % a->Hkv == 0 && a->D > 0 && a->D <= 128 &&
           a->max_seqlen >= 0 && a->Tq >= 0 && a->B <= 65535 && a->Hkv <= 65535;
}

template <int D, typename T>
static cudaError_t launch3(cudaStream_t s, T *out, const T *q, const T *k, const T *v,
                           const eb_cuda_varlen_args *a, dim3 grid)
{
    size_t bytes = av3_layout<D>::bytes;
    // Above the 48 KB default: opt in once per instantiation (a host-side attribute, allowed
    // while a stream is being captured).
    static bool attr_set = false;
    if (!attr_set) {
        cudaError_t e = cudaFuncSetAttribute(attn_varlen_kernel3<D, T>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)bytes);
        if (e != cudaSuccess)
            return e;
        attr_set = true;
    }
    attn_varlen_kernel3<D, T><<<grid, AV3_WARPS * 32, bytes, s>>>(out, q, k, v, *a);
    return cudaGetLastError();
}

template <typename T>
static cudaError_t attn_varlen_launch(cudaStream_t s, T *out, const T *q, const T *k, const T *v,
                                      const eb_cuda_varlen_args *a)
{
    if (!a || a->B <= 0)
        return cudaSuccess;
    if (!av_args_ok(a) || !out || !q || !k || !v)
        return cudaErrorInvalidValue;
    // Query rows of the longest item (as av_seq_of counts them): grid.x covers them.
    int G = a->H / a->Hkv;
    int64_t rows = (int64_t)(a->cu_seqlens || a->Tq <= 0 ? a->max_seqlen : a->Tq) * G;
    if (rows <= 0)
        return cudaSuccess;
    if (a->use_tensor_cores && (a->D == 64 || a->D == 128)) {
        dim3 grid((unsigned)((rows + AV3_BM - 1) / AV3_BM), (unsigned)a->Hkv, (unsigned)a->B);
        if (a->D == 128)
            return launch3<128, T>(s, out, q, k, v, a, grid);
        return launch3<64, T>(s, out, q, k, v, a, grid);
    }
    if (a->use_tensor_cores)
        return cudaErrorInvalidValue;
    dim3 grid((unsigned)((rows + AV2_QPB - 1) / AV2_QPB), (unsigned)a->Hkv, (unsigned)a->B);
    size_t shmem = sizeof(float) * ((size_t)AV2_QPB * a->D + 2 * (size_t)AV2_BK * (a->D + 1));
    if (a->D <= 32)
        attn_varlen_kernel2<1, T><<<grid, AV2_WARPS * 32, shmem, s>>>(out, q, k, v, *a);
    else if (a->D <= 64)
        attn_varlen_kernel2<2, T><<<grid, AV2_WARPS * 32, shmem, s>>>(out, q, k, v, *a);
    else if (a->D <= 96)
        attn_varlen_kernel2<3, T><<<grid, AV2_WARPS * 32, shmem, s>>>(out, q, k, v, *a);
    else
        attn_varlen_kernel2<4, T><<<grid, AV2_WARPS * 32, shmem, s>>>(out, q, k, v, *a);
    return cudaGetLastError();
}

cudaError_t eb_cuda_attn_varlen(cudaStream_t s, float *out, const float *q, const float *k,
                                const float *v, const eb_cuda_varlen_args *a)
{
    return attn_varlen_launch<float>(s, out, q, k, v, a);
}

cudaError_t eb_cuda_attn_varlen_bf16io(cudaStream_t s, __nv_bfloat16 *out,
                                       const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                                       const __nv_bfloat16 *v, const eb_cuda_varlen_args *a)
{
    return attn_varlen_launch<__nv_bfloat16>(s, out, q, k, v, a);
}
