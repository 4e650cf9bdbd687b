/* qwen3_fixture.h — shared by test_qwen3.c and test_qwen3_06b.c: read
 * tests/fixtures/qwen3/index.json (written by tools/reference/qwen3.py), regenerate a case's
 * checkpoint with mkcheckpoint exactly as the reference did, check its files' SHA-256, and load
 * the case's token ids and reference embeddings. Header-only (static inline). */
#ifndef QWEN3_FIXTURE_H
#define QWEN3_FIXTURE_H

#include <cJSON.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "eb_test.h"

/* One case of the fixture: its JSON object, ids and lengths, reference embeddings. */
typedef struct qf_case {
    const cJSON *json;
    int n;           /* texts */
    int hidden;
    int32_t *lens;   /* (n) */
    int64_t *offs;   /* (n) first id of each text in ids */
    int32_t *ids;    /* all ids back to back */
    int64_t n_ids;
    float *emb;      /* (n, hidden) transformers' normalised embeddings */
} qf_case;

/* Run $EMBROKER_BIN/mkcheckpoint (else <root>/$B/bin, else <root>/build/bin) PRESET DIR ARGS...
 * Returns the exit status. */
static inline int qf_run_mkcheckpoint(const char *preset, const char *dir, const cJSON *args)
{
    char exe[4096];
    const char *bin = getenv("EMBROKER_BIN"), *b = getenv("B");
    if (bin && *bin)
        snprintf(exe, sizeof(exe), "%s/mkcheckpoint", bin);
    else
        snprintf(exe, sizeof(exe), "%s/%s/bin/mkcheckpoint", eb_test_root(), b && *b ? b : "build");
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

static inline bool qf_sha256_file(const char *path, char hex[65])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    static unsigned char buf[1 << 20];
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

/* Number of the case's checkpoint files whose SHA-256 differs from the fixture (0 = the
 * checkpoint in dir is the one the reference saw). */
static inline int qf_check_files(const cJSON *c, const char *dir)
{
    int bad = 0;
    const cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItem(c, "files"))
    {
        char path[8400], hex[65];
        snprintf(path, sizeof(path), "%s/%s", dir, f->string);
        if (!qf_sha256_file(path, hex) || strcmp(hex, f->valuestring) != 0) {
            fprintf(stderr, "checkpoint file %s differs from the fixture's (sha256 %s)\n", path,
                    f->valuestring);
            bad++;
        }
    }
    return bad;
}

/* The committed index (caller frees with cJSON_Delete), or NULL. */
static inline cJSON *qf_load_index(void)
{
    char path[4096];
    eb_test_path(path, sizeof(path), "tests/fixtures/qwen3/index.json");
    size_t len = 0;
    uint8_t *text = eb_test_read_file(path, &len);
    if (!text)
        return NULL;
    cJSON *root = cJSON_ParseWithLength((const char *)text, len);
    free(text);
    return root;
}

static inline void qf_case_free(qf_case *q)
{
    free(q->lens);
    free(q->offs);
    free(q->ids);
    free(q->emb);
    memset(q, 0, sizeof(*q));
}

static inline void *qf_read_fixture(const char *file, size_t expect_bytes)
{
    char rel[1024], path[4096];
    snprintf(rel, sizeof(rel), "tests/fixtures/qwen3/%s", file);
    eb_test_path(path, sizeof(path), rel);
    size_t len = 0;
    uint8_t *bytes = eb_test_read_file(path, &len);
    if (!bytes || (expect_bytes && len != expect_bytes)) {
        fprintf(stderr, "cannot read %s (%zu bytes, want %zu)\n", path, len, expect_bytes);
        free(bytes);
        return NULL;
    }
    return bytes;
}

/* Fill *q from case `name` of index; false when it is missing or a file is unreadable. */
static inline bool qf_case_load(const cJSON *index, const char *name, qf_case *q)
{
    memset(q, 0, sizeof(*q));
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(index, "cases"))
    {
        const cJSON *n = cJSON_GetObjectItem(c, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0)
            q->json = c;
    }
    if (!q->json)
        return false;
    const cJSON *lens = cJSON_GetObjectItem(q->json, "lens");
    q->n = cJSON_GetArraySize(lens);
    q->hidden = cJSON_GetObjectItem(q->json, "hidden_size")->valueint;
    q->lens = calloc((size_t)q->n, sizeof(int32_t));
    q->offs = calloc((size_t)q->n, sizeof(int64_t));
    for (int i = 0; i < q->n; i++) {
        q->lens[i] = cJSON_GetArrayItem(lens, i)->valueint;
        q->offs[i] = q->n_ids;
        q->n_ids += q->lens[i];
    }
    q->ids = qf_read_fixture(cJSON_GetObjectItem(q->json, "ids_file")->valuestring,
                             (size_t)q->n_ids * sizeof(int32_t));
    q->emb = qf_read_fixture(cJSON_GetObjectItem(q->json, "emb_file")->valuestring,
                             (size_t)q->n * (size_t)q->hidden * sizeof(float));
    if (!q->ids || !q->emb) {
        qf_case_free(q);
        return false;
    }
    return true;
}

/* ||a - b|| / ||b|| over n values. */
static inline double qf_rel_l2(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return sqrt(num) / (den > 0 ? sqrt(den) : 1.0);
}

/* max |a - b| over n values. */
static inline double qf_max_abs(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        m = d > m ? d : m;
    }
    return m;
}

#endif
