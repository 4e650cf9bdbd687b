/* eb_safetensors — memory-mapped, fully validated reader of Hugging Face safetensors files.
 *
 * A safetensors file is an 8-byte little-endian header length N, N bytes of JSON mapping each
 * tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data
 * area that follows the header; "__metadata__" holds free-form strings), then the data. A model
 * may be one file or several shards listed by model.safetensors.index.json ({"weight_map":
 * {name: shard file}}).
 *
 * Opening validates everything before any tensor is used, and every error names the file and
 * the tensor or value at fault:
 *   - the file holds at least 8 bytes and 8 + N <= file size, N <= 100 MB;
 *   - the header is a JSON object; each entry has a known dtype string, a shape of
 *     non-negative integers (at most EB_ST_MAX_DIMS), and two integer data_offsets with
 *     begin <= end <= size of the data area (a truncated file fails here);
 *   - product(shape) * dtype size == end - begin;
 *   - no two tensors' byte ranges overlap; names are unique (across shards too);
 *   - each tensor's data is aligned to its element size in the mapping;
 *   - with an index: shard names are plain file names in the same directory, and every tensor
 *     the index lists is in the shard it names.
 * Every dtype safetensors defines is accepted in the header (so files with e.g. an I64 buffer
 * open); whether a dtype is usable as a weight (F32, F16, BF16) is the caller's question, see
 * eb_safetensors_expect().
 */
#ifndef EB_SAFETENSORS_H
#define EB_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_ops.h"
#include "eb_status.h"

#define EB_ST_MAX_DIMS 8
#define EB_ST_MAX_HEADER (100u << 20)

/* One tensor of an opened file set. All pointers are owned by the eb_safetensors object and
 * live until eb_safetensors_close(). */
typedef struct eb_st_tensor {
    const char *name;
    const char *dtype_name;  /* as in the header: "F32", "BF16", "I64", ... */
    bool dtype_ok;           /* F32, F16 or BF16: usable as a weight */
    eb_dtype dtype;          /* valid only when dtype_ok */
    size_t elem_size;        /* bytes per element */
    int ndim;
    int64_t shape[EB_ST_MAX_DIMS];
    int64_t nelem;
    const void *data;        /* read-only mapping of the file, nbytes long */
    size_t nbytes;
    const char *file;        /* path of the file holding the tensor */
} eb_st_tensor;

typedef struct eb_safetensors eb_safetensors;

/* Open and validate one .safetensors file. NULL on failure with the reason in err (e.g.
 * `cannot open model "/m/model.safetensors": header length 9000000000 exceeds file size
 * 1024`). The caller owns the result: eb_safetensors_close(). */
eb_safetensors *eb_safetensors_open(const char *path, char *err, size_t err_len);

/* Open the weights of a model directory: model.safetensors.index.json when present (sharded),
 * else model.safetensors. Missing files and validation errors return NULL with the reason in
 * err. The caller owns the result: eb_safetensors_close(). */
eb_safetensors *eb_safetensors_open_dir(const char *dir, char *err, size_t err_len);

/* Unmap and free *st (NULL is fine); sets *st = NULL. Tensor pointers become invalid. */
void eb_safetensors_close(eb_safetensors **st);

/* Number of tensors, and tensor i in name order (i < count). */
size_t eb_safetensors_count(const eb_safetensors *st);
const eb_st_tensor *eb_safetensors_at(const eb_safetensors *st, size_t i);

/* The tensor called `name`, or NULL. O(log n). */
const eb_st_tensor *eb_safetensors_find(const eb_safetensors *st, const char *name);

/* Files of the set (one, or every shard), in name order; paths owned by st. */
size_t eb_safetensors_file_count(const eb_safetensors *st);
const char *eb_safetensors_file_path(const eb_safetensors *st, size_t i);

/* Look up a weight that must exist with this exact shape (ndim entries) and a weight dtype.
 * Returns it, or NULL with err naming the tensor, the file(s) and the mismatch:
 *   missing: `tensor "vision_model.post_layernorm.weight" not found in /m/model.safetensors`
 *   shape:   `tensor "..." in /m/model.safetensors has shape [768, 3] but the config needs
 *             [768, 768]`
 *   dtype:   `tensor "..." in ... has dtype I64; weights must be F32, F16 or BF16` */
const eb_st_tensor *eb_safetensors_expect(const eb_safetensors *st, const char *name, int ndim,
                                          const int64_t *shape, char *err, size_t err_len);

#endif
