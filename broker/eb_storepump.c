/* eb_storepump — the store path's last leg: durable spool records → PostgreSQL → ack.
 *
 * The idea is a cursor over spool sequence numbers: every pending record below `cursor` has
 * been sent in the current pass (it is in flight or about to be acked); records at or above it
 * still need a send. New durable records are sent at once while there is no backlog and room in
 * flight. A failed send moves the cursor back to that record and sets the backlog flag; a timer
 * then walks eb_spool_for_each_pending from the cursor, sending while there is room, whenever
 * the pool is up. Moving the cursor back may resend a record that is still in flight; that is
 * harmless by construction (StoreId unique, ON CONFLICT DO NOTHING) and keeps the pump free of
 * per-record bookkeeping.
 */
#include "eb_storepump.h"

#include <stdio.h>
#include <stdlib.h>

#include <zmq.h>

#include "eb_clock.h"
#include "eb_log.h"

struct eb_storepump {
    eb_loop *loop;
    eb_spool *spool;
    eb_pgpool *pool;
    eb_search *search;
    eb_storepump_options opt;
    int notify_fd;
    eb_loop_timer timer;
    uint64_t cursor;
    bool backlog;
    bool pass_full; /* the last pass stopped for lack of room */
    eb_storepump_stats stats;
};

typedef struct send_ctx {
    eb_storepump *pump;
    uint64_t seq;
} send_ctx;

static void arm(eb_storepump *p, int64_t delay_ms)
{
    int64_t when = eb_now_us() + delay_ms * 1000;
    if (!eb_loop_timer_armed(&p->timer) || p->timer.when_us > when)
        eb_loop_timer_start(p->loop, &p->timer, when);
}

static void note_retry(eb_storepump *p, uint64_t seq)
{
    p->backlog = true;
    if (seq < p->cursor)
        p->cursor = seq;
}

static void on_stored(void *arg, eb_status status, uint64_t rows, const char *error)
{
    send_ctx *ctx = arg;
    eb_storepump *p = ctx->pump;
    uint64_t seq = ctx->seq;
    free(ctx);
    p->stats.inflight--;
    if (status == EB_OK) {
        if (rows > 0)
            p->stats.stored++;
        else
            p->stats.duplicates++;
        eb_spool_ack(p->spool, seq);
    } else if (status == EB_ERR_INVALID) {
        p->stats.rejected++;
        eb_log_error("store_rejected", "seq=%llu reason=\"%s\" effect=\"dropped from the spool\"",
                     (unsigned long long)seq, error ? error : "");
        eb_spool_ack(p->spool, seq);
    } else if (status != EB_ERR_SHUTDOWN) {
        p->stats.failed++;
        note_retry(p, seq);
    }
    if (p->backlog && status != EB_ERR_SHUTDOWN)
        arm(p, status == EB_OK ? 0 : p->opt.retry_ms);
}

/* Try to send one record. true when it was sent (or dealt with for good). */
static bool send_record(eb_storepump *p, uint64_t seq, const void *data, size_t len)
{
    send_ctx *ctx = malloc(sizeof *ctx);
    if (!ctx)
        return false;
    ctx->pump = p;
    ctx->seq = seq;
    char err[256] = "";
    eb_status st = eb_search_store(p->search, data, len, on_stored, ctx, err, sizeof err);
    if (st == EB_OK) {
        p->stats.sent++;
        p->stats.inflight++;
        return true;
    }
    free(ctx);
    if (st == EB_ERR_PROTOCOL || st == EB_ERR_UNSUPPORTED || st == EB_ERR_INVALID) {
        p->stats.rejected++;
        eb_log_error("store_rejected", "seq=%llu reason=\"%s\" effect=\"dropped from the spool\"",
                     (unsigned long long)seq, err);
        eb_spool_ack(p->spool, seq);
        return true;
    }
    return false;
}

static void on_durable(void *arg, uint64_t seq, const void *data, size_t len)
{
    eb_storepump *p = arg;
    if (!p->backlog && p->stats.inflight < p->opt.max_inflight && seq >= p->cursor &&
        send_record(p, seq, data, len)) {
        p->cursor = seq + 1;
        return;
    }
    note_retry(p, seq);
    arm(p, eb_pgpool_is_up(p->pool) ? 0 : p->opt.retry_ms);
}

static void on_pending(void *arg, uint64_t seq, const void *data, size_t len)
{
    eb_storepump *p = arg;
    if (seq < p->cursor || p->pass_full)
        return;
    if (p->stats.inflight >= p->opt.max_inflight || !send_record(p, seq, data, len)) {
        p->pass_full = true;
        return;
    }
    p->cursor = seq + 1;
}

/* Hand out what became durable; tell the owner how far durability reached. */
static void take_durable(eb_storepump *p)
{
    if (eb_spool_take_durable(p->spool, on_durable, p) > 0 && p->opt.durable_fn) {
        eb_spool_stats st;
        eb_spool_get_stats(p->spool, &st);
        p->opt.durable_fn(p->opt.durable_arg, st.durable_seq);
    }
}

static void on_timer(eb_loop *loop, eb_loop_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    eb_storepump *p = arg;
    /* Records that became durable but were not drained yet come first. */
    take_durable(p);
    if (!p->backlog)
        return;
    if (!eb_pgpool_is_up(p->pool)) {
        arm(p, p->opt.retry_ms);
        return;
    }
    p->pass_full = false;
    eb_spool_for_each_pending(p->spool, on_pending, p);
    if (!p->pass_full)
        p->backlog = false; /* everything pending was sent in this pass */
    else if (p->stats.inflight == 0)
        arm(p, p->opt.retry_ms); /* refused without anything in flight: wait */
    /* else: the next completion re-arms */
}

static void on_notify(eb_loop *loop, void *socket, int fd, short revents, void *arg)
{
    (void)loop;
    (void)socket;
    (void)fd;
    (void)revents;
    eb_storepump *p = arg;
    take_durable(p);
}

void eb_storepump_options_default(eb_storepump_options *o)
{
    *o = (eb_storepump_options){.max_inflight = 64, .retry_ms = 500, .durable_fn = NULL};
}

eb_storepump *eb_storepump_new(eb_loop *loop, eb_spool *spool, eb_pgpool *pool,
                               eb_search *search, const eb_storepump_options *options,
                               char *err, size_t err_len)
{
    if (!loop || !spool || !pool || !search) {
        if (err && err_len)
            snprintf(err, err_len, "store pump: missing loop, spool, pool or search");
        return NULL;
    }
    eb_storepump *p = calloc(1, sizeof *p);
    if (!p) {
        if (err && err_len)
            snprintf(err, err_len, "out of memory");
        return NULL;
    }
    p->loop = loop;
    p->spool = spool;
    p->pool = pool;
    p->search = search;
    eb_storepump_options_default(&p->opt);
    if (options) {
        if (options->max_inflight)
            p->opt.max_inflight = options->max_inflight;
        if (options->retry_ms)
            p->opt.retry_ms = options->retry_ms;
        p->opt.durable_fn = options->durable_fn;
        p->opt.durable_arg = options->durable_arg;
    }
    p->notify_fd = eb_spool_notify_fd(spool);
    if (eb_loop_add_fd(loop, p->notify_fd, ZMQ_POLLIN, on_notify, p) != EB_OK) {
        if (err && err_len)
            snprintf(err, err_len, "store pump: cannot watch the spool's notify fd %d",
                     p->notify_fd);
        free(p);
        return NULL;
    }
    eb_loop_timer_init(&p->timer, on_timer, p);
    /* Records replayed from disk are handed out by the first take: do it from the loop. */
    arm(p, 0);
    return p;
}

void eb_storepump_destroy(eb_storepump **pump)
{
    if (!pump || !*pump)
        return;
    eb_storepump *p = *pump;
    eb_loop_remove(p->loop, NULL, p->notify_fd);
    eb_loop_timer_stop(p->loop, &p->timer);
    free(p);
    *pump = NULL;
}

eb_status eb_storepump_store(eb_storepump *p, const eb_store_record *rec, uint64_t *seq)
{
    if (!p || !rec)
        return EB_ERR_INVALID;
    uint8_t *buf = NULL;
    size_t len = 0;
    eb_status st = eb_storerec_encode(rec, &buf, &len);
    if (st != EB_OK)
        return st;
    uint64_t s = 0;
    st = eb_spool_append(p->spool, buf, len, &s);
    free(buf);
    if (st == EB_OK && seq)
        *seq = s;
    return st;
}

void eb_storepump_get_stats(const eb_storepump *p, eb_storepump_stats *stats)
{
    *stats = p->stats;
    stats->backlog = p->backlog;
}
