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

void eb_model_destroy(eb_model **model)
{
    if (!model || !*model)
        return;
    (*model)->ops->destroy((*model)->state);
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
