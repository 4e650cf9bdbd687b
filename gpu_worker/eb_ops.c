/* eb_ops — dtype helpers, backend selection and buffer layout for the op interface.
 *
 * The interface itself is the function table in eb_ops.h; this file holds what every backend
 * and every model shares: exact dtype conversions (bf16/f16 <-> f32, round to nearest even like
 * torch), choosing a backend by name (the CUDA one is a shared library opened at run time so
 * the same worker binary runs where there is no CUDA), and the arithmetic that lays weights and
 * activations out inside the two buffers a model owns.
 */
#include "eb_ops.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "eb_cpu_ops.h"
#include "eb_cuda_loader.h"

size_t eb_dtype_size(eb_dtype dtype)
{
    switch (dtype) {
    case EB_DTYPE_F32: return 4;
    case EB_DTYPE_F16: return 2;
    case EB_DTYPE_BF16: return 2;
    case EB_DTYPE_I32: return 4;
    }
    return 0;
}

const char *eb_dtype_name(eb_dtype dtype)
{
    switch (dtype) {
    case EB_DTYPE_F32: return "F32";
    case EB_DTYPE_F16: return "F16";
    case EB_DTYPE_BF16: return "BF16";
    case EB_DTYPE_I32: return "I32";
    }
    return "?";
}

static inline float bits_to_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t f32_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

void eb_ops_bf16_to_f32(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = bits_to_f32((uint32_t)src[i] << 16);
}

static float f16_to_f32_one(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        if (mant == 0)
            return bits_to_f32(sign);
        // Subnormal: value = mant * 2^-24, exact in fp32.
        float v = (float)mant * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exp == 31)
        return bits_to_f32(sign | 0x7f800000u | (mant << 13));
    return bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

void eb_ops_f16_to_f32(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = f16_to_f32_one(src[i]);
}

void eb_ops_f32_to_bf16(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t u = f32_to_bits(src[i]);
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            dst[i] = (uint16_t)((u >> 16) | 0x40u); // quiet NaN, sign kept
            continue;
        }
        u += 0x7fffu + ((u >> 16) & 1u);
        dst[i] = (uint16_t)(u >> 16);
    }
}

static uint16_t f32_to_f16_one(float f)
{
    uint32_t u = f32_to_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u);
    if (absu >= 0x477ff000u) // rounds to >= 65520 -> inf
        return (uint16_t)(sign | 0x7c00u);
    if (absu < 0x38800000u) {
        // Result is subnormal (or zero) in f16: value / 2^-24 rounded to nearest even.
        // 0.5f * 2^-24 ... use the float adder to round: adding 0.5 (2^-1) aligns to 2^-24 ulp.
        float a = bits_to_f32(absu);
        float r = a + 0.5f; // ulp of values in [0.5,1) is 2^-24: the add rounds RNE at 2^-24
        uint32_t m = f32_to_bits(r) - f32_to_bits(0.5f);
        return (uint16_t)(sign | m);
    }
    uint32_t mant_odd = (absu >> 13) & 1u;
    absu += 0xc8000fffu + mant_odd; // rebias exponent (-112 << 23) and round to nearest even
    return (uint16_t)(sign | (absu >> 13));
}

void eb_ops_f32_to_f16(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = f32_to_f16_one(src[i]);
}

eb_status eb_ops_to_f32(float *dst, const void *src, eb_dtype src_dtype, size_t n)
{
    switch (src_dtype) {
    case EB_DTYPE_F32: memcpy(dst, src, n * sizeof(float)); return EB_OK;
    case EB_DTYPE_BF16: eb_ops_bf16_to_f32(dst, src, n); return EB_OK;
    case EB_DTYPE_F16: eb_ops_f16_to_f32(dst, src, n); return EB_OK;
    default: return EB_ERR_INVALID;
    }
}

size_t eb_ops_align(size_t bytes)
{
    return (bytes + (EB_OPS_ALIGN - 1)) & ~(size_t)(EB_OPS_ALIGN - 1);
}

int64_t eb_tensor_nelem(const eb_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

const char *eb_op_name(eb_op op)
{
    static const char *const names[EB_OP_COUNT] = {
        [EB_OP_MATMUL] = "matmul",         [EB_OP_LAYERNORM] = "layernorm",
        [EB_OP_RMSNORM] = "rmsnorm",       [EB_OP_GELU_TANH] = "gelu_tanh",
        [EB_OP_SILU_MUL] = "silu_mul",     [EB_OP_SOFTMAX] = "softmax",
        [EB_OP_ATTENTION] = "attention",   [EB_OP_ROPE] = "rope",
        [EB_OP_ADD] = "add",               [EB_OP_L2NORM] = "l2norm",
        [EB_OP_PATCH_EMBED] = "patch_embed", [EB_OP_GET_ROWS] = "get_rows",
        [EB_OP_POOL_LAST] = "pool_last",   [EB_OP_COPY_ROWS] = "copy_rows",
    };
    if ((int)op < 0 || op >= EB_OP_COUNT)
        return "?";
    return names[op];
}

/* ---- backend selection ------------------------------------------------------------------------ */

static void *open_cuda_library(const eb_backend_params *params, char *err, size_t err_len)
{
    // Same search as every other program (eb_cuda_loader): EB_CUDA_LIBRARY, then next to the
    // executable, then the dynamic loader's path; so all of them share one library instance.
    char path[PATH_MAX];
    const char *lib = params && params->cuda_library ? params->cuda_library
                                                     : eb_cuda_loader_path(path, sizeof(path));
    void *h = dlopen(lib ? lib : "libeb_cuda.so", RTLD_NOW | RTLD_LOCAL);
    if (!h)
        snprintf(err, err_len,
                 "cannot load CUDA backend %s: %s (build it with nvcc, set EB_CUDA_LIBRARY, or "
                 "use --backend cpu)",
                 lib ? lib : "libeb_cuda.so", dlerror());
    return h;
}

static eb_backend *create_cuda(const eb_backend_params *params, char *err, size_t err_len)
{
    void *h = open_cuda_library(params, err, err_len);
    if (!h)
        return NULL;
    eb_backend_create_fn create;
    void *sym = dlsym(h, EB_CUDA_BACKEND_SYMBOL);
    memcpy(&create, &sym, sizeof(create));
    if (!create) {
        snprintf(err, err_len, "CUDA backend library lacks symbol %s", EB_CUDA_BACKEND_SYMBOL);
        dlclose(h);
        return NULL;
    }
    // The library stays loaded for the life of the process: backends hold pointers into it.
    return create(params, err, err_len);
}

eb_backend *eb_backend_create(const char *name, const eb_backend_params *params, char *err,
                              size_t err_len)
{
    eb_backend_params defaults = {0};
    if (!params)
        params = &defaults;
    if (!name || strcmp(name, "auto") == 0) {
        char cuda_err[512];
        eb_backend *be = create_cuda(params, cuda_err, sizeof(cuda_err));
        if (be)
            return be;
        return eb_cpu_backend_create(params, err, err_len);
    }
    if (strcmp(name, "cpu") == 0)
        return eb_cpu_backend_create(params, err, err_len);
    if (strcmp(name, "cuda") == 0)
        return create_cuda(params, err, err_len);
    snprintf(err, err_len, "unknown backend \"%s\": use auto, cuda or cpu", name);
    return NULL;
}

void eb_backend_destroy(eb_backend **be)
{
    if (!be || !*be)
        return;
    (*be)->iface.destroy(*be);
    *be = NULL;
}

/* ---- layout helpers --------------------------------------------------------------------------- */

size_t eb_ops_weight_bytes(eb_backend *be, eb_dtype src_dtype, eb_weight_kind kind, int ndim,
                           const int64_t *shape)
{
    eb_dtype dt = be->iface.weight_dtype(be, src_dtype, kind);
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    return eb_ops_align(n * eb_dtype_size(dt));
}

eb_status eb_ops_weight_place(eb_backend *be, eb_tensor *t, eb_buffer *buf, size_t *offset,
                              eb_dtype src_dtype, eb_weight_kind kind, int ndim,
                              const int64_t *shape)
{
    if (ndim < 1 || ndim > EB_TENSOR_MAX_DIMS)
        return EB_ERR_INVALID;
    size_t bytes = eb_ops_weight_bytes(be, src_dtype, kind, ndim, shape);
    size_t cap = be->iface.buffer_size(be, buf);
    if (*offset > cap || bytes > cap - *offset)
        return EB_ERR_INVALID;
    memset(t, 0, sizeof(*t));
    t->data = (char *)be->iface.buffer_base(be, buf) + *offset;
    t->buffer = buf;
    t->dtype = be->iface.weight_dtype(be, src_dtype, kind);
    t->kind = kind;
    t->ndim = ndim;
    for (int i = 0; i < EB_TENSOR_MAX_DIMS; i++)
        t->shape[i] = i < ndim ? shape[i] : 1;
    *offset += bytes;
    return EB_OK;
}

float *eb_ops_act_carve(eb_backend *be, eb_buffer *buf, size_t *offset, int64_t n_floats)
{
    size_t bytes = eb_ops_align((size_t)n_floats * sizeof(float));
    if (!buf) {
        *offset += bytes;
        return NULL;
    }
    size_t cap = be->iface.buffer_size(be, buf);
    if (*offset > cap || bytes > cap - *offset)
        return NULL;
    float *p = (float *)((char *)be->iface.buffer_base(be, buf) + *offset);
    *offset += bytes;
    return p;
}
