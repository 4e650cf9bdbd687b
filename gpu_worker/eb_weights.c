/* eb_weights — weight plans shared by the models (see eb_weights.h). */
#include "eb_weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

eb_weight_spec *eb_weight_plan_add(eb_weight_plan *p, eb_tensor *dst, eb_weight_kind kind,
                                   int ndim, const int64_t *shape)
{
    if (p->status)
        return NULL;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        eb_weight_spec *s = realloc(p->specs, cap * sizeof(*s));
        if (!s) {
            snprintf(p->err, p->err_len, "cannot load %s: out of memory", p->model);
            p->status = EB_ERR_NOMEM;
            return NULL;
        }
        p->specs = s;
        p->cap = cap;
    }
    eb_weight_spec *w = &p->specs[p->n++];
    memset(w, 0, sizeof(*w));
    w->dst = dst;
    w->kind = kind;
    w->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        w->shape[i] = shape[i];
    return w;
}

void eb_weight_plan_source(eb_weight_plan *p, eb_weight_spec *w, const char *name, int src_ndim,
                           const int64_t *src_shape, int64_t offset, int64_t n)
{
    if (p->status || !w)
        return;
    if (w->n_src == EB_WEIGHT_MAX_SOURCES) {
        snprintf(p->err, p->err_len, "cannot load %s: too many sources for one tensor (a bug)",
                 p->model);
        p->status = EB_ERR_INTERNAL;
        return;
    }
    char full[256];
    snprintf(full, sizeof(full), "%s%s", p->prefix, name);
    const eb_st_tensor *t = eb_safetensors_expect(p->st, full, src_ndim, src_shape, p->err,
                                                  p->err_len);
    if (!t) {
        p->status = EB_ERR_INVALID;
        return;
    }
    w->src[w->n_src] = t;
    w->src_offset[w->n_src] = offset;
    w->src_n[w->n_src] = n < 0 ? t->nelem : n;
    w->n_src++;
}

void eb_weight_plan_simple(eb_weight_plan *p, eb_tensor *dst, eb_weight_kind kind,
                           const char *name, int ndim, const int64_t *shape)
{
    eb_weight_spec *w = eb_weight_plan_add(p, dst, kind, ndim, shape);
    eb_weight_plan_source(p, w, name, ndim, shape, 0, -1);
}

eb_status eb_weight_plan_upload(eb_weight_plan *p, eb_backend *be, eb_buffer **wbuf)
{
    if (p->status)
        return p->status;
    size_t total = 0;
    for (size_t i = 0; i < p->n; i++)
        total += eb_ops_weight_bytes(be, p->specs[i].src[0]->dtype, p->specs[i].kind,
                                     p->specs[i].ndim, p->specs[i].shape);
    *wbuf = be->iface.buffer_alloc(be, total, EB_BUFFER_WEIGHTS);
    if (!*wbuf) {
        snprintf(p->err, p->err_len, "cannot load %s: allocating %zu bytes of weights on %s failed",
                 p->model, total, be->name);
        return p->status = EB_ERR_NOMEM;
    }
    size_t off = 0;
    for (size_t i = 0; i < p->n; i++) {
        eb_weight_spec *w = &p->specs[i];
        eb_status st = eb_ops_weight_place(be, w->dst, *wbuf, &off, w->src[0]->dtype, w->kind,
                                           w->ndim, w->shape);
        int64_t at = 0;
        for (int s = 0; st == EB_OK && s < w->n_src; s++) {
            const eb_st_tensor *src = w->src[s];
            const char *host = (const char *)src->data + (size_t)w->src_offset[s] * src->elem_size;
            st = be->iface.weight_upload(be, w->dst, at, host, src->dtype, w->src_n[s]);
            at += w->src_n[s];
            if (st != EB_OK)
                snprintf(p->err, p->err_len, "cannot load %s: uploading \"%s\" from %s failed: %s",
                         p->model, src->name, src->file, eb_status_str(st));
        }
        if (st == EB_OK && at != eb_tensor_nelem(w->dst)) {
            snprintf(p->err, p->err_len, "cannot load %s: internal size mismatch for \"%s\"",
                     p->model, w->src[0]->name);
            st = EB_ERR_INTERNAL;
        }
        if (st != EB_OK)
            return p->status = st;
    }
    return EB_OK;
}

void eb_weight_plan_free(eb_weight_plan *p)
{
    free(p->specs);
    p->specs = NULL;
    p->n = p->cap = 0;
}
