/* Tests of the model registry (eb_model) and the test-only identity model (eb_model_identity).
 * Expected values were computed independently with Python's hashlib:
 *   d = sha256(b"abc"); block_k = sha256(d + struct.pack("<I", k)); v_j = (byte_j - 127.5)/127.5 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eb_config.h"
#include "eb_model.h"
#include "eb_model_identity.h"
#include "eb_test.h"

static void test_embed_matches_python_reference(void **state)
{
    (void)state;
    float v[70];
    eb_model_identity_embed("abc", 3, 70, false, v);
    /* bytes 0, 1, 31 of block 0; 0, 1 of block 1; 0 and 5 of block 2 */
    const int idx[] = {0, 1, 31, 32, 33, 64, 69};
    const int bytes[] = {124, 155, 212, 254, 131, 52, 67};
    for (size_t i = 0; i < sizeof idx / sizeof idx[0]; i++)
        assert_float_equal(v[idx[i]], (bytes[i] - 127.5f) / 127.5f, 1e-6);
    float n[70];
    eb_model_identity_embed("abc", 3, 70, true, n);
    assert_float_equal(n[0], -0.006089991913105109, 1e-6);
    assert_float_equal(n[69], -0.10526986021224545, 1e-6);
    double sum = 0;
    for (int i = 0; i < 70; i++)
        sum += (double)n[i] * n[i];
    assert_float_equal(sum, 1.0, 1e-5);
}

static void test_registry(void **state)
{
    (void)state;
    assert_non_null(eb_model_find("identity"));
    assert_non_null(eb_model_find("identity-text"));
    assert_null(eb_model_find("nope"));
    /* duplicate and invalid registrations are refused */
    assert_int_equal(eb_model_register(&eb_model_identity_ops), EB_ERR_BUSY);
    eb_model_ops bad = eb_model_identity_ops;
    bad.name = "Bad Name";
    assert_int_equal(eb_model_register(&bad), EB_ERR_INVALID);
    char err[512];
    eb_config *cfg = eb_config_new();
    assert_null(eb_model_load("nope", cfg, err, sizeof err));
    assert_non_null(strstr(err, "unknown model \"nope\""));
    assert_non_null(strstr(err, "identity"));
    eb_config_destroy(&cfg);
    assert_true(eb_model_accepts(EB_INPUT_IMAGE, EB_INPUT_RAW_RGB8));
    assert_true(eb_model_accepts(EB_INPUT_IMAGE, EB_INPUT_IMAGE));
    assert_false(eb_model_accepts(EB_INPUT_IMAGE, EB_INPUT_TEXT));
    assert_false(eb_model_accepts(EB_INPUT_TEXT, EB_INPUT_IMAGE));
}

static void test_load_describe_run(void **state)
{
    (void)state;
    char err[512];
    eb_config *cfg = eb_config_new();
    char *dir = eb_test_tmpdir("identity");
    assert_non_null(dir);
    char log_path[4200];
    snprintf(log_path, sizeof log_path, "%s/items.log", dir);
    assert_int_equal(eb_config_set(cfg, "identity_dims", "40", EB_CONFIG_FLAG), EB_OK);
    assert_int_equal(eb_config_set(cfg, "identity_log_file", log_path, EB_CONFIG_FLAG), EB_OK);
    eb_model *m = eb_model_load("identity", cfg, err, sizeof err);
    assert_non_null(m);
    assert_string_equal(m->info.name, "identity");
    assert_int_equal(m->info.dims, 40);
    assert_int_equal(m->info.input, EB_INPUT_IMAGE);
    assert_int_equal(m->info.max_batch_items, 32);
    assert_false(m->warm);
    assert_int_equal(eb_model_warm_up(m, err, sizeof err), EB_OK);
    assert_true(m->warm);

    const char *a = "hello", *b = EB_MODEL_IDENTITY_FAIL_PREFIX " please";
    eb_model_input in[3] = {
        {.kind = EB_INPUT_IMAGE, .bytes = (const uint8_t *)a, .len = 5, .normalize = true},
        {.kind = EB_INPUT_IMAGE, .bytes = (const uint8_t *)b, .len = strlen(b), .normalize = true},
        {.kind = EB_INPUT_IMAGE, .bytes = (const uint8_t *)a, .len = 5, .normalize = true,
         .output_dim = 8},
    };
    float emb[3][40];
    eb_model_output out[3];
    memset(out, 0, sizeof out);
    for (int i = 0; i < 3; i++)
        out[i].embedding = emb[i];
    assert_int_equal(m->ops->run_batch(m->state, in, out, 3, err, sizeof err), EB_OK);
    assert_int_equal(out[0].status, EB_OK);
    assert_int_equal(out[0].dims, 40);
    float want[40];
    eb_model_identity_embed(a, 5, 40, true, want);
    assert_memory_equal(emb[0], want, sizeof want);
    /* the bad item fails alone */
    assert_int_equal(out[1].status, EB_ERR_MODEL);
    assert_int_equal(out[1].dims, 0);
    assert_non_null(strstr(out[1].error, "on purpose"));
    /* output_dim truncates, then normalises the 8 values */
    assert_int_equal(out[2].dims, 8);
    float want8[8];
    eb_model_identity_embed(a, 5, 8, true, want8);
    assert_memory_equal(emb[2], want8, sizeof want8);
    assert_true(fabsf(emb[2][0] - want[0]) > 1e-7f); /* renormalised over 8, not 40 */
    assert_int_equal(eb_model_identity_processed(m->state), 3);
    eb_model_destroy(&m);
    assert_null(m);

    size_t len = 0;
    uint8_t *log = eb_test_read_file(log_path, &len);
    assert_non_null(log);
    /* three lines of 64 hex digits; the first is sha256("hello") */
    assert_int_equal(len, 3 * 65);
    assert_memory_equal(log, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", 64);
    free(log);
    eb_test_rmtree(dir);
    free(dir);

    eb_config_set(cfg, "identity_dims", "0", EB_CONFIG_FLAG);
    assert_null(eb_model_load("identity", cfg, err, sizeof err));
    assert_non_null(strstr(err, "identity_dims"));
    eb_config_destroy(&cfg);
}

static void test_text_variant(void **state)
{
    (void)state;
    char err[256];
    eb_config *cfg = eb_config_new();
    eb_model *m = eb_model_load("identity-text", cfg, err, sizeof err);
    assert_non_null(m);
    assert_int_equal(m->info.input, EB_INPUT_TEXT);
    assert_int_equal(m->info.dims, 64);
    eb_model_destroy(&m);
    eb_config_destroy(&cfg);
}

/* The canary (eb_model.h): a steady model passes its checks; a model that silently starts
 * computing something else (identity_corrupt_after, the test-only drift) fails the next one. */
static void test_canary_catches_drift(void **state)
{
    (void)state;
    char err[512] = "";
    eb_config *cfg = eb_config_new();
    eb_model *steady = eb_model_load("identity", cfg, err, sizeof err);
    assert_non_null(steady);
    assert_int_equal(eb_model_canary_record(steady, err, sizeof err), EB_OK);
    assert_non_null(steady->canary);
    assert_int_equal(steady->canary_dims, 64);
    double distance = -1;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(eb_model_canary_check(steady, 1e-5, &distance, err, sizeof err), EB_OK);
        assert_true(distance == 0.0);
    }

    eb_config_set(cfg, "identity_corrupt_after", "2", EB_CONFIG_FLAG);
    eb_model *drifting = eb_model_load("identity", cfg, err, sizeof err);
    assert_non_null(drifting);
    assert_int_equal(eb_model_canary_record(drifting, err, sizeof err), EB_OK);       /* item 0 */
    assert_int_equal(eb_model_canary_check(drifting, 1e-5, &distance, err, sizeof err), EB_OK); /* 1 */
    assert_int_equal(eb_model_canary_check(drifting, 1e-5, &distance, err, sizeof err),
                     EB_ERR_MODEL); /* item 2: drifted */
    assert_true(distance > 0.1);
    assert_non_null(strstr(err, "canary vector moved"));
    eb_model_destroy(&steady);
    eb_model_destroy(&drifting);
    eb_config_destroy(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embed_matches_python_reference),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_load_describe_run),
        cmocka_unit_test(test_text_variant),
        cmocka_unit_test(test_canary_catches_drift),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
