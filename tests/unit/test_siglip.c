/* test_siglip — the SigLIP vision tower on the CPU backend against transformers.
 *
 * Each case of tests/fixtures/siglip/index.json (tiny ones here; the base model is in
 * test_siglip_base.c) is regenerated with mkcheckpoint, its files checked byte for byte against
 * the SHA-256 the reference saw, then loaded and run: pooler_output must be within 1e-4 relative
 * L2 of transformers' for every input. The cases cover bare and full checkpoints, F32, BF16 and
 * F16 storage, and a sharded index. Also: batch invariance, config errors, preproc_rev. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "eb_checkpoint.h"
#include "eb_cpu_ops.h"
#include "eb_resize.h"
#include "eb_siglip.h"
#include "siglip_fixture.h"

typedef struct loaded {
    char *dir;
    eb_checkpoint *ck;
    eb_siglip *model;
    float *pixels;
    int n_inputs;
    const cJSON *c;
} loaded;

static eb_backend *g_be;
static cJSON *g_index;

static int setup(void **state)
{
    (void)state;
    char err[512];
    eb_backend_params p = {.n_threads = 2};
    g_be = eb_cpu_backend_create(&p, err, sizeof(err));
    g_index = sf_load_index();
    if (!g_be || !g_index) {
        fprintf(stderr, "setup failed: %s\n", g_be ? "no tests/fixtures/siglip/index.json" : err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    eb_backend_destroy(&g_be);
    cJSON_Delete(g_index);
    return 0;
}

// Regenerate the case's checkpoint, check its bytes, load it with max_batch.
static void load_case(const char *name, int64_t max_batch, loaded *L)
{
    memset(L, 0, sizeof(*L));
    L->c = sf_find_case(g_index, name);
    assert_non_null(L->c);
    L->dir = eb_test_tmpdir("siglip");
    assert_non_null(L->dir);
    char ck_dir[4096];
    snprintf(ck_dir, sizeof(ck_dir), "%s/ckpt", L->dir);
    const cJSON *c = L->c;
    assert_int_equal(sf_run_mkcheckpoint(cJSON_GetObjectItem(c, "preset")->valuestring, ck_dir,
                                         cJSON_GetObjectItem(c, "args")),
                     0);
    assert_int_equal(sf_check_files(c, ck_dir), 0);
    char err[1024] = "";
    L->ck = eb_checkpoint_open(ck_dir, err, sizeof(err));
    if (!L->ck)
        fail_msg("%s", err);
    L->model = eb_siglip_load(g_be, L->ck, max_batch, err, sizeof(err));
    if (!L->model)
        fail_msg("%s", err);
    int size = cJSON_GetObjectItem(c, "image_size")->valueint;
    L->n_inputs = sf_load_inputs(c, size, &L->pixels);
    assert_true(L->n_inputs > 0);
}

static void unload(loaded *L)
{
    eb_siglip_destroy(&L->model);
    eb_checkpoint_close(&L->ck);
    free(L->pixels);
    if (L->dir) {
        eb_test_rmtree(L->dir);
        free(L->dir);
    }
}

static void check_case(const char *name)
{
    loaded L;
    load_case(name, 16, &L);
    const eb_siglip_config *cfg = eb_siglip_get_config(L.model);
    int64_t C = cfg->hidden;
    assert_int_equal(C, cJSON_GetObjectItem(L.c, "hidden_size")->valueint);
    int n = L.n_inputs;
    assert_true(n <= 16);
    float *ref = sf_load_pooled(L.c, (size_t)(n * C));
    assert_non_null(ref);
    float *pooled = calloc((size_t)(n * C), sizeof(float));
    float *normed = calloc((size_t)(n * C), sizeof(float));
    char err[512] = "";
    eb_status st = eb_siglip_embed(L.model, L.pixels, n, pooled, normed, err, sizeof(err));
    if (st != EB_OK)
        fail_msg("%s", err);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double rel = sf_rel_l2(pooled + i * C, ref + i * C, (size_t)C);
        worst = rel > worst ? rel : worst;
        if (rel > 1e-4)
            fail_msg("%s input %d: pooler_output differs from transformers by %.3g relative L2",
                     name, i, rel);
        // The embedding is pooled / ||pooled||.
        double norm = 0;
        for (int64_t j = 0; j < C; j++)
            norm += (double)pooled[i * C + j] * pooled[i * C + j];
        norm = sqrt(norm);
        for (int64_t j = 0; j < C; j++)
            assert_float_equal(normed[i * C + j], pooled[i * C + j] / norm, 1e-6);
    }
    fprintf(stderr, "%s: %d inputs, worst relative L2 vs transformers %.3g\n", name, n, worst);
    // Different inputs give different embeddings (the model is not ignoring its input).
    if (n >= 2)
        assert_true(sf_rel_l2(pooled, pooled + C, (size_t)C) > 1e-3);
    free(pooled);
    free(normed);
    free(ref);
    unload(&L);
}

static void test_tiny_f32(void **state)
{
    (void)state;
    check_case("tiny_f32");
}

static void test_tiny_full_bf16(void **state)
{
    (void)state;
    check_case("tiny_full_bf16");
}

static void test_tiny_sharded_f16(void **state)
{
    (void)state;
    check_case("tiny_sharded_f16");
}

// An image's embedding is the same alone as inside a batch of 32 (other images around it).
static void test_batch_invariance(void **state)
{
    (void)state;
    loaded L;
    load_case("tiny_f32", 32, &L);
    const eb_siglip_config *cfg = eb_siglip_get_config(L.model);
    int64_t C = cfg->hidden, S = cfg->image_size;
    size_t per = (size_t)(3 * S * S);
    float *batch = malloc(per * 32 * sizeof(float));
    for (int i = 0; i < 32; i++)
        memcpy(batch + per * (size_t)i, L.pixels + per * (size_t)((i * 5 + 3) % L.n_inputs),
               per * sizeof(float));
    float *big = malloc((size_t)(32 * C) * sizeof(float));
    float *one = malloc((size_t)C * sizeof(float));
    char err[512];
    assert_int_equal(eb_siglip_embed(L.model, batch, 32, NULL, big, err, sizeof(err)), EB_OK);
    for (int i = 0; i < 32; i += 7) {
        assert_int_equal(
            eb_siglip_embed(L.model, batch + per * (size_t)i, 1, NULL, one, err, sizeof(err)),
            EB_OK);
        for (int64_t j = 0; j < C; j++)
            assert_float_equal(one[j], big[i * C + j], 1e-6);
    }
    // Batch sizes outside 1..max_batch are refused with a reason.
    assert_int_equal(eb_siglip_embed(L.model, batch, 33, NULL, big, err, sizeof(err)),
                     EB_ERR_TOO_LARGE);
    assert_non_null(strstr(err, "33"));
    assert_int_equal(eb_siglip_embed(L.model, batch, 0, NULL, big, err, sizeof(err)),
                     EB_ERR_INVALID);
    free(batch);
    free(big);
    free(one);
    unload(&L);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

// Loading fails with a message naming the key or tensor when config and weights disagree.
static void test_config_errors(void **state)
{
    (void)state;
    char *dir = eb_test_tmpdir("siglip-cfg");
    assert_non_null(dir);
    cJSON *args = cJSON_CreateArray();
    assert_int_equal(sf_run_mkcheckpoint("siglip-tiny", dir, args), 0);
    cJSON_Delete(args);
    static const struct {
        const char *config;
        const char *expect[2];
    } cases[] = {
        // More layers than the checkpoint holds: the first missing tensor is named.
        {"{\"model_type\":\"siglip_vision_model\",\"hidden_size\":64,\"image_size\":64,"
         "\"intermediate_size\":256,\"num_attention_heads\":4,\"num_hidden_layers\":3,"
         "\"patch_size\":16}",
         {"vision_model.encoder.layers.2.", "not found"}},
        // Wrong MLP width: shape mismatch with both shapes.
        {"{\"model_type\":\"siglip_vision_model\",\"hidden_size\":64,\"image_size\":64,"
         "\"intermediate_size\":128,\"num_attention_heads\":4,\"num_hidden_layers\":2,"
         "\"patch_size\":16}",
         {"[256, 64]", "[128, 64]"}},
        {"{\"hidden_size\":64,\"hidden_act\":\"relu\"}", {"hidden_act", "relu"}},
        {"{\"hidden_size\":64,\"num_attention_heads\":5}", {"hidden_size 64", "5"}},
        {"{\"hidden_size\":\"big\"}", {"hidden_size", "\"big\""}},
        {"{\"vision_config\":{\"hidden_size\":64,\"vision_use_head\":false}}",
         {"vision_use_head", "pooler_output"}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_file(dir, "config.json", cases[i].config);
        char err[1024] = "";
        eb_checkpoint *ck = eb_checkpoint_open(dir, err, sizeof(err));
        assert_non_null(ck);
        eb_siglip *m = eb_siglip_load(g_be, ck, 2, err, sizeof(err));
        assert_null(m);
        for (int k = 0; k < 2; k++)
            if (!strstr(err, cases[i].expect[k]))
                fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, err, cases[i].expect[k]);
        eb_checkpoint_close(&ck);
    }
    eb_test_rmtree(dir);
    free(dir);
}

static void test_preproc_rev(void **state)
{
    (void)state;
    char *dir = eb_test_tmpdir("siglip-pre");
    assert_non_null(dir);
    cJSON *args = cJSON_CreateArray();
    assert_int_equal(sf_run_mkcheckpoint("siglip-tiny", dir, args), 0);
    cJSON_Delete(args);
    char err[512];
    eb_checkpoint *ck = eb_checkpoint_open(dir, err, sizeof(err));
    assert_non_null(ck);
    eb_image_preproc p, d;
    assert_int_equal(eb_checkpoint_image_preproc(ck, 64, &p, err, sizeof(err)), EB_OK);
    assert_int_equal(p.width, 64);
    assert_int_equal(p.height, 64);
    assert_int_equal(p.resample, EB_RESAMPLE_BICUBIC);
    assert_float_equal(p.mean[1], 0.5f, 0);
    assert_float_equal(p.std[2], 0.5f, 0);
    assert_float_equal(p.rescale_factor, 1.0 / 255.0, 1e-15);
    // Without a preprocessor_config.json the defaults are the same values.
    assert_int_equal(eb_checkpoint_image_preproc(NULL, 64, &d, err, sizeof(err)), EB_OK);
    char r1[EB_REV_LEN], r2[EB_REV_LEN], r3[EB_REV_LEN], r4[EB_REV_LEN];
    eb_image_preproc_rev(&p, "pillow-bicubic-1", r1);
    eb_image_preproc_rev(&d, "pillow-bicubic-1", r2);
    assert_string_equal(r1, r2);
    assert_int_equal(strlen(r1), 64);
    eb_image_preproc_rev(&p, "pillow-bicubic-2", r3);
    assert_string_not_equal(r1, r3);
    eb_image_preproc_rev(&p, NULL, r3);
    eb_image_preproc_rev(&p, EB_RESIZE_VERSION, r4);
    assert_string_equal(r3, r4);
    d.mean[0] = 0.48145466f;
    eb_image_preproc_rev(&d, "pillow-bicubic-1", r4);
    assert_string_not_equal(r1, r4);
    // A filter we do not implement is refused.
    write_file(dir, "preprocessor_config.json", "{\"resample\": 2}");
    eb_checkpoint_close(&ck);
    ck = eb_checkpoint_open(dir, err, sizeof(err));
    assert_non_null(ck);
    assert_int_equal(eb_checkpoint_image_preproc(ck, 64, &p, err, sizeof(err)),
                     EB_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "resample 2"));
    eb_checkpoint_close(&ck);
    eb_test_rmtree(dir);
    free(dir);
}

int main(int argc, char **argv)
{
    (void)argc;
    eb_cpu_blas_ensure_coretype(argv); // fast OpenBLAS kernels on CPUs it does not know
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_f32),
        cmocka_unit_test(test_tiny_full_bf16),
        cmocka_unit_test(test_tiny_sharded_f16),
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_preproc_rev),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
