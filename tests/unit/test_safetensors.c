/* test_safetensors — the safetensors reader accepts well-formed files and rejects every kind of
 * damage with an error that names the file and the tensor or value at fault. Files are built by
 * hand here (8-byte length, JSON header, data) so each test controls exactly one defect. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eb_safetensors.h"
#include "eb_test.h"

static char *g_dir;

static int setup(void **state)
{
    (void)state;
    g_dir = eb_test_tmpdir("safetensors");
    return g_dir ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    eb_test_rmtree(g_dir);
    free(g_dir);
    return 0;
}

/* Write <g_dir>/<name>: 8-byte LE length (header_len_override if nonzero, else the padded JSON
 * length), the JSON padded with spaces to a multiple of 8 (when pad), then data_len bytes of
 * data (byte i = i & 0xff). Returns the path (static buffer). */
static const char *write_raw(const char *name, const char *json, uint64_t header_len_override,
                             size_t data_len, bool pad)
{
    static char path[4096];
    snprintf(path, sizeof(path), "%s/%s", g_dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    size_t jlen = strlen(json);
    size_t padded = pad ? (jlen + 7) & ~(size_t)7 : jlen;
    uint64_t hl = header_len_override ? header_len_override : padded;
    for (int i = 0; i < 8; i++)
        fputc((int)((hl >> (8 * i)) & 0xff), f);
    fwrite(json, 1, jlen, f);
    for (size_t i = jlen; i < padded; i++)
        fputc(' ', f);
    for (size_t i = 0; i < data_len; i++)
        fputc((int)(i & 0xff), f);
    fclose(f);
    return path;
}

// Opening must fail and the error must contain every fragment given.
static void expect_open_error(const char *path, ...)
{
    char err[1024] = "";
    eb_safetensors *st = eb_safetensors_open(path, err, sizeof(err));
    if (st) {
        eb_safetensors_close(&st);
        fail_msg("%s opened although it is damaged", path);
    }
    va_list ap;
    va_start(ap, path);
    for (const char *frag; (frag = va_arg(ap, const char *));)
        if (!strstr(err, frag))
            fail_msg("error \"%s\" lacks \"%s\"", err, frag);
    va_end(ap);
}

static const char *GOOD_JSON =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
    "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
    "\"ids\":{\"dtype\":\"I64\",\"shape\":[1,2],\"data_offsets\":[32,48]},"
    "\"empty\":{\"dtype\":\"F16\",\"shape\":[0,5],\"data_offsets\":[48,48]}}";

static void test_valid_file(void **state)
{
    (void)state;
    const char *path = write_raw("good.safetensors", GOOD_JSON, 0, 48, true);
    char err[512] = "";
    eb_safetensors *st = eb_safetensors_open(path, err, sizeof(err));
    if (!st)
        fail_msg("%s", err);
    assert_int_equal(eb_safetensors_count(st), 4); // __metadata__ is not a tensor
    assert_int_equal(eb_safetensors_file_count(st), 1);
    const eb_st_tensor *a = eb_safetensors_find(st, "a");
    assert_non_null(a);
    assert_true(a->dtype_ok);
    assert_int_equal(a->dtype, EB_DTYPE_F32);
    assert_int_equal(a->ndim, 2);
    assert_int_equal(a->shape[1], 3);
    assert_int_equal(a->nelem, 6);
    assert_int_equal(a->nbytes, 24);
    assert_int_equal(((const uint8_t *)a->data)[5], 5); // data starts right after the header
    const eb_st_tensor *b = eb_safetensors_find(st, "b");
    assert_int_equal(b->dtype, EB_DTYPE_BF16);
    assert_int_equal(((const uint8_t *)b->data)[0], 24);
    // Tensors are listed in name order.
    assert_string_equal(eb_safetensors_at(st, 0)->name, "a");
    assert_string_equal(eb_safetensors_at(st, 3)->name, "ids");
    assert_null(eb_safetensors_find(st, "__metadata__"));
    assert_null(eb_safetensors_find(st, "zzz"));

    // expect(): present with the right shape.
    int64_t shape_a[2] = {2, 3};
    assert_ptr_equal(eb_safetensors_expect(st, "a", 2, shape_a, err, sizeof(err)), a);
    // Missing tensor: named, with the file.
    assert_null(eb_safetensors_expect(st, "vision_model.post_layernorm.weight", 2, shape_a, err,
                                      sizeof(err)));
    assert_non_null(strstr(err, "\"vision_model.post_layernorm.weight\" not found"));
    assert_non_null(strstr(err, path));
    // Wrong shape: both shapes in the message.
    int64_t shape_bad[2] = {3, 2};
    assert_null(eb_safetensors_expect(st, "a", 2, shape_bad, err, sizeof(err)));
    assert_non_null(strstr(err, "[2, 3]"));
    assert_non_null(strstr(err, "[3, 2]"));
    // A dtype that is valid in the format but not as a weight.
    int64_t shape_ids[2] = {1, 2};
    assert_null(eb_safetensors_expect(st, "ids", 2, shape_ids, err, sizeof(err)));
    assert_non_null(strstr(err, "I64"));
    eb_safetensors_close(&st);
    assert_null(st);
}

static void test_header_length_beyond_file(void **state)
{
    (void)state;
    const char *path = write_raw("long.safetensors", GOOD_JSON, 9000000000ull, 48, true);
    expect_open_error(path, path, "header length 9000000000 exceeds file size", NULL);
}

static void test_too_short(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof(path), "%s/short.safetensors", g_dir);
    FILE *f = fopen(path, "wb");
    fputs("abc", f);
    fclose(f);
    expect_open_error(path, path, "3 bytes", NULL);
}

static void test_invalid_json(void **state)
{
    (void)state;
    const char *path = write_raw("json.safetensors", "{\"a\":{\"dtype\":\"F32\",", 0, 8, true);
    expect_open_error(path, path, "not a JSON object", NULL);
    path = write_raw("array.safetensors", "[1,2,3]", 0, 8, true);
    expect_open_error(path, path, "not a JSON object", NULL);
    path = write_raw("trail.safetensors", "{}xyz", 0, 8, true);
    expect_open_error(path, path, "after the JSON", NULL);
}

static void test_overlap(void **state)
{
    (void)state;
    const char *path = write_raw(
        "overlap.safetensors",
        "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
        "\"y\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
        0, 24, true);
    expect_open_error(path, path, "\"x\"", "\"y\"", "overlap", NULL);
}

static void test_offsets_outside_file(void **state)
{
    (void)state;
    const char *path = write_raw(
        "outside.safetensors",
        "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
        "\"far\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[1000,1016]}}",
        0, 16, true);
    expect_open_error(path, path, "\"far\"", "[1000, 1016]", "16 bytes", NULL);
    path = write_raw("reversed.safetensors",
                     "{\"r\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 0, 16, true);
    expect_open_error(path, path, "\"r\"", "[8, 0]", NULL);
}

static void test_bad_dtype_and_shape(void **state)
{
    (void)state;
    const char *path = write_raw(
        "dtype.safetensors", "{\"w\":{\"dtype\":\"F33\",\"shape\":[4],\"data_offsets\":[0,16]}}",
        0, 16, true);
    expect_open_error(path, path, "\"w\"", "unknown dtype \"F33\"", NULL);
    path = write_raw("nodtype.safetensors", "{\"w\":{\"shape\":[4],\"data_offsets\":[0,16]}}", 0,
                     16, true);
    expect_open_error(path, path, "\"w\"", "dtype", NULL);
    // shape product * size != byte range
    path = write_raw("shape.safetensors",
                     "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 0, 24,
                     true);
    expect_open_error(path, path, "\"w\"", "[2, 3]", "needs 24 bytes", "hold 20", NULL);
    path = write_raw("negshape.safetensors",
                     "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 0, 8,
                     true);
    expect_open_error(path, path, "\"w\"", "non-negative", NULL);
    path = write_raw("fracshape.safetensors",
                     "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 0, 8,
                     true);
    expect_open_error(path, path, "\"w\"", "non-negative integers", NULL);
    path = write_raw("dup.safetensors",
                     "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                     "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                     0, 8, true);
    expect_open_error(path, "\"w\"", "twice", NULL);
    // An unpadded header leaves F32 data misaligned.
    path = write_raw("misaligned.safetensors",
                     "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4,
                     false);
    expect_open_error(path, path, "\"w\"", "aligned", NULL);
}

static void test_truncated_data(void **state)
{
    (void)state;
    // A good file cut short: the last tensor's range no longer fits.
    const char *path = write_raw("trunc.safetensors", GOOD_JSON, 0, 40, true);
    expect_open_error(path, path, "\"ids\"", "[32, 48]", "40 bytes", "truncated", NULL);
}

static void test_missing_file(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof(path), "%s/none.safetensors", g_dir);
    expect_open_error(path, path, "No such file", NULL);
    char err[512];
    char sub[4096];
    snprintf(sub, sizeof(sub), "%s/emptydir", g_dir);
    mkdir(sub, 0700);
    assert_null(eb_safetensors_open_dir(sub, err, sizeof(err)));
    assert_non_null(strstr(err, "model.safetensors"));
    assert_non_null(strstr(err, sub));
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_sharded(void **state)
{
    (void)state;
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/sharded", g_dir);
    mkdir(dir, 0700);
    char *saved = g_dir;
    g_dir = dir;
    write_raw("s1.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
              0, 8, true);
    write_raw("s2.safetensors",
              "{\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
              "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
              0, 8, true);
    g_dir = saved;
    write_text(dir, "model.safetensors.index.json",
               "{\"metadata\":{},\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\","
               "\"c\":\"s2.safetensors\"}}");
    char err[1024] = "";
    eb_safetensors *st = eb_safetensors_open_dir(dir, err, sizeof(err));
    if (!st)
        fail_msg("%s", err);
    assert_int_equal(eb_safetensors_count(st), 3);
    assert_int_equal(eb_safetensors_file_count(st), 2);
    assert_non_null(strstr(eb_safetensors_find(st, "c")->file, "s2.safetensors"));
    eb_safetensors_close(&st);

    // The index names the wrong shard for a tensor.
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"a\":\"s2.safetensors\",\"b\":\"s2.safetensors\"}}");
    assert_null(eb_safetensors_open_dir(dir, err, sizeof(err)));
    assert_non_null(strstr(err, "\"a\""));
    assert_non_null(strstr(err, "s2.safetensors"));
    assert_non_null(strstr(err, "does not contain"));
    // A shard name that leaves the directory.
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"../x.safetensors\"}}");
    assert_null(eb_safetensors_open_dir(dir, err, sizeof(err)));
    assert_non_null(strstr(err, "invalid shard name"));
    // A missing shard file.
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"a\":\"s9.safetensors\"}}");
    assert_null(eb_safetensors_open_dir(dir, err, sizeof(err)));
    assert_non_null(strstr(err, "s9.safetensors"));
    // Not an index at all.
    write_text(dir, "model.safetensors.index.json", "{\"weights\":{}}");
    assert_null(eb_safetensors_open_dir(dir, err, sizeof(err)));
    assert_non_null(strstr(err, "weight_map"));
}

// Random damage anywhere in the header or length field never crashes the reader: every
// mutated file either opens (and then every tensor lies inside the file) or fails with a message.
static void test_mutations(void **state)
{
    (void)state;
    const char *path = write_raw("mut.safetensors", GOOD_JSON, 0, 48, true);
    size_t len = 0;
    uint8_t *orig = eb_test_read_file(path, &len);
    assert_non_null(orig);
    uint8_t *buf = malloc(len);
    uint64_t rng = 99;
    int opened = 0, failed = 0;
    for (int iter = 0; iter < 1000; iter++) {
        memcpy(buf, orig, len);
        int flips = 1 + iter % 3;
        for (int f = 0; f < flips; f++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(rng >> 33) % (len - 48); // length field and header only
            static const char pool[] = "0123456789[]{},:\" -.eE\\x";
            buf[at] = (rng >> 20) & 1 ? (uint8_t)pool[(rng >> 8) % (sizeof(pool) - 1)]
                                      : (uint8_t)(rng >> 24);
        }
        FILE *fp = fopen(path, "wb");
        fwrite(buf, 1, len, fp);
        fclose(fp);
        char err[1024] = "";
        eb_safetensors *st = eb_safetensors_open(path, err, sizeof(err));
        if (st) {
            opened++;
            for (size_t i = 0; i < eb_safetensors_count(st); i++) {
                const eb_st_tensor *t = eb_safetensors_at(st, i);
                assert_true(t->nbytes <= len);
                volatile uint8_t sink = 0;
                for (size_t b = 0; b < t->nbytes; b++)
                    sink ^= ((const uint8_t *)t->data)[b]; // inside the mapping (ASan/segv)
                (void)sink;
            }
            eb_safetensors_close(&st);
        } else {
            failed++;
            assert_true(strlen(err) > 0);
        }
    }
    assert_true(failed > 0);
    assert_int_equal(opened + failed, 1000);
    free(buf);
    free(orig);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_file),
        cmocka_unit_test(test_header_length_beyond_file),
        cmocka_unit_test(test_too_short),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_overlap),
        cmocka_unit_test(test_offsets_outside_file),
        cmocka_unit_test(test_bad_dtype_and_shape),
        cmocka_unit_test(test_truncated_data),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
