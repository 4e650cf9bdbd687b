/* eb_preprocess — an RGB8 image to SigLIP pixel_values, as transformers computes them.
 *
 * SiglipImageProcessor on the Pillow path: resize to (size, size) with Pillow BICUBIC (no crop,
 * aspect ratio not kept), then rescale in float64 by rescale_factor (1/255) and cast to float32,
 * then (x - mean) / std in float32, channels first. The arithmetic is done in exactly that
 * order and precision, so the output equals transformers' bit for bit (tested within 1e-6).
 */
#ifndef EB_PREPROCESS_H
#define EB_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#include "eb_image.h"
#include "eb_status.h"

/* transformers' default rescale factor, 1/255 as a double (preprocessor_config.json stores
 * 0.00392156862745098, the same double). */
#define EB_PREPROCESS_RESCALE_DEFAULT (1.0 / 255.0)

/* Largest square side accepted (SigLIP uses 224..512). */
#define EB_PREPROCESS_MAX_SIZE 4096

/* Normalises an already-resized image: rgb is (h, w, 3) uint8, out_chw is (3, h, w) float32
 * with out[c][y][x] = ((float)((double)rgb[y][x][c] * rescale) - mean[c]) / std[c].
 * Buffers belong to the caller. */
void eb_preprocess_normalize_rgb8(const uint8_t *rgb, int w, int h, double rescale,
                                  const float mean[3], const float std[3], float *out_chw);

/* Bytes of scratch eb_preprocess_siglip_scratch needs for an in_w x in_h image and a square
 * output of side size: the resize scratch plus the size*size*3 resized image. 0 when invalid. */
size_t eb_preprocess_scratch_size(int in_w, int in_h, int size);

/* img -> out_chw, (3, size, size) float32 (caller's buffer), with mean/std per channel and
 * rescale 1/255, using the caller's scratch (at least eb_preprocess_scratch_size bytes); no
 * allocation. Returns EB_ERR_INVALID for bad arguments (size outside 1..EB_PREPROCESS_MAX_SIZE,
 * std of 0, empty image), EB_ERR_TOO_LARGE for too small a scratch. */
eb_status eb_preprocess_siglip_scratch(const eb_image *img, int size, const float mean[3],
                                       const float std[3], float *out_chw, void *scratch,
                                       size_t scratch_len);

/* The same, allocating and freeing its own scratch (EB_ERR_NOMEM if that fails). mean and std
 * may be NULL for SigLIP's 0.5 / 0.5. */
eb_status eb_preprocess_siglip(const eb_image *img, int size, const float mean[3],
                               const float std[3], float *out_chw);

#endif
