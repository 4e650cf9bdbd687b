/* eb_ops — the op interface every model (SigLIP, Qwen3) is written against.
 *
 * A backend (CPU in gpu_worker/cpu/, CUDA in gpu_worker/cuda/) is a table of function pointers
 * in the style of ggml-backend: model code calls `be->iface.matmul(be, ...)` and never sees what
 * is behind it. The interface is deliberately small and concrete: one entry per op the two
 * models need, with shapes written out.
 *
 * Memory model
 *   - Every piece of backend memory lives in an eb_buffer the backend allocated: one buffer for
 *     all the weights of a model (EB_BUFFER_WEIGHTS), one for the activations sized once for
 *     the largest batch (EB_BUFFER_ACTIVATIONS). No op allocates; ops that need scratch get it
 *     from eb_backend_iface.reserve(), called once at load time with the largest shapes.
 *   - Weights are eb_tensor handles. The BACKEND chooses the storage dtype of each weight
 *     (weight_dtype(): the CPU keeps fp32; the CUDA backend may keep BF16 matrices and fp32
 *     vectors) and converts from the checkpoint's dtype in weight_upload().
 *   - Activations are plain `float *` pointers into an activations buffer (device pointers on
 *     CUDA: pointer arithmetic is fine, dereferencing on the host is not). They are fp32 in every
 *     backend; a backend that computes in lower precision converts inside its ops.
 *   - All matrices are row-major. `ld*` arguments are row strides in elements (>= the row
 *     length) so that ops can read slices such as q/k/v out of one fused (T, 3C) projection.
 *   - Integer arrays marked "host" are ordinary host memory (a backend that needs them on the
 *     device copies them itself); arrays marked "backend" live in backend memory (upload()).
 *
 * Errors: ops return EB_OK or EB_ERR_INVALID (bad shapes/arguments) / EB_ERR_UNSUPPORTED (flag or
 * shape the backend cannot do: check supports() at load). Asynchronous backends may report a
 * device failure only at synchronize(); such a failure is fatal for the worker.
 *
 * Threading: a backend object is used by one thread at a time (the worker's compute thread).
 * The CPU backend parallelises internally with its own thread pool.
 */
#ifndef EB_OPS_H
#define EB_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_status.h"

/* ---- dtypes ----------------------------------------------------------------------------------- */

typedef enum eb_dtype {
    EB_DTYPE_F32 = 0,
    EB_DTYPE_F16 = 1,
    EB_DTYPE_BF16 = 2,
    EB_DTYPE_I32 = 3, /* token ids, lengths; never a weight */
} eb_dtype;

/* Bytes per element (4, 2, 2, 4); 0 for an unknown value. */
size_t eb_dtype_size(eb_dtype dtype);

/* "F32", "F16", "BF16", "I32" (the safetensors spellings); "?" for an unknown value. */
const char *eb_dtype_name(eb_dtype dtype);

/* Conversions used by loaders and backends (exact: bf16/f16 -> f32 is lossless; f32 -> bf16
 * and f32 -> f16 round to nearest even, as torch does). `n` elements; src and dst must not
 * overlap. */
void eb_ops_bf16_to_f32(float *dst, const uint16_t *src, size_t n);
void eb_ops_f16_to_f32(float *dst, const uint16_t *src, size_t n);
void eb_ops_f32_to_bf16(uint16_t *dst, const float *src, size_t n);
void eb_ops_f32_to_f16(uint16_t *dst, const float *src, size_t n);

/* Convert `n` elements of `src` (dtype src_dtype, F32/F16/BF16) to fp32. EB_ERR_INVALID for
 * another dtype. */
eb_status eb_ops_to_f32(float *dst, const void *src, eb_dtype src_dtype, size_t n);

/* ---- buffers and weight tensors --------------------------------------------------------------- */

typedef enum eb_buffer_usage {
    EB_BUFFER_WEIGHTS = 0,     /* written once at load by weight_upload(), read by ops */
    EB_BUFFER_ACTIVATIONS = 1, /* inputs, intermediate values and outputs of a forward */
} eb_buffer_usage;

/* Opaque to model code; each backend defines its own `struct eb_buffer`. */
typedef struct eb_buffer eb_buffer;

/* Every tensor and activation region inside a buffer starts at a multiple of this many bytes
 * (enough for AVX-512 loads and CUDA's 128-byte transactions / cuBLASLt alignment). */
#define EB_OPS_ALIGN 256

/* Round `bytes` up to EB_OPS_ALIGN. */
size_t eb_ops_align(size_t bytes);

/* What a weight is used for, so a backend can pick a storage format per kind (e.g. BF16 for
 * matrices, fp32 for vectors). */
typedef enum eb_weight_kind {
    EB_WEIGHT_MATRIX = 0, /* (N, K) Linear weight, also patch-embedding (C, 3*P*P) */
    EB_WEIGHT_VECTOR = 1, /* bias, norm gain/shift: (N) */
    EB_WEIGHT_TABLE = 2,  /* rows read as activations: token embeddings (V, C), position
                             embeddings (T, C), the pooling probe (1, C) */
} eb_weight_kind;

#define EB_TENSOR_MAX_DIMS 4

/* A weight tensor placed in a weights buffer. Filled by eb_ops_weight_place(); model code
 * reads shape[] but never dereferences data (it may be a device pointer). */
typedef struct eb_tensor {
    void *data;         /* backend memory, EB_OPS_ALIGN-aligned, inside `buffer` */
    eb_buffer *buffer;  /* the weights buffer holding it */
    eb_dtype dtype;     /* storage dtype, chosen by the backend (weight_dtype) */
    eb_weight_kind kind;
    int ndim;
    int64_t shape[EB_TENSOR_MAX_DIMS]; /* outermost first, like PyTorch; unused dims are 1 */
} eb_tensor;

/* Number of elements of t (product of shape[0..ndim-1]). */
int64_t eb_tensor_nelem(const eb_tensor *t);

/* ---- op descriptors --------------------------------------------------------------------------- */

/* Ops, for supports(). */
typedef enum eb_op {
    EB_OP_MATMUL = 0,
    EB_OP_LAYERNORM,
    EB_OP_RMSNORM,
    EB_OP_GELU_TANH,
    EB_OP_SILU_MUL,
    EB_OP_SOFTMAX,
    EB_OP_ATTENTION,
    EB_OP_ROPE,
    EB_OP_ADD,
    EB_OP_L2NORM,
    EB_OP_PATCH_EMBED,
    EB_OP_GET_ROWS,
    EB_OP_POOL_LAST,
    EB_OP_COPY_ROWS,
    EB_OP_COUNT
} eb_op;

/* Name of an op ("matmul", ...); "?" for an unknown value. */
const char *eb_op_name(eb_op op);

/* matmul flags */
#define EB_MATMUL_GELU_TANH 0x1u  /* y = gelu_tanh(x·Wᵀ + b) */
#define EB_MATMUL_ACCUMULATE 0x2u /* y = y + x·Wᵀ + b (fused residual add); y is read first.
                                     With GELU_TANH: y = y + gelu(x·Wᵀ + b). */

/* attention flags */
#define EB_ATTN_CAUSAL 0x1u /* query i (position i of its sequence) sees keys 0..i only;
                               requires Tq == Tk */

/* One attention call. Shapes use B batch items, Tq query tokens and Tk key tokens per item,
 * H query heads, Hkv key/value heads (H % Hkv == 0; query head h reads kv head h / (H/Hkv)),
 * head dim D. Element (b, t, h, d) of q is at
 *     q[b * q_batch_stride + t * q_token_stride + h * D + d]
 * and likewise for k and v (kv head index instead of h) and out. Examples:
 *   - ViT self-attention on a fused qkv (B, T, 3C) buffer: q = qkv, k = qkv + C, v = qkv + 2C,
 *     token strides 3C, batch strides T*3C; out (B, T, C) with token stride C, batch stride T*C.
 *   - SigLIP pooling head: one query shared by every item: Tq = 1, q_batch_stride = 0.
 * `kv_lens` (host, B entries, may be NULL = all Tk valid): only keys 0..kv_lens[b]-1 of item b
 * take part (right padding for variable-length text); query rows t >= kv_lens[b] are written
 * as zeros. out = softmax(scale * q·kᵀ) · v per head; softmax in fp32. */
typedef struct eb_attn_desc {
    int64_t B, Tq, Tk, H, Hkv, D;
    int64_t q_batch_stride, q_token_stride;
    int64_t k_batch_stride, k_token_stride;
    int64_t v_batch_stride, v_token_stride;
    int64_t out_batch_stride, out_token_stride;
    float scale; /* usually 1/sqrt(D) */
    unsigned flags;
    const int32_t *kv_lens; /* host, B entries, or NULL */
} eb_attn_desc;

/* Largest shapes a model will ever pass, given once to reserve() so ops never allocate. */
typedef struct eb_ops_limits {
    int64_t max_batch;     /* B */
    int64_t max_tokens;    /* T per item (queries and keys) */
    int64_t max_heads;     /* H */
    int64_t max_head_dim;  /* D */
    int64_t max_hidden;    /* largest row length any row-wise op sees (C or MLP width) */
    int64_t max_patch_dim; /* 3*P*P for patch_embed, 0 if unused */
} eb_ops_limits;

/* ---- the backend ------------------------------------------------------------------------------ */

typedef struct eb_backend eb_backend;

typedef struct eb_backend_iface {
    /* -- lifetime and memory -- */

    /* Free everything the backend owns. Release the buffers from buffer_alloc first (the CPU
     * backend does not track them). */
    void (*destroy)(eb_backend *be);

    /* True when the backend implements `op` with `flags` (matmul/attention flags, else 0). */
    bool (*supports)(eb_backend *be, eb_op op, unsigned flags);

    /* Pre-allocate the scratch space ops need for shapes up to `limits` (CPU: im2col and
     * attention score rows per thread; CUDA: workspaces, graph pools). Called once per model
     * after load; later calls only grow the scratch (one backend may serve several models).
     * EB_ERR_NOMEM on failure. */
    eb_status (*reserve)(eb_backend *be, const eb_ops_limits *limits);

    /* One allocation of `bytes` (>0) backend memory, EB_OPS_ALIGN-aligned. NULL on failure.
     * The returned buffer is owned by the caller: release it with buffer_free. */
    eb_buffer *(*buffer_alloc)(eb_backend *be, size_t bytes, eb_buffer_usage usage);
    void (*buffer_free)(eb_backend *be, eb_buffer *buf);
    /* Base address (backend memory) and size of a buffer. */
    void *(*buffer_base)(eb_backend *be, eb_buffer *buf);
    size_t (*buffer_size)(eb_backend *be, eb_buffer *buf);

    /* Storage dtype the backend keeps for a weight of `kind` whose checkpoint dtype is `src`. */
    eb_dtype (*weight_dtype)(eb_backend *be, eb_dtype src, eb_weight_kind kind);

    /* Copy `n` elements of host data (dtype src_dtype: F32, F16 or BF16) into weight `t`
     * starting at element `elem_offset` (so one tensor can be filled from several checkpoint
     * tensors, e.g. q, k and v into one (3C, C) matrix), converting to t->dtype. Synchronous:
     * `host` may be freed or unmapped on return. EB_ERR_INVALID when the range exceeds t. */
    eb_status (*weight_upload)(eb_backend *be, eb_tensor *t, int64_t elem_offset,
                               const void *host, eb_dtype src_dtype, int64_t n);

    /* Copy bytes between host memory and backend memory (activations, token ids). upload is
     * ordered before every op queued after it and `src_host` may be reused when it returns;
     * download waits for every queued op, then copies (the data is on the host on return). */
    eb_status (*upload)(eb_backend *be, void *dst_backend, const void *src_host, size_t bytes);
    eb_status (*download)(eb_backend *be, void *dst_host, const void *src_backend, size_t bytes);

    /* Wait until every queued op has finished; reports deferred device errors. */
    eb_status (*synchronize)(eb_backend *be);

    /* -- ops (all activations fp32, row-major) -- */

    /* y (M, N) = x (M, K) · Wᵀ + bias, W = w (N, K) as stored by torch.nn.Linear, bias (N) or
     * NULL; flags EB_MATMUL_*. Row i of x is at x + i*ldx (ldx >= K), row i of y at y + i*ldy
     * (ldy >= N). x and y must not overlap. */
    eb_status (*matmul)(eb_backend *be, float *y, int64_t ldy, const float *x, int64_t ldx,
                        const eb_tensor *w, const eb_tensor *bias, int64_t M, unsigned flags);

    /* Row-wise LayerNorm over C: y = (x - mean) / sqrt(var + eps) * gain + shift (biased
     * variance, like torch). If `residual` is not NULL, first x += residual (x is updated in
     * place: the pre-LN residual stream) and the normalised sum goes to y. x, y: (rows, C)
     * contiguous; y may equal x only when residual is NULL. shift may be NULL (zero). */
    eb_status (*layernorm)(eb_backend *be, float *y, float *x, const float *residual,
                           const eb_tensor *gain, const eb_tensor *shift, int64_t rows,
                           int64_t C, float eps);

    /* Row-wise RMSNorm over C: y = x / sqrt(mean(x²) + eps) * gain (Qwen3; fp32). Residual as
     * for layernorm. Rows of x and y are `ld` apart (ld >= C; Qwen3's per-head q_norm/k_norm
     * use C = head_dim, ld = head_dim over rows = tokens*heads). y may equal x (in place). */
    eb_status (*rmsnorm)(eb_backend *be, float *y, float *x, const float *residual,
                         const eb_tensor *gain, int64_t rows, int64_t C, int64_t ld, float eps);

    /* y (n) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))) elementwise; y may equal x. */
    eb_status (*gelu_tanh)(eb_backend *be, float *y, const float *x, int64_t n);

    /* SwiGLU: y (rows, F) = silu(gate) * up, silu(g) = g / (1 + exp(-g)). Row r of gate is at
     * gate + r*ld_in, of up at up + r*ld_in (ld_in >= F; e.g. one fused (rows, 2F) projection
     * with up = gate + F, ld_in = 2F). y contiguous; y may equal gate when ld_in == F. */
    eb_status (*silu_mul)(eb_backend *be, float *y, const float *gate, const float *up,
                          int64_t rows, int64_t F, int64_t ld_in);

    /* In place, per row: x (rows, n) = softmax(scale * x). */
    eb_status (*softmax)(eb_backend *be, float *x, int64_t rows, int64_t n, float scale);

    /* Multi-head attention as described by eb_attn_desc. out must not overlap q, k or v. */
    eb_status (*attention)(eb_backend *be, float *out, const float *q, const float *k,
                           const float *v, const eb_attn_desc *desc);

    /* Rotary embedding, rotate_half form (Qwen3/Llama in transformers), in place on x
     * (B, T, H, D) with element (b,t,h,d) at x[b*batch_stride + t*token_stride + h*D + d].
     * Position of token t is t (sequences start at 0; right padding). For i < D/2:
     *   inv_freq_i = theta^(-2i/D), angle = t * inv_freq_i,
     *   x'[i]       = x[i] cos - x[i + D/2] sin,  x'[i + D/2] = x[i + D/2] cos + x[i] sin.
     * Angles are computed in fp32 like transformers (inv_freq fp32, t*inv_freq fp32). */
    eb_status (*rope)(eb_backend *be, float *x, int64_t B, int64_t T, int64_t H, int64_t D,
                      int64_t batch_stride, int64_t token_stride, float theta);

    /* y (n) = a + b elementwise; y may equal a or b. */
    eb_status (*add)(eb_backend *be, float *y, const float *a, const float *b, int64_t n);

    /* y (rows, C) = x / max(||x||₂, eps) per row (torch.nn.functional.normalize, eps 1e-12).
     * Row r of x is at x + r*ldx; y contiguous; y may equal x when ldx == C. */
    eb_status (*l2norm)(eb_backend *be, float *y, const float *x, int64_t rows, int64_t C,
                        int64_t ldx, float eps);

    /* ViT patch embedding (Conv2d with kernel = stride = P, no padding) plus optional position
     * embeddings:
     *   pixels (B, Cin, Himg, Wimg) fp32 channels-first, w (C, Cin, P, P) stored as a matrix
     *   (C, Cin*P*P) with columns in (c, ky, kx) order, bias (C) or NULL, pos (T, C) or NULL;
     *   out (B, T, C) with T = (Himg/P)*(Wimg/P), token t = row-major patch (t / (Wimg/P),
     *   t % (Wimg/P)). Like Conv2d, sizes that are not multiples of P use floor(Himg/P) x
     *   floor(Wimg/P) patches and ignore the remaining pixels (so400m: 384 / 14 -> 27 x 27). */
    eb_status (*patch_embed)(eb_backend *be, float *out, const float *pixels,
                             const eb_tensor *w, const eb_tensor *bias, const eb_tensor *pos,
                             int64_t B, int64_t Cin, int64_t Himg, int64_t Wimg, int64_t P);

    /* Embedding gather: y (n, C) row i = table row ids[i] (fp32); table (V, C) any storage
     * dtype; ids backend memory, n entries, each in [0, V) (out-of-range -> EB_ERR_INVALID on
     * backends that can check synchronously; undefined rows otherwise: validate ids first). */
    eb_status (*get_rows)(eb_backend *be, float *y, const eb_tensor *table,
                          const int32_t *ids, int64_t n);

    /* Last-token pooling: y (B, C) row b = x (B, T, C) row (b, lens[b]-1). lens host, B entries
     * in [1, T]. */
    eb_status (*pool_last)(eb_backend *be, float *y, const float *x, const int32_t *lens,
                           int64_t B, int64_t T, int64_t C);

    /* Strided row copy: dst row r (at dst + r*ld_dst) = src row r (at src + r*ld_src), `cols`
     * elements each (e.g. token 0 of every item: ld_src = T*C). Regions must not overlap. */
    eb_status (*copy_rows)(eb_backend *be, float *dst, int64_t ld_dst, const float *src,
                           int64_t ld_src, int64_t rows, int64_t cols);

    /* -- optional (NULL when absent): record/replay of a whole forward (CUDA graphs) --
     * The model calls graph_replay(key) before a forward whose every pointer and shape is a
     * function of `key` (e.g. the batch size); true means a recorded sequence was launched and
     * the model must NOT call the ops. Otherwise it calls graph_record_begin(key), the ops,
     * then graph_record_end(key); a backend may ignore record requests. */
    bool (*graph_replay)(eb_backend *be, uint64_t key);
    eb_status (*graph_record_begin)(eb_backend *be, uint64_t key);
    eb_status (*graph_record_end)(eb_backend *be, uint64_t key);
} eb_backend_iface;

struct eb_backend {
    const char *name;       /* "cpu", "cuda": static string */
    char device[128];       /* human-readable device, e.g. "2 threads, OpenBLAS 0.3.26" */
    int n_threads;          /* CPU threads used for compute (CPU backend); 0 elsewhere */
    eb_backend_iface iface;
    void *ctx;              /* backend private state */
};

/* ---- creating backends ------------------------------------------------------------------------ */

typedef struct eb_backend_params {
    int n_threads;            /* CPU backend: compute threads (0 = number of online CPUs) */
    int device_index;         /* CUDA backend: device ordinal */
    const char *cuda_library; /* path of libeb_cuda.so, NULL = as eb_cuda_loader_path():
                                 $EB_CUDA_LIBRARY, <exe dir>/../lib, <exe dir>/../../lib, then
                                 the dynamic loader's search path */
} eb_backend_params;

/* The symbol a backend shared library exports (libeb_cuda.so), of type eb_backend_create_fn. */
#define EB_CUDA_BACKEND_SYMBOL "eb_cuda_backend_create"
typedef eb_backend *(*eb_backend_create_fn)(const eb_backend_params *params, char *err,
                                            size_t err_len);

/* Create a backend by name: "cpu", "cuda" (dlopen of libeb_cuda.so), or "auto" (cuda when the
 * library loads and a device is present, else cpu). NULL on failure with the reason in err.
 * The caller owns the backend: eb_backend_destroy(). */
eb_backend *eb_backend_create(const char *name, const eb_backend_params *params, char *err,
                              size_t err_len);

/* Destroy *be (may be NULL) and set *be = NULL. */
void eb_backend_destroy(eb_backend **be);

/* ---- helpers for laying out buffers (pure host arithmetic, any backend) ---------------------- */

/* Bytes weight tensor of `shape` occupies in the backend's storage format (aligned). */
size_t eb_ops_weight_bytes(eb_backend *be, eb_dtype src_dtype, eb_weight_kind kind, int ndim,
                           const int64_t *shape);

/* Place weight tensor `t` at byte `*offset` of weights buffer `buf` and advance *offset by its
 * aligned size. Fills t (data, buffer, dtype from weight_dtype, kind, shape). EB_ERR_INVALID
 * when it does not fit or ndim is out of range. Does not upload. */
eb_status eb_ops_weight_place(eb_backend *be, eb_tensor *t, eb_buffer *buf, size_t *offset,
                              eb_dtype src_dtype, eb_weight_kind kind, int ndim,
                              const int64_t *shape);

/* Carve `n_floats` fp32 elements out of an activations buffer at *offset (aligned); returns the
 * backend pointer and advances *offset, or NULL when it does not fit. With buf == NULL only
 * advances *offset (a sizing pass) and returns NULL. */
float *eb_ops_act_carve(eb_backend *be, eb_buffer *buf, size_t *offset, int64_t n_floats);

#endif
