/* eb_cuda_ext — extra entry points of libeb_cuda.so beyond the op table (C, for dlsym).
 *
 * The op interface has no image-resize op and no way to measure the card, but the GPU checks
 * need both: the resize is checked bit for bit against the CPU's Pillow port, and the
 * benchmark reports the model's TFLOP/s against the card's BF16 GEMM peak measured in the same
 * run. Programs find these with eb_cuda_loader_symbol() (gpu_worker/eb_cuda_loader.h). They
 * allocate device memory and synchronise: tests and benchmarks only, never the request path.
 */
#ifndef EB_CUDA_EXT_H
#define EB_CUDA_EXT_H

#include <stdint.h>

#include "eb_ops.h"

/* Pillow-exact bicubic resize of src (in_h, in_w, 3) RGB8 to (out_h, out_w) on the GPU with
 * taps from eb_resize_coeffs (bounds (out, 2), taps (out, ksize) per axis). Writes the uint8
 * result (out_h, out_w, 3) to out_u8 and/or the normalised channels-first (3, out_h, out_w)
 * floats (x/255 - mean)/std to out_f32 (either may be NULL). All pointers are host memory.
 * EB_ERR_INVALID for bad sizes, EB_ERR_INTERNAL on a device failure. */
#define EB_CUDA_EXT_RESIZE "eb_cuda_ext_resize"
typedef eb_status (*eb_cuda_ext_resize_fn)(eb_backend *be, const uint8_t *src, int in_w,
                                           int in_h, int out_w, int out_h,
                                           const int32_t *bounds_x, const int32_t *taps_x,
                                           int ksize_x, const int32_t *bounds_y,
                                           const int32_t *taps_y, int ksize_y,
                                           const float mean[3], const float std[3],
                                           uint8_t *out_u8, float *out_f32);

/* Times `iters` BF16 n×n×n GEMMs (bf16 out, fp32 accumulate, cuBLASLt, random data) after 3
 * warm-ups; *tflops = 2n³·iters / time. */
#define EB_CUDA_EXT_GEMM_PEAK "eb_cuda_ext_gemm_peak"
typedef eb_status (*eb_cuda_ext_gemm_peak_fn)(eb_backend *be, int n, int iters, double *tflops);

/* The first device failure of this backend ("" when none). Static per backend: do not free. */
#define EB_CUDA_EXT_FAILURE "eb_cuda_ext_failure"
typedef const char *(*eb_cuda_ext_failure_fn)(eb_backend *be);

#endif
