/* eb_workers — the registry of connected workers and of the models they serve.
 *
 * A worker appears with READY (its models, backend, device, batch size) and stays while it sends
 * anything at least every 3 heartbeat intervals (Majordomo, ZeroMQ RFC 7/18). The registry
 * answers, in O(1):
 *   - which worker sent this message (identity -> worker),
 *   - which worker should take work for model M: the least recently used among those serving
 *     M with free credit (per model, a list of such workers in LRU order),
 *   - which worker has been silent longest (all workers in a list ordered by last message).
 * It does not send anything and does not own items: eb_broker requeues a dead worker's batches.
 *
 * Workers are reference-counted because finished items name the worker that computed them
 * until their client's reply is sent; a removed worker is freed when the last reference goes.
 *
 * Not thread-safe.
 */
#ifndef EB_WORKERS_H
#define EB_WORKERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "eb_idmap.h"
#include "eb_proto.h"
#include "eb_queue.h"

struct eb_broker_worker;

enum { EB_WORKER_CREDIT_MAX = 1 << 20 };

/* A model known to the broker (announced by at least one worker, ever). Models are never
 * removed: a model whose workers all left keeps its queue until the items' deadlines. */
typedef struct eb_broker_model {
    char name[EB_PROTO_MODEL_NAME_MAX + 1];
    eb_proto_input_kind input; /* image or text (0 until a worker announced it) */
    uint32_t dims;
    char model_rev[EB_PROTO_ID_MAX + 1];
    char preproc_rev[EB_PROTO_ID_MAX + 1];
    eb_queue queue[2];                     /* [eb_proto_priority] */
    struct eb_broker_worker *ready_head, *ready_tail; /* workers with credit, least recently used first */
    uint32_t n_workers;                    /* workers serving it now */
    bool dirty;                            /* queued work may meet credit: dispatch soon */
    struct eb_broker_model *dirty_next;
} eb_broker_model;

/* A worker's membership in one model's ready list. */
typedef struct eb_broker_worker_link {
    struct eb_broker_worker *prev, *next;
    bool linked;
} eb_broker_worker_link;

/* One batch in flight at a worker. */
typedef struct eb_batch {
    struct eb_batch *prev, *next; /* in the worker's list */
    uint64_t id;
    struct eb_broker_worker *worker;
    eb_broker_model *model;
    uint32_t n_items;
    eb_item **items; /* capacity: the broker's max_batch_items; NULL slots = item left */
    int64_t sent_us;
} eb_batch;

typedef struct eb_broker_worker {
    uint8_t key[EB_IDMAP_KEY_MAX]; /* socket index byte + routing identity */
    size_t key_len;
    void *socket;            /* the backend ROUTER it talks on */
    eb_proto_msg ready;      /* its READY (owns id, backend, device, model strings) */
    uint32_t n_models;
    eb_broker_model **models;       /* [n_models] */
    eb_broker_worker_link *links;   /* [n_models], membership in models[i]->ready list */
    uint32_t max_batch;      /* min(READY max_batch, broker max_batch_items) */
    uint32_t credit;         /* items it can take now (broker's view) */
    bool warm, healthy;
    uint32_t reported_inflight;
    int64_t connected_us, last_seen_us, last_sent_us;
    struct eb_broker_worker *live_prev, *live_next; /* ordered by last_seen_us */
    eb_batch *batches;       /* in flight */
    uint32_t inflight_items;
    uint64_t batches_sent, items_done;
    pid_t pid;               /* supervised child pid when known, else 0 */
    int refs;
    bool removed;
} eb_broker_worker;

typedef struct eb_workers {
    eb_idmap *by_key;
    eb_broker_worker *live_head, *live_tail;
    size_t count;
    eb_broker_model **models;
    size_t n_models, cap_models;
    size_t max_models;
} eb_workers;

/* Set up an empty registry. EB_ERR_NOMEM. */
eb_status eb_workers_init(eb_workers *w, size_t max_models);

/* Free the registry, every worker still in it and every model (their queues must be empty). */
void eb_workers_fini(eb_workers *w);

/* The model called name, or NULL. */
eb_broker_model *eb_workers_model(const eb_workers *w, const char *name);

/* The model called name, created (empty, input 0) when absent. NULL when max_models are
 * known already or out of memory. */
eb_broker_model *eb_workers_model_get_or_add(eb_workers *w, const char *name);

/* The worker with this key, or NULL. */
eb_broker_worker *eb_workers_find(const eb_workers *w, const void *key, size_t key_len);

/* Register a worker from its READY message, which is moved into the worker (*ready is zeroed).
 * Models are created as needed; a model's input kind and dims are taken from the first worker
 * that announces it. Credit starts at 0 (the worker sends CREDIT). The worker starts with one reference (the
 * registry's). EB_ERR_INVALID with a reason when the READY disagrees with a known model
 * (input kind or dims), EB_ERR_TOO_LARGE when too many models, EB_ERR_NOMEM. */
eb_status eb_workers_add(eb_workers *w, const void *key, size_t key_len, void *socket,
                         eb_proto_msg *ready, uint32_t max_batch_cap, int64_t now_us,
                         eb_broker_worker **out, char *err, size_t err_len);

/* Record activity from the worker: last_seen_us = now, moved to the end of the live list. */
void eb_workers_touch(eb_workers *w, eb_broker_worker *worker, int64_t now_us);

/* The worker silent the longest, or NULL when none. */
eb_broker_worker *eb_workers_oldest(const eb_workers *w);

/* Set the worker's credit; it joins (credit > 0) or leaves (0) its models' ready lists. A
 * worker that never received a batch joins at the front (least recently used), others at the
 * back. */
void eb_workers_set_credit(eb_workers *w, eb_broker_worker *worker, uint32_t credit);

/* CREDIT: the worker can take `more` items beyond its current credit (an increment, so a
 * CREDIT crossing a REQUEST on the wire never over-commits it). Saturates at
 * EB_WORKER_CREDIT_MAX. */
void eb_workers_add_credit(eb_workers *w, eb_broker_worker *worker, uint32_t more);

/* The least recently used worker with credit serving model, or NULL. */
eb_broker_worker *eb_workers_pick(const eb_broker_model *model);

/* Take `items` of the worker's credit for a batch just sent and make it the most recently used
 * in every ready list (or drop it from them when its credit reaches 0). */
void eb_workers_used(eb_workers *w, eb_broker_worker *worker, uint32_t items);

/* Take the worker out of the registry (identity map, live list, ready lists, model counts).
 * Its batches stay on it for the caller to requeue. Drops the registry's reference. */
void eb_workers_remove(eb_workers *w, eb_broker_worker *worker);

/* Reference counting: a removed worker is freed when the count reaches 0. */
void eb_broker_worker_ref(eb_broker_worker *worker);
void eb_broker_worker_unref(eb_broker_worker *worker);

/* The worker's id string (from READY). */
const char *eb_broker_worker_id(const eb_broker_worker *worker);

/* True when the worker serves model. */
bool eb_broker_worker_serves(const eb_broker_worker *worker, const eb_broker_model *model);

#endif
