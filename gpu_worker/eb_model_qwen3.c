/* eb_model_qwen3 — Qwen3-Embedding as a worker model.
 *
 * Each text is tokenized on its own (an invalid one fails only its item) with the eos appended
 * and, when the request carries an instruction, in the query form "Instruct: …\nQuery:…". The
 * good items are sorted by length and cut into forwards of at most qwen3_token_budget tokens;
 * each forward returns full-size normalised vectors, which are truncated and renormalised per
 * item when an output dimension was asked for. Token buffers are sized at load for the largest
 * batch, so a batch allocates nothing. */
#include "eb_model_qwen3.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eb_checkpoint.h"
#include "eb_clock.h"
#include "eb_hash.h"
#include "eb_ops.h"
#include "eb_qwen3.h"
#include "eb_tokenizer.h"

typedef struct qwen3_state {
    eb_backend *backend;
    eb_checkpoint *checkpoint;
    eb_qwen3 *model;
    eb_tokenizer *tokenizer;
    eb_tokenizer_scratch *scratch;
    eb_tokenizer_options tok_options;
    int64_t max_batch, max_tokens, budget, dims;
    int32_t *ids;         /* (max_batch, max_tokens): row i holds item i's tokens */
    int32_t *lens;        /* (max_batch) */
    int32_t *packed;      /* (budget) ids of one forward, back to back */
    int32_t *packed_lens; /* (max_batch) */
    size_t *order;        /* good items, sorted by length */
    float *vectors;       /* (max_batch, dims) */
    char model_rev[EB_REV_LEN];
    char preproc_rev[EB_REV_LEN];
    char device[160];
} qwen3_state;

static void qwen3_destroy(void *p)
{
    qwen3_state *s = p;
    if (!s)
        return;
    eb_qwen3_destroy(&s->model);
    eb_checkpoint_close(&s->checkpoint);
    eb_backend_destroy(&s->backend);
    eb_tokenizer_scratch_destroy(&s->scratch);
    eb_tokenizer_destroy(&s->tokenizer);
    free(s->ids);
    free(s->lens);
    free(s->packed);
    free(s->packed_lens);
    free(s->order);
    free(s->vectors);
    free(s);
}

/* SHA-256 of a file's bytes, for preproc_rev. */
static eb_status hash_file(const char *path, uint8_t out[EB_HASH_LEN], char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "cannot read tokenizer \"%s\"", path);
        return EB_ERR_NOT_FOUND;
    }
    eb_hash_ctx *ctx = eb_content_hash_begin("text", 0, 0, "tokenizer");
    uint8_t buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        eb_content_hash_update(ctx, buf, n);
    fclose(f);
    return eb_content_hash_end(&ctx, out);
}

static eb_status qwen3_load(const eb_config *cfg, void **out, char *err, size_t err_len)
{
    const char *dir = eb_config_get(cfg, "qwen3_dir", NULL);
    if (!dir || !*dir) {
        snprintf(err, err_len, "model qwen3 needs a checkpoint directory: set --qwen3-dir DIR "
                               "(tools: mkcheckpoint qwen3-embedding-0.6b DIR --dtype bf16, or a "
                               "Hugging Face download of Qwen/Qwen3-Embedding-0.6B)");
        return EB_ERR_INVALID;
    }
    int64_t threads = 0, max_batch = 32, max_tokens = 512, budget = 4096;
    eb_status st;
    if ((st = eb_config_get_int(cfg, "qwen3_threads", 0, 0, 1024, &threads, err, err_len)) ||
        (st = eb_config_get_int(cfg, "qwen3_max_batch", 32, 1, 4096, &max_batch, err, err_len)) ||
        (st = eb_config_get_int(cfg, "qwen3_max_tokens", 512, 2, 32768, &max_tokens, err, err_len)) ||
        (st = eb_config_get_int(cfg, "qwen3_token_budget", 4096, 2, 1 << 20, &budget, err, err_len)))
        return st;
    if (budget < max_tokens)
        budget = max_tokens; /* the longest text must fit one forward */
    const char *overflow = eb_config_get(cfg, "qwen3_overflow", "error");
    if (strcmp(overflow, "error") != 0 && strcmp(overflow, "truncate") != 0) {
        snprintf(err, err_len, "qwen3_overflow=%s: expected error or truncate", overflow);
        return EB_ERR_INVALID;
    }

    qwen3_state *s = calloc(1, sizeof *s);
    if (!s)
        return EB_ERR_NOMEM;
    s->max_batch = max_batch;
    s->max_tokens = max_tokens;
    s->budget = budget;
    s->tok_options = (eb_tokenizer_options){
        .append_eos = true,
        .max_tokens = (size_t)max_tokens,
        .overflow = overflow[0] == 't' ? EB_TOKENIZER_OVERFLOW_TRUNCATE : EB_TOKENIZER_OVERFLOW_ERROR,
    };

    char tok_path[4096];
    const char *tok_cfg = eb_config_get(cfg, "qwen3_tokenizer", NULL);
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", dir);
    if (tok_cfg)
        snprintf(tok_path, sizeof tok_path, "%s", tok_cfg);
    else if (access(tok_path, R_OK) != 0)
        snprintf(tok_path, sizeof tok_path, "models/qwen3-tokenizer/tokenizer.json");
    s->tokenizer = eb_tokenizer_load(tok_path, err, err_len);
    if (!s->tokenizer) {
        qwen3_destroy(s);
        return EB_ERR_NOT_FOUND;
    }
    s->scratch = eb_tokenizer_scratch_new(s->tokenizer);

    eb_backend_params params = {.n_threads = (int)threads};
    s->backend = eb_backend_create(eb_config_get(cfg, "qwen3_backend", "auto"), &params, err, err_len);
    if (!s->backend) {
        qwen3_destroy(s);
        return EB_ERR_UNAVAILABLE;
    }
    s->checkpoint = eb_checkpoint_open(dir, err, err_len);
    if (!s->checkpoint) {
        qwen3_destroy(s);
        return EB_ERR_NOT_FOUND;
    }
    if ((st = eb_checkpoint_model_rev(s->checkpoint, s->model_rev, err, err_len)) != EB_OK) {
        qwen3_destroy(s);
        return st;
    }
    eb_qwen3_params qp = {.max_batch = max_batch, .max_tokens = max_tokens,
                          .max_total_tokens = budget, .layout = EB_QWEN3_LAYOUT_PACKED};
    s->model = eb_qwen3_load(s->backend, s->checkpoint, &qp, err, err_len);
    if (!s->model) {
        qwen3_destroy(s);
        return EB_ERR_MODEL;
    }
    s->dims = eb_qwen3_get_config(s->model)->hidden;

    /* preproc_rev: the tokenizer's bytes plus the rules that decide the ids */
    uint8_t tok_hash[EB_HASH_LEN], rev[EB_HASH_LEN];
    if ((st = hash_file(tok_path, tok_hash, err, err_len)) != EB_OK) {
        qwen3_destroy(s);
        return st;
    }
    char text[256], hex[2 * EB_HASH_LEN + 1];
    int n = snprintf(text, sizeof text, "qwen3-preproc-1 tokenizer=%s eos=%d max_tokens=%lld overflow=%s",
                     eb_hex(tok_hash, EB_HASH_LEN, hex), eb_tokenizer_eos_id(s->tokenizer),
                     (long long)max_tokens, overflow);
    eb_sha256(text, (size_t)n, rev);
    eb_hex(rev, EB_HASH_LEN, s->preproc_rev);

    s->ids = malloc((size_t)max_batch * (size_t)max_tokens * sizeof *s->ids);
    s->lens = malloc((size_t)max_batch * sizeof *s->lens);
    s->packed = malloc((size_t)budget * sizeof *s->packed);
    s->packed_lens = malloc((size_t)max_batch * sizeof *s->packed_lens);
    s->order = malloc((size_t)max_batch * sizeof *s->order);
    s->vectors = malloc((size_t)max_batch * (size_t)s->dims * sizeof *s->vectors);
    if (!s->ids || !s->lens || !s->packed || !s->packed_lens || !s->order || !s->vectors) {
        qwen3_destroy(s);
        snprintf(err, err_len, "out of memory for token buffers (max batch %lld x %lld tokens)",
                 (long long)max_batch, (long long)max_tokens);
        return EB_ERR_NOMEM;
    }
    snprintf(s->device, sizeof s->device, "%s", s->backend->device);
    *out = s;
    return EB_OK;
}

static void qwen3_describe(const void *p, eb_model_info *info)
{
    const qwen3_state *s = p;
    info->name = "qwen3";
    info->model_rev = s->model_rev;
    info->preproc_rev = s->preproc_rev;
    info->dims = (uint32_t)s->dims;
    info->input = EB_INPUT_TEXT;
    info->max_batch_items = (uint32_t)s->max_batch;
    info->backend = s->backend->name;
    info->device = s->device;
}

static eb_status tokenize(qwen3_state *s, const eb_model_input *in, int32_t *ids, int32_t *len,
                          char *err, size_t err_len)
{
    if (!in->normalize) {
        snprintf(err, err_len, "qwen3 returns L2-normalised vectors only (normalize=false is not "
                               "supported)");
        return EB_ERR_UNSUPPORTED;
    }
    if (in->output_dim && (in->output_dim < 32 || in->output_dim > s->dims)) {
        snprintf(err, err_len, "output_dim %u is outside 32..%lld", in->output_dim, (long long)s->dims);
        return EB_ERR_INVALID;
    }
    size_t n = 0;
    eb_status st;
    if (in->instruction && in->instruction_len)
        st = eb_tokenizer_encode_query(s->tokenizer, s->scratch, in->instruction, in->instruction_len,
                                       (const char *)in->bytes, in->len, &s->tok_options, ids,
                                       (size_t)s->max_tokens, &n, err, err_len);
    else
        st = eb_tokenizer_encode(s->tokenizer, s->scratch, (const char *)in->bytes, in->len,
                                 &s->tok_options, ids, (size_t)s->max_tokens, &n, err, err_len);
    *len = (int32_t)n;
    return st;
}

static eb_status qwen3_run_batch(void *p, const eb_model_input *in, eb_model_output *out, size_t n,
                                 char *err, size_t err_len)
{
    qwen3_state *s = p;
    if ((int64_t)n > s->max_batch) {
        snprintf(err, err_len, "batch of %zu exceeds qwen3_max_batch %lld", n, (long long)s->max_batch);
        return EB_ERR_TOO_LARGE;
    }
    size_t good = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t t0 = eb_now_us();
        eb_status st = tokenize(s, &in[i], s->ids + i * (size_t)s->max_tokens, &s->lens[i],
                                out[i].error, sizeof out[i].error);
        out[i].preprocess_us = eb_now_us() - t0;
        if (st != EB_OK) {
            out[i].status = st;
            out[i].dims = 0;
            continue;
        }
        /* insertion sort by length: batches are small */
        size_t j = good++;
        while (j > 0 && s->lens[s->order[j - 1]] > s->lens[i]) {
            s->order[j] = s->order[j - 1];
            j--;
        }
        s->order[j] = i;
    }
    /* forwards of at most `budget` tokens, shortest texts first */
    for (size_t first = 0; first < good;) {
        size_t count = 0, tokens = 0;
        while (first + count < good) {
            size_t item = s->order[first + count];
            if (count && tokens + (size_t)s->lens[item] > (size_t)s->budget)
                break;
            memcpy(s->packed + tokens, s->ids + item * (size_t)s->max_tokens,
                   (size_t)s->lens[item] * sizeof *s->packed);
            s->packed_lens[count] = s->lens[item];
            tokens += (size_t)s->lens[item];
            count++;
        }
        int64_t t0 = eb_now_us();
        eb_status st = eb_qwen3_embed(s->model, s->packed, s->packed_lens, (int64_t)count, 0,
                                      s->vectors, err, err_len);
        int64_t infer_us = eb_now_us() - t0;
        if (st != EB_OK)
            return st;
        for (size_t k = 0; k < count; k++) {
            size_t i = s->order[first + k];
            uint32_t dims = in[i].output_dim ? in[i].output_dim : (uint32_t)s->dims;
            memcpy(out[i].embedding, s->vectors + k * (size_t)s->dims, dims * sizeof(float));
            if (dims < (uint32_t)s->dims)
                eb_model_l2_normalize(out[i].embedding, dims);
            out[i].dims = dims;
            out[i].status = EB_OK;
            out[i].infer_us = infer_us;
        }
        first += count;
    }
    return EB_OK;
}

/* One short forward loads every code path (CPU); on CUDA the first forwards of each shape
 * happen here rather than on a request. */
static eb_status qwen3_warm_up(void *p, char *err, size_t err_len)
{
    qwen3_state *s = p;
    int32_t ids[2] = {eb_tokenizer_eos_id(s->tokenizer), eb_tokenizer_eos_id(s->tokenizer)};
    int32_t lens[1] = {2};
    return eb_qwen3_embed(s->model, ids, lens, 1, 0, s->vectors, err, err_len);
}

const eb_model_ops eb_model_qwen3_ops = {
    .name = "qwen3",
    .load = qwen3_load,
    .describe = qwen3_describe,
    .warm_up = qwen3_warm_up,
    .run_batch = qwen3_run_batch,
    .destroy = qwen3_destroy,
};
