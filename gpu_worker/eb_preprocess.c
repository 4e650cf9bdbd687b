/* eb_preprocess — SigLIP pixel_values from an RGB8 image, matching transformers exactly.
 *
 * transformers' PIL backend computes, per image: Pillow BICUBIC resize to (size, size) in
 * uint8; image.astype(float64) * rescale_factor, cast to float32; then (x - mean) / std with
 * mean and std as float32 arrays, in float32. Since the input is a byte, each channel has only
 * 256 possible outputs: they are computed once per call into a table with exactly those
 * operations (double multiply, round to float, float subtract, float divide), then looked up.
 * The build's -std=c11 keeps the compiler from contracting or reassociating them.
 */
#include "eb_preprocess.h"

#include <stdlib.h>

#include "eb_resize.h"

static const float SIGLIP_MEAN[3] = {0.5f, 0.5f, 0.5f};
static const float SIGLIP_STD[3] = {0.5f, 0.5f, 0.5f};

void eb_preprocess_normalize_rgb8(const uint8_t *rgb, int w, int h, double rescale,
                                  const float mean[3], const float std[3], float *out_chw)
{
    float lut[3][256];
    for (int c = 0; c < 3; c++) {
        for (int v = 0; v < 256; v++) {
            float x = (float)((double)v * rescale);
            lut[c][v] = (x - mean[c]) / std[c];
        }
    }
    size_t plane = (size_t)w * h;
    for (size_t i = 0; i < plane; i++) {
        out_chw[i] = lut[0][rgb[i * 3 + 0]];
        out_chw[plane + i] = lut[1][rgb[i * 3 + 1]];
        out_chw[2 * plane + i] = lut[2][rgb[i * 3 + 2]];
    }
}

size_t eb_preprocess_scratch_size(int in_w, int in_h, int size)
{
    if (size < 1 || size > EB_PREPROCESS_MAX_SIZE) {
        return 0;
    }
    size_t r = eb_resize_scratch_size(in_w, in_h, size, size);
    return r ? r + (size_t)size * size * 3 : 0;
}

eb_status eb_preprocess_siglip_scratch(const eb_image *img, int size, const float mean[3],
                                       const float std[3], float *out_chw, void *scratch,
                                       size_t scratch_len)
{
    if (!img || !img->rgb || !out_chw || size < 1 || size > EB_PREPROCESS_MAX_SIZE) {
        return EB_ERR_INVALID;
    }
    mean = mean ? mean : SIGLIP_MEAN;
    std = std ? std : SIGLIP_STD;
    for (int c = 0; c < 3; c++) {
        if (!(std[c] != 0.0f)) {
            return EB_ERR_INVALID;
        }
    }
    size_t need = eb_preprocess_scratch_size(img->width, img->height, size);
    if (need == 0) {
        return EB_ERR_INVALID;
    }
    if (!scratch || scratch_len < need) {
        return EB_ERR_TOO_LARGE;
    }
    uint8_t *resized = scratch;
    size_t resized_len = (size_t)size * size * 3;
    eb_status st = eb_resize_bicubic_rgb8_scratch(img->rgb, img->width, img->height, resized,
                                                  size, size, resized + resized_len,
                                                  scratch_len - resized_len);
    if (st != EB_OK) {
        return st;
    }
    eb_preprocess_normalize_rgb8(resized, size, size, EB_PREPROCESS_RESCALE_DEFAULT, mean, std,
                                 out_chw);
    return EB_OK;
}

eb_status eb_preprocess_siglip(const eb_image *img, int size, const float mean[3],
                               const float std[3], float *out_chw)
{
    if (!img) {
        return EB_ERR_INVALID;
    }
    size_t need = eb_preprocess_scratch_size(img->width, img->height, size);
    if (need == 0) {
        return EB_ERR_INVALID;
    }
    void *scratch = malloc(need);
    if (!scratch) {
        return EB_ERR_NOMEM;
    }
    eb_status st = eb_preprocess_siglip_scratch(img, size, mean, std, out_chw, scratch, need);
    free(scratch);
    return st;
}
