/* End to end with the real models: image files and texts go through libembroker, embrokerd and
 * one embroker-worker serving siglip and qwen3 at once, and the vectors that come back are
 * compared with the transformers reference fixtures (tools/reference/siglip.py, qwen3.py) for
 * the same seeded checkpoints. This checks everything the unit tests check separately, joined:
 * decode + Pillow-exact resize + normalisation + the SigLIP forward, tokenizer + Qwen3 forward,
 * the worker's model adapters, the transport and the client library. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "eb_clock.h"
#include "eb_hash.h"
#include "eb_test.h"
#include "embroker.h"

typedef struct env {
    char *dir;
    char run_dir[4200];
    char bin[4096];
    pid_t broker, worker;
    cJSON *siglip_index, *qwen3_index;
} env;

static env E;

static int run_wait(char *const argv[], const char *log)
{
    int status = 0;
    waitpid(eb_test_spawn(argv, log), &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static cJSON *load_json(const char *relative)
{
    char path[4096];
    size_t len = 0;
    uint8_t *text = eb_test_read_file(eb_test_path(path, sizeof path, relative), &len);
    cJSON *j = text ? cJSON_ParseWithLength((const char *)text, len) : NULL;
    free(text);
    return j;
}

static float *load_f32(const char *relative, size_t *count)
{
    char path[4096];
    size_t len = 0;
    float *v = (float *)eb_test_read_file(eb_test_path(path, sizeof path, relative), &len);
    *count = len / sizeof(float);
    return v;
}

static cJSON *fixture_case(cJSON *index, const char *name)
{
    cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(index, "cases"))
        if (strcmp(cJSON_GetObjectItem(c, "name")->valuestring, name) == 0)
            return c;
    return NULL;
}

/* sha256 of a file as hex */
static void file_sha256(const char *path, char hex[65])
{
    size_t len = 0;
    uint8_t *bytes = eb_test_read_file(path, &len);
    uint8_t d[EB_HASH_LEN];
    eb_sha256(bytes, len, d);
    eb_hex(d, EB_HASH_LEN, hex);
    free(bytes);
}

/* Make the checkpoint a fixture case was computed from and check it is byte-identical. */
static void make_checkpoint(cJSON *c, const char *out)
{
    char tool[4200], log[4300];
    snprintf(tool, sizeof tool, "%s/mkcheckpoint", E.bin);
    snprintf(log, sizeof log, "%s/mkcheckpoint.log", E.dir);
    char *argv[16] = {tool, cJSON_GetObjectItem(c, "preset")->valuestring, (char *)out};
    int argc = 3;
    cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItem(c, "args")) argv[argc++] = a->valuestring;
    argv[argc] = NULL;
    assert_int_equal(run_wait(argv, log), 0);
    cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItem(c, "files"))
    {
        char path[4400], hex[65];
        snprintf(path, sizeof path, "%s/%s", out, f->string);
        file_sha256(path, hex);
        assert_string_equal(hex, f->valuestring);
    }
}

static double rel_l2(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static void normalize(float *v, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)v[i] * v[i];
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(v[i] / sqrt(s));
}

static int setup(void **state)
{
    (void)state;
    char tok[4096];
    if (access(eb_test_path(tok, sizeof tok, "models/qwen3-tokenizer/tokenizer.json"), R_OK) != 0) {
        printf("skipped: models/qwen3-tokenizer/tokenizer.json missing (scripts/setup fetches it)\n");
        exit(77);
    }
    const char *bin = getenv("EMBROKER_BIN");
    snprintf(E.bin, sizeof E.bin, "%s", bin ? bin : "build/bin");
    E.dir = eb_test_tmpdir("models-e2e");
    snprintf(E.run_dir, sizeof E.run_dir, "%s/run", E.dir);
    E.siglip_index = load_json("tests/fixtures/siglip/index.json");
    E.qwen3_index = load_json("tests/fixtures/qwen3/index.json");
    assert_non_null(E.siglip_index);
    assert_non_null(E.qwen3_index);

    char sdir[4300], qdir[4300], log[4300], broker[4200], worker[4200];
    snprintf(sdir, sizeof sdir, "%s/siglip", E.dir);
    snprintf(qdir, sizeof qdir, "%s/qwen3", E.dir);
    make_checkpoint(fixture_case(E.siglip_index, "tiny_f32"), sdir);
    make_checkpoint(fixture_case(E.qwen3_index, "tiny_f32"), qdir);

    snprintf(log, sizeof log, "%s/processes.log", E.dir);
    snprintf(broker, sizeof broker, "%s/embrokerd", E.bin);
    snprintf(worker, sizeof worker, "%s/embroker-worker", E.bin);
    char *bargv[] = {broker, "--run-dir", E.run_dir, "--heartbeat-interval-ms", "200", NULL};
    E.broker = eb_test_spawn(bargv, log);
    char *wargv[] = {worker, "--run-dir", E.run_dir, "--heartbeat-interval-ms", "200", "--models",
                     "siglip,qwen3", "--siglip-dir", sdir, "--qwen3-dir", qdir,
                     "--qwen3-tokenizer", tok, "--qwen3-max-tokens", "128", "--siglip-threads",
                     "2", "--qwen3-threads", "2", NULL};
    E.worker = eb_test_spawn(wargv, log);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    eb_test_stop(E.worker);
    eb_test_stop(E.broker);
    cJSON_Delete(E.siglip_index);
    cJSON_Delete(E.qwen3_index);
    eb_test_rmtree(E.dir);
    free(E.dir);
    return 0;
}

static embroker_t *connect_client(void)
{
    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.run_dir = E.run_dir;
    opt.timeout_ms = 60000;
    opt.heartbeat_interval_ms = 200;
    embroker_t *eb = NULL;
    char err[512];
    for (int i = 0; i < 100 && embroker_connect(&opt, &eb, err, sizeof err) != EB_OK; i++)
        eb_sleep_us(100000);
    assert_non_null(eb);
    return eb;
}

/* The image a pixel_values fixture was made from: the shared test image of that name, or the
 * synthetic one under tests/fixtures/images/synthetic/. */
static int find_image(const char *stem, char *out, size_t cap)
{
    char dirs[2][1024];
    eb_test_path(dirs[0], sizeof dirs[0], "../shared/data/images");
    eb_test_path(dirs[1], sizeof dirs[1], "tests/fixtures/images/synthetic");
    for (int d = 0; d < 2; d++) {
        DIR *dir = opendir(dirs[d]);
        struct dirent *e;
        while (dir && (e = readdir(dir))) {
            const char *dot = strrchr(e->d_name, '.');
            if (dot && (size_t)(dot - e->d_name) == strlen(stem) &&
                strncmp(e->d_name, stem, strlen(stem)) == 0) {
                snprintf(out, cap, "%s/%s", dirs[d], e->d_name);
                closedir(dir);
                return 0;
            }
        }
        if (dir)
            closedir(dir);
    }
    return -1;
}

/* True when the pixel_values fixture `ref` was made with SigLIP's default mean/std 0.5 (the
 * checkpoint's preprocessing); one fixture deliberately uses ImageNet's values instead. */
static bool default_normalisation(cJSON *images_index, const char *ref)
{
    cJSON *img;
    cJSON_ArrayForEach(img, cJSON_GetObjectItem(images_index, "images"))
    {
        cJSON *pv = cJSON_GetObjectItem(img, "pixel_values");
        const char *file = pv ? cJSON_GetStringValue(cJSON_GetObjectItem(pv, "file")) : NULL;
        if (file && strcmp(file, ref + strlen("images/")) == 0)
            return cJSON_GetArrayItem(cJSON_GetObjectItem(pv, "mean"), 0)->valuedouble == 0.5;
    }
    return false;
}

static void test_siglip_images_match_transformers(void **state)
{
    (void)state;
    cJSON *images_index = load_json("tests/fixtures/images/index.json");
    assert_non_null(images_index);
    cJSON *c = fixture_case(E.siglip_index, "tiny_f32");
    size_t count = 0;
    char rel[512];
    snprintf(rel, sizeof rel, "tests/fixtures/siglip/%s", cJSON_GetObjectItem(c, "pooled_file")->valuestring);
    float *pooled = load_f32(rel, &count);
    int hidden = cJSON_GetObjectItem(c, "hidden_size")->valueint;
    embroker_t *eb = connect_client();
    int checked = 0, i = 0;
    cJSON *in;
    cJSON_ArrayForEach(in, cJSON_GetObjectItem(c, "inputs"))
    {
        const char *ref = cJSON_GetStringValue(cJSON_GetObjectItem(in, "ref"));
        int row = i++;
        if (!ref || strncmp(ref, "images/pixel_values/", 20) != 0)
            continue; /* random pixel inputs have no image file */
        if (!default_normalisation(images_index, ref))
            continue;
        char stem[256], path[4400];
        snprintf(stem, sizeof stem, "%s", ref + 20);
        *strrchr(stem, '.') = '\0';
        if (find_image(stem, path, sizeof path) != 0)
            continue;
        for (int raw = 0; raw < 2; raw++) {
            size_t len = 0;
            uint8_t *bytes = eb_test_read_file(path, &len);
            embroker_input_t input = {.kind = EMBROKER_INPUT_IMAGE, .bytes = bytes, .len = len};
            embroker_request_options_t ro = {.no_normalize = raw == 1};
            embroker_request_t *req = NULL;
            assert_int_equal(embroker_embed(eb, "siglip", &input, 1, &ro, &req), EB_OK);
            const embroker_result_t *r = embroker_request_result(req, 0);
            assert_int_equal(r->status, EB_OK);
            assert_int_equal(r->dims, hidden);
            float want[4096];
            memcpy(want, pooled + (size_t)row * (size_t)hidden, (size_t)hidden * sizeof(float));
            if (!raw)
                normalize(want, (size_t)hidden);
            double err = rel_l2(r->embedding, want, (size_t)hidden);
            printf("siglip %s %s: rel L2 %.2e\n", stem, raw ? "pooler_output" : "normalised", err);
            assert_true(err <= 1e-4);
            embroker_request_free(&req);
            free(bytes);
        }
        checked++;
    }
    assert_true(checked >= 4);
    embroker_close(&eb);
    free(pooled);
    cJSON_Delete(images_index);
}

static void test_qwen3_texts_match_transformers(void **state)
{
    (void)state;
    cJSON *c = fixture_case(E.qwen3_index, "tiny_f32");
    size_t count = 0;
    char rel[512];
    snprintf(rel, sizeof rel, "tests/fixtures/qwen3/%s", cJSON_GetObjectItem(c, "emb_file")->valuestring);
    float *emb = load_f32(rel, &count);
    int hidden = cJSON_GetObjectItem(c, "hidden_size")->valueint;
    cJSON *texts = cJSON_GetObjectItem(c, "texts");
    enum { N = 24 };
    const char *batch[N];
    for (int i = 0; i < N; i++)
        batch[i] = cJSON_GetArrayItem(texts, i)->valuestring;
    embroker_t *eb = connect_client();
    embroker_request_t *req = NULL;
    /* one request of mixed lengths: batch composition must not matter */
    assert_int_equal(embroker_embed_texts(eb, "qwen3", batch, N, NULL, &req), EB_OK);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        const embroker_result_t *r = embroker_request_result(req, (size_t)i);
        assert_int_equal(r->status, EB_OK);
        assert_int_equal(r->dims, hidden);
        double err = rel_l2(r->embedding, emb + (size_t)i * (size_t)hidden, (size_t)hidden);
        worst = err > worst ? err : worst;
    }
    printf("qwen3 %d texts: worst rel L2 %.2e\n", N, worst);
    assert_true(worst <= 1e-4);
    embroker_request_free(&req);

    /* output_dim: the first 32 values renormalised */
    embroker_request_options_t ro = {.output_dim = 32};
    assert_int_equal(embroker_embed_texts(eb, "qwen3", batch, 1, &ro, &req), EB_OK);
    const embroker_result_t *r = embroker_request_result(req, 0);
    assert_int_equal(r->status, EB_OK);
    assert_int_equal(r->dims, 32);
    float want[32];
    memcpy(want, emb, sizeof want);
    normalize(want, 32);
    assert_true(rel_l2(r->embedding, want, 32) <= 1e-4);
    embroker_request_free(&req);

    /* an instruction embeds the query form "Instruct: {task}\nQuery:{text}": the same vector
     * as sending that text without an instruction; the content hashes differ (the options are
     * hashed), so a cache can never mix the two */
    const char *task = "Given a product search query, retrieve matching products";
    const char *query = "red running shoes";
    char formatted[256];
    snprintf(formatted, sizeof formatted, "Instruct: %s\nQuery:%s", task, query);
    embroker_request_options_t with_task = {.instruction = task};
    embroker_request_t *a = NULL, *b = NULL;
    assert_int_equal(embroker_embed_texts(eb, "qwen3", &query, 1, &with_task, &a), EB_OK);
    const char *formatted_ptr = formatted;
    assert_int_equal(embroker_embed_texts(eb, "qwen3", &formatted_ptr, 1, NULL, &b), EB_OK);
    const embroker_result_t *ra = embroker_request_result(a, 0), *rb = embroker_request_result(b, 0);
    assert_int_equal(ra->status, EB_OK);
    assert_int_equal(rb->status, EB_OK);
    assert_int_equal(ra->dims, rb->dims);
    assert_memory_equal(ra->embedding, rb->embedding, ra->dims * sizeof(float));
    assert_memory_not_equal(ra->hash, rb->hash, 32);
    embroker_request_free(&a);
    embroker_request_free(&b);
    embroker_close(&eb);
    free(emb);
}

static void test_bad_items_fail_alone(void **state)
{
    (void)state;
    embroker_t *eb = connect_client();
    char path[4400];
    assert_int_equal(find_image("astronaut", path, sizeof path), 0);
    size_t len = 0;
    uint8_t *good = eb_test_read_file(path, &len);
    static const uint8_t garbage[64] = "this is not an image at all, just bytes";
    embroker_input_t inputs[3] = {
        {.kind = EMBROKER_INPUT_IMAGE, .bytes = good, .len = len},
        {.kind = EMBROKER_INPUT_IMAGE, .bytes = garbage, .len = sizeof garbage},
        {.kind = EMBROKER_INPUT_IMAGE, .bytes = good, .len = len / 2}, /* truncated */
    };
    embroker_request_t *req = NULL;
    assert_int_equal(embroker_embed(eb, "siglip", inputs, 3, NULL, &req), EB_OK);
    assert_int_equal(embroker_request_result(req, 0)->status, EB_OK);
    assert_int_equal(embroker_request_result(req, 1)->status, EB_ERR_DECODE);
    assert_non_null(strstr(embroker_request_result(req, 1)->message, "format"));
    assert_int_equal(embroker_request_result(req, 2)->status, EB_ERR_DECODE);
    embroker_request_free(&req);
    /* text over qwen3_max_tokens (128) with the default policy: a clear per-item error */
    char *long_text = malloc(4000);
    for (int i = 0; i < 3999; i++)
        long_text[i] = " lorem ipsum 12"[i % 15]; /* ~750 tokens: digits split one by one */
    long_text[3999] = '\0';
    const char *texts[2] = {"short", long_text};
    assert_int_equal(embroker_embed_texts(eb, "qwen3", texts, 2, NULL, &req), EB_OK);
    assert_int_equal(embroker_request_result(req, 0)->status, EB_OK);
    assert_int_equal(embroker_request_result(req, 1)->status, EB_ERR_TOO_LARGE);
    embroker_request_free(&req);
    free(long_text);
    free(good);
    embroker_close(&eb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siglip_images_match_transformers),
        cmocka_unit_test(test_qwen3_texts_match_transformers),
        cmocka_unit_test(test_bad_items_fail_alone),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
