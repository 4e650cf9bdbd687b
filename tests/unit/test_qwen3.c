/* test_qwen3 — the Qwen3 embedding model on the CPU backend against transformers.
 *
 * The tiny cases of tests/fixtures/qwen3/index.json (tools/reference/qwen3.py) are regenerated
 * with mkcheckpoint and checked byte for byte against the SHA-256 the reference saw, then every
 * text's embedding must be within 1e-4 relative L2 of transformers' — fed the reference's ids,
 * and end to end from the text through our tokenizer. qwen3-tiny has head_dim 32 while
 * hidden/heads is 16, GQA ratio 2, random norm gains and "model."-prefixed names; qwen3-tiny-bias
 * has attention biases, bare names and BF16 storage. Also: results independent of batch
 * composition and layout (packed vs padded) within 1e-5, Matryoshka truncation, config and
 * weight errors, and input validation. The 0.6B layout is in test_qwen3_06b.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "eb_checkpoint.h"
#include "eb_cpu_ops.h"
#include "eb_qwen3.h"
#include "eb_tokenizer.h"
#include "qwen3_fixture.h"

#include <sys/stat.h>

static eb_backend *g_be;
static cJSON *g_index;
static char *g_tmp;
static char g_tiny_dir[4096], g_bias_dir[4096];
static qf_case g_tiny, g_bias;

// Regenerate the checkpoint of a case into dir and check its files.
static int make_case(const qf_case *q, const char *dir)
{
    const cJSON *c = q->json;
    int rc = qf_run_mkcheckpoint(cJSON_GetObjectItem(c, "preset")->valuestring, dir,
                                 cJSON_GetObjectItem(c, "args"));
    if (rc != 0) {
        fprintf(stderr, "mkcheckpoint failed with %d for %s\n", rc, dir);
        return -1;
    }
    return qf_check_files(c, dir) == 0 ? 0 : -1;
}

static int setup(void **state)
{
    (void)state;
    char err[512];
    eb_backend_params p = {.n_threads = 2};
    g_be = eb_cpu_backend_create(&p, err, sizeof(err));
    g_index = qf_load_index();
    g_tmp = eb_test_tmpdir("qwen3");
    if (!g_be || !g_index || !g_tmp) {
        fprintf(stderr, "setup failed: %s\n", !g_be ? err : "no tests/fixtures/qwen3/index.json");
        return -1;
    }
    if (!qf_case_load(g_index, "tiny_f32", &g_tiny) ||
        !qf_case_load(g_index, "tiny_bias_bf16", &g_bias))
        return -1;
    snprintf(g_tiny_dir, sizeof(g_tiny_dir), "%s/tiny", g_tmp);
    snprintf(g_bias_dir, sizeof(g_bias_dir), "%s/tiny-bias", g_tmp);
    if (make_case(&g_tiny, g_tiny_dir) || make_case(&g_bias, g_bias_dir))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    eb_backend_destroy(&g_be);
    cJSON_Delete(g_index);
    qf_case_free(&g_tiny);
    qf_case_free(&g_bias);
    if (g_tmp) {
        eb_test_rmtree(g_tmp);
        free(g_tmp);
    }
    return 0;
}

static eb_qwen3 *load_model(const char *dir, int64_t max_batch, int64_t max_tokens,
                            eb_qwen3_layout layout)
{
    char err[1024] = "";
    eb_checkpoint *ck = eb_checkpoint_open(dir, err, sizeof(err));
    if (!ck)
        fail_msg("%s", err);
    eb_qwen3_params p = {.max_batch = max_batch, .max_tokens = max_tokens, .layout = layout};
    eb_qwen3 *m = eb_qwen3_load(g_be, ck, &p, err, sizeof(err));
    if (!m)
        fail_msg("%s", err);
    // The weights were uploaded: the checkpoint may go before the model.
    eb_checkpoint_close(&ck);
    return m;
}

// Embed texts [first, first + n) of q in one batch into out (n, dim).
static void embed_range(eb_qwen3 *m, const qf_case *q, int first, int n, int64_t dim, float *out)
{
    char err[512] = "";
    eb_status st = eb_qwen3_embed(m, q->ids + q->offs[first], q->lens + first, n, dim, out, err,
                                  sizeof(err));
    if (st != EB_OK)
        fail_msg("embed texts %d..%d: %s", first, first + n - 1, err);
}

// Every text of q in batches of `batch` consecutive texts (the reference's batches when
// batch == 16): out (q->n, hidden).
static void embed_all(eb_qwen3 *m, const qf_case *q, int batch, float *out)
{
    for (int s = 0; s < q->n; s += batch) {
        int n = q->n - s < batch ? q->n - s : batch;
        embed_range(m, q, s, n, 0, out + (size_t)s * (size_t)q->hidden);
    }
}

static void compare_with_reference(const qf_case *q, const float *got, const char *what)
{
    int C = q->hidden;
    double worst = 0;
    int worst_i = 0;
    for (int i = 0; i < q->n; i++) {
        double rel = qf_rel_l2(got + (size_t)i * C, q->emb + (size_t)i * C, (size_t)C);
        if (rel > worst) {
            worst = rel;
            worst_i = i;
        }
        double norm = 0;
        for (int j = 0; j < C; j++)
            norm += (double)got[(size_t)i * C + j] * got[(size_t)i * C + j];
        assert_true(fabs(sqrt(norm) - 1.0) < 1e-5);
    }
    fprintf(stderr, "%s: %d texts, worst relative L2 vs transformers %.3g (text %d, %d tokens)\n",
            what, q->n, worst, worst_i, q->lens[worst_i]);
    if (worst > 1e-4)
        fail_msg("%s: text %d differs from transformers by %.3g relative L2", what, worst_i, worst);
}

static void check_case(const qf_case *q, const char *dir, const char *what)
{
    int max_tokens = cJSON_GetObjectItem(q->json, "max_tokens")->valueint;
    eb_qwen3 *m = load_model(dir, 16, max_tokens, EB_QWEN3_LAYOUT_PACKED);
    const eb_qwen3_config *cfg = eb_qwen3_get_config(m);
    assert_int_equal(cfg->hidden, q->hidden);
    float *got = calloc((size_t)q->n * (size_t)q->hidden, sizeof(float));
    embed_all(m, q, 16, got);
    compare_with_reference(q, got, what);
    free(got);
    eb_qwen3_destroy(&m);
    assert_null(m);
}

static void test_tiny_f32(void **state)
{
    (void)state;
    // The layout the classic mistakes would miss: head_dim from the config, GQA.
    eb_qwen3 *m = load_model(g_tiny_dir, 1, 8, EB_QWEN3_LAYOUT_PACKED);
    const eb_qwen3_config *cfg = eb_qwen3_get_config(m);
    assert_int_equal(cfg->head_dim, 32);
    assert_int_equal(cfg->hidden / cfg->heads, 16);
    assert_int_equal(cfg->heads / cfg->kv_heads, 2);
    assert_true(fabs(cfg->rope_theta - 10000.0) < 1e-9);
    assert_true(fabs(cfg->rms_norm_eps - 1e-5) < 1e-12);
    eb_qwen3_destroy(&m);
    check_case(&g_tiny, g_tiny_dir, "tiny_f32");
}

static void test_tiny_bias_bf16(void **state)
{
    (void)state;
    check_case(&g_bias, g_bias_dir, "tiny_bias_bf16");
}

// Text -> our tokenizer (+ eos) -> model, against the reference's ids and embeddings.
static void test_end_to_end_tokenizer(void **state)
{
    (void)state;
    char path[4096], err[1024] = "";
    eb_test_path(path, sizeof(path), "models/qwen3-tokenizer/tokenizer.json");
    eb_tokenizer *tok = eb_tokenizer_load(path, err, sizeof(err));
    if (!tok)
        fail_msg("%s", err);
    eb_tokenizer_scratch *scratch = eb_tokenizer_scratch_new(tok);
    assert_non_null(scratch);
    const qf_case *q = &g_tiny;
    int max_tokens = cJSON_GetObjectItem(q->json, "max_tokens")->valueint;
    eb_qwen3 *m = load_model(g_tiny_dir, 16, max_tokens, EB_QWEN3_LAYOUT_PACKED);
    const cJSON *texts = cJSON_GetObjectItem(q->json, "texts");
    assert_int_equal(cJSON_GetArraySize(texts), q->n);
    int32_t *ids = malloc((size_t)q->n_ids * sizeof(int32_t));
    int32_t *lens = malloc((size_t)q->n * sizeof(int32_t));
    float *got = calloc((size_t)q->n * (size_t)q->hidden, sizeof(float));
    eb_tokenizer_options opts = {.append_eos = true, .max_tokens = (size_t)max_tokens};
    int64_t at = 0;
    for (int i = 0; i < q->n; i++) {
        const char *t = cJSON_GetArrayItem(texts, i)->valuestring;
        size_t n = 0;
        eb_status st = eb_tokenizer_encode(tok, scratch, t, strlen(t), &opts, ids + at,
                                           (size_t)(q->n_ids - at), &n, err, sizeof(err));
        if (st != EB_OK)
            fail_msg("tokenizing text %d: %s", i, err);
        if ((int)n != q->lens[i] || memcmp(ids + at, q->ids + q->offs[i], n * sizeof(int32_t)))
            fail_msg("text %d: our tokenizer's %zu ids differ from the reference's %d", i, n,
                     q->lens[i]);
        lens[i] = (int32_t)n;
        at += (int64_t)n;
    }
    for (int s = 0; s < q->n; s += 16) {
        int n = q->n - s < 16 ? q->n - s : 16;
        int64_t off = q->offs[s];
        assert_int_equal(eb_qwen3_embed(m, ids + off, lens + s, n, 0,
                                        got + (size_t)s * (size_t)q->hidden, err, sizeof(err)),
                         EB_OK);
    }
    compare_with_reference(q, got, "tiny_f32 end to end");
    free(ids);
    free(lens);
    free(got);
    eb_qwen3_destroy(&m);
    eb_tokenizer_scratch_destroy(&scratch);
    eb_tokenizer_destroy(&tok);
}

// A text's embedding is the same alone, in any batch, and in either layout (within 1e-5).
static void test_batch_invariance(void **state)
{
    (void)state;
    const qf_case *q = &g_tiny;
    int C = q->hidden, max_tokens = cJSON_GetObjectItem(q->json, "max_tokens")->valueint;
    size_t all = (size_t)q->n * (size_t)C;
    eb_qwen3 *packed = load_model(g_tiny_dir, 32, max_tokens, EB_QWEN3_LAYOUT_PACKED);
    eb_qwen3 *padded = load_model(g_tiny_dir, 32, max_tokens, EB_QWEN3_LAYOUT_PADDED);
    float *b16 = malloc(all * sizeof(float)), *b32 = malloc(all * sizeof(float));
    float *p7 = malloc(all * sizeof(float)), *one = malloc((size_t)C * sizeof(float));
    embed_all(packed, q, 16, b16);
    embed_all(packed, q, 32, b32);
    embed_all(padded, q, 7, p7);
    double worst = fmax(qf_max_abs(b16, b32, all), qf_max_abs(b16, p7, all));
    for (int i = 0; i < q->n; i += 9) {
        embed_range(packed, q, i, 1, 0, one);
        worst = fmax(worst, qf_max_abs(one, b16 + (size_t)i * C, (size_t)C));
        embed_range(padded, q, i, 1, 0, one);
        worst = fmax(worst, qf_max_abs(one, b16 + (size_t)i * C, (size_t)C));
    }
    fprintf(stderr, "batch invariance: worst |difference| %.3g\n", worst);
    assert_true(worst <= 1e-5);
    // The padded layout is also right against transformers on its own.
    compare_with_reference(q, p7, "tiny_f32 padded layout, batches of 7");
    free(b16);
    free(b32);
    free(p7);
    free(one);
    eb_qwen3_destroy(&packed);
    eb_qwen3_destroy(&padded);
}

// dim < hidden: the first dim values of the embedding, renormalised.
static void test_output_dim(void **state)
{
    (void)state;
    const qf_case *q = &g_tiny;
    int C = q->hidden, n = 16;
    int max_tokens = cJSON_GetObjectItem(q->json, "max_tokens")->valueint;
    eb_qwen3 *m = load_model(g_tiny_dir, 16, max_tokens, EB_QWEN3_LAYOUT_PACKED);
    static const int dims[] = {32, 48, 64};
    float *got = malloc((size_t)n * (size_t)C * sizeof(float));
    float want[64];
    for (size_t d = 0; d < sizeof(dims) / sizeof(dims[0]); d++) {
        int dim = dims[d];
        embed_range(m, q, 0, n, dim, got);
        for (int i = 0; i < n; i++) {
            double norm = 0;
            for (int j = 0; j < dim; j++)
                norm += (double)q->emb[(size_t)i * C + j] * q->emb[(size_t)i * C + j];
            for (int j = 0; j < dim; j++)
                want[j] = (float)(q->emb[(size_t)i * C + j] / sqrt(norm));
            double rel = qf_rel_l2(got + (size_t)i * dim, want, (size_t)dim);
            if (rel > 1e-4)
                fail_msg("dim %d text %d: %.3g relative L2 from the truncated reference", dim, i,
                         rel);
        }
    }
    char err[512];
    static const int bad[] = {31, 65, -1};
    for (size_t d = 0; d < sizeof(bad) / sizeof(bad[0]); d++) {
        err[0] = '\0';
        assert_int_equal(eb_qwen3_embed(m, q->ids, q->lens, 1, bad[d], got, err, sizeof(err)),
                         EB_ERR_INVALID);
        assert_non_null(strstr(err, "32..64"));
    }
    free(got);
    eb_qwen3_destroy(&m);
}

// Bad inputs are refused with a reason, and nothing is computed from them.
static void test_input_errors(void **state)
{
    (void)state;
    eb_qwen3 *m = load_model(g_tiny_dir, 4, 16, EB_QWEN3_LAYOUT_PACKED);
    const eb_qwen3_params *p = eb_qwen3_get_params(m);
    assert_int_equal(p->max_total_tokens, 64);
    int32_t ids[80];
    for (int i = 0; i < 80; i++)
        ids[i] = 100 + i;
    float out[5 * 64];
    char err[512];
    int32_t lens[5] = {3, 3, 3, 3, 3};
    assert_int_equal(eb_qwen3_embed(m, ids, lens, 5, 0, out, err, sizeof(err)), EB_ERR_TOO_LARGE);
    assert_non_null(strstr(err, "max_batch"));
    assert_int_equal(eb_qwen3_embed(m, ids, lens, 0, 0, out, err, sizeof(err)), EB_ERR_INVALID);
    int32_t long_len[1] = {17};
    assert_int_equal(eb_qwen3_embed(m, ids, long_len, 1, 0, out, err, sizeof(err)),
                     EB_ERR_TOO_LARGE);
    assert_non_null(strstr(err, "17 tokens"));
    int32_t empty[2] = {3, 0};
    assert_int_equal(eb_qwen3_embed(m, ids, empty, 2, 0, out, err, sizeof(err)), EB_ERR_INVALID);
    assert_non_null(strstr(err, "text 1"));
    ids[4] = 151669; // one past the vocabulary
    int32_t two[2] = {3, 3};
    assert_int_equal(eb_qwen3_embed(m, ids, two, 2, 0, out, err, sizeof(err)), EB_ERR_INVALID);
    assert_non_null(strstr(err, "151669"));
    assert_non_null(strstr(err, "text 1"));
    ids[4] = -5;
    assert_int_equal(eb_qwen3_embed(m, ids, two, 2, 0, out, err, sizeof(err)), EB_ERR_INVALID);
    ids[4] = 104;
    assert_int_equal(eb_qwen3_embed(m, ids, two, 2, 0, out, err, sizeof(err)), EB_OK);
    eb_qwen3_destroy(&m);

    // A batch over max_total_tokens is refused even when each text fits.
    char e2[1024];
    eb_checkpoint *ck = eb_checkpoint_open(g_tiny_dir, e2, sizeof(e2));
    assert_non_null(ck);
    eb_qwen3_params pp = {.max_batch = 4, .max_tokens = 16, .max_total_tokens = 20};
    m = eb_qwen3_load(g_be, ck, &pp, e2, sizeof(e2));
    assert_non_null(m);
    int32_t three[3] = {8, 8, 8};
    assert_int_equal(eb_qwen3_embed(m, ids, three, 3, 0, out, err, sizeof(err)),
                     EB_ERR_TOO_LARGE);
    assert_non_null(strstr(err, "max_total_tokens"));
    eb_qwen3_destroy(&m);
    // max_tokens beyond max_position_embeddings (512 in qwen3-tiny) is refused at load.
    pp.max_tokens = 513;
    assert_null(eb_qwen3_load(g_be, ck, &pp, e2, sizeof(e2)));
    assert_non_null(strstr(e2, "max_position_embeddings"));
    eb_checkpoint_close(&ck);
}

/* ---- checkpoint and config errors ------------------------------------------------------------- */

static char *read_text(const char *path)
{
    size_t len = 0;
    uint8_t *t = eb_test_read_file(path, &len);
    assert_non_null(t);
    char *s = realloc(t, len + 1);
    s[len] = '\0';
    return s;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

// A copy of the tiny checkpoint in dir/<name> whose config.json has `from` replaced by `to`
// (from == NULL: unchanged). Returns the directory (static buffer).
static const char *variant(const char *name, const char *from, const char *to)
{
    static char dir[4096];
    char src[4200], dst[4200];
    snprintf(dir, sizeof(dir), "%s/%s", g_tmp, name);
    mkdir(dir, 0700);
    snprintf(src, sizeof(src), "%s/model.safetensors", g_tiny_dir);
    snprintf(dst, sizeof(dst), "%s/model.safetensors", dir);
    unlink(dst);
    assert_int_equal(symlink(src, dst), 0);
    snprintf(src, sizeof(src), "%s/config.json", g_tiny_dir);
    char *cfg = read_text(src);
    if (from) {
        char *at = strstr(cfg, from);
        assert_non_null(at);
        size_t out_len = strlen(cfg) - strlen(from) + strlen(to) + 1;
        char *out = malloc(out_len);
        snprintf(out, out_len, "%.*s%s%s", (int)(at - cfg), cfg, to, at + strlen(from));
        free(cfg);
        cfg = out;
    }
    snprintf(dst, sizeof(dst), "%s/config.json", dir);
    write_text(dst, cfg);
    free(cfg);
    return dir;
}

// Loading `dir` fails with an error containing every one of the NULL-terminated needles.
static void expect_load_error(const char *dir, ...)
{
    char err[1024] = "";
    eb_checkpoint *ck = eb_checkpoint_open(dir, err, sizeof(err));
    eb_qwen3 *m = NULL;
    if (ck) {
        eb_qwen3_params p = {.max_batch = 2, .max_tokens = 16};
        m = eb_qwen3_load(g_be, ck, &p, err, sizeof(err));
        eb_checkpoint_close(&ck);
    }
    if (m) {
        eb_qwen3_destroy(&m);
        fail_msg("loading %s succeeded but should have failed", dir);
    }
    va_list ap;
    va_start(ap, dir);
    const char *needle;
    while ((needle = va_arg(ap, const char *)) != NULL)
        if (!strstr(err, needle))
            fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
    va_end(ap);
}

static void test_config_errors(void **state)
{
    (void)state;
    // Sanity: the unchanged copy loads.
    eb_qwen3 *m = load_model(variant("same", NULL, NULL), 1, 4, EB_QWEN3_LAYOUT_PACKED);
    eb_qwen3_destroy(&m);
    expect_load_error(variant("llama", "\"qwen3\"", "\"llama\""), "llama", NULL);
    expect_load_error(variant("gelu", "\"silu\"", "\"gelu\""), "hidden_act", "gelu", NULL);
    expect_load_error(variant("yarn", "\"rope_scaling\": null",
                              "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}"),
                      "yarn", NULL);
    expect_load_error(variant("sliding", "\"use_sliding_window\": false",
                              "\"use_sliding_window\": true"),
                      "sliding", NULL);
    expect_load_error(variant("kv3", "\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"),
                      "num_key_value_heads 3", NULL);
    expect_load_error(variant("heads", "\"hidden_size\": 64", "\"hidden_size\": \"64\""),
                      "hidden_size", NULL);
}

static void test_weight_errors(void **state)
{
    (void)state;
    // head_dim taken as hidden/heads (the classic mistake) does not match the weights: q_proj
    // is (4*32, 64), not (4*16, 64).
    expect_load_error(variant("hd16", "\"head_dim\": 32", "\"head_dim\": 16"),
                      "model.layers.0.self_attn.q_proj.weight", "[128, 64]", "[64, 64]", NULL);
    // A third layer the file does not have: the missing tensor is named.
    expect_load_error(variant("layers3", "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"),
                      "model.layers.2.input_layernorm.weight", "not found", NULL);
    // attention_bias true without bias tensors.
    expect_load_error(variant("bias", "\"attention_bias\": false", "\"attention_bias\": true"),
                      "model.layers.0.self_attn.q_proj.bias", "not found", NULL);
    // vocab_size larger than the table.
    expect_load_error(variant("vocab", "\"vocab_size\": 151669", "\"vocab_size\": 151936"),
                      "model.embed_tokens.weight", NULL);
    // A truncated weights file.
    const char *dir = variant("trunc", NULL, NULL);
    char path[4200], src[4200];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    snprintf(src, sizeof(src), "%s/model.safetensors", g_tiny_dir);
    unlink(path);
    size_t len = 0;
    uint8_t *bytes = eb_test_read_file(src, &len);
    assert_non_null(bytes);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, len / 2, f), len / 2);
    fclose(f);
    free(bytes);
    expect_load_error(dir, "model.safetensors", NULL);
}

// model_rev comes from the checkpoint: 64 hex digits, different for different weights.
static void test_model_rev(void **state)
{
    (void)state;
    char err[1024], r1[EB_REV_LEN], r2[EB_REV_LEN];
    eb_checkpoint *a = eb_checkpoint_open(g_tiny_dir, err, sizeof(err));
    eb_checkpoint *b = eb_checkpoint_open(g_bias_dir, err, sizeof(err));
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(eb_checkpoint_model_rev(a, r1, err, sizeof(err)), EB_OK);
    assert_int_equal(eb_checkpoint_model_rev(b, r2, err, sizeof(err)), EB_OK);
    assert_int_equal(strlen(r1), 64);
    assert_string_not_equal(r1, r2);
    eb_checkpoint_close(&a);
    eb_checkpoint_close(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_f32),
        cmocka_unit_test(test_tiny_bias_bf16),
        cmocka_unit_test(test_end_to_end_tokenizer),
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_output_dim),
        cmocka_unit_test(test_input_errors),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_weight_errors),
        cmocka_unit_test(test_model_rev),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
