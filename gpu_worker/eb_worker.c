/* eb_worker — the worker's two threads and how they share the one connection.
 *
 * The compute thread runs the models and, whenever it is not running one, is also the thread
 * that talks to the broker: it sleeps in zmq_poll on the socket, receives REQUESTs, runs them and
 * sends the REPLYs itself. The I/O thread (the caller of eb_worker_run) looks after the
 * connection only while a batch runs: it wakes a few times per heartbeat interval and, while the
 * compute thread is busy in a forward, receives what the broker sent (REQUESTs are queued),
 * heartbeats, reconnects a silent broker, and watches for a forward that makes no progress.
 *
 * Why not the textbook split (the I/O thread owns the socket and hands every job to the compute
 * thread and back): each request then pays two extra thread wake-ups (I/O → compute through a
 * condition variable, compute → I/O through an eventfd) and an extra zmq_poll round, which on a
 * small machine cost more than the whole identity model and showed up as most of the gap between
 * our round trip and the plain zmq_proxy floor (docs/performance.md). Here a request costs one
 * wake-up, as it would in a single-threaded server, and heartbeats still never wait for a batch.
 *
 * One mutex, sock_mu, stands for "owning the connection": the socket, its per-connection state
 * and the job queue. The compute thread holds it at all times except while it runs a forward or
 * the canaries; the I/O thread only ever trylocks it, so it acts exactly while the compute thread
 * is busy. The mutex also gives the full memory barrier ZMQ asks for when a socket moves between
 * threads, and only the holder ever touches the socket.
 *
 * The compute thread does not run jobs one by one: it takes the oldest job together with the
 * later queued jobs for the same model and runs them as one forward (take_group says why and in
 * what order). Each job still gets its own REPLY; nothing in the protocol changes.
 *
 * A job carries the connection generation it arrived on. When the broker restarts or goes quiet
 * the connection's owner opens a new connection (generation + 1) and sends READY again; results
 * of jobs from an older generation are dropped, because the new broker never sent them (the old
 * broker's clients get EB_ERR_RESTARTED from their library).
 *
 * Shared-memory segments are attached on first use and kept mapped in a small cache keyed by
 * name; each item holds a reference while it copies, and RELEASE_SEGMENT unmaps a segment once
 * no item reads from it.
 */
#include "eb_worker.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "eb_clock.h"
#include "eb_frames.h"
#include "eb_hash.h"
#include "eb_log.h"
#include "eb_shm_reader.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "embeddings travel as little-endian float32: add a byte swap for this host");

/* ---- types ----------------------------------------------------------------------------------- */

typedef struct segment_entry {
    char *name;
    eb_shm_reader *reader;
    int refs;      /* items copying from it right now */
    bool released; /* RELEASE_SEGMENT seen: unmap when refs reaches 0 */
} segment_entry;

typedef struct job {
    struct job *next;
    uint64_t generation;
    eb_frames frames;   /* the received REQUEST: header, command, body, item frames */
    eb_frames_view view;
    eb_proto_msg msg;   /* decoded batch (EB_MSG_W_REQUEST) */
    /* results, filled by the compute thread */
    eb_proto_item_result *results; /* (n_items,) */
    char **errors;                 /* (n_items,) malloc'ed messages or NULL */
    zmq_msg_t *out_frames;         /* (n_items,) embeddings, little-endian float32 */
} job;

typedef struct job_queue {
    job *head, *tail;
    size_t n;
} job_queue;

/* Where input k of a forward came from: item `item` of job `owner` (a forward spans jobs). */
typedef struct forward_slot {
    job *owner;
    uint32_t item;
} forward_slot;

struct eb_worker {
    eb_worker_options opt;
    char *endpoint;
    char *worker_id;
    eb_model **models;
    size_t n_models;
    uint32_t max_batch;
    uint32_t queue_items;

    /* The connection, guarded by sock_mu: whoever holds it owns the socket (see the top of
     * this file). */
    pthread_mutex_t sock_mu;
    void *zctx;
    void *sock;
    int sock_fd;           /* sock's ZMQ_FD (wait_for_input) */
    eb_frames rx;          /* receive scratch */
    uint64_t generation;
    uint64_t broker_bid;   /* 0 = unknown yet */
    int64_t last_recv_us;
    int64_t last_send_us;
    int64_t connected_us;
    int backoff_ms;
    uint32_t held_items;   /* items received and not yet answered (any generation) */
    uint32_t broker_credit;/* items the broker may still send on this connection: granted minus
                              received (its view of our credit) */
    bool unhealthy;
    job_queue todo;        /* received, not yet computed */

    /* between the threads */
    pthread_t compute_thread;
    bool compute_started;
    atomic_int_fast64_t batch_started_us; /* 0 = no forward running */
    atomic_bool stop;
    atomic_bool io_failed; /* the compute thread's zmq_poll failed: eb_worker_run returns EB_ERR_IO */
    int stop_fd;           /* eventfd: eb_worker_stop → both threads' polls */
    atomic_bool canary_failed; /* a model's canary moved: report unhealthy from now on */
    int64_t next_canary_us;    /* compute thread: when the canaries run next (0 = never) */

    /* segment cache (shared by both threads) */
    pthread_mutex_t seg_mu;
    segment_entry *segs;
    size_t n_segs, cap_segs;

    /* compute thread scratch (grown, reused across forwards) */
    uint8_t *staging;
    size_t staging_cap;
    float *emb;
    size_t emb_cap;
    eb_model_input *in;
    size_t in_cap;
    eb_model_output *out;
    size_t out_cap;
    forward_slot *slots;
    size_t slots_cap;

    /* counters */
    atomic_uint_fast64_t st_batches, st_items, st_failed, st_dropped, st_reconnects, st_bad;
    atomic_uint_fast64_t st_canary_checks, st_canary_failures;
};

/* ---- small helpers --------------------------------------------------------------------------- */

static void queue_push(job_queue *q, job *j)
{
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    q->n++;
}

static job *queue_pop(job_queue *q)
{
    job *j = q->head;
    if (j) {
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        q->n--;
    }
    return j;
}

static void job_free(job *j)
{
    if (!j)
        return;
    uint32_t n = j->msg.kind == EB_MSG_W_REQUEST ? j->msg.u.batch.n_items : 0;
    if (j->errors) {
        for (uint32_t i = 0; i < n; i++)
            free(j->errors[i]);
        free(j->errors);
    }
    if (j->out_frames) {
        for (uint32_t i = 0; i < n; i++)
            zmq_msg_close(&j->out_frames[i]);
        free(j->out_frames);
    }
    free(j->results);
    eb_proto_msg_free(&j->msg);
    eb_frames_close(&j->frames);
    free(j);
}

static eb_model *find_model(eb_worker *w, const char *name)
{
    for (size_t i = 0; i < w->n_models; i++)
        if (strcmp(w->models[i]->info.name, name) == 0)
            return w->models[i];
    return NULL;
}

static const char *kind_name(eb_proto_input_kind kind)
{
    const char *s = eb_proto_input_kind_str(kind);
    return s ? s : "?";
}

static void eventfd_signal(int fd)
{
    uint64_t one = 1;
    ssize_t r = write(fd, &one, sizeof one);
    (void)r;
}

/* ---- segment cache --------------------------------------------------------------------------- */

/* Find or attach `name` and take a reference; returns its reader (readers never move, and an
 * entry with references is never removed). NULL with status/err when it cannot be used. */
static eb_shm_reader *segment_acquire(eb_worker *w, const char *name, eb_status *st, char *err,
                                      size_t err_len)
{
    pthread_mutex_lock(&w->seg_mu);
    for (size_t i = 0; i < w->n_segs; i++) {
        segment_entry *e = &w->segs[i];
        if (strcmp(e->name, name) == 0) {
            if (e->released) {
                pthread_mutex_unlock(&w->seg_mu);
                *st = EB_ERR_STALE;
                snprintf(err, err_len, "segment %s was released by the broker (its client is "
                         "gone)", name);
                return NULL;
            }
            e->refs++;
            pthread_mutex_unlock(&w->seg_mu);
            return e->reader;
        }
    }
    /* Attaching outside the lock would let two threads attach the same name; only the compute
     * thread attaches, so holding the lock here costs the I/O thread (RELEASE_SEGMENT) at most
     * one attach. */
    eb_shm_reader *reader = NULL;
    *st = eb_shm_reader_attach(name, &reader, err, err_len);
    if (*st != EB_OK) {
        pthread_mutex_unlock(&w->seg_mu);
        return NULL;
    }
    if (w->n_segs == w->cap_segs) {
        size_t cap = w->cap_segs ? 2 * w->cap_segs : 8;
        segment_entry *segs = realloc(w->segs, cap * sizeof *segs);
        if (!segs) {
            pthread_mutex_unlock(&w->seg_mu);
            eb_shm_reader_destroy(&reader);
            *st = EB_ERR_NOMEM;
            snprintf(err, err_len, "cannot cache segment %s: out of memory", name);
            return NULL;
        }
        w->segs = segs;
        w->cap_segs = cap;
    }
    segment_entry *e = &w->segs[w->n_segs];
    e->name = strdup(name);
    if (!e->name) {
        pthread_mutex_unlock(&w->seg_mu);
        eb_shm_reader_destroy(&reader);
        *st = EB_ERR_NOMEM;
        snprintf(err, err_len, "cannot cache segment %s: out of memory", name);
        return NULL;
    }
    e->reader = reader;
    e->refs = 1;
    e->released = false;
    w->n_segs++;
    eb_log_debug("segment_attached", "name=%s size=%llu", name,
                 (unsigned long long)eb_shm_reader_size(reader));
    pthread_mutex_unlock(&w->seg_mu);
    return reader;
}

/* Remove entry i (lock held): unmap and move the last entry into its place. */
static void segment_remove_locked(eb_worker *w, size_t i)
{
    segment_entry *e = &w->segs[i];
    eb_log_debug("segment_unmapped", "name=%s", e->name);
    eb_shm_reader_destroy(&e->reader);
    free(e->name);
    w->segs[i] = w->segs[w->n_segs - 1];
    w->n_segs--;
}

/* Drop the reference taken by segment_acquire (by name: the array may have moved). */
static void segment_put(eb_worker *w, const char *name)
{
    pthread_mutex_lock(&w->seg_mu);
    for (size_t i = 0; i < w->n_segs; i++) {
        segment_entry *e = &w->segs[i];
        if (strcmp(e->name, name) == 0) {
            e->refs--;
            if (e->refs == 0 && e->released)
                segment_remove_locked(w, i);
            break;
        }
    }
    pthread_mutex_unlock(&w->seg_mu);
}

/* RELEASE_SEGMENT: unmap now if idle, else when the last copy finishes. name NULL = every idle
 * segment (after a reconnect the new broker knows none of them). */
static void segment_release(eb_worker *w, const char *name)
{
    pthread_mutex_lock(&w->seg_mu);
    for (size_t i = 0; i < w->n_segs;) {
        segment_entry *e = &w->segs[i];
        if (name && strcmp(e->name, name) != 0) {
            i++;
            continue;
        }
        if (e->refs == 0) {
            segment_remove_locked(w, i);
            continue;
        }
        if (name)
            e->released = true;
        i++;
    }
    pthread_mutex_unlock(&w->seg_mu);
}

/* Copy an item's bytes out of its client's segment into dst. */
static eb_status copy_from_segment(eb_worker *w, const eb_proto_item *item, uint8_t *dst,
                                   char *err, size_t err_len)
{
    eb_status st = EB_OK;
    eb_shm_reader *reader = segment_acquire(w, item->segment, &st, err, err_len);
    if (!reader)
        return st;
    eb_shm_ref ref = {.epoch = item->epoch, .offset = item->off, .length = item->len};
    st = eb_shm_reader_copy(reader, &ref, dst, item->len, err, err_len);
    segment_put(w, item->segment);
    return st;
}

/* ---- compute thread -------------------------------------------------------------------------- */

static bool grow(void **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t cap2 = *cap ? *cap : 4096;
    while (cap2 < need)
        cap2 *= 2;
    void *p = realloc(*buf, cap2);
    if (!p)
        return false;
    *buf = p;
    *cap = cap2;
    return true;
}

static void item_fail(job *j, uint32_t i, eb_status st, const char *msg)
{
    j->results[i].status = st;
    j->results[i].dims = 0;
    j->results[i].has_hash = false;
    free(j->errors[i]);
    j->errors[i] = strdup(msg && *msg ? msg : eb_status_str(st));
    j->results[i].error = j->errors[i];
}

/* The most items one forward of `model` may carry: its own largest batch, and no more than the
 * batch size this worker announced (max_batch_items may have been set lower on purpose). */
static uint32_t forward_cap(const eb_worker *w, const eb_model *model)
{
    if (!model)
        return 0;
    uint32_t cap = model->info.max_batch_items;
    return w->max_batch < cap ? w->max_batch : cap;
}

/* Why jobs are grouped: the broker sends eagerly, so under a load of small requests (a backfill
 * of single images, many interactive clients) the worker holds many jobs of one or two items each.
 * Running them one forward each would keep a GPU at batch 1 while dozens of inputs wait behind
 * it; one forward over all of them costs about as much as one over a single input.
 *
 * Move the oldest job of `todo` into `group`, then the later jobs for the same model, oldest
 * first, while their items fit in one forward (forward_cap). The scan stops at the first job of
 * that model that does not fit, so one model's jobs are always computed in arrival order; a job
 * of another model is passed by at most this one forward and leads the next group. A job is never
 * split (one larger than the cap alone is chunked by compute_group). Called with sock_mu held. */
static void take_group(eb_worker *w, job_queue *todo, job_queue *group)
{
    job *first = queue_pop(todo);
    if (!first)
        return;
    queue_push(group, first);
    const char *name = first->msg.u.batch.model;
    uint32_t cap = forward_cap(w, find_model(w, name));
    uint32_t items = first->msg.u.batch.n_items;
    job *prev = NULL;
    for (job *j = todo->head; j && items < cap;) {
        job *next = j->next;
        if (strcmp(j->msg.u.batch.model, name) != 0) {
            prev = j;
            j = next;
            continue;
        }
        if (j->msg.u.batch.n_items > cap - items)
            break;
        if (prev)
            prev->next = next;
        else
            todo->head = next;
        if (todo->tail == j)
            todo->tail = prev;
        todo->n--;
        items += j->msg.u.batch.n_items;
        queue_push(group, j);
        j = next;
    }
}

/* Fail every item of every job in the group with the same status and message. */
static void group_fail(const job_queue *group, eb_status st, const char *msg)
{
    for (job *j = group->head; j; j = j->next)
        for (uint32_t i = 0; i < j->msg.u.batch.n_items; i++)
            item_fail(j, i, st, msg);
}

/* Compute a group of jobs for one model (take_group) as one forward: fill each job's results,
 * errors and out_frames as if it had run alone. Stages 1-2 (bytes, hash) and every failure stay
 * per item; the model runs once over all the items that got that far (in chunks of its largest
 * batch only when a single job is bigger than that), and each item's infer timing is that shared
 * forward's time. */
static void compute_group(eb_worker *w, const job_queue *group)
{
    const char *name = group->head->msg.u.batch.model;
    char err[512];
    eb_model *model = find_model(w, name);

    /* Stage 1: sizes, so all shm copies of the group land in one staging buffer, and the
     * per-forward scratch (inputs, outputs, slot -> item) is grown once, not allocated per
     * batch. */
    size_t staging_need = 0, total = 0;
    for (job *j = group->head; j; j = j->next) {
        const eb_proto_batch *b = &j->msg.u.batch;
        for (uint32_t i = 0; i < b->n_items; i++) {
            if (b->items[i].source == EB_SOURCE_SHM)
                staging_need += (size_t)b->items[i].len;
            eb_proto_item_result *r = &j->results[i];
            r->item_id = b->items[i].item_id;
            eb_proto_timings_clear(&r->timings);
        }
        total += b->n_items;
    }
    uint32_t dims = model ? model->info.dims : 0;
    bool ok = grow((void **)&w->staging, &w->staging_cap, staging_need) &&
              grow((void **)&w->emb, &w->emb_cap, total * dims * sizeof(float) + 1) &&
              grow((void **)&w->in, &w->in_cap, total * sizeof *w->in + 1) &&
              grow((void **)&w->out, &w->out_cap, total * sizeof *w->out + 1) &&
              grow((void **)&w->slots, &w->slots_cap, total * sizeof *w->slots + 1);
    if (!ok) {
        group_fail(group, EB_ERR_NOMEM, "worker out of memory for this batch");
        goto done;
    }
    if (!model) {
        snprintf(err, sizeof err, "model \"%s\" is not served by worker %s", name, w->worker_id);
        group_fail(group, EB_ERR_NOT_FOUND, err);
        goto done;
    }
    eb_model_input *in = w->in;
    eb_model_output *out = w->out;
    forward_slot *slots = w->slots;

    /* Stage 2: bytes + hash per item. */
    size_t staging_off = 0;
    uint32_t m = 0;
    for (job *j = group->head; j; j = j->next) {
        const eb_proto_batch *b = &j->msg.u.batch;
        for (uint32_t i = 0; i < b->n_items; i++) {
            const eb_proto_item *it = &b->items[i];
            eb_proto_item_result *r = &j->results[i];
            const uint8_t *bytes = NULL;
            size_t len = 0;
            err[0] = '\0';
            if (!eb_model_accepts(model->info.input, it->kind)) {
                snprintf(err, sizeof err, "model \"%s\" takes %s inputs, item %u is %s", b->model,
                         kind_name(model->info.input), i, kind_name(it->kind));
                item_fail(j, i, EB_ERR_INVALID, err);
                continue;
            }
            int64_t t0 = eb_now_us();
            if (it->kind == EB_INPUT_TEXT) {
                bytes = (const uint8_t *)it->text;
                len = it->text_len;
            } else if (it->source == EB_SOURCE_INLINE) {
                zmq_msg_t *f = &j->frames.parts[j->view.first_item + it->frame];
                bytes = zmq_msg_data(f);
                len = zmq_msg_size(f);
            } else if (it->source == EB_SOURCE_SHM) {
                uint8_t *dst = w->staging + staging_off;
                eb_status st = copy_from_segment(w, it, dst, err, sizeof err);
                if (st != EB_OK) {
                    item_fail(j, i, st, err);
                    continue;
                }
                staging_off += (size_t)it->len;
                bytes = dst;
                len = (size_t)it->len;
                r->timings.us[EB_STAGE_COPY] = eb_now_us() - t0;
            } else {
                snprintf(err, sizeof err, "item %u (%s) has no bytes (neither shm nor frame)", i,
                         kind_name(it->kind));
                item_fail(j, i, EB_ERR_PROTOCOL, err);
                continue;
            }
            if (it->kind == EB_INPUT_RAW_RGB8 &&
                (uint64_t)it->width * it->height * 3 != (uint64_t)len) {
                snprintf(err, sizeof err,
                         "raw_rgb8 item %u: %ux%u pixels need %llu bytes, got %zu", i, it->width,
                         it->height, (unsigned long long)it->width * it->height * 3, len);
                item_fail(j, i, EB_ERR_INVALID, err);
                continue;
            }
            int64_t t1 = eb_now_us();
            char opts[EB_HASH_OPTS_MAX];
            size_t instruction_len = it->instruction ? strlen(it->instruction) : 0;
            eb_content_opts(it->normalize, it->output_dim, it->instruction, instruction_len, opts,
                            sizeof opts);
            uint32_t hw = it->kind == EB_INPUT_RAW_RGB8 ? it->width : 0;
            uint32_t hh = it->kind == EB_INPUT_RAW_RGB8 ? it->height : 0;
            eb_status st = eb_content_hash(kind_name(it->kind), hw, hh, opts, bytes, len, r->hash);
            if (st != EB_OK) {
                item_fail(j, i, st, "content hash failed (libcrypto)");
                continue;
            }
            r->has_hash = true;
            r->timings.us[EB_STAGE_HASH] = eb_now_us() - t1;

            eb_model_input *mi = &in[m];
            mi->kind = it->kind;
            mi->format = it->format;
            mi->width = it->width;
            mi->height = it->height;
            mi->bytes = bytes;
            mi->len = len;
            mi->normalize = it->normalize;
            mi->instruction = it->instruction;
            mi->instruction_len = instruction_len;
            mi->output_dim = it->output_dim;
            slots[m].owner = j;
            slots[m].item = i;
            m++;
        }
    }

    /* Stage 3: one forward over the whole group (chunks of the model's largest batch only when
     * a single job exceeds it). */
    for (uint32_t s = 0; s < m; s += model->info.max_batch_items) {
        uint32_t c = m - s < model->info.max_batch_items ? m - s : model->info.max_batch_items;
        for (uint32_t k = s; k < s + c; k++) {
            memset(&out[k], 0, sizeof out[k]);
            out[k].embedding = w->emb + (size_t)k * dims;
            out[k].status = EB_OK;
            out[k].decode_us = out[k].preprocess_us = out[k].infer_us = -1;
        }
        err[0] = '\0';
        eb_status st = model->ops->run_batch(model->state, in + s, out + s, c, err, sizeof err);
        for (uint32_t k = s; k < s + c; k++) {
            job *j = slots[k].owner;
            uint32_t i = slots[k].item;
            eb_proto_item_result *r = &j->results[i];
            if (st != EB_OK) {
                item_fail(j, i, st, err);
                continue;
            }
            if (out[k].status != EB_OK) {
                item_fail(j, i, out[k].status, out[k].error);
                continue;
            }
            if (out[k].dims == 0 || out[k].dims > dims) {
                item_fail(j, i, EB_ERR_INTERNAL, "model returned an embedding of bad length");
                continue;
            }
            r->timings.us[EB_STAGE_DECODE] = out[k].decode_us;
            r->timings.us[EB_STAGE_PREPROCESS] = out[k].preprocess_us;
            r->timings.us[EB_STAGE_INFER] = out[k].infer_us;
            size_t bytes = (size_t)out[k].dims * sizeof(float);
            zmq_msg_close(&j->out_frames[i]);
            if (zmq_msg_init_size(&j->out_frames[i], bytes) != 0) {
                zmq_msg_init(&j->out_frames[i]);
                item_fail(j, i, EB_ERR_NOMEM, "worker out of memory for an embedding frame");
                continue;
            }
            memcpy(zmq_msg_data(&j->out_frames[i]), out[k].embedding, bytes);
            r->status = EB_OK;
            r->error = NULL;
            r->dims = out[k].dims;
        }
    }

done:
    for (job *j = group->head; j; j = j->next) {
        uint32_t n = j->msg.u.batch.n_items;
        for (uint32_t i = 0; i < n; i++)
            if (j->results[i].status != EB_OK)
                atomic_fetch_add(&w->st_failed, 1);
        atomic_fetch_add(&w->st_items, n);
        atomic_fetch_add(&w->st_batches, 1);
    }
}

/* Rerun every model's canary (eb_model.h) and remember a failure for the heartbeats. Runs on the
 * compute thread between batches, under the watchdog like a batch. */
static void run_canaries(eb_worker *w)
{
    atomic_store(&w->batch_started_us, eb_now_us());
    for (size_t i = 0; i < w->n_models; i++) {
        char err[512] = "";
        double distance = 0;
        eb_status st = eb_model_canary_check(w->models[i], w->opt.canary_tolerance, &distance, err,
                                             sizeof err);
        atomic_fetch_add(&w->st_canary_checks, 1);
        if (st != EB_OK) {
            atomic_fetch_add(&w->st_canary_failures, 1);
            atomic_store(&w->canary_failed, true);
            eb_log_error("worker_canary_failed", "worker=%s model=%s status=%s reason=\"%s\"",
                         w->worker_id, w->models[i]->info.name, eb_status_str(st), err);
        } else {
            eb_log_debug("worker_canary_ok", "worker=%s model=%s distance=%.3g", w->worker_id,
                         w->models[i]->info.name, distance);
        }
    }
    atomic_store(&w->batch_started_us, 0);
    w->next_canary_us = eb_now_us() + (int64_t)w->opt.canary_interval_ms * 1000;
}

/* ---- the connection (every function here is called with sock_mu held) ------------------------ */

/* Heartbeats and credit never wait; a REPLY waits up to the socket's send timeout (1 s) rather
 * than be lost when the pipe is momentarily full. */
static eb_status send_msg(eb_worker *w, const eb_proto_msg *msg, zmq_msg_t *items, size_t n)
{
    char err[256];
    int flags = msg->kind == EB_MSG_W_REPLY ? 0 : ZMQ_DONTWAIT;
    eb_status st = eb_frames_send_msg(w->sock, NULL, 0, msg, items, n, flags, err, sizeof err);
    if (st == EB_OK)
        w->last_send_us = eb_now_us();
    else
        eb_log_warn("worker_send_failed", "kind=%s status=%s reason=\"%s\"",
                    eb_proto_kind_name(msg->kind), eb_status_str(st), err);
    return st;
}

static uint32_t credit_now(const eb_worker *w)
{
    return w->held_items >= w->queue_items ? 0 : w->queue_items - w->held_items;
}

/* CREDIT is an increment (docs/protocol.md): `more` items can be sent on top of what the broker
 * already counts. */
static void send_credit(eb_worker *w, uint32_t more)
{
    if (more == 0 || !w->sock)
        return;
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_W_CREDIT);
    m.u.credit.credit = more;
    if (send_msg(w, &m, NULL, 0) == EB_OK)
        w->broker_credit += more;
}

/* Give back the capacity freed since the last grant once it reaches a quarter of the queue, or
 * at once when the broker's view of our credit has fallen below one full batch. Granting after
 * every reply (the obvious rule) doubles the messages of a light load: each REPLY would be
 * followed by a CREDIT that the broker must receive, decode and act on (about as costly as the
 * REPLY itself) to restore credit it does not need yet. With this rule the broker keeps at least
 * three quarters of our free capacity, never less than one batch, so dispatch does not wait for
 * a grant; under a backlog (worker full) every reply still grants at once. */
static void grant_credit(eb_worker *w)
{
    uint32_t free_now = credit_now(w);
    if (free_now <= w->broker_credit)
        return;
    uint32_t owed = free_now - w->broker_credit;
    uint32_t quarter = w->queue_items / 4 ? w->queue_items / 4 : 1;
    if (owed >= quarter || w->broker_credit < w->max_batch)
        send_credit(w, owed);
}

static void send_heartbeat(eb_worker *w)
{
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_W_HEARTBEAT);
    m.u.heartbeat.has_state = true;
    bool warm = true;
    for (size_t i = 0; i < w->n_models; i++)
        warm = warm && w->models[i]->warm;
    m.u.heartbeat.warm = warm;
    m.u.heartbeat.healthy = !w->unhealthy && !atomic_load(&w->canary_failed);
    m.u.heartbeat.inflight_items = w->held_items;
    send_msg(w, &m, NULL, 0);
}

static void send_ready(eb_worker *w)
{
    eb_proto_model_desc descs[64];
    size_t n = w->n_models < 64 ? w->n_models : 64;
    for (size_t i = 0; i < n; i++) {
        const eb_model_info *info = &w->models[i]->info;
        descs[i].name = info->name;
        descs[i].model_rev = info->model_rev;
        descs[i].preproc_rev = info->preproc_rev;
        descs[i].dims = info->dims;
        descs[i].input = info->input;
    }
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_W_READY);
    m.u.ready.worker_id = w->worker_id;
    m.u.ready.backend = w->models[0]->info.backend ? w->models[0]->info.backend : "cpu";
    m.u.ready.device = w->models[0]->info.device ? w->models[0]->info.device : "cpu";
    m.u.ready.max_batch_items = w->max_batch;
    m.u.ready.n_models = (uint32_t)n;
    m.u.ready.models = descs;
    if (send_msg(w, &m, NULL, 0) == EB_OK)
        eb_log_info("worker_ready_sent", "worker=%s endpoint=%s generation=%llu credit=%u",
                    w->worker_id, w->endpoint, (unsigned long long)w->generation,
                    credit_now(w));
    /* A new connection starts from zero credit: grant the free capacity; slots still held by
     * batches of an older connection are granted when those finish (flush_done). */
    w->broker_credit = 0;
    send_credit(w, credit_now(w));
}

static void send_disconnect(eb_worker *w, const char *reason)
{
    if (!w->sock)
        return;
    eb_proto_msg m;
    eb_proto_msg_init(&m, EB_MSG_W_DISCONNECT);
    m.u.disconnect.reason = reason;
    send_msg(w, &m, NULL, 0);
}

static eb_status open_socket(eb_worker *w)
{
    w->sock = zmq_socket(w->zctx, ZMQ_DEALER);
    if (!w->sock) {
        eb_log_error("worker_socket_failed", "reason=\"%s\"", zmq_strerror(zmq_errno()));
        return EB_ERR_IO;
    }
    int zero = 0, ivl = 100, ivl_max = 2000, sndtimeo = 1000;
    zmq_setsockopt(w->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(w->sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo);
    zmq_setsockopt(w->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(w->sock, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
    int64_t max_msg = (int64_t)w->opt.limits.max_message_bytes + 65536;
    zmq_setsockopt(w->sock, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg);
    size_t fd_len = sizeof w->sock_fd;
    if (zmq_getsockopt(w->sock, ZMQ_FD, &w->sock_fd, &fd_len) != 0) {
        eb_log_error("worker_socket_failed", "reason=\"no ZMQ_FD: %s\"", zmq_strerror(zmq_errno()));
        zmq_close(w->sock);
        w->sock = NULL;
        return EB_ERR_IO;
    }
    if (zmq_connect(w->sock, w->endpoint) != 0) {
        eb_log_error("worker_connect_failed", "endpoint=%s reason=\"%s\"", w->endpoint,
                     zmq_strerror(zmq_errno()));
        zmq_close(w->sock);
        w->sock = NULL;
        return EB_ERR_IO;
    }
    w->generation++;
    w->broker_bid = 0;
    w->connected_us = w->last_recv_us = eb_now_us();
    /* The broker no longer knows our items: they are not "held" from the new connection's
     * point of view, but the compute thread still works on them, so credit accounts for them
     * until they come back (and are dropped). */
    send_ready(w);
    return EB_OK;
}

/* Start over with a fresh connection (broker restarted, silent, or told us to go). */
static void reconnect(eb_worker *w, const char *why)
{
    eb_log_warn("worker_reconnect", "worker=%s reason=%s backoff_ms=%d", w->worker_id, why,
                w->backoff_ms);
    if (w->sock) {
        zmq_close(w->sock);
        w->sock = NULL;
    }
    segment_release(w, NULL);
    atomic_fetch_add(&w->st_reconnects, 1);
    if (open_socket(w) != EB_OK)
        w->sock = NULL;
    w->backoff_ms = w->backoff_ms ? w->backoff_ms * 2 : 100;
    if (w->backoff_ms > w->opt.reconnect_max_ms)
        w->backoff_ms = w->opt.reconnect_max_ms;
}

static void handle_message(eb_worker *w, eb_frames *frames)
{
    char err[512];
    eb_frames_view view;
    eb_proto_msg msg;
    eb_status st = eb_frames_decode(frames, false, true, &w->opt.limits, &view, &msg, NULL, err,
                                    sizeof err);
    if (st != EB_OK) {
        atomic_fetch_add(&w->st_bad, 1);
        eb_log_warn("worker_bad_message", "status=%s reason=\"%s\"", eb_status_str(st), err);
        return;
    }
    w->last_recv_us = eb_now_us();
    w->backoff_ms = 0;
    if (msg.bid && w->broker_bid && msg.bid != w->broker_bid) {
        /* A new broker instance answers on the old connection: start over on this socket. */
        eb_log_warn("worker_broker_restarted", "old=%016llx new=%016llx",
                    (unsigned long long)w->broker_bid, (unsigned long long)msg.bid);
        w->generation++;
        segment_release(w, NULL);
        w->broker_bid = msg.bid;
        if (msg.kind != EB_MSG_W_DISCONNECT)
            send_ready(w);
    } else if (msg.bid && !w->broker_bid) {
        w->broker_bid = msg.bid;
        eb_log_info("worker_connected", "worker=%s broker=%016llx", w->worker_id,
                    (unsigned long long)msg.bid);
    }

    switch (msg.kind) {
    case EB_MSG_W_REQUEST: {
        job *j = calloc(1, sizeof *j);
        uint32_t n = msg.u.batch.n_items;
        if (j) {
            j->results = calloc(n, sizeof *j->results);
            j->errors = calloc(n, sizeof *j->errors);
            j->out_frames = calloc(n, sizeof *j->out_frames);
        }
        if (!j || !j->results || !j->errors || !j->out_frames) {
            /* Without memory we cannot even answer; the broker requeues on our death or
             * deadline. Drop it loudly. */
            eb_log_error("worker_oom", "batch=%llu items=%u",
                         (unsigned long long)msg.u.batch.batch_id, n);
            if (j) {
                free(j->results);
                free(j->errors);
                free(j->out_frames);
                free(j);
            }
            eb_proto_msg_free(&msg);
            return;
        }
        for (uint32_t i = 0; i < n; i++) {
            zmq_msg_init(&j->out_frames[i]);
            j->results[i].status = EB_ERR_INTERNAL;
        }
        j->generation = w->generation;
        w->broker_credit = w->broker_credit > n ? w->broker_credit - n : 0;
        j->frames = *frames; /* take the frames over; the caller gets a fresh empty set */
        eb_frames_init(frames);
        j->view = view;
        j->msg = msg;
        w->held_items += n;
        queue_push(&w->todo, j);
        return;
    }
    case EB_MSG_W_HEARTBEAT:
        break;
    case EB_MSG_W_DISCONNECT:
        eb_log_warn("worker_told_to_disconnect", "reason=\"%s\"",
                    msg.u.disconnect.reason ? msg.u.disconnect.reason : "");
        eb_proto_msg_free(&msg);
        reconnect(w, "broker_disconnect");
        return;
    case EB_MSG_W_RELEASE_SEGMENT:
        eb_log_debug("segment_release", "name=%s", msg.u.release.segment);
        segment_release(w, msg.u.release.segment);
        break;
    default:
        atomic_fetch_add(&w->st_bad, 1);
        eb_log_warn("worker_unexpected_message", "kind=%s", eb_proto_kind_name(msg.kind));
        break;
    }
    eb_proto_msg_free(&msg);
}

/* Answer every job of a computed group (dropping those of an older connection, and all of them
 * once the worker is stopping: the DISCONNECT makes the broker requeue them), then grant the freed
 * slots as credit (grant_credit). */
static void send_results(eb_worker *w, job_queue *group)
{
    bool stopping = atomic_load(&w->stop);
    for (job *j; (j = queue_pop(group));) {
        uint32_t n = j->msg.u.batch.n_items;
        w->held_items = w->held_items >= n ? w->held_items - n : 0;
        if (stopping || j->generation != w->generation || !w->sock) {
            atomic_fetch_add(&w->st_dropped, 1);
            eb_log_info("worker_reply_dropped", "batch=%llu items=%u reason=%s",
                        (unsigned long long)j->msg.u.batch.batch_id, n,
                        stopping ? "stopping" : "old_connection");
            job_free(j);
            continue;
        }
        eb_proto_msg m;
        eb_proto_msg_init(&m, EB_MSG_W_REPLY);
        m.u.batch_reply.batch_id = j->msg.u.batch.batch_id;
        m.u.batch_reply.n_items = n;
        m.u.batch_reply.items = j->results;
        send_msg(w, &m, j->out_frames, n);
        job_free(j);
    }
    /* Never grant beyond the capacity (items the broker over-sent are absorbed first). */
    grant_credit(w);
}

/* Receive what the broker has already sent, without waiting. Bounded, so that a flood of
 * messages cannot hold back replies and heartbeats. */
static void drain_socket(eb_worker *w)
{
    for (int k = 0; k < 64 && w->sock; k++) {
        char err[256];
        eb_status st = eb_frames_recv(w->sock, ZMQ_DONTWAIT, 3 + 4096,
                                      w->opt.limits.max_message_bytes + 65536, &w->rx, err,
                                      sizeof err);
        if (st == EB_ERR_TIMEOUT)
            break;
        if (st != EB_OK) {
            atomic_fetch_add(&w->st_bad, 1);
            eb_log_warn("worker_recv_failed", "status=%s reason=\"%s\"", eb_status_str(st), err);
            if (st == EB_ERR_IO)
                break;
            continue;
        }
        handle_message(w, &w->rx);
        eb_frames_close(&w->rx);
    }
}

/* Heartbeat when one is due; start over when there is no socket or the broker has been silent
 * for 3 intervals (plus the current backoff). */
static void keep_alive(eb_worker *w)
{
    const int64_t interval_us = (int64_t)w->opt.heartbeat_interval_ms * 1000;
    int64_t now = eb_now_us();
    if (!w->sock || now - w->last_recv_us > 3 * interval_us + (int64_t)w->backoff_ms * 1000) {
        reconnect(w, w->sock ? "broker_silent" : "no_socket");
        return;
    }
    if (now - w->last_send_us >= interval_us)
        send_heartbeat(w);
}

/* ---- compute thread: the serving loop ---------------------------------------------------------- */

/* Nothing queued: sleep until the broker sends something, eb_worker_stop, the next heartbeat or
 * the next canary; then receive what came.
 *
 * This is zmq_poll with less asking (broker/eb_loop.c says the same): ZMQ_EVENTS first, which also
 * processes the socket's pending commands and so re-arms its ZMQ_FD; then one poll() on that fd
 * and the stop eventfd. A readable ZMQ_FD only says that something changed, so the receive loop
 * finds out what (and stops at EAGAIN). */
static void wait_for_input(eb_worker *w)
{
    if (w->sock) {
        uint32_t zev = 0;
        size_t len = sizeof zev;
        if (zmq_getsockopt(w->sock, ZMQ_EVENTS, &zev, &len) == 0 && (zev & ZMQ_POLLIN)) {
            drain_socket(w);
            return;
        }
    }
    int64_t now = eb_now_us();
    int64_t wake = w->last_send_us + (int64_t)w->opt.heartbeat_interval_ms * 1000;
    if (w->next_canary_us && w->next_canary_us < wake)
        wake = w->next_canary_us;
    long timeout_ms = wake > now ? (long)((wake - now + 999) / 1000) : 0;
    if (timeout_ms > w->opt.heartbeat_interval_ms)
        timeout_ms = w->opt.heartbeat_interval_ms;
    struct pollfd fds[2] = {
        {.fd = w->stop_fd, .events = POLLIN},
        {.fd = w->sock ? w->sock_fd : -1, .events = POLLIN},
    };
    int rc = poll(fds, 2, (int)timeout_ms);
    if (rc < 0 && errno != EINTR) {
        eb_log_error("worker_poll_failed", "reason=\"%s\"", strerror(errno));
        atomic_store(&w->io_failed, true);
        eb_worker_stop(w);
        return;
    }
    if (w->sock && rc > 0 && fds[1].revents)
        drain_socket(w);
}

/* The compute thread: own the connection except while a forward (or the canaries) runs. */
static void *compute_main(void *arg)
{
    eb_worker *w = arg;
    pthread_mutex_lock(&w->sock_mu);
    while (!atomic_load(&w->stop)) {
        if (w->todo.head)
            drain_socket(w); /* later jobs of the same model may join this forward */
        else
            wait_for_input(w);
        keep_alive(w);
        if (atomic_load(&w->stop))
            break;
        /* a canary that is due runs before the next batch, so a busy worker checks too */
        bool canary_due = w->next_canary_us && eb_now_us() >= w->next_canary_us;
        job_queue group = {0};
        take_group(w, &w->todo, &group);
        if (!canary_due && !group.head)
            continue;

        pthread_mutex_unlock(&w->sock_mu); /* the I/O thread looks after the connection now */
        if (canary_due)
            run_canaries(w);
        if (group.head) {
            atomic_store(&w->batch_started_us, eb_now_us());
            compute_group(w, &group);
            atomic_store(&w->batch_started_us, 0);
        }
        pthread_mutex_lock(&w->sock_mu);
        send_results(w, &group);
    }
    pthread_mutex_unlock(&w->sock_mu);
    return NULL;
}

/* ---- public ---------------------------------------------------------------------------------- */

void eb_worker_options_default(eb_worker_options *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->heartbeat_interval_ms = 1000;
    opt->watchdog_ms = 60000;
    opt->reconnect_max_ms = 2000;
    opt->canary_interval_ms = 300000;
    opt->canary_tolerance = 1e-5;
    eb_proto_limits_default(&opt->limits);
}

void eb_worker_default_run_dir(char *buf, size_t cap)
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

eb_status eb_worker_options_from_config(const eb_config *cfg, eb_worker_options *opt,
                                        char *endpoint_buf, size_t endpoint_cap, char *err,
                                        size_t err_len)
{
    eb_worker_options_default(opt);
    const char *broker = eb_config_get(cfg, "broker", NULL);
    if (broker && *broker) {
        snprintf(endpoint_buf, endpoint_cap, "%s", broker);
    } else {
        char run_dir[4096];
        const char *rd = eb_config_get(cfg, "run_dir", NULL);
        if (rd && *rd)
            snprintf(run_dir, sizeof run_dir, "%s", rd);
        else
            eb_worker_default_run_dir(run_dir, sizeof run_dir);
        snprintf(endpoint_buf, endpoint_cap, "ipc://%s/backend.sock", run_dir);
    }
    opt->endpoint = endpoint_buf;
    opt->worker_id = eb_config_get(cfg, "worker_id", NULL);
    int64_t v;
    eb_status st;
    if ((st = eb_config_get_int(cfg, "heartbeat_interval_ms", 1000, 10, 600000, &v, err,
                                err_len)) != EB_OK)
        return st;
    opt->heartbeat_interval_ms = (int)v;
    if ((st = eb_config_get_int(cfg, "watchdog_ms", 60000, 100, 86400000, &v, err, err_len)) !=
        EB_OK)
        return st;
    opt->watchdog_ms = (int)v;
    if ((st = eb_config_get_int(cfg, "max_batch_items", 0, 0, 4096, &v, err, err_len)) != EB_OK)
        return st;
    opt->max_batch_items = (uint32_t)v;
    if ((st = eb_config_get_int(cfg, "worker_queue_items", 0, 0, 65536, &v, err, err_len)) !=
        EB_OK)
        return st;
    opt->queue_items = (uint32_t)v;
    if ((st = eb_config_get_int(cfg, "canary_interval_ms", 300000, 0, 86400000, &v, err,
                                err_len)) != EB_OK)
        return st;
    opt->canary_interval_ms = (int)v;
    const char *tol = eb_config_get(cfg, "canary_tolerance", NULL);
    if (tol) {
        char *end;
        opt->canary_tolerance = strtod(tol, &end);
        if (end == tol || *end || !(opt->canary_tolerance >= 0)) {
            snprintf(err, err_len, "canary_tolerance=%s is not a number >= 0", tol);
            return EB_ERR_INVALID;
        }
    }
    return eb_proto_limits_from_config(cfg, &opt->limits, err, err_len);
}

eb_worker *eb_worker_new(const eb_worker_options *opt, eb_model **models, size_t n_models,
                         char *err, size_t err_len)
{
    if (!opt || !opt->endpoint || !models || n_models == 0 || n_models > 64) {
        snprintf(err, err_len, "worker needs an endpoint and 1..64 models (got %zu)", n_models);
        return NULL;
    }
    for (size_t i = 0; i < n_models; i++)
        for (size_t k = 0; k < i; k++)
            if (strcmp(models[i]->info.name, models[k]->info.name) == 0) {
                snprintf(err, err_len, "model \"%s\" is listed twice", models[i]->info.name);
                return NULL;
            }
    eb_worker *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    w->opt = *opt;
    if (w->opt.heartbeat_interval_ms <= 0)
        w->opt.heartbeat_interval_ms = 1000;
    if (w->opt.watchdog_ms <= 0)
        w->opt.watchdog_ms = 60000;
    if (w->opt.reconnect_max_ms <= 0)
        w->opt.reconnect_max_ms = 2000;
    w->endpoint = strdup(opt->endpoint);
    char id[300];
    if (opt->worker_id && *opt->worker_id) {
        snprintf(id, sizeof id, "%s", opt->worker_id);
    } else {
        char host[256] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(id, sizeof id, "%s:%d", host, (int)getpid());
    }
    w->worker_id = strdup(id);
    w->models = calloc(n_models, sizeof *w->models);
    w->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (!w->endpoint || !w->worker_id || !w->models || w->stop_fd < 0) {
        snprintf(err, err_len, "cannot create worker: out of memory or file descriptors");
        if (w->stop_fd >= 0)
            close(w->stop_fd);
        free(w->endpoint);
        free(w->worker_id);
        free(w->models);
        free(w);
        return NULL;
    }
    uint32_t max_batch = 0;
    for (size_t i = 0; i < n_models; i++) {
        w->models[i] = models[i];
        uint32_t mb = models[i]->info.max_batch_items;
        if (max_batch == 0 || mb < max_batch)
            max_batch = mb;
    }
    w->n_models = n_models;
    if (opt->max_batch_items)
        max_batch = opt->max_batch_items;
    if (max_batch > w->opt.limits.max_batch_items)
        max_batch = w->opt.limits.max_batch_items;
    w->max_batch = max_batch ? max_batch : 1;
    w->queue_items = opt->queue_items ? opt->queue_items : 2 * w->max_batch;
    pthread_mutex_init(&w->sock_mu, NULL);
    eb_frames_init(&w->rx);
    pthread_mutex_init(&w->seg_mu, NULL);
    atomic_init(&w->batch_started_us, 0);
    atomic_init(&w->stop, false);
    return w;
}

eb_status eb_worker_run(eb_worker *w)
{
    if (!w)
        return EB_ERR_INVALID;
    w->zctx = zmq_ctx_new();
    if (!w->zctx)
        return EB_ERR_IO;
    /* libcrypto sets itself up on first use (~2 ms): do it now, not on the first request. */
    uint8_t digest[EB_HASH_LEN];
    eb_content_hash("image", 0, 0, "", "", 0, digest);
    /* Record every model's canary before serving: a model that cannot embed a fixed input at
     * start is broken, and later runs are compared with these vectors. */
    if (w->opt.canary_interval_ms > 0) {
        for (size_t i = 0; i < w->n_models; i++) {
            char err[512] = "";
            eb_status st = eb_model_canary_record(w->models[i], err, sizeof err);
            if (st != EB_OK) {
                eb_log_error("worker_canary_failed", "worker=%s model=%s status=%s reason=\"%s\"",
                             w->worker_id, w->models[i]->info.name, eb_status_str(st), err);
                return st;
            }
        }
        w->next_canary_us = eb_now_us() + (int64_t)w->opt.canary_interval_ms * 1000;
    }
    /* No other thread yet: the connection is ours without the lock. */
    if (open_socket(w) != EB_OK)
        return EB_ERR_IO;
    if (pthread_create(&w->compute_thread, NULL, compute_main, w) != 0) {
        eb_log_error("worker_thread_failed", "reason=\"cannot start the compute thread\"");
        return EB_ERR_IO;
    }
    w->compute_started = true;
    eb_log_info("worker_started", "worker=%s endpoint=%s models=%zu max_batch=%u queue_items=%u "
                "heartbeat_ms=%d watchdog_ms=%d", w->worker_id, w->endpoint, w->n_models,
                w->max_batch, w->queue_items, w->opt.heartbeat_interval_ms, w->opt.watchdog_ms);

    /* The I/O thread: wake four times per heartbeat interval. The compute thread heartbeats by
     * itself while it holds the connection, so a heartbeat sent from here is at most a quarter
     * interval late, far inside the broker's three-interval limit. */
    int period_ms = w->opt.heartbeat_interval_ms / 4 > 0 ? w->opt.heartbeat_interval_ms / 4 : 1;
    eb_status result = EB_OK;
    while (!atomic_load(&w->stop)) {
        struct pollfd stop_item = {.fd = w->stop_fd, .events = POLLIN};
        if (poll(&stop_item, 1, period_ms) < 0 && errno != EINTR) {
            eb_log_error("worker_poll_failed", "reason=\"%s\"", strerror(errno));
            result = EB_ERR_IO;
            break;
        }
        if (atomic_load(&w->stop))
            break;
        int64_t now = eb_now_us();
        int64_t started = atomic_load(&w->batch_started_us);
        if (started && now - started > (int64_t)w->opt.watchdog_ms * 1000) {
            /* The stuck forward runs without the lock, so this cannot wait for long. */
            pthread_mutex_lock(&w->sock_mu);
            w->unhealthy = true;
            eb_log_error("worker_watchdog", "worker=%s batch_running_ms=%lld watchdog_ms=%d "
                         "action=exit", w->worker_id, (long long)((now - started) / 1000),
                         w->opt.watchdog_ms);
            if (w->sock) {
                send_heartbeat(w);
                send_disconnect(w, "watchdog: compute thread made no progress");
            }
            pthread_mutex_unlock(&w->sock_mu);
            return EB_ERR_TIMEOUT;
        }
        /* The lock is free only while the compute thread runs a forward or the canaries: keep
         * the connection alive for it (broker heartbeats, RELEASE_SEGMENT and REQUESTs are read;
         * REQUESTs wait in the queue). */
        if (pthread_mutex_trylock(&w->sock_mu) == 0) {
            drain_socket(w);
            keep_alive(w);
            pthread_mutex_unlock(&w->sock_mu);
        }
    }
    if (atomic_load(&w->io_failed))
        result = EB_ERR_IO;
    /* The compute thread saw the stop and let go of the connection (or is in a forward, whose
     * results it will drop). */
    pthread_mutex_lock(&w->sock_mu);
    if (result == EB_OK) {
        /* Let the DISCONNECT leave before the socket closes (LINGER 0 would drop it): the broker
         * then requeues at once instead of after 3 missed heartbeats. */
        int linger = 200;
        if (w->sock)
            zmq_setsockopt(w->sock, ZMQ_LINGER, &linger, sizeof linger);
        send_disconnect(w, "worker stopping");
        eb_log_info("worker_stopped", "worker=%s", w->worker_id);
    }
    pthread_mutex_unlock(&w->sock_mu);
    return result;
}

void eb_worker_stop(eb_worker *w)
{
    if (!w)
        return;
    atomic_store(&w->stop, true);
    eventfd_signal(w->stop_fd);
}

void eb_worker_destroy(eb_worker **wp)
{
    if (!wp || !*wp)
        return;
    eb_worker *w = *wp;
    if (w->compute_started) {
        eb_worker_stop(w);
        pthread_join(w->compute_thread, NULL);
    }
    job *j;
    while ((j = queue_pop(&w->todo)))
        job_free(j);
    eb_frames_close(&w->rx);
    if (w->sock)
        zmq_close(w->sock);
    if (w->zctx)
        zmq_ctx_term(w->zctx);
    for (size_t i = 0; i < w->n_segs; i++) {
        eb_shm_reader_destroy(&w->segs[i].reader);
        free(w->segs[i].name);
    }
    free(w->segs);
    for (size_t i = 0; i < w->n_models; i++)
        eb_model_destroy(&w->models[i]);
    free(w->models);
    free(w->staging);
    free(w->emb);
    free(w->in);
    free(w->out);
    free(w->slots);
    close(w->stop_fd);
    pthread_mutex_destroy(&w->sock_mu);
    pthread_mutex_destroy(&w->seg_mu);
    free(w->endpoint);
    free(w->worker_id);
    free(w);
    *wp = NULL;
}

void eb_worker_get_stats(const eb_worker *w, eb_worker_stats *s)
{
    memset(s, 0, sizeof *s);
    if (!w)
        return;
    eb_worker *mw = (eb_worker *)w;
    s->batches = atomic_load(&mw->st_batches);
    s->items = atomic_load(&mw->st_items);
    s->items_failed = atomic_load(&mw->st_failed);
    s->replies_dropped = atomic_load(&mw->st_dropped);
    s->reconnects = atomic_load(&mw->st_reconnects);
    s->bad_messages = atomic_load(&mw->st_bad);
    s->canary_checks = atomic_load(&mw->st_canary_checks);
    s->canary_failures = atomic_load(&mw->st_canary_failures);
    pthread_mutex_lock(&mw->seg_mu);
    s->segments_mapped = mw->n_segs;
    pthread_mutex_unlock(&mw->seg_mu);
}
