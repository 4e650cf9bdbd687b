/* eb_qwen3 — the Qwen3 decoder as a text embedding model (Qwen3-Embedding), on any backend.
 *
 * Written once against the op interface (eb_ops.h). Loads a Qwen3 checkpoint directory
 * (config.json + safetensors, tensor names with or without the "model." prefix, F32/BF16/F16)
 * and embeds batches of token-id sequences. Tokenizing (eb_tokenizer, with the <|endoftext|> id
 * appended) is the caller's job; the model takes ids.
 *
 * Forward for one sequence of T ids (each sequence is independent; see "Batches"):
 *   x = embed_tokens[ids]                                    (T, C)
 *   per layer:
 *     h = RMSNorm(x) · input_layernorm
 *     q = h·Wqᵀ (T, H, D), k = h·Wkᵀ, v = h·Wvᵀ (T, Hkv, D)   (+ bias when attention_bias)
 *     q = RMSNorm_D(q) · q_norm, k = RMSNorm_D(k) · k_norm    per head, over head_dim D
 *     q, k = RoPE(q, k) (rotate_half, theta = rope_theta, position = index in the sequence)
 *     x += o_proj(causal GQA attention(q, k, v))              query head j reads KV head
 *                                                             j / (H / Hkv), scale D^-0.5
 *     h = RMSNorm(x) · post_attention_layernorm
 *     x += down_proj(silu(gate_proj(h)) * up_proj(h))
 *   y = RMSNorm(x[T-1]) · norm      (last_hidden_state of the last token: the appended eos)
 *   embedding = y[0:dim] / ||y[0:dim]||    dim = hidden, or 32..hidden (Matryoshka truncation)
 * All arithmetic is fp32 (weights are converted at load by the backend); norms use eps =
 * rms_norm_eps from the config and head_dim from the config (128 in 0.6B, not hidden/heads).
 *
 * Batches: the sequences of a batch are packed one after another (no padding): every row-wise op
 * and matrix product runs over the sum of the lengths, and RoPE and attention run once per
 * sequence on its own rows. So no work is spent on padding and a sequence's embedding does not
 * depend on the other sequences of the batch (the CPU backend splits products by output
 * columns, so a row's dot products are the same whatever the batch). The padded layout (B, T)
 * with kv_lens is also implemented (EB_QWEN3_LAYOUT_PADDED: one RoPE and one attention call per
 * layer, shapes a function of (B, T) only, as CUDA graph capture wants); it gives the same
 * embeddings.
 *
 * Memory: weights in one backend buffer, activations in a second sized at load for
 * max_total_tokens rows (the batch's sum of lengths; padded: B × longest); a forward allocates
 * nothing. In the last layer only the pooled rows go through o_proj and the MLP.
 *
 * model_rev: the checkpoint's (eb_checkpoint_model_rev()), as for SigLIP.
 *
 * Threads: one thread at a time per model object (the worker's compute thread).
 */
#ifndef EB_QWEN3_H
#define EB_QWEN3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_checkpoint.h"
#include "eb_ops.h"
#include "eb_status.h"

/* The text config (config.json root), with transformers' Qwen3Config defaults for absent keys. */
typedef struct eb_qwen3_config {
    int64_t hidden;        /* hidden_size, 4096 */
    int64_t intermediate;  /* intermediate_size, 22016 */
    int64_t layers;        /* num_hidden_layers, 32 */
    int64_t heads;         /* num_attention_heads, 32 */
    int64_t kv_heads;      /* num_key_value_heads, default = heads */
    int64_t head_dim;      /* head_dim, default hidden / heads */
    int64_t vocab;         /* vocab_size, 151936 */
    int64_t max_positions; /* max_position_embeddings, 32768 */
    double rms_norm_eps;   /* rms_norm_eps, 1e-6 */
    double rope_theta;     /* rope_theta (or rope_parameters.rope_theta), 10000 */
    bool attention_bias;   /* attention_bias, false */
} eb_qwen3_config;

/* Parse a Qwen3 config.json root into *cfg. EB_ERR_INVALID/EB_ERR_UNSUPPORTED with err naming
 * the key and value for what we cannot run: model_type other than qwen3, hidden_act other than
 * silu, rope scaling other than default, sliding-window attention, heads not a multiple of
 * kv_heads, odd head_dim. */
eb_status eb_qwen3_parse_config(const cJSON *config_root, eb_qwen3_config *cfg, char *err,
                                size_t err_len);

typedef enum eb_qwen3_layout {
    EB_QWEN3_LAYOUT_PACKED = 0, /* sequences back to back (default) */
    EB_QWEN3_LAYOUT_PADDED = 1, /* (B, longest) rows with kv_lens */
} eb_qwen3_layout;

typedef struct eb_qwen3_params {
    int64_t max_batch;        /* most sequences per call (>= 1) */
    int64_t max_tokens;       /* most ids in one sequence, eos included (1..max_positions) */
    int64_t max_total_tokens; /* most rows per call (0 = max_batch * max_tokens; raised to
                                 max_tokens if below); packed: sum of lengths; padded:
                                 B * longest */
    eb_qwen3_layout layout;
} eb_qwen3_params;

typedef struct eb_qwen3 eb_qwen3;

/* Load checkpoint `ck` onto backend `be`: validates every tensor's presence, shape and dtype
 * against the config (errors name the tensor and the file), uploads the weights (the checkpoint
 * may be closed afterwards), allocates activations for `params` and backend scratch. NULL on
 * failure with the reason in err. `be` must outlive the model. Caller owns the result. */
eb_qwen3 *eb_qwen3_load(eb_backend *be, const eb_checkpoint *ck, const eb_qwen3_params *params,
                        char *err, size_t err_len);

/* Free the model's buffers and *m (NULL is fine); sets *m = NULL. */
void eb_qwen3_destroy(eb_qwen3 **m);

/* The parsed config and the load parameters (max_total_tokens resolved); owned by m. */
const eb_qwen3_config *eb_qwen3_get_config(const eb_qwen3 *m);
const eb_qwen3_params *eb_qwen3_get_params(const eb_qwen3 *m);

/* Embed B sequences (1 <= B <= max_batch). `ids` holds them back to back (host memory,
 * lens[0] + ... + lens[B-1] ids), `lens` (host, B entries) their lengths, each 1..max_tokens;
 * the caller appends the eos id to every sequence (the embedding is taken at the last id).
 * `dim` is the output dimension: 0 or hidden for the full embedding, else 32..hidden (the first
 * dim values, renormalised). Writes (B, dim) L2-normalised fp32 rows to `out` (host, caller's).
 * Errors with err: EB_ERR_TOO_LARGE for B > max_batch, a sequence longer than max_tokens or a
 * batch over max_total_tokens; EB_ERR_INVALID for B < 1, an empty sequence, an id outside
 * [0, vocab) (naming sequence, position and id) or a bad dim; an op failure returns its status. */
eb_status eb_qwen3_embed(eb_qwen3 *m, const int32_t *ids, const int32_t *lens, int64_t B,
                         int64_t dim, float *out, char *err, size_t err_len);

/* Bytes of the weights and activations buffers (for logs and READY). */
size_t eb_qwen3_weight_bytes(const eb_qwen3 *m);
size_t eb_qwen3_activation_bytes(const eb_qwen3 *m);

#endif
