/* test_checkpoint — model directories: open errors, model_rev and its cache, config getters.
 * Checkpoints come from mkcheckpoint (siglip-tiny, ~0.8 MB). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include "eb_checkpoint.h"
#include "siglip_fixture.h"

static char *make_tiny(const char *tag, const char *arg1, const char *arg2)
{
    char *dir = eb_test_tmpdir(tag);
    assert_non_null(dir);
    cJSON *args = cJSON_CreateArray();
    if (arg1)
        cJSON_AddItemToArray(args, cJSON_CreateString(arg1));
    if (arg2)
        cJSON_AddItemToArray(args, cJSON_CreateString(arg2));
    assert_int_equal(sf_run_mkcheckpoint("siglip-tiny", dir, args), 0);
    cJSON_Delete(args);
    return dir;
}

static void rev_of(const char *dir, char *rev)
{
    char err[1024] = "";
    eb_checkpoint *ck = eb_checkpoint_open(dir, err, sizeof(err));
    if (!ck)
        fail_msg("%s", err);
    assert_int_equal(eb_checkpoint_model_rev(ck, rev, err, sizeof(err)), EB_OK);
    assert_int_equal(strlen(rev), 64);
    eb_checkpoint_close(&ck);
}

static void set_mtime(const char *path, time_t sec)
{
    struct timespec ts[2] = {{sec, 0}, {sec, 0}};
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static void test_model_rev(void **state)
{
    (void)state;
    char *dir = make_tiny("ckpt-rev", NULL, NULL);
    char weights[4096], cache[4096];
    snprintf(weights, sizeof(weights), "%s/model.safetensors", dir);
    snprintf(cache, sizeof(cache), "%s/%s", dir, EB_CHECKPOINT_REV_CACHE);

    char r1[EB_REV_LEN], r2[EB_REV_LEN], r3[EB_REV_LEN], r4[EB_REV_LEN], r5[EB_REV_LEN];
    rev_of(dir, r1);
    assert_int_equal(access(cache, F_OK), 0); // the cache was written beside the weights
    rev_of(dir, r2);
    assert_string_equal(r1, r2); // stable

    // Same seed in another directory: same bytes, same revision; another seed: another one.
    char *dir_same = make_tiny("ckpt-rev-same", NULL, NULL);
    char *dir_other = make_tiny("ckpt-rev-other", "--seed", "77");
    rev_of(dir_same, r3);
    assert_string_equal(r1, r3);
    rev_of(dir_other, r3);
    assert_string_not_equal(r1, r3);

    // The cache is really used: plant a wrong hash under the file's current key and the
    // revision follows it ...
    size_t len = 0;
    char *text = (char *)eb_test_read_file(cache, &len);
    assert_non_null(text);
    char *tab = strrchr(text, '\t');
    assert_non_null(tab);
    memset(tab + 1, 'a', 64);
    FILE *f = fopen(cache, "w");
    fwrite(text, 1, len, f);
    fclose(f);
    free(text);
    rev_of(dir, r4);
    assert_string_not_equal(r1, r4);
    // ... until the file's modification time changes, which invalidates the entry.
    set_mtime(weights, 1000000000);
    rev_of(dir, r5);
    assert_string_equal(r1, r5);

    // One changed weight byte (size unchanged) gives a new revision.
    int fd = open(weights, O_RDWR);
    assert_true(fd >= 0);
    off_t end = lseek(fd, 0, SEEK_END);
    unsigned char b;
    assert_int_equal(pread(fd, &b, 1, end - 3), 1);
    b ^= 0x01;
    assert_int_equal(pwrite(fd, &b, 1, end - 3), 1);
    close(fd);
    rev_of(dir, r2);
    assert_string_not_equal(r1, r2);
    // Content decides, not history: restoring the byte restores the revision.
    fd = open(weights, O_RDWR);
    b ^= 0x01;
    assert_int_equal(pwrite(fd, &b, 1, end - 3), 1);
    close(fd);
    rev_of(dir, r3);
    assert_string_equal(r1, r3);

    // config.json is part of the revision.
    char cfg[4096];
    snprintf(cfg, sizeof(cfg), "%s/config.json", dir);
    f = fopen(cfg, "a");
    fputs("\n", f);
    fclose(f);
    rev_of(dir, r4);
    assert_string_not_equal(r1, r4);

    eb_test_rmtree(dir);
    eb_test_rmtree(dir_same);
    eb_test_rmtree(dir_other);
    free(dir);
    free(dir_same);
    free(dir_other);
}

static void test_sharded_rev(void **state)
{
    (void)state;
    char *dir = eb_test_tmpdir("ckpt-shards");
    cJSON *args = cJSON_CreateArray();
    cJSON_AddItemToArray(args, cJSON_CreateString("--shards"));
    cJSON_AddItemToArray(args, cJSON_CreateString("2"));
    assert_int_equal(sf_run_mkcheckpoint("siglip-tiny", dir, args), 0);
    cJSON_Delete(args);
    char rev[EB_REV_LEN], rev_single[EB_REV_LEN];
    rev_of(dir, rev);
    char *single = make_tiny("ckpt-single", NULL, NULL);
    rev_of(single, rev_single);
    // Same weights, different file layout: a different revision (the files are what is served).
    assert_string_not_equal(rev, rev_single);
    char err[512];
    eb_checkpoint *ck = eb_checkpoint_open(dir, err, sizeof(err));
    assert_non_null(ck);
    assert_int_equal(eb_safetensors_file_count(eb_checkpoint_weights(ck)), 2);
    eb_checkpoint_close(&ck);
    eb_test_rmtree(dir);
    eb_test_rmtree(single);
    free(dir);
    free(single);
}

static void test_open_errors(void **state)
{
    (void)state;
    char err[1024];
    assert_null(eb_checkpoint_open("/nonexistent/model/dir", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/model/dir"));
    assert_non_null(strstr(err, "mkcheckpoint"));

    char *dir = make_tiny("ckpt-err", NULL, NULL);
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"hidden_size\": 64,,}", f);
    fclose(f);
    assert_null(eb_checkpoint_open(dir, err, sizeof(err)));
    assert_non_null(strstr(err, "invalid JSON"));
    assert_non_null(strstr(err, path));
    unlink(path);
    assert_null(eb_checkpoint_open(dir, err, sizeof(err)));
    assert_non_null(strstr(err, "config.json"));
    f = fopen(path, "w");
    fputs("{}", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    unlink(path);
    assert_null(eb_checkpoint_open(dir, err, sizeof(err)));
    assert_non_null(strstr(err, "model.safetensors"));
    eb_test_rmtree(dir);
    free(dir);
}

static void test_json_getters(void **state)
{
    (void)state;
    cJSON *o = cJSON_Parse("{\"n\": 12, \"f\": 1.5, \"s\": \"x\", \"b\": true, \"z\": null}");
    char err[256];
    int64_t i;
    double d;
    bool b;
    const char *s;
    assert_int_equal(eb_json_get_int(o, "cfg", "n", 7, 0, 100, &i, err, sizeof(err)), EB_OK);
    assert_int_equal(i, 12);
    assert_int_equal(eb_json_get_int(o, "cfg", "missing", 7, 0, 100, &i, err, sizeof(err)), EB_OK);
    assert_int_equal(i, 7);
    assert_int_equal(eb_json_get_int(o, "cfg", "z", 9, 0, 100, &i, err, sizeof(err)), EB_OK);
    assert_int_equal(i, 9); // null means absent
    assert_int_equal(eb_json_get_int(o, "cfg", "f", 7, 0, 100, &i, err, sizeof(err)),
                     EB_ERR_INVALID);
    assert_non_null(strstr(err, "\"f\" is 1.5"));
    assert_int_equal(eb_json_get_int(o, "cfg", "n", 7, 0, 10, &i, err, sizeof(err)),
                     EB_ERR_INVALID);
    assert_non_null(strstr(err, "[0, 10]"));
    assert_int_equal(eb_json_get_double(o, "cfg", "f", 0, 0, 2, &d, err, sizeof(err)), EB_OK);
    assert_float_equal(d, 1.5, 0);
    assert_int_equal(eb_json_get_bool(o, "cfg", "b", false, &b, err, sizeof(err)), EB_OK);
    assert_true(b);
    assert_int_equal(eb_json_get_bool(o, "cfg", "n", false, &b, err, sizeof(err)),
                     EB_ERR_INVALID);
    assert_int_equal(eb_json_get_string(o, "cfg", "s", "d", &s, err, sizeof(err)), EB_OK);
    assert_string_equal(s, "x");
    assert_int_equal(eb_json_get_string(o, "cfg", "n", "d", &s, err, sizeof(err)),
                     EB_ERR_INVALID);
    cJSON_Delete(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_rev),
        cmocka_unit_test(test_sharded_rev),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_json_getters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
