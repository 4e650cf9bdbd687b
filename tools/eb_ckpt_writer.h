/* eb_ckpt_writer — write Hugging Face-layout checkpoints with seeded random weights.
 *
 * A checkpoint is described first (tensor names, shapes and how each is initialised), then
 * written in one streaming pass: the safetensors header, then each tensor generated, converted
 * to the storage dtype and written, so a 1.7 GB so400m checkpoint needs only one tensor in
 * memory at a time. Each tensor draws from its own random stream seeded by (seed, name), so
 * values do not depend on the order tensors are added or on how files are sharded, and the
 * generator uses only integer arithmetic and exactly rounded float operations (no libm), so a
 * seed gives the same bytes on every machine.
 *
 * Initialisers mirror transformers' _init_weights: normal(std), truncated normal
 * (lecun_normal: std sqrt(1/fan_in), cut at 2 std), uniform(±bound) (xavier_uniform), zeros,
 * ones. Normal samples are Irwin–Hall sums of 12 uniforms (mean 0, variance 1, |z| <= 6): close
 * enough to Gaussian for realistic activation ranges and exactly reproducible.
 */
#ifndef EB_CKPT_WRITER_H
#define EB_CKPT_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "eb_ops.h"
#include "eb_status.h"

typedef enum eb_init_kind {
    EB_INIT_ZEROS = 0,
    EB_INIT_ONES,
    EB_INIT_NORMAL,       /* mean a, std b */
    EB_INIT_TRUNC_NORMAL, /* mean 0, std b, samples outside ±2 (in std units) redrawn */
    EB_INIT_UNIFORM,      /* uniform in [-b, b] */
} eb_init_kind;

typedef struct eb_init {
    eb_init_kind kind;
    double a, b;
} eb_init;

typedef struct eb_ckpt_writer eb_ckpt_writer;

/* A writer storing floating tensors as `dtype` (F32, F16 or BF16) with random streams derived
 * from `seed`. NULL on bad dtype or allocation failure. Caller owns it: eb_ckpt_writer_destroy. */
eb_ckpt_writer *eb_ckpt_writer_new(eb_dtype dtype, uint64_t seed);

/* Free *w (NULL is fine) and set it to NULL. */
void eb_ckpt_writer_destroy(eb_ckpt_writer **w);

/* Describe a tensor (ndim 1..4). The name is copied. EB_ERR_INVALID for a duplicate name or a
 * bad shape, EB_ERR_NOMEM. */
eb_status eb_ckpt_writer_add(eb_ckpt_writer *w, const char *name, int ndim, const int64_t *shape,
                             eb_init init);

/* Write every tensor into `shards` files in directory `dir`: shards == 1 gives
 * dir/model.safetensors; more give dir/model-0000i-of-0000n.safetensors (tensors distributed in
 * name order by size) plus dir/model.safetensors.index.json. EB_ERR_IO with err on failure. */
eb_status eb_ckpt_writer_write(eb_ckpt_writer *w, const char *dir, int shards, char *err,
                               size_t err_len);

/* Total bytes the tensors take in the storage dtype. */
size_t eb_ckpt_writer_bytes(const eb_ckpt_writer *w);

/* Generate the fp32 values of an init for a tensor name (n values into out), exactly as the
 * writer does before converting to the storage dtype (exposed for tests). */
void eb_ckpt_init_values(uint64_t seed, const char *name, eb_init init, float *out, size_t n);

#endif
