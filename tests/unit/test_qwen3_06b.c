/* test_qwen3_06b — the Qwen3-Embedding-0.6B layout (28 layers, hidden 1024, 16 heads, 8 KV
 * heads, head_dim 128, vocab 151669, BF16 as published) on the CPU backend against transformers,
 * for the handful of texts of case "e06b_bf16" in tests/fixtures/qwen3/index.json.
 *
 * Regenerating the 1.2 GB checkpoint takes mkcheckpoint about 1.5 minutes on two busy cores, so
 * this test runs only when asked:
 *   EMBROKER_SLOW_TESTS=1            regenerate it into a temporary directory (deleted after);
 *   EMBROKER_QWEN3_06B_DIR=/path     use a checkpoint already there (its SHA-256 must match the
 *                                    fixture's; e.g. from tools/reference/qwen3.py --keep-dir);
 * otherwise it exits 77 (skipped) saying so. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "eb_checkpoint.h"
#include "eb_cpu_ops.h"
#include "eb_qwen3.h"
#include "qwen3_fixture.h"

static void test_e06b(void **state)
{
    (void)state;
    cJSON *index = qf_load_index();
    assert_non_null(index);
    qf_case q;
    assert_true(qf_case_load(index, "e06b_bf16", &q));
    const char *given = getenv("EMBROKER_QWEN3_06B_DIR");
    char *tmp = NULL;
    char dir[4096];
    if (given && *given) {
        snprintf(dir, sizeof(dir), "%s", given);
    } else {
        tmp = eb_test_tmpdir("qwen3-06b");
        assert_non_null(tmp);
        snprintf(dir, sizeof(dir), "%s/ckpt", tmp);
        assert_int_equal(qf_run_mkcheckpoint(cJSON_GetObjectItem(q.json, "preset")->valuestring,
                                             dir, cJSON_GetObjectItem(q.json, "args")),
                         0);
    }
    assert_int_equal(qf_check_files(q.json, dir), 0);

    char err[1024] = "";
    eb_backend_params bp = {.n_threads = 2};
    eb_backend *be = eb_cpu_backend_create(&bp, err, sizeof(err));
    assert_non_null(be);
    eb_checkpoint *ck = eb_checkpoint_open(dir, err, sizeof(err));
    if (!ck)
        fail_msg("%s", err);
    eb_qwen3_params p = {.max_batch = q.n, .max_tokens = 128};
    eb_qwen3 *m = eb_qwen3_load(be, ck, &p, err, sizeof(err));
    if (!m)
        fail_msg("%s", err);
    eb_checkpoint_close(&ck);
    if (tmp) { // the weights are uploaded: the 1.2 GB file can go now
        eb_test_rmtree(tmp);
        free(tmp);
        tmp = NULL;
    }
    const eb_qwen3_config *c = eb_qwen3_get_config(m);
    assert_int_equal(c->hidden, 1024);
    assert_int_equal(c->layers, 28);
    assert_int_equal(c->head_dim, 128);
    assert_int_equal(c->kv_heads, 8);
    float *got = calloc((size_t)q.n * 1024, sizeof(float));
    assert_int_equal(eb_qwen3_embed(m, q.ids, q.lens, q.n, 0, got, err, sizeof(err)), EB_OK);
    double worst = 0;
    for (int i = 0; i < q.n; i++) {
        double rel = qf_rel_l2(got + (size_t)i * 1024, q.emb + (size_t)i * 1024, 1024);
        fprintf(stderr, "e06b text %d (%d tokens): relative L2 vs transformers %.3g\n", i,
                q.lens[i], rel);
        worst = rel > worst ? rel : worst;
    }
    assert_true(worst <= 1e-4);
    // One text alone gives the same embedding as inside the batch.
    float one[1024];
    assert_int_equal(eb_qwen3_embed(m, q.ids + q.offs[q.n - 1], q.lens + q.n - 1, 1, 0, one, err,
                                    sizeof(err)),
                     EB_OK);
    assert_true(qf_max_abs(one, got + (size_t)(q.n - 1) * 1024, 1024) <= 1e-5);
    free(got);
    eb_qwen3_destroy(&m);
    eb_backend_destroy(&be);
    qf_case_free(&q);
    cJSON_Delete(index);
}

int main(void)
{
    const char *slow = getenv("EMBROKER_SLOW_TESTS");
    const char *dir = getenv("EMBROKER_QWEN3_06B_DIR");
    if (!(slow && strcmp(slow, "1") == 0) && !(dir && *dir)) {
        printf("skipped: set EMBROKER_SLOW_TESTS=1 (regenerates a 1.2 GB checkpoint, ~2 min) or "
               "EMBROKER_QWEN3_06B_DIR to run the Qwen3-Embedding-0.6B check\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e06b),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
