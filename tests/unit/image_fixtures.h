/* image_fixtures.h — reading tests/fixtures/images (written by tools/reference/images.py).
 *
 * Shared by test_image.c, test_resize.c and test_preprocess.c; header-only (static inline) so
 * that each test program stays one file. The photographs are not copied into the fixtures:
 * they are read from ../shared/data/images relative to the repository (the index says where),
 * or from EMBROKER_IMAGES_DIR when set; when they are missing those cases are skipped with a
 * note, the synthetic images (committed) always run.
 */
#ifndef IMAGE_FIXTURES_H
#define IMAGE_FIXTURES_H

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eb_test.h"

/* Bytes of tests/fixtures/images/<rel> (malloc'd, caller frees), NULL if missing. */
static inline uint8_t *fx_read(const char *rel, size_t *len)
{
    char tail[1024], path[2048];
    snprintf(tail, sizeof(tail), "tests/fixtures/images/%s", rel);
    eb_test_path(path, sizeof(path), tail);
    return eb_test_read_file(path, len);
}

/* The parsed index.json (caller frees with cJSON_Delete), NULL if missing or invalid. */
static inline cJSON *fx_index(void)
{
    size_t len = 0;
    uint8_t *b = fx_read("index.json", &len);
    if (!b) {
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength((const char *)b, len);
    free(b);
    return j;
}

static inline const char *fx_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static inline int fx_int(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valueint : -1;
}

/* The encoded bytes of an entry of index.images (malloc'd), NULL when a shared photograph is
 * not available on this machine. */
static inline uint8_t *fx_image_bytes(const cJSON *index, const cJSON *entry, size_t *len)
{
    const char *file = fx_str(entry, "file");
    const char *source = fx_str(entry, "source");
    char path[1024];
    if (source && strcmp(source, "shared") == 0) {
        const char *dir = getenv("EMBROKER_IMAGES_DIR");
        if (dir && *dir) {
            snprintf(path, sizeof(path), "%s/%s", dir, file);
        } else {
            char tail[512];
            snprintf(tail, sizeof(tail), "%s/%s", fx_str(index, "shared_images_dir"), file);
            eb_test_path(path, sizeof(path), tail);
        }
        return eb_test_read_file(path, len);
    }
    char rel[512];
    snprintf(rel, sizeof(rel), "synthetic/%s", file);
    return fx_read(rel, len);
}

/* Lower-case hex SHA-256 of buf into hex (65 bytes). */
static inline void fx_sha256(const void *buf, size_t len, char hex[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL);
    for (unsigned i = 0; i < n && i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }
    hex[64] = '\0';
}

/* Largest |a - b| over n bytes; *where gets its first index. */
static inline int fx_max_diff_u8(const uint8_t *a, const uint8_t *b, size_t n, size_t *where)
{
    int best = 0;
    *where = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > best) {
            best = d;
            *where = i;
        }
    }
    return best;
}

#endif
