/* eb_model_siglip — SigLIP as a worker model.
 *
 * A batch runs in three steps: every item is decoded and preprocessed on its own into its slot of
 * one pixel buffer (a bad image fails only its item), the good slots go through one forward, and
 * each item's vector is copied out raw or normalised and, when asked, truncated and renormalised.
 * The pixel buffer is sized for the largest batch at load; the resize scratch grows only when a
 * larger image than any before arrives, so steady-state batches allocate nothing but the decoded
 * image itself. */
#include "eb_model_siglip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eb_checkpoint.h"
#include "eb_clock.h"
#include "eb_image.h"
#include "eb_ops.h"
#include "eb_preprocess.h"
#include "eb_resize.h"
#include "eb_siglip.h"

typedef struct siglip_state {
    eb_backend *backend;
    eb_checkpoint *checkpoint;
    eb_siglip *model;
    eb_image_preproc preproc;
    eb_image_options image_options;
    int size;            /* square input side */
    int64_t dims;        /* hidden size */
    int64_t max_batch;
    float *pixels;       /* (max_batch, 3, size, size) host staging */
    float *pooled;       /* (max_batch, dims) */
    float *normalized;   /* (max_batch, dims) */
    size_t *slot_item;   /* slot -> item index */
    uint8_t *scratch;    /* resize scratch, grown on demand */
    size_t scratch_len;
    char model_rev[EB_REV_LEN];
    char preproc_rev[EB_REV_LEN];
    char device[160];
} siglip_state;

static void siglip_destroy(void *p)
{
    siglip_state *s = p;
    if (!s)
        return;
    eb_siglip_destroy(&s->model);
    eb_checkpoint_close(&s->checkpoint);
    eb_backend_destroy(&s->backend);
    free(s->pixels);
    free(s->pooled);
    free(s->normalized);
    free(s->slot_item);
    free(s->scratch);
    free(s);
}

static eb_status siglip_load(const eb_config *cfg, void **out, char *err, size_t err_len)
{
    const char *dir = eb_config_get(cfg, "siglip_dir", NULL);
    if (!dir || !*dir) {
        snprintf(err, err_len, "model siglip needs a checkpoint directory: set --siglip-dir DIR "
                               "(tools: mkcheckpoint siglip-base-patch16-224 DIR, or a Hugging Face "
                               "download of google/siglip-base-patch16-224)");
        return EB_ERR_INVALID;
    }
    int64_t threads = 0, max_batch = 32, max_pixels = (int64_t)EB_IMAGE_DEFAULT_MAX_PIXELS,
            max_bytes = (int64_t)EB_IMAGE_DEFAULT_MAX_ENCODED_BYTES;
    eb_status st;
    if ((st = eb_config_get_int(cfg, "siglip_threads", 0, 0, 1024, &threads, err, err_len)) ||
        (st = eb_config_get_int(cfg, "siglip_max_batch", 32, 1, 1024, &max_batch, err, err_len)) ||
        (st = eb_config_get_int(cfg, "image_max_pixels", max_pixels, 4, (int64_t)1 << 32,
                                &max_pixels, err, err_len)) ||
        (st = eb_config_get_int(cfg, "image_max_bytes", max_bytes, 1, (int64_t)1 << 31,
                                &max_bytes, err, err_len)))
        return st;
    const char *alpha = eb_config_get(cfg, "image_alpha", "drop");
    if (strcmp(alpha, "drop") != 0 && strcmp(alpha, "white") != 0) {
        snprintf(err, err_len, "image_alpha=%s: expected drop or white", alpha);
        return EB_ERR_INVALID;
    }

    siglip_state *s = calloc(1, sizeof *s);
    if (!s)
        return EB_ERR_NOMEM;
    eb_image_options_default(&s->image_options);
    s->image_options.max_pixels = (uint64_t)max_pixels;
    s->image_options.max_encoded_bytes = (size_t)max_bytes;
    s->image_options.alpha = alpha[0] == 'w' ? EB_ALPHA_WHITE : EB_ALPHA_DROP;

    eb_backend_params params = {.n_threads = (int)threads};
    const char *backend = eb_config_get(cfg, "siglip_backend", "auto");
    s->backend = eb_backend_create(backend, &params, err, err_len);
    if (!s->backend) {
        siglip_destroy(s);
        return EB_ERR_UNAVAILABLE;
    }
    s->checkpoint = eb_checkpoint_open(dir, err, err_len);
    if (!s->checkpoint) {
        siglip_destroy(s);
        return EB_ERR_NOT_FOUND;
    }
    st = eb_checkpoint_model_rev(s->checkpoint, s->model_rev, err, err_len);
    if (st != EB_OK) {
        siglip_destroy(s);
        return st;
    }
    s->model = eb_siglip_load(s->backend, s->checkpoint, max_batch, err, err_len);
    if (!s->model) {
        siglip_destroy(s);
        return EB_ERR_MODEL;
    }
    const eb_siglip_config *mc = eb_siglip_get_config(s->model);
    st = eb_checkpoint_image_preproc(s->checkpoint, (int)mc->image_size, &s->preproc, err, err_len);
    if (st != EB_OK) {
        siglip_destroy(s);
        return st;
    }
    if (s->preproc.height != s->preproc.width || s->preproc.height != mc->image_size) {
        snprintf(err, err_len, "preprocessor size %dx%d differs from the model's image_size %lld",
                 s->preproc.width, s->preproc.height, (long long)mc->image_size);
        siglip_destroy(s);
        return EB_ERR_UNSUPPORTED;
    }
    eb_image_preproc_rev(&s->preproc, NULL, s->preproc_rev);
    s->size = (int)mc->image_size;
    s->dims = mc->hidden;
    s->max_batch = max_batch;
    size_t px = (size_t)3 * (size_t)s->size * (size_t)s->size;
    s->pixels = malloc((size_t)max_batch * px * sizeof(float));
    s->pooled = malloc((size_t)max_batch * (size_t)s->dims * sizeof(float));
    s->normalized = malloc((size_t)max_batch * (size_t)s->dims * sizeof(float));
    s->slot_item = malloc((size_t)max_batch * sizeof(size_t));
    if (!s->pixels || !s->pooled || !s->normalized || !s->slot_item) {
        siglip_destroy(s);
        snprintf(err, err_len, "out of memory for batch buffers (max batch %lld)", (long long)max_batch);
        return EB_ERR_NOMEM;
    }
    snprintf(s->device, sizeof s->device, "%s", s->backend->device);
    *out = s;
    return EB_OK;
}

static void siglip_describe(const void *p, eb_model_info *info)
{
    const siglip_state *s = p;
    info->name = "siglip";
    info->model_rev = s->model_rev;
    info->preproc_rev = s->preproc_rev;
    info->dims = (uint32_t)s->dims;
    info->input = EB_INPUT_IMAGE;
    info->max_batch_items = (uint32_t)s->max_batch;
    info->backend = s->backend->name;
    info->device = s->device;
}

/* Resize + normalise img into pixels (3, size, size) with the checkpoint's parameters. */
static eb_status preprocess(siglip_state *s, const eb_image *img, float *pixels, char *err,
                            size_t err_len)
{
    size_t need = eb_resize_scratch_size(img->width, img->height, s->size, s->size) +
                  (size_t)s->size * (size_t)s->size * 3;
    if (need > s->scratch_len) {
        uint8_t *grown = realloc(s->scratch, need);
        if (!grown) {
            snprintf(err, err_len, "out of memory for a %dx%d image's resize scratch", img->width,
                     img->height);
            return EB_ERR_NOMEM;
        }
        s->scratch = grown;
        s->scratch_len = need;
    }
    uint8_t *resized = s->scratch + (need - (size_t)s->size * (size_t)s->size * 3);
    eb_status st = eb_resize_bicubic_rgb8_scratch(img->rgb, img->width, img->height, resized,
                                                  s->size, s->size, s->scratch,
                                                  need - (size_t)s->size * (size_t)s->size * 3);
    if (st != EB_OK) {
        snprintf(err, err_len, "resize of a %dx%d image to %dx%d failed: %s", img->width,
                 img->height, s->size, s->size, eb_status_str(st));
        return st;
    }
    const eb_image_preproc *p = &s->preproc;
    float mean[3] = {0, 0, 0}, std[3] = {1, 1, 1};
    if (p->do_normalize) {
        memcpy(mean, p->mean, sizeof mean);
        memcpy(std, p->std, sizeof std);
    }
    eb_preprocess_normalize_rgb8(resized, s->size, s->size, p->do_rescale ? p->rescale_factor : 1.0,
                                 mean, std, pixels);
    return EB_OK;
}

static eb_status siglip_run_batch(void *p, const eb_model_input *in, eb_model_output *out,
                                  size_t n, char *err, size_t err_len)
{
    siglip_state *s = p;
    if ((int64_t)n > s->max_batch) {
        snprintf(err, err_len, "batch of %zu exceeds siglip_max_batch %lld", n, (long long)s->max_batch);
        return EB_ERR_TOO_LARGE;
    }
    size_t px = (size_t)3 * (size_t)s->size * (size_t)s->size;
    int64_t slots = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t t0 = eb_now_us();
        eb_image img = {0};
        eb_status st;
        if (in[i].kind == EB_INPUT_RAW_RGB8)
            st = eb_image_from_raw_rgb8(in[i].bytes, in[i].len, (int)in[i].width,
                                        (int)in[i].height, &s->image_options, &img,
                                        out[i].error, sizeof out[i].error);
        else
            st = eb_image_decode(in[i].bytes, in[i].len, (eb_image_format)in[i].format,
                                 &s->image_options, &img, out[i].error, sizeof out[i].error);
        int64_t t1 = eb_now_us();
        out[i].decode_us = t1 - t0;
        if (st == EB_OK)
            st = preprocess(s, &img, s->pixels + (size_t)slots * px, out[i].error,
                            sizeof out[i].error);
        eb_image_free(&img);
        out[i].preprocess_us = eb_now_us() - t1;
        if (st != EB_OK) {
            out[i].status = st;
            out[i].dims = 0;
            continue;
        }
        s->slot_item[slots++] = i;
    }
    if (slots == 0)
        return EB_OK;

    int64_t t0 = eb_now_us();
    eb_status st = eb_siglip_embed(s->model, s->pixels, slots, s->pooled, s->normalized, err, err_len);
    int64_t infer_us = eb_now_us() - t0;
    if (st != EB_OK)
        return st; /* a backend failure fails the batch; the worker decides whether to exit */
    for (int64_t k = 0; k < slots; k++) {
        size_t i = s->slot_item[k];
        uint32_t dims = (uint32_t)s->dims;
        bool truncate = in[i].output_dim && in[i].output_dim < dims;
        const float *src = in[i].normalize && !truncate ? s->normalized : s->pooled;
        if (truncate)
            dims = in[i].output_dim;
        memcpy(out[i].embedding, src + (size_t)k * (size_t)s->dims, dims * sizeof(float));
        if (truncate && in[i].normalize)
            eb_model_l2_normalize(out[i].embedding, dims);
        out[i].dims = dims;
        out[i].status = EB_OK;
        out[i].infer_us = infer_us;
    }
    return EB_OK;
}

/* CPU warm-up is one small forward (every shape costs the same code path); on CUDA the backend
 * captures its graphs per batch bucket inside the forward, so every bucket is run once. */
static eb_status siglip_warm_up(void *p, char *err, size_t err_len)
{
    siglip_state *s = p;
    size_t px = (size_t)3 * (size_t)s->size * (size_t)s->size;
    memset(s->pixels, 0, (size_t)s->max_batch * px * sizeof(float));
    bool gpu = strcmp(s->backend->name, "cpu") != 0;
    for (int64_t b = 1; b <= s->max_batch; b = gpu ? b * 2 : s->max_batch + 1) {
        eb_status st = eb_siglip_embed(s->model, s->pixels, b, s->pooled, s->normalized, err, err_len);
        if (st != EB_OK)
            return st;
    }
    return EB_OK;
}

const eb_model_ops eb_model_siglip_ops = {
    .name = "siglip",
    .load = siglip_load,
    .describe = siglip_describe,
    .warm_up = siglip_warm_up,
    .run_batch = siglip_run_batch,
    .destroy = siglip_destroy,
};
