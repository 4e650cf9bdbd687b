/* eb_ckpt_qwen3 — Qwen3 (Qwen3-Embedding) checkpoints with seeded random weights, for mkcheckpoint.
 *
 * Writes what the Hugging Face hub serves for a Qwen3 text model — config.json and
 * model.safetensors (or shards plus model.safetensors.index.json) — with random weights drawn
 * through eb_ckpt_writer, so the same arguments always give byte-identical files. Embeddings from
 * such a checkpoint are meaningless; they let the C model be compared with transformers on the
 * same files without downloads.
 *
 * Presets (eb_ckpt_qwen3_presets()):
 *   qwen3-tiny            hidden 64, 4 heads, 2 KV heads (GQA ratio 2), head_dim 32 (not
 *                         hidden/heads = 16), 2 layers, MLP 128, the real vocabulary (151669),
 *                         rope_theta 10000, rms_norm_eps 1e-5; tensors named "model.*" (as a
 *                         Qwen3ForCausalLM export with tied embeddings stores them). For tests.
 *   qwen3-tiny-bias       qwen3-tiny with attention_bias true and bare tensor names.
 *   qwen3-embedding-0.6b  the layout of Qwen/Qwen3-Embedding-0.6B: hidden 1024, 28 layers, 16
 *                         heads, 8 KV heads, head_dim 128, MLP 3072, vocab 151669, rope_theta 1e6,
 *                         rms_norm_eps 1e-6, tied embeddings, bare tensor names.
 *
 * Initialisation: "hf" mirrors transformers' Qwen3PreTrainedModel._init_weights: every Linear and
 * the Embedding normal(0, initializer_range = 0.02), Linear biases zero, RMSNorm weights one.
 * "test" (the default of the tiny presets) also draws RMSNorm weights from normal(1, 0.1) and
 * biases from normal(0, 0.02), so a test notices when one of them is ignored (with unit gains a
 * model that skips q_norm's weight would still pass).
 */
#ifndef EB_CKPT_QWEN3_H
#define EB_CKPT_QWEN3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_ops.h"
#include "eb_status.h"

typedef struct eb_ckpt_qwen3_preset {
    const char *name;
    int64_t hidden, intermediate, layers, heads, kv_heads, head_dim, vocab, max_positions;
    double rope_theta, rms_norm_eps;
    bool attention_bias;
    const char *prefix;      /* "model." or "" */
    bool test_init_default;  /* true: "test" init unless asked otherwise */
} eb_ckpt_qwen3_preset;

/* The preset table (static) and its length. */
const eb_ckpt_qwen3_preset *eb_ckpt_qwen3_presets(size_t *count);

/* The preset called `name`, or NULL. */
const eb_ckpt_qwen3_preset *eb_ckpt_qwen3_find(const char *name);

/* Write preset `name` into the existing directory `dir`: weights stored as `dtype` (F32, BF16 or
 * F16) in `shards` files (1 = model.safetensors), random streams from `seed`, init_test -1 =
 * the preset's default, 0 = "hf", 1 = "test". EB_ERR_INVALID for an unknown preset or bad
 * argument, EB_ERR_IO/EB_ERR_NOMEM on failure; err says which. */
eb_status eb_ckpt_qwen3_write(const char *name, const char *dir, eb_dtype dtype, uint64_t seed,
                              int shards, int init_test, char *err, size_t err_len);

#endif
