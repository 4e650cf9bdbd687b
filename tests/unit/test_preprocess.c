/* test_preprocess — eb_preprocess against transformers' SiglipImageProcessorPil: pixel_values
 * (3, 64, 64) float32 for several images (RGB, grayscale, WebP, CMYK, RGBA, 16-bit gray, one
 * with ImageNet mean/std) must match within 1e-6 (in practice they are bit-identical). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "eb_image.h"
#include "eb_preprocess.h"
#include "image_fixtures.h"

static void test_pixel_values_match_transformers(void **state)
{
    (void)state;
    cJSON *index = fx_index();
    assert_non_null(index);
    const cJSON *images = cJSON_GetObjectItemCaseSensitive(index, "images");
    int checked = 0, bad = 0, missing = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, images)
    {
        const cJSON *pv = cJSON_GetObjectItemCaseSensitive(e, "pixel_values");
        if (!pv) {
            continue;
        }
        size_t len = 0, want_len = 0;
        uint8_t *bytes = fx_image_bytes(index, e, &len);
        if (!bytes) {
            missing++;
            continue;
        }
        int size = fx_int(pv, "size");
        float mean[3], std[3];
        for (int c = 0; c < 3; c++) {
            mean[c] = (float)cJSON_GetArrayItem(cJSON_GetObjectItem(pv, "mean"), c)->valuedouble;
            std[c] = (float)cJSON_GetArrayItem(cJSON_GetObjectItem(pv, "std"), c)->valuedouble;
        }
        double rescale = cJSON_GetObjectItem(pv, "rescale_factor")->valuedouble;
        assert_true(rescale == EB_PREPROCESS_RESCALE_DEFAULT);
        float *want = (float *)fx_read(fx_str(pv, "file"), &want_len);
        assert_non_null(want);
        assert_int_equal(want_len, (size_t)3 * size * size * sizeof(float));

        eb_image img;
        char err[256];
        assert_int_equal(eb_image_decode(bytes, len, EB_IMAGE_AUTO, NULL, &img, err, sizeof(err)),
                         EB_OK);
        float *got = malloc(want_len);
        assert_int_equal(eb_preprocess_siglip(&img, size, mean, std, got), EB_OK);
        double max_diff = 0;
        size_t exact = 0, n = want_len / sizeof(float);
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)got[i] - (double)want[i]);
            max_diff = d > max_diff ? d : max_diff;
            exact += got[i] == want[i];
        }
        printf("%-22s max abs diff %.3g, %zu of %zu values bit-identical\n", fx_str(e, "file"),
               max_diff, exact, n);
        bad += !(max_diff <= 1e-6);
        checked++;
        free(got);
        free(want);
        free(bytes);
        eb_image_free(&img);
    }
    cJSON_Delete(index);
    printf("pixel_values: %d images checked, %d beyond 1e-6, %d photographs not found\n",
           checked, bad, missing);
    assert_true(checked >= 4);
    assert_int_equal(bad, 0);
}

/* The three SigLIP landmarks: 0 -> -1, 255 -> 1, and channel planes in R, G, B order. */
static void test_normalize_values_and_layout(void **state)
{
    (void)state;
    const uint8_t rgb[2 * 1 * 3] = {0, 255, 128, 255, 0, 64}; /* two pixels */
    const float half[3] = {0.5f, 0.5f, 0.5f};
    float out[6];
    eb_preprocess_normalize_rgb8(rgb, 2, 1, EB_PREPROCESS_RESCALE_DEFAULT, half, half, out);
    assert_true(out[0] == -1.0f); /* R of pixel 0 */
    assert_true(out[1] == 1.0f);  /* R of pixel 1 */
    assert_true(out[2] == 1.0f);  /* G of pixel 0 */
    assert_true(out[3] == -1.0f); /* G of pixel 1 */
    float x = (float)(128.0 / 255.0);
    assert_true(out[4] == (x - 0.5f) / 0.5f); /* B of pixel 0 */
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    eb_preprocess_normalize_rgb8(rgb, 2, 1, EB_PREPROCESS_RESCALE_DEFAULT, mean, std, out);
    assert_true(out[0] == (0.0f - 0.485f) / 0.229f);
    assert_true(out[5] == ((float)(64.0 / 255.0) - 0.406f) / 0.225f);
}

static void test_arguments_and_scratch(void **state)
{
    (void)state;
    uint8_t px[8 * 6 * 3];
    for (size_t i = 0; i < sizeof(px); i++) {
        px[i] = (uint8_t)(i * 13);
    }
    eb_image img;
    assert_int_equal(eb_image_from_raw_rgb8(px, sizeof(px), 8, 6, NULL, &img, NULL, 0), EB_OK);
    float out[3 * 4 * 4], again[3 * 4 * 4];
    assert_int_equal(eb_preprocess_siglip(&img, 0, NULL, NULL, out), EB_ERR_INVALID);
    assert_int_equal(eb_preprocess_siglip(&img, EB_PREPROCESS_MAX_SIZE + 1, NULL, NULL, out),
                     EB_ERR_INVALID);
    const float zero[3] = {0.5f, 0.0f, 0.5f};
    assert_int_equal(eb_preprocess_siglip(&img, 4, NULL, zero, out), EB_ERR_INVALID);
    assert_int_equal(eb_preprocess_siglip(NULL, 4, NULL, NULL, out), EB_ERR_INVALID);

    size_t need = eb_preprocess_scratch_size(8, 6, 4);
    assert_true(need >= (size_t)4 * 4 * 3);
    assert_int_equal(eb_preprocess_scratch_size(8, 6, 0), 0);
    uint8_t *scratch = malloc(need);
    assert_int_equal(eb_preprocess_siglip_scratch(&img, 4, NULL, NULL, out, scratch, need - 1),
                     EB_ERR_TOO_LARGE);
    assert_int_equal(eb_preprocess_siglip_scratch(&img, 4, NULL, NULL, out, scratch, need),
                     EB_OK);
    assert_int_equal(eb_preprocess_siglip(&img, 4, NULL, NULL, again), EB_OK);
    assert_memory_equal(out, again, sizeof(out));
    for (size_t i = 0; i < sizeof(out) / sizeof(out[0]); i++) {
        assert_true(out[i] >= -1.0f && out[i] <= 1.0f);
    }
    free(scratch);
    eb_image_free(&img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pixel_values_match_transformers),
        cmocka_unit_test(test_normalize_values_and_layout),
        cmocka_unit_test(test_arguments_and_scratch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
