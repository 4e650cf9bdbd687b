/* test_resize — eb_resize against Pillow's BICUBIC (tests/fixtures/images, see
 * tools/reference/images.py): every image at 224, 64 and 384, plus odd shapes (upscale 5x7,
 * identity, 300x1, 2000x10, one-axis-only and non-square outputs, hard 0/255 edges). Equality
 * is exact: the SHA-256 of the whole output must match; at 64x64 the full Pillow output is
 * stored, so a mismatch reports the largest difference and where it is. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "eb_image.h"
#include "eb_resize.h"
#include "image_fixtures.h"

/* Resizes and compares with the SHA-256 (and the raw Pillow output when given); returns 1 when
 * equal, printing the details otherwise. */
static int check_resize(const char *name, const uint8_t *src, int w, int h, int ow, int oh,
                        const char *want_sha, const uint8_t *want_raw)
{
    size_t n = (size_t)ow * oh * 3;
    uint8_t *dst = malloc(n);
    assert_non_null(dst);
    eb_status st = eb_resize_bicubic_rgb8(src, w, h, dst, ow, oh);
    if (st != EB_OK) {
        printf("FAIL %s: resize %dx%d -> %dx%d returned %s\n", name, w, h, ow, oh,
               eb_status_str(st));
        free(dst);
        return 0;
    }
    char got[65];
    fx_sha256(dst, n, got);
    int ok = strcmp(got, want_sha) == 0;
    if (!ok) {
        printf("FAIL %s: %dx%d -> %dx%d sha256 %s, Pillow %s\n", name, w, h, ow, oh, got,
               want_sha);
        if (want_raw) {
            size_t where;
            int d = fx_max_diff_u8(dst, want_raw, n, &where);
            printf("     max abs diff %d at x=%zu y=%zu c=%zu\n", d, (where / 3) % (size_t)ow,
                   where / 3 / (size_t)ow, where % 3);
        }
    }
    free(dst);
    return ok;
}

static void test_resize_cases_match_pillow(void **state)
{
    (void)state;
    cJSON *index = fx_index();
    assert_non_null(index);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(index, "resize_cases");
    int n = 0, bad = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases)
    {
        size_t len = 0, out_len = 0;
        uint8_t *src = fx_read(fx_str(c, "src_file"), &len);
        assert_non_null(src);
        int w = fx_int(c, "src_width"), h = fx_int(c, "src_height");
        assert_int_equal(len, (size_t)w * h * 3);
        uint8_t *want = fx_str(c, "out_file") ? fx_read(fx_str(c, "out_file"), &out_len) : NULL;
        bad += !check_resize(fx_str(c, "name"), src, w, h, fx_int(c, "out_width"),
                             fx_int(c, "out_height"), fx_str(c, "sha256"), want);
        n++;
        free(want);
        free(src);
    }
    cJSON_Delete(index);
    printf("resize cases: %d checked, %d differ from Pillow\n", n, bad);
    assert_true(n >= 9);
    assert_int_equal(bad, 0);
}

static void test_images_match_pillow_at_all_sizes(void **state)
{
    (void)state;
    cJSON *index = fx_index();
    assert_non_null(index);
    const cJSON *images = cJSON_GetObjectItemCaseSensitive(index, "images");
    int checked = 0, bad = 0, missing = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, images)
    {
        size_t len = 0;
        uint8_t *bytes = fx_image_bytes(index, e, &len);
        if (!bytes) {
            missing++;
            continue;
        }
        eb_image img;
        char err[256];
        eb_status st = eb_image_decode(bytes, len, EB_IMAGE_AUTO, NULL, &img, err, sizeof(err));
        free(bytes);
        if (st != EB_OK) {
            printf("FAIL %s: decode: %s\n", fx_str(e, "file"), err);
            bad++;
            continue;
        }
        const cJSON *shas = cJSON_GetObjectItemCaseSensitive(e, "resized_sha256");
        const cJSON *s;
        cJSON_ArrayForEach(s, shas)
        {
            int size = atoi(s->string);
            size_t raw_len = 0;
            uint8_t *raw = NULL;
            if (size == 64 && fx_str(e, "resized64_file")) {
                raw = fx_read(fx_str(e, "resized64_file"), &raw_len);
                assert_int_equal(raw_len, (size_t)64 * 64 * 3);
            }
            bad += !check_resize(fx_str(e, "file"), img.rgb, img.width, img.height, size, size,
                                 s->valuestring, raw);
            checked++;
            free(raw);
        }
        eb_image_free(&img);
    }
    cJSON_Delete(index);
    printf("image resizes: %d checked, %d differ from Pillow, %d photographs not found (set "
           "EMBROKER_IMAGES_DIR)\n", checked, bad, missing);
    assert_true(checked >= 3 * 25);
    assert_int_equal(bad, 0);
}

/* An unchanged size is not filtered: the identity window puts the whole weight on the pixel
 * itself, and the resize is a copy. */
static void test_identity_taps_and_copy(void **state)
{
    (void)state;
    int ks = eb_resize_ksize(224, 224);
    assert_int_equal(ks, 5);
    int32_t bounds[224 * 2], taps[224 * 5];
    assert_int_equal(eb_resize_coeffs(224, 224, ks, bounds, taps), EB_OK);
    assert_int_equal(bounds[0], 0);       /* window clipped at the left edge */
    assert_int_equal(bounds[1], 3);
    assert_int_equal(taps[0], 1 << 22);   /* pixel 0 gets all the weight */
    assert_int_equal(bounds[100 * 2], 99);
    assert_int_equal(bounds[100 * 2 + 1], 4);
    assert_int_equal(taps[100 * 5 + 0], 0);
    assert_int_equal(taps[100 * 5 + 1], 1 << 22);
    assert_int_equal(taps[100 * 5 + 2], 0);
    assert_int_equal(taps[100 * 5 + 4], 0); /* past the used count */

    uint8_t src[6 * 4 * 3], dst[6 * 4 * 3];
    for (size_t i = 0; i < sizeof(src); i++) {
        src[i] = (uint8_t)(i * 37 + 11);
    }
    assert_int_equal(eb_resize_bicubic_rgb8(src, 6, 4, dst, 6, 4), EB_OK);
    assert_memory_equal(src, dst, sizeof(src));
}

/* Downscaling widens the filter: support 2 * scale, ksize 2 * ceil(support) + 1, and the taps
 * of one output sum to 1.0 in fixed point up to the rounding of each tap. */
static void test_downscale_taps(void **state)
{
    (void)state;
    assert_int_equal(eb_resize_ksize(5120, 224), 93); /* scale 22.857: ceil(45.71) = 46 */
    assert_int_equal(eb_resize_ksize(5, 224), 5);
    assert_int_equal(eb_resize_ksize(448, 224), 9);
    assert_int_equal(eb_resize_ksize(0, 224), 0);
    int ks = eb_resize_ksize(5120, 224);
    int32_t *bounds = malloc(sizeof(int32_t) * 224 * 2);
    int32_t *taps = malloc(sizeof(int32_t) * 224 * (size_t)ks);
    assert_int_equal(eb_resize_coeffs(5120, 224, ks, bounds, taps), EB_OK);
    for (int o = 0; o < 224; o++) {
        int64_t sum = 0;
        for (int j = 0; j < bounds[o * 2 + 1]; j++) {
            sum += taps[o * ks + j];
        }
        assert_true(llabs(sum - (1 << 22)) <= ks);
        assert_true(bounds[o * 2] >= 0 && bounds[o * 2] + bounds[o * 2 + 1] <= 5120);
    }
    /* the middle output is centred at (112 + 0.5) * 5120 / 224 = 2571.43: its window is
     * [(int)(2571.43 - 45.71 + 0.5), (int)(2571.43 + 45.71 + 0.5)) = [2526, 2617) */
    assert_int_equal(bounds[112 * 2], 2526);
    assert_int_equal(bounds[112 * 2 + 1], 2617 - 2526);
    assert_int_equal(eb_resize_coeffs(5120, 224, ks + 1, bounds, taps), EB_ERR_INVALID);
    free(bounds);
    free(taps);
}

static void test_bad_arguments_and_scratch(void **state)
{
    (void)state;
    uint8_t src[8 * 8 * 3] = {0}, dst[4 * 4 * 3];
    memset(dst, 0xAB, sizeof(dst));
    assert_int_equal(eb_resize_bicubic_rgb8(src, 0, 8, dst, 4, 4), EB_ERR_INVALID);
    assert_int_equal(eb_resize_bicubic_rgb8(src, 8, 8, dst, 4, -1), EB_ERR_INVALID);
    assert_int_equal(eb_resize_bicubic_rgb8(NULL, 8, 8, dst, 4, 4), EB_ERR_INVALID);
    assert_int_equal(eb_resize_scratch_size(8, 8, 0, 4), 0);
    size_t need = eb_resize_scratch_size(8, 8, 4, 4);
    assert_true(need > (size_t)4 * 8 * 3);
    uint8_t *scratch = malloc(need);
    assert_int_equal(eb_resize_bicubic_rgb8_scratch(src, 8, 8, dst, 4, 4, scratch, need - 1),
                     EB_ERR_TOO_LARGE);
    for (size_t i = 0; i < sizeof(dst); i++) {
        assert_int_equal(dst[i], 0xAB); /* untouched on error */
    }
    /* unaligned scratch of exactly the advertised size works */
    uint8_t *big = malloc(need + 1);
    for (int i = 0; i < 8 * 8 * 3; i++) {
        src[i] = (uint8_t)(i * 7);
    }
    assert_int_equal(eb_resize_bicubic_rgb8_scratch(src, 8, 8, dst, 4, 4, big + 1, need), EB_OK);
    uint8_t again[4 * 4 * 3];
    assert_int_equal(eb_resize_bicubic_rgb8(src, 8, 8, again, 4, 4), EB_OK);
    assert_memory_equal(dst, again, sizeof(dst));
    free(big);
    free(scratch);
}

/* A constant image stays constant at any size (the taps sum to one and rounding is exact at
 * the integers), including the extremes 0 and 255 where clamping happens. */
static void test_constant_images_stay_constant(void **state)
{
    (void)state;
    const int sizes[][4] = {{37, 23, 224, 224}, {300, 1, 64, 64}, {1000, 7, 13, 400}};
    const uint8_t values[] = {0, 1, 128, 254, 255};
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        int w = sizes[s][0], h = sizes[s][1], ow = sizes[s][2], oh = sizes[s][3];
        uint8_t *src = malloc((size_t)w * h * 3), *dst = malloc((size_t)ow * oh * 3);
        for (size_t v = 0; v < sizeof(values); v++) {
            memset(src, values[v], (size_t)w * h * 3);
            assert_int_equal(eb_resize_bicubic_rgb8(src, w, h, dst, ow, oh), EB_OK);
            for (size_t i = 0; i < (size_t)ow * oh * 3; i++) {
                assert_int_equal(dst[i], values[v]);
            }
        }
        free(src);
        free(dst);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resize_cases_match_pillow),
        cmocka_unit_test(test_images_match_pillow_at_all_sizes),
        cmocka_unit_test(test_identity_taps_and_copy),
        cmocka_unit_test(test_downscale_taps),
        cmocka_unit_test(test_bad_arguments_and_scratch),
        cmocka_unit_test(test_constant_images_stay_constant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
