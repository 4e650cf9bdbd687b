/* eb_resize — Pillow's BICUBIC resize of RGB8 images, reproduced bit for bit.
 *
 * The SigLIP reference pipeline (transformers' PIL image processor) resizes with
 * PIL.Image.resize(size, BICUBIC). Any difference of one grey level changes the embedding, so
 * this module is not "a bicubic resize" but Pillow's: an antialiased separable filter whose
 * support grows with the downscale factor, a = -0.5, 22-bit fixed-point taps, two separable
 * passes each rounding and clamping to a uint8 intermediate: horizontal then vertical, or
 * vertical first when the height shrinks by more than twice as many pixels as the width
 * (Pillow 13's rule, the reference version). A dimension that does not change is not filtered
 * (Pillow skips that pass). docs/images.md says what "Pillow-exact" means and how it is tested.
 *
 * The coefficient computation (eb_resize_coeffs) is separate so the CUDA port can compute the
 * same taps on the host and upload them: the taps come from double-precision arithmetic whose
 * exact rounding matters, so they must not be recomputed on the device with fused multiply-add.
 */
#ifndef EB_RESIZE_H
#define EB_RESIZE_H

#include <stddef.h>
#include <stdint.h>

#include "eb_status.h"

/* Names the algorithm and the Pillow behaviour it reproduces, for preproc_rev: change it
 * whenever the output of this module could change. */
#define EB_RESIZE_VERSION "pillow-13.0-bicubic-rgb8-1"

/* Fixed-point fraction bits of a tap: 8 bits of result and 2 of headroom in a 32-bit int. */
#define EB_RESIZE_PRECISION_BITS (32 - 8 - 2)

/* Largest side accepted by the resize functions (inputs and outputs). */
#define EB_RESIZE_MAX_SIDE (1 << 24)

/* Taps per output pixel (Pillow's ksize) for resampling in_size samples to out_size samples:
 * 2 * ceil(2 * max(1, in_size / out_size)) + 1. Returns 0 when either size is outside
 * 1..EB_RESIZE_MAX_SIDE. */
int eb_resize_ksize(int in_size, int out_size);

/* Computes Pillow's BICUBIC taps for in_size -> out_size (precompute_coeffs followed by
 * normalize_coeffs_8bpc). ksize must be eb_resize_ksize(in_size, out_size).
 *   bounds is (out_size, 2): [first input sample, number of taps used] per output sample;
 *   taps is (out_size, ksize): signed fixed-point weights with EB_RESIZE_PRECISION_BITS
 *   fraction bits; the entries past the used count are 0.
 * Output sample o is clamp8((1 << 21) + sum_j in[bounds[2o] + j] * taps[o * ksize + j]) >> 22.
 * Both arrays belong to the caller. Returns EB_ERR_INVALID for bad sizes or a wrong ksize. */
eb_status eb_resize_coeffs(int in_size, int out_size, int ksize, int32_t *bounds, int32_t *taps);

/* Bytes of scratch eb_resize_bicubic_rgb8_scratch needs for this resize (coefficients and the
 * intermediate image: out_w * in_h * 3 or in_w * out_h * 3 bytes, whichever the pass order
 * needs, plus the taps). 0 for invalid sizes. */
size_t eb_resize_scratch_size(int in_w, int in_h, int out_w, int out_h);

/* Resizes src, (in_h, in_w, 3) packed RGB8, to dst, (out_h, out_w, 3) packed RGB8, exactly as
 * Pillow's Image.resize((out_w, out_h), Image.BICUBIC) does for an RGB image. Uses the
 * caller's scratch (at least eb_resize_scratch_size bytes, any alignment) and allocates
 * nothing, so it can run on the request path. src and dst must not overlap.
 * Returns EB_ERR_INVALID for bad sizes or NULL buffers, EB_ERR_TOO_LARGE when scratch_len is
 * too small; dst is untouched on error. */
eb_status eb_resize_bicubic_rgb8_scratch(const uint8_t *src, int in_w, int in_h, uint8_t *dst,
                                         int out_w, int out_h, void *scratch, size_t scratch_len);

/* The same, allocating (and freeing) its own scratch. EB_ERR_NOMEM if that fails. */
eb_status eb_resize_bicubic_rgb8(const uint8_t *src, int in_w, int in_h, uint8_t *dst, int out_w,
                                 int out_h);

#endif
