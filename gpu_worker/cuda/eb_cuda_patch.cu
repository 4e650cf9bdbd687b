/* eb_cuda_patch — patch embedding's im2col: pixels (B, Cin, H, W) -> columns (B*T, Cin*P*P).
 *
 * Patch embedding is im2col + GEMM here, not a cuDNN convolution. With kernel = stride = P and
 * no padding the patches do not overlap, so im2col is a pure permutation of the pixels (every
 * pixel read once, written once: ~0.6 MB per 224² image) and the convolution IS the GEMM
 * (B*T, Cin*P*P) x (Cin*P*P, C) that cuBLASLt runs at tensor-core speed with the bias fused;
 * cuDNN would run the same implicit GEMM behind its own descriptors and workspace. cuDNN is not
 * installed on the development machines and was not measured: the issue's "measure both" is
 * open (see the report), and the im2col share of the forward is measured by bench/gpu-check.
 * Columns are written in (c, ky, kx) order, matching Conv2d's weight (C, Cin, P, P) viewed as a
 * (C, Cin*P*P) matrix, directly in the GEMM's input dtype (bf16 or fp32) so no extra
 * conversion pass is needed.
 */
#include "eb_cuda_common.cuh"
#include "eb_cuda_kernels.h"

template <typename T>
__global__ void im2col_kernel1(T *cols, const float *pixels, int64_t B, int64_t Cin, int64_t H,
                               int64_t W, int64_t P)
{
    int64_t gw = W / P, gh = H / P, T_ = gh * gw, pd = Cin * P * P;
    int64_t total = B * T_ * pd;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t col = i % pd, row = i / pd;
        int64_t t = row % T_, b = row / T_;
        int64_t c = col / (P * P), ky = (col / P) % P, kx = col % P;
        int64_t py = t / gw, px = t % gw;
        float v = pixels[((b * Cin + c) * H + py * P + ky) * W + px * P + kx];
        if constexpr (sizeof(T) == 2)
            cols[i] = __float2bfloat16_rn(v);
        else
            cols[i] = v;
    }
}

cudaError_t eb_cuda_im2col(cudaStream_t s, float *cols_f32, __nv_bfloat16 *cols_bf16,
                           const float *pixels, int64_t B, int64_t Cin, int64_t H, int64_t W,
                           int64_t P)
{
    int64_t total = B * (H / P) * (W / P) * Cin * P * P;
    if (total <= 0)
        return cudaSuccess;
    if (cols_bf16)
        im2col_kernel1<__nv_bfloat16><<<eb_grid_for(total, 256), 256, 0, s>>>(cols_bf16, pixels,
                                                                              B, Cin, H, W, P);
    else
        im2col_kernel1<float><<<eb_grid_for(total, 256), 256, 0, s>>>(cols_f32, pixels, B, Cin,
                                                                      H, W, P);
    return cudaGetLastError();
}
