/* eb_cuda_gemm — matrix products through cuBLASLt (internal to the CUDA backend).
 *
 * y (M, N) [+]= x (M, K) · Wᵀ + bias [then GELU], row-major, W (N, K) like torch.nn.Linear.
 * Precision per backend: FP32 (exact fp32 FMA), TF32 (fp32 storage, tensor cores with 10-bit
 * mantissa inputs) or BF16 (W stored BF16, x converted to BF16 on the fly, FP32 accumulate and
 * output). A plan (descriptors + algorithm from the heuristic) is cached per shape so the
 * request path only calls cublasLtMatmul.
 */
#ifndef EB_CUDA_GEMM_H
#define EB_CUDA_GEMM_H

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

typedef enum eb_cuda_precision {
    EB_CUDA_FP32 = 0,
    EB_CUDA_TF32 = 1,
    EB_CUDA_BF16 = 2,
} eb_cuda_precision;

typedef struct eb_cuda_gemm eb_cuda_gemm;

/* Name of a cuBLAS status (cublasGetStatusString lives in libcublas, which is not linked). */
const char *eb_cuda_lt_status_str(cublasStatus_t st);

/* Parse "fp32" / "tf32" / "bf16"; -1 for anything else. */
int eb_cuda_precision_parse(const char *s);
const char *eb_cuda_precision_name(eb_cuda_precision p);

/* Create a GEMM context using `workspace` (device, workspace_bytes) for cuBLASLt. NULL on
 * failure with the reason in err. */
eb_cuda_gemm *eb_cuda_gemm_create(eb_cuda_precision prec, void *workspace, size_t workspace_bytes,
                                  char *err, size_t err_len);
void eb_cuda_gemm_destroy(eb_cuda_gemm *g);

typedef struct eb_cuda_gemm_args {
    float *y;
    int64_t ldy;
    const void *x; /* fp32 (FP32/TF32) or bf16 (BF16) */
    int64_t ldx;
    const void *w; /* (N, K): fp32 or bf16 like x */
    const float *bias; /* (N) or NULL */
    int64_t M, N, K;
    int accumulate;  /* y += ... (beta = 1) */
    int gelu;        /* GELU (tanh form) epilogue; not with accumulate */
} eb_cuda_gemm_args;

/* Enqueue the product on `stream`. Returns CUBLAS_STATUS_SUCCESS or the failing status; when no
 * algorithm exists for the shape, CUBLAS_STATUS_NOT_SUPPORTED. */
cublasStatus_t eb_cuda_gemm_run(eb_cuda_gemm *g, cudaStream_t stream, const eb_cuda_gemm_args *a);

/* Same, but with explicit input types (for the GEMM peak benchmark: bf16 in, bf16 out). */
cublasStatus_t eb_cuda_gemm_bf16_peak(eb_cuda_gemm *g, cudaStream_t stream, __nv_bfloat16 *d,
                                      const __nv_bfloat16 *a, const __nv_bfloat16 *b, int64_t n);

/* Comparison / fallback kernel: a shared-memory tiled GEMM with fp32 FMAs (x and w fp32, or both
 * bf16 when `bf16`), same contract (accumulate with gelu means y += gelu(...)). Used when
 * cuBLASLt has no algorithm for a shape or alignment (NOT_SUPPORTED), and with EB_CUDA_GEMM=tiled
 * to measure cuBLASLt against a separate kernel. */
cudaError_t eb_cuda_gemm_tiled(cudaStream_t stream, const eb_cuda_gemm_args *a, int bf16);

#endif
