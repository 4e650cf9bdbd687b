/* mkcheckpoint — write a Hugging Face-layout checkpoint with seeded random weights.
 *
 *   mkcheckpoint PRESET OUTDIR [--seed N] [--dtype f32|bf16|f16] [--full] [--shards N]
 *                              [--init hf|test]
 *   mkcheckpoint --list
 *
 * Presets: siglip-tiny (tests), siglip-base-patch16-224, siglip-so400m-patch14-384. The output
 * is what the Hugging Face hub serves for those models — config.json as sparse as the published
 * one (only keys that differ from transformers' defaults, so the loader's defaults are
 * exercised), preprocessor_config.json, model.safetensors (or shards plus
 * model.safetensors.index.json) — but with random weights: embeddings from such a model are
 * meaningless, they only let everything run and be compared without downloads.
 *
 * --full writes a SiglipModel checkpoint (vision_model.* plus a few text_model.* tensors and a
 * config with text_config/vision_config) instead of a bare SiglipVisionModel one.
 * --init hf initialises like transformers' SiglipPreTrainedModel._init_weights (zero biases,
 * unit LayerNorms); --init test (the default for siglip-tiny) also randomises biases and
 * LayerNorm parameters, so that a test notices if any of them is ignored.
 * The same arguments always give byte-identical files.
 *
 * Another model family (e.g. qwen3) is added as one more entry in PRESETS with its own writer.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eb_ckpt_qwen3.h"
#include "eb_ckpt_writer.h"

typedef struct siglip_shape {
    int64_t hidden, mlp, layers, heads, image, patch;
    int64_t text_vocab; // for --full
} siglip_shape;

typedef struct options {
    const char *outdir;
    uint64_t seed;
    eb_dtype dtype;
    bool full;
    int shards;
    int init_test; // -1 = preset default, 0 = hf, 1 = test
} options;

typedef struct preset {
    const char *name;
    const char *family; // "siglip"; later "qwen3"
    siglip_shape siglip;
    bool test_init_default;
    int (*write)(const struct preset *p, const options *o);
} preset;

static int write_siglip(const preset *p, const options *o);
static int write_qwen3(const preset *p, const options *o);

static const preset PRESETS[] = {
    {"siglip-tiny", "siglip", {64, 256, 2, 4, 64, 16, 1000}, true, write_siglip},
    {"siglip-base-patch16-224", "siglip", {768, 3072, 12, 12, 224, 16, 32000}, false,
     write_siglip},
    {"siglip-so400m-patch14-384", "siglip", {1152, 4304, 27, 16, 384, 14, 32000}, false,
     write_siglip},
    // Qwen3 shapes and initialisation live in tools/eb_ckpt_qwen3.c.
    {"qwen3-tiny", "qwen3", {0}, true, write_qwen3},
    {"qwen3-tiny-bias", "qwen3", {0}, true, write_qwen3},
    {"qwen3-embedding-0.6b", "qwen3", {0}, false, write_qwen3},
};

/* ---- Qwen3 ------------------------------------------------------------------------------------ */

static int write_qwen3(const preset *p, const options *o)
{
    if (o->full) {
        fprintf(stderr, "mkcheckpoint: --full applies to SigLIP presets only\n");
        return 2;
    }
    char err[512];
    if (eb_ckpt_qwen3_write(p->name, o->outdir, o->dtype, o->seed, o->shards, o->init_test, err,
                            sizeof(err)) != EB_OK) {
        fprintf(stderr, "mkcheckpoint: %s\n", err);
        return 1;
    }
    return 0;
}

/* ---- SigLIP ----------------------------------------------------------------------------------- */

// nn.init.trunc_normal_-style lecun_normal: std sqrt(1/fan_in) corrected for the cut at 2 std.
static eb_init lecun(int64_t fan_in)
{
    return (eb_init){EB_INIT_TRUNC_NORMAL, 0.0, sqrt(1.0 / (double)fan_in) / .87962566103423978};
}

static eb_init xavier(int64_t fan_in, int64_t fan_out)
{
    return (eb_init){EB_INIT_UNIFORM, 0.0, sqrt(6.0 / (double)(fan_in + fan_out))};
}

static eb_init normal(double mean, double std)
{
    return (eb_init){EB_INIT_NORMAL, mean, std};
}

typedef struct adder {
    eb_ckpt_writer *w;
    bool test;
    eb_status st;
} adder;

static void add(adder *a, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
                int64_t d3, eb_init init)
{
    if (a->st)
        return;
    int64_t shape[4] = {d0, d1, d2, d3};
    a->st = eb_ckpt_writer_add(a->w, name, ndim, shape, init);
    if (a->st)
        fprintf(stderr, "mkcheckpoint: cannot add tensor %s: %s\n", name, eb_status_str(a->st));
}

// A bias: transformers zeroes it (or draws std 1e-6); the test init makes it matter.
static eb_init bias_init(const adder *a, double hf_std)
{
    if (a->test)
        return normal(0.0, 0.02);
    return hf_std > 0 ? normal(0.0, hf_std) : (eb_init){EB_INIT_ZEROS, 0, 0};
}

static void add_layernorm(adder *a, const char *base, int64_t c)
{
    char name[256];
    snprintf(name, sizeof(name), "%s.weight", base);
    add(a, name, 1, c, 0, 0, 0, a->test ? normal(1.0, 0.1) : (eb_init){EB_INIT_ONES, 0, 0});
    snprintf(name, sizeof(name), "%s.bias", base);
    add(a, name, 1, c, 0, 0, 0, a->test ? normal(0.0, 0.05) : (eb_init){EB_INIT_ZEROS, 0, 0});
}

static void add_linear(adder *a, const char *base, int64_t out, int64_t in, eb_init w,
                       double bias_std)
{
    char name[256];
    snprintf(name, sizeof(name), "%s.weight", base);
    add(a, name, 2, out, in, 0, 0, w);
    snprintf(name, sizeof(name), "%s.bias", base);
    add(a, name, 1, out, 0, 0, 0, bias_init(a, bias_std));
}

static void add_siglip_vision(adder *a, const siglip_shape *s)
{
    int64_t C = s->hidden, F = s->mlp, P = s->patch, g = s->image / s->patch;
    char name[256], base[200];
    add(a, "vision_model.embeddings.patch_embedding.weight", 4, C, 3, P, P, lecun(3 * P * P));
    add(a, "vision_model.embeddings.patch_embedding.bias", 1, C, 0, 0, 0, bias_init(a, 0));
    add(a, "vision_model.embeddings.position_embedding.weight", 2, g * g, C, 0, 0,
        normal(0.0, 1.0 / sqrt((double)C)));
    for (int64_t l = 0; l < s->layers; l++) {
        snprintf(base, sizeof(base), "vision_model.encoder.layers.%lld", (long long)l);
        static const char *const proj[4] = {"q_proj", "k_proj", "v_proj", "out_proj"};
        for (int i = 0; i < 4; i++) {
            snprintf(name, sizeof(name), "%s.self_attn.%s", base, proj[i]);
            add_linear(a, name, C, C, xavier(C, C), 0);
        }
        snprintf(name, sizeof(name), "%s.layer_norm1", base);
        add_layernorm(a, name, C);
        snprintf(name, sizeof(name), "%s.layer_norm2", base);
        add_layernorm(a, name, C);
        snprintf(name, sizeof(name), "%s.mlp.fc1", base);
        add_linear(a, name, F, C, xavier(C, F), 1e-6);
        snprintf(name, sizeof(name), "%s.mlp.fc2", base);
        add_linear(a, name, C, F, xavier(F, C), 1e-6);
    }
    add_layernorm(a, "vision_model.post_layernorm", C);
    // probe (1, 1, C): xavier fan_in = fan_out = C.
    add(a, "vision_model.head.probe", 3, 1, 1, C, 0, xavier(C, C));
    add(a, "vision_model.head.attention.in_proj_weight", 2, 3 * C, C, 0, 0, xavier(C, 3 * C));
    add(a, "vision_model.head.attention.in_proj_bias", 1, 3 * C, 0, 0, 0, bias_init(a, 0));
    add_linear(a, "vision_model.head.attention.out_proj", C, C, lecun(C), 0);
    add_layernorm(a, "vision_model.head.layernorm", C);
    add_linear(a, "vision_model.head.mlp.fc1", F, C, xavier(C, F), 1e-6);
    add_linear(a, "vision_model.head.mlp.fc2", C, F, xavier(F, C), 1e-6);
}

// A few text tower tensors, enough to make a "full" checkpoint whose loader must skip them.
static void add_siglip_text_stub(adder *a, const siglip_shape *s)
{
    int64_t C = s->hidden;
    add(a, "text_model.embeddings.token_embedding.weight", 2, s->text_vocab, C, 0, 0,
        normal(0.0, 1.0 / sqrt((double)C)));
    add(a, "text_model.embeddings.position_embedding.weight", 2, 64, C, 0, 0,
        normal(0.0, 1.0 / sqrt((double)C)));
    add_layernorm(a, "text_model.final_layer_norm", C);
    add_linear(a, "text_model.head", C, C, lecun(C), 0);
    add(a, "logit_scale", 1, 1, 0, 0, 0, (eb_init){EB_INIT_ZEROS, 0, 0});
    add(a, "logit_bias", 1, 1, 0, 0, 0, (eb_init){EB_INIT_ZEROS, 0, 0});
}

static bool write_text_file(const char *dir, const char *file, const char *text)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    FILE *f = fopen(path, "wb");
    bool ok = f && fputs(text, f) >= 0;
    if (f && fclose(f) != 0)
        ok = false;
    if (!ok)
        fprintf(stderr, "mkcheckpoint: cannot write %s: %s\n", path, strerror(errno));
    return ok;
}

// Vision config keys that differ from SiglipVisionConfig's defaults, as the hub configs do.
static void vision_keys(char *buf, size_t cap, const siglip_shape *s, const char *indent)
{
    size_t off = 0;
    buf[0] = '\0';
#define KEY(name, val, dflt)                                                                       \
    if ((val) != (dflt) && off < cap)                                                              \
        off += (size_t)snprintf(buf + off, cap - off, "%s\"%s\": %lld,\n", indent, name,          \
                                (long long)(val));
    KEY("hidden_size", s->hidden, 768)
    KEY("image_size", s->image, 224)
    KEY("intermediate_size", s->mlp, 3072)
#undef KEY
    if (off < cap)
        off += (size_t)snprintf(buf + off, cap - off, "%s\"model_type\": \"siglip_vision_model\"",
                                indent);
#define KEY(name, val, dflt)                                                                       \
    if ((val) != (dflt) && off < cap)                                                              \
        off += (size_t)snprintf(buf + off, cap - off, ",\n%s\"%s\": %lld", indent, name,          \
                                (long long)(val));
    KEY("num_attention_heads", s->heads, 12)
    KEY("num_hidden_layers", s->layers, 12)
#undef KEY
    // The published configs always state patch_size, even at its default.
    if (off < cap)
        snprintf(buf + off, cap - off, ",\n%s\"patch_size\": %lld", indent, (long long)s->patch);
}

static int write_siglip(const preset *p, const options *o)
{
    const siglip_shape *s = &p->siglip;
    bool test = o->init_test < 0 ? p->test_init_default : o->init_test == 1;
    eb_ckpt_writer *w = eb_ckpt_writer_new(o->dtype, o->seed);
    if (!w) {
        fprintf(stderr, "mkcheckpoint: out of memory\n");
        return 1;
    }
    adder a = {.w = w, .test = test};
    add_siglip_vision(&a, s);
    if (o->full)
        add_siglip_text_stub(&a, s);
    if (a.st) {
        eb_ckpt_writer_destroy(&w);
        return 1;
    }
    const char *torch_dtype = o->dtype == EB_DTYPE_F32    ? "float32"
                              : o->dtype == EB_DTYPE_BF16 ? "bfloat16"
                                                          : "float16";
    char vkeys[1024], config[4096];
    if (o->full) {
        vision_keys(vkeys, sizeof(vkeys), s, "    ");
        snprintf(config, sizeof(config),
                 "{\n"
                 "  \"architectures\": [\n    \"SiglipModel\"\n  ],\n"
                 "  \"initializer_factor\": 1.0,\n"
                 "  \"model_type\": \"siglip\",\n"
                 "  \"text_config\": {\n"
                 "    \"hidden_size\": %lld,\n"
                 "    \"intermediate_size\": %lld,\n"
                 "    \"model_type\": \"siglip_text_model\",\n"
                 "    \"num_attention_heads\": %lld,\n"
                 "    \"num_hidden_layers\": %lld,\n"
                 "    \"vocab_size\": %lld\n"
                 "  },\n"
                 "  \"torch_dtype\": \"%s\",\n"
                 "  \"transformers_version\": \"4.37.0.dev0\",\n"
                 "  \"vision_config\": {\n%s\n  }\n"
                 "}\n",
                 (long long)s->hidden, (long long)s->mlp, (long long)s->heads,
                 (long long)s->layers, (long long)s->text_vocab, torch_dtype, vkeys);
    } else {
        vision_keys(vkeys, sizeof(vkeys), s, "  ");
        snprintf(config, sizeof(config),
                 "{\n"
                 "  \"architectures\": [\n    \"SiglipVisionModel\"\n  ],\n"
                 "%s,\n"
                 "  \"torch_dtype\": \"%s\",\n"
                 "  \"transformers_version\": \"4.37.0.dev0\"\n"
                 "}\n",
                 vkeys, torch_dtype);
    }
    char preproc[1024];
    snprintf(preproc, sizeof(preproc),
             "{\n"
             "  \"do_normalize\": true,\n"
             "  \"do_rescale\": true,\n"
             "  \"do_resize\": true,\n"
             "  \"image_mean\": [\n    0.5,\n    0.5,\n    0.5\n  ],\n"
             "  \"image_processor_type\": \"SiglipImageProcessor\",\n"
             "  \"image_std\": [\n    0.5,\n    0.5,\n    0.5\n  ],\n"
             "  \"processor_class\": \"SiglipProcessor\",\n"
             "  \"resample\": 3,\n"
             "  \"rescale_factor\": 0.00392156862745098,\n"
             "  \"size\": {\n    \"height\": %lld,\n    \"width\": %lld\n  }\n"
             "}\n",
             (long long)s->image, (long long)s->image);
    char err[512];
    int rc = 0;
    if (!write_text_file(o->outdir, "config.json", config) ||
        !write_text_file(o->outdir, "preprocessor_config.json", preproc))
        rc = 1;
    else if (eb_ckpt_writer_write(w, o->outdir, o->shards, err, sizeof(err)) != EB_OK) {
        fprintf(stderr, "mkcheckpoint: %s\n", err);
        rc = 1;
    }
    eb_ckpt_writer_destroy(&w);
    return rc;
}

/* ---- command line ----------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mkcheckpoint PRESET OUTDIR [--seed N] [--dtype f32|bf16|f16] [--full]\n"
            "                    [--shards N] [--init hf|test]\n"
            "       mkcheckpoint --list\n"
            "Writes a Hugging Face-layout checkpoint with seeded random weights (meaningless\n"
            "embeddings; for tests and benchmarks without downloads).\n");
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < sizeof(PRESETS) / sizeof(PRESETS[0]); i++)
            printf("%s\n", PRESETS[i].name);
        return 0;
    }
    if (argc < 3 || argv[1][0] == '-') {
        usage(stderr);
        return 2;
    }
    const preset *p = NULL;
    for (size_t i = 0; i < sizeof(PRESETS) / sizeof(PRESETS[0]); i++)
        if (strcmp(PRESETS[i].name, argv[1]) == 0)
            p = &PRESETS[i];
    if (!p) {
        fprintf(stderr, "mkcheckpoint: unknown preset \"%s\" (see mkcheckpoint --list)\n",
                argv[1]);
        return 2;
    }
    options o = {.outdir = argv[2], .seed = 0, .dtype = EB_DTYPE_F32, .shards = 1,
                 .init_test = -1};
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--full") == 0) {
            o.full = true;
        } else if (strcmp(a, "--seed") == 0 && v) {
            char *end;
            errno = 0;
            o.seed = strtoull(v, &end, 10);
            if (errno || *end || !*v) {
                fprintf(stderr, "mkcheckpoint: --seed \"%s\" is not a number\n", v);
                return 2;
            }
            i++;
        } else if (strcmp(a, "--dtype") == 0 && v) {
            if (strcmp(v, "f32") == 0)
                o.dtype = EB_DTYPE_F32;
            else if (strcmp(v, "bf16") == 0)
                o.dtype = EB_DTYPE_BF16;
            else if (strcmp(v, "f16") == 0)
                o.dtype = EB_DTYPE_F16;
            else {
                fprintf(stderr, "mkcheckpoint: --dtype must be f32, bf16 or f16, not \"%s\"\n", v);
                return 2;
            }
            i++;
        } else if (strcmp(a, "--shards") == 0 && v) {
            o.shards = atoi(v);
            if (o.shards < 1 || o.shards > 99) {
                fprintf(stderr, "mkcheckpoint: --shards must be 1..99\n");
                return 2;
            }
            i++;
        } else if (strcmp(a, "--init") == 0 && v) {
            if (strcmp(v, "hf") == 0)
                o.init_test = 0;
            else if (strcmp(v, "test") == 0)
                o.init_test = 1;
            else {
                fprintf(stderr, "mkcheckpoint: --init must be hf or test\n");
                return 2;
            }
            i++;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (mkdir(o.outdir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "mkcheckpoint: cannot create %s: %s\n", o.outdir, strerror(errno));
        return 1;
    }
    return p->write(p, &o);
}
