/* Unit tests for broker/eb_storerec: round trip, the exact byte layout of a small record (so a
 * format change cannot slip in unnoticed: spooled records outlive the broker that wrote them),
 * rejection of truncated/garbled/other-version records, and UUID v4 ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eb_storerec.h"

static eb_store_record sample(float *img, float *comb, uint8_t *hash)
{
    for (int i = 0; i < 3; i++)
        img[i] = (float)i - 0.5f;
    for (int i = 0; i < 5; i++)
        comb[i] = (float)i * 0.25f;
    for (int i = 0; i < EB_HASH_LEN; i++)
        hash[i] = (uint8_t)i;
    eb_store_record r = {.product_id = "P1", .business_template = "tpl", .source_type = "scan",
                         .model = "m", .model_rev = "r1", .preproc_rev = "p",
                         .content_hash = hash, .image = img, .image_dims = 3, .combined = comb,
                         .combined_dims = 5};
    for (int i = 0; i < EB_STORE_ID_LEN; i++)
        r.store_id[i] = (uint8_t)(0xa0 + i);
    return r;
}

static void test_round_trip(void **state)
{
    (void)state;
    float img[3], comb[5];
    uint8_t hash[EB_HASH_LEN];
    eb_store_record r = sample(img, comb, hash);
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(eb_storerec_encode(&r, &buf, &len), EB_OK);
    /* 22 header + strings (2+2, 2+3, 2+4, 2+1, 2+2, 2+1) + 32 hash + 4+12 + 4 + 4+20 */
    assert_int_equal(len, 22 + 25 + 32 + 16 + 4 + 24);
    assert_memory_equal(buf, "EBSR\x01\x02", 6);
    assert_memory_equal(buf + 6, r.store_id, 16);
    assert_memory_equal(buf + 22, "\x02\x00P1\x03\x00tpl", 9);

    eb_store_record d;
    void *storage = NULL;
    assert_int_equal(eb_storerec_decode(buf, len, &d, &storage), EB_OK);
    assert_memory_equal(d.store_id, r.store_id, 16);
    assert_false(d.upsert);
    assert_string_equal(d.product_id, "P1");
    assert_string_equal(d.business_template, "tpl");
    assert_string_equal(d.source_type, "scan");
    assert_string_equal(d.model, "m");
    assert_string_equal(d.model_rev, "r1");
    assert_string_equal(d.preproc_rev, "p");
    assert_memory_equal(d.content_hash, hash, EB_HASH_LEN);
    assert_int_equal(d.image_dims, 3);
    assert_memory_equal(d.image, img, sizeof img);
    assert_null(d.text);
    assert_int_equal(d.text_dims, 0);
    assert_int_equal(d.combined_dims, 5);
    assert_memory_equal(d.combined, comb, sizeof comb);
    free(storage);

    eb_storerec_view v;
    assert_int_equal(eb_storerec_view_of(buf, len, &v), EB_OK);
    assert_int_equal(v.str_len[0], 2);
    assert_int_equal(v.vec_dims[2], 5);
    assert_null(v.vec[1]);
    free(buf);
}

static void test_rejects_bad_records(void **state)
{
    (void)state;
    float img[3], comb[5];
    uint8_t hash[EB_HASH_LEN];
    eb_store_record r = sample(img, comb, hash);
    uint8_t *buf;
    size_t len;
    assert_int_equal(eb_storerec_encode(&r, &buf, &len), EB_OK);
    eb_store_record d;
    void *storage;
    eb_storerec_view v;
    for (size_t cut = 0; cut < len; cut++) /* every truncation is refused */
        assert_int_equal(eb_storerec_view_of(buf, cut, &v), EB_ERR_PROTOCOL);
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, buf, len);
    longer[len] = 0;
    assert_int_equal(eb_storerec_view_of(longer, len + 1, &v), EB_ERR_PROTOCOL);
    free(longer);
    buf[4] = 2;
    assert_int_equal(eb_storerec_decode(buf, len, &d, &storage), EB_ERR_UNSUPPORTED);
    buf[4] = 1;
    buf[0] = 'X';
    assert_int_equal(eb_storerec_decode(buf, len, &d, &storage), EB_ERR_PROTOCOL);
    free(buf);

    /* Encoder refusals. */
    eb_store_record bad = r;
    bad.product_id = "";
    assert_int_equal(eb_storerec_encode(&bad, &buf, &len), EB_ERR_INVALID);
    bad = r;
    bad.image = NULL; /* dims without data */
    assert_int_equal(eb_storerec_encode(&bad, &buf, &len), EB_ERR_INVALID);
    bad = r;
    bad.upsert = true; /* scan rows are never upserts */
    assert_int_equal(eb_storerec_encode(&bad, &buf, &len), EB_ERR_INVALID);
    img[1] = INFINITY;
    assert_int_equal(eb_storerec_encode(&r, &buf, &len), EB_ERR_INVALID);
}

static void test_store_ids(void **state)
{
    (void)state;
    uint8_t a[16], b[16];
    assert_int_equal(eb_store_id_new(a), EB_OK);
    assert_int_equal(eb_store_id_new(b), EB_OK);
    assert_memory_not_equal(a, b, 16);
    assert_int_equal(a[6] >> 4, 4);       /* version 4 */
    assert_int_equal(a[8] & 0xc0, 0x80); /* RFC 4122 variant */
    char s[37];
    const uint8_t fixed[16] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef,
                               0x80, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07};
    eb_store_id_str(fixed, s);
    assert_string_equal(s, "12345678-9abc-4def-8001-020304050607");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_rejects_bad_records),
        cmocka_unit_test(test_store_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
