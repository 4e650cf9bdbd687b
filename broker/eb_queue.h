/* eb_queue — work items and the FIFO queues they wait in.
 *
 * A client request with n inputs becomes n items (eb_item, owned by the request). An item waits
 * in the queue of its model and priority class until a worker with credit takes it, travels in
 * a batch, and ends DONE with a result or an error. The state machine is what guarantees that no
 * request is answered twice:
 *
 *   QUEUED --dispatch--> INFLIGHT --reply--> DONE
 *      ^                    |  (worker lost, first time: requeue at the front)
 *      +--------------------+
 *   QUEUED/INFLIGHT --deadline, cancel, client gone, second loss, shutdown--> DONE
 *
 * Only an INFLIGHT item whose batch is the one a reply names accepts that reply; anything else
 * (a late reply from a worker presumed dead, a reply after the deadline) is ignored.
 *
 * Queues are intrusive doubly-linked lists: push, pop and removal from the middle (deadline,
 * cancel) are O(1) and allocate nothing. Not thread-safe.
 */
#ifndef EB_QUEUE_H
#define EB_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "eb_proto.h"

struct eb_request;
struct eb_broker_worker;
struct eb_broker_model;
struct eb_batch;

typedef enum eb_item_state {
    EB_ITEM_NEW = 0,  /* not queued yet */
    EB_ITEM_QUEUED,   /* in its model's queue */
    EB_ITEM_INFLIGHT, /* sent to a worker in item->batch */
    EB_ITEM_DONE,     /* result or error recorded; never changes again */
    EB_ITEM_CACHE,    /* waiting for its Redis lookup (then DONE on a hit, NEW on a miss) */
    EB_ITEM_MERGED,   /* waiting for an identical item in flight (merge_leader) */
} eb_item_state;

typedef struct eb_item {
    struct eb_item *prev, *next; /* queue links (QUEUED only) */
    struct eb_request *request;  /* owner (borrowed) */
    uint32_t index;              /* input index in the request */
    eb_item_state state;
    uint8_t dispatches;          /* times sent to a worker (requeue once: at most 2) */
    struct eb_batch *batch;      /* INFLIGHT: the batch carrying it */
    uint32_t batch_slot;         /* its position in that batch */
    int64_t queued_at_us;        /* when it last entered a queue */
    int64_t queue_us;            /* total time spent queued */
    /* result (DONE) */
    int32_t status;
    char *error;                 /* malloc'ed message or NULL */
    bool has_hash;
    uint8_t hash[EB_PROTO_HASH_BYTES];
    uint32_t dims;
    bool has_result;             /* result holds the embedding frame */
    zmq_msg_t result;
    struct eb_broker_worker *worker;    /* who computed it (a counted reference) or NULL */
    eb_proto_timings timings;    /* worker stages */
    /* cache and merging (docs/search.md, "Cache") */
    struct eb_broker_model *model; /* the model that serves it (scan: per input) */
    bool has_key;                /* key = the client's content hash: cache lookups and merging */
    uint8_t key[EB_PROTO_HASH_BYTES];
    bool cached;                 /* the result came from the cache */
    bool leads;                  /* registered in the broker's merge map under key */
    struct eb_item *merge_leader;              /* MERGED: the item it waits for */
    struct eb_item *waiters;                   /* leader: the items waiting for it */
    struct eb_item *merge_prev, *merge_next;   /* MERGED: links in the leader's waiters */
    int64_t cache_started_us, cache_us;        /* lookup time (-1 = none) */
} eb_item;

typedef struct eb_queue {
    eb_item *head, *tail;
    size_t count;
} eb_queue;

void eb_queue_init(eb_queue *q);

/* Append / prepend (requeue) an item that is in no queue; sets its state to QUEUED. */
void eb_queue_push_back(eb_queue *q, eb_item *item);
void eb_queue_push_front(eb_queue *q, eb_item *item);

/* Unlink an item that is in q (state unchanged: the caller sets the next one). */
void eb_queue_remove(eb_queue *q, eb_item *item);

/* Unlink and return the first item, or NULL when empty. */
eb_item *eb_queue_pop(eb_queue *q);

static inline size_t eb_queue_count(const eb_queue *q)
{
    return q->count;
}

/* Set an item's outcome (state DONE): status, a copy of message (may be NULL). Does nothing to
 * an item already DONE and returns false then; true when the item changed. */
bool eb_item_finish(eb_item *item, int32_t status, const char *message);

/* Release what a DONE item holds (error string, result frame, worker reference through
 * `unref`, which may be NULL) and reset it to NEW. */
void eb_item_release(eb_item *item, void (*unref)(struct eb_broker_worker *));

#endif
