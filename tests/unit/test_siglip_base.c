/* test_siglip_base — the google/siglip-base-patch16-224 layout against transformers.
 *
 * mkcheckpoint writes the base checkpoint (~370 MB F32, seeded; the config is as sparse as the
 * published one, so every default of the loader is exercised) into a temporary directory; the
 * files must match the SHA-256 the reference saw, and pooler_output for two inputs must be within
 * 1e-4 relative L2 of transformers'. The checkpoint is deleted afterwards. Also checks model_rev
 * on a real-size checkpoint: stable across loads, and served from the cache the second time. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "eb_checkpoint.h"
#include "eb_clock.h"
#include "eb_cpu_ops.h"
#include "eb_siglip.h"
#include "siglip_fixture.h"

static void test_base(void **state)
{
    (void)state;
    cJSON *index = sf_load_index();
    assert_non_null(index);
    const cJSON *c = sf_find_case(index, "base_f32");
    assert_non_null(c);
    char *dir = eb_test_tmpdir("siglip-base");
    assert_non_null(dir);
    char ck_dir[4096];
    snprintf(ck_dir, sizeof(ck_dir), "%s/ckpt", dir);
    int64_t t0 = eb_now_us();
    assert_int_equal(sf_run_mkcheckpoint(cJSON_GetObjectItem(c, "preset")->valuestring, ck_dir,
                                         cJSON_GetObjectItem(c, "args")),
                     0);
    int64_t t1 = eb_now_us();
    assert_int_equal(sf_check_files(c, ck_dir), 0);

    char err[1024] = "";
    eb_backend_params bp = {.n_threads = 2};
    eb_backend *be = eb_cpu_backend_create(&bp, err, sizeof(err));
    assert_non_null(be);
    int64_t t2 = eb_now_us();
    eb_checkpoint *ck = eb_checkpoint_open(ck_dir, err, sizeof(err));
    if (!ck)
        fail_msg("%s", err);
    char rev1[EB_REV_LEN], rev2[EB_REV_LEN];
    assert_int_equal(eb_checkpoint_model_rev(ck, rev1, err, sizeof(err)), EB_OK);
    int64_t t3 = eb_now_us();
    eb_siglip *m = eb_siglip_load(be, ck, 2, err, sizeof(err));
    if (!m)
        fail_msg("%s", err);
    int64_t t4 = eb_now_us();
    const eb_siglip_config *cfg = eb_siglip_get_config(m);
    assert_int_equal(cfg->hidden, 768);
    assert_int_equal(cfg->layers, 12);
    assert_int_equal(cfg->tokens, 196);
    assert_float_equal(cfg->layer_norm_eps, 1e-6, 0);

    float *pixels = NULL;
    int n = sf_load_inputs(c, 224, &pixels);
    assert_int_equal(n, 2);
    float *ref = sf_load_pooled(c, 2 * 768);
    assert_non_null(ref);
    float pooled[2 * 768], normed[2 * 768];
    assert_int_equal(eb_siglip_embed(m, pixels, 2, pooled, normed, err, sizeof(err)), EB_OK);
    int64_t t5 = eb_now_us();
    // Batch 1 alone, also against the reference.
    float one[768], one_normed[768];
    assert_int_equal(
        eb_siglip_embed(m, pixels + 3 * 224 * 224, 1, one, one_normed, err, sizeof(err)), EB_OK);
    int64_t t6 = eb_now_us();
    // Batch invariance at the base shapes: alone == second of a batch of two.
    for (int j = 0; j < 768; j++)
        assert_float_equal(one_normed[j], normed[768 + j], 1e-6);
    for (int i = 0; i < 2; i++) {
        double rel = sf_rel_l2(pooled + i * 768, ref + i * 768, 768);
        fprintf(stderr, "base input %d: relative L2 vs transformers %.3g\n", i, rel);
        assert_true(rel <= 1e-4);
    }
    assert_true(sf_rel_l2(one, ref + 768, 768) <= 1e-4);
    fprintf(stderr,
            "base timings: mkcheckpoint %.2f s, open+model_rev %.2f s, load %.2f s, "
            "batch-2 forward %.0f ms, batch-1 forward %.0f ms (%d threads)\n",
            (t1 - t0) / 1e6, (t3 - t2) / 1e6, (t4 - t3) / 1e6, (t5 - t4) / 1e3, (t6 - t5) / 1e3,
            be->n_threads);

    // The second open takes the revision from the cache beside the checkpoint.
    eb_checkpoint_close(&ck);
    ck = eb_checkpoint_open(ck_dir, err, sizeof(err));
    assert_non_null(ck);
    int64_t t7 = eb_now_us();
    assert_int_equal(eb_checkpoint_model_rev(ck, rev2, err, sizeof(err)), EB_OK);
    int64_t t8 = eb_now_us();
    assert_string_equal(rev1, rev2);
    fprintf(stderr, "model_rev from cache in %.1f ms\n", (t8 - t7) / 1e3);

    eb_siglip_destroy(&m);
    eb_checkpoint_close(&ck);
    eb_backend_destroy(&be);
    free(pixels);
    free(ref);
    eb_test_rmtree(dir);
    free(dir);
    cJSON_Delete(index);
}

int main(int argc, char **argv)
{
    (void)argc;
    eb_cpu_blas_ensure_coretype(argv); // fast OpenBLAS kernels on CPUs it does not know
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
