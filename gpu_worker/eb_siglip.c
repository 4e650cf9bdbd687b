/* eb_siglip — SigLIP vision tower written against the op interface (see eb_siglip.h).
 *
 * Loading is two passes over a table of weight specs: the first checks every checkpoint tensor
 * against the config (presence, shape, dtype) and adds up the bytes each needs in the backend's
 * own format; the second places the tensors in one weights buffer and uploads them. q, k and v
 * are fused into one (3C, C) matrix so a layer's three projections are one GEMM; the pooling
 * head's in_proj is split the other way (the probe's query is computed once at load, since the
 * probe is a constant, and k/v are one (2C, C) GEMM).
 *
 * The forward is a fixed sequence of ops over activations carved once from one buffer:
 *   x (B,T,C) residual stream, ln (B,T,C) normalised copy, big (B,T,max(3C,F)) holding qkv, the
 *   MLP hidden or the head's kv, attn (B,T,C) attention output, then small (B,C) head buffers.
 */
#include "eb_siglip.h"
#include "eb_status.h"
#include "eb_weights.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct layer_weights {
    eb_tensor ln1_w, ln1_b, qkv_w, qkv_b, o_w, o_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
} layer_weights;

struct eb_siglip {
    eb_backend *be;
    eb_siglip_config cfg;
    int64_t max_batch;
    eb_buffer *wbuf, *abuf;

    eb_tensor patch_w, patch_b, pos, post_w, post_b;
    eb_tensor probe, head_q_w, head_q_b, head_kv_w, head_kv_b, head_o_w, head_o_b;
    eb_tensor head_ln_w, head_ln_b, head_fc1_w, head_fc1_b, head_fc2_w, head_fc2_b;
    layer_weights *layers;

    // Activations (backend pointers).
    float *pixels; // (Bm, 3, S, S)
    float *x;      // (Bm, T, C)
    float *ln;     // (Bm, T, C)
    float *big;    // (Bm, T, max(3C, F))
    float *attn;   // (Bm, T, C)
    float *qp;     // (1, C) the probe's query, computed at load
    float *qtmp;   // (1, C)
    float *hattn;  // (Bm, C)
    float *h;      // (Bm, C) pooler_output
    float *hln;    // (Bm, C)
    float *hmlp;   // (Bm, F)
    float *normed; // (Bm, C)
    int32_t *zero_id;
};

/* ---- config ----------------------------------------------------------------------------------- */

eb_status eb_siglip_parse_config(const cJSON *root, eb_siglip_config *cfg, char *err,
                                 size_t err_len)
{
    const cJSON *vc = cJSON_GetObjectItemCaseSensitive(root, "vision_config");
    const char *what = "config.json vision_config";
    if (!vc) {
        vc = root; // a bare SiglipVisionConfig
        what = "config.json";
    } else if (!cJSON_IsObject(vc)) {
        eb_set_err(err, err_len, "config.json: \"vision_config\" must be an object");
        return EB_ERR_INVALID;
    }
    const char *model_type = NULL;
    eb_status st = eb_json_get_string(vc, what, "model_type", NULL, &model_type, err, err_len);
    if (st)
        return st;
    if (model_type && strcmp(model_type, "siglip_vision_model") != 0 &&
        strcmp(model_type, "siglip") != 0) {
        eb_set_err(err, err_len, "%s: model_type \"%s\" is not a SigLIP vision model", what,
                   model_type);
        return EB_ERR_UNSUPPORTED;
    }
    memset(cfg, 0, sizeof(*cfg));
    if ((st = eb_json_get_int(vc, what, "hidden_size", 768, 1, 1 << 16, &cfg->hidden, err,
                              err_len)) ||
        (st = eb_json_get_int(vc, what, "intermediate_size", 3072, 1, 1 << 18, &cfg->mlp, err,
                              err_len)) ||
        (st = eb_json_get_int(vc, what, "num_hidden_layers", 12, 0, 1024, &cfg->layers, err,
                              err_len)) ||
        (st = eb_json_get_int(vc, what, "num_attention_heads", 12, 1, 1024, &cfg->heads, err,
                              err_len)) ||
        (st = eb_json_get_int(vc, what, "num_channels", 3, 1, 16, &cfg->channels, err,
                              err_len)) ||
        (st = eb_json_get_int(vc, what, "image_size", 224, 1, 8192, &cfg->image_size, err,
                              err_len)) ||
        (st = eb_json_get_int(vc, what, "patch_size", 16, 1, 1024, &cfg->patch_size, err,
                              err_len)) ||
        (st = eb_json_get_double(vc, what, "layer_norm_eps", 1e-6, 0.0, 1.0,
                                 &cfg->layer_norm_eps, err, err_len)))
        return st;
    const char *act = NULL;
    if ((st = eb_json_get_string(vc, what, "hidden_act", "gelu_pytorch_tanh", &act, err,
                                 err_len)))
        return st;
    if (strcmp(act, "gelu_pytorch_tanh") != 0 && strcmp(act, "gelu_new") != 0 &&
        strcmp(act, "gelu_fast") != 0) {
        eb_set_err(err, err_len,
                   "%s: hidden_act \"%s\" is not supported; SigLIP uses gelu_pytorch_tanh", what,
                   act);
        return EB_ERR_UNSUPPORTED;
    }
    bool use_head = true;
    if ((st = eb_json_get_bool(vc, what, "vision_use_head", true, &use_head, err, err_len)))
        return st;
    if (!use_head) {
        eb_set_err(err, err_len,
                   "%s: vision_use_head is false; the attention-pooling head is required for "
                   "pooler_output",
                   what);
        return EB_ERR_UNSUPPORTED;
    }
    if (cfg->hidden % cfg->heads) {
        eb_set_err(err, err_len, "%s: hidden_size %lld is not divisible by num_attention_heads %lld",
                   what, (long long)cfg->hidden, (long long)cfg->heads);
        return EB_ERR_INVALID;
    }
    if (cfg->image_size < cfg->patch_size) {
        eb_set_err(err, err_len, "%s: image_size %lld is smaller than patch_size %lld", what,
                   (long long)cfg->image_size, (long long)cfg->patch_size);
        return EB_ERR_INVALID;
    }
    cfg->head_dim = cfg->hidden / cfg->heads;
    // Conv2d with stride P floors: so400m's 384 / 14 gives 27 x 27 patches (6 pixels unused).
    int64_t grid = cfg->image_size / cfg->patch_size;
    cfg->tokens = grid * grid;
    return EB_OK;
}

/* ---- weights ---------------------------------------------------------------------------------- */

/* The plan lives in eb_weights (shared with Qwen3); these short names keep the layout below
 * readable. */
typedef eb_weight_plan plan;
typedef eb_weight_spec weight_spec;
#define plan_add eb_weight_plan_add
#define plan_source eb_weight_plan_source
#define plan_simple eb_weight_plan_simple

static void plan_linear(plan *p, eb_tensor *w_dst, eb_tensor *b_dst, const char *base, int64_t n,
                        int64_t k)
{
    char name[200];
    int64_t ws[2] = {n, k}, bs[1] = {n};
    snprintf(name, sizeof(name), "%s.weight", base);
    plan_simple(p, w_dst, EB_WEIGHT_MATRIX, name, 2, ws);
    snprintf(name, sizeof(name), "%s.bias", base);
    plan_simple(p, b_dst, EB_WEIGHT_VECTOR, name, 1, bs);
}

static void plan_norm(plan *p, eb_tensor *w_dst, eb_tensor *b_dst, const char *base, int64_t c)
{
    char name[200];
    int64_t s[1] = {c};
    snprintf(name, sizeof(name), "%s.weight", base);
    plan_simple(p, w_dst, EB_WEIGHT_VECTOR, name, 1, s);
    snprintf(name, sizeof(name), "%s.bias", base);
    plan_simple(p, b_dst, EB_WEIGHT_VECTOR, name, 1, s);
}

static void build_plan(plan *p, eb_siglip *m)
{
    const eb_siglip_config *c = &m->cfg;
    int64_t C = c->hidden, F = c->mlp, P = c->patch_size, T = c->tokens;
    int64_t K = c->channels * P * P;

    int64_t pw_src[4] = {C, c->channels, P, P}, pw[2] = {C, K};
    weight_spec *w = plan_add(p, &m->patch_w, EB_WEIGHT_MATRIX, 2, pw);
    plan_source(p, w, "embeddings.patch_embedding.weight", 4, pw_src, 0, -1);
    int64_t cs[1] = {C};
    plan_simple(p, &m->patch_b, EB_WEIGHT_VECTOR, "embeddings.patch_embedding.bias", 1, cs);
    int64_t ps[2] = {T, C};
    plan_simple(p, &m->pos, EB_WEIGHT_TABLE, "embeddings.position_embedding.weight", 2, ps);

    for (int64_t l = 0; l < c->layers; l++) {
        layer_weights *L = &m->layers[l];
        char base[160], name[200];
        snprintf(base, sizeof(base), "encoder.layers.%lld", (long long)l);
        snprintf(name, sizeof(name), "%s.layer_norm1", base);
        plan_norm(p, &L->ln1_w, &L->ln1_b, name, C);
        // q, k, v fused into rows [0,C), [C,2C), [2C,3C) of one (3C, C) matrix.
        int64_t qkv_s[2] = {3 * C, C}, qkv_bs[1] = {3 * C}, lin_s[2] = {C, C};
        weight_spec *ww = plan_add(p, &L->qkv_w, EB_WEIGHT_MATRIX, 2, qkv_s);
        weight_spec *wb = plan_add(p, &L->qkv_b, EB_WEIGHT_VECTOR, 1, qkv_bs);
        static const char *const proj[3] = {"q_proj", "k_proj", "v_proj"};
        for (int i = 0; i < 3; i++) {
            snprintf(name, sizeof(name), "%s.self_attn.%s.weight", base, proj[i]);
            plan_source(p, ww, name, 2, lin_s, 0, -1);
            snprintf(name, sizeof(name), "%s.self_attn.%s.bias", base, proj[i]);
            plan_source(p, wb, name, 1, cs, 0, -1);
        }
        snprintf(name, sizeof(name), "%s.self_attn.out_proj", base);
        plan_linear(p, &L->o_w, &L->o_b, name, C, C);
        snprintf(name, sizeof(name), "%s.layer_norm2", base);
        plan_norm(p, &L->ln2_w, &L->ln2_b, name, C);
        snprintf(name, sizeof(name), "%s.mlp.fc1", base);
        plan_linear(p, &L->fc1_w, &L->fc1_b, name, F, C);
        snprintf(name, sizeof(name), "%s.mlp.fc2", base);
        plan_linear(p, &L->fc2_w, &L->fc2_b, name, C, F);
    }
    plan_norm(p, &m->post_w, &m->post_b, "post_layernorm", C);

    int64_t probe_src[3] = {1, 1, C}, probe_s[2] = {1, C};
    w = plan_add(p, &m->probe, EB_WEIGHT_TABLE, 2, probe_s);
    plan_source(p, w, "head.probe", 3, probe_src, 0, -1);
    // in_proj_weight (3C, C) = [Wq; Wk; Wv]: q part alone, k and v together.
    int64_t in_s[2] = {3 * C, C}, in_bs[1] = {3 * C};
    int64_t q_s[2] = {C, C}, kv_s[2] = {2 * C, C}, kv_bs[1] = {2 * C};
    w = plan_add(p, &m->head_q_w, EB_WEIGHT_MATRIX, 2, q_s);
    plan_source(p, w, "head.attention.in_proj_weight", 2, in_s, 0, C * C);
    w = plan_add(p, &m->head_q_b, EB_WEIGHT_VECTOR, 1, cs);
    plan_source(p, w, "head.attention.in_proj_bias", 1, in_bs, 0, C);
    w = plan_add(p, &m->head_kv_w, EB_WEIGHT_MATRIX, 2, kv_s);
    plan_source(p, w, "head.attention.in_proj_weight", 2, in_s, C * C, 2 * C * C);
    w = plan_add(p, &m->head_kv_b, EB_WEIGHT_VECTOR, 1, kv_bs);
    plan_source(p, w, "head.attention.in_proj_bias", 1, in_bs, C, 2 * C);
    plan_linear(p, &m->head_o_w, &m->head_o_b, "head.attention.out_proj", C, C);
    plan_norm(p, &m->head_ln_w, &m->head_ln_b, "head.layernorm", C);
    plan_linear(p, &m->head_fc1_w, &m->head_fc1_b, "head.mlp.fc1", F, C);
    plan_linear(p, &m->head_fc2_w, &m->head_fc2_b, "head.mlp.fc2", C, F);
}

/* ---- activations ------------------------------------------------------------------------------ */

static size_t carve_all(eb_siglip *m, eb_buffer *buf)
{
    eb_backend *be = m->be;
    const eb_siglip_config *c = &m->cfg;
    int64_t Bm = m->max_batch, T = c->tokens, C = c->hidden, F = c->mlp;
    int64_t S = c->image_size;
    int64_t wide = 3 * C > F ? 3 * C : F;
    size_t off = 0;
    m->pixels = eb_ops_act_carve(be, buf, &off, Bm * c->channels * S * S);
    m->x = eb_ops_act_carve(be, buf, &off, Bm * T * C);
    m->ln = eb_ops_act_carve(be, buf, &off, Bm * T * C);
    m->big = eb_ops_act_carve(be, buf, &off, Bm * T * wide);
    m->attn = eb_ops_act_carve(be, buf, &off, Bm * T * C);
    m->qp = eb_ops_act_carve(be, buf, &off, C);
    m->qtmp = eb_ops_act_carve(be, buf, &off, C);
    m->hattn = eb_ops_act_carve(be, buf, &off, Bm * C);
    m->h = eb_ops_act_carve(be, buf, &off, Bm * C);
    m->hln = eb_ops_act_carve(be, buf, &off, Bm * C);
    m->hmlp = eb_ops_act_carve(be, buf, &off, Bm * F);
    m->normed = eb_ops_act_carve(be, buf, &off, Bm * C);
    m->zero_id = (int32_t *)eb_ops_act_carve(be, buf, &off, 1);
    return off;
}

/* ---- load ------------------------------------------------------------------------------------- */

#define OP(call, what_)                                                                            \
    do {                                                                                           \
        eb_status op_status_ = (call);                                                             \
        if (op_status_ != EB_OK) {                                                                 \
            eb_set_err(err, err_len, "SigLIP %s failed on backend %s: %s", what_, m->be->name,     \
                       eb_status_str(op_status_));                                                 \
            return op_status_;                                                                     \
        }                                                                                          \
    } while (0)

// The probe's query never changes: q = probe · Wqᵀ + bq, once.
static eb_status compute_probe_query(eb_siglip *m, char *err, size_t err_len)
{
    eb_backend *be = m->be;
    int32_t zero = 0;
    OP(be->iface.upload(be, m->zero_id, &zero, sizeof(zero)), "upload");
    OP(be->iface.get_rows(be, m->qtmp, &m->probe, m->zero_id, 1), "get_rows(probe)");
    OP(be->iface.matmul(be, m->qp, m->cfg.hidden, m->qtmp, m->cfg.hidden, &m->head_q_w,
                        &m->head_q_b, 1, 0),
       "matmul(probe query)");
    OP(be->iface.synchronize(be), "synchronize");
    return EB_OK;
}

eb_siglip *eb_siglip_load(eb_backend *be, const eb_checkpoint *ck, int64_t max_batch, char *err,
                          size_t err_len)
{
    if (max_batch < 1) {
        eb_set_err(err, err_len, "cannot load SigLIP: max_batch %lld must be at least 1",
                   (long long)max_batch);
        return NULL;
    }
    eb_siglip *m = calloc(1, sizeof(*m));
    plan p = {0};
    if (!m) {
        eb_set_err(err, err_len, "cannot load SigLIP: out of memory");
        return NULL;
    }
    m->be = be;
    m->max_batch = max_batch;
    char cerr[512];
    if (eb_siglip_parse_config(eb_checkpoint_config(ck), &m->cfg, cerr, sizeof(cerr)) != EB_OK) {
        eb_set_err(err, err_len, "cannot load SigLIP from \"%s\": %s", eb_checkpoint_dir(ck), cerr);
        goto fail;
    }
    static const eb_op needed[] = {EB_OP_PATCH_EMBED, EB_OP_LAYERNORM, EB_OP_ATTENTION,
                                   EB_OP_L2NORM, EB_OP_GET_ROWS};
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++)
        if (!be->iface.supports(be, needed[i], 0)) {
            eb_set_err(err, err_len, "cannot load SigLIP: backend %s lacks op %s", be->name,
                       eb_op_name(needed[i]));
            goto fail;
        }
    if (!be->iface.supports(be, EB_OP_MATMUL, EB_MATMUL_GELU_TANH) ||
        !be->iface.supports(be, EB_OP_MATMUL, EB_MATMUL_ACCUMULATE)) {
        eb_set_err(err, err_len, "cannot load SigLIP: backend %s lacks fused matmul epilogues",
                   be->name);
        goto fail;
    }
    m->layers = calloc((size_t)(m->cfg.layers ? m->cfg.layers : 1), sizeof(*m->layers));
    if (!m->layers) {
        eb_set_err(err, err_len, "cannot load SigLIP: out of memory");
        goto fail;
    }
    const eb_safetensors *st = eb_checkpoint_weights(ck);
    p.st = st;
    p.model = "SigLIP";
    p.err = err;
    p.err_len = err_len;
    // Full SiglipModel and SiglipVisionModel checkpoints name the tower "vision_model.*";
    // accept bare names too (exports that strip the prefix).
    p.prefix = eb_safetensors_find(st, "vision_model.embeddings.patch_embedding.weight")
                   ? "vision_model."
                   : "";
    build_plan(&p, m);
    if (eb_weight_plan_upload(&p, m->be, &m->wbuf) != EB_OK)
        goto fail;
    eb_weight_plan_free(&p);

    size_t act_bytes = carve_all(m, NULL);
    m->abuf = be->iface.buffer_alloc(be, act_bytes, EB_BUFFER_ACTIVATIONS);
    if (!m->abuf) {
        eb_set_err(
            err, err_len,
            "cannot load SigLIP: allocating %zu bytes of activations for max_batch %lld on %s "
            "failed (lower the maximum batch)",
            act_bytes, (long long)max_batch, be->name);
        goto fail;
    }
    carve_all(m, m->abuf);
    eb_ops_limits lim = {
        .max_batch = max_batch,
        .max_tokens = m->cfg.tokens,
        .max_heads = m->cfg.heads,
        .max_head_dim = m->cfg.head_dim,
        .max_hidden = m->cfg.mlp > 3 * m->cfg.hidden ? m->cfg.mlp : 3 * m->cfg.hidden,
        .max_patch_dim = m->cfg.channels * m->cfg.patch_size * m->cfg.patch_size,
    };
    eb_status rs = be->iface.reserve(be, &lim);
    if (rs != EB_OK) {
        eb_set_err(err, err_len, "cannot load SigLIP: reserving backend scratch failed: %s",
                   eb_status_str(rs));
        goto fail;
    }
    if (compute_probe_query(m, err, err_len) != EB_OK)
        goto fail;
    return m;
fail:
    eb_weight_plan_free(&p);
    eb_siglip_destroy(&m);
    return NULL;
}

void eb_siglip_destroy(eb_siglip **pm)
{
    if (!pm || !*pm)
        return;
    eb_siglip *m = *pm;
    if (m->abuf)
        m->be->iface.buffer_free(m->be, m->abuf);
    if (m->wbuf)
        m->be->iface.buffer_free(m->be, m->wbuf);
    free(m->layers);
    free(m);
    *pm = NULL;
}

const eb_siglip_config *eb_siglip_get_config(const eb_siglip *m)
{
    return &m->cfg;
}

int64_t eb_siglip_max_batch(const eb_siglip *m)
{
    return m->max_batch;
}

float *eb_siglip_input(eb_siglip *m)
{
    return m->pixels;
}

const float *eb_siglip_pooled(const eb_siglip *m)
{
    return m->h;
}

const float *eb_siglip_normalized(const eb_siglip *m)
{
    return m->normed;
}

size_t eb_siglip_weight_bytes(const eb_siglip *m)
{
    return m->be->iface.buffer_size(m->be, m->wbuf);
}

size_t eb_siglip_activation_bytes(const eb_siglip *m)
{
    return m->be->iface.buffer_size(m->be, m->abuf);
}

/* ---- forward ---------------------------------------------------------------------------------- */

static eb_status run_ops(eb_siglip *m, int64_t B, char *err, size_t err_len)
{
    eb_backend *be = m->be;
    const eb_backend_iface *op = &be->iface;
    const eb_siglip_config *c = &m->cfg;
    int64_t T = c->tokens, C = c->hidden, F = c->mlp, D = c->head_dim, H = c->heads;
    int64_t M = B * T;
    float eps = (float)c->layer_norm_eps;
    float scale = (float)(1.0 / sqrt((double)D));

    // x (B,T,C) = patches (B,T,3PP) · Wᵀ + b + pos
    OP(op->patch_embed(be, m->x, m->pixels, &m->patch_w, &m->patch_b, &m->pos, B, c->channels,
                       c->image_size, c->image_size, c->patch_size),
       "patch_embed");

    eb_attn_desc self_attn = {
        .B = B, .Tq = T, .Tk = T, .H = H, .Hkv = H, .D = D,
        .q_batch_stride = T * 3 * C, .q_token_stride = 3 * C,
        .k_batch_stride = T * 3 * C, .k_token_stride = 3 * C,
        .v_batch_stride = T * 3 * C, .v_token_stride = 3 * C,
        .out_batch_stride = T * C, .out_token_stride = C,
        .scale = scale,
    };
    for (int64_t l = 0; l < c->layers; l++) {
        const layer_weights *L = &m->layers[l];
        OP(op->layernorm(be, m->ln, m->x, NULL, &L->ln1_w, &L->ln1_b, M, C, eps), "layernorm1");
        // qkv (M, 3C)
        OP(op->matmul(be, m->big, 3 * C, m->ln, C, &L->qkv_w, &L->qkv_b, M, 0), "matmul(qkv)");
        OP(op->attention(be, m->attn, m->big, m->big + C, m->big + 2 * C, &self_attn),
           "attention");
        // x += attn · Woᵀ + bo
        OP(op->matmul(be, m->x, C, m->attn, C, &L->o_w, &L->o_b, M, EB_MATMUL_ACCUMULATE),
           "matmul(out_proj)");
        OP(op->layernorm(be, m->ln, m->x, NULL, &L->ln2_w, &L->ln2_b, M, C, eps), "layernorm2");
        // big (M, F) = gelu(ln · W1ᵀ + b1); x += big · W2ᵀ + b2
        OP(op->matmul(be, m->big, F, m->ln, C, &L->fc1_w, &L->fc1_b, M, EB_MATMUL_GELU_TANH),
           "matmul(fc1)");
        OP(op->matmul(be, m->x, C, m->big, F, &L->fc2_w, &L->fc2_b, M, EB_MATMUL_ACCUMULATE),
           "matmul(fc2)");
    }
    // last_hidden_state (B,T,C) in ln
    OP(op->layernorm(be, m->ln, m->x, NULL, &m->post_w, &m->post_b, M, C, eps), "post_layernorm");

    // Pooling head: kv (M, 2C); the probe's query qp (1, C) is shared by every item.
    OP(op->matmul(be, m->big, 2 * C, m->ln, C, &m->head_kv_w, &m->head_kv_b, M, 0),
       "matmul(head kv)");
    eb_attn_desc pool_attn = {
        .B = B, .Tq = 1, .Tk = T, .H = H, .Hkv = H, .D = D,
        .q_batch_stride = 0, .q_token_stride = C,
        .k_batch_stride = T * 2 * C, .k_token_stride = 2 * C,
        .v_batch_stride = T * 2 * C, .v_token_stride = 2 * C,
        .out_batch_stride = C, .out_token_stride = C,
        .scale = scale,
    };
    OP(op->attention(be, m->hattn, m->qp, m->big, m->big + C, &pool_attn), "attention(head)");
    OP(op->matmul(be, m->h, C, m->hattn, C, &m->head_o_w, &m->head_o_b, B, 0),
       "matmul(head out_proj)");
    OP(op->layernorm(be, m->hln, m->h, NULL, &m->head_ln_w, &m->head_ln_b, B, C, eps),
       "layernorm(head)");
    OP(op->matmul(be, m->hmlp, F, m->hln, C, &m->head_fc1_w, &m->head_fc1_b, B,
                  EB_MATMUL_GELU_TANH),
       "matmul(head fc1)");
    OP(op->matmul(be, m->h, C, m->hmlp, F, &m->head_fc2_w, &m->head_fc2_b, B,
                  EB_MATMUL_ACCUMULATE),
       "matmul(head fc2)");
    // h (B, C) is pooler_output; the embedding is its L2-normalised copy.
    OP(op->l2norm(be, m->normed, m->h, B, C, C, 1e-12f), "l2norm");
    return EB_OK;
}

eb_status eb_siglip_forward(eb_siglip *m, int64_t B, char *err, size_t err_len)
{
    if (B < 1 || B > m->max_batch) {
        eb_set_err(err, err_len, "SigLIP batch of %lld images is outside 1..%lld (max_batch)",
                   (long long)B, (long long)m->max_batch);
        return B < 1 ? EB_ERR_INVALID : EB_ERR_TOO_LARGE;
    }
    eb_backend *be = m->be;
    if (be->iface.graph_replay && be->iface.graph_replay(be, (uint64_t)B))
        return EB_OK;
    bool record = be->iface.graph_record_begin && be->iface.graph_record_end &&
                  be->iface.graph_record_begin(be, (uint64_t)B) == EB_OK;
    eb_status st = run_ops(m, B, err, err_len);
    if (record) {
        eb_status rs = be->iface.graph_record_end(be, (uint64_t)B);
        if (st == EB_OK && rs != EB_OK) {
            eb_set_err(err, err_len, "SigLIP graph recording failed on %s: %s", be->name,
                       eb_status_str(rs));
            st = rs;
        }
    }
    return st;
}

eb_status eb_siglip_embed(eb_siglip *m, const float *pixels, int64_t B, float *pooled,
                          float *normalized, char *err, size_t err_len)
{
    if (!pixels || B < 1 || B > m->max_batch) {
        eb_set_err(err, err_len, "SigLIP batch of %lld images is outside 1..%lld (max_batch)",
                   (long long)B, (long long)m->max_batch);
        return !pixels || B < 1 ? EB_ERR_INVALID : EB_ERR_TOO_LARGE;
    }
    eb_backend *be = m->be;
    const eb_siglip_config *c = &m->cfg;
    size_t in_bytes = (size_t)(B * c->channels * c->image_size * c->image_size) * sizeof(float);
    size_t out_bytes = (size_t)(B * c->hidden) * sizeof(float);
    OP(be->iface.upload(be, m->pixels, pixels, in_bytes), "upload(pixels)");
    eb_status st = eb_siglip_forward(m, B, err, err_len);
    if (st != EB_OK)
        return st;
    if (pooled)
        OP(be->iface.download(be, pooled, m->h, out_bytes), "download(pooled)");
    if (normalized)
        OP(be->iface.download(be, normalized, m->normed, out_bytes), "download(normalized)");
    OP(be->iface.synchronize(be), "synchronize");
    return EB_OK;
}
