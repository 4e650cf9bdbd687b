/* cuBLASLt, emulated on the CPU for bench/kernels/emu (see cuda_emu.h): the API subset the
 * backend uses, with the documented column-major semantics
 *   D = alpha * op(A) * op(B) + beta * C (+ bias per row of D) (then GELU, tanh form),
 * computed naively in double. Checks the backend's plumbing (layouts, leading dimensions,
 * transposes, epilogues, scratch, graphs), not cuBLASLt itself. */
#ifndef EMU_CUBLASLT_H
#define EMU_CUBLASLT_H
#include "../cuda_emu.h"

typedef enum {
    CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_NOT_INITIALIZED = 1, CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7, CUBLAS_STATUS_ARCH_MISMATCH = 8,
    CUBLAS_STATUS_MAPPING_ERROR = 11, CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14, CUBLAS_STATUS_NOT_SUPPORTED = 15,
    CUBLAS_STATUS_LICENSE_ERROR = 16
} cublasStatus_t;
typedef enum { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77 } cublasComputeType_t;
typedef enum { CUDA_R_32F = 0, CUDA_R_16BF = 14 } cudaDataType_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum {
    CUBLASLT_EPILOGUE_DEFAULT = 1, CUBLASLT_EPILOGUE_BIAS = 4, CUBLASLT_EPILOGUE_GELU = 32,
    CUBLASLT_EPILOGUE_GELU_BIAS = 36
} cublasLtEpilogue_t;
typedef enum {
    CUBLASLT_MATMUL_DESC_TRANSA, CUBLASLT_MATMUL_DESC_TRANSB, CUBLASLT_MATMUL_DESC_EPILOGUE,
    CUBLASLT_MATMUL_DESC_BIAS_POINTER, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE
} cublasLtMatmulDescAttributes_t;
typedef enum {
    CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES
} cublasLtMatmulPreferenceAttributes_t;

struct emu_lt_desc {
    cublasComputeType_t compute;
    cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
    const void *bias = nullptr;
    cudaDataType_t bias_type = CUDA_R_32F;
};
struct emu_lt_layout {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
};
typedef void *cublasLtHandle_t;
typedef emu_lt_desc *cublasLtMatmulDesc_t;
typedef emu_lt_layout *cublasLtMatrixLayout_t;
typedef void *cublasLtMatmulPreference_t;
typedef struct { int dummy; } cublasLtMatmulAlgo_t;
typedef struct { cublasLtMatmulAlgo_t algo; } cublasLtMatmulHeuristicResult_t;

inline cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) { *h = (void *)1; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasLtDestroy(cublasLtHandle_t) { return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t c, cudaDataType_t)
{
    *d = new emu_lt_desc();
    (*d)->compute = c;
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) { delete d; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                                     cublasLtMatmulDescAttributes_t a,
                                                     const void *v, size_t n)
{
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA: memcpy(&d->ta, v, n); break;
    case CUBLASLT_MATMUL_DESC_TRANSB: memcpy(&d->tb, v, n); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: memcpy(&d->epi, v, n); break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: memcpy(&d->bias, v, n); break;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: memcpy(&d->bias_type, v, n); break;
    }
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t t,
                                                 uint64_t rows, uint64_t cols, int64_t ld)
{
    if (ld < (int64_t)rows)
        return CUBLAS_STATUS_INVALID_VALUE; // column-major: ld >= rows
    *l = new emu_lt_layout{t, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) { delete l; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) { *p = (void *)1; return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t) { return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t,
                                                           cublasLtMatmulPreferenceAttributes_t,
                                                           const void *, size_t)
{
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t d,
                                                     cublasLtMatrixLayout_t a,
                                                     cublasLtMatrixLayout_t b,
                                                     cublasLtMatrixLayout_t c,
                                                     cublasLtMatrixLayout_t dd,
                                                     cublasLtMatmulPreference_t, int,
                                                     cublasLtMatmulHeuristicResult_t *r, int *found)
{
    // shape consistency, as the real heuristic would reject
    uint64_t m = d->ta == CUBLAS_OP_T ? a->cols : a->rows, k = d->ta == CUBLAS_OP_T ? a->rows : a->cols;
    uint64_t kb = d->tb == CUBLAS_OP_T ? b->cols : b->rows, n = d->tb == CUBLAS_OP_T ? b->rows : b->cols;
    if (k != kb || c->rows != m || c->cols != n || dd->rows != m || dd->cols != n || a->type != b->type)
        return CUBLAS_STATUS_INVALID_VALUE;
    r->algo.dummy = 0;
    *found = 1;
    return CUBLAS_STATUS_SUCCESS;
}
inline double emu_lt_get(const void *p, cudaDataType_t t, int64_t i)
{
    return t == CUDA_R_16BF ? __bfloat162float(((const __nv_bfloat16 *)p)[i]) : ((const float *)p)[i];
}
inline void emu_lt_matmul(emu_lt_desc d, const float alpha, const void *A, emu_lt_layout la,
                          const void *B, emu_lt_layout lb, const float beta, const void *C,
                          emu_lt_layout lc, void *D)
{
    uint64_t m = lc.rows, n = lc.cols, k = d.ta == CUBLAS_OP_T ? la.rows : la.cols;
    bool bias = d.epi == CUBLASLT_EPILOGUE_BIAS || d.epi == CUBLASLT_EPILOGUE_GELU_BIAS;
    bool gelu = d.epi == CUBLASLT_EPILOGUE_GELU || d.epi == CUBLASLT_EPILOGUE_GELU_BIAS;
    std::vector<double> out(m * n);
    for (uint64_t j = 0; j < n; j++)
        for (uint64_t i = 0; i < m; i++) {
            double s = 0;
            for (uint64_t p = 0; p < k; p++) {
                double av = d.ta == CUBLAS_OP_T ? emu_lt_get(A, la.type, (int64_t)(i * la.ld + p))
                                                : emu_lt_get(A, la.type, (int64_t)(p * la.ld + i));
                double bv = d.tb == CUBLAS_OP_T ? emu_lt_get(B, lb.type, (int64_t)(p * lb.ld + j))
                                                : emu_lt_get(B, lb.type, (int64_t)(j * lb.ld + p));
                s += av * bv;
            }
            double v = alpha * s;
            if (beta != 0)
                v += beta * emu_lt_get(C, lc.type, (int64_t)(j * lc.ld + i));
            if (bias)
                v += emu_lt_get(d.bias, d.bias_type, (int64_t)i);
            if (gelu)
                v = 0.5 * v * (1 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
            out[j * m + i] = v;
        }
    for (uint64_t j = 0; j < n; j++)
        for (uint64_t i = 0; i < m; i++) {
            if (lc.type == CUDA_R_16BF)
                ((__nv_bfloat16 *)D)[j * lc.ld + i] = __float2bfloat16_rn((float)out[j * m + i]);
            else
                ((float *)D)[j * lc.ld + i] = (float)out[j * m + i];
        }
}
inline cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void *alpha,
                                     const void *A, cublasLtMatrixLayout_t la, const void *B,
                                     cublasLtMatrixLayout_t lb, const void *beta, const void *C,
                                     cublasLtMatrixLayout_t lc, void *D,
                                     cublasLtMatrixLayout_t, const cublasLtMatmulAlgo_t *, void *,
                                     size_t, cudaStream_t)
{
    emu_lt_desc dc = *d; // attributes as of this call (captured by value, like the real one)
    emu_lt_layout a = *la, b = *lb, c = *lc;
    float al = *(const float *)alpha, be = *(const float *)beta;
    auto run = [=] { emu_lt_matmul(dc, al, A, a, B, b, be, C, c, D); };
    if (emu_capturing)
        emu_capture_list->push_back(run);
    else
        run();
    return CUBLAS_STATUS_SUCCESS;
}
#endif
