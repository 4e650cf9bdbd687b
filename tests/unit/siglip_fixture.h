/* siglip_fixture.h — shared by test_siglip.c and test_siglip_base.c: regenerate a checkpoint
 * with mkcheckpoint exactly as tools/reference/siglip.py did, check its files' SHA-256 against
 * tests/fixtures/siglip/index.json, build the case's inputs and compare with the reference.
 * Header-only (static inline) so each test program stays one file plus this header. */
#ifndef SIGLIP_FIXTURE_H
#define SIGLIP_FIXTURE_H

#include <cJSON.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "eb_test.h"

/* Path of the mkcheckpoint binary: $EMBROKER_BIN/mkcheckpoint, else <root>/$B/bin, else
 * <root>/build/bin. */
static inline void sf_mkcheckpoint_path(char *buf, size_t cap)
{
    const char *bin = getenv("EMBROKER_BIN");
    if (bin && *bin) {
        snprintf(buf, cap, "%s/mkcheckpoint", bin);
        return;
    }
    const char *b = getenv("B");
    snprintf(buf, cap, "%s/%s/bin/mkcheckpoint", eb_test_root(), b && *b ? b : "build");
}

/* Run mkcheckpoint PRESET DIR ARGS... (args: JSON array of strings). Returns the exit status. */
static inline int sf_run_mkcheckpoint(const char *preset, const char *dir, const cJSON *args)
{
    char exe[4096];
    sf_mkcheckpoint_path(exe, sizeof(exe));
    char *argv[32];
    int n = 0;
    argv[n++] = exe;
    argv[n++] = (char *)preset;
    argv[n++] = (char *)dir;
    const cJSON *a;
    cJSON_ArrayForEach(a, args)
    {
        if (n < 31 && cJSON_IsString(a))
            argv[n++] = a->valuestring;
    }
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        execv(exe, argv);
        fprintf(stderr, "cannot run %s\n", exe);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static inline bool sf_sha256_file(const char *path, char hex[65])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    unsigned char buf[1 << 16];
    size_t got;
    while ((got = fread(buf, 1, sizeof(buf), f)) > 0)
        EVP_DigestUpdate(md, buf, got);
    fclose(f);
    unsigned char out[32];
    unsigned int len = 0;
    EVP_DigestFinal_ex(md, out, &len);
    EVP_MD_CTX_free(md);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", out[i]);
    return true;
}

/* The committed fixture index (caller frees with cJSON_Delete), or NULL. */
static inline cJSON *sf_load_index(void)
{
    char path[4096];
    eb_test_path(path, sizeof(path), "tests/fixtures/siglip/index.json");
    size_t len = 0;
    uint8_t *text = eb_test_read_file(path, &len);
    if (!text)
        return NULL;
    cJSON *root = cJSON_ParseWithLength((const char *)text, len);
    free(text);
    return root;
}

static inline const cJSON *sf_find_case(const cJSON *index, const char *name)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(index, "cases"))
    {
        const cJSON *n = cJSON_GetObjectItem(c, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0)
            return c;
    }
    return NULL;
}

/* Number of files of the case whose SHA-256 differs from the fixture (0 = reproduced). */
static inline int sf_check_files(const cJSON *c, const char *dir)
{
    int bad = 0;
    const cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItem(c, "files"))
    {
        char path[8400], hex[65];
        snprintf(path, sizeof(path), "%s/%s", dir, f->string);
        if (!sf_sha256_file(path, hex) || strcmp(hex, f->valuestring) != 0) {
            fprintf(stderr,
                    "checkpoint file %s differs from the fixture's (sha256 %s): mkcheckpoint "
                    "is not deterministic, or it changed and tools/reference/siglip.py must be "
                    "rerun\n",
                    path, f->valuestring);
            bad++;
        }
    }
    return bad;
}

/* Same generator as tools/reference/siglip.py random_pixels(). */
static inline void sf_random_pixels(uint64_t seed, float *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t z = seed + (uint64_t)(i + 1) * 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        out[i] = (float)((double)(z >> 40) / (double)(1 << 23) - 1.0);
    }
}

/* Fill pixels (N, 3, S, S) with the case's inputs; returns N or -1. Caller frees *pixels. */
static inline int sf_load_inputs(const cJSON *c, int size, float **pixels)
{
    const cJSON *inputs = cJSON_GetObjectItem(c, "inputs");
    int n = cJSON_GetArraySize(inputs);
    size_t per = (size_t)3 * size * size;
    float *px = malloc(per * (size_t)(n ? n : 1) * sizeof(float));
    if (!px)
        return -1;
    for (int i = 0; i < n; i++) {
        const cJSON *in = cJSON_GetArrayItem(inputs, i);
        const char *kind = cJSON_GetObjectItem(in, "kind")->valuestring;
        const cJSON *ref = cJSON_GetObjectItem(in, "ref");
        if (strcmp(kind, "random") == 0) {
            sf_random_pixels((uint64_t)ref->valuedouble, px + per * (size_t)i, per);
        } else {
            char rel[1024], path[4096];
            snprintf(rel, sizeof(rel), "tests/fixtures/%s", ref->valuestring);
            eb_test_path(path, sizeof(path), rel);
            size_t len = 0;
            uint8_t *bytes = eb_test_read_file(path, &len);
            if (!bytes || len != per * sizeof(float)) {
                fprintf(stderr, "cannot read input %s (%zu bytes)\n", path, len);
                free(bytes);
                free(px);
                return -1;
            }
            const cJSON *sha = cJSON_GetObjectItem(in, "sha256");
            if (cJSON_IsString(sha)) {
                unsigned char md[32];
                unsigned int md_len = 0;
                char hex[65];
                EVP_Digest(bytes, len, md, &md_len, EVP_sha256(), NULL);
                for (int b = 0; b < 32; b++)
                    snprintf(hex + 2 * b, 3, "%02x", md[b]);
                if (strcmp(hex, sha->valuestring) != 0) {
                    fprintf(stderr,
                            "input %s changed since the SigLIP fixtures were made: rerun "
                            "tools/reference/siglip.py\n",
                            path);
                    free(bytes);
                    free(px);
                    return -1;
                }
            }
            memcpy(px + per * (size_t)i, bytes, len);
            free(bytes);
        }
    }
    *pixels = px;
    return n;
}

/* The reference pooler_output (N, C) of the case (caller frees), or NULL. */
static inline float *sf_load_pooled(const cJSON *c, size_t expect_floats)
{
    char rel[1024], path[4096];
    snprintf(rel, sizeof(rel), "tests/fixtures/siglip/%s",
             cJSON_GetObjectItem(c, "pooled_file")->valuestring);
    eb_test_path(path, sizeof(path), rel);
    size_t len = 0;
    uint8_t *bytes = eb_test_read_file(path, &len);
    if (!bytes || len != expect_floats * sizeof(float)) {
        free(bytes);
        return NULL;
    }
    return (float *)bytes;
}

/* ||a - b|| / ||b|| over n values. */
static inline double sf_rel_l2(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return sqrt(num) / (den > 0 ? sqrt(den) : 1.0);
}

#endif
