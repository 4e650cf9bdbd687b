/* embroker — the client library: one DEALER socket to the broker's frontend, an optional
 * shared-memory segment for input bytes, and a table of requests in flight matched by id.
 *
 * The library has no thread of its own on the request path: submit encodes and sends at once,
 * and replies are read whenever the application calls into the library (wait, poll, submit,
 * heartbeat). One small background thread exists only so an idle application still heartbeats
 * (the broker reaps the segment of a client it has not heard from for client_timeout_ms). Every
 * public call holds the handle's lock for its whole duration and sends heartbeats itself while it
 * waits, so the thread only runs between calls and never delays them by more than one drain.
 *
 * Shared memory: the segment is created at connect (ipc:// only) and registered with a
 * REGISTER → CHALLENGE → (write nonce) → PROVE → REGISTERED handshake. Each input of a request
 * gets its own region; regions are freed when the request completes (reply, error, cancel), never
 * earlier, because a worker may still be copying from them. When the broker restarts (its
 * instance id changes) every request in flight fails with EB_ERR_RESTARTED and the segment is
 * registered again with the new broker.
 *
 * Memory: a request costs two allocations, because every wake-up runs this code cache-cold and
 * the allocator was a fifth of a blocking call: one at submit (the request with its result and
 * region slots, request_new) and one at completion (reply_block: error, result strings,
 * embeddings, matches, measured before they are copied). Both live until embroker_request_free.
 */
#include "embroker.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>

#include "eb_clock.h"
#include "eb_frames.h"
#include "eb_hash.h"
#include "eb_log.h"
#include "eb_proto.h"
#include "eb_shm_segment.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "embeddings travel as little-endian float32: add a byte swap for this host");

enum {
    BUCKETS = 1024, /* request id hash table */
    MAX_INPUTS = 256,
    SUBMIT_STACK_INPUTS = 8, /* inputs whose wire form submit_locked keeps on the stack */
};

typedef enum reg_state {
    REG_OFF = 0,       /* inline only (tcp, option, or segment could not be created) */
    REG_NONE,          /* segment exists, not registered with the current broker */
    REG_WAIT_CHALLENGE,
    REG_WAIT_REGISTERED,
    REG_OK,
    REG_FAILED,        /* broker refused: inline from now on */
    REG_LOST,          /* connection lost: a new segment is made when it comes back */
} reg_state;

typedef struct embroker_request embroker_request;

struct embroker_request {
    embroker_t *owner;         /* NULL after the handle was closed */
    uint64_t id;
    bool done;
    bool reported;             /* returned by embroker_poll */
    bool in_done_queue;
    eb_status status;
    const char *error;          /* in reply_block, a static string, or NULL (never freed itself) */
    size_t n;
    embroker_result_t *results; /* (n,) once done: result_slots; NULL while pending */
    embroker_result_t *result_slots; /* (n,) zeroed, inside this request's own allocation */
    /* Everything a completion keeps (error, result strings, embeddings, matches) lives in this
     * one malloc'ed block, sized before it is filled, so a reply costs one allocation and
     * embroker_request_free one free instead of one per string. */
    char *reply_block;
    eb_shm_ref *refs;           /* (n,) inside this request's own allocation; regions to free on
                                   completion */
    size_t n_refs;
    bool used_shm;
    int64_t submit_us;
    embroker_timings_t timings;
    /* links */
    struct embroker_request *hnext;           /* hash bucket chain (pending only) */
    struct embroker_request *prev, *next;     /* every live request of the handle */
    struct embroker_request *dnext;           /* done queue */
    char *health_json;                        /* health requests */
    bool want_embedding;                      /* the request asked for embedding frames */
    /* scan / store / delete */
    eb_proto_op op;
    embroker_match_t *matches;                /* (n_matches,) in reply_block */
    size_t n_matches;
    bool has_search_error;
    eb_status search_error;
    const char *search_message;               /* in reply_block */
    const char *store_id;                     /* in reply_block, NULL when none */
    bool has_deleted;
    uint64_t deleted;
};

/* Everything submit_locked needs besides the inputs: one shape for every op. */
typedef struct submit_spec {
    eb_proto_op op;
    const char *model;      /* embed: required; scan/store: image model or NULL */
    const char *text_model; /* scan/store: NULL = broker default */
    eb_proto_options options;
    bool force_inline;
    bool client_hash;       /* compute and send each input's content hash */
} submit_spec;

struct embroker {
    embroker_options_t opt;
    char endpoint[4200];
    bool is_ipc;
    void *zctx;
    void *sock;
    void *monitor;             /* PAIR receiving the socket's connect/disconnect events */
    int sock_fd, monitor_fd;   /* their ZMQ_FDs: readable when a command (a message) arrived */
    /* "Idle": the last recv on that socket found nothing (EAGAIN) and nothing has touched it
     * since, so anything new makes its ZMQ_FD readable and one plain poll() watches both
     * sockets. A send may consume the DEALER's signal for a message it leaves queued, so every
     * send clears sock_idle. See pump(). */
    bool sock_idle, monitor_idle;
    pthread_mutex_t mu;

    eb_shm_segment *seg;
    reg_state reg;
    uint32_t seg_id, seg_epoch;
    int64_t reg_started_us;
    char reg_error[512];

    uint64_t broker_bid;
    uint64_t next_id;
    int64_t last_send_us;
    int64_t last_recv_us;
    eb_proto_limits limits;

    embroker_request *buckets[BUCKETS];
    size_t n_pending;
    embroker_request *all;
    embroker_request *done_head, *done_tail;

    pthread_t hb_thread;
    bool hb_started;
    bool hb_stop;
    pthread_cond_t hb_cv;
    eb_frames frames;
};

/* ---- helpers --------------------------------------------------------------------------------- */

static void default_run_dir(char *buf, size_t cap)
{
    const char *env = getenv("EMBROKER_RUN_DIR");
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (env && *env)
        snprintf(buf, cap, "%s", env);
    else if (xdg && *xdg)
        snprintf(buf, cap, "%s/embroker", xdg);
    else
        snprintf(buf, cap, "/tmp/embroker-%u", (unsigned)getuid());
}

/* A request and its per-input slots (results, shm regions) in one zeroed allocation: the
 * slots' sizes are known at submit, and one malloc/free pair per request is cheaper than three.
 * NULL when out of memory. */
static embroker_request *request_new(size_t n)
{
    size_t slots = n ? n : 1;
    /* Offsets rounded up so each array is aligned for its type whatever the struct sizes. */
    size_t results_off = (sizeof(embroker_request) + 15) & ~(size_t)15;
    size_t refs_off = (results_off + slots * sizeof(embroker_result_t) + 15) & ~(size_t)15;
    /* malloc, not calloc: glibc's calloc skips the thread cache and costs several times more
     * instructions for a block of this size. The header and the result slots are zeroed apart
     * (region slots are written before use), which also keeps GCC from folding malloc + one
     * memset back into calloc. */
    char *base = malloc(refs_off + slots * sizeof(eb_shm_ref));
    if (!base)
        return NULL;
    embroker_request *r = (embroker_request *)base;
    memset(r, 0, sizeof *r);
    memset(base + results_off, 0, slots * sizeof(embroker_result_t));
    r->result_slots = (embroker_result_t *)(base + results_off);
    r->refs = (eb_shm_ref *)(base + refs_off);
    return r;
}

/* A bump allocator over a request's reply_block: the caller measures first (block_size_str and
 * friends), allocates once, then carves. Carving past the measured size returns NULL / "" rather
 * than overflowing, so a measuring mistake degrades to empty strings, never to corruption. */
typedef struct reply_carver {
    char *base;
    size_t used, cap;
} reply_carver;

static size_t block_size_str(const char *s)
{
    return (s ? strlen(s) : 0) + 1;
}

static void *carve(reply_carver *c, size_t bytes)
{
    if (bytes > c->cap - c->used)
        return NULL;
    void *p = c->base + c->used;
    c->used += bytes;
    return p;
}

/* A copy of s (NULL reads as "") in the block; "" when it does not fit (see above). */
static const char *carve_str(reply_carver *c, const char *s)
{
    if (!s)
        s = "";
    size_t len = strlen(s) + 1;
    char *d = carve(c, len);
    if (!d)
        return "";
    memcpy(d, s, len);
    return d;
}

/* Equal texts (NULL and "" alike): consecutive results of one batch usually share the worker
 * and model revision, so they share one copy. */
static bool same_text(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

static void pending_insert(embroker_t *eb, embroker_request *r)
{
    size_t b = r->id % BUCKETS;
    r->hnext = eb->buckets[b];
    eb->buckets[b] = r;
    eb->n_pending++;
}

static embroker_request *pending_take(embroker_t *eb, uint64_t id)
{
    embroker_request **p = &eb->buckets[id % BUCKETS];
    while (*p) {
        if ((*p)->id == id) {
            embroker_request *r = *p;
            *p = r->hnext;
            r->hnext = NULL;
            eb->n_pending--;
            return r;
        }
        p = &(*p)->hnext;
    }
    return NULL;
}

static void done_queue_push(embroker_t *eb, embroker_request *r)
{
    r->dnext = NULL;
    r->in_done_queue = true;
    if (eb->done_tail)
        eb->done_tail->dnext = r;
    else
        eb->done_head = r;
    eb->done_tail = r;
}

static void done_queue_remove(embroker_t *eb, embroker_request *r)
{
    if (!r->in_done_queue)
        return;
    embroker_request *prev = NULL;
    for (embroker_request *q = eb->done_head; q; prev = q, q = q->dnext) {
        if (q == r) {
            if (prev)
                prev->dnext = q->dnext;
            else
                eb->done_head = q->dnext;
            if (eb->done_tail == q)
                eb->done_tail = prev;
            break;
        }
    }
    r->in_done_queue = false;
}

static void free_regions(embroker_t *eb, embroker_request *r)
{
    for (size_t i = 0; i < r->n_refs; i++)
        if (eb && eb->seg)
            eb_shm_segment_free(eb->seg, &r->refs[i]);
    r->n_refs = 0; /* the slots themselves belong to the request's allocation */
}

/* Complete a (taken-from-pending) request with a whole-request status. */
static void complete_error(embroker_t *eb, embroker_request *r, eb_status st, const char *msg)
{
    free_regions(eb, r);
    r->status = st;
    if (!msg)
        msg = eb_status_str(st);
    size_t len = strlen(msg) + 1;
    free(r->reply_block);
    r->reply_block = malloc(len);
    if (r->reply_block) {
        memcpy(r->reply_block, msg, len);
        r->error = r->reply_block;
    } else {
        r->error = eb_status_str(st); /* static: still says what happened */
    }
    r->results = r->result_slots;
    for (size_t i = 0; i < r->n; i++) {
        r->results[i].status = st;
        r->results[i].message = r->error;
        r->results[i].worker = "";
        r->results[i].model_rev = "";
    }
    r->timings.client_total_us = eb_now_us() - r->submit_us;
    r->done = true;
    done_queue_push(eb, r);
}

static eb_status send_msg(embroker_t *eb, const eb_proto_msg *m, zmq_msg_t *items, size_t n,
                          char *err, size_t err_len)
{
    char tmp[256];
    if (!err) {
        err = tmp;
        err_len = sizeof tmp;
    }
    /* Block briefly rather than fail: a DEALER only blocks when the pipe is full (HWM). */
    eb_status st = eb_frames_send_msg(eb->sock, NULL, 0, m, items, n, 0, err, err_len);
    eb->sock_idle = false; /* the send may have processed the DEALER's pending commands */
    if (st == EB_OK)
        eb->last_send_us = eb_now_us();
    return st;
}

static void send_heartbeat(embroker_t *eb)
{
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_HEARTBEAT);
    send_msg(eb, &m, NULL, 0, NULL, 0);
}

static void start_registration(embroker_t *eb)
{
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_REGISTER);
    m.u.reg.segment = eb_shm_segment_name(eb->seg);
    m.u.reg.size = eb_shm_segment_size(eb->seg);
    char err[256];
    if (send_msg(eb, &m, NULL, 0, err, sizeof err) != EB_OK) {
        eb_log_warn("client_register_send_failed", "reason=\"%s\"", err);
        return;
    }
    eb->reg = REG_WAIT_CHALLENGE;
    eb->reg_started_us = eb_now_us();
}

/* Everything in flight is lost: the broker restarted (new instance id) or the connection
 * dropped (a reconnected DEALER is a new peer to the broker, so replies addressed to the old one
 * can never arrive). `keep` (may be 0) is the id of a request the new broker itself answered. */
static void fail_in_flight(embroker_t *eb, uint64_t keep, const char *why)
{
    char msg[300];
    snprintf(msg, sizeof msg, "%s while this request was in flight; submit it again", why);
    for (size_t b = 0; b < BUCKETS; b++) {
        embroker_request *r = eb->buckets[b], *next;
        eb->buckets[b] = NULL;
        for (; r; r = next) {
            next = r->hnext;
            if (r->id == keep) {
                r->hnext = eb->buckets[b];
                eb->buckets[b] = r;
                continue;
            }
            eb->n_pending--;
            r->hnext = NULL;
            complete_error(eb, r, EB_ERR_RESTARTED, msg);
        }
    }
}

/* The segment is unknown to whoever is at the other end now: make a fresh one (a new name, so
 * the old registration, which the broker may still reap, can never touch it) and register it.
 * Every region was freed by fail_in_flight. */
static void renew_segment(embroker_t *eb)
{
    if (eb->reg == REG_OFF || eb->reg == REG_FAILED)
        return;
    eb_shm_segment_destroy(&eb->seg);
    char serr[512];
    size_t data = eb->opt.shm_size > EB_SHM_HEADER_SIZE ? eb->opt.shm_size - EB_SHM_HEADER_SIZE
                                                        : eb->opt.shm_size;
    if (eb_shm_segment_create(data, &eb->seg, serr, sizeof serr) != EB_OK) {
        eb_log_warn("client_shm_unavailable", "reason=\"%s\" action=inline", serr);
        eb->reg = REG_OFF;
        return;
    }
    eb->reg = REG_NONE;
    start_registration(eb);
}

static void on_restart(embroker_t *eb, uint64_t old_bid, uint64_t new_bid, uint64_t keep)
{
    eb_log_warn("client_broker_restarted", "old=%016llx new=%016llx pending=%zu",
                (unsigned long long)old_bid, (unsigned long long)new_bid, eb->n_pending);
    fail_in_flight(eb, keep, "the broker restarted");
    /* Registered with the old broker: register anew. A handshake already under way (after a
     * reconnect) is with the new broker, which is what this message comes from. */
    if (eb->reg == REG_OK)
        renew_segment(eb);
}

/* Connection events from the socket monitor, until none is left. true when it handled one. */
static bool drain_monitor(embroker_t *eb)
{
    bool got = false;
    for (;;) {
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, eb->monitor, ZMQ_DONTWAIT) < 0) {
            eb->monitor_idle = zmq_errno() == EAGAIN;
            zmq_msg_close(&ev);
            return got;
        }
        got = true;
        eb->monitor_idle = false;
        uint16_t event = 0;
        if (zmq_msg_size(&ev) >= 2)
            memcpy(&event, zmq_msg_data(&ev), 2);
        bool more = zmq_msg_more(&ev);
        zmq_msg_close(&ev);
        if (more) {
            zmq_msg_init(&addr);
            zmq_msg_recv(&addr, eb->monitor, 0);
            zmq_msg_close(&addr);
        }
        if (event == ZMQ_EVENT_DISCONNECTED) {
            eb_log_warn("client_connection_lost", "endpoint=%s pending=%zu", eb->endpoint,
                        eb->n_pending);
            fail_in_flight(eb, 0, "the connection to the broker was lost (restarted or stopped)");
            if (eb->reg != REG_OFF && eb->reg != REG_FAILED)
                eb->reg = REG_LOST;
        } else if (event == ZMQ_EVENT_CONNECTED) {
            eb_log_debug("client_connected", "endpoint=%s", eb->endpoint);
            if (eb->reg == REG_LOST)
                renew_segment(eb);
        }
    }
}

/* The matches go first in reply_block and the embeddings right after them, the strings last:
 * the block comes from malloc (aligned for anything) and the matches' size keeps the floats
 * aligned. */
_Static_assert(sizeof(embroker_match_t) % _Alignof(float) == 0, "floats follow the matches");

/* Bytes of reply_block that handle_reply carves for `rep` (n_results of its results used, the
 * request's message `error`), in the order it carves them; *floats = embedding floats. */
static size_t reply_block_size(const eb_proto_reply *rep, size_t n_results, const char *error,
                               size_t *floats)
{
    size_t total_floats = 0;
    for (size_t i = 0; i < n_results; i++)
        total_floats += rep->results[i].dims;
    *floats = total_floats;
    size_t bytes = (size_t)rep->n_matches * sizeof(embroker_match_t);
    bytes += total_floats * sizeof(float);
    bytes += block_size_str(error);
    for (uint32_t i = 0; i < rep->n_matches; i++) {
        const eb_proto_match *m = &rep->matches[i];
        bytes += block_size_str(m->product_id) + block_size_str(m->template_name) +
                 block_size_str(m->source_type);
    }
    if (rep->has_search_error)
        bytes += block_size_str(rep->search_error.message);
    if (rep->store_id)
        bytes += block_size_str(rep->store_id);
    for (size_t i = 0; i < n_results; i++) {
        const eb_proto_result *in = &rep->results[i];
        bytes += block_size_str(in->error);
        if (i == 0 || !same_text(in->worker, rep->results[i - 1].worker))
            bytes += block_size_str(in->worker);
        if (i == 0 || !same_text(in->model_rev, rep->results[i - 1].model_rev))
            bytes += block_size_str(in->model_rev);
    }
    return bytes;
}

/* Copy the scan/store/delete fields of a reply into the request: the matches into `matches`
 * (rep->n_matches slots already carved), their strings into the block (the decoded message is
 * freed after dispatch). */
static void take_scan_fields(embroker_request *r, const eb_proto_reply *rep,
                             embroker_match_t *matches, reply_carver *c)
{
    if (rep->n_matches) {
        r->matches = matches;
        if (r->matches) {
            for (uint32_t i = 0; i < rep->n_matches; i++) {
                const eb_proto_match *m = &rep->matches[i];
                embroker_match_t *o = &r->matches[i];
                o->product_id = carve_str(c, m->product_id);
                o->template_name = carve_str(c, m->template_name);
                o->source_type = carve_str(c, m->source_type);
                o->score = m->score;
            }
            r->n_matches = rep->n_matches;
        }
    }
    if (rep->has_search_error) {
        r->has_search_error = true;
        r->search_error = rep->search_error.code != EB_OK ? (eb_status)rep->search_error.code
                                                          : EB_ERR_INTERNAL;
        r->search_message = carve_str(c, rep->search_error.message);
    }
    if (rep->store_id)
        r->store_id = carve_str(c, rep->store_id);
    r->has_deleted = rep->has_deleted;
    r->deleted = rep->deleted;
}

static void handle_reply(embroker_t *eb, const eb_frames *frames, const eb_frames_view *view,
                         const eb_proto_reply *rep)
{
    embroker_request *r = pending_take(eb, rep->id);
    if (!r) {
        eb_log_debug("client_reply_ignored", "id=%llu reason=not_pending",
                     (unsigned long long)rep->id);
        return;
    }
    free_regions(eb, r);
    r->status = rep->status;
    r->timings.queue_us = rep->timings.us[EB_STAGE_QUEUE];
    r->timings.copy_us = rep->timings.us[EB_STAGE_COPY];
    r->timings.hash_us = rep->timings.us[EB_STAGE_HASH];
    r->timings.decode_us = rep->timings.us[EB_STAGE_DECODE];
    r->timings.preprocess_us = rep->timings.us[EB_STAGE_PREPROCESS];
    r->timings.infer_us = rep->timings.us[EB_STAGE_INFER];
    r->timings.cache_us = rep->timings.us[EB_STAGE_CACHE];
    r->timings.total_us = rep->timings.us[EB_STAGE_TOTAL];
    r->timings.search_us = rep->timings.us[EB_STAGE_SEARCH];
    r->timings.store_enqueue_us = rep->timings.us[EB_STAGE_STORE_ENQUEUE];
    r->timings.client_total_us = eb->last_recv_us - r->submit_us; /* dispatch: just now */
    if (rep->health && rep->health_len) {
        char *json = NULL;
        if (eb_proto_msgpack_to_json(rep->health, rep->health_len, &json) == EB_OK)
            r->health_json = json;
    }
    /* The whole request's message: the broker's, or ours when the reply is malformed. */
    const char *error = rep->error ? rep->error : "";
    char mismatch[160];
    if (rep->n_results != r->n && r->status == EB_OK && r->n > 0) {
        r->status = EB_ERR_PROTOCOL;
        snprintf(mismatch, sizeof mismatch, "reply has %u results for %zu inputs",
                 rep->n_results, r->n);
        error = mismatch;
    }
    size_t n_results = rep->n_results < r->n ? rep->n_results : r->n;
    size_t total_floats;
    size_t bytes = reply_block_size(rep, n_results, error, &total_floats);
    r->reply_block = malloc(bytes);
    if (!r->reply_block) {
        r->status = EB_ERR_NOMEM;
        r->error = "out of memory storing the reply";
        r->done = true;
        done_queue_push(eb, r);
        return;
    }
    /* Carved in the order reply_block_size counts: the arrays first, the most aligned first
     * (the matches hold pointers and doubles), then the strings. */
    reply_carver c = {.base = r->reply_block, .cap = bytes};
    embroker_match_t *matches = carve(&c, (size_t)rep->n_matches * sizeof *matches);
    float *embeddings = carve(&c, total_floats * sizeof(float));
    take_scan_fields(r, rep, matches, &c);
    r->error = carve_str(&c, error);
    r->results = r->result_slots;
    size_t off = 0;
    for (size_t i = 0; i < r->n; i++) {
        embroker_result_t *o = &r->results[i];
        if (i >= n_results) {
            o->status = r->status != EB_OK ? r->status : EB_ERR_PROTOCOL;
            o->message = r->error;
            o->worker = o->model_rev = "";
            continue;
        }
        const eb_proto_result *in = &rep->results[i];
        o->status = in->status;
        o->message = carve_str(&c, in->error);
        o->worker = i > 0 && same_text(in->worker, rep->results[i - 1].worker)
                        ? r->results[i - 1].worker
                        : carve_str(&c, in->worker);
        o->model_rev = i > 0 && same_text(in->model_rev, rep->results[i - 1].model_rev)
                           ? r->results[i - 1].model_rev
                           : carve_str(&c, in->model_rev);
        o->cached = in->cached;
        o->has_hash = in->has_hash;
        if (in->has_hash)
            memcpy(o->hash, in->hash, sizeof o->hash);
        if (in->status == EB_OK && in->dims > 0 && i < view->n_items && embeddings) {
            const zmq_msg_t *f = &frames->parts[view->first_item + i];
            size_t frame_bytes = zmq_msg_size((zmq_msg_t *)f);
            if (frame_bytes == (size_t)in->dims * sizeof(float)) {
                memcpy(embeddings + off, zmq_msg_data((zmq_msg_t *)f), frame_bytes);
                o->embedding = embeddings + off;
                o->dims = in->dims;
                off += in->dims;
            } else {
                o->status = EB_ERR_PROTOCOL;
                o->message = "embedding frame size does not match dims";
            }
        } else if (in->status == EB_OK && in->dims > 0 && !r->want_embedding) {
            o->dims = in->dims; /* embeddings not asked for (scan/store default) */
        } else if (in->status == EB_OK && in->dims > 0) {
            o->status = EB_ERR_PROTOCOL;
            o->message = "reply carries no embedding frame for this input";
        }
    }
    r->done = true;
    done_queue_push(eb, r);
}

/* Decode and act on one received message. */
static void dispatch(embroker_t *eb, eb_frames *frames)
{
    char err[512];
    eb_frames_view view;
    eb_proto_msg msg;
    eb_status st = eb_frames_decode(frames, false, true, &eb->limits, &view, &msg, NULL, err,
                                    sizeof err);
    if (st != EB_OK) {
        eb_log_warn("client_bad_message", "status=%s reason=\"%s\"", eb_status_str(st), err);
        return;
    }
    eb->last_recv_us = eb_now_us();
    if (msg.bid) {
        if (eb->broker_bid && msg.bid != eb->broker_bid) {
            uint64_t old = eb->broker_bid;
            eb->broker_bid = msg.bid;
            on_restart(eb, old, msg.bid, msg.kind == EB_MSG_C_REPLY ? msg.u.reply.id : 0);
        }
        eb->broker_bid = msg.bid;
    }
    switch (msg.kind) {
    case EB_MSG_C_CHALLENGE:
        if (eb->seg && eb->reg == REG_WAIT_CHALLENGE &&
            strcmp(msg.u.challenge.segment, eb_shm_segment_name(eb->seg)) == 0) {
            eb_shm_segment_write_nonce(eb->seg, msg.u.challenge.nonce, EB_PROTO_NONCE_BYTES);
            eb_proto_msg p;
            eb_proto_msg_init(&p, EB_MSG_C_PROVE);
            p.u.prove.segment = eb_shm_segment_name(eb->seg);
            if (send_msg(eb, &p, NULL, 0, NULL, 0) == EB_OK)
                eb->reg = REG_WAIT_REGISTERED;
        }
        break;
    case EB_MSG_C_REGISTERED:
        if (eb->seg && (eb->reg == REG_WAIT_REGISTERED || eb->reg == REG_WAIT_CHALLENGE) &&
            strcmp(msg.u.registered.segment, eb_shm_segment_name(eb->seg)) == 0) {
            if (msg.u.registered.status == EB_OK) {
                eb->seg_id = msg.u.registered.seg;
                eb->seg_epoch = msg.u.registered.epoch;
                eb->reg = REG_OK;
                eb_log_debug("client_segment_registered", "name=%s seg=%u",
                             eb_shm_segment_name(eb->seg), eb->seg_id);
            } else {
                eb->reg = REG_FAILED;
                snprintf(eb->reg_error, sizeof eb->reg_error, "%s: %s",
                         eb_status_str((eb_status)msg.u.registered.status),
                         msg.u.registered.error ? msg.u.registered.error : "");
                eb_log_warn("client_segment_refused", "name=%s status=%s reason=\"%s\" "
                            "action=inline", eb_shm_segment_name(eb->seg),
                            eb_status_str((eb_status)msg.u.registered.status),
                            msg.u.registered.error ? msg.u.registered.error : "");
            }
        }
        break;
    case EB_MSG_C_REPLY:
        handle_reply(eb, frames, &view, &msg.u.reply);
        break;
    case EB_MSG_C_HEARTBEAT:
        break;
    case EB_MSG_C_DISCONNECT: {
        /* The broker is shutting down (it has answered what it could) or no longer knows us
         * (then it has also unlinked our segment): what is still in flight is lost. */
        const char *why = msg.u.disconnect.reason ? msg.u.disconnect.reason : "";
        eb_log_warn("client_broker_disconnect", "reason=\"%s\" pending=%zu", why, eb->n_pending);
        char text[300];
        snprintf(text, sizeof text, "the broker dropped this connection (%s)", why);
        fail_in_flight(eb, 0, text);
        if (eb->reg == REG_OK || eb->reg == REG_WAIT_CHALLENGE || eb->reg == REG_WAIT_REGISTERED)
            renew_segment(eb);
        break;
    }
    default:
        eb_log_warn("client_unexpected_message", "kind=%s", eb_proto_kind_name(msg.kind));
        break;
    }
    eb_proto_msg_free(&msg);
}

/* Receive and dispatch what the DEALER holds, until none is left. true when it received a
 * message. */
static bool drain_socket(embroker_t *eb)
{
    bool got = false;
    for (;;) {
        char err[256];
        eb_status st = eb_frames_recv(eb->sock, ZMQ_DONTWAIT, 3 + MAX_INPUTS + 16,
                                      eb->limits.max_message_bytes + 65536, &eb->frames, err,
                                      sizeof err);
        if (st == EB_ERR_TIMEOUT) {
            eb->sock_idle = true;
            return got;
        }
        eb->sock_idle = false;
        if (st != EB_OK) {
            eb_log_warn("client_recv_failed", "status=%s reason=\"%s\"", eb_status_str(st), err);
            if (st == EB_ERR_IO)
                return got;
            continue;
        }
        got = true;
        dispatch(eb, &eb->frames);
        /* No eb_frames_close here: the next eb_frames_recv (at the latest the EAGAIN one that
         * ends this loop) releases the parts and keeps the parts array for the next message
         * instead of a realloc and free per message. embroker_close frees it. */
    }
}

/* Wait up to timeout_ms (0: only look) for the ZMQ_FD of an idle socket to turn readable, and
 * say which did. A socket that is not idle is not watched (its fd proves nothing): the caller
 * reads it anyway. */
static void wait_fds(embroker_t *eb, int timeout_ms, bool *sock_ready, bool *monitor_ready)
{
    struct pollfd fds[2];
    nfds_t n = 0;
    int sock_i = -1, monitor_i = -1;
    if (eb->sock_idle) {
        sock_i = (int)n;
        fds[n++] = (struct pollfd){.fd = eb->sock_fd, .events = POLLIN};
    }
    if (eb->monitor_idle) {
        monitor_i = (int)n;
        fds[n++] = (struct pollfd){.fd = eb->monitor_fd, .events = POLLIN};
    }
    *sock_ready = *monitor_ready = false;
    if (n == 0 || poll(fds, n, timeout_ms) <= 0)
        return; /* EINTR reads as a timeout: every caller loops on its own deadline */
    *sock_ready = sock_i >= 0 && fds[sock_i].revents != 0;
    *monitor_ready = monitor_i >= 0 && fds[monitor_i].revents != 0;
}

/* Receive and dispatch everything already queued (no waiting): the monitor first, then the
 * DEALER. An idle socket is only read when its fd is readable, so a quiet look costs one
 * poll() instead of two empty recvs (each an internal poll plus getpid in libzmq). */
static void drain(embroker_t *eb)
{
    bool sock_ready, monitor_ready;
    wait_fds(eb, 0, &sock_ready, &monitor_ready);
    if (monitor_ready || !eb->monitor_idle)
        drain_monitor(eb);
    /* Handling an event may have sent (registration): then the DEALER is no longer idle. */
    if (sock_ready || !eb->sock_idle)
        drain_socket(eb);
}

/* Housekeeping shared by every path: heartbeat when quiet, restart a lost registration. */
static void housekeeping(embroker_t *eb)
{
    int64_t now = eb_now_us();
    int64_t interval = (int64_t)eb->opt.heartbeat_interval_ms * 1000;
    if (eb->reg == REG_NONE)
        start_registration(eb);
    else if ((eb->reg == REG_WAIT_CHALLENGE || eb->reg == REG_WAIT_REGISTERED) &&
             now - eb->reg_started_us > (int64_t)eb->opt.connect_timeout_ms * 1000)
        start_registration(eb); /* the broker may have missed it (restart): ask again */
    if (now - eb->last_send_us >= interval)
        send_heartbeat(eb);
}

/* Wait up to timeout_ms for input (or less: heartbeats), then drain and housekeep.
 *
 * Instead of zmq_poll (which asks each socket for ZMQ_EVENTS before and after it sleeps: an
 * internal poll plus getpid per socket each time) a socket is first made idle by reading it
 * until EAGAIN, and then one plain poll() on the idle sockets' ZMQ_FDs sleeps until either has
 * news. That keeps the ZMQ_FD contract (zmq_getsockopt(3)): the fd only signals changes, so it
 * may be slept on only once a look after the last send/recv found nothing; an EAGAIN recv is
 * that look (it processes the pending commands first, as a ZMQ_EVENTS query would). */
static void pump(embroker_t *eb, int timeout_ms)
{
    int hb = eb->opt.heartbeat_interval_ms;
    if (timeout_ms < 0 || timeout_ms > hb / 2 + 1)
        timeout_ms = hb / 2 + 1;
    /* A socket that is not idle (after a send, a received message or an error) may hold
     * messages its fd does not announce: read it first, and do not sleep when that brought
     * something (the caller looks at it first) or left the socket not idle (an error). */
    bool got = false;
    if (!eb->monitor_idle)
        got |= drain_monitor(eb);
    if (!eb->sock_idle)
        got |= drain_socket(eb);
    if (!got && eb->sock_idle && eb->monitor_idle) {
        bool sock_ready, monitor_ready;
        wait_fds(eb, timeout_ms, &sock_ready, &monitor_ready);
        if (monitor_ready)
            drain_monitor(eb);
        if (sock_ready || !eb->sock_idle)
            drain_socket(eb);
    }
    housekeeping(eb);
}

static void *heartbeat_main(void *arg)
{
    embroker_t *eb = arg;
    pthread_mutex_lock(&eb->mu);
    while (!eb->hb_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long step_ns = (long)eb->opt.heartbeat_interval_ms * 1000000L / 3;
        ts.tv_sec += step_ns / 1000000000L;
        ts.tv_nsec += step_ns % 1000000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&eb->hb_cv, &eb->mu, &ts);
        if (eb->hb_stop)
            break;
        /* The condvar wait re-took the lock: the application is not inside a call right now
         * (every call holds the lock for its whole duration). */
        drain(eb);
        housekeeping(eb);
    }
    pthread_mutex_unlock(&eb->mu);
    return NULL;
}

/* Drive the registration handshake until it settles or the timeout passes. */
static void wait_registered(embroker_t *eb, int timeout_ms)
{
    int64_t deadline = eb_now_us() + (int64_t)timeout_ms * 1000;
    if (eb->reg == REG_NONE)
        start_registration(eb);
    while ((eb->reg == REG_WAIT_CHALLENGE || eb->reg == REG_WAIT_REGISTERED ||
            eb->reg == REG_LOST) && eb_now_us() < deadline) {
        int64_t left = (deadline - eb_now_us()) / 1000;
        pump(eb, left > 50 ? 50 : (int)left + 1);
    }
}

/* ---- connection ------------------------------------------------------------------------------ */

void embroker_options_default(embroker_options_t *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->timeout_ms = 30000;
    opt->shm_size = 64ull << 20;
    opt->shm_full_policy = EMBROKER_SHM_FULL_WAIT;
    opt->shm_wait_ms = 5000;
    opt->max_inline_bytes = 16ull << 20;
    opt->heartbeat_interval_ms = 1000;
    opt->connect_timeout_ms = 5000;
    const char *v;
    if ((v = getenv("EMBROKER_BROKER")) && *v)
        opt->broker = v;
    if ((v = getenv("EMBROKER_RUN_DIR")) && *v)
        opt->run_dir = v;
    if ((v = getenv("EMBROKER_TIMEOUT_MS")) && atoi(v) > 0)
        opt->timeout_ms = atoi(v);
    if ((v = getenv("EMBROKER_HEARTBEAT_INTERVAL_MS")) && atoi(v) > 0)
        opt->heartbeat_interval_ms = atoi(v);
    if ((v = getenv("EMBROKER_INLINE")) &&
        (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0))
        opt->inline_only = true;
}

eb_status embroker_connect(const embroker_options_t *opt_in, embroker_t **out, char *err,
                           size_t err_len)
{
    embroker_options_t defaults;
    *out = NULL;
    if (!opt_in) {
        embroker_options_default(&defaults);
        opt_in = &defaults;
    }
    embroker_t *eb = calloc(1, sizeof *eb);
    if (!eb) {
        snprintf(err, err_len, "cannot connect: out of memory");
        return EB_ERR_NOMEM;
    }
    eb->opt = *opt_in;
    if (eb->opt.timeout_ms == 0)
        eb->opt.timeout_ms = 30000;
    if (eb->opt.heartbeat_interval_ms <= 0)
        eb->opt.heartbeat_interval_ms = 1000;
    if (eb->opt.connect_timeout_ms <= 0)
        eb->opt.connect_timeout_ms = 5000;
    if (eb->opt.shm_size == 0)
        eb->opt.shm_size = 64ull << 20;
    if (eb->opt.max_inline_bytes == 0)
        eb->opt.max_inline_bytes = 16ull << 20;
    eb->opt.broker = NULL; /* not kept: the caller's string */
    eb->opt.run_dir = NULL;
    if (opt_in->broker && *opt_in->broker) {
        snprintf(eb->endpoint, sizeof eb->endpoint, "%s", opt_in->broker);
    } else {
        char run_dir[4096];
        if (opt_in->run_dir && *opt_in->run_dir)
            snprintf(run_dir, sizeof run_dir, "%s", opt_in->run_dir);
        else
            default_run_dir(run_dir, sizeof run_dir);
        snprintf(eb->endpoint, sizeof eb->endpoint, "ipc://%s/frontend.sock", run_dir);
    }
    eb->is_ipc = strncmp(eb->endpoint, "ipc://", 6) == 0;
    eb_proto_limits_default(&eb->limits);
    eb->next_id = 1;
    eb_frames_init(&eb->frames);
    pthread_mutex_init(&eb->mu, NULL);
    pthread_cond_init(&eb->hb_cv, NULL);

    eb_status st = EB_ERR_IO;
    eb->zctx = zmq_ctx_new();
    if (!eb->zctx) {
        snprintf(err, err_len, "cannot create a ZMQ context: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    eb->sock = zmq_socket(eb->zctx, ZMQ_DEALER);
    if (!eb->sock) {
        snprintf(err, err_len, "cannot create a ZMQ socket: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    int zero = 0, ivl = 100, ivl_max = 1000, sndtimeo = 2000;
    zmq_setsockopt(eb->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(eb->sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    zmq_setsockopt(eb->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(eb->sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    if (eb->is_ipc) {
        /* Fail early and clearly when the local broker is not there. */
        const char *path = eb->endpoint + 6;
        struct stat sb;
        if (stat(path, &sb) != 0) {
            snprintf(err, err_len, "cannot connect to %s: %s; is embrokerd running with this "
                     "run directory? (start it, or pass --run-dir/--broker)", eb->endpoint,
                     strerror(errno));
            st = EB_ERR_UNAVAILABLE;
            goto fail;
        }
    }
    char mon[64];
    snprintf(mon, sizeof mon, "inproc://embroker-monitor-%p", (void *)eb);
    if (zmq_socket_monitor(eb->sock, mon, ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) != 0 ||
        !(eb->monitor = zmq_socket(eb->zctx, ZMQ_PAIR)) || zmq_connect(eb->monitor, mon) != 0) {
        snprintf(err, err_len, "cannot monitor the ZMQ socket: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    zmq_setsockopt(eb->monitor, ZMQ_LINGER, &zero, sizeof zero);
    size_t sock_fd_len = sizeof eb->sock_fd, monitor_fd_len = sizeof eb->monitor_fd;
    if (zmq_getsockopt(eb->sock, ZMQ_FD, &eb->sock_fd, &sock_fd_len) != 0 ||
        zmq_getsockopt(eb->monitor, ZMQ_FD, &eb->monitor_fd, &monitor_fd_len) != 0) {
        snprintf(err, err_len, "cannot get the ZMQ sockets' file descriptors: %s",
                 zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (zmq_connect(eb->sock, eb->endpoint) != 0) {
        snprintf(err, err_len, "cannot connect to %s: %s (check the endpoint)", eb->endpoint,
                 zmq_strerror(zmq_errno()));
        st = EB_ERR_INVALID;
        goto fail;
    }
    eb->last_send_us = eb->last_recv_us = eb_now_us();

    eb->reg = REG_OFF;
    if (eb->is_ipc && !eb->opt.inline_only) {
        char serr[512];
        size_t data = eb->opt.shm_size > EB_SHM_HEADER_SIZE ? eb->opt.shm_size - EB_SHM_HEADER_SIZE
                                                            : eb->opt.shm_size;
        if (eb_shm_segment_create(data, &eb->seg, serr, sizeof serr) != EB_OK) {
            eb_log_warn("client_shm_unavailable", "reason=\"%s\" action=inline", serr);
        } else {
            eb->reg = REG_NONE;
            wait_registered(eb, eb->opt.connect_timeout_ms);
            if (eb->reg != REG_OK) {
                if (eb->reg == REG_FAILED) {
                    eb_log_warn("client_shm_refused", "reason=\"%s\" action=inline",
                                eb->reg_error);
                } else {
                    snprintf(err, err_len, "no answer from the broker at %s within %d ms "
                             "(segment registration); is embrokerd running?", eb->endpoint,
                             eb->opt.connect_timeout_ms);
                    st = EB_ERR_UNAVAILABLE;
                    goto fail;
                }
            }
        }
    }
    /* The first digest of a process costs about 1 ms (OpenSSL fetches and initialises it): pay
     * it here, not inside the first scan's latency. */
    uint8_t warm[EB_HASH_LEN];
    eb_content_hash("image", 0, 0, "", "", 0, warm);
    if (pthread_create(&eb->hb_thread, NULL, heartbeat_main, eb) == 0)
        eb->hb_started = true;
    *out = eb;
    return EB_OK;

fail:
    if (eb->seg)
        eb_shm_segment_destroy(&eb->seg);
    if (eb->monitor)
        zmq_close(eb->monitor);
    if (eb->sock) {
        zmq_socket_monitor(eb->sock, NULL, 0);
        zmq_close(eb->sock);
    }
    if (eb->zctx)
        zmq_ctx_term(eb->zctx);
    eb_frames_close(&eb->frames);
    pthread_mutex_destroy(&eb->mu);
    pthread_cond_destroy(&eb->hb_cv);
    free(eb);
    return st;
}

void embroker_close(embroker_t **ebp)
{
    if (!ebp || !*ebp)
        return;
    embroker_t *eb = *ebp;
    pthread_mutex_lock(&eb->mu);
    eb->hb_stop = true;
    pthread_cond_broadcast(&eb->hb_cv);
    pthread_mutex_unlock(&eb->mu);
    if (eb->hb_started)
        pthread_join(eb->hb_thread, NULL);

    for (size_t b = 0; b < BUCKETS; b++) {
        embroker_request *r = eb->buckets[b], *next;
        eb->buckets[b] = NULL;
        for (; r; r = next) {
            next = r->hnext;
            r->hnext = NULL;
            complete_error(eb, r, EB_ERR_CANCELLED, "the connection was closed");
        }
    }
    eb->n_pending = 0;
    for (embroker_request *r = eb->all; r; r = r->next)
        r->owner = NULL;
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_DISCONNECT);
    m.u.disconnect.reason = "client closing";
    /* Give the goodbye a moment to leave (LINGER 0 would drop it), so the broker releases the
     * segment now instead of after client_timeout_ms. */
    int linger = 200;
    zmq_setsockopt(eb->sock, ZMQ_LINGER, &linger, sizeof linger);
    eb_frames_send_msg(eb->sock, NULL, 0, &m, NULL, 0, ZMQ_DONTWAIT, NULL, 0);
    eb_frames_close(&eb->frames);
    zmq_socket_monitor(eb->sock, NULL, 0);
    zmq_close(eb->monitor);
    zmq_close(eb->sock);
    zmq_ctx_term(eb->zctx);
    eb_shm_segment_destroy(&eb->seg);
    pthread_mutex_destroy(&eb->mu);
    pthread_cond_destroy(&eb->hb_cv);
    free(eb);
    *ebp = NULL;
}

bool embroker_uses_shm(const embroker_t *eb)
{
    return eb && eb->reg == REG_OK;
}

const char *embroker_segment_name(const embroker_t *eb)
{
    return eb && eb->seg ? eb_shm_segment_name(eb->seg) : NULL;
}

uint64_t embroker_broker_instance(const embroker_t *eb)
{
    return eb ? eb->broker_bid : 0;
}

eb_status embroker_heartbeat(embroker_t *eb)
{
    if (!eb)
        return EB_ERR_INVALID;
    pthread_mutex_lock(&eb->mu);
    drain(eb);
    housekeeping(eb);
    pthread_mutex_unlock(&eb->mu);
    return EB_OK;
}

/* ---- requests -------------------------------------------------------------------------------- */

static void request_free_memory(embroker_request *r)
{
    free(r->reply_block);
    free(r->health_json);
    free(r); /* with its result and region slots (request_new) */
}

static void unlink_all(embroker_t *eb, embroker_request *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else if (eb->all == r)
        eb->all = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

/* Allocate a shm region for len bytes, pumping replies while the segment is full (policy
 * WAIT). EB_OK, or EB_ERR_BUSY / EB_ERR_TOO_LARGE (the caller falls back or fails). */
static eb_status shm_alloc(embroker_t *eb, size_t len, eb_shm_ref *ref, void **data, char *err,
                           size_t err_len)
{
    int64_t deadline = eb_now_us() + (int64_t)eb->opt.shm_wait_ms * 1000;
    for (;;) {
        eb_status st = eb_shm_segment_alloc(eb->seg, len, 0, ref, data, err, err_len);
        if (st != EB_ERR_BUSY || eb->opt.shm_full_policy == EMBROKER_SHM_FULL_INLINE ||
            eb->n_pending == 0 || eb_now_us() >= deadline)
            return st;
        pump(eb, 5);
    }
}

/* The content hash a worker will compute for this input (eb_worker.c: eb_content_opts of the
 * item's normalize/output_dim/instruction, kind name, pixel size for raw_rgb8 only). */
static eb_status client_content_hash(const embroker_input_t *in, const eb_proto_options *o,
                                     uint8_t out[EB_HASH_LEN])
{
    char opts[EB_HASH_OPTS_MAX];
    eb_content_opts(o->normalize, o->output_dim, o->instruction,
                    o->instruction ? strlen(o->instruction) : 0, opts, sizeof opts);
    const char *kind = eb_proto_input_kind_str((eb_proto_input_kind)in->kind);
    if (!kind)
        return EB_ERR_INVALID;
    bool raw = in->kind == EMBROKER_INPUT_RAW_RGB8;
    return eb_content_hash(kind, raw ? in->width : 0, raw ? in->height : 0, opts,
                           in->len ? in->bytes : "", in->len, out);
}

static submit_spec spec_from_request_options(eb_proto_op op, const char *model,
                                             const embroker_request_options_t *ropt)
{
    static const embroker_request_options_t no_opts;
    if (!ropt)
        ropt = &no_opts;
    submit_spec sp;
    memset(&sp, 0, sizeof sp);
    eb_proto_msg m; /* for the protocol's option defaults */
    eb_proto_msg_init(&m, EB_MSG_C_REQUEST);
    sp.options = m.u.request.options;
    sp.op = op;
    sp.model = model;
    sp.options.deadline_ms = ropt->deadline_ms;
    sp.options.priority = ropt->bulk ? EB_PRIORITY_BULK : EB_PRIORITY_INTERACTIVE;
    sp.options.normalize = !ropt->no_normalize;
    sp.options.output_dim = ropt->output_dim;
    sp.options.instruction = ropt->instruction;
    sp.force_inline = ropt->force_inline;
    sp.client_hash = ropt->send_hash;
    return sp;
}

static eb_status submit_locked(embroker_t *eb, const embroker_input_t *inputs, size_t n,
                               const submit_spec *spec, embroker_request_t **out, char *err,
                               size_t err_len)
{
    drain(eb);
    housekeeping(eb);
    if ((eb->reg == REG_WAIT_CHALLENGE || eb->reg == REG_WAIT_REGISTERED ||
         eb->reg == REG_LOST) && n > 0)
        wait_registered(eb, eb->opt.connect_timeout_ms);

    /* The wire inputs and inline frames only live until the send: on the stack for the usual
     * few inputs, on the heap for large batches (up to MAX_INPUTS would be ~40 KiB of stack). */
    eb_proto_input pin_stack[SUBMIT_STACK_INPUTS];
    zmq_msg_t frames_stack[SUBMIT_STACK_INPUTS];
    bool on_heap = n > SUBMIT_STACK_INPUTS;
    embroker_request *r = request_new(n);
    eb_proto_input *pin = on_heap ? calloc(n, sizeof *pin) : pin_stack;
    zmq_msg_t *frames = on_heap ? calloc(n, sizeof *frames) : frames_stack;
    size_t n_frames = 0;
    if (!r || !pin || !frames) {
        free(r);
        if (on_heap) {
            free(pin);
            free(frames);
        }
        snprintf(err, err_len, "cannot submit: out of memory");
        return EB_ERR_NOMEM;
    }
    if (!on_heap)
        memset(pin_stack, 0, n * sizeof *pin);
    r->n = n;
    r->id = eb->next_id++;
    r->owner = eb;
    r->status = EB_ERR_TIMEOUT;
    r->op = spec->op;
    r->want_embedding = spec->options.return_embedding;
    bool want_shm = eb->reg == REG_OK && !spec->force_inline;
    int64_t hash_us = 0, copy_us = 0;
    eb_status st = EB_OK;
    for (size_t i = 0; i < n; i++) {
        const embroker_input_t *in = &inputs[i];
        eb_proto_input *p = &pin[i];
        p->kind = (eb_proto_input_kind)in->kind;
        if (spec->client_hash &&
            (in->kind == EMBROKER_INPUT_TEXT || in->kind == EMBROKER_INPUT_IMAGE ||
             in->kind == EMBROKER_INPUT_RAW_RGB8) &&
            (in->bytes || in->len == 0)) {
            int64_t h0 = eb_now_us();
            if (client_content_hash(in, &spec->options, p->hash) == EB_OK)
                p->has_hash = true; /* a failure only costs the cache lookup */
            hash_us += eb_now_us() - h0;
        }
        if (in->kind == EMBROKER_INPUT_TEXT) {
            if (in->len > eb->limits.max_text_bytes ||
                !eb_proto_utf8_valid(in->bytes, in->len) ||
                (in->len && memchr(in->bytes, 0, in->len))) {
                snprintf(err, err_len, "input %zu: text of %zu bytes is not valid (UTF-8 without "
                         "NUL, at most %u bytes)", i, in->len, eb->limits.max_text_bytes);
                st = in->len > eb->limits.max_text_bytes ? EB_ERR_TOO_LARGE : EB_ERR_INVALID;
                goto fail;
            }
            p->source = EB_SOURCE_NONE;
            p->text = in->len ? (const char *)in->bytes : "";
            p->text_len = (uint32_t)in->len;
            continue;
        }
        if (in->kind != EMBROKER_INPUT_IMAGE && in->kind != EMBROKER_INPUT_RAW_RGB8) {
            snprintf(err, err_len, "input %zu: unknown kind %d (use EMBROKER_INPUT_IMAGE, "
                     "_RAW_RGB8 or _TEXT)", i, (int)in->kind);
            st = EB_ERR_INVALID;
            goto fail;
        }
        if (!in->bytes || in->len == 0) {
            snprintf(err, err_len, "input %zu: no bytes (len 0)", i);
            st = EB_ERR_INVALID;
            goto fail;
        }
        if (in->kind == EMBROKER_INPUT_RAW_RGB8) {
            if ((uint64_t)in->width * in->height * 3 != (uint64_t)in->len || in->width == 0) {
                snprintf(err, err_len, "input %zu: raw RGB8 %ux%u needs %llu bytes, got %zu", i,
                         in->width, in->height,
                         (unsigned long long)in->width * in->height * 3, in->len);
                st = EB_ERR_INVALID;
                goto fail;
            }
            p->width = in->width;
            p->height = in->height;
        } else {
            p->format = (eb_proto_format)in->format;
        }
        if (in->len > eb->limits.max_input_bytes) {
            snprintf(err, err_len, "input %zu: %zu bytes exceed the largest input the broker "
                     "takes (max_input_bytes %llu)", i, in->len,
                     (unsigned long long)eb->limits.max_input_bytes);
            st = EB_ERR_TOO_LARGE;
            goto fail;
        }
        bool placed = false;
        if (want_shm) {
            void *dst = NULL;
            char serr[256];
            eb_status a = shm_alloc(eb, in->len, &r->refs[r->n_refs], &dst, serr, sizeof serr);
            if (a == EB_OK) {
                int64_t c0 = eb_now_us();
                memcpy(dst, in->bytes, in->len);
                copy_us += eb_now_us() - c0;
                p->source = EB_SOURCE_SHM;
                p->seg = eb->seg_id;
                p->epoch = r->refs[r->n_refs].epoch;
                p->off = r->refs[r->n_refs].offset;
                p->len = in->len;
                r->n_refs++;
                r->used_shm = true;
                placed = true;
            } else if (eb->opt.shm_full_policy == EMBROKER_SHM_FULL_WAIT &&
                       a != EB_ERR_TOO_LARGE) {
                snprintf(err, err_len, "input %zu: the shared-memory segment (%llu bytes) stayed "
                         "full for %d ms: %s; wait for replies, enlarge shm_size or use the "
                         "inline fallback policy", i,
                         (unsigned long long)eb_shm_segment_size(eb->seg), eb->opt.shm_wait_ms,
                         serr);
                st = EB_ERR_BUSY;
                goto fail;
            }
        }
        if (!placed) {
            if (in->len > eb->opt.max_inline_bytes) {
                snprintf(err, err_len, "input %zu: %zu bytes exceed the inline limit "
                         "max_inline_bytes=%llu; use shared memory (a local ipc:// broker) or "
                         "raise the limit on both sides", i, in->len,
                         (unsigned long long)eb->opt.max_inline_bytes);
                st = EB_ERR_TOO_LARGE;
                goto fail;
            }
            if (zmq_msg_init_size(&frames[n_frames], in->len) != 0) {
                snprintf(err, err_len, "input %zu: out of memory for %zu inline bytes", i,
                         in->len);
                st = EB_ERR_NOMEM;
                goto fail;
            }
            int64_t c0 = eb_now_us();
            memcpy(zmq_msg_data(&frames[n_frames]), in->bytes, in->len);
            copy_us += eb_now_us() - c0;
            p->source = EB_SOURCE_INLINE;
            p->frame = (uint32_t)n_frames;
            p->len = in->len;
            n_frames++;
        }
    }

    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_REQUEST);
    m.u.request.id = r->id;
    m.u.request.op = spec->op;
    m.u.request.model = spec->model;
    m.u.request.text_model = spec->text_model;
    m.u.request.n_inputs = (uint32_t)n;
    m.u.request.inputs = pin;
    m.u.request.options = spec->options;
    r->submit_us = eb_now_us() - hash_us; /* client_total includes the hashing */
    st = send_msg(eb, &m, frames, n_frames, err, err_len);
    if (st != EB_OK)
        goto fail;
    for (size_t i = 0; i < n_frames; i++)
        zmq_msg_close(&frames[i]);
    if (on_heap) {
        free(frames);
        free(pin);
    }
    r->timings = (embroker_timings_t){-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
    r->timings.client_hash_us = spec->client_hash && n ? hash_us : -1;
    r->timings.client_copy_us = n ? copy_us : -1;
    pending_insert(eb, r);
    r->next = eb->all;
    if (eb->all)
        eb->all->prev = r;
    eb->all = r;
    *out = r;
    return EB_OK;

fail:
    for (size_t i = 0; i < n_frames; i++)
        zmq_msg_close(&frames[i]);
    if (on_heap) {
        free(frames);
        free(pin);
    }
    free_regions(eb, r);
    request_free_memory(r);
    *out = NULL;
    return st;
}

eb_status embroker_submit(embroker_t *eb, const char *model, const embroker_input_t *inputs,
                          size_t n_inputs, const embroker_request_options_t *ropt,
                          embroker_request_t **out, char *err, size_t err_len)
{
    char tmp[256];
    if (!err) {
        err = tmp;
        err_len = sizeof tmp;
    }
    if (out)
        *out = NULL;
    if (!eb || !out || !model || !inputs || n_inputs == 0 || n_inputs > MAX_INPUTS ||
        !eb_proto_model_name_valid(model, strlen(model))) {
        snprintf(err, err_len, "invalid request: need a handle, a model name "
                 "([a-z0-9._-]{1,64}, got \"%s\") and 1..%d inputs (got %zu)",
                 model ? model : "(null)", MAX_INPUTS, n_inputs);
        return EB_ERR_INVALID;
    }
    bool text = inputs[0].kind == EMBROKER_INPUT_TEXT;
    for (size_t i = 1; i < n_inputs; i++)
        if ((inputs[i].kind == EMBROKER_INPUT_TEXT) != text) {
            snprintf(err, err_len, "invalid request: inputs mix texts and images (input %zu); "
                     "send them as separate requests", i);
            return EB_ERR_INVALID;
        }
    submit_spec spec =
        spec_from_request_options(text ? EB_OP_EMBED_TEXT : EB_OP_EMBED_IMAGE, model, ropt);
    pthread_mutex_lock(&eb->mu);
    eb_status st = submit_locked(eb, inputs, n_inputs, &spec, out, err, err_len);
    pthread_mutex_unlock(&eb->mu);
    return st;
}

/* embroker_wait with the lock held: true when req is done. */
static bool wait_locked(embroker_t *eb, embroker_request *req, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : eb_now_us() + (int64_t)timeout_ms * 1000;
    /* pump reads whatever is queued before it sleeps, so a reply already here returns at once
     * without an up-front drain; only a zero timeout, which never reaches pump, needs it. */
    if (timeout_ms == 0)
        drain(eb);
    while (!req->done) {
        int64_t now = eb_now_us();
        if (now >= deadline)
            break;
        int64_t left = timeout_ms < 0 ? 1000 : (deadline - now + 999) / 1000;
        pump(eb, (int)(left > 1000 ? 1000 : left));
    }
    return req->done;
}

eb_status embroker_wait(embroker_t *eb, embroker_request_t *req, int timeout_ms)
{
    if (!eb || !req)
        return EB_ERR_INVALID;
    pthread_mutex_lock(&eb->mu);
    bool done = wait_locked(eb, req, timeout_ms);
    pthread_mutex_unlock(&eb->mu);
    return done ? EB_OK : EB_ERR_TIMEOUT;
}

eb_status embroker_poll(embroker_t *eb, embroker_request_t **done, int timeout_ms)
{
    if (!eb || !done)
        return EB_ERR_INVALID;
    *done = NULL;
    pthread_mutex_lock(&eb->mu);
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : eb_now_us() + (int64_t)timeout_ms * 1000;
    drain(eb);
    eb_status st = EB_ERR_TIMEOUT;
    for (;;) {
        while (eb->done_head && eb->done_head->reported) {
            embroker_request *r = eb->done_head;
            done_queue_remove(eb, r);
        }
        if (eb->done_head) {
            embroker_request *r = eb->done_head;
            done_queue_remove(eb, r);
            r->reported = true;
            *done = r;
            st = EB_OK;
            break;
        }
        if (eb->n_pending == 0) {
            st = EB_ERR_NOT_FOUND;
            break;
        }
        int64_t now = eb_now_us();
        if (now >= deadline)
            break;
        int64_t left = timeout_ms < 0 ? 1000 : (deadline - now + 999) / 1000;
        pump(eb, (int)(left > 1000 ? 1000 : left));
    }
    pthread_mutex_unlock(&eb->mu);
    return st;
}

static void cancel_locked(embroker_t *eb, embroker_request *r)
{
    if (r->done || !pending_take(eb, r->id))
        return;
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_CANCEL);
    m.u.cancel.id = r->id;
    send_msg(eb, &m, NULL, 0, NULL, 0);
    complete_error(eb, r, EB_ERR_CANCELLED, "the request was cancelled");
}

eb_status embroker_cancel(embroker_t *eb, embroker_request_t *req)
{
    if (!eb || !req || req->owner != eb)
        return EB_ERR_INVALID;
    pthread_mutex_lock(&eb->mu);
    cancel_locked(eb, req);
    pthread_mutex_unlock(&eb->mu);
    return EB_OK;
}

void embroker_request_free(embroker_request_t **reqp)
{
    if (!reqp || !*reqp)
        return;
    embroker_request *r = *reqp;
    embroker_t *eb = r->owner;
    if (eb) {
        pthread_mutex_lock(&eb->mu);
        cancel_locked(eb, r);
        done_queue_remove(eb, r);
        unlink_all(eb, r);
        free_regions(eb, r);
        pthread_mutex_unlock(&eb->mu);
    }
    request_free_memory(r);
    *reqp = NULL;
}

/* ---- reading a request ----------------------------------------------------------------------- */

bool embroker_request_done(const embroker_request_t *req)
{
    return req && req->done;
}

eb_status embroker_request_status(const embroker_request_t *req)
{
    if (!req)
        return EB_ERR_INVALID;
    return req->done ? req->status : EB_ERR_TIMEOUT;
}

const char *embroker_request_error(const embroker_request_t *req)
{
    return req && req->error ? req->error : "";
}

uint64_t embroker_request_id(const embroker_request_t *req)
{
    return req ? req->id : 0;
}

size_t embroker_request_count(const embroker_request_t *req)
{
    return req ? req->n : 0;
}

const embroker_result_t *embroker_request_result(const embroker_request_t *req, size_t i)
{
    if (!req || !req->done || !req->results || i >= req->n)
        return NULL;
    return &req->results[i];
}

const embroker_timings_t *embroker_request_timings(const embroker_request_t *req)
{
    return req ? &req->timings : NULL;
}

bool embroker_request_used_shm(const embroker_request_t *req)
{
    return req && req->used_shm;
}

/* ---- blocking helpers ------------------------------------------------------------------------ */

static eb_status finish_blocking(embroker_t *eb, embroker_request *r, eb_status submit_st,
                                 const char *submit_err, embroker_request_t **out)
{
    if (submit_st != EB_OK) {
        eb_log_debug("client_submit_failed", "status=%s reason=\"%s\"",
                     eb_status_str(submit_st), submit_err);
        *out = NULL;
        return submit_st;
    }
    *out = r;
    /* One lock for the wait and the bookkeeping after it. */
    pthread_mutex_lock(&eb->mu);
    if (!wait_locked(eb, r, eb->opt.timeout_ms)) {
        if (!r->done && pending_take(eb, r->id)) {
            eb_proto_msg m;
            eb_proto_msg_init(&m, EB_MSG_C_CANCEL);
            m.u.cancel.id = r->id;
            send_msg(eb, &m, NULL, 0, NULL, 0);
            char msg[200];
            snprintf(msg, sizeof msg, "no reply within %d ms (timeout_ms); the broker or its "
                     "workers may be overloaded or down", eb->opt.timeout_ms);
            complete_error(eb, r, EB_ERR_TIMEOUT, msg);
            done_queue_remove(eb, r);
        }
        pthread_mutex_unlock(&eb->mu);
        return EB_ERR_TIMEOUT;
    }
    done_queue_remove(eb, r);
    r->reported = true;
    pthread_mutex_unlock(&eb->mu);
    return r->status;
}

eb_status embroker_embed(embroker_t *eb, const char *model, const embroker_input_t *inputs,
                         size_t n, const embroker_request_options_t *ropt,
                         embroker_request_t **out)
{
    if (!out)
        return EB_ERR_INVALID;
    *out = NULL;
    if (!eb)
        return EB_ERR_INVALID;
    char err[512];
    embroker_request *r = NULL;
    eb_status st = embroker_submit(eb, model, inputs, n, ropt, &r, err, sizeof err);
    if (st != EB_OK)
        eb_log_warn("client_submit_failed", "model=%s status=%s reason=\"%s\"",
                    model ? model : "", eb_status_str(st), err);
    return finish_blocking(eb, r, st, err, out);
}

eb_status embroker_embed_image(embroker_t *eb, const char *model, const void *bytes, size_t len,
                               embroker_format format, embroker_request_t **out)
{
    embroker_input_t in = {.kind = EMBROKER_INPUT_IMAGE, .format = format, .bytes = bytes,
                           .len = len};
    return embroker_embed(eb, model, &in, 1, NULL, out);
}

eb_status embroker_embed_raw_rgb8(embroker_t *eb, const char *model, const void *pixels,
                                  uint32_t width, uint32_t height, embroker_request_t **out)
{
    embroker_input_t in = {.kind = EMBROKER_INPUT_RAW_RGB8, .width = width, .height = height,
                           .bytes = pixels, .len = (size_t)width * height * 3};
    return embroker_embed(eb, model, &in, 1, NULL, out);
}

static uint8_t *read_file(const char *path, size_t *len, eb_status *st)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *st = errno == ENOENT ? EB_ERR_NOT_FOUND : EB_ERR_IO;
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        *st = EB_ERR_IO;
        return NULL;
    }
    size_t n = (size_t)sb.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    size_t got = 0;
    while (buf && got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0) {
            free(buf);
            buf = NULL;
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    if (!buf) {
        *st = EB_ERR_IO;
        return NULL;
    }
    *len = n;
    return buf;
}

eb_status embroker_embed_image_files(embroker_t *eb, const char *model, const char *const *paths,
                                     size_t n, embroker_request_t **out)
{
    if (!out)
        return EB_ERR_INVALID;
    *out = NULL;
    if (!eb || !paths || n == 0 || n > MAX_INPUTS)
        return EB_ERR_INVALID;
    embroker_input_t *in = calloc(n, sizeof *in);
    uint8_t **bufs = calloc(n, sizeof *bufs);
    eb_status st = EB_OK;
    if (!in || !bufs) {
        st = EB_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        bufs[i] = read_file(paths[i], &len, &st);
        if (!bufs[i]) {
            eb_log_warn("client_file_unreadable", "path=\"%s\" status=%s", paths[i],
                        eb_status_str(st));
            goto out;
        }
        in[i] = (embroker_input_t){.kind = EMBROKER_INPUT_IMAGE, .format = EMBROKER_FORMAT_AUTO,
                                   .bytes = bufs[i], .len = len};
    }
    st = embroker_embed(eb, model, in, n, NULL, out);
out:
    if (bufs)
        for (size_t i = 0; i < n; i++)
            free(bufs[i]);
    free(bufs);
    free(in);
    return st;
}

eb_status embroker_embed_image_file(embroker_t *eb, const char *model, const char *path,
                                    embroker_request_t **out)
{
    return embroker_embed_image_files(eb, model, &path, 1, out);
}

eb_status embroker_embed_texts(embroker_t *eb, const char *model, const char *const *texts,
                               size_t n, const embroker_request_options_t *ropt,
                               embroker_request_t **out)
{
    if (!out)
        return EB_ERR_INVALID;
    *out = NULL;
    if (!eb || !texts || n == 0 || n > MAX_INPUTS)
        return EB_ERR_INVALID;
    embroker_input_t *in = calloc(n, sizeof *in);
    if (!in)
        return EB_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        in[i] = (embroker_input_t){.kind = EMBROKER_INPUT_TEXT, .bytes = texts[i],
                                   .len = texts[i] ? strlen(texts[i]) : 0};
    eb_status st = embroker_embed(eb, model, in, n, ropt, out);
    free(in);
    return st;
}

eb_status embroker_embed_text(embroker_t *eb, const char *model, const char *text,
                              embroker_request_t **out)
{
    return embroker_embed_texts(eb, model, &text, 1, NULL, out);
}

/* ---- scan, store, delete --------------------------------------------------------------------- */

void embroker_scan_options_default(embroker_scan_options_t *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->image_weight = -1;
    opt->text_weight = -1;
}

static bool optional_name_ok(const char *name)
{
    return !name || eb_proto_model_name_valid(name, strlen(name));
}

static bool id_ok(const char *s)
{
    return s && *s && strlen(s) <= EB_PROTO_ID_MAX && eb_proto_utf8_valid(s, strlen(s));
}

/* Shared by scan and store: check, build the spec and submit. */
static eb_status submit_scan_like(embroker_t *eb, eb_proto_op op, const embroker_input_t *image,
                                  const char *text, const embroker_scan_options_t *opt_in,
                                  embroker_request_t **out, char *err, size_t err_len)
{
    char tmp[256];
    if (!err) {
        err = tmp;
        err_len = sizeof tmp;
    }
    if (out)
        *out = NULL;
    embroker_scan_options_t defaults;
    if (!opt_in) {
        embroker_scan_options_default(&defaults);
        opt_in = &defaults;
    }
    const char *what = eb_proto_op_str(op);
    if (!eb || !out) {
        snprintf(err, err_len, "invalid %s: need a handle and an output request pointer", what);
        return EB_ERR_INVALID;
    }
    if (!image && !text) {
        snprintf(err, err_len, "invalid %s: give an image, a text or both", what);
        return EB_ERR_INVALID;
    }
    if (image && image->kind != EMBROKER_INPUT_IMAGE && image->kind != EMBROKER_INPUT_RAW_RGB8) {
        snprintf(err, err_len, "invalid %s: the image input has kind %d; use "
                 "EMBROKER_INPUT_IMAGE or EMBROKER_INPUT_RAW_RGB8 (pass texts as `text`)", what,
                 (int)image->kind);
        return EB_ERR_INVALID;
    }
    if (!optional_name_ok(opt_in->image_model) || !optional_name_ok(opt_in->text_model)) {
        snprintf(err, err_len, "invalid %s: model names are [a-z0-9._-]{1,64} (got \"%s\" / "
                 "\"%s\")", what, opt_in->image_model ? opt_in->image_model : "",
                 opt_in->text_model ? opt_in->text_model : "");
        return EB_ERR_INVALID;
    }
    bool stores = op == EB_OP_STORE || opt_in->store;
    if (stores && !id_ok(opt_in->product_id)) {
        snprintf(err, err_len, "invalid %s: storing needs a product_id (non-empty UTF-8, at most "
                 "%d bytes)", what, EB_PROTO_ID_MAX);
        return EB_ERR_INVALID;
    }
    if (op == EB_OP_STORE && !id_ok(opt_in->template_name)) {
        snprintf(err, err_len, "invalid store of product \"%s\": a template (BusinessTemplate) is "
                 "required", opt_in->product_id);
        return EB_ERR_INVALID;
    }
    if ((opt_in->template_name && !id_ok(opt_in->template_name)) ||
        (opt_in->source_type && !id_ok(opt_in->source_type))) {
        snprintf(err, err_len, "invalid %s: template and source_type must be non-empty UTF-8 of "
                 "at most %d bytes", what, EB_PROTO_ID_MAX);
        return EB_ERR_INVALID;
    }
    if (op == EB_OP_SCAN && opt_in->k > eb->limits.max_k) {
        snprintf(err, err_len, "invalid scan: k %u exceeds max_k %u", opt_in->k, eb->limits.max_k);
        return EB_ERR_INVALID;
    }
    if (opt_in->image_weight > 1000 || opt_in->text_weight > 1000) {
        snprintf(err, err_len, "invalid %s: weights are in [0, 1000] (negative = broker "
                 "default)", what);
        return EB_ERR_INVALID;
    }

    submit_spec spec;
    memset(&spec, 0, sizeof spec);
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_C_REQUEST);
    spec.options = m.u.request.options;
    spec.op = op;
    spec.model = opt_in->image_model;
    spec.text_model = opt_in->text_model;
    spec.client_hash = !opt_in->no_client_hash;
    eb_proto_options *o = &spec.options;
    o->deadline_ms = opt_in->deadline_ms;
    o->priority = opt_in->bulk ? EB_PRIORITY_BULK : EB_PRIORITY_INTERACTIVE;
    o->return_embedding = opt_in->return_embedding;
    o->k = op == EB_OP_SCAN ? opt_in->k : 0;
    o->template_name = opt_in->template_name;
    o->source_type = opt_in->source_type;
    o->store = op == EB_OP_SCAN && opt_in->store;
    o->product_id = stores ? opt_in->product_id : NULL;
    o->image_weight = opt_in->image_weight < 0 ? -1 : opt_in->image_weight;
    o->text_weight = opt_in->text_weight < 0 ? -1 : opt_in->text_weight;

    embroker_input_t in[2];
    size_t n = 0;
    if (image)
        in[n++] = *image;
    if (text)
        in[n++] = (embroker_input_t){.kind = EMBROKER_INPUT_TEXT, .bytes = text,
                                     .len = strlen(text)};
    pthread_mutex_lock(&eb->mu);
    eb_status st = submit_locked(eb, in, n, &spec, out, err, err_len);
    pthread_mutex_unlock(&eb->mu);
    return st;
}

eb_status embroker_submit_scan(embroker_t *eb, const embroker_input_t *image, const char *text,
                               const embroker_scan_options_t *opt, embroker_request_t **out,
                               char *err, size_t err_len)
{
    return submit_scan_like(eb, EB_OP_SCAN, image, text, opt, out, err, err_len);
}

eb_status embroker_submit_store(embroker_t *eb, const embroker_input_t *image, const char *text,
                                const embroker_scan_options_t *opt, embroker_request_t **out,
                                char *err, size_t err_len)
{
    return submit_scan_like(eb, EB_OP_STORE, image, text, opt, out, err, err_len);
}

static eb_status blocking_scan_like(embroker_t *eb, eb_proto_op op, const embroker_input_t *image,
                                    const char *text, const embroker_scan_options_t *opt,
                                    embroker_request_t **out)
{
    if (!out)
        return EB_ERR_INVALID;
    *out = NULL;
    if (!eb)
        return EB_ERR_INVALID;
    char err[512];
    embroker_request *r = NULL;
    eb_status st = submit_scan_like(eb, op, image, text, opt, &r, err, sizeof err);
    if (st != EB_OK)
        eb_log_warn("client_submit_failed", "op=%s status=%s reason=\"%s\"", eb_proto_op_str(op),
                    eb_status_str(st), err);
    return finish_blocking(eb, r, st, err, out);
}

eb_status embroker_scan(embroker_t *eb, const embroker_input_t *image, const char *text,
                        const embroker_scan_options_t *opt, embroker_request_t **out)
{
    return blocking_scan_like(eb, EB_OP_SCAN, image, text, opt, out);
}

eb_status embroker_store(embroker_t *eb, const embroker_input_t *image, const char *text,
                         const embroker_scan_options_t *opt, embroker_request_t **out)
{
    return blocking_scan_like(eb, EB_OP_STORE, image, text, opt, out);
}

eb_status embroker_delete(embroker_t *eb, const char *product_id, const char *template_name,
                          uint64_t *deleted, char *err, size_t err_len)
{
    char tmp[256];
    if (!err) {
        err = tmp;
        err_len = sizeof tmp;
    }
    if (deleted)
        *deleted = 0;
    if (!eb || !id_ok(product_id) || (template_name && !id_ok(template_name))) {
        snprintf(err, err_len, "invalid delete: need a handle and a product_id (and optionally a "
                 "template), non-empty UTF-8 of at most %d bytes", EB_PROTO_ID_MAX);
        return EB_ERR_INVALID;
    }
    submit_spec spec = spec_from_request_options(EB_OP_DELETE, NULL, NULL);
    spec.options.product_id = product_id;
    spec.options.template_name = template_name;
    pthread_mutex_lock(&eb->mu);
    embroker_request *r = NULL;
    eb_status st = submit_locked(eb, NULL, 0, &spec, &r, err, err_len);
    pthread_mutex_unlock(&eb->mu);
    if (st != EB_OK)
        return st;
    st = finish_blocking(eb, r, st, err, &r);
    if (st == EB_OK) {
        if (r->has_deleted) {
            if (deleted)
                *deleted = r->deleted;
        } else {
            snprintf(err, err_len, "the broker's delete reply carried no \"deleted\" count");
            st = EB_ERR_PROTOCOL;
        }
    } else {
        snprintf(err, err_len, "delete of product \"%s\" failed: %s: %s", product_id,
                 eb_status_str(st), embroker_request_error(r));
    }
    embroker_request_free(&r);
    return st;
}

const embroker_match_t *embroker_request_matches(const embroker_request_t *req, size_t *n)
{
    if (n)
        *n = 0;
    if (!req || !req->done || !req->n_matches)
        return NULL;
    if (n)
        *n = req->n_matches;
    return req->matches;
}

eb_status embroker_request_search_error(const embroker_request_t *req, const char **message)
{
    if (message)
        *message = "";
    if (!req)
        return EB_ERR_INVALID;
    if (!req->done)
        return EB_ERR_TIMEOUT;
    if (req->op != EB_OP_SCAN)
        return EB_ERR_INVALID;
    if (req->has_search_error) {
        if (message)
            *message = req->search_message ? req->search_message : "";
        return req->search_error;
    }
    if (req->status != EB_OK) {
        if (message)
            *message = req->error ? req->error : "";
        return req->status;
    }
    return EB_OK;
}

const char *embroker_request_store_id(const embroker_request_t *req)
{
    return req && req->done ? req->store_id : NULL;
}

bool embroker_request_deleted(const embroker_request_t *req, uint64_t *n)
{
    if (n)
        *n = 0;
    if (!req || !req->done || !req->has_deleted)
        return false;
    if (n)
        *n = req->deleted;
    return true;
}

eb_status embroker_health(embroker_t *eb, char **json, char *err, size_t err_len)
{
    char tmp[256];
    if (!err) {
        err = tmp;
        err_len = sizeof tmp;
    }
    if (!eb || !json)
        return EB_ERR_INVALID;
    *json = NULL;
    submit_spec spec = spec_from_request_options(EB_OP_HEALTH, NULL, NULL);
    pthread_mutex_lock(&eb->mu);
    embroker_request *r = NULL;
    eb_status st = submit_locked(eb, NULL, 0, &spec, &r, err, err_len);
    pthread_mutex_unlock(&eb->mu);
    if (st != EB_OK)
        return st;
    st = finish_blocking(eb, r, st, err, &r);
    if (st == EB_OK) {
        if (r->health_json) {
            *json = r->health_json;
            r->health_json = NULL;
        } else {
            snprintf(err, err_len, "the broker's health reply carried no health map");
            st = EB_ERR_PROTOCOL;
        }
    } else {
        snprintf(err, err_len, "health request failed: %s: %s", eb_status_str(st),
                 embroker_request_error(r));
    }
    embroker_request_free(&r);
    return st;
}
