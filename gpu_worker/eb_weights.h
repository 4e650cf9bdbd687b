/* eb_weights — a model's weight plan: which checkpoint tensors (or slices of them) fill which
 * backend weight tensors, laid out in one weights buffer and uploaded in one pass.
 *
 * Both models build a plan at load (SigLIP splits the pooling head's fused in_proj into q and kv
 * with slices; Qwen3 concatenates gate_proj and up_proj into one matrix), then upload it: the
 * buffer is sized from the backend's own storage format for every tensor (eb_ops_weight_bytes),
 * allocated once, and each destination filled from its sources in order. Errors stick: after the
 * first failure every call is a no-op and `status` holds it, with the message in `err`. */
#ifndef EB_WEIGHTS_H
#define EB_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "eb_ops.h"
#include "eb_safetensors.h"
#include "eb_status.h"

#define EB_WEIGHT_MAX_SOURCES 3

typedef struct eb_weight_spec {
    eb_tensor *dst;
    eb_weight_kind kind;
    int ndim;
    int64_t shape[EB_TENSOR_MAX_DIMS];
    int n_src;
    const eb_st_tensor *src[EB_WEIGHT_MAX_SOURCES];
    int64_t src_offset[EB_WEIGHT_MAX_SOURCES]; /* first element of the source to copy */
    int64_t src_n[EB_WEIGHT_MAX_SOURCES];      /* elements to copy */
} eb_weight_spec;

/* Fill st, prefix (prepended to every tensor name), model (for messages, e.g. "SigLIP") and
 * err/err_len; zero the rest. Free with eb_weight_plan_free. */
typedef struct eb_weight_plan {
    const eb_safetensors *st;
    const char *prefix;
    const char *model;
    char *err;
    size_t err_len;
    eb_status status;
    eb_weight_spec *specs;
    size_t n, cap;
} eb_weight_plan;

/* Add destination `dst` of `shape` (ndim dims); returns its spec for eb_weight_plan_source, or
 * NULL after an error. */
eb_weight_spec *eb_weight_plan_add(eb_weight_plan *p, eb_tensor *dst, eb_weight_kind kind,
                                   int ndim, const int64_t *shape);

/* Append checkpoint tensor `name` (expected shape src_ndim/src_shape, checked) to spec w: n
 * elements from element `offset` (n < 0: the whole tensor). */
void eb_weight_plan_source(eb_weight_plan *p, eb_weight_spec *w, const char *name, int src_ndim,
                           const int64_t *src_shape, int64_t offset, int64_t n);

/* One destination filled by one checkpoint tensor of the same shape. */
void eb_weight_plan_simple(eb_weight_plan *p, eb_tensor *dst, eb_weight_kind kind,
                           const char *name, int ndim, const int64_t *shape);

/* Allocate one weights buffer on `be` for the whole plan (*wbuf, owned by the caller: release
 * with be->iface.buffer_free), place every tensor and upload its sources. The plan's sticky
 * status on entry, else EB_ERR_NOMEM / an upload error / EB_ERR_INTERNAL (sources not adding up
 * to the destination), with the message in p->err. */
eb_status eb_weight_plan_upload(eb_weight_plan *p, eb_backend *be, eb_buffer **wbuf);

/* Free the specs (not the tensors or buffer). */
void eb_weight_plan_free(eb_weight_plan *p);

#endif
