/* eb_siglip — the SigLIP vision tower (SiglipVisionModel's pooler_output), on any backend.
 *
 * Written once against the op interface (eb_ops.h). Loads the layout of
 * google/siglip-base-patch16-224, google/siglip-so400m-patch14-384 or any other SigLIP vision
 * config from a checkpoint directory (full SiglipModel checkpoints: only vision_model.* is read;
 * bare SiglipVisionModel checkpoints too; tensor names with or without the "vision_model."
 * prefix).
 *
 * Forward for pixel_values (B, 3, S, S) fp32 (already resized and normalised):
 *   patch embedding (conv P×P stride P as a GEMM over patches in (c, ky, kx) order) + bias +
 *   position embeddings -> x (B, T, C), T = (S/P)²; per layer (pre-LN):
 *     x += out_proj(attention(q, k, v of LN1(x)))   (q/k/v with bias, scale head_dim^-0.5)
 *     x += fc2(gelu_tanh(fc1(LN2(x))))
 *   post_layernorm; attention-pooling head: the learned probe is the query of a multi-head
 *   attention over all tokens (in_proj split into q/k/v, out_proj), then h += MLP(LN(h)); the
 *   single token is pooler_output (B, C). The embedding is pooler_output L2-normalised.
 *
 * Memory: weights in one backend buffer, activations in a second sized for max_batch at load;
 * a forward allocates nothing. Results of an image do not depend on the other images of the
 * batch (every op works per row or per (item, head)).
 *
 * Threads: one thread at a time per model object (the worker's compute thread).
 */
#ifndef EB_SIGLIP_H
#define EB_SIGLIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_checkpoint.h"
#include "eb_ops.h"
#include "eb_status.h"

/* The vision config (config.json "vision_config", or the root for a bare vision config), with
 * transformers' SiglipVisionConfig defaults for absent keys. */
typedef struct eb_siglip_config {
    int64_t hidden;       /* hidden_size, 768 */
    int64_t mlp;          /* intermediate_size, 3072 */
    int64_t layers;       /* num_hidden_layers, 12 */
    int64_t heads;        /* num_attention_heads, 12 */
    int64_t channels;     /* num_channels, 3 */
    int64_t image_size;   /* image_size, 224 */
    int64_t patch_size;   /* patch_size, 16 */
    double layer_norm_eps; /* layer_norm_eps, 1e-6 */
    /* derived */
    int64_t head_dim;     /* hidden / heads */
    int64_t tokens;       /* floor(image_size / patch_size)² (Conv2d ignores the rest) */
} eb_siglip_config;

/* Parse the vision config of a config.json root into *cfg (defaults for absent keys). Errors
 * (EB_ERR_INVALID/EB_ERR_UNSUPPORTED) name the key and value: e.g. hidden_act other than
 * gelu_pytorch_tanh, hidden_size not divisible by heads, vision_use_head false. */
eb_status eb_siglip_parse_config(const cJSON *config_root, eb_siglip_config *cfg, char *err,
                                 size_t err_len);

typedef struct eb_siglip eb_siglip;

/* Load the vision tower of checkpoint `ck` onto backend `be` for batches of up to max_batch
 * images: validates every tensor's presence, shape and dtype against the config, uploads the
 * weights (the checkpoint may be closed afterwards), allocates activations and backend scratch.
 * NULL on failure with the reason in err. `be` must outlive the model. Caller owns the result. */
eb_siglip *eb_siglip_load(eb_backend *be, const eb_checkpoint *ck, int64_t max_batch, char *err,
                          size_t err_len);

/* Free the model's buffers and *m (NULL is fine); sets *m = NULL. */
void eb_siglip_destroy(eb_siglip **m);

/* The parsed config (owned by m). */
const eb_siglip_config *eb_siglip_get_config(const eb_siglip *m);

/* Largest batch accepted. */
int64_t eb_siglip_max_batch(const eb_siglip *m);

/* Embed B images (1 <= B <= max_batch): pixels (B, 3, S, S) fp32 host memory. Writes the raw
 * pooler_output (B, hidden) into `pooled` and/or the L2-normalised embedding (B, hidden) into
 * `normalized` (either may be NULL; host memory owned by the caller). EB_ERR_TOO_LARGE for
 * B > max_batch; an op or device failure returns its status with err. */
eb_status eb_siglip_embed(eb_siglip *m, const float *pixels, int64_t B, float *pooled,
                          float *normalized, char *err, size_t err_len);

/* Device-side form for callers that stage pixels themselves (e.g. GPU preprocessing):
 * eb_siglip_input() is the backend pointer of the (max_batch, 3, S, S) input area; after
 * eb_siglip_forward(m, B), eb_siglip_pooled()/eb_siglip_normalized() are backend pointers to
 * (B, hidden) results, valid until the next forward. */
float *eb_siglip_input(eb_siglip *m);
eb_status eb_siglip_forward(eb_siglip *m, int64_t B, char *err, size_t err_len);
const float *eb_siglip_pooled(const eb_siglip *m);
const float *eb_siglip_normalized(const eb_siglip *m);

/* Bytes of the weights and activations buffers (for logs and READY). */
size_t eb_siglip_weight_bytes(const eb_siglip *m);
size_t eb_siglip_activation_bytes(const eb_siglip *m);

#endif
