/* Unit tests for broker/eb_pgvector: binary formats byte by byte, half-precision conversion
 * against known IEEE binary16 encodings (the integration test test_pgpool also checks it against
 * the server's own float4 → halfvec cast), and the CombinedEmbedding geometry. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "eb_pgvector.h"

static void test_vector_layout(void **state)
{
    (void)state;
    const float v[2] = {1.0f, -2.5f};
    uint8_t b[12];
    assert_int_equal(eb_pgvector_size(2), 12);
    assert_int_equal(eb_pgvector_encode(v, 2, b, sizeof b), EB_OK);
    /* dim 2, unused 0, 1.0 = 0x3f800000, -2.5 = 0xc0200000, all big-endian */
    const uint8_t want[12] = {0, 2, 0, 0, 0x3f, 0x80, 0, 0, 0xc0, 0x20, 0, 0};
    assert_memory_equal(b, want, 12);
    float out[2];
    uint32_t dims = 0;
    assert_int_equal(eb_pgvector_decode(b, 12, out, 2, &dims), EB_OK);
    assert_int_equal(dims, 2);
    assert_memory_equal(out, v, sizeof v);
    /* The little-endian-bytes encoder gives the same bytes. */
    uint8_t le[8] = {0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0}, b2[12];
    assert_int_equal(eb_pgvector_encode_le(le, 2, b2, sizeof b2), EB_OK);
    assert_memory_equal(b2, want, 12);
    /* Errors. */
    assert_int_equal(eb_pgvector_encode(v, 2, b, 11), EB_ERR_TOO_LARGE);
    assert_int_equal(eb_pgvector_encode(v, 0, b, 12), EB_ERR_INVALID);
    const float bad[1] = {NAN};
    assert_int_equal(eb_pgvector_encode(bad, 1, b, 12), EB_ERR_INVALID);
    assert_int_equal(eb_pgvector_encode(v, 2, b, sizeof b), EB_OK); /* output undefined on error */
    assert_int_equal(eb_pgvector_decode(b, 11, out, 2, &dims), EB_ERR_PROTOCOL);
    assert_int_equal(eb_pgvector_decode(b, 12, out, 1, &dims), EB_ERR_TOO_LARGE);
    b[3] = 1; /* unused must be 0 */
    assert_int_equal(eb_pgvector_decode(b, 12, out, 2, &dims), EB_ERR_PROTOCOL);
}

static void test_half_known_values(void **state)
{
    (void)state;
    struct {
        float f;
        uint16_t h;
    } cases[] = {
        {0.0f, 0x0000},         {-0.0f, 0x8000},       {1.0f, 0x3c00},
        {-2.0f, 0xc000},        {65504.0f, 0x7bff},    {0.5f, 0x3800},
        {0.33333334f, 0x3555},  /* rounds down */
        {1.00048828125f, 0x3c00}, /* exactly half an ulp above 1: tie to even (down) */
        {1.00146484375f, 0x3c02}, /* 1.5 ulp: tie to even (up) */
        {5.9604645e-8f, 0x0001},  /* smallest subnormal half */
        {2.9802322e-8f, 0x0000},  /* half of it: tie to even → 0 */
        {6.1035156e-5f, 0x0400},  /* smallest normal half */
        {65520.0f, 0x7c00},       /* rounds up to inf */
        {INFINITY, 0x7c00},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = eb_f32_to_f16(cases[i].f);
        if (h != cases[i].h)
            fail_msg("f32 %.10g -> 0x%04x, want 0x%04x", (double)cases[i].f, h, cases[i].h);
    }
    assert_true(isnan(eb_f16_to_f32(eb_f32_to_f16(NAN))));
    /* Every finite half converts to float and back to itself. */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00)
            continue;
        float f = eb_f16_to_f32((uint16_t)h);
        assert_int_equal(eb_f32_to_f16(f), h);
    }
    assert_true(eb_f16_to_f32(0x0001) == 5.9604645e-8f);
    assert_true(eb_f16_to_f32(0x3555) == 0.333251953125f);
}

static void test_halfvec_layout(void **state)
{
    (void)state;
    const float v[2] = {1.0f, -2.0f};
    uint8_t b[8];
    assert_int_equal(eb_pghalfvec_size(2), 8);
    assert_int_equal(eb_pghalfvec_encode(v, 2, b, sizeof b), EB_OK);
    const uint8_t want[8] = {0, 2, 0, 0, 0x3c, 0x00, 0xc0, 0x00};
    assert_memory_equal(b, want, 8);
    float out[2];
    uint32_t dims;
    assert_int_equal(eb_pghalfvec_decode(b, 8, out, 2, &dims), EB_OK);
    assert_memory_equal(out, v, sizeof v);
    const float big[1] = {70000.0f};
    assert_int_equal(eb_pghalfvec_encode(big, 1, b, sizeof b), EB_ERR_INVALID);
}

static double dot(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

static void test_combined_geometry(void **state)
{
    (void)state;
    enum { I = 5, T = 3 };
    const float img_r[I] = {1, 2, 3, 4, 5}, txt_r[T] = {3, 0, 4};
    const float img_q[I] = {5, -1, 2, 0, 1}, txt_q[T] = {0, 1, 1};
    float row[I + T], row_no_text[I + T], q_img[I + T], q_txt[I + T], q_both[I + T];
    const float wi = 0.8f, wt = 0.6f;
    assert_int_equal(eb_combined_build(img_r, I, txt_r, T, wi, wt, row), EB_OK);
    assert_int_equal(eb_combined_build(img_r, I, NULL, T, wi, wt, row_no_text), EB_OK);
    assert_int_equal(eb_combined_query(img_q, I, NULL, T, q_img), EB_OK);
    assert_int_equal(eb_combined_query(NULL, I, txt_q, T, q_txt), EB_OK);
    assert_int_equal(eb_combined_query(img_q, I, txt_q, T, q_both), EB_OK);
    /* Halves are scaled unit vectors; a missing half is zeros. */
    assert_float_equal(dot(row, row, I), wi * wi, 1e-6);
    assert_float_equal(dot(row + I, row + I, T), wt * wt, 1e-6);
    for (int i = 0; i < T; i++)
        assert_true(row_no_text[I + i] == 0.0f && q_img[I + i] == 0.0f);
    double cos_i = dot(img_q, img_r, I) / sqrt(dot(img_q, img_q, I) * dot(img_r, img_r, I));
    double cos_t = dot(txt_q, txt_r, T) / sqrt(dot(txt_q, txt_q, T) * dot(txt_r, txt_r, T));
    /* Image-only query: exactly w_img × cos(image), whatever the row's text half holds. */
    assert_float_equal(dot(q_img, row, I + T), wi * cos_i, 1e-6);
    assert_float_equal(dot(q_img, row_no_text, I + T), wi * cos_i, 1e-6);
    /* Text-only and combined queries. */
    assert_float_equal(dot(q_txt, row, I + T), wt * cos_t, 1e-6);
    assert_float_equal(dot(q_txt, row_no_text, I + T), 0.0, 1e-9);
    assert_float_equal(dot(q_both, row, I + T), wi * cos_i + wt * cos_t, 1e-6);
    /* Errors. */
    const float zero[I] = {0};
    assert_int_equal(eb_combined_build(zero, I, NULL, T, wi, wt, row), EB_ERR_INVALID);
    assert_int_equal(eb_combined_build(NULL, I, NULL, T, wi, wt, row), EB_ERR_INVALID);
    assert_int_equal(eb_combined_build(img_r, I, NULL, T, NAN, wt, row), EB_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector_layout),
        cmocka_unit_test(test_half_known_values),
        cmocka_unit_test(test_halfvec_layout),
        cmocka_unit_test(test_combined_geometry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
