/* eb_broker — embrokerd: route client requests to workers in batches and answer exactly once.
 *
 * The broker is a single-threaded state machine driven by eb_loop. Messages arrive on ROUTER
 * sockets, are decoded and validated by the codec, and change state in three registries:
 * clients (with their shared-memory segments), workers (with their credit), and requests (each
 * split into items that wait in per-model queues). Work moves only when queued items meet a
 * worker with credit; that check runs once per loop iteration for the models touched in it
 * (the "dirty" list), so a burst of requests received in one iteration leaves as full batches.
 *
 * Exactly-once answers rest on two rules: an item accepts a worker's result only while it is
 * INFLIGHT in the batch the reply names (eb_queue.h), and a request is answered once, when its
 * last item is DONE; a request whose reply went out before some items came back (deadline,
 * cancel, shutdown) lingers as a "zombie" until its in-flight items return or their worker is
 * lost, so a late reply always finds valid memory and is ignored.
 *
 * Inline inputs are forwarded to workers as zmq_msg_copy of the received frames: for messages
 * above ZMQ's small-message size that shares the buffer by reference count, so image bytes are
 * never copied by the broker, and the original stays with the request for a requeue.
 */
#include "eb_broker.h"
#include "eb_status.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <msgpack.h>
#include <zmq.h>

#include "eb_clients.h"
#include "eb_clock.h"
#include "eb_frames.h"
#include "eb_idmap.h"
#include "eb_log.h"
#include "eb_mpack.h"
#include "eb_pgvector.h"
#include "eb_storerec.h"
#include "eb_queue.h"
#include "eb_shm_cleanup.h"
#include "eb_supervisor.h"
#include "eb_workers.h"

enum {
    SOCK_FRONT_IPC = 0,
    SOCK_FRONT_TCP = 1,
    SOCK_BACK_IPC = 2,
    SOCK_BACK_TCP = 3,
    SOCK_COUNT = 4,
    RECV_BURST = 512,       /* messages read per socket per iteration (fairness between sockets) */
    MAXMSG_SLACK = 1 << 16, /* ZMQ_MAXMSGSIZE headroom over the largest legal frame */
    DROP_LOG_PER_SEC = 20,  /* rate limit of "message dropped" lines */
};

typedef struct eb_request {
    struct eb_request *all_prev, *all_next; /* every allocated request */
    struct eb_request *cl_prev, *cl_next;   /* the client's open requests */
    struct eb_request *free_next;
    struct eb_broker *broker;
    eb_client *client; /* NULL once answered or the client is gone */
    uint64_t id;
    eb_proto_msg msg;  /* the decoded REQUEST: owns model name, texts, options */
    eb_frames frames;  /* the received parts: inline inputs live here */
    size_t first_item; /* index in frames.parts of item frame 0 */
    eb_broker_model *model;
    eb_proto_priority priority;
    eb_item *items;
    uint32_t n_items, cap_items;
    uint32_t n_done;     /* items DONE */
    uint32_t n_inflight; /* items sitting in a batch slot */
    bool answered;
    bool freed; /* back in the pool (guards against a second free) */
    int64_t received_us, deadline_us;
    eb_loop_timer deadline_timer;
    /* scan, store and delete: after the items, a search, a durable store or a delete */
    bool composite;            /* scan/store: items done -> composite_items_done */
    bool waiting;              /* a search/delete callback or the store's durability is due */
    int64_t wait_started_us;
    eb_proto_match *matches;   /* malloc'ed, strings in match_text */
    char *match_text;
    uint32_t n_matches;
    int32_t search_status;     /* search_error when != 0 */
    char *search_message;
    int32_t fail_status;       /* overrides the items' status when != 0 */
    char *fail_message;
    bool has_deleted;
    uint64_t deleted;
    char store_id[37];         /* "" when nothing was stored */
    uint64_t store_seq;        /* spool sequence number of the store */
    struct eb_request *store_next; /* in the broker's FIFO of stores awaiting durability */
    int64_t search_us, store_enqueue_us;
} eb_request;

typedef struct broker_counters {
    uint64_t requests, replies, items, batches, requeues, busy, deadline, worker_lost;
    uint64_t workers_lost, clients_reaped, dropped, late_replies, cancelled;
    uint64_t cache_hits, cache_misses, merged, merge_mismatch, scans, stores, deletes;
    uint64_t search_errors, workers_refused;
    uint64_t errors[-EB_STATUS_MIN + 1]; /* replies by status */
} broker_counters;

struct eb_broker {
    eb_broker_options opt;
    void *ctx;
    void *sock[SOCK_COUNT];
    eb_loop *loop;
    int signal_fd; /* read end of the signal self-pipe */
    int signal_wr;
    int lock_fd;
    uint64_t instance_id;
    int64_t started_us;

    eb_clients clients;
    eb_workers workers;
    eb_request *all_requests;
    eb_request *free_requests;
    size_t n_requests, n_open;
    eb_batch *free_batches;
    uint64_t next_batch_id;
    eb_broker_model *dirty_head;

    eb_loop_timer tick_timer;
    eb_loop_timer shutdown_timer;
    bool draining;
    bool finished;

    eb_frames rx;
    uint32_t scratch_cap;
    eb_proto_item *scratch_items;
    eb_proto_result *scratch_results;
    zmq_msg_t *scratch_frames;

    struct eb_supervisor *sup;
    eb_services *services;     /* cache, search, store (each optional) */
    eb_idmap *merges;          /* (model, content hash) -> the item in flight for it */
    eb_request *store_head, *store_tail; /* stores awaiting durability, by spool seq */
    float *put_buf;            /* aligned copy of an embedding for the cache */
    uint32_t put_cap;
    broker_counters n;
    int64_t drop_window_us;
    int drops_in_window;
    uint64_t drops_suppressed;
};

/* ---- small helpers ------------------------------------------------------------------------ */

/* Make a message safe to send and log: when it is not valid UTF-8 or holds control characters
 * (a codec error may quote the hostile bytes it rejected), every byte outside printable ASCII
 * becomes '?'. In place; NULL-safe. */
static const char *clean_text(char *s)
{
    if (!s)
        return s;
    size_t n = strlen(s);
    bool ok = eb_proto_utf8_valid(s, n);
    for (size_t i = 0; ok && i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            ok = false;
    if (!ok)
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
                s[i] = '?';
    return s;
}

/* Identity bytes as hex for logs (at most 32 bytes shown). */
static const char *hex_id(const uint8_t *id, size_t len, char *buf, size_t cap)
{
    static const char digits[] = "0123456789abcdef";
    size_t j = 0;
    for (size_t i = 0; i < len && j + 3 < cap && i < 32; i++) {
        buf[j++] = digits[id[i] >> 4];
        buf[j++] = digits[id[i] & 15];
    }
    buf[j] = 0;
    return buf;
}

/* Log a dropped message, at most DROP_LOG_PER_SEC lines a second (a flood of garbage must not
 * turn into a flood of log lines). */
static void log_drop(eb_broker *b, const char *where, const uint8_t *identity, size_t id_len,
                     eb_status st, const char *reason)
{
    b->n.dropped++;
    int64_t now = eb_now_us();
    if (now - b->drop_window_us >= 1000000) {
        if (b->drops_suppressed)
            eb_log_warn("message_drops_suppressed", "count=%llu",
                        (unsigned long long)b->drops_suppressed);
        b->drop_window_us = now;
        b->drops_in_window = 0;
        b->drops_suppressed = 0;
    }
    if (b->drops_in_window++ >= DROP_LOG_PER_SEC) {
        b->drops_suppressed++;
        return;
    }
    char idbuf[80], why[512];
    snprintf(why, sizeof why, "%s", reason);
    eb_log_warn("message_dropped", "socket=%s peer=%s status=%s reason=\"%s\"", where,
                identity ? hex_id(identity, id_len, idbuf, sizeof idbuf) : "-",
                eb_status_str(st), clean_text(why));
}

static const char *sock_name(int s)
{
    static const char *names[] = {"frontend_ipc", "frontend_tcp", "backend_ipc", "backend_tcp"};
    return s >= 0 && s < SOCK_COUNT ? names[s] : "?";
}

static int sock_index(const eb_broker *b, void *socket)
{
    for (int i = 0; i < SOCK_COUNT; i++)
        if (b->sock[i] == socket)
            return i;
    return -1;
}

/* key = socket index byte + identity, so peers of two sockets never collide. */
static size_t make_key(uint8_t *key, int sock, const uint8_t *identity, size_t len)
{
    if (len + 1 > EB_IDMAP_KEY_MAX)
        return 0;
    key[0] = (uint8_t)sock;
    memcpy(key + 1, identity, len);
    return len + 1;
}

static void count_status(eb_broker *b, int32_t status)
{
    if (status <= 0 && status >= EB_STATUS_MIN)
        b->n.errors[-status]++;
}

/* ---- sending ------------------------------------------------------------------------------ */

static eb_status send_msg(eb_broker *b, void *socket, const uint8_t *key, size_t key_len,
                          eb_proto_msg *msg, zmq_msg_t *items, size_t n_items)
{
    msg->from_broker = true;
    msg->bid = b->instance_id;
    char err[256];
    eb_status st = eb_frames_send_msg(socket, key + 1, key_len - 1, msg, items, n_items,
                                      ZMQ_DONTWAIT, err, sizeof err);
    if (st != EB_OK) {
        char idbuf[80];
        eb_log_warn("send_failed", "socket=%s peer=%s kind=%s status=%s reason=\"%s\"",
                    sock_name(key[0]), hex_id(key + 1, key_len - 1, idbuf, sizeof idbuf),
                    eb_proto_kind_name(msg->kind), eb_status_str(st), err);
    }
    return st;
}

static void send_client_error(eb_broker *b, void *socket, const uint8_t *key, size_t key_len,
                              uint64_t id, eb_status status, const char *text)
{
    char message[EB_PROTO_MESSAGE_MAX];
    snprintf(message, sizeof message, "%s", text ? text : "");
    clean_text(message);
    eb_proto_msg msg;
    eb_proto_msg_init(&msg, EB_MSG_C_REPLY);
    msg.u.reply.id = id;
    msg.u.reply.status = status;
    msg.u.reply.error = message;
    count_status(b, status);
    b->n.replies++;
    send_msg(b, socket, key, key_len, &msg, NULL, 0);
    char idbuf[80];
    eb_log_info("request_rejected", "id=%llu client=%s status=%s reason=\"%s\"",
                (unsigned long long)id, hex_id(key + 1, key_len - 1, idbuf, sizeof idbuf),
                eb_status_str(status), message);
}

static void send_worker_simple(eb_broker *b, eb_broker_worker *w, eb_proto_kind kind,
                               const char *reason)
{
    eb_proto_msg msg;
    eb_proto_msg_init(&msg, kind);
    if (kind == EB_MSG_W_DISCONNECT)
        msg.u.disconnect.reason = reason;
    if (send_msg(b, w->socket, w->key, w->key_len, &msg, NULL, 0) == EB_OK)
        w->last_sent_us = eb_now_us();
}

static void send_disconnect_key(eb_broker *b, void *socket, const uint8_t *key, size_t key_len,
                                const char *reason)
{
    eb_proto_msg msg;
    eb_proto_msg_init(&msg, EB_MSG_W_DISCONNECT);
    msg.u.disconnect.reason = reason;
    send_msg(b, socket, key, key_len, &msg, NULL, 0);
}

/* ---- requests ----------------------------------------------------------------------------- */

static void mark_dirty(eb_broker *b, eb_broker_model *m)
{
    if (m && !m->dirty) {
        m->dirty = true;
        m->dirty_next = b->dirty_head;
        b->dirty_head = m;
    }
}

static void client_unlink_request(eb_request *r)
{
    eb_client *cl = r->client;
    if (!cl)
        return;
    if (r->cl_prev)
        r->cl_prev->cl_next = r->cl_next;
    else
        cl->requests = r->cl_next;
    if (r->cl_next)
        r->cl_next->cl_prev = r->cl_prev;
    r->cl_prev = r->cl_next = NULL;
    cl->n_requests--;
    r->client = NULL;
}

static void request_free(eb_broker *b, eb_request *r)
{
    eb_loop_timer_stop(b->loop, &r->deadline_timer);
    client_unlink_request(r);
    for (uint32_t i = 0; i < r->n_items; i++)
        eb_item_release(&r->items[i], eb_broker_worker_unref);
    free(r->matches);
    free(r->match_text);
    free(r->search_message);
    free(r->fail_message);
    r->matches = NULL;
    r->match_text = r->search_message = r->fail_message = NULL;
    eb_proto_msg_free(&r->msg);
    /* Close the parts but keep the array: the next request received reuses it. */
    for (size_t i = 0; i < r->frames.n; i++)
        zmq_msg_close(&r->frames.parts[i]);
    r->frames.n = 0;
    r->frames.total_bytes = 0;
    if (r->all_prev)
        r->all_prev->all_next = r->all_next;
    else
        b->all_requests = r->all_next;
    if (r->all_next)
        r->all_next->all_prev = r->all_prev;
    r->all_prev = r->all_next = NULL;
    b->n_requests--;
    r->freed = true;
    r->free_next = b->free_requests;
    b->free_requests = r;
}

static void maybe_finish_shutdown(eb_broker *b);

/* Free an answered request once nothing in flight points at it. */
static void request_maybe_free(eb_broker *b, eb_request *r)
{
    if (!r->freed && r->answered && r->n_inflight == 0) {
        request_free(b, r);
        if (b->draining)
            maybe_finish_shutdown(b);
    }
}

/* Send the client its REPLY (if it is still there) and mark the request answered. */
static void request_answer(eb_broker *b, eb_request *r)
{
    if (r->answered)
        return;
    r->answered = true;
    b->n_open--;
    eb_loop_timer_stop(b->loop, &r->deadline_timer);
    int64_t now = eb_now_us();
    const eb_proto_options *opt = &r->msg.u.request.options;

    eb_proto_msg msg;
    eb_proto_msg_init(&msg, EB_MSG_C_REPLY);
    eb_proto_reply *rep = &msg.u.reply;
    rep->id = r->id;
    uint32_t n_ok = 0;
    int32_t first_error = 0;
    const char *first_message = NULL;
    int64_t stage_max[EB_STAGE_COUNT];
    for (int s = 0; s < EB_STAGE_COUNT; s++)
        stage_max[s] = -1;
    for (uint32_t i = 0; i < r->n_items; i++) {
        eb_item *it = &r->items[i];
        eb_proto_result *res = &b->scratch_results[i];
        memset(res, 0, sizeof *res);
        res->status = it->status;
        res->error = it->status ? (it->error ? it->error : eb_status_str(it->status)) : NULL;
        res->has_hash = it->has_hash;
        memcpy(res->hash, it->hash, sizeof res->hash);
        res->dims = it->status == 0 ? it->dims : 0;
        res->worker = it->worker ? eb_broker_worker_id(it->worker) : NULL;
        res->cached = it->cached;
        res->model_rev = (it->status == 0 && it->model && it->model->model_rev[0])
                             ? it->model->model_rev
                             : NULL;
        if (it->cache_us > stage_max[EB_STAGE_CACHE])
            stage_max[EB_STAGE_CACHE] = it->cache_us;
        if (it->status == 0) {
            n_ok++;
        } else if (!first_error) {
            first_error = it->status;
            first_message = res->error;
        }
        count_status(b, it->status);
        /* Per-input worker stages (copy, hash, decode, preprocess) run one input after the
         * other and are summed; infer is the forward of the whole batch, which every input of
         * it reports, so it is the longest, not the sum; queue is the longest wait; total is
         * set below (docs/protocol.md, "Timings"). */
        for (int s = 0; s < EB_STAGE_COUNT; s++) {
            int64_t v = it->timings.us[s];
            if (v < 0 || s == EB_STAGE_QUEUE || s == EB_STAGE_TOTAL || s == EB_STAGE_CACHE)
                continue;
            if (s == EB_STAGE_INFER)
                stage_max[s] = v > stage_max[s] ? v : stage_max[s];
            else
                stage_max[s] = (stage_max[s] < 0 ? 0 : stage_max[s]) + v;
        }
        if (it->dispatches > 0 && it->queue_us > stage_max[EB_STAGE_QUEUE])
            stage_max[EB_STAGE_QUEUE] = it->queue_us;
    }
    /* Whole-request status: OK when any input succeeded (per-input statuses tell the rest);
     * when every input failed, the first input's error. */
    rep->status = (n_ok == 0 && r->n_items > 0) ? first_error : 0;
    rep->error = rep->status ? first_message : NULL;
    rep->n_results = r->n_items;
    rep->results = b->scratch_results;
    for (int s = 0; s < EB_STAGE_COUNT; s++)
        rep->timings.us[s] = stage_max[s];
    rep->timings.us[EB_STAGE_SEARCH] = r->search_us;
    rep->timings.us[EB_STAGE_STORE_ENQUEUE] = r->store_enqueue_us;
    rep->timings.us[EB_STAGE_TOTAL] = now - r->received_us;
    if (r->fail_status) {
        rep->status = r->fail_status;
        rep->error = r->fail_message;
    }
    rep->n_matches = r->n_matches;
    rep->matches = r->matches;
    if (r->search_status) {
        rep->has_search_error = true;
        rep->search_error.code = r->search_status;
        rep->search_error.message = r->search_message;
    }
    rep->store_id = r->store_id[0] ? r->store_id : NULL;
    rep->has_deleted = r->has_deleted;
    rep->deleted = r->deleted;

    size_t n_frames = 0;
    if (opt->return_embedding) {
        for (uint32_t i = 0; i < r->n_items; i++) {
            eb_item *it = &r->items[i];
            zmq_msg_init(&b->scratch_frames[i]);
            if (it->status == 0 && it->has_result) {
                zmq_msg_move(&b->scratch_frames[i], &it->result);
                zmq_msg_close(&it->result);
                it->has_result = false;
            }
        }
        n_frames = r->n_items;
    }
    if (r->client) {
        eb_client *cl = r->client;
        b->n.replies++;
        send_msg(b, cl->socket, cl->key, cl->key_len, &msg, b->scratch_frames, n_frames);
    }
    for (size_t i = 0; i < n_frames; i++)
        zmq_msg_close(&b->scratch_frames[i]);
    if (eb_log_enabled(EB_LOG_INFO)) {
        const eb_proto_timings *t = &rep->timings;
        eb_log_info("request_done",
                    "id=%llu model=%s items=%u ok=%u status=%s queue_us=%lld copy_us=%lld "
                    "hash_us=%lld decode_us=%lld preprocess_us=%lld infer_us=%lld cache_us=%lld "
                    "search_us=%lld matches=%u total_us=%lld",
                    (unsigned long long)r->id, r->model ? r->model->name : "-", r->n_items,
                    n_ok, eb_status_str(rep->status), (long long)t->us[EB_STAGE_QUEUE],
                    (long long)t->us[EB_STAGE_COPY], (long long)t->us[EB_STAGE_HASH],
                    (long long)t->us[EB_STAGE_DECODE], (long long)t->us[EB_STAGE_PREPROCESS],
                    (long long)t->us[EB_STAGE_INFER], (long long)t->us[EB_STAGE_CACHE],
                    (long long)t->us[EB_STAGE_SEARCH], rep->n_matches,
                    (long long)t->us[EB_STAGE_TOTAL]);
    }
    client_unlink_request(r);
    request_maybe_free(b, r);
}

static void merge_resolve(eb_broker *b, eb_item *leader);
static void composite_items_done(eb_broker *b, eb_request *r);

/* Record an item's outcome; answer the request when it was the last one (scan and store go on
 * to their search or store first). */
static void item_done(eb_broker *b, eb_item *it, int32_t status, const char *message)
{
    eb_request *r = it->request;
    if (!eb_item_finish(it, status, message))
        return;
    if (it->leads || it->waiters)
        merge_resolve(b, it);
    r->n_done++;
    if (status == EB_ERR_DEADLINE)
        b->n.deadline++;
    if (r->n_done == r->n_items) {
        if (r->composite)
            composite_items_done(b, r);
        else
            request_answer(b, r);
    }
}

/* Attach a computed result to an item before item_done: the embedding frame (moved out of
 * `frame`, NULL for a failed item), its dims, the verified content hash (NULL = none) and the
 * worker that computed it (NULL for a cache hit; otherwise a reference is taken). */
static void item_set_result(eb_item *it, zmq_msg_t *frame, uint32_t dims,
                            const uint8_t *hash, eb_broker_worker *worker)
{
    it->dims = dims;
    it->has_hash = hash != NULL;
    if (hash)
        memcpy(it->hash, hash, sizeof it->hash);
    if (worker) {
        it->worker = worker;
        eb_broker_worker_ref(worker);
    }
    if (frame) {
        zmq_msg_init(&it->result);
        zmq_msg_move(&it->result, frame);
        it->has_result = true;
    }
}

/* Take an item out of its queue (if queued) and finish it. */
static void merge_unlink(eb_item *it);

static void item_abort(eb_broker *b, eb_item *it, int32_t status, const char *message)
{
    eb_request *r = it->request;
    if (it->state == EB_ITEM_QUEUED && it->model)
        eb_queue_remove(&it->model->queue[r->priority], it);
    else if (it->state == EB_ITEM_MERGED)
        merge_unlink(it);
    /* EB_ITEM_CACHE: the lookup's callback finds the item DONE and drops its answer. */
    item_done(b, it, status, message);
}

/* Finish every unfinished item of r with status. The request is answered by the last one. */
static void request_abort(eb_broker *b, eb_request *r, int32_t status, const char *message)
{
    for (uint32_t i = 0; i < r->n_items && !r->answered; i++)
        if (r->items[i].state != EB_ITEM_DONE)
            item_abort(b, &r->items[i], status, message);
}

static void store_wait_remove(eb_broker *b, eb_request *r);
static void request_fail(eb_request *r, int32_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void on_deadline(eb_loop *loop, eb_loop_timer *timer, void *arg)
{
    (void)loop, (void)timer;
    eb_request *r = arg;
    eb_broker *b = r->broker;
    if (r->waiting && r->store_seq) {
        /* Every item is done; the store is not durable yet (the spool's disk is slow). */
        store_wait_remove(b, r);
        r->waiting = false;
        request_fail(r, EB_ERR_DEADLINE, "deadline passed before the store was durable in the "
                     "spool (store %s may still be written; a retry upserts the same row)",
                     r->store_id);
        request_answer(b, r);
        return;
    }
    char msg[160];
    snprintf(msg, sizeof msg, "deadline of %u ms passed before the input was served",
             r->msg.u.request.options.deadline_ms ? r->msg.u.request.options.deadline_ms
                                                  : (uint32_t)b->opt.default_deadline_ms);
    request_abort(b, r, EB_ERR_DEADLINE, msg);
}

static eb_request *request_alloc(eb_broker *b, uint32_t n_items)
{
    eb_request *r = b->free_requests;
    if (r) {
        b->free_requests = r->free_next;
    } else {
        r = calloc(1, sizeof *r);
        if (!r)
            return NULL;
    }
    eb_item *items = r->items;
    uint32_t cap = r->cap_items;
    eb_frames frames = r->frames; /* empty; its array is reused */
    if (cap < n_items) {
        eb_item *grown = realloc(items, n_items * sizeof *grown);
        if (!grown) {
            r->free_next = b->free_requests;
            b->free_requests = r;
            return NULL;
        }
        items = grown;
        cap = n_items;
    }
    memset(r, 0, sizeof *r);
    r->items = items;
    r->cap_items = cap;
    r->frames = frames;
    r->n_items = n_items;
    memset(items, 0, n_items * sizeof *items);
    for (uint32_t i = 0; i < n_items; i++) {
        items[i].request = r;
        items[i].index = i;
        items[i].cache_us = -1;
        eb_proto_timings_clear(&items[i].timings);
    }
    r->search_us = r->store_enqueue_us = -1;
    r->broker = b;
    eb_loop_timer_init(&r->deadline_timer, on_deadline, r);
    r->all_next = b->all_requests;
    if (b->all_requests)
        b->all_requests->all_prev = r;
    b->all_requests = r;
    b->n_requests++;
    return r;
}

/* ---- cache and merging -------------------------------------------------------------------- */

/* Identical inputs (same model, same content hash) share one computation and one cache entry.
 * The key of a request's input is the hash its client sent: it lets the broker answer from
 * Redis, or wait for an identical input already in flight, without reading the bytes. A client
 * may lie about it, so only the hash the worker computed over the bytes it actually read counts
 * for what is written to the cache, and a waiter takes a leader's result only when that
 * verified hash equals the key it waited on; otherwise it is dispatched on its own. */

static size_t merge_key(uint8_t *out, const eb_item *it)
{
    memcpy(out, &it->model, sizeof it->model);
    memcpy(out + sizeof it->model, it->key, sizeof it->key);
    return sizeof it->model + sizeof it->key;
}

static void item_queue(eb_broker *b, eb_item *it, int64_t now)
{
    it->queued_at_us = now;
    eb_queue_push_back(&it->model->queue[it->request->priority], it);
    mark_dirty(b, it->model);
}

/* A NEW item without a cached result: wait for an identical item in flight (when that one is
 * of the same or a more urgent class), or queue it and become the item others wait for. */
static void item_merge_or_queue(eb_broker *b, eb_item *it, int64_t now)
{
    if (it->has_key) {
        uint8_t key[sizeof(void *) + EB_PROTO_HASH_BYTES];
        size_t key_len = merge_key(key, it);
        eb_item *leader = eb_idmap_get(b->merges, key, key_len);
        if (leader && leader->request->priority <= it->request->priority) {
            it->state = EB_ITEM_MERGED;
            it->merge_leader = leader;
            it->merge_prev = NULL;
            it->merge_next = leader->waiters;
            if (leader->waiters)
                leader->waiters->merge_prev = it;
            leader->waiters = it;
            b->n.merged++;
            return;
        }
        if (!leader && eb_idmap_put(b->merges, key, key_len, it) == EB_OK)
            it->leads = true;
    }
    item_queue(b, it, now);
}

static void merge_unlink(eb_item *it)
{
    eb_item *leader = it->merge_leader;
    if (!leader)
        return;
    if (it->merge_prev)
        it->merge_prev->merge_next = it->merge_next;
    else
        leader->waiters = it->merge_next;
    if (it->merge_next)
        it->merge_next->merge_prev = it->merge_prev;
    it->merge_leader = it->merge_prev = it->merge_next = NULL;
}

/* The leader finished (any status, before its request may be answered: its result frame is
 * still here). Waiters whose key the worker verified get a copy of the result (the frame's
 * buffer is shared, not copied); the others are dispatched on their own. */
static void merge_resolve(eb_broker *b, eb_item *leader)
{
    if (leader->leads) {
        uint8_t key[sizeof(void *) + EB_PROTO_HASH_BYTES];
        size_t key_len = merge_key(key, leader);
        if (eb_idmap_get(b->merges, key, key_len) == leader)
            eb_idmap_remove(b->merges, key, key_len);
        leader->leads = false;
    }
    eb_item *w = leader->waiters;
    leader->waiters = NULL;
    bool ok = leader->status == 0 && leader->has_result && leader->has_hash;
    int64_t now = eb_now_us();
    while (w) {
        eb_item *next = w->merge_next;
        w->merge_leader = w->merge_prev = w->merge_next = NULL;
        w->state = EB_ITEM_NEW;
        if (ok && memcmp(leader->hash, w->key, sizeof w->key) == 0) {
            zmq_msg_t copy;
            zmq_msg_init(&copy);
            zmq_msg_copy(&copy, &leader->result);
            w->timings = leader->timings;
            item_set_result(w, &copy, leader->dims, leader->hash, leader->worker);
            zmq_msg_close(&copy);
            item_done(b, w, 0, NULL);
        } else {
            if (ok)
                b->n.merge_mismatch++; /* the leader's bytes were not what its key claimed */
            item_queue(b, w, now);
        }
        w = next;
    }
}

static void on_cache_get(void *arg, eb_status status, const float *values, uint32_t dims)
{
    eb_item *it = arg;
    eb_request *r = it->request;
    eb_broker *b = r->broker;
    r->n_inflight--; /* the lookup kept the request alive */
    if (it->state != EB_ITEM_CACHE || status == EB_ERR_SHUTDOWN) {
        request_maybe_free(b, r); /* answered meanwhile (deadline, cancel, client gone) */
        return;
    }
    int64_t now = eb_now_us();
    it->cache_us = now - it->cache_started_us;
    it->state = EB_ITEM_NEW;
    zmq_msg_t frame;
    if (status == EB_OK && zmq_msg_init_size(&frame, (size_t)dims * 4) == 0) {
        memcpy(zmq_msg_data(&frame), values, (size_t)dims * 4);
        it->cached = true;
        b->n.cache_hits++;
        item_set_result(it, &frame, dims, it->key, NULL);
        zmq_msg_close(&frame);
        item_done(b, it, 0, NULL);
    } else {
        b->n.cache_misses++;
        item_merge_or_queue(b, it, now);
    }
    request_maybe_free(b, r);
}

/* Start the items of a new request: a cache lookup for those with a key (the result arrives
 * in on_cache_get), else merge or queue. */
static void request_start_items(eb_broker *b, eb_request *r, int64_t now)
{
    eb_cache *cache = eb_services_cache(b->services);
    const eb_proto_request *req = &r->msg.u.request;
    for (uint32_t i = 0; i < r->n_items && !r->answered; i++) {
        eb_item *it = &r->items[i];
        if (it->state != EB_ITEM_NEW)
            continue;
        const eb_proto_input *in = &req->inputs[i];
        if (in->has_hash) {
            it->has_key = true;
            memcpy(it->key, in->hash, sizeof it->key);
        }
        if (it->has_key && cache && it->model->model_rev[0] && eb_cache_is_up(cache)) {
            it->state = EB_ITEM_CACHE;
            it->cache_started_us = now;
            r->n_inflight++;
            if (eb_cache_get(cache, it->model->name, it->model->model_rev,
                             it->model->preproc_rev, it->key, 0, on_cache_get, it) == EB_OK)
                continue;
            r->n_inflight--;
            it->state = EB_ITEM_NEW;
        }
        item_merge_or_queue(b, it, now);
    }
}

/* Write a worker's verified result to the cache (fire and forget). */
static void cache_put(eb_broker *b, const eb_broker_model *m, const eb_proto_item_result *res,
                      const zmq_msg_t *frame, bool normalized)
{
    eb_cache *cache = eb_services_cache(b->services);
    if (!cache || !res->has_hash || !m->model_rev[0] || !eb_cache_is_up(cache) || res->dims == 0)
        return;
    if (b->put_cap < res->dims) {
        float *grown = realloc(b->put_buf, (size_t)res->dims * sizeof *grown);
        if (!grown)
            return;
        b->put_buf = grown;
        b->put_cap = res->dims;
    }
    /* Frames carry no alignment promise: copy before reading floats. */
    memcpy(b->put_buf, zmq_msg_data((zmq_msg_t *)frame), (size_t)res->dims * 4);
    eb_cache_put(cache, m->name, m->model_rev, m->preproc_rev, res->hash, b->put_buf, res->dims,
                 normalized ? EB_CACHE_FLAG_NORMALIZED : 0);
}

/* ---- scan, store, delete ------------------------------------------------------------------ */

static void request_fail(eb_request *r, int32_t status, const char *fmt, ...)
{
    char msg[EB_PROTO_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->fail_status = status;
    free(r->fail_message);
    r->fail_message = strdup(clean_text(msg));
}

static void request_search_error(eb_request *r, int32_t status, const char *message)
{
    char msg[EB_PROTO_MESSAGE_MAX];
    snprintf(msg, sizeof msg, "%s", message ? message : eb_status_str(status));
    r->search_status = status;
    free(r->search_message);
    r->search_message = strdup(clean_text(msg));
    r->broker->n.search_errors++;
}

static void store_wait_push(eb_broker *b, eb_request *r)
{
    r->store_next = NULL;
    if (b->store_tail)
        b->store_tail->store_next = r;
    else
        b->store_head = r;
    b->store_tail = r;
}

static void store_wait_remove(eb_broker *b, eb_request *r)
{
    eb_request *prev = NULL;
    for (eb_request *x = b->store_head; x; prev = x, x = x->store_next) {
        if (x != r)
            continue;
        if (prev)
            prev->store_next = x->store_next;
        else
            b->store_head = x->store_next;
        if (b->store_tail == x)
            b->store_tail = prev;
        x->store_next = NULL;
        return;
    }
}

/* Records up to durable_seq are on disk: answer the store requests waiting for them. */
static void on_store_durable(void *arg, uint64_t durable_seq)
{
    eb_broker *b = arg;
    while (b->store_head && b->store_head->store_seq <= durable_seq) {
        eb_request *r = b->store_head;
        b->store_head = r->store_next;
        if (!b->store_head)
            b->store_tail = NULL;
        r->store_next = NULL;
        r->waiting = false;
        r->search_us = eb_now_us() - r->wait_started_us; /* time to durability */
        request_answer(b, r);
    }
}

/* The revision rows and queries are labelled with: the scan models' names and revisions, so a
 * search only compares vectors made by the same models (docs/search.md, "Revisions"). false
 * with a reason when a configured model has not been announced by any worker yet. */
static bool catalogue_rev(eb_broker *b, char *out, size_t cap, char *why, size_t why_len)
{
    const char *names[2] = {b->opt.scan_image_model, b->opt.scan_text_model};
    size_t off = 0;
    out[0] = 0;
    for (int i = 0; i < 2; i++) {
        if (!names[i][0])
            continue;
        eb_broker_model *m = eb_workers_model(&b->workers, names[i]);
        if (!m || !m->model_rev[0]) {
            eb_set_err(why, why_len,
                       "model \"%s\" has not been announced by any worker yet, so its "
                       "revision (part of every row's ModelRev) is unknown; start a worker for it",
                       names[i]);
            return false;
        }
        off += (size_t)snprintf(out + off, cap - off, "%s%s@%.16s", off ? "+" : "", m->name,
                                m->model_rev);
        if (off >= cap) {
            eb_set_err(why, why_len, "model revision label too long");
            return false;
        }
    }
    return true;
}

static void on_search(void *arg, eb_status status, const eb_search_hit *hits, size_t n,
                      const char *error)
{
    eb_request *r = arg;
    eb_broker *b = r->broker;
    r->waiting = false;
    r->search_us = eb_now_us() - r->wait_started_us;
    const eb_proto_options *opt = &r->msg.u.request.options;
    if (status == EB_OK && n > 0) {
        size_t text = 0;
        for (size_t i = 0; i < n; i++)
            text += strlen(hits[i].product_id) + strlen(hits[i].business_template) +
                    strlen(hits[i].source_type) + 3;
        r->matches = calloc(n, sizeof *r->matches);
        r->match_text = malloc(text);
        if (!r->matches || !r->match_text) {
            request_search_error(r, EB_ERR_NOMEM, "broker out of memory for the matches");
        } else {
            char *p = r->match_text;
            for (size_t i = 0; i < n; i++) {
                const char *f[3] = {hits[i].product_id, hits[i].business_template,
                                    hits[i].source_type};
                const char **dst[3] = {&r->matches[i].product_id, &r->matches[i].template_name,
                                       &r->matches[i].source_type};
                for (int j = 0; j < 3; j++) {
                    size_t len = strlen(f[j]) + 1;
                    memcpy(p, f[j], len);
                    *dst[j] = p;
                    p += len;
                }
                r->matches[i].score = hits[i].score;
            }
            r->n_matches = (uint32_t)n;
        }
    } else if (status == EB_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "no rows with BusinessTemplate \"%s\" and SourceType \"%s\" for "
                 "these models; check the template name, or backfill the catalogue with them",
                 opt->template_name, opt->source_type ? opt->source_type
                                                      : b->opt.catalogue_source);
        request_search_error(r, EB_ERR_NOT_FOUND, msg);
    } else {
        request_search_error(r, status, error);
    }
    request_answer(b, r);
}

static void on_deleted(void *arg, eb_status status, uint64_t rows, const char *error)
{
    eb_request *r = arg;
    eb_broker *b = r->broker;
    r->waiting = false;
    r->search_us = eb_now_us() - r->wait_started_us;
    if (status == EB_OK) {
        r->has_deleted = true;
        r->deleted = rows;
    } else {
        request_fail(r, status, "delete failed: %s", error ? error : eb_status_str(status));
    }
    request_answer(b, r);
}

/* Copy an item's embedding (frame bytes) into an aligned buffer and L2-normalise it. */
static float *item_vector(const eb_item *it)
{
    float *v = malloc((size_t)it->dims * sizeof *v);
    if (!v)
        return NULL;
    memcpy(v, zmq_msg_data((zmq_msg_t *)&it->result), (size_t)it->dims * 4);
    double ss = 0;
    for (uint32_t i = 0; i < it->dims; i++)
        ss += (double)v[i] * v[i];
    if (ss > 0) {
        float inv = (float)(1.0 / sqrt(ss));
        for (uint32_t i = 0; i < it->dims; i++)
            v[i] *= inv;
    }
    return v;
}

/* Every item of a scan or store is done: build the CombinedEmbedding, then search (scan) and
 * spool the row (store, or scan with options.store). */
static void composite_items_done(eb_broker *b, eb_request *r)
{
    const eb_proto_request *req = &r->msg.u.request;
    const eb_proto_options *opt = &req->options;
    bool is_store = req->op == EB_OP_STORE;
    for (uint32_t i = 0; i < r->n_items; i++)
        if (r->items[i].status != 0 || !r->items[i].has_result) {
            request_answer(b, r); /* an input failed: its error is the answer */
            return;
        }
    const eb_item *img = NULL, *txt = NULL;
    for (uint32_t i = 0; i < r->n_items; i++) {
        if (req->inputs[i].kind == EB_INPUT_TEXT)
            txt = &r->items[i];
        else
            img = &r->items[i];
    }
    uint32_t image_dims, text_dims;
    eb_services_dims(b->services, &image_dims, &text_dims);
    char rev[EB_PROTO_ID_MAX + 1], why[EB_PROTO_MESSAGE_MAX];
    const char *unavailable = eb_services_search_unavailable(b->services);
    bool dims_known = image_dims > 0;
    float *iv = NULL, *tv = NULL, *query = NULL, *row = NULL;
    if (dims_known && ((img && img->dims != image_dims) || (txt && txt->dims != text_dims))) {
        const eb_item *bad = img && img->dims != image_dims ? img : txt;
        request_fail(r, EB_ERR_INVALID, "dimension mismatch: model \"%s\" returned %u dimensions "
                     "but the table's %s half has %u; run workers with the table's models, or "
                     "migrate a new database for these", bad->model->name, bad->dims,
                     bad == img ? "image" : "text", bad == img ? image_dims : text_dims);
        goto answer;
    }
    if (!dims_known || !catalogue_rev(b, rev, sizeof rev, why, sizeof why)) {
        const char *reason = dims_known ? why : unavailable;
        if (is_store) {
            request_fail(r, EB_ERR_UNAVAILABLE, "cannot store: %s", reason);
            goto answer;
        }
        request_search_error(r, EB_ERR_UNAVAILABLE, reason);
        goto answer;
    }
    uint32_t combined_dims = image_dims + text_dims;
    iv = img ? item_vector(img) : NULL;
    tv = txt ? item_vector(txt) : NULL;
    query = malloc((size_t)combined_dims * sizeof *query);
    row = malloc((size_t)combined_dims * sizeof *row);
    if ((img && !iv) || (txt && !tv) || !query || !row) {
        request_fail(r, EB_ERR_NOMEM, "broker out of memory");
        goto answer;
    }
    double wq_img = opt->image_weight >= 0 ? opt->image_weight : 1.0;
    double wq_txt = opt->text_weight >= 0 ? opt->text_weight : 1.0;
    if (eb_combined_build(iv, image_dims, tv, text_dims, (float)wq_img, (float)wq_txt, query) !=
            EB_OK ||
        eb_combined_build(iv, image_dims, tv, text_dims, (float)b->opt.image_weight,
                          (float)b->opt.text_weight, row) != EB_OK) {
        request_fail(r, EB_ERR_INVALID, "cannot build the combined embedding: an embedding has "
                     "zero or non-finite norm");
        goto answer;
    }
    if (is_store || opt->store) {
        int64_t t0 = eb_now_us();
        eb_store_record rec;
        memset(&rec, 0, sizeof rec);
        char product[EB_PROTO_ID_MAX + 8], model[2 * EB_PROTO_MODEL_NAME_MAX + 2];
        if (eb_store_id_new(rec.store_id) != EB_OK) {
            request_fail(r, EB_ERR_IO, "cannot draw a store id (getrandom failed)");
            goto answer;
        }
        eb_store_id_str(rec.store_id, r->store_id);
        rec.upsert = is_store;
        if (opt->product_id)
            snprintf(product, sizeof product, "%s", opt->product_id);
        else
            snprintf(product, sizeof product, "scan:%s", r->store_id);
        rec.product_id = product;
        rec.business_template = opt->template_name;
        rec.source_type = is_store ? (opt->source_type ? opt->source_type
                                                       : b->opt.catalogue_source)
                                   : b->opt.scan_source;
        snprintf(model, sizeof model, "%s%s%s", img ? img->model->name : "",
                 img && txt ? "+" : "", txt ? txt->model->name : "");
        rec.model = model;
        rec.model_rev = rev;
        rec.preproc_rev = (img ? img : txt)->model->preproc_rev;
        rec.content_hash = (img ? img : txt)->has_hash ? (img ? img : txt)->hash : NULL;
        rec.image = iv;
        rec.image_dims = img ? image_dims : 0;
        rec.text = tv;
        rec.text_dims = txt ? text_dims : 0;
        rec.combined = row;
        rec.combined_dims = combined_dims;
        eb_status st = eb_storepump_store(eb_services_pump(b->services), &rec, &r->store_seq);
        r->store_enqueue_us = eb_now_us() - t0;
        if (st != EB_OK) {
            r->store_id[0] = 0;
            r->store_seq = 0;
            request_fail(r, st, "the %s was not accepted by the spool (%s)%s",
                         is_store ? "store" : "scan's store", eb_status_str(st),
                         is_store ? "" : "; the matches are still included");
            if (is_store)
                goto answer;
        } else {
            b->n.stores++;
        }
        if (is_store) {
            r->waiting = true;
            r->wait_started_us = eb_now_us();
            store_wait_push(b, r);
            goto done; /* answered by on_store_durable (or the deadline) */
        }
    }
    if (unavailable) {
        request_search_error(r, EB_ERR_UNAVAILABLE, unavailable);
        goto answer;
    }
    eb_search_query q = {
        .business_template = opt->template_name,
        .source_type = opt->source_type ? opt->source_type : b->opt.catalogue_source,
        .model_rev = rev,
        .vector = query,
        .dims = combined_dims,
        .k = opt->k ? opt->k : 10,
        .deadline_us = r->deadline_us,
    };
    r->waiting = true;
    r->wait_started_us = eb_now_us();
    eb_loop_timer_stop(b->loop, &r->deadline_timer); /* the search carries the deadline */
    b->n.scans++;
    eb_status sst = eb_search_run(eb_services_search(b->services), &q, on_search, r, why,
                                  sizeof why);
    if (sst == EB_OK)
        goto done;
    r->waiting = false;
    request_search_error(r, sst, why);
answer:
    request_answer(b, r);
done:
    free(iv);
    free(tv);
    free(query);
    free(row);
}

/* ---- batches ------------------------------------------------------------------------------ */

static eb_batch *batch_alloc(eb_broker *b)
{
    eb_batch *batch = b->free_batches;
    if (batch) {
        b->free_batches = batch->next;
        eb_item **items = batch->items;
        memset(batch, 0, sizeof *batch);
        batch->items = items;
        return batch;
    }
    batch = calloc(1, sizeof *batch);
    if (!batch)
        return NULL;
    batch->items = calloc(b->scratch_cap, sizeof *batch->items);
    if (!batch->items) {
        free(batch);
        return NULL;
    }
    return batch;
}

static void batch_release(eb_broker *b, eb_batch *batch)
{
    eb_broker_worker *w = batch->worker;
    if (w) {
        if (batch->prev)
            batch->prev->next = batch->next;
        else
            w->batches = batch->next;
        if (batch->next)
            batch->next->prev = batch->prev;
    }
    batch->prev = NULL;
    batch->next = b->free_batches;
    b->free_batches = batch;
}

static uint64_t item_wire_id(const eb_batch *batch, uint32_t slot)
{
    return (batch->id << 16) | slot;
}

/* An item came back from a worker without a result (worker lost, item missing from a reply):
 * requeue it at the front once, fail it the second time. */
static void item_lost(eb_broker *b, eb_item *it, const char *worker_id, const char *why)
{
    eb_request *r = it->request;
    if (it->state != EB_ITEM_INFLIGHT)
        return;
    it->batch = NULL;
    if (r->answered) {
        eb_item_finish(it, EB_ERR_WORKER_LOST, NULL);
        return;
    }
    if (it->dispatches < 2) {
        it->queued_at_us = eb_now_us();
        eb_queue_push_front(&it->model->queue[r->priority], it);
        mark_dirty(b, it->model);
        b->n.requeues++;
        return;
    }
    char msg[512];
    snprintf(msg, sizeof msg, "worker %s was lost (%s) while serving this input, after an "
             "earlier worker was lost too; retry later", worker_id, why);
    b->n.worker_lost++;
    item_done(b, it, EB_ERR_WORKER_LOST, msg);
}

/* Declare a worker lost: take it out of the registry, requeue (once) or fail its items. */
static void worker_lost(eb_broker *b, eb_broker_worker *w, const char *why, bool tell_it)
{
    if (w->removed)
        return;
    eb_log_warn("worker_lost", "worker=%s reason=\"%s\" batches_in_flight=%s items_in_flight=%u",
                eb_broker_worker_id(w), why, w->batches ? "yes" : "no", w->inflight_items);
    if (tell_it)
        send_worker_simple(b, w, EB_MSG_W_DISCONNECT, why);
    b->n.workers_lost++;
    /* Keep the worker alive until its batches are processed (items take refs below). */
    eb_broker_worker_ref(w);
    eb_workers_remove(&b->workers, w);
    while (w->batches) {
        eb_batch *batch = w->batches;
        /* Backwards with push_front: the batch returns to the front of its queue in order. */
        for (uint32_t s = batch->n_items; s-- > 0;) {
            eb_item *it = batch->items[s];
            if (!it)
                continue;
            batch->items[s] = NULL;
            eb_request *r = it->request;
            r->n_inflight--;
            item_lost(b, it, eb_broker_worker_id(w), why);
            request_maybe_free(b, r);
        }
        batch_release(b, batch);
    }
    w->inflight_items = 0;
    eb_broker_worker_unref(w);
}

/* Send one batch of model m to worker w. Returns false when nothing more should be sent to w
 * now (no items, or the send failed). */
static bool send_batch(eb_broker *b, eb_broker_worker *w, eb_broker_model *m)
{
    uint32_t limit = w->credit < w->max_batch ? w->credit : w->max_batch;
    if (limit > b->scratch_cap)
        limit = b->scratch_cap;
    if (limit == 0)
        return false;
    eb_batch *batch = batch_alloc(b);
    if (!batch)
        return false;
    int64_t now = eb_now_us();
    uint32_t n = 0, n_frames = 0;
    /* Bulk work goes only to a worker with few batches in flight: a worker runs its batches in
     * order, so bulk items queued inside it would delay every interactive item behind them by
     * whole forwards (seconds on a CPU), where the broker's queues let interactive items
     * overtake. */
    uint32_t batches_inflight = 0;
    for (const eb_batch *x = w->batches; x; x = x->next)
        batches_inflight++;
    bool bulk_ok = batches_inflight < b->opt.bulk_inflight_batches;
    uint32_t bulk_room = b->opt.bulk_max_batch;
    if (!bulk_room) {
        const char *backend = w->ready.u.ready.backend;
        bulk_room = backend && strcmp(backend, "cpu") == 0 ? 1 : limit;
    }
    while (n < limit) {
        eb_queue *q = eb_queue_count(&m->queue[EB_PRIORITY_INTERACTIVE]) ? &m->queue[0]
                      : bulk_ok && bulk_room > 0                           ? &m->queue[1]
                                                                           : NULL;
        if (!q)
            break;
        if (q == &m->queue[1])
            bulk_room--;
        eb_item *it = eb_queue_pop(q);
        if (!it)
            break;
        eb_request *r = it->request;
        if (r->deadline_us <= now) {
            /* Expired while queued (the deadline timer has not run yet): never send it. */
            it->state = EB_ITEM_NEW;
            char msg[160];
            snprintf(msg, sizeof msg, "deadline passed after %lld us in the queue; not sent",
                     (long long)(now - r->received_us));
            item_done(b, it, EB_ERR_DEADLINE, msg);
            continue;
        }
        const eb_proto_input *in = &r->msg.u.request.inputs[it->index];
        const eb_proto_options *opt = &r->msg.u.request.options;
        eb_proto_item *wi = &b->scratch_items[n];
        memset(wi, 0, sizeof *wi);
        wi->kind = in->kind;
        wi->format = in->format;
        wi->width = in->width;
        wi->height = in->height;
        wi->source = in->source;
        wi->normalize = opt->normalize;
        wi->instruction = opt->instruction;
        wi->output_dim = opt->output_dim;
        if (in->source == EB_SOURCE_SHM) {
            eb_segment *seg = r->client ? eb_clients_segment(r->client, in->seg) : NULL;
            if (!seg) {
                it->state = EB_ITEM_NEW;
                item_done(b, it, EB_ERR_STALE, "the input's segment was released");
                continue;
            }
            wi->segment = seg->name;
            wi->epoch = in->epoch;
            wi->off = in->off;
            wi->len = in->len;
        } else if (in->source == EB_SOURCE_INLINE) {
            zmq_msg_t *src = &r->frames.parts[r->first_item + in->frame];
            zmq_msg_init(&b->scratch_frames[n_frames]);
            /* Shares the buffer (reference count) for all but tiny frames: no byte copy. */
            zmq_msg_copy(&b->scratch_frames[n_frames], src);
            wi->frame = n_frames++;
            wi->len = zmq_msg_size(src);
        } else {
            wi->text = in->text;
            wi->text_len = in->text_len;
        }
        batch->items[n] = it;
        it->batch = batch;
        it->batch_slot = n;
        n++;
    }
    if (n == 0) {
        batch->next = b->free_batches;
        b->free_batches = batch;
        return false;
    }
    batch->id = ++b->next_batch_id;
    for (uint32_t s = 0; s < n; s++)
        b->scratch_items[s].item_id = item_wire_id(batch, s);
    eb_proto_msg msg;
    eb_proto_msg_init(&msg, EB_MSG_W_REQUEST);
    msg.u.batch.batch_id = batch->id;
    msg.u.batch.model = m->name;
    msg.u.batch.n_items = n;
    msg.u.batch.items = b->scratch_items;
    eb_status st = send_msg(b, w->socket, w->key, w->key_len, &msg, b->scratch_frames, n_frames);
    for (uint32_t f = 0; f < n_frames; f++)
        zmq_msg_close(&b->scratch_frames[f]);
    if (st != EB_OK) {
        /* Not sent: the items go back to the front in order, without counting a dispatch. */
        for (uint32_t s = n; s-- > 0;) {
            eb_item *it = batch->items[s];
            eb_request *r = it->request;
            it->batch = NULL;
            eb_queue_push_front(&it->model->queue[r->priority], it);
        }
        batch->next = b->free_batches;
        b->free_batches = batch;
        if (st == EB_ERR_BUSY)
            eb_workers_set_credit(&b->workers, w, 0); /* wait for its next CREDIT */
        else
            worker_lost(b, w, "unreachable", false);
        return false;
    }
    batch->worker = w;
    batch->model = m;
    batch->n_items = n;
    batch->sent_us = now;
    batch->prev = NULL;
    batch->next = w->batches;
    if (w->batches)
        w->batches->prev = batch;
    w->batches = batch;
    for (uint32_t s = 0; s < n; s++) {
        eb_item *it = batch->items[s];
        it->state = EB_ITEM_INFLIGHT;
        it->dispatches++;
        it->queue_us += now - it->queued_at_us;
        it->request->n_inflight++;
    }
    w->inflight_items += n;
    w->batches_sent++;
    w->last_sent_us = now;
    b->n.batches++;
    eb_workers_used(&b->workers, w, n);
    eb_log_debug("batch_sent", "batch=%llu worker=%s model=%s items=%u",
                 (unsigned long long)batch->id, eb_broker_worker_id(w), m->name, n);
    return true;
}

static void dispatch_model(eb_broker *b, eb_broker_model *m)
{
    /* Every pass either sends a batch (credit shrinks), loses the worker or its credit, or
     * finds the queues empty, so the loop ends. */
    for (;;) {
        if (eb_queue_count(&m->queue[0]) + eb_queue_count(&m->queue[1]) == 0)
            return;
        eb_broker_worker *w = eb_workers_pick(m);
        if (!w)
            return;
        eb_broker_worker_ref(w);
        bool sent = send_batch(b, w, m);
        bool still_ready = !w->removed && w->credit > 0;
        eb_broker_worker_unref(w);
        if (!sent && still_ready)
            return;
    }
}

static void on_iteration(eb_loop *loop, void *arg)
{
    (void)loop;
    eb_broker *b = arg;
    while (b->dirty_head) {
        eb_broker_model *m = b->dirty_head;
        b->dirty_head = m->dirty_next;
        m->dirty = false;
        m->dirty_next = NULL;
        dispatch_model(b, m);
    }
}

/* ---- health ------------------------------------------------------------------------------- */

eb_status eb_broker_health(eb_broker *b, eb_proto_buf *out)
{
    int64_t now = eb_now_us();
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    eb_services_pack_health(b->services, &pk);

    /* Keys required by docs/protocol.md ("Health") first, then ours. */
    uint64_t errors = 0;
    for (int i = 1; i <= -EB_STATUS_MIN; i++)
        errors += b->n.errors[i];
    eb_mpack_str(&pk, "broker");
    msgpack_pack_map(&pk, 15);
    eb_mpack_kv_u64(&pk, "bid", b->instance_id);
    eb_mpack_kv_u64(&pk, "uptime_s", (uint64_t)((now - b->started_us) / 1000000));
    eb_mpack_kv_u64(&pk, "requests", b->n.requests);
    eb_mpack_kv_u64(&pk, "errors", errors);
    eb_mpack_kv_u64(&pk, "clients", b->clients.count);
    char inst[17];
    snprintf(inst, sizeof inst, "%016llx", (unsigned long long)b->instance_id);
    eb_mpack_kv_str(&pk, "instance", inst);
    eb_mpack_kv_i64(&pk, "pid", (int64_t)getpid());
    eb_mpack_kv_i64(&pk, "uptime_ms", (now - b->started_us) / 1000);
    eb_mpack_kv_bool(&pk, "draining", b->draining);
    eb_mpack_kv_str(&pk, "run_dir", b->opt.run_dir);
    eb_mpack_kv_u64(&pk, "segments", b->clients.n_segments);
    eb_mpack_kv_u64(&pk, "open_requests", b->n_open);
    eb_mpack_kv_i64(&pk, "supervised_workers", b->sup ? eb_supervisor_running(b->sup) : 0);
    eb_mpack_kv_u64(&pk, "worker_restarts", b->sup ? eb_supervisor_restarts(b->sup) : 0);
    eb_mpack_str(&pk, "counters");
    msgpack_pack_map(&pk, 23);
    eb_mpack_kv_u64(&pk, "cache_hits", b->n.cache_hits);
    eb_mpack_kv_u64(&pk, "cache_misses", b->n.cache_misses);
    eb_mpack_kv_u64(&pk, "merged", b->n.merged);
    eb_mpack_kv_u64(&pk, "merge_mismatch", b->n.merge_mismatch);
    eb_mpack_kv_u64(&pk, "scans", b->n.scans);
    eb_mpack_kv_u64(&pk, "stores", b->n.stores);
    eb_mpack_kv_u64(&pk, "deletes", b->n.deletes);
    eb_mpack_kv_u64(&pk, "search_errors", b->n.search_errors);
    eb_mpack_kv_u64(&pk, "workers_refused", b->n.workers_refused);
    eb_mpack_kv_u64(&pk, "requests", b->n.requests);
    eb_mpack_kv_u64(&pk, "replies", b->n.replies);
    eb_mpack_kv_u64(&pk, "items", b->n.items);
    eb_mpack_kv_u64(&pk, "batches", b->n.batches);
    eb_mpack_kv_u64(&pk, "requeues", b->n.requeues);
    eb_mpack_kv_u64(&pk, "busy", b->n.busy);
    eb_mpack_kv_u64(&pk, "deadline", b->n.deadline);
    eb_mpack_kv_u64(&pk, "worker_lost", b->n.worker_lost);
    eb_mpack_kv_u64(&pk, "workers_lost", b->n.workers_lost);
    eb_mpack_kv_u64(&pk, "clients_reaped", b->n.clients_reaped);
    eb_mpack_kv_u64(&pk, "dropped", b->n.dropped);
    eb_mpack_kv_u64(&pk, "late_replies", b->n.late_replies);
    eb_mpack_kv_u64(&pk, "cancelled", b->n.cancelled);
    eb_mpack_str(&pk, "errors");
    size_t n_codes = 0;
    for (int i = 1; i <= -EB_STATUS_MIN; i++)
        n_codes += b->n.errors[i] ? 1 : 0;
    msgpack_pack_map(&pk, n_codes);
    for (int i = 1; i <= -EB_STATUS_MIN; i++)
        if (b->n.errors[i])
            eb_mpack_kv_u64(&pk, eb_status_str((eb_status)-i), b->n.errors[i]);

    eb_mpack_str(&pk, "workers");
    msgpack_pack_array(&pk, b->workers.count);
    for (eb_broker_worker *w = b->workers.live_head; w; w = w->live_next) {
        const eb_proto_ready *rd = &w->ready.u.ready;
        msgpack_pack_map(&pk, 13);
        eb_mpack_kv_str(&pk, "id", eb_broker_worker_id(w));
        eb_mpack_str(&pk, "models");
        msgpack_pack_array(&pk, w->n_models);
        for (uint32_t i = 0; i < w->n_models; i++)
            eb_mpack_str(&pk, w->models[i]->name);
        eb_mpack_kv_str(&pk, "backend", rd->backend);
        eb_mpack_kv_str(&pk, "device", rd->device);
        eb_mpack_kv_bool(&pk, "warm", w->warm);
        eb_mpack_kv_bool(&pk, "healthy", w->healthy);
        eb_mpack_kv_u64(&pk, "inflight", w->inflight_items);
        eb_mpack_kv_u64(&pk, "credit", w->credit);
        eb_mpack_kv_u64(&pk, "heartbeat_age_ms", (uint64_t)((now - w->last_seen_us) / 1000));
        eb_mpack_kv_u64(&pk, "max_batch", w->max_batch);
        eb_mpack_kv_u64(&pk, "batches", w->batches_sent);
        eb_mpack_kv_u64(&pk, "items_done", w->items_done);
        eb_mpack_kv_i64(&pk, "pid", (int64_t)w->pid);
    }

    eb_mpack_str(&pk, "models");
    msgpack_pack_map(&pk, b->workers.n_models);
    for (size_t i = 0; i < b->workers.n_models; i++) {
        eb_broker_model *m = b->workers.models[i];
        eb_mpack_str(&pk, m->name);
        msgpack_pack_map(&pk, 7);
        eb_mpack_kv_u64(&pk, "queue_interactive",
                        eb_queue_count(&m->queue[EB_PRIORITY_INTERACTIVE]));
        eb_mpack_kv_u64(&pk, "queue_bulk", eb_queue_count(&m->queue[EB_PRIORITY_BULK]));
        eb_mpack_kv_u64(&pk, "workers", m->n_workers);
        eb_mpack_kv_str(&pk, "input", m->input ? eb_proto_input_kind_str(m->input) : "unknown");
        eb_mpack_kv_u64(&pk, "dims", m->dims);
        eb_mpack_kv_str(&pk, "model_rev", m->model_rev);
        eb_mpack_kv_str(&pk, "preproc_rev", m->preproc_rev);
    }
    if (!sbuf.data) {
        msgpack_sbuffer_destroy(&sbuf);
        return EB_ERR_NOMEM;
    }
    out->data = (uint8_t *)sbuf.data;
    out->len = sbuf.size;
    return EB_OK;
}

/* ---- client messages ---------------------------------------------------------------------- */

static void reply_health(eb_broker *b, eb_client *cl, uint64_t id, int64_t received_us)
{
    eb_proto_buf health = {0};
    eb_status st = eb_broker_health(b, &health);
    if (st != EB_OK) {
        send_client_error(b, cl->socket, cl->key, cl->key_len, id, st, "cannot build health");
        return;
    }
    eb_proto_msg msg;
    eb_proto_msg_init(&msg, EB_MSG_C_REPLY);
    msg.u.reply.id = id;
    msg.u.reply.health = health.data;
    msg.u.reply.health_len = health.len;
    msg.u.reply.timings.us[EB_STAGE_TOTAL] = eb_now_us() - received_us;
    b->n.replies++;
    count_status(b, 0);
    send_msg(b, cl->socket, cl->key, cl->key_len, &msg, NULL, 0);
    eb_proto_buf_free(&health);
}

/* The model called name: known from a worker's READY, or (during unknown_model_wait_ms after
 * start, while workers are still registering) a placeholder that collects requests. NULL with
 * EB_ERR_NOT_FOUND's reason in err. */
static eb_broker_model *find_model(eb_broker *b, const char *name, char *err, size_t err_len)
{
    eb_broker_model *m = eb_workers_model(&b->workers, name);
    if (m)
        return m;
    int64_t age_ms = (eb_now_us() - b->started_us) / 1000;
    if (age_ms < b->opt.unknown_model_wait_ms)
        m = eb_workers_model_get_or_add(&b->workers, name);
    if (m)
        return m;
    char known[512] = "";
    size_t off = 0;
    for (size_t i = 0; i < b->workers.n_models && off < sizeof known - 80; i++)
        off += (size_t)snprintf(known + off, sizeof known - off, "%s%s", i ? ", " : "",
                                b->workers.models[i]->name);
    eb_set_err(err, err_len, "model \"%s\" is not served by any worker (known: %s); start a worker "
               "for it or check the name", name, off ? known : "none");
    return NULL;
}

/* EB_ERR_INVALID when m is known to take the other kind of input. */
static eb_status check_model_input(const eb_broker_model *m, bool image, const char *what,
                                   char *err, size_t err_len)
{
    if (!m->input)
        return EB_OK;
    bool model_image = m->input == EB_INPUT_IMAGE || m->input == EB_INPUT_RAW_RGB8;
    if (model_image == image)
        return EB_OK;
    eb_set_err(err, err_len, "model \"%s\" takes %s inputs; %s", m->name,
               model_image ? "image" : "text", what);
    return EB_ERR_INVALID;
}

static eb_status check_queue_room(eb_broker *b, const eb_broker_model *m,
                                  eb_proto_priority priority, uint32_t n, char *err,
                                  size_t err_len)
{
    size_t depth = eb_queue_count(&m->queue[priority]);
    if (depth + n <= b->opt.queue_limit)
        return EB_OK;
    eb_set_err(err, err_len, "model \"%s\" %s queue holds %zu of %u items; retry later", m->name,
               eb_proto_priority_str(priority), depth, b->opt.queue_limit);
    b->n.busy++;
    return EB_ERR_BUSY;
}

/* Check an embed request against what the broker knows; on failure write the status and
 * reason. */
static eb_status validate_request(eb_broker *b, const eb_proto_request *req,
                                  eb_broker_model **model_out, char *err, size_t err_len)
{
    *model_out = NULL;
    bool image_op = req->op == EB_OP_EMBED_IMAGE;
    if (req->op != EB_OP_EMBED_IMAGE && req->op != EB_OP_EMBED_TEXT) {
        eb_set_err(err, err_len, "op %d is not supported", (int)req->op);
        return EB_ERR_UNSUPPORTED;
    }
    if (!req->model) {
        eb_set_err(err, err_len, "request has no model; name one (e.g. \"siglip\")");
        return EB_ERR_INVALID;
    }
    if (req->n_inputs == 0 || req->n_inputs > b->scratch_cap) {
        eb_set_err(err, err_len, "request has %u inputs; send 1 to %u", req->n_inputs,
                   b->scratch_cap);
        return req->n_inputs ? EB_ERR_TOO_LARGE : EB_ERR_INVALID;
    }
    eb_broker_model *m = find_model(b, req->model, err, err_len);
    if (!m)
        return EB_ERR_NOT_FOUND;
    eb_status st = check_model_input(m, image_op, image_op ? "use embed_text" : "use embed_image",
                                     err, err_len);
    if (st != EB_OK)
        return st;
    for (uint32_t i = 0; i < req->n_inputs; i++) {
        const eb_proto_input *in = &req->inputs[i];
        bool is_image = in->kind == EB_INPUT_IMAGE || in->kind == EB_INPUT_RAW_RGB8;
        if (is_image != image_op) {
            eb_set_err(err, err_len, "inputs[%u] is %s but op is %s", i,
                       eb_proto_input_kind_str(in->kind), eb_proto_op_str(req->op));
            return EB_ERR_INVALID;
        }
    }
    if ((st = check_queue_room(b, m, req->options.priority, req->n_inputs, err, err_len)))
        return st;
    *model_out = m;
    return EB_OK;
}

/* Check a scan or store: the broker's scan models serve its inputs (a request may name them,
 * but not others: rows and queries must come from the same models), a template to filter or
 * store under, and full-length embeddings. */
static eb_status validate_composite(eb_broker *b, const eb_proto_request *req,
                                    eb_broker_model **image_model, eb_broker_model **text_model,
                                    char *err, size_t err_len)
{
    *image_model = *text_model = NULL;
    const eb_proto_options *opt = &req->options;
    const char *op = eb_proto_op_str(req->op);
    if (!opt->template_name) {
        eb_set_err(err, err_len,
                   "op %s needs options.filters.template (the BusinessTemplate to %s)", op,
                   req->op == EB_OP_SCAN ? "search" : "store under");
        return EB_ERR_INVALID;
    }
    if (opt->output_dim) {
        eb_set_err(err, err_len, "op %s works on full-length embeddings; drop options.output_dim",
                   op);
        return EB_ERR_INVALID;
    }
    if (req->op == EB_OP_STORE) {
        if (!eb_services_pump(b->services)) {
            eb_set_err(err, err_len, "op store needs the database: %s",
                       eb_services_search_unavailable(b->services));
            return EB_ERR_UNAVAILABLE;
        }
        if (opt->source_type && strcmp(opt->source_type, b->opt.scan_source) == 0) {
            eb_set_err(err, err_len,
                       "op store writes catalogue rows; SourceType \"%s\" is reserved "
                       "for stored scans (use scan with options.store)",
                       opt->source_type);
            return EB_ERR_INVALID;
        }
    }
    if (req->op == EB_OP_SCAN && opt->store && !eb_services_pump(b->services)) {
        eb_set_err(err, err_len, "options.store needs the database: %s",
                   eb_services_search_unavailable(b->services));
        return EB_ERR_UNAVAILABLE;
    }
    for (uint32_t i = 0; i < req->n_inputs; i++) {
        bool is_text = req->inputs[i].kind == EB_INPUT_TEXT;
        const char *configured = is_text ? b->opt.scan_text_model : b->opt.scan_image_model;
        const char *named = is_text ? req->text_model : req->model;
        if (!configured[0]) {
            eb_set_err(err, err_len, "this broker has no scan_%s_model, so op %s takes no %s input",
                       is_text ? "text" : "image", op, is_text ? "text" : "image");
            return EB_ERR_INVALID;
        }
        if (named && strcmp(named, configured) != 0) {
            eb_set_err(err, err_len, "op %s uses the broker's scan %s model \"%s\", not \"%s\" "
                       "(stored rows and queries must come from the same model)", op,
                       is_text ? "text" : "image", configured, named);
            return EB_ERR_INVALID;
        }
        eb_broker_model *m = find_model(b, configured, err, err_len);
        if (!m)
            return EB_ERR_NOT_FOUND;
        eb_status st = check_model_input(m, !is_text, "check scan_image_model/scan_text_model",
                                         err, err_len);
        if (st == EB_OK)
            st = check_queue_room(b, m, opt->priority, 1, err, err_len);
        if (st != EB_OK)
            return st;
        *(is_text ? text_model : image_model) = m;
    }
    return EB_OK;
}

/* Check every shared-memory reference against the client's registered segments (id, epoch,
 * bounds, overflow) before anything is queued; a bad one fails only its own input, like a bad
 * reference found by a worker. */
static void fail_bad_references(eb_broker *b, eb_request *r, eb_client *cl)
{
    for (uint32_t i = 0; i < r->n_items && !r->answered; i++) {
        const eb_proto_input *in = &r->msg.u.request.inputs[i];
        if (in->source != EB_SOURCE_SHM)
            continue;
        char why[512];
        eb_status st;
        eb_segment *seg = eb_clients_segment(cl, in->seg);
        if (!seg) {
            st = EB_ERR_NOT_FOUND;
            snprintf(why, sizeof why, "inputs[%u] references segment %u, which this client has "
                     "not registered (or it was released); register it or send inline bytes",
                     i, in->seg);
        } else {
            eb_shm_ref ref = {.epoch = in->epoch, .offset = in->off, .length = in->len};
            char detail[256];
            st = eb_shm_reader_validate(seg->reader, &ref, detail, sizeof detail);
            if (st != EB_OK) /* formatted only when needed: this runs for every shm input */
                snprintf(why, sizeof why, "inputs[%u]: %s", i, detail);
        }
        if (st != EB_OK)
            item_done(b, &r->items[i], st, why);
    }
}

/* Link a new request to its client and start its deadline. */
static void request_open(eb_broker *b, eb_request *r, eb_client *cl, int64_t now)
{
    r->id = r->msg.u.request.id;
    r->priority = r->msg.u.request.options.priority;
    r->received_us = now;
    uint32_t deadline_ms = r->msg.u.request.options.deadline_ms;
    r->deadline_us = now + (deadline_ms ? (int64_t)deadline_ms
                                        : b->opt.default_deadline_ms) * 1000;
    r->client = cl;
    r->cl_next = cl->requests;
    if (cl->requests)
        cl->requests->cl_prev = r;
    cl->requests = r;
    cl->n_requests++;
    b->n_open++;
    b->n.items += r->n_items;
    eb_loop_timer_start(b->loop, &r->deadline_timer, r->deadline_us);
}

/* op delete: no items, one statement through the pool; on_deleted answers. */
static void handle_delete(eb_broker *b, eb_client *cl, eb_proto_msg *msg, int64_t now)
{
    const eb_proto_request *req = &msg->u.request;
    eb_search *search = eb_services_search(b->services);
    const char *why = eb_services_search_unavailable(b->services);
    if (!search || why) {
        send_client_error(b, cl->socket, cl->key, cl->key_len, req->id, EB_ERR_UNAVAILABLE,
                          why ? why : "search is off");
        return;
    }
    if (req->options.template_name) {
        send_client_error(b, cl->socket, cl->key, cl->key_len, req->id, EB_ERR_UNSUPPORTED,
                          "delete removes every row of a product; filtering it by template is "
                          "not supported: omit options.filters.template");
        return;
    }
    eb_request *r = request_alloc(b, 0);
    if (!r) {
        send_client_error(b, cl->socket, cl->key, cl->key_len, req->id, EB_ERR_NOMEM,
                          "broker out of memory");
        return;
    }
    r->msg = *msg;
    memset(msg, 0, sizeof *msg);
    request_open(b, r, cl, now);
    r->waiting = true;
    r->wait_started_us = now;
    eb_loop_timer_stop(b->loop, &r->deadline_timer); /* the pool's deadline bounds it */
    b->n.deletes++;
    eb_status st = eb_search_delete(search, r->msg.u.request.options.product_id, on_deleted, r);
    if (st != EB_OK) {
        r->waiting = false;
        request_fail(r, st, "delete not accepted: %s", eb_status_str(st));
        request_answer(b, r);
    }
}

/* A decoded REQUEST: validate, then start its items (cache lookup, merge or queue). Takes msg
 * and b->rx. */
static void handle_request(eb_broker *b, eb_client *cl, eb_proto_msg *msg,
                           const eb_frames_view *view, int64_t now)
{
    const eb_proto_request *req = &msg->u.request;
    b->n.requests++;
    if (b->draining && req->op != EB_OP_HEALTH) {
        send_client_error(b, cl->socket, cl->key, cl->key_len, req->id, EB_ERR_SHUTDOWN,
                          "the broker is shutting down and takes no new requests; retry "
                          "against its successor");
        return;
    }
    if (req->op == EB_OP_HEALTH) {
        reply_health(b, cl, req->id, now);
        return;
    }
    if (req->op == EB_OP_DELETE) {
        handle_delete(b, cl, msg, now);
        return;
    }
    char err[512];
    eb_broker_model *m = NULL, *text_m = NULL;
    bool composite = req->op == EB_OP_SCAN || req->op == EB_OP_STORE;
    eb_status st = composite ? validate_composite(b, req, &m, &text_m, err, sizeof err)
                             : validate_request(b, req, &m, err, sizeof err);
    if (st != EB_OK) {
        send_client_error(b, cl->socket, cl->key, cl->key_len, req->id, st, err);
        return;
    }
    eb_request *r = request_alloc(b, req->n_inputs);
    if (!r) {
        send_client_error(b, cl->socket, cl->key, cl->key_len, req->id, EB_ERR_NOMEM,
                          "broker out of memory");
        return;
    }
    r->msg = *msg;
    memset(msg, 0, sizeof *msg);
    /* Swap: the request keeps the received parts, the receiver gets the request's empty
     * (pooled) array, so steady state allocates no parts arrays. */
    eb_frames spare = r->frames;
    r->frames = b->rx;
    b->rx = spare;
    r->first_item = view->first_item;
    r->composite = composite;
    r->model = m ? m : text_m;
    for (uint32_t i = 0; i < r->n_items; i++)
        r->items[i].model = r->msg.u.request.inputs[i].kind == EB_INPUT_TEXT && composite
                                ? text_m
                                : m;
    request_open(b, r, cl, now);
    fail_bad_references(b, r, cl);
    if (r->answered)
        return; /* every input failed (r is back in the pool: touch nothing else) */
    request_start_items(b, r, now);
}

/* Forget a client: its open requests are dropped (no one to answer), its segments unlinked and
 * released by every worker. */
static void client_lost(eb_broker *b, eb_client *cl, const char *why)
{
    char idbuf[80];
    eb_log_info("client_lost", "client=%s reason=\"%s\" open_requests=%zu segments=%u",
                hex_id(cl->key + 1, cl->key_len - 1, idbuf, sizeof idbuf), why, cl->n_requests,
                cl->n_segments);
    while (cl->requests) {
        eb_request *r = cl->requests;
        client_unlink_request(r); /* no reply will be sent */
        request_abort(b, r, EB_ERR_CANCELLED, "client gone");
    }
    for (uint32_t i = 0; i < cl->n_segments; i++) {
        eb_segment *s = cl->segments[i];
        if (!s->proven)
            continue; /* never proven ours to remove */
        eb_status st = eb_shm_cleanup_unlink(s->name, geteuid());
        eb_log_info("segment_released", "segment=%s unlink=%s", s->name, eb_status_str(st));
        for (eb_broker_worker *w = b->workers.live_head; w; w = w->live_next) {
            eb_proto_msg msg;
            eb_proto_msg_init(&msg, EB_MSG_W_RELEASE_SEGMENT);
            msg.u.release.segment = s->name;
            if (send_msg(b, w->socket, w->key, w->key_len, &msg, NULL, 0) == EB_OK)
                w->last_sent_us = eb_now_us();
        }
    }
    eb_clients_remove(&b->clients, cl);
}

static void handle_client_msg(eb_broker *b, int s, eb_proto_msg *msg, const eb_frames_view *view)
{
    int64_t now = eb_now_us();
    uint8_t key[EB_IDMAP_KEY_MAX];
    size_t key_len = make_key(key, s, view->identity, view->identity_len);
    if (!key_len) {
        log_drop(b, sock_name(s), NULL, 0, EB_ERR_PROTOCOL, "identity too long");
        return;
    }
    if (msg->kind == EB_MSG_C_DISCONNECT) {
        eb_client *cl = eb_clients_find(&b->clients, key, key_len);
        if (cl)
            client_lost(b, cl, msg->u.disconnect.reason ? msg->u.disconnect.reason
                                                        : "disconnect");
        return;
    }
    eb_client *cl = eb_clients_touch(&b->clients, key, key_len, b->sock[s],
                                     s == SOCK_FRONT_IPC, now);
    if (!cl) {
        log_drop(b, sock_name(s), view->identity, view->identity_len, EB_ERR_NOMEM,
                 "cannot record client");
        return;
    }
    char err[512];
    switch (msg->kind) {
    case EB_MSG_C_REQUEST:
        handle_request(b, cl, msg, view, now);
        break;
    case EB_MSG_C_HEARTBEAT: {
        eb_proto_msg hb;
        eb_proto_msg_init(&hb, EB_MSG_C_HEARTBEAT);
        send_msg(b, cl->socket, cl->key, cl->key_len, &hb, NULL, 0);
        break;
    }
    case EB_MSG_C_REGISTER: {
        eb_proto_msg out;
        uint8_t nonce[EB_PROTO_NONCE_BYTES];
        eb_status st = eb_clients_register(&b->clients, cl, msg->u.reg.segment, msg->u.reg.size,
                                           nonce, err, sizeof err);
        if (st == EB_OK) {
            eb_proto_msg_init(&out, EB_MSG_C_CHALLENGE);
            out.u.challenge.segment = msg->u.reg.segment;
            memcpy(out.u.challenge.nonce, nonce, sizeof nonce);
        } else {
            eb_proto_msg_init(&out, EB_MSG_C_REGISTERED);
            out.u.registered.segment = msg->u.reg.segment;
            out.u.registered.status = st;
            out.u.registered.error = clean_text(err);
            eb_log_warn("segment_refused", "segment=%s status=%s reason=\"%s\"",
                        msg->u.reg.segment, eb_status_str(st), err);
        }
        send_msg(b, cl->socket, cl->key, cl->key_len, &out, NULL, 0);
        break;
    }
    case EB_MSG_C_PROVE: {
        eb_segment *seg = NULL;
        eb_status st = eb_clients_prove(&b->clients, cl, msg->u.prove.segment, &seg, err,
                                        sizeof err);
        eb_proto_msg out;
        eb_proto_msg_init(&out, EB_MSG_C_REGISTERED);
        out.u.registered.segment = msg->u.prove.segment;
        out.u.registered.status = st;
        if (st == EB_OK) {
            out.u.registered.seg = seg->id;
            out.u.registered.epoch = seg->epoch;
            eb_log_info("segment_registered", "segment=%s seg=%u size=%llu", seg->name, seg->id,
                        (unsigned long long)seg->size);
        } else {
            out.u.registered.error = clean_text(err);
            eb_log_warn("segment_refused", "segment=%s status=%s reason=\"%s\"",
                        msg->u.prove.segment, eb_status_str(st), err);
        }
        send_msg(b, cl->socket, cl->key, cl->key_len, &out, NULL, 0);
        break;
    }
    case EB_MSG_C_CANCEL:
        for (eb_request *r = cl->requests; r; r = r->cl_next)
            if (r->id == msg->u.cancel.id) {
                b->n.cancelled++;
                request_abort(b, r, EB_ERR_CANCELLED, "cancelled by the client");
                break;
            }
        break;
    default:
        log_drop(b, sock_name(s), view->identity, view->identity_len, EB_ERR_PROTOCOL,
                 "unexpected command on the client channel");
        break;
    }
}

static void on_frontend(eb_loop *loop, void *socket, int fd, short revents, void *arg)
{
    (void)loop, (void)fd, (void)revents;
    eb_broker *b = arg;
    int s = sock_index(b, socket);
    size_t max_frames = 4 + (size_t)b->opt.limits.max_batch_items;
    uint64_t max_bytes = b->opt.limits.max_message_bytes + MAXMSG_SLACK;
    char err[512];
    for (int burst = 0; burst < RECV_BURST; burst++) {
        eb_status st = eb_frames_recv(socket, ZMQ_DONTWAIT, max_frames, max_bytes, &b->rx, err,
                                      sizeof err);
        if (st == EB_ERR_TIMEOUT)
            return;
        if (st != EB_OK) {
            log_drop(b, sock_name(s), NULL, 0, st, err);
            if (st == EB_ERR_IO)
                return;
            continue;
        }
        eb_frames_view view;
        eb_proto_msg msg;
        uint64_t request_id = 0;
        memset(&view, 0, sizeof view);
        st = eb_frames_decode(&b->rx, true, false, &b->opt.limits, &view, &msg, &request_id, err,
                              sizeof err);
        if (st != EB_OK) {
            bool answerable = view.identity && view.channel == EB_PROTO_CHANNEL_CLIENT &&
                              view.command == EB_PROTO_C_REQUEST && view.body;
            if (answerable) {
                uint8_t key[EB_IDMAP_KEY_MAX];
                size_t key_len = make_key(key, s, view.identity, view.identity_len);
                if (key_len) {
                    eb_clients_touch(&b->clients, key, key_len, socket, s == SOCK_FRONT_IPC,
                                     eb_now_us());
                    b->n.requests++;
                    send_client_error(b, socket, key, key_len, request_id, st, err);
                }
            } else {
                log_drop(b, sock_name(s), view.identity, view.identity_len, st, err);
            }
            eb_frames_close(&b->rx);
            continue;
        }
        if (view.channel != EB_PROTO_CHANNEL_CLIENT) {
            log_drop(b, sock_name(s), view.identity, view.identity_len, EB_ERR_PROTOCOL,
                     "worker channel message on the client socket");
        } else {
            handle_client_msg(b, s, &msg, &view);
        }
        eb_proto_msg_free(&msg);
        eb_frames_close(&b->rx);
    }
}

/* ---- worker messages ---------------------------------------------------------------------- */

static pid_t worker_pid_from_id(const char *id)
{
    /* Worker ids look like "host:pid:device": take the first all-digit field after a ':'. */
    const char *p = id ? strchr(id, ':') : NULL;
    while (p) {
        p++;
        char *end;
        long v = strtol(p, &end, 10);
        if (end != p && (*end == ':' || *end == 0) && v > 0 && v < (1L << 22))
            return (pid_t)v;
        p = strchr(p, ':');
    }
    return 0;
}

static void handle_ready(eb_broker *b, int s, const uint8_t *key, size_t key_len,
                         eb_proto_msg *msg, int64_t now)
{
    if (b->draining) {
        send_disconnect_key(b, b->sock[s], key, key_len, "broker shutting down");
        return;
    }
    char err[512];
    /* A scan model whose dimensions disagree with the table would write rows no search can
     * use (and PostgreSQL would refuse them): refuse the worker, saying why. */
    uint32_t image_dims, text_dims;
    eb_services_dims(b->services, &image_dims, &text_dims);
    for (uint32_t i = 0; i < msg->u.ready.n_models && image_dims; i++) {
        const eb_proto_model_desc *d = &msg->u.ready.models[i];
        bool is_image = strcmp(d->name, b->opt.scan_image_model) == 0;
        bool is_text = b->opt.scan_text_model[0] && strcmp(d->name, b->opt.scan_text_model) == 0;
        uint32_t want = is_image ? image_dims : text_dims;
        if ((is_image || is_text) && d->dims != want) {
            snprintf(err, sizeof err, "dimension mismatch: worker %s serves scan %s model \"%s\" "
                     "(rev %.12s) with %u dimensions, but table \"ProductEmbeddings\" has %u "
                     "for it; run the table's model, or migrate a new database for this one",
                     msg->u.ready.worker_id, is_image ? "image" : "text", d->name, d->model_rev,
                     d->dims, want);
            b->n.workers_refused++;
            eb_log_warn("worker_refused", "worker=%s status=%s reason=\"%s\"",
                        msg->u.ready.worker_id, eb_status_str(EB_ERR_INVALID), err);
            send_disconnect_key(b, b->sock[s], key, key_len, err);
            return;
        }
    }
    eb_broker_worker *w = NULL;
    eb_status st = eb_workers_add(&b->workers, key, key_len, b->sock[s], msg, b->scratch_cap,
                                  now, &w, err, sizeof err);
    if (st != EB_OK) {
        eb_log_warn("worker_refused", "worker=%s status=%s reason=\"%s\"",
                    msg->u.ready.worker_id, eb_status_str(st), err);
        send_disconnect_key(b, b->sock[s], key, key_len, err);
        return;
    }
    pid_t pid = worker_pid_from_id(eb_broker_worker_id(w));
    if (b->sup && pid > 0 && eb_supervisor_owns(b->sup, pid))
        w->pid = pid;
    char models[512] = "";
    size_t off = 0;
    for (uint32_t i = 0; i < w->n_models && off < sizeof models - 80; i++)
        off += (size_t)snprintf(models + off, sizeof models - off, "%s%s", i ? "," : "",
                                w->models[i]->name);
    eb_log_info("worker_ready", "worker=%s models=%s backend=%s device=\"%s\" max_batch=%u "
                "socket=%s pid=%d", eb_broker_worker_id(w), models, w->ready.u.ready.backend,
                w->ready.u.ready.device, w->max_batch, sock_name(s), (int)w->pid);
    for (uint32_t i = 0; i < w->n_models; i++)
        mark_dirty(b, w->models[i]);
}

static void handle_worker_reply(eb_broker *b, eb_broker_worker *w, const eb_proto_msg *msg,
                                const eb_frames_view *view)
{
    const eb_proto_batch_reply *rep = &msg->u.batch_reply;
    eb_batch *batch = w->batches;
    while (batch && batch->id != rep->batch_id)
        batch = batch->next;
    if (!batch) {
        b->n.late_replies++;
        eb_log_warn("reply_ignored", "worker=%s batch=%llu reason=\"no such batch in flight at "
                    "this worker\"", eb_broker_worker_id(w), (unsigned long long)rep->batch_id);
        return;
    }
    for (uint32_t i = 0; i < rep->n_items; i++) {
        const eb_proto_item_result *res = &rep->items[i];
        uint64_t slot = res->item_id & 0xffff;
        if ((res->item_id >> 16) != batch->id || slot >= batch->n_items || !batch->items[slot])
            continue;
        eb_item *it = batch->items[slot];
        batch->items[slot] = NULL;
        eb_request *r = it->request;
        r->n_inflight--;
        w->inflight_items--;
        w->items_done++;
        if (it->state != EB_ITEM_INFLIGHT || it->batch != batch) {
            b->n.late_replies++;
            request_maybe_free(b, r);
            continue;
        }
        it->batch = NULL;
        int32_t status = res->status;
        const char *message = res->error;
        char why[160];
        zmq_msg_t *frame = (view->first_item + i < b->rx.n) ? &b->rx.parts[view->first_item + i]
                                                            : NULL;
        if (status == 0) {
            size_t want = (size_t)res->dims * 4;
            if (!frame || zmq_msg_size(frame) != want) {
                snprintf(why, sizeof why, "worker returned %zu bytes for %u dimensions",
                         frame ? zmq_msg_size(frame) : 0, res->dims);
                status = EB_ERR_PROTOCOL;
                message = why;
            }
        }
        it->timings = res->timings;
        if (status == 0)
            cache_put(b, batch->model, res, frame, r->msg.u.request.options.normalize);
        item_set_result(it, status == 0 ? frame : NULL, res->dims,
                        res->has_hash ? res->hash : NULL, w);
        item_done(b, it, status, message);
        request_maybe_free(b, r);
    }
    /* Items the reply left out: treat as lost (requeue once), backwards to keep their order. */
    for (uint32_t s = batch->n_items; s-- > 0;) {
        eb_item *it = batch->items[s];
        if (!it)
            continue;
        batch->items[s] = NULL;
        eb_request *r = it->request;
        r->n_inflight--;
        w->inflight_items--;
        item_lost(b, it, eb_broker_worker_id(w), "reply omitted the item");
        request_maybe_free(b, r);
    }
    /* One batch fewer in flight: bulk work held back for it may go now (bulk_inflight_batches);
     * the worker's CREDIT may have arrived before this reply. */
    mark_dirty(b, batch->model);
    batch_release(b, batch);
}

static void handle_worker_msg(eb_broker *b, int s, eb_proto_msg *msg, const eb_frames_view *view)
{
    int64_t now = eb_now_us();
    uint8_t key[EB_IDMAP_KEY_MAX];
    size_t key_len = make_key(key, s, view->identity, view->identity_len);
    if (!key_len) {
        log_drop(b, sock_name(s), NULL, 0, EB_ERR_PROTOCOL, "identity too long");
        return;
    }
    eb_broker_worker *w = eb_workers_find(&b->workers, key, key_len);
    if (!w) {
        if (msg->kind == EB_MSG_W_READY)
            handle_ready(b, s, key, key_len, msg, now);
        else if (msg->kind != EB_MSG_W_DISCONNECT)
            /* Majordomo: a worker we do not know (e.g. after a broker restart) must READY. */
            send_disconnect_key(b, b->sock[s], key, key_len,
                                "unknown worker: send READY first");
        return;
    }
    eb_workers_touch(&b->workers, w, now);
    switch (msg->kind) {
    case EB_MSG_W_READY:
        worker_lost(b, w, "sent READY twice", true);
        break;
    case EB_MSG_W_HEARTBEAT:
        if (msg->u.heartbeat.has_state) {
            w->warm = msg->u.heartbeat.warm;
            w->reported_inflight = msg->u.heartbeat.inflight_items;
            if (w->healthy && !msg->u.heartbeat.healthy) {
                eb_log_warn("worker_unhealthy", "worker=%s", eb_broker_worker_id(w));
                eb_workers_set_credit(&b->workers, w, 0);
            }
            w->healthy = msg->u.heartbeat.healthy;
        }
        break;
    case EB_MSG_W_CREDIT:
        if (w->healthy) {
            eb_workers_add_credit(&b->workers, w, msg->u.credit.credit);
            for (uint32_t i = 0; i < w->n_models; i++)
                mark_dirty(b, w->models[i]);
        }
        break;
    case EB_MSG_W_REPLY:
        handle_worker_reply(b, w, msg, view);
        break;
    case EB_MSG_W_DISCONNECT:
        worker_lost(b, w, msg->u.disconnect.reason ? msg->u.disconnect.reason : "disconnect",
                    false);
        break;
    default:
        log_drop(b, sock_name(s), view->identity, view->identity_len, EB_ERR_PROTOCOL,
                 "unexpected command on the worker channel");
        break;
    }
}

static void on_backend(eb_loop *loop, void *socket, int fd, short revents, void *arg)
{
    (void)loop, (void)fd, (void)revents;
    eb_broker *b = arg;
    int s = sock_index(b, socket);
    size_t max_frames = 4 + (size_t)b->opt.limits.max_batch_items;
    uint64_t max_bytes = b->opt.limits.max_message_bytes + MAXMSG_SLACK;
    char err[512];
    for (int burst = 0; burst < RECV_BURST; burst++) {
        eb_status st = eb_frames_recv(socket, ZMQ_DONTWAIT, max_frames, max_bytes, &b->rx, err,
                                      sizeof err);
        if (st == EB_ERR_TIMEOUT)
            return;
        if (st != EB_OK) {
            log_drop(b, sock_name(s), NULL, 0, st, err);
            if (st == EB_ERR_IO)
                return;
            continue;
        }
        eb_frames_view view;
        eb_proto_msg msg;
        memset(&view, 0, sizeof view);
        st = eb_frames_decode(&b->rx, true, false, &b->opt.limits, &view, &msg, NULL, err,
                              sizeof err);
        if (st == EB_OK && view.channel != EB_PROTO_CHANNEL_WORKER) {
            eb_proto_msg_free(&msg);
            st = EB_ERR_PROTOCOL;
            snprintf(err, sizeof err, "client channel message on the worker socket");
        }
        if (st != EB_OK) {
            log_drop(b, sock_name(s), view.identity, view.identity_len, st, err);
            /* A registered worker that breaks the protocol is dropped (its work requeued). */
            if (view.identity) {
                uint8_t key[EB_IDMAP_KEY_MAX];
                size_t key_len = make_key(key, s, view.identity, view.identity_len);
                eb_broker_worker *w = key_len ? eb_workers_find(&b->workers, key, key_len) : NULL;
                if (w)
                    worker_lost(b, w, "protocol error", true);
            }
            eb_frames_close(&b->rx);
            continue;
        }
        handle_worker_msg(b, s, &msg, &view);
        eb_proto_msg_free(&msg);
        eb_frames_close(&b->rx);
    }
}

/* ---- timers, signals, shutdown ------------------------------------------------------------ */

static int64_t tick_us(const eb_broker *b)
{
    int64_t t = b->opt.heartbeat_interval_ms * 1000 / 4;
    return t < 5000 ? 5000 : t;
}

static void on_tick(eb_loop *loop, eb_loop_timer *timer, void *arg)
{
    eb_broker *b = arg;
    int64_t now = eb_now_us();
    int64_t hb = b->opt.heartbeat_interval_ms * 1000;
    /* Workers silent for 3 intervals are dead (Majordomo). */
    for (eb_broker_worker *w = eb_workers_oldest(&b->workers); w && now - w->last_seen_us > 3 * hb;
         w = eb_workers_oldest(&b->workers)) {
        char why[96];
        snprintf(why, sizeof why, "no message for %lld ms (3 heartbeat intervals)",
                 (long long)(now - w->last_seen_us) / 1000);
        worker_lost(b, w, why, true);
    }
    for (eb_broker_worker *w = b->workers.live_head; w; w = w->live_next)
        if (now - w->last_sent_us >= hb)
            send_worker_simple(b, w, EB_MSG_W_HEARTBEAT, NULL);
    int64_t client_timeout = b->opt.client_timeout_ms * 1000;
    for (eb_client *cl = eb_clients_oldest(&b->clients);
         cl && now - cl->last_seen_us > client_timeout; cl = eb_clients_oldest(&b->clients)) {
        char why[96];
        snprintf(why, sizeof why, "no message for %lld ms", (long long)(now - cl->last_seen_us)
                 / 1000);
        b->n.clients_reaped++;
        client_lost(b, cl, why);
    }
    eb_loop_timer_start(loop, timer, now + tick_us(b));
}

static void finish_shutdown(eb_broker *b)
{
    if (b->finished)
        return;
    b->finished = true;
    for (eb_request *r = b->all_requests, *next; r; r = next) {
        next = r->all_next;
        if (!r->answered)
            request_abort(b, r, EB_ERR_SHUTDOWN,
                          "the broker shut down before this input was served");
    }
    for (eb_broker_worker *w = b->workers.live_head; w; w = w->live_next)
        send_worker_simple(b, w, EB_MSG_W_DISCONNECT, "broker shutting down");
    for (eb_client *cl = b->clients.live_head; cl; cl = cl->live_next) {
        eb_proto_msg msg;
        eb_proto_msg_init(&msg, EB_MSG_C_DISCONNECT);
        msg.u.disconnect.reason = "broker shutting down";
        send_msg(b, cl->socket, cl->key, cl->key_len, &msg, NULL, 0);
    }
    if (b->sup)
        eb_supervisor_stop(b->sup, b->opt.shutdown_grace_ms);
    eb_log_info("broker_stopped", "requests=%llu replies=%llu",
                (unsigned long long)b->n.requests, (unsigned long long)b->n.replies);
    eb_loop_stop(b->loop);
}

static void maybe_finish_shutdown(eb_broker *b)
{
    if (b->draining && b->n_open == 0)
        finish_shutdown(b);
}

static void on_shutdown_timer(eb_loop *loop, eb_loop_timer *timer, void *arg)
{
    (void)loop, (void)timer;
    finish_shutdown(arg);
}

void eb_broker_shutdown(eb_broker *b)
{
    if (b->draining)
        return;
    b->draining = true;
    eb_log_info("broker_draining", "open_requests=%zu grace_ms=%lld", b->n_open,
                (long long)b->opt.shutdown_grace_ms);
    eb_loop_timer_start(b->loop, &b->shutdown_timer,
                        eb_now_us() + b->opt.shutdown_grace_ms * 1000);
    maybe_finish_shutdown(b);
}

static void on_child_exit(pid_t pid, int status, void *arg)
{
    eb_broker *b = arg;
    (void)status;
    eb_broker_worker_exited(b, pid);
}

/* Signals reach the loop through a self-pipe: the handler only writes the signal number.
 * (A signalfd would need the signals blocked in every thread, and libraries linked into the
 * process may start threads before main that do not block them.) */
static int g_signal_pipe_wr = -1;

static void on_signal_handler(int signo)
{
    int saved = errno;
    uint8_t byte = (uint8_t)signo;
    if (g_signal_pipe_wr >= 0 && write(g_signal_pipe_wr, &byte, 1) < 0) {
        /* pipe full: a wakeup is already pending */
    }
    errno = saved;
}

static void on_signal(eb_loop *loop, void *socket, int fd, short revents, void *arg)
{
    (void)loop, (void)socket, (void)revents;
    eb_broker *b = arg;
    uint8_t sigs[64];
    ssize_t n;
    while ((n = read(fd, sigs, sizeof sigs)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (sigs[i] == SIGCHLD) {
                if (b->sup)
                    eb_supervisor_reap(b->sup, on_child_exit, b);
            } else {
                eb_log_info("signal", "signo=%u", (unsigned)sigs[i]);
                eb_broker_shutdown(b);
            }
        }
    }
}

void eb_broker_worker_exited(eb_broker *b, pid_t pid)
{
    for (eb_broker_worker *w = b->workers.live_head; w; w = w->live_next)
        if (w->pid == pid) {
            worker_lost(b, w, "process exited", false);
            return;
        }
}

/* ---- setup -------------------------------------------------------------------------------- */

static eb_status get_int(const eb_config *cfg, const char *key, int64_t fallback, int64_t min,
                         int64_t max, int64_t *out, char *err, size_t err_len)
{
    return eb_config_get_int(cfg, key, fallback, min, max, out, err, err_len);
}

eb_status eb_broker_options_load(const eb_config *cfg, eb_broker_options *o, char *err,
                                 size_t err_len)
{
    memset(o, 0, sizeof *o);
    const char *run_dir = eb_config_get(cfg, "run_dir", NULL);
    if (run_dir && *run_dir) {
        snprintf(o->run_dir, sizeof o->run_dir, "%s", run_dir);
    } else {
        const char *xdg = getenv("XDG_RUNTIME_DIR");
        if (xdg && *xdg)
            snprintf(o->run_dir, sizeof o->run_dir, "%s/embroker", xdg);
        else
            snprintf(o->run_dir, sizeof o->run_dir, "/tmp/embroker-%u", (unsigned)geteuid());
    }
    size_t n = strlen(o->run_dir);
    while (n > 1 && o->run_dir[n - 1] == '/')
        o->run_dir[--n] = 0;
    /* sockaddr_un.sun_path holds 107 bytes plus the NUL. */
    if (n + strlen("/frontend.sock") > 107) {
        eb_set_err(err, err_len, "run_dir \"%s\" is %zu bytes long; ipc socket paths must stay "
                   "under 108 bytes: choose a shorter run_dir", o->run_dir, n);
        return EB_ERR_INVALID;
    }
    snprintf(o->frontend_ipc, sizeof o->frontend_ipc, "ipc://%s/frontend.sock", o->run_dir);
    snprintf(o->backend_ipc, sizeof o->backend_ipc, "ipc://%s/backend.sock", o->run_dir);
    snprintf(o->frontend_tcp, sizeof o->frontend_tcp, "%s",
             eb_config_get(cfg, "frontend_tcp", ""));
    snprintf(o->backend_tcp, sizeof o->backend_tcp, "%s", eb_config_get(cfg, "backend_tcp", ""));
    int64_t v;
    eb_status st;
    if ((st = get_int(cfg, "heartbeat_interval_ms", 1000, 10, 600000, &v, err, err_len)))
        return st;
    o->heartbeat_interval_ms = v;
    if ((st = get_int(cfg, "client_timeout_ms", 3 * o->heartbeat_interval_ms, 30, 86400000, &v,
                      err, err_len)))
        return st;
    o->client_timeout_ms = v;
    if ((st = get_int(cfg, "default_deadline_ms", 60000, 1, 3600000, &v, err, err_len)))
        return st;
    o->default_deadline_ms = v;
    if ((st = get_int(cfg, "shutdown_grace_ms", 5000, 0, 600000, &v, err, err_len)))
        return st;
    o->shutdown_grace_ms = v;
    if ((st = get_int(cfg, "unknown_model_wait_ms", 10000, 0, 3600000, &v, err, err_len)))
        return st;
    o->unknown_model_wait_ms = v;
    if ((st = get_int(cfg, "queue_limit", 1024, 1, 1 << 24, &v, err, err_len)))
        return st;
    o->queue_limit = (uint32_t)v;
    if ((st = get_int(cfg, "bulk_inflight_batches", 1, 1, 1024, &v, err, err_len)))
        return st;
    o->bulk_inflight_batches = (uint32_t)v;
    if ((st = get_int(cfg, "bulk_max_batch", 0, 0, 65535, &v, err, err_len)))
        return st;
    o->bulk_max_batch = (uint32_t)v;
    if ((st = eb_proto_limits_from_config(cfg, &o->limits, err, err_len)))
        return st;
    if (o->limits.max_batch_items > 65535) {
        eb_set_err(err, err_len, "max_batch_items=%u exceeds the broker's limit of 65535",
                   o->limits.max_batch_items);
        return EB_ERR_INVALID;
    }
    o->max_models = o->limits.max_models;
    const struct {
        const char *key, *fallback;
        char *out;
        size_t cap;
        bool model;
    } names[] = {
        {"scan_image_model", "siglip", o->scan_image_model, sizeof o->scan_image_model, true},
        {"scan_text_model", "", o->scan_text_model, sizeof o->scan_text_model, true},
        {"catalogue_source_type", "catalogue", o->catalogue_source, sizeof o->catalogue_source,
         false},
        {"scan_source_type", "scan", o->scan_source, sizeof o->scan_source, false},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *name = eb_config_get(cfg, names[i].key, names[i].fallback);
        size_t len = strlen(name);
        bool ok = names[i].model
                      ? (len == 0 || eb_proto_model_name_valid(name, len))
                      : (len > 0 && len < names[i].cap && eb_proto_utf8_valid(name, len));
        if (!ok || len >= names[i].cap) {
            eb_set_err(err, err_len, "%s \"%s\" is not valid (%s)", names[i].key, name,
                       names[i].model ? "a model name: [a-z0-9._-]{1,64}, or empty"
                                   : "1 to 256 bytes of UTF-8");
            return EB_ERR_INVALID;
        }
        memcpy(names[i].out, name, len + 1);
    }
    const struct {
        const char *key;
        double *out;
    } weights[] = {{"image_weight", &o->image_weight}, {"text_weight", &o->text_weight}};
    for (size_t i = 0; i < 2; i++) {
        const char *text = eb_config_get(cfg, weights[i].key, "1");
        char *end;
        errno = 0;
        double w = strtod(text, &end);
        if (errno || end == text || *end || !(w >= 0 && w <= 1000)) {
            eb_set_err(err, err_len, "%s \"%s\" is not a number in 0 .. 1000", weights[i].key,
                       text);
            return EB_ERR_INVALID;
        }
        *weights[i].out = w;
    }
    return eb_services_options_load(cfg, o->run_dir, &o->services, err, err_len);
}

/* Create or check the run dir: ours, a directory (not a symlink), no group/other access. */
static eb_status prepare_run_dir(const char *dir, char *err, size_t err_len)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        eb_set_err(err, err_len, "cannot create run_dir \"%s\": %s (create its parent or choose "
                   "another run_dir)", dir, strerror(errno));
        return EB_ERR_IO;
    }
    struct stat st;
    if (lstat(dir, &st) != 0) {
        eb_set_err(err, err_len, "cannot stat run_dir \"%s\": %s", dir, strerror(errno));
        return EB_ERR_IO;
    }
    if (!S_ISDIR(st.st_mode)) {
        eb_set_err(err, err_len, "run_dir \"%s\" is not a directory (symlinks are refused)", dir);
        return EB_ERR_DENIED;
    }
    if (st.st_uid != geteuid()) {
        eb_set_err(err, err_len, "run_dir \"%s\" belongs to uid %u, not to uid %u; use a directory "
                   "of your own", dir, (unsigned)st.st_uid, (unsigned)geteuid());
        return EB_ERR_DENIED;
    }
    if (st.st_mode & 077) {
        eb_set_err(err, err_len, "run_dir \"%s\" has mode %03o; it must not be accessible to group "
                   "or others (chmod 700 it)", dir, (unsigned)(st.st_mode & 0777));
        return EB_ERR_DENIED;
    }
    return EB_OK;
}

static void *make_router(eb_broker *b, const char *endpoint, bool frontend, char *err,
                         size_t err_len)
{
    void *s = zmq_socket(b->ctx, ZMQ_ROUTER);
    if (!s) {
        eb_set_err(err, err_len, "zmq_socket: %s", zmq_strerror(zmq_errno()));
        return NULL;
    }
    int one = 1, zero = 0, hwm = 100000;
    zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    /* libzmq checks ZMQ_MAXMSGSIZE per frame: the largest legal frame is one inline input or
     * one body. Workers' reply frames are embeddings (bounded by max_dims floats). */
    const eb_proto_limits *l = &b->opt.limits;
    uint64_t frame_max = l->max_input_bytes > l->max_body_bytes ? l->max_input_bytes
                                                                : l->max_body_bytes;
    if (!frontend && (uint64_t)l->max_dims * 4 > frame_max)
        frame_max = (uint64_t)l->max_dims * 4;
    int64_t maxmsg = (int64_t)(frame_max + MAXMSG_SLACK);
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (zmq_bind(s, endpoint) != 0) {
        eb_set_err(err, err_len, "cannot bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    return s;
}

eb_broker *eb_broker_new(const eb_broker_options *options, char *err, size_t err_len)
{
    eb_broker *b = calloc(1, sizeof *b);
    if (!b) {
        eb_set_err(err, err_len, "out of memory");
        return NULL;
    }
    b->opt = *options;
    b->signal_fd = -1;
    b->signal_wr = -1;
    b->lock_fd = -1;
    b->started_us = eb_now_us();
    eb_frames_init(&b->rx);
    eb_loop_timer_init(&b->tick_timer, on_tick, b);
    eb_loop_timer_init(&b->shutdown_timer, on_shutdown_timer, b);
    b->scratch_cap = b->opt.limits.max_batch_items ? b->opt.limits.max_batch_items : 1;
    b->scratch_items = calloc(b->scratch_cap, sizeof *b->scratch_items);
    b->scratch_results = calloc(b->scratch_cap, sizeof *b->scratch_results);
    b->scratch_frames = calloc(b->scratch_cap, sizeof *b->scratch_frames);
    b->loop = eb_loop_new();
    if (!b->scratch_items || !b->scratch_results || !b->scratch_frames || !b->loop ||
        eb_clients_init(&b->clients) != EB_OK ||
        eb_workers_init(&b->workers, b->opt.max_models) != EB_OK) {
        eb_set_err(err, err_len, "out of memory");
        goto fail;
    }
    do {
        if (getrandom(&b->instance_id, sizeof b->instance_id, 0) != sizeof b->instance_id) {
            eb_set_err(err, err_len, "getrandom failed: %s", strerror(errno));
            goto fail;
        }
    } while (b->instance_id == 0);

    if (prepare_run_dir(b->opt.run_dir, err, err_len) != EB_OK)
        goto fail;
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/embrokerd.lock", b->opt.run_dir);
    b->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (b->lock_fd < 0) {
        eb_set_err(err, err_len, "cannot open lock file \"%s\": %s", path, strerror(errno));
        goto fail;
    }
    if (flock(b->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        char other[32] = "";
        ssize_t n = pread(b->lock_fd, other, sizeof other - 1, 0);
        other[n > 0 ? n : 0] = 0;
        other[strcspn(other, "\n")] = 0;
        eb_set_err(err, err_len, "another embrokerd (pid %s) is running with run_dir \"%s\"; stop "
                   "it or choose another run_dir", other[0] ? other : "?", b->opt.run_dir);
        goto fail;
    }
    char pidline[32];
    int pl = snprintf(pidline, sizeof pidline, "%d\n", (int)getpid());
    if (ftruncate(b->lock_fd, 0) != 0 || pwrite(b->lock_fd, pidline, (size_t)pl, 0) != pl)
        eb_log_warn("lock_write_failed", "path=%s", path);

    size_t removed = 0;
    if (eb_shm_cleanup_dead(geteuid(), &removed) == EB_OK && removed)
        eb_log_info("segments_cleaned", "removed=%zu", removed);

    /* Signals arrive through a self-pipe in the loop (before any child exists). */
    int pipefd[2];
    if (pipe2(pipefd, O_NONBLOCK | O_CLOEXEC) != 0) {
        eb_set_err(err, err_len, "pipe2: %s", strerror(errno));
        goto fail;
    }
    b->signal_fd = pipefd[0];
    b->signal_wr = pipefd[1];
    g_signal_pipe_wr = pipefd[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal_handler;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0 ||
        sigaction(SIGCHLD, &sa, NULL) != 0) {
        eb_set_err(err, err_len, "sigaction: %s", strerror(errno));
        goto fail;
    }
    signal(SIGPIPE, SIG_IGN);

    b->ctx = zmq_ctx_new();
    if (!b->ctx) {
        eb_set_err(err, err_len, "zmq_ctx_new failed");
        goto fail;
    }
    const char *endpoints[SOCK_COUNT] = {b->opt.frontend_ipc, b->opt.frontend_tcp,
                                         b->opt.backend_ipc, b->opt.backend_tcp};
    for (int i = 0; i < SOCK_COUNT; i++) {
        if (!endpoints[i][0])
            continue;
        if ((i == SOCK_FRONT_TCP || i == SOCK_BACK_TCP) && strncmp(endpoints[i], "tcp://", 6)) {
            eb_set_err(err, err_len, "%s \"%s\" must be a tcp:// endpoint",
                       i == SOCK_FRONT_TCP ? "frontend_tcp" : "backend_tcp", endpoints[i]);
            goto fail;
        }
        bool frontend = i == SOCK_FRONT_IPC || i == SOCK_FRONT_TCP;
        b->sock[i] = make_router(b, endpoints[i], frontend, err, err_len);
        if (!b->sock[i])
            goto fail;
        eb_loop_add_socket(b->loop, b->sock[i], ZMQ_POLLIN, frontend ? on_frontend : on_backend,
                           b);
    }
    eb_loop_add_fd(b->loop, b->signal_fd, ZMQ_POLLIN, on_signal, b);
    eb_loop_set_hook(b->loop, on_iteration, b);
    b->merges = eb_idmap_new();
    if (!b->merges) {
        eb_set_err(err, err_len, "out of memory");
        goto fail;
    }
    b->services = eb_services_new(b->loop, &b->opt.services, err, err_len);
    if (!b->services)
        goto fail;
    eb_services_set_durable_fn(b->services, on_store_durable, b);
    eb_loop_timer_start(b->loop, &b->tick_timer, eb_now_us() + tick_us(b));
    eb_log_info("broker_started", "instance=%016llx pid=%d frontend=%s backend=%s "
                "frontend_tcp=%s backend_tcp=%s heartbeat_ms=%lld queue_limit=%u",
                (unsigned long long)b->instance_id, (int)getpid(), b->opt.frontend_ipc,
                b->opt.backend_ipc, b->opt.frontend_tcp[0] ? b->opt.frontend_tcp : "-",
                b->opt.backend_tcp[0] ? b->opt.backend_tcp : "-",
                (long long)b->opt.heartbeat_interval_ms, b->opt.queue_limit);
    return b;
fail:
    eb_broker_destroy(&b);
    return NULL;
}

void eb_broker_destroy(eb_broker **broker)
{
    if (!broker || !*broker)
        return;
    eb_broker *b = *broker;
    /* Services first: the callbacks they complete with EB_ERR_SHUTDOWN answer requests. */
    eb_services_destroy(&b->services);
    b->store_head = b->store_tail = NULL;
    while (b->all_requests) {
        eb_request *r = b->all_requests;
        r->answered = true;
        request_free(b, r);
    }
    while (b->free_requests) {
        eb_request *r = b->free_requests;
        b->free_requests = r->free_next;
        eb_frames_close(&r->frames);
        free(r->items);
        free(r);
    }
    /* Batches still on workers go back to the pool first. */
    for (eb_broker_worker *w = b->workers.live_head; w; w = w->live_next)
        while (w->batches)
            batch_release(b, w->batches);
    while (b->free_batches) {
        eb_batch *batch = b->free_batches;
        b->free_batches = batch->next;
        free(batch->items);
        free(batch);
    }
    eb_clients_fini(&b->clients);
    eb_workers_fini(&b->workers);
    eb_frames_close(&b->rx);
    for (int i = 0; i < SOCK_COUNT; i++)
        if (b->sock[i])
            zmq_close(b->sock[i]);
    if (b->ctx)
        zmq_ctx_term(b->ctx);
    if (b->ctx) {
        char path[PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/frontend.sock", b->opt.run_dir);
        unlink(path);
        snprintf(path, sizeof path, "%s/backend.sock", b->opt.run_dir);
        unlink(path);
    }
    if (b->signal_wr >= 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        g_signal_pipe_wr = -1;
        close(b->signal_wr);
    }
    if (b->signal_fd >= 0)
        close(b->signal_fd);
    if (b->lock_fd >= 0)
        close(b->lock_fd);
    eb_loop_destroy(&b->loop);
    eb_idmap_destroy(&b->merges);
    free(b->put_buf);
    free(b->scratch_items);
    free(b->scratch_results);
    free(b->scratch_frames);
    free(b);
    *broker = NULL;
}

eb_loop *eb_broker_loop(eb_broker *b)
{
    return b->loop;
}

void eb_broker_set_supervisor(eb_broker *b, struct eb_supervisor *sup)
{
    b->sup = sup;
}

eb_status eb_broker_run(eb_broker *b)
{
    return eb_loop_run(b->loop);
}

uint64_t eb_broker_instance_id(const eb_broker *b)
{
    return b->instance_id;
}
