/* test_image — eb_image against Pillow: every photograph in ../shared/data/images and every
 * synthetic mode image (tests/fixtures/images, written by tools/reference/images.py) decodes
 * to exactly Pillow's Image.open(f).convert("RGB") bytes (SHA-256 of the pixels), or with
 * EB_ALPHA_WHITE to transformers' convert_to_rgb bytes; every damaged or hostile input gets
 * the expected status and a message; limits are enforced from the header. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "eb_image.h"
#include "image_fixtures.h"

/* Decodes every index entry with the given alpha handling and compares with `sha_key`. */
static void check_all(eb_image_alpha alpha, const char *sha_key)
{
    cJSON *index = fx_index();
    assert_non_null(index);
    const cJSON *images = cJSON_GetObjectItemCaseSensitive(index, "images");
    eb_image_options opt;
    eb_image_options_default(&opt);
    opt.alpha = alpha;
    int checked = 0, bad = 0, missing = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, images)
    {
        size_t len = 0;
        const char *file = fx_str(e, "file");
        uint8_t *bytes = fx_image_bytes(index, e, &len);
        if (!bytes) {
            missing++;
            continue;
        }
        eb_image img;
        char err[256];
        eb_status st = eb_image_decode(bytes, len, EB_IMAGE_AUTO, &opt, &img, err, sizeof(err));
        free(bytes);
        checked++;
        if (st != EB_OK) {
            printf("FAIL %s: %s: %s\n", file, eb_status_str(st), err);
            bad++;
            continue;
        }
        char got[65];
        fx_sha256(img.rgb, (size_t)img.width * img.height * 3, got);
        int ok = img.width == fx_int(e, "width") && img.height == fx_int(e, "height") &&
                 strcmp(got, fx_str(e, sha_key)) == 0 &&
                 strcmp(img.mode, fx_str(e, "pillow_mode")) == 0;
        if (!ok) {
            printf("FAIL %s: got %dx%d mode %s sha256 %s; Pillow %dx%d mode %s sha256 %s\n", file,
                   img.width, img.height, img.mode, got, fx_int(e, "width"),
                   fx_int(e, "height"), fx_str(e, "pillow_mode"), fx_str(e, sha_key));
            const cJSON *first = cJSON_GetObjectItemCaseSensitive(e, "rgb_first_pixels");
            if (first && alpha == EB_ALPHA_DROP) {
                printf("     first pixels ours/Pillow:");
                for (int i = 0; i < cJSON_GetArraySize(first); i++) {
                    printf(" %d/%d", img.rgb[i], cJSON_GetArrayItem(first, i)->valueint);
                }
                printf("\n");
            }
            bad++;
        }
        eb_image_free(&img);
    }
    cJSON_Delete(index);
    printf("%s: %d images checked, %d differ from the reference, %d photographs not found\n",
           sha_key, checked, bad, missing);
    assert_true(checked >= 25);
    assert_int_equal(bad, 0);
}

static void test_decode_matches_pillow(void **state)
{
    (void)state;
    check_all(EB_ALPHA_DROP, "rgb_sha256");
}

static void test_alpha_white_matches_transformers(void **state)
{
    (void)state;
    check_all(EB_ALPHA_WHITE, "rgb_white_sha256");
}

static eb_status expected_status(const char *expect)
{
    if (strcmp(expect, "decode") == 0) {
        return EB_ERR_DECODE;
    }
    if (strcmp(expect, "too_large") == 0) {
        return EB_ERR_TOO_LARGE;
    }
    return EB_ERR_INVALID;
}

static void test_bad_inputs_get_clear_errors(void **state)
{
    (void)state;
    cJSON *index = fx_index();
    assert_non_null(index);
    const cJSON *bad = cJSON_GetObjectItemCaseSensitive(index, "bad");
    int n = 0, wrong = 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, bad)
    {
        size_t len = 0;
        uint8_t *bytes = fx_read(fx_str(b, "file"), &len);
        assert_non_null(bytes);
        eb_image img;
        char err[256] = "";
        eb_status want = expected_status(fx_str(b, "expect"));
        eb_status st = eb_image_decode(bytes, len, EB_IMAGE_AUTO, NULL, &img, err, sizeof(err));
        printf("%-34s -> %-9s %s\n", fx_str(b, "file"), eb_status_str(st), err);
        if (st != want || strlen(err) < 20 || img.rgb != NULL || img.width != 0) {
            printf("FAIL %s: want %s\n", fx_str(b, "file"), eb_status_str(want));
            wrong++;
        }
        free(bytes);
        n++;
    }
    cJSON_Delete(index);
    assert_true(n >= 15);
    assert_int_equal(wrong, 0);
}

static void test_empty_unknown_and_mismatched(void **state)
{
    (void)state;
    eb_image img;
    char err[256];
    const uint8_t nothing[1] = {0};
    assert_int_equal(eb_image_decode(nothing, 0, EB_IMAGE_AUTO, NULL, &img, err, sizeof(err)),
                     EB_ERR_DECODE);
    assert_non_null(strstr(err, "empty"));
    assert_int_equal(eb_image_decode(NULL, 10, EB_IMAGE_AUTO, NULL, &img, err, sizeof(err)),
                     EB_ERR_DECODE);
    assert_int_equal(eb_image_decode(nothing, 1, EB_IMAGE_AUTO, NULL, NULL, err, sizeof(err)),
                     EB_ERR_INVALID);

    const uint8_t gif[] = "GIF89a\x01\x00\x01\x00";
    assert_int_equal(eb_image_decode(gif, sizeof(gif) - 1, EB_IMAGE_AUTO, NULL, &img, err,
                                     sizeof(err)),
                     EB_ERR_DECODE);
    assert_non_null(strstr(err, "unknown image format"));
    assert_non_null(strstr(err, "47 49 46 38 39 61")); /* "GIF89a" */

    size_t len = 0;
    uint8_t *png = fx_read("synthetic/RGBA.png", &len);
    assert_non_null(png);
    assert_int_equal(eb_image_sniff(png, len), EB_IMAGE_PNG);
    assert_int_equal(eb_image_decode(png, len, EB_IMAGE_JPEG, NULL, &img, err, sizeof(err)),
                     EB_ERR_DECODE);
    assert_non_null(strstr(err, "declared jpeg"));
    assert_int_equal(eb_image_decode(png, len, EB_IMAGE_RAW_RGB8, NULL, &img, err, sizeof(err)),
                     EB_ERR_INVALID);
    assert_int_equal(eb_image_decode(png, len, EB_IMAGE_PNG, NULL, &img, err, sizeof(err)),
                     EB_OK);
    assert_int_equal(img.format, EB_IMAGE_PNG);
    eb_image_free(&img);
    eb_image_free(&img); /* twice is harmless */
    eb_image_free(NULL);
    free(png);

    uint8_t *jpg = fx_read("synthetic/gray.jpg", &len);
    assert_int_equal(eb_image_sniff(jpg, len), EB_IMAGE_JPEG);
    free(jpg);
    uint8_t *webp = fx_read("synthetic/lossy.webp", &len);
    assert_int_equal(eb_image_sniff(webp, len), EB_IMAGE_WEBP);
    assert_int_equal(eb_image_sniff(webp, 11), EB_IMAGE_AUTO);
    free(webp);
}

static void test_limits_from_header(void **state)
{
    (void)state;
    size_t len = 0;
    uint8_t *png = fx_read("synthetic/L.png", &len); /* 37x23 */
    assert_non_null(png);
    eb_image_options o;
    eb_image_options_default(&o);
    assert_int_equal(o.max_pixels, 64000000);
    assert_int_equal(o.min_side, 2);
    eb_image img;
    char err[256];

    o.max_encoded_bytes = len - 1;
    assert_int_equal(eb_image_decode(png, len, EB_IMAGE_AUTO, &o, &img, err, sizeof(err)),
                     EB_ERR_TOO_LARGE);
    assert_non_null(strstr(err, "max_encoded_bytes"));
    eb_image_options_default(&o);
    o.max_pixels = 37 * 23 - 1;
    assert_int_equal(eb_image_decode(png, len, EB_IMAGE_AUTO, &o, &img, err, sizeof(err)),
                     EB_ERR_TOO_LARGE);
    assert_non_null(strstr(err, "37x23 = 851 pixels"));
    o.max_pixels = 37 * 23;
    assert_int_equal(eb_image_decode(png, len, EB_IMAGE_AUTO, &o, &img, err, sizeof(err)),
                     EB_OK);
    eb_image_free(&img);
    o.min_side = 24;
    assert_int_equal(eb_image_decode(png, len, EB_IMAGE_AUTO, &o, &img, err, sizeof(err)),
                     EB_ERR_INVALID);
    assert_non_null(strstr(err, "smaller than the minimum 24x24"));
    free(png);

    /* the same limit applied to each format's header */
    const char *files[] = {"synthetic/progressive.jpg", "synthetic/lossy.webp"}; /* 131x97 */
    for (int i = 0; i < 2; i++) {
        uint8_t *b = fx_read(files[i], &len);
        eb_image_options_default(&o);
        o.max_pixels = 131 * 97 - 1;
        assert_int_equal(eb_image_decode(b, len, EB_IMAGE_AUTO, &o, &img, err, sizeof(err)),
                         EB_ERR_TOO_LARGE);
        assert_non_null(strstr(err, "131x97"));
        free(b);
    }
}

static void test_raw_rgb8(void **state)
{
    (void)state;
    uint8_t px[4 * 3 * 3];
    for (size_t i = 0; i < sizeof(px); i++) {
        px[i] = (uint8_t)(i * 5);
    }
    eb_image img;
    char err[256];
    assert_int_equal(eb_image_from_raw_rgb8(px, sizeof(px), 4, 3, NULL, &img, err, sizeof(err)),
                     EB_OK);
    assert_int_equal(img.width, 4);
    assert_int_equal(img.height, 3);
    assert_int_equal(img.format, EB_IMAGE_RAW_RGB8);
    assert_memory_equal(img.rgb, px, sizeof(px));
    assert_ptr_not_equal(img.rgb, px);
    eb_image_free(&img);
    assert_null(img.rgb);

    assert_int_equal(eb_image_from_raw_rgb8(px, sizeof(px) - 1, 4, 3, NULL, &img, err,
                                            sizeof(err)),
                     EB_ERR_INVALID);
    assert_non_null(strstr(err, "needs 36 bytes, got 35"));
    assert_int_equal(eb_image_from_raw_rgb8(px, 3, 1, 1, NULL, &img, err, sizeof(err)),
                     EB_ERR_INVALID);
    assert_int_equal(eb_image_from_raw_rgb8(px, 0, 0, 0, NULL, &img, err, sizeof(err)),
                     EB_ERR_INVALID);
    assert_int_equal(eb_image_from_raw_rgb8(px, sizeof(px), -4, 3, NULL, &img, err, sizeof(err)),
                     EB_ERR_INVALID);
    /* a size claim far beyond the bytes is refused as too large before the length check */
    assert_int_equal(eb_image_from_raw_rgb8(px, sizeof(px), 100000, 100000, NULL, &img, err,
                                            sizeof(err)),
                     EB_ERR_TOO_LARGE);
    assert_null(img.rgb);
    /* a long strip within the pixel limit but past the longest accepted side */
    assert_int_equal(eb_image_from_raw_rgb8(px, sizeof(px), 65536, 2, NULL, &img, err,
                                            sizeof(err)),
                     EB_ERR_TOO_LARGE);
    assert_non_null(strstr(err, "a side longer than 65535"));
}

/* Every prefix of a valid file is refused (Pillow refuses truncated files too), and flipped
 * bytes never crash or read out of bounds (run under SAN=1). */
static void test_prefixes_and_flipped_bytes(void **state)
{
    (void)state;
    const char *files[] = {"synthetic/subsample444.jpg", "synthetic/progressive.jpg",
                           "synthetic/RGBA.png", "synthetic/P4.png", "synthetic/P4_interlaced.png",
                           "synthetic/I16_interlaced.png", "synthetic/lossy.webp",
                           "synthetic/lossless_alpha.webp", "synthetic/cmyk.jpg"};
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        size_t len = 0;
        uint8_t *full = fx_read(files[f], &len);
        assert_non_null(full);
        eb_image whole;
        assert_int_equal(eb_image_decode(full, len, EB_IMAGE_AUTO, NULL, &whole, NULL, 0), EB_OK);
        int accepted_prefix = 0;
        for (size_t cut = 1; cut < len; cut += 1 + len / 97) {
            uint8_t *b = malloc(cut); /* exact-size copy so ASan sees any over-read */
            memcpy(b, full, cut);
            eb_image img;
            char err[256];
            eb_status st = eb_image_decode(b, cut, EB_IMAGE_AUTO, NULL, &img, err, sizeof(err));
            if (st == EB_OK) {
                /* Like Pillow, a PNG cut only in its trailer (IDAT CRC, IEND) still has every
                 * pixel and is accepted; anything else accepted is a bug. */
                size_t n = (size_t)whole.width * whole.height * 3;
                bool whole_pixels = img.format == EB_IMAGE_PNG && img.width == whole.width &&
                                    img.height == whole.height &&
                                    memcmp(img.rgb, whole.rgb, n) == 0 && cut + 16 >= len;
                if (!whole_pixels) {
                    accepted_prefix++;
                    printf("prefix %zu of %zu bytes of %s accepted\n", cut, len, files[f]);
                }
                eb_image_free(&img);
            } else {
                assert_true(strlen(err) > 10);
            }
            free(b);
        }
        assert_int_equal(accepted_prefix, 0);
        eb_image_free(&whole);

        uint64_t seed = 0x9E3779B97F4A7C15ull * (f + 1);
        for (int t = 0; t < 60; t++) {
            uint8_t *b = malloc(len);
            memcpy(b, full, len);
            for (int k = 0; k < 1 + t % 4; k++) {
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                b[(seed >> 33) % len] ^= (uint8_t)(1 + (seed >> 20) % 255);
            }
            eb_image img;
            char err[256];
            eb_status st = eb_image_decode(b, len, EB_IMAGE_AUTO, NULL, &img, err, sizeof(err));
            assert_true(st == EB_OK || st == EB_ERR_DECODE || st == EB_ERR_TOO_LARGE ||
                        st == EB_ERR_INVALID || st == EB_ERR_UNSUPPORTED);
            if (st == EB_OK) {
                assert_non_null(img.rgb);
                eb_image_free(&img);
            }
            free(b);
        }
        free(full);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_matches_pillow),
        cmocka_unit_test(test_alpha_white_matches_transformers),
        cmocka_unit_test(test_bad_inputs_get_clear_errors),
        cmocka_unit_test(test_empty_unknown_and_mismatched),
        cmocka_unit_test(test_limits_from_header),
        cmocka_unit_test(test_raw_rgb8),
        cmocka_unit_test(test_prefixes_and_flipped_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
