/* eb_model — a small registry of model implementations, looked up by name.
 *
 * The worker is told which models to serve by name (--models identity,siglip); each name maps to
 * a static table of functions (eb_model_ops). Built-in implementations are added in seed() below,
 * one line each; tests may register doubles at run time with eb_model_register.
 * The registry is filled before any thread starts, so lookups need no lock.
 */
#include "eb_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eb_model_identity.h"
#include "eb_model_qwen3.h"
#include "eb_model_siglip.h"

enum { REGISTRY_MAX = 32 };

static const eb_model_ops *registry[REGISTRY_MAX];
static size_t registry_n;
static bool registry_seeded;

/* Built-in implementations, registered on first use. */
static void seed(void)
{
    if (registry_seeded)
        return;
    registry_seeded = true;
    registry[registry_n++] = &eb_model_identity_ops;
    registry[registry_n++] = &eb_model_identity_text_ops;
    registry[registry_n++] = &eb_model_siglip_ops;
    registry[registry_n++] = &eb_model_qwen3_ops;
}

const eb_model_ops *eb_model_find(const char *name)
{
    seed();
    if (!name)
        return NULL;
    for (size_t i = 0; i < registry_n; i++)
        if (strcmp(registry[i]->name, name) == 0)
            return registry[i];
    return NULL;
}

eb_status eb_model_register(const eb_model_ops *ops)
{
    seed();
    if (!ops || !ops->name || !ops->load || !ops->describe || !ops->run_batch || !ops->destroy ||
        !eb_proto_model_name_valid(ops->name, strlen(ops->name)))
        return EB_ERR_INVALID;
    if (eb_model_find(ops->name))
        return EB_ERR_BUSY;
    if (registry_n == REGISTRY_MAX)
        return EB_ERR_TOO_LARGE;
    registry[registry_n++] = ops;
    return EB_OK;
}

void eb_model_list(char *out, size_t cap)
{
    seed();
    size_t n = 0;
    if (cap == 0)
        return;
    out[0] = '\0';
    for (size_t i = 0; i < registry_n && n < cap; i++) {
        int w = snprintf(out + n, cap - n, "%s%s", i ? ", " : "", registry[i]->name);
        if (w < 0)
            break;
        n += (size_t)w;
    }
}

eb_model *eb_model_load(const char *name, const eb_config *cfg, char *err, size_t err_len)
{
    const eb_model_ops *ops = eb_model_find(name);
    if (!ops) {
        char names[512];
        eb_model_list(names, sizeof names);
        snprintf(err, err_len, "unknown model \"%s\": this worker knows %s; check --models",
                 name ? name : "(null)", names);
        return NULL;
    }
    eb_model *model = calloc(1, sizeof *model);
    if (!model) {
        snprintf(err, err_len, "cannot load model \"%s\": out of memory", name);
        return NULL;
    }
    model->ops = ops;
    eb_status st = ops->load(cfg, &model->state, err, err_len);
    if (st != EB_OK) {
        free(model);
        return NULL;
    }
    ops->describe(model->state, &model->info);
    if (model->info.max_batch_items == 0 || model->info.dims == 0) {
        snprintf(err, err_len, "model \"%s\" describes itself with dims=%u max_batch_items=%u: "
                 "both must be >= 1 (a bug in the model)", name, model->info.dims,
                 model->info.max_batch_items);
        ops->destroy(model->state);
        free(model);
        return NULL;
    }
    return model;
}

eb_status eb_model_warm_up(eb_model *model, char *err, size_t err_len)
{
    if (!model)
        return EB_ERR_INVALID;
    if (model->ops->warm_up) {
        eb_status st = model->ops->warm_up(model->state, err, err_len);
        if (st != EB_OK)
            return st;
    }
    model->warm = true;
    return EB_OK;
}

/* Run the model on its canary input into out (info.dims floats). */
static eb_status canary_run(eb_model *model, float *out, uint32_t *dims, char *err, size_t err_len)
{
    static const char text[] = "embroker canary: a red running shoe, size 42";
    enum { SIDE = 64 };
    static uint8_t pixels[SIDE * SIDE * 3];
    for (int i = 0; i < SIDE * SIDE * 3; i++) /* a fixed gradient with some texture */
        pixels[i] = (uint8_t)((i / 3 % SIDE) * 3 + (i / 3 / SIDE) * 2 + (i % 3) * 40 + (i * 7 % 13));
    eb_model_input in = {.normalize = true};
    if (model->info.input == EB_INPUT_TEXT) {
        in.kind = EB_INPUT_TEXT;
        in.bytes = (const uint8_t *)text;
        in.len = sizeof text - 1;
    } else {
        in.kind = EB_INPUT_RAW_RGB8;
        in.width = in.height = SIDE;
        in.bytes = pixels;
        in.len = sizeof pixels;
    }
    eb_model_output o = {.embedding = out, .decode_us = -1, .preprocess_us = -1, .infer_us = -1};
    eb_status st = model->ops->run_batch(model->state, &in, &o, 1, err, err_len);
    if (st == EB_OK && o.status != EB_OK) {
        snprintf(err, err_len, "%s", o.error);
        st = o.status;
    }
    *dims = o.dims;
    return st;
}

eb_status eb_model_canary_record(eb_model *model, char *err, size_t err_len)
{
    float *v = calloc(model->info.dims, sizeof *v);
    if (!v)
        return EB_ERR_NOMEM;
    uint32_t dims = 0;
    eb_status st = canary_run(model, v, &dims, err, err_len);
    if (st != EB_OK) {
        free(v);
        return st;
    }
    free(model->canary);
    model->canary = v;
    model->canary_dims = dims;
    return EB_OK;
}

eb_status eb_model_canary_check(eb_model *model, double tolerance, double *distance, char *err,
                                size_t err_len)
{
    if (!model->canary)
        return eb_model_canary_record(model, err, err_len);
    float *v = calloc(model->info.dims, sizeof *v);
    if (!v)
        return EB_ERR_NOMEM;
    uint32_t dims = 0;
    eb_status st = canary_run(model, v, &dims, err, err_len);
    if (st == EB_OK) {
        double num = 0, den = 0;
        for (uint32_t i = 0; i < dims && i < model->canary_dims; i++) {
            double d = (double)v[i] - model->canary[i];
            num += d * d;
            den += (double)model->canary[i] * model->canary[i];
        }
        double dist = dims == model->canary_dims ? sqrt(num / (den > 0 ? den : 1)) : INFINITY;
        if (distance)
            *distance = dist;
        if (!(dist <= tolerance)) {
            snprintf(err, err_len, "model \"%s\": canary vector moved by %.3g (relative L2, "
                     "tolerance %.3g) since warm-up: the model no longer computes what it did",
                     model->info.name, dist, tolerance);
            st = EB_ERR_MODEL;
        }
    }
    free(v);
    return st;
}

void eb_model_destroy(eb_model **model)
{
    if (!model || !*model)
        return;
    (*model)->ops->destroy((*model)->state);
    free((*model)->canary);
    free(*model);
    *model = NULL;
}

bool eb_model_accepts(eb_proto_input_kind model_input, eb_proto_input_kind kind)
{
    if (model_input == EB_INPUT_IMAGE)
        return kind == EB_INPUT_IMAGE || kind == EB_INPUT_RAW_RGB8;
    return model_input == kind;
}

void eb_model_l2_normalize(float *v, size_t n)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum += (double)v[i] * (double)v[i];
    if (sum <= 0.0)
        return;
    float inv = (float)(1.0 / sqrt(sum));
    for (size_t i = 0; i < n; i++)
        v[i] *= inv;
}
