/* Unit tests for common/: eb_status names, eb_config precedence and parsing, eb_clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eb_clock.h"
#include "eb_config.h"
#include "eb_hash.h"
#include "eb_log.h"
#include "eb_status.h"
#include "eb_test.h"

static void test_status_names_round_trip(void **state)
{
    (void)state;
    for (int s = 0; s >= EB_STATUS_MIN; s--) {
        const char *name = eb_status_str((eb_status)s);
        assert_string_not_equal(name, "unknown");
        assert_int_equal(eb_status_from_str(name), s);
    }
    assert_string_equal(eb_status_str(EB_ERR_BUSY), "busy");
    assert_string_equal(eb_status_str((eb_status)1), "unknown");
    assert_string_equal(eb_status_str((eb_status)(EB_STATUS_MIN - 1)), "unknown");
}

static void test_config_precedence(void **state)
{
    (void)state;
    char *dir = eb_test_tmpdir("config");
    assert_non_null(dir);
    char path[4200];
    snprintf(path, sizeof path, "%s/embroker.conf", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("# comment\nmax_batch_items = 8\nqueue_limit=100 # trailing comment\nname = file\n", f);
    fclose(f);

    setenv("EMBROKER_MAX_BATCH_ITEMS", "16", 1);
    setenv("EMBROKER_NAME", "env", 1);
    char *argv[] = {"prog", "--config", path, "--max-batch-items=32", "--inline", "pos1", "--",
                    "--not-a-flag"};
    const char *bools[] = {"inline", NULL};
    char *pos[4];
    int npos = 0;
    char err[256] = "";
    eb_config *cfg = eb_config_new();
    assert_int_equal(eb_config_load_all(cfg, 8, argv, bools, pos, 4, &npos, err, sizeof err), EB_OK);

    int64_t v = 0;
    assert_int_equal(eb_config_get_int(cfg, "max_batch_items", 1, 1, 4096, &v, err, sizeof err), EB_OK);
    assert_int_equal(v, 32); /* flag beats env beats file */
    assert_string_equal(eb_config_get(cfg, "name", NULL), "env");
    assert_int_equal(eb_config_source_of(cfg, "name"), EB_CONFIG_ENV);
    assert_int_equal(eb_config_get_int(cfg, "queue_limit", 1, 1, 1000, &v, err, sizeof err), EB_OK);
    assert_int_equal(v, 100);
    assert_true(eb_config_get_bool(cfg, "inline", false));
    assert_int_equal(npos, 2);
    assert_string_equal(pos[0], "pos1");
    assert_string_equal(pos[1], "--not-a-flag");

    /* a lower-ranked source never overrides a higher one, whatever the order */
    assert_int_equal(eb_config_set(cfg, "max_batch_items", "2", EB_CONFIG_FILE), EB_OK);
    assert_int_equal(eb_config_get_int(cfg, "max_batch_items", 1, 1, 4096, &v, err, sizeof err), EB_OK);
    assert_int_equal(v, 32);

    unsetenv("EMBROKER_MAX_BATCH_ITEMS");
    unsetenv("EMBROKER_NAME");
    eb_config_destroy(&cfg);
    assert_null(cfg);
    eb_test_rmtree(dir);
    free(dir);
}

static void test_config_int_errors(void **state)
{
    (void)state;
    eb_config *cfg = eb_config_new();
    char err[256] = "";
    int64_t v = 0;
    eb_config_set(cfg, "a", "abc", EB_CONFIG_FLAG);
    eb_config_set(cfg, "b", "5000", EB_CONFIG_FLAG);
    eb_config_set(cfg, "c", "64M", EB_CONFIG_FLAG);
    eb_config_set(cfg, "d", "9999999999999G", EB_CONFIG_FLAG);
    assert_int_equal(eb_config_get_int(cfg, "a", 7, 1, 4096, &v, err, sizeof err), EB_ERR_INVALID);
    assert_int_equal(v, 7);
    assert_non_null(strstr(err, "a=abc is not an integer in [1, 4096]"));
    assert_int_equal(eb_config_get_int(cfg, "b", 7, 1, 4096, &v, err, sizeof err), EB_ERR_INVALID);
    assert_int_equal(eb_config_get_int(cfg, "c", 0, 0, INT64_MAX, &v, err, sizeof err), EB_OK);
    assert_int_equal(v, 64LL * 1024 * 1024);
    assert_int_equal(eb_config_get_int(cfg, "d", 0, 0, INT64_MAX, &v, err, sizeof err), EB_ERR_INVALID);
    assert_int_equal(eb_config_get_int(cfg, "unset", 42, 0, 100, &v, err, sizeof err), EB_OK);
    assert_int_equal(v, 42);
    eb_config_destroy(&cfg);
}

static void test_config_bad_file_and_flag(void **state)
{
    (void)state;
    eb_config *cfg = eb_config_new();
    char err[256] = "";
    assert_int_equal(eb_config_load_file(cfg, "/nonexistent/embroker.conf", err, sizeof err), EB_ERR_IO);
    assert_non_null(strstr(err, "/nonexistent/embroker.conf"));
    char *dir = eb_test_tmpdir("config");
    char path[4200];
    snprintf(path, sizeof path, "%s/bad.conf", dir);
    FILE *f = fopen(path, "w");
    fputs("ok = 1\nthis line has no equals sign\n", f);
    fclose(f);
    assert_int_equal(eb_config_load_file(cfg, path, err, sizeof err), EB_ERR_INVALID);
    assert_non_null(strstr(err, "line 2"));
    char *argv[] = {"prog", "--needs-value"};
    int npos = 0;
    assert_int_equal(eb_config_load_args(cfg, 2, argv, NULL, NULL, 0, &npos, err, sizeof err), EB_ERR_INVALID);
    assert_non_null(strstr(err, "--needs-value"));
    eb_config_destroy(&cfg);
    eb_test_rmtree(dir);
    free(dir);
}

static void test_clock_monotonic(void **state)
{
    (void)state;
    int64_t a = eb_now_us();
    eb_sleep_us(2000);
    int64_t b = eb_now_us();
    assert_true(b - a >= 2000);
    assert_true(eb_wall_us() > 1700000000LL * 1000000); /* after 2023 */
}

static void test_log_levels(void **state)
{
    (void)state;
    eb_log_level lvl = EB_LOG_INFO;
    assert_true(eb_log_level_parse("debug", &lvl));
    assert_int_equal(lvl, EB_LOG_DEBUG);
    assert_false(eb_log_level_parse("verbose", &lvl));
    assert_int_equal(lvl, EB_LOG_DEBUG);
    eb_log_set_level(EB_LOG_WARN);
    assert_false(eb_log_enabled(EB_LOG_INFO));
    assert_true(eb_log_enabled(EB_LOG_ERROR));
}

/* Expected digests computed independently with coreutils:
 *   printf 'embroker-content-v1\nkind=raw_rgb8\nw=2\nh=1\nopts=\n\nabcdef' | sha256sum */
static void test_content_hash_matches_definition(void **state)
{
    (void)state;
    uint8_t h[EB_HASH_LEN];
    char hex[2 * EB_HASH_LEN + 1];
    assert_int_equal(eb_content_hash("raw_rgb8", 2, 1, NULL, "abcdef", 6, h), EB_OK);
    assert_string_equal(eb_hex(h, EB_HASH_LEN, hex),
                        "3f92739695a55a566df32c68bc6874e63abe2b2c73a67fb3daddbfd84d5d2023");
    assert_int_equal(eb_content_hash("text", 0, 0, "dim=256", "hello", 5, h), EB_OK);
    assert_string_equal(eb_hex(h, EB_HASH_LEN, hex),
                        "84fd3e592b797cffa8de98a0a5487dd66c1e06426f1fa29bc664d4598f6c2849");
    /* incremental == one-shot */
    eb_hash_ctx *ctx = eb_content_hash_begin("text", 0, 0, "dim=256");
    assert_non_null(ctx);
    eb_content_hash_update(ctx, "hel", 3);
    eb_content_hash_update(ctx, "lo", 2);
    uint8_t h2[EB_HASH_LEN];
    assert_int_equal(eb_content_hash_end(&ctx, h2), EB_OK);
    assert_null(ctx);
    assert_memory_equal(h, h2, EB_HASH_LEN);
    /* options and kind are part of the hash */
    assert_int_equal(eb_content_hash("text", 0, 0, NULL, "hello", 5, h2), EB_OK);
    assert_memory_not_equal(h, h2, EB_HASH_LEN);
    assert_int_equal(eb_content_hash("video", 0, 0, NULL, "x", 1, h2), EB_ERR_INVALID);
    assert_int_equal(eb_content_hash("text", 0, 0, "a\nb", "x", 1, h2), EB_ERR_INVALID);
}

static void test_content_opts_canonical(void **state)
{
    (void)state;
    char opts[EB_HASH_OPTS_MAX];
    eb_content_opts(true, 0, NULL, 0, opts, sizeof opts);
    assert_string_equal(opts, "");
    eb_content_opts(false, 256, NULL, 0, opts, sizeof opts);
    assert_string_equal(opts, "dim=256;normalize=0");
    /* sha256("abc") = ba7816bf... (FIPS 180-2 test vector) */
    eb_content_opts(true, 0, "abc", 3, opts, sizeof opts);
    assert_string_equal(opts,
        "instruction_sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    eb_content_opts(false, 32, "abc", 3, opts, sizeof opts);
    assert_string_equal(opts,
        "dim=32;instruction_sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad;"
        "normalize=0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names_round_trip),
        cmocka_unit_test(test_config_precedence),
        cmocka_unit_test(test_config_int_errors),
        cmocka_unit_test(test_config_bad_file_and_flag),
        cmocka_unit_test(test_clock_monotonic),
        cmocka_unit_test(test_log_levels),
        cmocka_unit_test(test_content_hash_matches_definition),
        cmocka_unit_test(test_content_opts_canonical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
