/* eb_model_identity — the test-only "identity" model: an embedding that is a pure function of the
 * exact input bytes (SHA-256 expanded to `dims` floats), so end-to-end tests can check that the
 * bytes a client sent are the bytes the worker saw, whichever path (shared memory or inline) they
 * took. It does no decoding and no preprocessing; its cost is one SHA-256 pass plus two optional
 * sleeps: one per item (tests hold a batch in flight) and one per forward (a stand-in for a GPU,
 * whose forward costs about the same whatever the batch size, so batching can be measured). */
#include "eb_model_identity.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eb_clock.h"
#include "eb_hash.h"

typedef struct identity_state {
    char name[32];
    eb_proto_input_kind input;
    uint32_t dims;
    uint32_t max_batch;
    int64_t delay_ms;
    int64_t forward_delay_ms;
    int64_t corrupt_after; /* test-only: after this many items, outputs drift (-1 = never) */
    FILE *log;
    FILE *forward_log;
    atomic_uint_fast64_t processed;
} identity_state;

static eb_status identity_load_kind(const eb_config *cfg, void **state, char *err, size_t err_len,
                                    const char *name, eb_proto_input_kind input)
{
    int64_t dims = 64, max_batch = 32, delay_ms = 0, forward_delay_ms = 0;
    eb_status st = eb_config_get_int(cfg, "identity_dims", 64, 1, 65536, &dims, err, err_len);
    if (st == EB_OK)
        st = eb_config_get_int(cfg, "identity_max_batch", 32, 1, 4096, &max_batch, err, err_len);
    if (st == EB_OK)
        st = eb_config_get_int(cfg, "identity_delay_ms", 0, 0, 3600000, &delay_ms, err, err_len);
    if (st == EB_OK)
        st = eb_config_get_int(cfg, "identity_forward_delay_ms", 0, 0, 3600000, &forward_delay_ms,
                               err, err_len);
    int64_t corrupt_after = -1;
    if (st == EB_OK)
        st = eb_config_get_int(cfg, "identity_corrupt_after", -1, -1, INT64_MAX, &corrupt_after,
                               err, err_len);
    if (st != EB_OK)
        return st;
    identity_state *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_len, "cannot load model \"%s\": out of memory", name);
        return EB_ERR_NOMEM;
    }
    snprintf(s->name, sizeof s->name, "%s", name);
    s->input = input;
    s->dims = (uint32_t)dims;
    s->max_batch = (uint32_t)max_batch;
    s->delay_ms = delay_ms;
    s->forward_delay_ms = forward_delay_ms;
    s->corrupt_after = corrupt_after;
    const char *log_path = eb_config_get(cfg, "identity_log_file", NULL);
    if (log_path && *log_path) {
        s->log = fopen(log_path, "a");
        if (!s->log) {
            snprintf(err, err_len, "cannot open identity_log_file \"%s\" for appending: %m",
                     log_path);
            free(s);
            return EB_ERR_IO;
        }
        setvbuf(s->log, NULL, _IOLBF, 0);
    }
    const char *forward_log_path = eb_config_get(cfg, "identity_forward_log_file", NULL);
    if (forward_log_path && *forward_log_path) {
        s->forward_log = fopen(forward_log_path, "a");
        if (!s->forward_log) {
            snprintf(err, err_len, "cannot open identity_forward_log_file \"%s\" for appending: "
                     "%m", forward_log_path);
            if (s->log)
                fclose(s->log);
            free(s);
            return EB_ERR_IO;
        }
    }
    atomic_init(&s->processed, 0);
    *state = s;
    return EB_OK;
}

static eb_status identity_load(const eb_config *cfg, void **state, char *err, size_t err_len)
{
    return identity_load_kind(cfg, state, err, err_len, "identity", EB_INPUT_IMAGE);
}

static eb_status identity_text_load(const eb_config *cfg, void **state, char *err, size_t err_len)
{
    return identity_load_kind(cfg, state, err, err_len, "identity-text", EB_INPUT_TEXT);
}

static void identity_describe(const void *state, eb_model_info *info)
{
    const identity_state *s = state;
    memset(info, 0, sizeof *info);
    info->name = s->name;
    info->model_rev = "identity-v1";
    info->preproc_rev = "none";
    info->dims = s->dims;
    info->input = s->input;
    info->max_batch_items = s->max_batch;
    info->backend = "cpu";
    info->device = "identity (test model)";
}

/* One line for this forward: its item count, then each item's hex SHA-256, written with a
 * single fputs so that a reader never sees half a line. */
static void log_forward(FILE *f, const eb_model_input *in, size_t n)
{
    size_t cap = 24 + n * (2 * EB_HASH_LEN + 1) + 2;
    char *line = malloc(cap);
    if (!line)
        return;
    size_t len = (size_t)snprintf(line, cap, "%zu", n);
    for (size_t i = 0; i < n; i++) {
        uint8_t digest[EB_HASH_LEN];
        eb_sha256(in[i].bytes, in[i].len, digest);
        line[len++] = ' ';
        eb_hex(digest, EB_HASH_LEN, line + len);
        len += 2 * EB_HASH_LEN;
    }
    line[len++] = '\n';
    line[len] = '\0';
    fputs(line, f);
    fflush(f);
    free(line);
}

static eb_status identity_run_batch(void *state, const eb_model_input *in, eb_model_output *out,
                                    size_t n, char *err, size_t err_len)
{
    identity_state *s = state;
    (void)err, (void)err_len;
    int64_t t0 = eb_now_us();
    if (s->forward_delay_ms > 0)
        eb_sleep_us(s->forward_delay_ms * 1000);
    for (size_t i = 0; i < n; i++) {
        if (s->delay_ms > 0)
            eb_sleep_us(s->delay_ms * 1000);
        size_t fail_len = strlen(EB_MODEL_IDENTITY_FAIL_PREFIX);
        if (in[i].len >= fail_len && memcmp(in[i].bytes, EB_MODEL_IDENTITY_FAIL_PREFIX,
                                            fail_len) == 0) {
            out[i].status = EB_ERR_MODEL;
            out[i].dims = 0;
            snprintf(out[i].error, sizeof out[i].error,
                     "identity model: input %zu starts with \"%s\" and fails on purpose", i,
                     EB_MODEL_IDENTITY_FAIL_PREFIX);
        } else {
            uint32_t dims = s->dims;
            if (in[i].output_dim && in[i].output_dim < dims)
                dims = in[i].output_dim;
            eb_model_identity_embed(in[i].bytes, in[i].len, dims, in[i].normalize,
                                    out[i].embedding);
            /* test-only: simulate a device that silently starts computing wrong vectors, so
             * the worker's canary can be seen to catch it */
            if (s->corrupt_after >= 0 && atomic_load(&s->processed) >= (uint64_t)s->corrupt_after)
                out[i].embedding[0] += 0.5f;
            out[i].dims = dims;
            out[i].status = EB_OK;
        }
        if (s->log) {
            uint8_t digest[EB_HASH_LEN];
            char hex[2 * EB_HASH_LEN + 1];
            eb_sha256(in[i].bytes, in[i].len, digest);
            fprintf(s->log, "%s\n", eb_hex(digest, EB_HASH_LEN, hex));
        }
        atomic_fetch_add(&s->processed, 1);
    }
    if (s->forward_log)
        log_forward(s->forward_log, in, n);
    int64_t infer = eb_now_us() - t0;
    for (size_t i = 0; i < n; i++)
        out[i].infer_us = infer;
    return EB_OK;
}

static void identity_destroy(void *state)
{
    identity_state *s = state;
    if (!s)
        return;
    if (s->log)
        fclose(s->log);
    if (s->forward_log)
        fclose(s->forward_log);
    free(s);
}

const eb_model_ops eb_model_identity_ops = {
    .name = "identity",
    .load = identity_load,
    .describe = identity_describe,
    .warm_up = NULL,
    .run_batch = identity_run_batch,
    .destroy = identity_destroy,
};

const eb_model_ops eb_model_identity_text_ops = {
    .name = "identity-text",
    .load = identity_text_load,
    .describe = identity_describe,
    .warm_up = NULL,
    .run_batch = identity_run_batch,
    .destroy = identity_destroy,
};

void eb_model_identity_embed(const void *bytes, size_t len, uint32_t dims, bool normalize,
                             float *out)
{
    uint8_t seed[EB_HASH_LEN + 4];
    uint8_t block[EB_HASH_LEN];
    eb_sha256(bytes, len, seed);
    for (uint32_t j = 0; j < dims; j++) {
        if (j % EB_HASH_LEN == 0) {
            uint32_t k = j / EB_HASH_LEN;
            seed[EB_HASH_LEN + 0] = (uint8_t)(k);
            seed[EB_HASH_LEN + 1] = (uint8_t)(k >> 8);
            seed[EB_HASH_LEN + 2] = (uint8_t)(k >> 16);
            seed[EB_HASH_LEN + 3] = (uint8_t)(k >> 24);
            eb_sha256(seed, sizeof seed, block);
        }
        out[j] = ((float)block[j % EB_HASH_LEN] - 127.5f) / 127.5f;
    }
    if (normalize)
        eb_model_l2_normalize(out, dims);
}

uint64_t eb_model_identity_processed(const void *state)
{
    const identity_state *s = state;
    return s ? atomic_load(&((identity_state *)s)->processed) : 0;
}
