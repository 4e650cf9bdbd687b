/* eb_cuda_resize — image resize + normalise on the GPU, bit-identical to the CPU's Pillow port.
 *
 * Promoted from bench/kernels/resize.cu, version 1. Two passes like Pillow's
 * ImagingResampleHorizontal_8bpc / ImagingResampleVertical_8bpc: each output sample is
 * (1 << 21) + Σ in[j] · tap[j] in 32-bit integers, shifted right by 22 and clamped to 0..255,
 * the horizontal pass first into a uint8 intermediate. Integer arithmetic is associative, so
 * the GPU's result equals the CPU's exactly whatever the summation order; the taps themselves
 * come from the host (eb_resize_coeffs), never recomputed here. One thread per output sample
 * and channel; the passes are memory-bound and tiny next to the model.
 * A pass whose size does not change has identity taps (a single weight of 1 << 22), so always
 * running both passes gives Pillow's result even where Pillow skips one. The order of the
 * passes follows Pillow 13 (eb_cuda_resize_vertical_first), like eb_resize.c; the emulator run
 * (bench/kernels/emu/run) caught the vertical-first case before any GPU did.
 */
#include "eb_cuda_common.cuh"
#include "eb_cuda_kernels.h"

static __device__ __forceinline__ uint8_t clip8_22(int32_t v)
{
    v >>= 22; // arithmetic shift: negative sums stay negative and clamp to 0
    return (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

static __device__ __forceinline__ float normalize1(uint8_t v, int c, float m0, float m1, float m2,
                                                   float s0, float s1, float s2)
{
    // The CPU's (and transformers') arithmetic exactly: rescale in float64 by 1/255, cast to
    // float32, then (x - mean) / std in float32 (IEEE division: no fast-math).
    float f = (float)((double)v * 0.00392156862745098);
    float mean = c == 0 ? m0 : (c == 1 ? m1 : m2);
    float sd = c == 0 ? s0 : (c == 1 ? s1 : s2);
    return (f - mean) / sd;
}

// Horizontal pass: dst (rows, w_out, 3) from src (rows, w_in, 3). When out_f32 is set (the
// last pass), also the normalised channels-first (3, rows, w_out) floats.
__global__ void resize_h_kernel1(uint8_t *dst, float *out_f32, const uint8_t *src, int w_in,
                                 int rows, int w_out, const int32_t *taps, const int32_t *bounds,
                                 int ksize, float m0, float m1, float m2, float s0, float s1,
                                 float s2)
{
    int64_t total = (int64_t)rows * w_out * 3;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int c = (int)(i % 3);
        int x = (int)((i / 3) % w_out);
        int64_t y = i / (3 * (int64_t)w_out);
        int x0 = bounds[2 * x], n = bounds[2 * x + 1];
        const int32_t *k = taps + (int64_t)x * ksize;
        const uint8_t *row = src + (y * w_in + x0) * 3 + c;
        int32_t ss = 1 << 21;
        for (int j = 0; j < n; j++)
            ss += (int32_t)row[3 * j] * k[j];
        uint8_t v = clip8_22(ss);
        if (dst)
            dst[i] = v;
        if (out_f32)
            out_f32[((int64_t)c * rows + y) * w_out + x] = normalize1(v, c, m0, m1, m2, s0, s1, s2);
    }
}

// Vertical pass: dst (rows_out, w, 3) from src (rows_in, w, 3); out_f32 as above.
__global__ void resize_v_kernel1(uint8_t *dst, float *out_f32, const uint8_t *src, int w,
                                 int rows_out, const int32_t *taps, const int32_t *bounds,
                                 int ksize, float m0, float m1, float m2, float s0, float s1,
                                 float s2)
{
    int64_t total = (int64_t)rows_out * w * 3;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int c = (int)(i % 3);
        int x = (int)((i / 3) % w);
        int y = (int)(i / (3 * (int64_t)w));
        int y0 = bounds[2 * y], n = bounds[2 * y + 1];
        const int32_t *k = taps + (int64_t)y * ksize;
        const uint8_t *col = src + ((int64_t)y0 * w + x) * 3 + c;
        int32_t ss = 1 << 21;
        for (int j = 0; j < n; j++)
            ss += (int32_t)col[(int64_t)j * w * 3] * k[j];
        uint8_t v = clip8_22(ss);
        if (dst)
            dst[i] = v;
        if (out_f32)
            out_f32[((int64_t)c * rows_out + y) * w + x] = normalize1(v, c, m0, m1, m2, s0, s1, s2);
    }
}

int eb_cuda_resize_vertical_first(int in_w, int in_h, int out_w, int out_h)
{
    // Pillow 13 (ImagingResampleInner, PR #9549): when both sides change and the height
    // shrinks by more than twice as many pixels as the width, the vertical pass runs first.
    // Each pass rounds to uint8, so the order shows in the result. Same rule as eb_resize.c.
    return out_w != in_w && out_h != in_h && out_h < in_h &&
           (int64_t)in_h - out_h > 2 * ((int64_t)in_w - out_w);
}

cudaError_t eb_cuda_resize(cudaStream_t s, uint8_t *out_u8, float *out_f32, uint8_t *tmp,
                           const uint8_t *src, const eb_cuda_resize_plan *p, const float mean[3],
                           const float std[3])
{
    int64_t th = (int64_t)p->in_h * p->out_w * 3, tv = (int64_t)p->out_h * p->out_w * 3;
    if (th <= 0 || tv <= 0)
        return cudaErrorInvalidValue;
    float m[3] = {0, 0, 0}, sd[3] = {1, 1, 1};
    if (mean && std)
        for (int c = 0; c < 3; c++)
            m[c] = mean[c], sd[c] = std[c];
    float *f = out_f32;
    if (eb_cuda_resize_vertical_first(p->in_w, p->in_h, p->out_w, p->out_h)) {
        int64_t n1 = (int64_t)p->out_h * p->in_w * 3;
        resize_v_kernel1<<<eb_grid_for(n1, 256), 256, 0, s>>>(
            tmp, nullptr, src, p->in_w, p->out_h, p->taps_y, p->bounds_y, p->ksize_y, m[0], m[1],
            m[2], sd[0], sd[1], sd[2]);
        resize_h_kernel1<<<eb_grid_for(tv, 256), 256, 0, s>>>(
            out_u8, f, tmp, p->in_w, p->out_h, p->out_w, p->taps_x, p->bounds_x, p->ksize_x,
            m[0], m[1], m[2], sd[0], sd[1], sd[2]);
    } else {
        resize_h_kernel1<<<eb_grid_for(th, 256), 256, 0, s>>>(
            tmp, nullptr, src, p->in_w, p->in_h, p->out_w, p->taps_x, p->bounds_x, p->ksize_x,
            m[0], m[1], m[2], sd[0], sd[1], sd[2]);
        resize_v_kernel1<<<eb_grid_for(tv, 256), 256, 0, s>>>(
            out_u8, f, tmp, p->out_w, p->out_h, p->taps_y, p->bounds_y, p->ksize_y, m[0], m[1],
            m[2], sd[0], sd[1], sd[2]);
    }
    return cudaGetLastError();
}
