/* eb_ckpt_qwen3 — Qwen3 checkpoint layouts for mkcheckpoint (see eb_ckpt_qwen3.h).
 *
 * The tensor list follows transformers' Qwen3Model state dict (embed_tokens, per layer
 * input_layernorm, self_attn.{q,k,v,o}_proj, self_attn.{q,k}_norm, post_attention_layernorm,
 * mlp.{gate,up,down}_proj, final norm); lm_head is absent because the embedding models tie it to
 * embed_tokens. config.json is written in the published file's form (all keys, sorted), so the
 * loader sees what it will see with the real model.
 */
#include "eb_ckpt_qwen3.h"
#include "eb_status.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "eb_ckpt_writer.h"

static const eb_ckpt_qwen3_preset PRESETS[] = {
    {"qwen3-tiny", 64, 128, 2, 4, 2, 32, 151669, 512, 10000.0, 1e-5, false, "model.", true},
    {"qwen3-tiny-bias", 64, 128, 2, 4, 2, 32, 151669, 512, 10000.0, 1e-5, true, "", true},
    {"qwen3-embedding-0.6b", 1024, 3072, 28, 16, 8, 128, 151669, 32768, 1000000.0, 1e-6, false,
     "", false},
};

#define N_PRESETS (sizeof(PRESETS) / sizeof(PRESETS[0]))

// transformers' Qwen3Config.initializer_range default (and the published value).
#define INIT_RANGE 0.02

const eb_ckpt_qwen3_preset *eb_ckpt_qwen3_presets(size_t *count)
{
    if (count)
        *count = N_PRESETS;
    return PRESETS;
}

const eb_ckpt_qwen3_preset *eb_ckpt_qwen3_find(const char *name)
{
    for (size_t i = 0; name && i < N_PRESETS; i++)
        if (strcmp(PRESETS[i].name, name) == 0)
            return &PRESETS[i];
    return NULL;
}

typedef struct adder {
    eb_ckpt_writer *w;
    const eb_ckpt_qwen3_preset *p;
    bool test;
    eb_status st;
    char *err;
    size_t err_len;
} adder;

static void add(adder *a, const char *name, int ndim, int64_t d0, int64_t d1, eb_init init)
{
    if (a->st)
        return;
    char full[256];
    snprintf(full, sizeof(full), "%s%s", a->p->prefix, name);
    int64_t shape[2] = {d0, d1};
    a->st = eb_ckpt_writer_add(a->w, full, ndim, shape, init);
    if (a->st)
        eb_set_err(a->err, a->err_len, "cannot add tensor %s: %s", full, eb_status_str(a->st));
}

static eb_init normal_init(double mean, double std)
{
    return (eb_init){EB_INIT_NORMAL, mean, std};
}

static eb_init norm_init(const adder *a)
{
    return a->test ? normal_init(1.0, 0.1) : (eb_init){EB_INIT_ONES, 0, 0};
}

static void add_linear(adder *a, const char *base, int64_t out, int64_t in, bool bias)
{
    char name[200];
    snprintf(name, sizeof(name), "%s.weight", base);
    add(a, name, 2, out, in, normal_init(0.0, INIT_RANGE));
    if (bias) {
        snprintf(name, sizeof(name), "%s.bias", base);
        add(a, name, 1, out, 0,
            a->test ? normal_init(0.0, INIT_RANGE) : (eb_init){EB_INIT_ZEROS, 0, 0});
    }
}

static void add_tensors(adder *a)
{
    const eb_ckpt_qwen3_preset *p = a->p;
    int64_t C = p->hidden, D = p->head_dim, F = p->intermediate;
    add(a, "embed_tokens.weight", 2, p->vocab, C, normal_init(0.0, INIT_RANGE));
    for (int64_t l = 0; l < p->layers; l++) {
        char base[160], name[200];
        snprintf(base, sizeof(base), "layers.%lld", (long long)l);
        snprintf(name, sizeof(name), "%s.input_layernorm.weight", base);
        add(a, name, 1, C, 0, norm_init(a));
        snprintf(name, sizeof(name), "%s.post_attention_layernorm.weight", base);
        add(a, name, 1, C, 0, norm_init(a));
        snprintf(name, sizeof(name), "%s.self_attn.q_proj", base);
        add_linear(a, name, p->heads * D, C, p->attention_bias);
        snprintf(name, sizeof(name), "%s.self_attn.k_proj", base);
        add_linear(a, name, p->kv_heads * D, C, p->attention_bias);
        snprintf(name, sizeof(name), "%s.self_attn.v_proj", base);
        add_linear(a, name, p->kv_heads * D, C, p->attention_bias);
        snprintf(name, sizeof(name), "%s.self_attn.o_proj", base);
        add_linear(a, name, C, p->heads * D, p->attention_bias);
        snprintf(name, sizeof(name), "%s.self_attn.q_norm.weight", base);
        add(a, name, 1, D, 0, norm_init(a));
        snprintf(name, sizeof(name), "%s.self_attn.k_norm.weight", base);
        add(a, name, 1, D, 0, norm_init(a));
        snprintf(name, sizeof(name), "%s.mlp.gate_proj", base);
        add_linear(a, name, F, C, false);
        snprintf(name, sizeof(name), "%s.mlp.up_proj", base);
        add_linear(a, name, F, C, false);
        snprintf(name, sizeof(name), "%s.mlp.down_proj", base);
        add_linear(a, name, C, F, false);
    }
    add(a, "norm.weight", 1, C, 0, norm_init(a));
}

// config.json as Qwen/Qwen3-Embedding-0.6B publishes it (same keys, sorted), with our shape.
static eb_status write_config(const eb_ckpt_qwen3_preset *p, const char *dir, eb_dtype dtype,
                              char *err, size_t err_len)
{
    const char *torch_dtype = dtype == EB_DTYPE_F32    ? "float32"
                              : dtype == EB_DTYPE_BF16 ? "bfloat16"
                                                       : "float16";
    char theta[64];
    if (p->rope_theta == floor(p->rope_theta) && p->rope_theta < 1e15)
        snprintf(theta, sizeof(theta), "%lld", (long long)p->rope_theta);
    else
        snprintf(theta, sizeof(theta), "%.17g", p->rope_theta);
    char text[4096];
    snprintf(text, sizeof(text),
             "{\n"
             "  \"architectures\": [\n    \"Qwen3ForCausalLM\"\n  ],\n"
             "  \"attention_bias\": %s,\n"
             "  \"attention_dropout\": 0.0,\n"
             "  \"bos_token_id\": 151643,\n"
             "  \"eos_token_id\": 151643,\n"
             "  \"head_dim\": %lld,\n"
             "  \"hidden_act\": \"silu\",\n"
             "  \"hidden_size\": %lld,\n"
             "  \"initializer_range\": %g,\n"
             "  \"intermediate_size\": %lld,\n"
             "  \"max_position_embeddings\": %lld,\n"
             "  \"max_window_layers\": %lld,\n"
             "  \"model_type\": \"qwen3\",\n"
             "  \"num_attention_heads\": %lld,\n"
             "  \"num_hidden_layers\": %lld,\n"
             "  \"num_key_value_heads\": %lld,\n"
             "  \"rms_norm_eps\": %g,\n"
             "  \"rope_scaling\": null,\n"
             "  \"rope_theta\": %s,\n"
             "  \"sliding_window\": null,\n"
             "  \"tie_word_embeddings\": true,\n"
             "  \"torch_dtype\": \"%s\",\n"
             "  \"transformers_version\": \"4.51.3\",\n"
             "  \"use_cache\": true,\n"
             "  \"use_sliding_window\": false,\n"
             "  \"vocab_size\": %lld\n"
             "}\n",
             p->attention_bias ? "true" : "false", (long long)p->head_dim, (long long)p->hidden,
             INIT_RANGE, (long long)p->intermediate, (long long)p->max_positions,
             (long long)p->layers, (long long)p->heads, (long long)p->layers,
             (long long)p->kv_heads, p->rms_norm_eps, theta, torch_dtype, (long long)p->vocab);
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    FILE *f = fopen(path, "wb");
    bool ok = f && fputs(text, f) >= 0;
    if (f && fclose(f) != 0)
        ok = false;
    if (!ok) {
        eb_set_err(err, err_len, "cannot write %s: %s", path, strerror(errno));
        return EB_ERR_IO;
    }
    return EB_OK;
}

eb_status eb_ckpt_qwen3_write(const char *name, const char *dir, eb_dtype dtype, uint64_t seed,
                              int shards, int init_test, char *err, size_t err_len)
{
    const eb_ckpt_qwen3_preset *p = eb_ckpt_qwen3_find(name);
    if (!p) {
        eb_set_err(err, err_len, "unknown Qwen3 preset \"%s\"", name ? name : "(null)");
        return EB_ERR_INVALID;
    }
    if (!dir || shards < 1 ||
        (dtype != EB_DTYPE_F32 && dtype != EB_DTYPE_BF16 && dtype != EB_DTYPE_F16)) {
        eb_set_err(err, err_len, "invalid arguments for Qwen3 preset \"%s\"", name);
        return EB_ERR_INVALID;
    }
    eb_ckpt_writer *w = eb_ckpt_writer_new(dtype, seed);
    if (!w) {
        eb_set_err(err, err_len, "cannot write Qwen3 checkpoint: out of memory");
        return EB_ERR_NOMEM;
    }
    adder a = {.w = w, .p = p, .test = init_test < 0 ? p->test_init_default : init_test == 1,
               .err = err, .err_len = err_len};
    add_tensors(&a);
    eb_status st = a.st;
    if (st == EB_OK)
        st = write_config(p, dir, dtype, err, err_len);
    if (st == EB_OK)
        st = eb_ckpt_writer_write(w, dir, shards, err, err_len);
    eb_ckpt_writer_destroy(&w);
    return st;
}
