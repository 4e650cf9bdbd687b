/* eb_resize — Pillow's BICUBIC resize of RGB8 images, bit for bit.
 *
 * What matters for bit-exactness, in the order Pillow does it (src/libImaging/Resample.c,
 * precompute_coeffs, normalize_coeffs_8bpc, ImagingResampleHorizontal/Vertical_8bpc,
 * ImagingResampleInner):
 *   - per output sample, center = (o + 0.5) * scale, support = 2 * max(1, scale), the window
 *     [(int)(center - support + 0.5), (int)(center + support + 0.5)) clipped to the input, and
 *     weights bicubic((i - center + 0.5) / max(1, scale)) with a = -0.5, each divided by their
 *     double-precision sum, all in double with Pillow's operation order (no reassociation, no
 *     fused multiply-add: the build uses -std=c11, which turns FP contraction off);
 *   - weights rounded half away from zero to 22-bit fixed point;
 *   - accumulation in int starting at 1 << 21, then an arithmetic shift by 22 and a clamp to
 *     0..255 (Pillow's clip8 table does exactly that for the reachable range);
 *   - two passes, each into uint8: horizontal first (over only the input rows the vertical
 *     pass reads), then vertical; except that since Pillow 13 the vertical pass runs first
 *     when the height shrinks by more than twice as many pixels as the width (the order moves
 *     some outputs by one level, so it matters); a pass whose dimension is unchanged is
 *     skipped, and when neither changes the image is copied.
 * Pillow stores RGB pixels in 4 bytes; the arithmetic per channel is the same for packed RGB.
 */
#include "eb_resize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- coefficients ------------------------------------------------------------------------- */

/* Pillow's bicubic_filter with a = -0.5, written with the same operation order. */
static double bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0) {
        x = -x;
    }
    if (x < 1.0) {
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    }
    if (x < 2.0) {
        return (((x - 5) * x + 8) * x - 4) * a;
    }
    return 0.0;
}

static const double BICUBIC_SUPPORT = 2.0;

static int side_ok(int n)
{
    return n >= 1 && n <= EB_RESIZE_MAX_SIDE;
}

/* scale and filterscale exactly as Pillow derives them from the default box (0, 0, w, h):
 * in1 - in0 is computed in float, then divided in double. */
static void scales(int in_size, int out_size, double *scale, double *filterscale)
{
    float in0 = 0.0f;
    float in1 = (float)in_size;
    *scale = (double)(in1 - in0) / out_size;
    *filterscale = *scale < 1.0 ? 1.0 : *scale;
}

int eb_resize_ksize(int in_size, int out_size)
{
    if (!side_ok(in_size) || !side_ok(out_size)) {
        return 0;
    }
    double scale, filterscale;
    scales(in_size, out_size, &scale, &filterscale);
    double support = BICUBIC_SUPPORT * filterscale;
    return (int)ceil(support) * 2 + 1;
}

eb_status eb_resize_coeffs(int in_size, int out_size, int ksize, int32_t *bounds, int32_t *taps)
{
    if (!bounds || !taps || ksize < 1 || ksize != eb_resize_ksize(in_size, out_size)) {
        return EB_ERR_INVALID;
    }
    double scale, filterscale;
    scales(in_size, out_size, &scale, &filterscale);
    double support = BICUBIC_SUPPORT * filterscale;
    double in0 = 0.0;
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0;
        double ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) {
            xmin = 0;
        }
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) {
            xmax = in_size;
        }
        xmax -= xmin;
        if (xmax > ksize) { /* cannot happen for valid sizes; keeps the writes in bounds */
            return EB_ERR_INTERNAL;
        }
        /* First pass: the sum of the weights, in Pillow's order. The second pass recomputes
         * each weight (same inputs, same double result) and divides by the sum, so no
         * double-precision temporary array is needed. */
        for (int x = 0; x < xmax; x++) {
            ww += bicubic((x + xmin - center + 0.5) * ss);
        }
        int32_t *k = &taps[(size_t)xx * ksize];
        for (int x = 0; x < xmax; x++) {
            double w = bicubic((x + xmin - center + 0.5) * ss);
            if (ww != 0.0) {
                w /= ww;
            }
            if (w < 0) {
                k[x] = (int32_t)(-0.5 + w * (1 << EB_RESIZE_PRECISION_BITS));
            } else {
                k[x] = (int32_t)(0.5 + w * (1 << EB_RESIZE_PRECISION_BITS));
            }
        }
        for (int x = xmax; x < ksize; x++) {
            k[x] = 0;
        }
        bounds[xx * 2 + 0] = xmin;
        bounds[xx * 2 + 1] = xmax;
    }
    return EB_OK;
}

/* ---- passes ------------------------------------------------------------------------------- */

/* Pillow's clip8: the accumulator holds value << 22 plus the 1 << 21 rounding bias. */
static inline uint8_t clip8(int32_t acc)
{
    int32_t v = acc >> EB_RESIZE_PRECISION_BITS; /* arithmetic shift, as in Pillow */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* dst is (rows, out_w, 3); row r of dst comes from row r + row0 of src, (in_h, in_w, 3). */
static void horizontal_pass(const uint8_t *src, int in_w, int row0, int rows, uint8_t *dst,
                            int out_w, int ksize, const int32_t *bounds, const int32_t *taps)
{
    const int32_t half = 1 << (EB_RESIZE_PRECISION_BITS - 1);
    for (int yy = 0; yy < rows; yy++) {
        const uint8_t *in = src + (size_t)(yy + row0) * in_w * 3;
        uint8_t *out = dst + (size_t)yy * out_w * 3;
        for (int xx = 0; xx < out_w; xx++) {
            int xmin = bounds[xx * 2 + 0];
            int xmax = bounds[xx * 2 + 1];
            const int32_t *k = &taps[(size_t)xx * ksize];
            const uint8_t *p = in + (size_t)xmin * 3;
            int32_t ss0 = half, ss1 = half, ss2 = half;
            for (int x = 0; x < xmax; x++) {
                ss0 += p[x * 3 + 0] * k[x];
                ss1 += p[x * 3 + 1] * k[x];
                ss2 += p[x * 3 + 2] * k[x];
            }
            out[xx * 3 + 0] = clip8(ss0);
            out[xx * 3 + 1] = clip8(ss1);
            out[xx * 3 + 2] = clip8(ss2);
        }
    }
}

/* dst is (out_h, w, 3) from src (any rows, w, 3); bounds index rows of src. */
static void vertical_pass(const uint8_t *src, int w, uint8_t *dst, int out_h, int ksize,
                          const int32_t *bounds, const int32_t *taps)
{
    const int32_t half = 1 << (EB_RESIZE_PRECISION_BITS - 1);
    const size_t stride = (size_t)w * 3;
    for (int yy = 0; yy < out_h; yy++) {
        const int32_t *k = &taps[(size_t)yy * ksize];
        int ymin = bounds[yy * 2 + 0];
        int ymax = bounds[yy * 2 + 1];
        uint8_t *out = dst + (size_t)yy * stride;
        /* Column-by-column like Pillow, but the sums are independent per channel and column,
         * so walking x innermost over a row gives the same integers and reads memory in order. */
        for (size_t c = 0; c < stride; c++) {
            int32_t ss = half;
            const uint8_t *p = src + (size_t)ymin * stride + c;
            for (int y = 0; y < ymax; y++) {
                ss += p[(size_t)y * stride] * k[y];
            }
            out[c] = clip8(ss);
        }
    }
}

/* ---- scratch layout ----------------------------------------------------------------------- */

/* Which passes run, and in which order (Pillow 13, ImagingResampleInner): a dimension that does
 * not change is not filtered; otherwise the horizontal pass runs first, unless the height
 * shrinks by more than twice as many pixels as the width does (Pillow PR #9549, "if height is
 * scaled down significantly more than width, resize vertically first"). The order changes
 * the result by one level here and there, since each pass rounds to uint8. */
typedef enum order { ORDER_COPY, ORDER_H_ONLY, ORDER_V_ONLY, ORDER_H_FIRST, ORDER_V_FIRST } order;

static order pass_order(int in_w, int in_h, int out_w, int out_h)
{
    int need_h = out_w != in_w;
    int need_v = out_h != in_h;
    if (!need_h && !need_v) {
        return ORDER_COPY;
    }
    if (!need_v) {
        return ORDER_H_ONLY;
    }
    if (!need_h) {
        return ORDER_V_ONLY;
    }
    if (out_h < in_h && (int64_t)in_h - out_h > 2 * ((int64_t)in_w - out_w)) {
        return ORDER_V_FIRST;
    }
    return ORDER_H_FIRST;
}

typedef struct layout {
    order order;
    int ksize_h, ksize_v;
    size_t off_bounds_h, off_taps_h, off_bounds_v, off_taps_v, off_tmp, total;
} layout;

static size_t align8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

static int plan(int in_w, int in_h, int out_w, int out_h, layout *l)
{
    if (!side_ok(in_w) || !side_ok(in_h) || !side_ok(out_w) || !side_ok(out_h)) {
        return 0;
    }
    l->order = pass_order(in_w, in_h, out_w, out_h);
    l->ksize_h = eb_resize_ksize(in_w, out_w);
    l->ksize_v = eb_resize_ksize(in_h, out_h);
    size_t off = 0;
    l->off_bounds_h = off;
    off = align8(off + (size_t)out_w * 2 * sizeof(int32_t));
    l->off_taps_h = off;
    off = align8(off + (size_t)out_w * l->ksize_h * sizeof(int32_t));
    l->off_bounds_v = off;
    off = align8(off + (size_t)out_h * 2 * sizeof(int32_t));
    l->off_taps_v = off;
    off = align8(off + (size_t)out_h * l->ksize_v * sizeof(int32_t));
    l->off_tmp = off;
    /* The intermediate: at most every input row at the output width (horizontal first), or
     * the output rows at the input width (vertical first). */
    if (l->order == ORDER_H_FIRST) {
        off += (size_t)out_w * in_h * 3;
    } else if (l->order == ORDER_V_FIRST) {
        off += (size_t)in_w * out_h * 3;
    }
    l->total = off + 8; /* + 8: the caller's scratch need not be aligned */
    return 1;
}

size_t eb_resize_scratch_size(int in_w, int in_h, int out_w, int out_h)
{
    layout l;
    return plan(in_w, in_h, out_w, out_h, &l) ? l.total : 0;
}

eb_status eb_resize_bicubic_rgb8_scratch(const uint8_t *src, int in_w, int in_h, uint8_t *dst,
                                         int out_w, int out_h, void *scratch, size_t scratch_len)
{
    layout l;
    if (!src || !dst || !plan(in_w, in_h, out_w, out_h, &l)) {
        return EB_ERR_INVALID;
    }
    if (!scratch || scratch_len < l.total) {
        return EB_ERR_TOO_LARGE;
    }
    uint8_t *base = (uint8_t *)align8((uintptr_t)scratch);
    int32_t *bounds_h = (int32_t *)(base + l.off_bounds_h);
    int32_t *taps_h = (int32_t *)(base + l.off_taps_h);
    int32_t *bounds_v = (int32_t *)(base + l.off_bounds_v);
    int32_t *taps_v = (int32_t *)(base + l.off_taps_v);
    uint8_t *tmp = base + l.off_tmp;

    if (l.order == ORDER_COPY) {
        memcpy(dst, src, (size_t)in_w * in_h * 3);
        return EB_OK;
    }
    eb_status st = EB_OK;
    if (l.order != ORDER_H_ONLY) {
        st = eb_resize_coeffs(in_h, out_h, l.ksize_v, bounds_v, taps_v);
    }
    if (st == EB_OK && l.order != ORDER_V_ONLY) {
        st = eb_resize_coeffs(in_w, out_w, l.ksize_h, bounds_h, taps_h);
    }
    if (st != EB_OK) {
        return st;
    }
    switch (l.order) {
    case ORDER_H_ONLY:
        /* An unchanged height's identity window reads every row, so the horizontal result is
         * the output. */
        horizontal_pass(src, in_w, 0, in_h, dst, out_w, l.ksize_h, bounds_h, taps_h);
        break;
    case ORDER_V_ONLY:
        vertical_pass(src, in_w, dst, out_h, l.ksize_v, bounds_v, taps_v);
        break;
    case ORDER_V_FIRST:
        vertical_pass(src, in_w, tmp, out_h, l.ksize_v, bounds_v, taps_v);
        horizontal_pass(tmp, in_w, 0, out_h, dst, out_w, l.ksize_h, bounds_h, taps_h);
        break;
    default: {
        /* Horizontal first, over only the input rows the vertical pass reads: [first, last). */
        int first = bounds_v[0];
        int last = bounds_v[out_h * 2 - 2] + bounds_v[out_h * 2 - 1];
        for (int i = 0; i < out_h; i++) {
            bounds_v[i * 2] -= first;
        }
        horizontal_pass(src, in_w, first, last - first, tmp, out_w, l.ksize_h, bounds_h, taps_h);
        vertical_pass(tmp, out_w, dst, out_h, l.ksize_v, bounds_v, taps_v);
        break;
    }
    }
    return EB_OK;
}

eb_status eb_resize_bicubic_rgb8(const uint8_t *src, int in_w, int in_h, uint8_t *dst, int out_w,
                                 int out_h)
{
    size_t n = eb_resize_scratch_size(in_w, in_h, out_w, out_h);
    if (n == 0) {
        return EB_ERR_INVALID;
    }
    void *scratch = malloc(n);
    if (!scratch) {
        return EB_ERR_NOMEM;
    }
    eb_status st = eb_resize_bicubic_rgb8_scratch(src, in_w, in_h, dst, out_w, out_h, scratch, n);
    free(scratch);
    return st;
}
