/* eb_qwen3 — Qwen3-Embedding written against the op interface (see eb_qwen3.h).
 *
 * Loading checks every checkpoint tensor against the config (presence, shape, dtype), adds up
 * the bytes each needs in the backend's own format, then places all of them in one weights
 * buffer and uploads them. gate_proj and up_proj are fused into one (2F, C) matrix, so the MLP's
 * two input products are one GEMM and silu_mul reads the halves of one row. q, k and v stay
 * three matrices: q_norm and k_norm run over rows of head_dim that must be evenly spaced
 * (rows = tokens × heads, ld = head_dim), which a fused (tokens, q|k|v) output would break.
 *
 * The forward is a fixed sequence of ops over activations carved once from one buffer, for R
 * rows (max_total_tokens):
 *   ids (R) int32, x (R, C) residual stream, h (R, C) normalised copy, then one region reused by
 *   the attention half (q (R, H·D), k and v (R, Hkv·D), attn (R, H·D)) and by the MLP half
 *   (gate|up (R, 2F), act (R, F)); small (max_batch, ·) buffers for the last layer's pooled rows
 *   and the output.
 * Only the last token of each sequence is pooled, so the last layer gathers those rows after
 * attention (which still needs every key) and runs o_proj, the MLP and the final norm on
 * max_batch rows instead of all tokens.
 */
#include "eb_qwen3.h"
#include "eb_status.h"
#include "eb_weights.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct layer_weights {
    eb_tensor ln1, ln2, q_w, k_w, v_w, o_w, q_b, k_b, v_b, o_b, q_norm, k_norm, gu_w, down_w;
} layer_weights;

struct eb_qwen3 {
    eb_backend *be;
    eb_qwen3_config cfg;
    eb_qwen3_params params;
    eb_buffer *wbuf, *abuf;

    eb_tensor embed, norm;
    layer_weights *layers;

    // Activations (backend pointers).
    int32_t *ids; // (R)
    float *x;     // (R, C)
    float *h;     // (R, C)
    float *q;     // (R, H*D)     \  attention half of the shared region
    float *k;     // (R, Hkv*D)    |
    float *v;     // (R, Hkv*D)    |
    float *attn;  // (R, H*D)     /
    float *gu;    // (R, 2F)      \  MLP half of the shared region (overlaps q..attn)
    float *act;   // (R, F)       /
    float *xl;    // (Bm, C) pooled rows of the residual stream in the last layer
    float *al;    // (Bm, H*D) pooled rows of the attention output
    float *hl;    // (Bm, C)
    float *gul;   // (Bm, 2F)
    float *actl;  // (Bm, F)
    float *y;     // (Bm, C) last_hidden_state of the pooled tokens
    float *emb;   // (Bm, C) normalised embeddings

    // Host staging, sized at load.
    int32_t *host_ids;  // (R) padded layout's id rows
    int32_t *seq_off;   // (Bm) first row of each sequence
    int32_t *seq_len;   // (Bm)
};

/* ---- config ----------------------------------------------------------------------------------- */

// rope_scaling / rope_parameters: only the default (unscaled) RoPE is implemented.
static eb_status check_rope_type(const cJSON *obj, const char *key, char *err, size_t err_len)
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!r || cJSON_IsNull(r))
        return EB_OK;
    if (!cJSON_IsObject(r)) {
        eb_set_err(err, err_len, "config.json: \"%s\" must be an object or null", key);
        return EB_ERR_INVALID;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(r, "rope_type");
    if (!t)
        t = cJSON_GetObjectItemCaseSensitive(r, "type");
    if (t && (!cJSON_IsString(t) || strcmp(t->valuestring, "default") != 0)) {
        eb_set_err(err, err_len,
                   "config.json: %s.rope_type \"%s\" is not supported; only the default RoPE is "
                   "implemented",
                   key, cJSON_IsString(t) ? t->valuestring : "?");
        return EB_ERR_UNSUPPORTED;
    }
    return EB_OK;
}

eb_status eb_qwen3_parse_config(const cJSON *root, eb_qwen3_config *cfg, char *err,
                                size_t err_len)
{
    const char *what = "config.json";
    if (!cJSON_IsObject(root)) {
        eb_set_err(err, err_len, "config.json: the root must be an object");
        return EB_ERR_INVALID;
    }
    const char *model_type = NULL, *act = NULL;
    eb_status st = eb_json_get_string(root, what, "model_type", NULL, &model_type, err, err_len);
    if (st)
        return st;
    if (model_type && strcmp(model_type, "qwen3") != 0) {
        eb_set_err(err, err_len, "config.json: model_type \"%s\" is not a Qwen3 model (want \"qwen3\")",
                   model_type);
        return EB_ERR_UNSUPPORTED;
    }
    memset(cfg, 0, sizeof(*cfg));
    if ((st = eb_json_get_int(root, what, "hidden_size", 4096, 1, 1 << 16, &cfg->hidden, err,
                              err_len)) ||
        (st = eb_json_get_int(root, what, "intermediate_size", 22016, 1, 1 << 18,
                              &cfg->intermediate, err, err_len)) ||
        (st = eb_json_get_int(root, what, "num_hidden_layers", 32, 0, 1024, &cfg->layers, err,
                              err_len)) ||
        (st = eb_json_get_int(root, what, "num_attention_heads", 32, 1, 1024, &cfg->heads, err,
                              err_len)) ||
        (st = eb_json_get_int(root, what, "num_key_value_heads", cfg->heads, 1, 1024,
                              &cfg->kv_heads, err, err_len)) ||
        (st = eb_json_get_int(root, what, "head_dim", cfg->hidden / cfg->heads, 2, 4096,
                              &cfg->head_dim, err, err_len)) ||
        (st = eb_json_get_int(root, what, "vocab_size", 151936, 1, 1 << 24, &cfg->vocab, err,
                              err_len)) ||
        (st = eb_json_get_int(root, what, "max_position_embeddings", 32768, 1, 1 << 24,
                              &cfg->max_positions, err, err_len)) ||
        (st = eb_json_get_double(root, what, "rms_norm_eps", 1e-6, 0.0, 1.0, &cfg->rms_norm_eps,
                                 err, err_len)) ||
        (st = eb_json_get_bool(root, what, "attention_bias", false, &cfg->attention_bias, err,
                               err_len)) ||
        (st = eb_json_get_string(root, what, "hidden_act", "silu", &act, err, err_len)))
        return st;
    if (strcmp(act, "silu") != 0) {
        eb_set_err(err, err_len, "config.json: hidden_act \"%s\" is not supported; Qwen3 uses silu",
                   act);
        return EB_ERR_UNSUPPORTED;
    }
    // transformers 4.x writes rope_theta at the root; 5.x may nest it in rope_parameters.
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    double theta_dflt = 10000.0;
    if (cJSON_IsObject(rp) &&
        (st = eb_json_get_double(rp, "config.json rope_parameters", "rope_theta", 10000.0, 1e-6,
                                 1e15, &theta_dflt, err, err_len)))
        return st;
    if ((st = eb_json_get_double(root, what, "rope_theta", theta_dflt, 1e-6, 1e15,
                                 &cfg->rope_theta, err, err_len)) ||
        (st = check_rope_type(root, "rope_scaling", err, err_len)) ||
        (st = check_rope_type(root, "rope_parameters", err, err_len)))
        return st;
    bool sliding = false;
    if ((st = eb_json_get_bool(root, what, "use_sliding_window", false, &sliding, err, err_len)))
        return st;
    const cJSON *lt;
    cJSON_ArrayForEach(lt, cJSON_GetObjectItemCaseSensitive(root, "layer_types"))
    {
        if (cJSON_IsString(lt) && strcmp(lt->valuestring, "full_attention") != 0)
            sliding = true;
    }
    if (sliding) {
        eb_set_err(err, err_len,
                   "config.json: sliding-window attention (use_sliding_window / layer_types) is "
                   "not supported; only full causal attention is implemented");
        return EB_ERR_UNSUPPORTED;
    }
    if (cfg->heads % cfg->kv_heads) {
        eb_set_err(err, err_len,
                   "config.json: num_attention_heads %lld is not a multiple of num_key_value_heads "
                   "%lld",
                   (long long)cfg->heads, (long long)cfg->kv_heads);
        return EB_ERR_INVALID;
    }
    if (cfg->head_dim % 2) {
        eb_set_err(err, err_len, "config.json: head_dim %lld must be even for RoPE",
                   (long long)cfg->head_dim);
        return EB_ERR_INVALID;
    }
    return EB_OK;
}

/* ---- weights ---------------------------------------------------------------------------------- */

/* The plan lives in eb_weights (shared with SigLIP). */
typedef eb_weight_plan plan;

// Adds a destination tensor (ndim 1 or 2) filled from the listed checkpoint tensors in order,
// each of shape src_shape (all sources have the same shape).
static void plan_add(plan *p, eb_tensor *dst, eb_weight_kind kind, int ndim, int64_t d0,
                     int64_t d1, const char *const *names, int n_names, int src_ndim,
                     const int64_t *src_shape)
{
    int64_t shape[2] = {d0, d1};
    eb_weight_spec *w = eb_weight_plan_add(p, dst, kind, ndim, shape);
    for (int i = 0; i < n_names; i++)
        eb_weight_plan_source(p, w, names[i], src_ndim, src_shape, 0, -1);
}

static void plan_one(plan *p, eb_tensor *dst, eb_weight_kind kind, const char *name, int ndim,
                     int64_t d0, int64_t d1)
{
    int64_t shape[2] = {d0, d1};
    plan_add(p, dst, kind, ndim, d0, d1, &name, 1, ndim, shape);
}

static void plan_layer(plan *p, eb_qwen3 *m, int64_t l)
{
    const eb_qwen3_config *c = &m->cfg;
    layer_weights *L = &m->layers[l];
    int64_t C = c->hidden, D = c->head_dim, F = c->intermediate;
    int64_t QD = c->heads * D, KD = c->kv_heads * D;
    char n[6][160];
#define NAME(i, fmt) snprintf(n[i], sizeof(n[i]), "layers.%lld." fmt, (long long)l)
    NAME(0, "input_layernorm.weight");
    plan_one(p, &L->ln1, EB_WEIGHT_VECTOR, n[0], 1, C, 1);
    NAME(0, "post_attention_layernorm.weight");
    plan_one(p, &L->ln2, EB_WEIGHT_VECTOR, n[0], 1, C, 1);
    NAME(0, "self_attn.q_proj.weight");
    plan_one(p, &L->q_w, EB_WEIGHT_MATRIX, n[0], 2, QD, C);
    NAME(0, "self_attn.k_proj.weight");
    plan_one(p, &L->k_w, EB_WEIGHT_MATRIX, n[0], 2, KD, C);
    NAME(0, "self_attn.v_proj.weight");
    plan_one(p, &L->v_w, EB_WEIGHT_MATRIX, n[0], 2, KD, C);
    NAME(0, "self_attn.o_proj.weight");
    plan_one(p, &L->o_w, EB_WEIGHT_MATRIX, n[0], 2, C, QD);
    if (c->attention_bias) {
        NAME(0, "self_attn.q_proj.bias");
        plan_one(p, &L->q_b, EB_WEIGHT_VECTOR, n[0], 1, QD, 1);
        NAME(0, "self_attn.k_proj.bias");
        plan_one(p, &L->k_b, EB_WEIGHT_VECTOR, n[0], 1, KD, 1);
        NAME(0, "self_attn.v_proj.bias");
        plan_one(p, &L->v_b, EB_WEIGHT_VECTOR, n[0], 1, KD, 1);
        NAME(0, "self_attn.o_proj.bias");
        plan_one(p, &L->o_b, EB_WEIGHT_VECTOR, n[0], 1, C, 1);
    }
    NAME(0, "self_attn.q_norm.weight");
    plan_one(p, &L->q_norm, EB_WEIGHT_VECTOR, n[0], 1, D, 1);
    NAME(0, "self_attn.k_norm.weight");
    plan_one(p, &L->k_norm, EB_WEIGHT_VECTOR, n[0], 1, D, 1);
    // gate_proj then up_proj as one (2F, C) matrix: row r < F is gate row r, row F + r up row r.
    NAME(0, "mlp.gate_proj.weight");
    NAME(1, "mlp.up_proj.weight");
    const char *gu[2] = {n[0], n[1]};
    int64_t fc[2] = {F, C};
    plan_add(p, &L->gu_w, EB_WEIGHT_MATRIX, 2, 2 * F, C, gu, 2, 2, fc);
    NAME(0, "mlp.down_proj.weight");
    plan_one(p, &L->down_w, EB_WEIGHT_MATRIX, n[0], 2, C, F);
#undef NAME
}

static void build_plan(plan *p, eb_qwen3 *m)
{
    const eb_qwen3_config *c = &m->cfg;
    plan_one(p, &m->embed, EB_WEIGHT_TABLE, "embed_tokens.weight", 2, c->vocab, c->hidden);
    for (int64_t l = 0; l < c->layers; l++)
        plan_layer(p, m, l);
    plan_one(p, &m->norm, EB_WEIGHT_VECTOR, "norm.weight", 1, c->hidden, 1);
}

/* ---- activations ------------------------------------------------------------------------------ */

static int64_t round_floats(int64_t n)
{
    int64_t per = EB_OPS_ALIGN / (int64_t)sizeof(float);
    return (n + per - 1) / per * per;
}

static size_t carve_all(eb_qwen3 *m, eb_buffer *buf)
{
    eb_backend *be = m->be;
    const eb_qwen3_config *c = &m->cfg;
    int64_t R = m->params.max_total_tokens, Bm = m->params.max_batch;
    int64_t C = c->hidden, F = c->intermediate;
    int64_t QD = c->heads * c->head_dim, KD = c->kv_heads * c->head_dim;
    // The attention half and the MLP half of a layer share one region.
    int64_t q_n = round_floats(R * QD), kv_n = round_floats(R * KD);
    int64_t attn_half = 2 * q_n + 2 * kv_n;
    int64_t gu_n = round_floats(R * 2 * F), act_n = round_floats(R * F);
    int64_t mlp_half = gu_n + act_n;
    size_t off = 0;
    m->ids = (int32_t *)eb_ops_act_carve(be, buf, &off, R);
    m->x = eb_ops_act_carve(be, buf, &off, R * C);
    m->h = eb_ops_act_carve(be, buf, &off, R * C);
    float *shared = eb_ops_act_carve(be, buf, &off, attn_half > mlp_half ? attn_half : mlp_half);
    m->xl = eb_ops_act_carve(be, buf, &off, Bm * C);
    m->al = eb_ops_act_carve(be, buf, &off, Bm * QD);
    m->hl = eb_ops_act_carve(be, buf, &off, Bm * C);
    m->gul = eb_ops_act_carve(be, buf, &off, Bm * 2 * F);
    m->actl = eb_ops_act_carve(be, buf, &off, Bm * F);
    m->y = eb_ops_act_carve(be, buf, &off, Bm * C);
    m->emb = eb_ops_act_carve(be, buf, &off, Bm * C);
    if (shared) {
        m->q = shared;
        m->k = m->q + q_n;
        m->v = m->k + kv_n;
        m->attn = m->v + kv_n;
        m->gu = shared;
        m->act = m->gu + gu_n;
    }
    return off;
}

/* ---- load ------------------------------------------------------------------------------------- */

eb_qwen3 *eb_qwen3_load(eb_backend *be, const eb_checkpoint *ck, const eb_qwen3_params *params,
                        char *err, size_t err_len)
{
    if (!be || !ck || !params) {
        eb_set_err(err, err_len, "cannot load Qwen3: missing backend, checkpoint or parameters");
        return NULL;
    }
    eb_qwen3 *m = calloc(1, sizeof(*m));
    plan p = {0};
    if (!m) {
        eb_set_err(err, err_len, "cannot load Qwen3: out of memory");
        return NULL;
    }
    m->be = be;
    m->params = *params;
    char cerr[512];
    if (eb_qwen3_parse_config(eb_checkpoint_config(ck), &m->cfg, cerr, sizeof(cerr)) != EB_OK) {
        eb_set_err(err, err_len, "cannot load Qwen3 from \"%s\": %s", eb_checkpoint_dir(ck), cerr);
        goto fail;
    }
    eb_qwen3_params *pp = &m->params;
    if (pp->max_batch < 1 || pp->max_tokens < 1 || pp->max_tokens > m->cfg.max_positions ||
        pp->max_total_tokens < 0 ||
        (pp->layout != EB_QWEN3_LAYOUT_PACKED && pp->layout != EB_QWEN3_LAYOUT_PADDED)) {
        eb_set_err(err, err_len,
                   "cannot load Qwen3: max_batch %lld must be >= 1, max_tokens %lld must be in "
                   "1..%lld (max_position_embeddings), max_total_tokens %lld >= 0",
                   (long long)pp->max_batch, (long long)pp->max_tokens,
                   (long long)m->cfg.max_positions, (long long)pp->max_total_tokens);
        goto fail;
    }
    if (pp->max_total_tokens == 0)
        pp->max_total_tokens = pp->max_batch * pp->max_tokens;
    if (pp->max_total_tokens < pp->max_tokens)
        pp->max_total_tokens = pp->max_tokens; // one full-length sequence must always fit
    if (pp->max_total_tokens > INT32_MAX / 2) {
        eb_set_err(err, err_len, "cannot load Qwen3: max_total_tokens %lld is too large",
                   (long long)pp->max_total_tokens);
        goto fail;
    }
    static const eb_op needed[] = {EB_OP_RMSNORM, EB_OP_SILU_MUL, EB_OP_ROPE,   EB_OP_L2NORM,
                                   EB_OP_GET_ROWS, EB_OP_COPY_ROWS, EB_OP_POOL_LAST};
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++)
        if (!be->iface.supports(be, needed[i], 0)) {
            eb_set_err(err, err_len, "cannot load Qwen3: backend %s lacks op %s", be->name,
                       eb_op_name(needed[i]));
            goto fail;
        }
    if (!be->iface.supports(be, EB_OP_MATMUL, EB_MATMUL_ACCUMULATE) ||
        !be->iface.supports(be, EB_OP_ATTENTION, EB_ATTN_CAUSAL)) {
        eb_set_err(err, err_len,
                   "cannot load Qwen3: backend %s lacks matmul with accumulate or causal attention",
                   be->name);
        goto fail;
    }
    m->layers = calloc((size_t)(m->cfg.layers ? m->cfg.layers : 1), sizeof(*m->layers));
    m->host_ids = calloc((size_t)pp->max_total_tokens, sizeof(int32_t));
    m->seq_off = calloc((size_t)pp->max_batch, sizeof(int32_t));
    m->seq_len = calloc((size_t)pp->max_batch, sizeof(int32_t));
    if (!m->layers || !m->host_ids || !m->seq_off || !m->seq_len) {
        eb_set_err(err, err_len, "cannot load Qwen3: out of memory");
        goto fail;
    }
    const eb_safetensors *st = eb_checkpoint_weights(ck);
    p.st = st;
    p.model = "Qwen3";
    p.err = err;
    p.err_len = err_len;
    // Qwen3ForCausalLM exports name the decoder "model.*"; Qwen3Model exports (the published
    // embedding checkpoints) use bare names.
    p.prefix = eb_safetensors_find(st, "model.embed_tokens.weight") ? "model." : "";
    build_plan(&p, m);
    if (eb_weight_plan_upload(&p, m->be, &m->wbuf) != EB_OK)
        goto fail;
    eb_weight_plan_free(&p);

    size_t act_bytes = carve_all(m, NULL);
    m->abuf = be->iface.buffer_alloc(be, act_bytes, EB_BUFFER_ACTIVATIONS);
    if (!m->abuf) {
        eb_set_err(err, err_len,
                   "cannot load Qwen3: allocating %zu bytes of activations for %lld tokens on %s "
                   "failed (lower max_total_tokens or max_batch)",
                   act_bytes, (long long)pp->max_total_tokens, be->name);
        goto fail;
    }
    carve_all(m, m->abuf);
    const eb_qwen3_config *c = &m->cfg;
    int64_t widest = 2 * c->intermediate;
    if (c->hidden > widest)
        widest = c->hidden;
    if (c->heads * c->head_dim > widest)
        widest = c->heads * c->head_dim;
    eb_ops_limits lim = {
        .max_batch = pp->max_batch,
        .max_tokens = pp->max_tokens,
        .max_heads = c->heads,
        .max_head_dim = c->head_dim,
        .max_hidden = widest,
        .max_patch_dim = 0,
    };
    eb_status rs = be->iface.reserve(be, &lim);
    if (rs != EB_OK) {
        eb_set_err(err, err_len, "cannot load Qwen3: reserving backend scratch failed: %s",
                   eb_status_str(rs));
        goto fail;
    }
    return m;
fail:
    eb_weight_plan_free(&p);
    eb_qwen3_destroy(&m);
    return NULL;
}

void eb_qwen3_destroy(eb_qwen3 **pm)
{
    if (!pm || !*pm)
        return;
    eb_qwen3 *m = *pm;
    if (m->abuf)
        m->be->iface.buffer_free(m->be, m->abuf);
    if (m->wbuf)
        m->be->iface.buffer_free(m->be, m->wbuf);
    free(m->layers);
    free(m->host_ids);
    free(m->seq_off);
    free(m->seq_len);
    free(m);
    *pm = NULL;
}

const eb_qwen3_config *eb_qwen3_get_config(const eb_qwen3 *m)
{
    return &m->cfg;
}

const eb_qwen3_params *eb_qwen3_get_params(const eb_qwen3 *m)
{
    return &m->params;
}

size_t eb_qwen3_weight_bytes(const eb_qwen3 *m)
{
    return m->be->iface.buffer_size(m->be, m->wbuf);
}

size_t eb_qwen3_activation_bytes(const eb_qwen3 *m)
{
    return m->be->iface.buffer_size(m->be, m->abuf);
}

/* ---- forward ---------------------------------------------------------------------------------- */

#define OP(call, what_)                                                                            \
    do {                                                                                           \
        eb_status op_status_ = (call);                                                             \
        if (op_status_ != EB_OK) {                                                                 \
            eb_set_err(err, err_len, "Qwen3 %s failed on backend %s: %s", what_, m->be->name,      \
                       eb_status_str(op_status_));                                                 \
            return op_status_;                                                                     \
        }                                                                                          \
    } while (0)

// The shape of one batch: B sequences, their first rows and lengths (m->seq_off/seq_len), M
// rows in all; T is the padded length (padded layout) or 0 (packed).
typedef struct batch {
    int64_t B, M, T;
} batch;

// RoPE on q and k, then causal attention q, k, v -> attn, for every sequence of the batch.
static eb_status attention_block(eb_qwen3 *m, const batch *bt, char *err, size_t err_len)
{
    eb_backend *be = m->be;
    const eb_backend_iface *op = &be->iface;
    const eb_qwen3_config *c = &m->cfg;
    int64_t H = c->heads, Hkv = c->kv_heads, D = c->head_dim;
    float theta = (float)c->rope_theta;
    eb_attn_desc d = {
        .H = H, .Hkv = Hkv, .D = D,
        .q_token_stride = H * D, .k_token_stride = Hkv * D, .v_token_stride = Hkv * D,
        .out_token_stride = H * D,
        .scale = (float)(1.0 / sqrt((double)D)),
        .flags = EB_ATTN_CAUSAL,
    };
    if (bt->T) {
        // Padded: (B, T) rows; keys past each length are masked by kv_lens.
        int64_t T = bt->T;
        OP(op->rope(be, m->q, bt->B, T, H, D, T * H * D, H * D, theta), "rope(q)");
        OP(op->rope(be, m->k, bt->B, T, Hkv, D, T * Hkv * D, Hkv * D, theta), "rope(k)");
        d.B = bt->B;
        d.Tq = d.Tk = T;
        d.q_batch_stride = d.out_batch_stride = T * H * D;
        d.k_batch_stride = d.v_batch_stride = T * Hkv * D;
        d.kv_lens = m->seq_len;
        OP(op->attention(be, m->attn, m->q, m->k, m->v, &d), "attention");
        return EB_OK;
    }
    // Packed: each sequence is a B = 1 batch starting at its own row.
    d.B = 1;
    for (int64_t b = 0; b < bt->B; b++) {
        int64_t r0 = m->seq_off[b], T = m->seq_len[b];
        float *q = m->q + r0 * H * D, *k = m->k + r0 * Hkv * D, *v = m->v + r0 * Hkv * D;
        OP(op->rope(be, q, 1, T, H, D, T * H * D, H * D, theta), "rope(q)");
        OP(op->rope(be, k, 1, T, Hkv, D, T * Hkv * D, Hkv * D, theta), "rope(k)");
        d.Tq = d.Tk = T;
        d.q_batch_stride = d.out_batch_stride = T * H * D;
        d.k_batch_stride = d.v_batch_stride = T * Hkv * D;
        OP(op->attention(be, m->attn + r0 * H * D, q, k, v, &d), "attention");
    }
    return EB_OK;
}

// dst (B, cols) row b = src row (seq_off[b] + seq_len[b] - 1): the last token of each sequence.
static eb_status gather_last(eb_qwen3 *m, const batch *bt, float *dst, const float *src,
                             int64_t cols, char *err, size_t err_len)
{
    eb_backend *be = m->be;
    if (bt->T) {
        OP(be->iface.pool_last(be, dst, src, m->seq_len, bt->B, bt->T, cols), "pool_last");
        return EB_OK;
    }
    for (int64_t b = 0; b < bt->B; b++) {
        int64_t row = m->seq_off[b] + m->seq_len[b] - 1;
        OP(be->iface.copy_rows(be, dst + b * cols, cols, src + row * cols, cols, 1, cols),
           "copy_rows(last token)");
    }
    return EB_OK;
}

// x += o_proj(attn); x += down(silu(gate(h)) * up(h)) with h = RMSNorm(x), over M rows.
static eb_status layer_tail(eb_qwen3 *m, const layer_weights *L, float *x, const float *attn,
                            float *h, float *gu, float *act, int64_t M, char *err, size_t err_len)
{
    eb_backend *be = m->be;
    const eb_backend_iface *op = &be->iface;
    const eb_qwen3_config *c = &m->cfg;
    int64_t C = c->hidden, F = c->intermediate, QD = c->heads * c->head_dim;
    float eps = (float)c->rms_norm_eps;
    const eb_tensor *ob = c->attention_bias ? &L->o_b : NULL;
    OP(op->matmul(be, x, C, attn, QD, &L->o_w, ob, M, EB_MATMUL_ACCUMULATE), "matmul(o_proj)");
    OP(op->rmsnorm(be, h, x, NULL, &L->ln2, M, C, C, eps), "rmsnorm(post_attention_layernorm)");
    OP(op->matmul(be, gu, 2 * F, h, C, &L->gu_w, NULL, M, 0), "matmul(gate_up)");
    OP(op->silu_mul(be, act, gu, gu + F, M, F, 2 * F), "silu_mul");
    OP(op->matmul(be, x, C, act, F, &L->down_w, NULL, M, EB_MATMUL_ACCUMULATE),
       "matmul(down_proj)");
    return EB_OK;
}

static eb_status run_ops(eb_qwen3 *m, const batch *bt, int64_t dim, char *err, size_t err_len)
{
    eb_backend *be = m->be;
    const eb_backend_iface *op = &be->iface;
    const eb_qwen3_config *c = &m->cfg;
    int64_t C = c->hidden, H = c->heads, Hkv = c->kv_heads, D = c->head_dim;
    int64_t QD = H * D, KD = Hkv * D, M = bt->M, B = bt->B;
    float eps = (float)c->rms_norm_eps;

    OP(op->get_rows(be, m->x, &m->embed, m->ids, M), "get_rows(embed_tokens)");
    for (int64_t l = 0; l < c->layers; l++) {
        const layer_weights *L = &m->layers[l];
        bool bias = c->attention_bias;
        OP(op->rmsnorm(be, m->h, m->x, NULL, &L->ln1, M, C, C, eps), "rmsnorm(input_layernorm)");
        OP(op->matmul(be, m->q, QD, m->h, C, &L->q_w, bias ? &L->q_b : NULL, M, 0),
           "matmul(q_proj)");
        OP(op->matmul(be, m->k, KD, m->h, C, &L->k_w, bias ? &L->k_b : NULL, M, 0),
           "matmul(k_proj)");
        OP(op->matmul(be, m->v, KD, m->h, C, &L->v_w, bias ? &L->v_b : NULL, M, 0),
           "matmul(v_proj)");
        // Per-head RMSNorm over head_dim: rows are (token, head) pairs, D apart.
        OP(op->rmsnorm(be, m->q, m->q, NULL, &L->q_norm, M * H, D, D, eps), "rmsnorm(q_norm)");
        OP(op->rmsnorm(be, m->k, m->k, NULL, &L->k_norm, M * Hkv, D, D, eps), "rmsnorm(k_norm)");
        eb_status st = attention_block(m, bt, err, err_len);
        if (st != EB_OK)
            return st;
        if (l + 1 < c->layers) {
            st = layer_tail(m, L, m->x, m->attn, m->h, m->gu, m->act, M, err, err_len);
        } else {
            // Last layer: only the pooled rows matter from here on.
            if ((st = gather_last(m, bt, m->al, m->attn, QD, err, err_len)) == EB_OK &&
                (st = gather_last(m, bt, m->xl, m->x, C, err, err_len)) == EB_OK)
                st = layer_tail(m, L, m->xl, m->al, m->hl, m->gul, m->actl, B, err, err_len);
        }
        if (st != EB_OK)
            return st;
    }
    if (c->layers == 0) {
        eb_status st = gather_last(m, bt, m->xl, m->x, C, err, err_len);
        if (st != EB_OK)
            return st;
    }
    OP(op->rmsnorm(be, m->y, m->xl, NULL, &m->norm, B, C, C, eps), "rmsnorm(norm)");
    // Matryoshka: the first dim values of last_hidden_state, renormalised.
    OP(op->l2norm(be, m->emb, m->y, B, dim, C, 1e-12f), "l2norm");
    return EB_OK;
}

eb_status eb_qwen3_embed(eb_qwen3 *m, const int32_t *ids, const int32_t *lens, int64_t B,
                         int64_t dim, float *out, char *err, size_t err_len)
{
    const eb_qwen3_params *pp = &m->params;
    const eb_qwen3_config *c = &m->cfg;
    if (!ids || !lens || !out) {
        eb_set_err(err, err_len, "Qwen3 embed: ids, lens and out must not be NULL");
        return EB_ERR_INVALID;
    }
    if (B < 1 || B > pp->max_batch) {
        eb_set_err(err, err_len, "Qwen3 batch of %lld texts is outside 1..%lld (max_batch)",
                   (long long)B, (long long)pp->max_batch);
        return B > pp->max_batch ? EB_ERR_TOO_LARGE : EB_ERR_INVALID;
    }
    if (dim == 0)
        dim = c->hidden;
    if (dim < (c->hidden < 32 ? c->hidden : 32) || dim > c->hidden) {
        eb_set_err(err, err_len, "Qwen3 output dimension %lld is outside 32..%lld (hidden_size)",
                   (long long)dim, (long long)c->hidden);
        return EB_ERR_INVALID;
    }
    int64_t total = 0, longest = 0;
    for (int64_t b = 0; b < B; b++) {
        if (lens[b] < 1) {
            eb_set_err(err, err_len,
                       "Qwen3 text %lld of the batch has %d tokens; every text needs at least one "
                       "(append the end-of-text id)",
                       (long long)b, (int)lens[b]);
            return EB_ERR_INVALID;
        }
        if (lens[b] > pp->max_tokens) {
            eb_set_err(err, err_len,
                       "Qwen3 text %lld of the batch has %d tokens, more than max_tokens %lld "
                       "(truncate it or raise the limit)",
                       (long long)b, (int)lens[b], (long long)pp->max_tokens);
            return EB_ERR_TOO_LARGE;
        }
        for (int32_t i = 0; i < lens[b]; i++) {
            int32_t id = ids[total + i];
            if (id < 0 || id >= c->vocab) {
                eb_set_err(err, err_len,
                           "Qwen3 text %lld of the batch: token %d has id %d outside the "
                           "vocabulary 0..%lld",
                           (long long)b, (int)i, (int)id, (long long)(c->vocab - 1));
                return EB_ERR_INVALID;
            }
        }
        total += lens[b];
        longest = lens[b] > longest ? lens[b] : longest;
    }
    bool padded = pp->layout == EB_QWEN3_LAYOUT_PADDED;
    batch bt = {.B = B, .M = padded ? B * longest : total, .T = padded ? longest : 0};
    if (bt.M > pp->max_total_tokens) {
        eb_set_err(err, err_len,
                   "Qwen3 batch needs %lld token rows, more than max_total_tokens %lld (split the "
                   "batch)",
                   (long long)bt.M, (long long)pp->max_total_tokens);
        return EB_ERR_TOO_LARGE;
    }
    eb_backend *be = m->be;
    const int32_t *rows = ids;
    int64_t off = 0;
    for (int64_t b = 0; b < B; b++) {
        m->seq_len[b] = lens[b];
        m->seq_off[b] = (int32_t)(padded ? b * longest : off);
        if (padded) {
            // Padding rows carry id 0: computed like any token, never attended to, never pooled.
            memcpy(m->host_ids + b * longest, ids + off, (size_t)lens[b] * sizeof(int32_t));
            memset(m->host_ids + b * longest + lens[b], 0,
                   (size_t)(longest - lens[b]) * sizeof(int32_t));
        }
        off += lens[b];
    }
    if (padded)
        rows = m->host_ids;
    OP(be->iface.upload(be, m->ids, rows, (size_t)bt.M * sizeof(int32_t)), "upload(ids)");
    eb_status st = run_ops(m, &bt, dim, err, err_len);
    if (st != EB_OK)
        return st;
    OP(be->iface.download(be, out, m->emb, (size_t)(B * dim) * sizeof(float)), "download");
    OP(be->iface.synchronize(be), "synchronize");
    return EB_OK;
}
