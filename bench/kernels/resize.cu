/* Kernel lab: Pillow-exact antialiased bicubic resize of RGB8 (+ SigLIP normalisation).
 *
 *   nvcc -O3 -std=c++17 -arch=sm_90 -o lab_resize resize.cu && ./lab_resize
 *
 * The CPU reference here is Pillow's algorithm (Resample.c: bicubic filter with a = -0.5,
 * support scaled by the downscale factor, precompute_coeffs, normalize_coeffs_8bpc with 22
 * fraction bits, horizontal pass into a uint8 intermediate, then vertical, each
 * (1 << 21) + Σ in·tap, >> 22, clamped; since Pillow 13 the vertical pass goes first when the
 * height shrinks by more than twice as many pixels as the width). gpu_worker/eb_resize.c is the product's CPU port and
 * tests/unit/test_ops checks the GPU against it; this file checks kernel versions.
 * version 1: one thread per output sample and channel, two kernels (h then v), taps from the
 *            host. Integer sums are order-independent, so the result is bit-identical.
 *            PROMOTED to gpu_worker/cuda/eb_cuda_resize.cu (resize_h_kernel1/resize_v_kernel1).
 * Next (not written): one kernel per output tile with the intermediate rows in shared memory.
 */
#include "lab_common.cuh"

static double bicubic(double x)
{
    const double a = -0.5;
    if (x < 0)
        x = -x;
    if (x < 1)
        return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
}

static int ksize_for(int in, int out)
{
    double scale = (double)in / out, fs = scale < 1 ? 1 : scale;
    return (int)ceil(2.0 * fs) * 2 + 1;
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc. bounds (out, 2), taps (out, ksize). */
static void coeffs(int in, int out, int ksize, int32_t *bounds, int32_t *taps)
{
    double scale = (double)in / out, fs = scale < 1 ? 1 : scale, support = 2.0 * fs;
    double *k = (double *)malloc(ksize * sizeof(double));
    for (int xx = 0; xx < out; xx++) {
        double center = (xx + 0.5) * scale, ww = 0, ss = 1.0 / fs;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in)
            xmax = in;
        xmax -= xmin;
        int x;
        for (x = 0; x < xmax; x++) {
            double w = bicubic((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0)
                k[x] /= ww;
        for (; x < ksize; x++)
            k[x] = 0;
        for (x = 0; x < ksize; x++)
            taps[xx * ksize + x] = k[x] < 0 ? (int32_t)(-0.5 + k[x] * (1 << 22))
                                            : (int32_t)(0.5 + k[x] * (1 << 22));
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
    free(k);
}

static uint8_t clip(int32_t v)
{
    v >>= 22;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Pillow 13 (ImagingResampleInner, PR #9549): both sides change and the height shrinks by
 * more than twice as many pixels as the width -> vertical pass first. */
static bool vertical_first(int iw, int ih, int ow, int oh)
{
    return ow != iw && oh != ih && oh < ih && (int64_t)ih - oh > 2 * ((int64_t)iw - ow);
}

static void h_pass(uint8_t *dst, const uint8_t *src, int w_in, int rows, int w_out,
                   const int32_t *b, const int32_t *t, int k)
{
    for (int y = 0; y < rows; y++)
        for (int x = 0; x < w_out; x++)
            for (int c = 0; c < 3; c++) {
                int32_t ss = 1 << 21;
                for (int j = 0; j < b[2 * x + 1]; j++)
                    ss += src[((size_t)y * w_in + b[2 * x] + j) * 3 + c] * t[x * k + j];
                dst[((size_t)y * w_out + x) * 3 + c] = clip(ss);
            }
}

static void v_pass(uint8_t *dst, const uint8_t *src, int w, int rows_out, const int32_t *b,
                   const int32_t *t, int k)
{
    for (int y = 0; y < rows_out; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                int32_t ss = 1 << 21;
                for (int j = 0; j < b[2 * y + 1]; j++)
                    ss += src[((size_t)(b[2 * y] + j) * w + x) * 3 + c] * t[y * k + j];
                dst[((size_t)y * w + x) * 3 + c] = clip(ss);
            }
}

static void cpu_resize(uint8_t *out, const uint8_t *src, int iw, int ih, int ow, int oh,
                       const int32_t *bx, const int32_t *tx, int kx, const int32_t *by,
                       const int32_t *ty, int ky)
{
    size_t n = (size_t)(ih * ow > oh * iw ? ih * ow : oh * iw) * 3;
    uint8_t *tmp = (uint8_t *)malloc(n);
    if (vertical_first(iw, ih, ow, oh)) {
        v_pass(tmp, src, iw, oh, by, ty, ky);
        h_pass(out, tmp, iw, oh, ow, bx, tx, kx);
    } else {
        h_pass(tmp, src, iw, ih, ow, bx, tx, kx);
        v_pass(out, tmp, ow, oh, by, ty, ky);
    }
    free(tmp);
}

// ---- version 1 (promoted) ----------------------------------------------------------------------
__device__ __forceinline__ uint8_t dclip(int32_t v)
{
    v >>= 22;
    return (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

__global__ void resize_h_kernel1(uint8_t *dst, const uint8_t *src, int w_in, int rows, int w_out,
                                 const int32_t *taps, const int32_t *bounds, int ksize)
{
    int64_t total = (int64_t)rows * w_out * 3;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int c = (int)(i % 3), x = (int)((i / 3) % w_out);
        int64_t y = i / (3 * (int64_t)w_out);
        const uint8_t *row = src + (y * w_in + bounds[2 * x]) * 3 + c;
        const int32_t *k = taps + (int64_t)x * ksize;
        int32_t ss = 1 << 21;
        for (int j = 0; j < bounds[2 * x + 1]; j++)
            ss += (int32_t)row[3 * j] * k[j];
        dst[i] = dclip(ss);
    }
}

__global__ void resize_v_kernel1(uint8_t *dst, const uint8_t *src, int w, int rows_out,
                                 const int32_t *taps, const int32_t *bounds, int ksize)
{
    int64_t total = (int64_t)rows_out * w * 3;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int c = (int)(i % 3), x = (int)((i / 3) % w), y = (int)(i / (3 * (int64_t)w));
        const uint8_t *col = src + ((int64_t)bounds[2 * y] * w + x) * 3 + c;
        const int32_t *k = taps + (int64_t)y * ksize;
        int32_t ss = 1 << 21;
        for (int j = 0; j < bounds[2 * y + 1]; j++)
            ss += (int32_t)col[(int64_t)j * w * 3] * k[j];
        dst[i] = dclip(ss);
    }
}

static unsigned grid_for(int64_t n)
{
    int64_t g = (n + 255) / 256;
    return (unsigned)(g > 65535 * 8 ? 65535 * 8 : g);
}

int main(void)
{
    const struct {
        int iw, ih, o;
    } cases[] = {{640, 480, 224}, {1000, 750, 384}, {100, 37, 224}, {224, 224, 224},
                 {4000, 3000, 224}, {1, 300, 224}, {300, 1500, 224}};
    for (auto &cs : cases) {
        int iw = cs.iw, ih = cs.ih, o = cs.o, kx = ksize_for(iw, o), ky = ksize_for(ih, o);
        size_t nsrc = (size_t)iw * ih * 3, nout = (size_t)o * o * 3;
        uint8_t *src = (uint8_t *)malloc(nsrc), *ref = (uint8_t *)malloc(nout);
        uint8_t *got = (uint8_t *)malloc(nout);
        uint64_t s = 99;
        for (size_t i = 0; i < nsrc; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            src[i] = (uint8_t)((i * 7 / 3 + (s & 63)) & 255);
        }
        int32_t *bx = (int32_t *)malloc(8 * o), *by = (int32_t *)malloc(8 * o);
        int32_t *tx = (int32_t *)malloc(4 * (size_t)o * kx), *ty = (int32_t *)malloc(4 * (size_t)o * ky);
        coeffs(iw, o, kx, bx, tx);
        coeffs(ih, o, ky, by, ty);
        cpu_resize(ref, src, iw, ih, o, o, bx, tx, kx, by, ty, ky);
        uint8_t *dsrc, *dtmp, *dout;
        int32_t *dbx, *dby, *dtx, *dty;
        CK(cudaMalloc(&dsrc, nsrc));
        CK(cudaMalloc(&dtmp, (size_t)(ih > iw ? ih : iw) * o * 3));
        CK(cudaMalloc(&dout, nout));
        CK(cudaMalloc(&dbx, 8 * o));
        CK(cudaMalloc(&dby, 8 * o));
        CK(cudaMalloc(&dtx, 4 * (size_t)o * kx));
        CK(cudaMalloc(&dty, 4 * (size_t)o * ky));
        CK(cudaMemcpy(dsrc, src, nsrc, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dbx, bx, 8 * o, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dby, by, 8 * o, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dtx, tx, 4 * (size_t)o * kx, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dty, ty, 4 * (size_t)o * ky, cudaMemcpyHostToDevice));
        bool vfirst = vertical_first(iw, ih, o, o);
        auto run = [&] {
            if (vfirst) {
                resize_v_kernel1<<<grid_for((int64_t)o * iw * 3), 256>>>(dtmp, dsrc, iw, o, dty,
                                                                        dby, ky);
                resize_h_kernel1<<<grid_for((int64_t)o * o * 3), 256>>>(dout, dtmp, iw, o, o, dtx,
                                                                       dbx, kx);
            } else {
                resize_h_kernel1<<<grid_for((int64_t)ih * o * 3), 256>>>(dtmp, dsrc, iw, ih, o,
                                                                        dtx, dbx, kx);
                resize_v_kernel1<<<grid_for((int64_t)o * o * 3), 256>>>(dout, dtmp, o, o, dty, dby,
                                                                       ky);
            }
        };
        run();
        CK(cudaGetLastError());
        CK(cudaMemcpy(got, dout, nout, cudaMemcpyDeviceToHost));
        size_t diff = 0;
        for (size_t i = 0; i < nout; i++)
            diff += got[i] != ref[i];
        double us = lab_time_us(run, 20);
        printf("  v1 resize %dx%d -> %d: %zu values differ %s; %.1f us, %.1f GB/s (src read)\n",
               iw, ih, o, diff, diff ? "FAIL" : "ok", us, nsrc / (us * 1e-6) / 1e9);
        if (diff)
            lab_failures++;
        free(src), free(ref), free(got), free(bx), free(by), free(tx), free(ty);
        cudaFree(dsrc), cudaFree(dtmp), cudaFree(dout), cudaFree(dbx), cudaFree(dby);
        cudaFree(dtx), cudaFree(dty);
    }
    printf("%s\n", lab_failures ? "FAILED" : "all versions match the CPU reference");
    return lab_failures ? 1 : 0;
}
