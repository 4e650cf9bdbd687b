/* eb_cache — Redis through hiredis's asynchronous API, driven by eb_loop.
 *
 * hiredis does its own protocol work and asks its "event library" to watch the socket through
 * five hooks (addRead/delRead/addWrite/delWrite/cleanup); the adapter below maps them onto
 * eb_loop_add_fd/eb_loop_set_events/eb_loop_remove, so Redis is polled beside the ZMQ sockets.
 * hiredis 0.14 has no timeout for asynchronous commands, so each command carries its own
 * eb_loop_timer: when it fires the caller is answered with EB_ERR_TIMEOUT and the request is
 * marked done; the request memory stays until hiredis calls back (late reply or NULL on
 * disconnect), which is then ignored. Failures are counted; a run of them marks Redis down,
 * drops the connection (which flushes every pending hiredis callback with NULL) and starts a
 * reconnect timer with exponential backoff. The backoff resets only on a successful reply, so a
 * Redis that accepts connections but never answers does not cause a reconnect storm.
 *
 * hiredis must not be freed from inside one of its own callbacks, so the "drop" is deferred to a
 * zero-delay timer.
 */
#include "eb_cache.h"
#include "eb_status.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <zmq.h>

#include "eb_clock.h"
#include "eb_log.h"
#include "eb_spool.h" /* eb_crc32c */

#define KEY_MAX 512

typedef enum cache_state { CACHE_DOWN, CACHE_CONNECTING, CACHE_UP } cache_state;

typedef struct cache_req {
    eb_cache *cache;
    eb_loop_timer timer;
    bool done; /* the caller has been answered (reply, timeout or shutdown) */
    bool internal;
    bool is_put;
    uint32_t expected_dims;
    eb_cache_get_fn fn;
    void *arg;
    struct cache_req *prev, *next; /* every request hiredis still holds */
} cache_req;

struct eb_cache {
    eb_loop *loop;
    eb_cache_options opt;
    char host[256];
    int port;
    int db;
    char password[256];

    redisAsyncContext *ac;
    int fd;
    bool fd_registered, want_read, want_write;
    cache_state state;
    bool destroying;

    eb_loop_timer reconnect_timer, connect_timer, drop_timer;
    uint32_t backoff_ms;
    uint32_t consecutive_failures;

    cache_req *reqs; /* doubly linked list of outstanding requests */
    float *decode_buf;
    uint32_t decode_cap;

    eb_cache_stats stats;
};

/* ---- small helpers ---------------------------------------------------------------------- */

static void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static void note_error(eb_cache *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_error(eb_cache *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->stats.last_error, sizeof c->stats.last_error, fmt, ap);
    va_end(ap);
}

/* Parse redis://[:password@]host[:port][/db]. */
static eb_status parse_url(eb_cache *c, const char *url, char *err, size_t err_len)
{
    const char *p = url;
    if (!p || strncmp(p, "redis://", 8) != 0) {
        eb_set_err(err, err_len, "Redis URL \"%s\" is not of the form redis://host:port[/db]",
                   url ? url : "(null)");
        return EB_ERR_INVALID;
    }
    p += 8;
    const char *at = strchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *pw = colon ? colon + 1 : p;
        size_t n = (size_t)(at - pw);
        if (n >= sizeof c->password) {
            eb_set_err(err, err_len, "Redis URL password is too long");
            return EB_ERR_INVALID;
        }
        memcpy(c->password, pw, n);
        c->password[n] = 0;
        p = at + 1;
    }
    size_t hl = strcspn(p, ":/");
    if (hl == 0 || hl >= sizeof c->host) {
        eb_set_err(err, err_len, "Redis URL \"%s\" has no usable host", url);
        return EB_ERR_INVALID;
    }
    memcpy(c->host, p, hl);
    c->host[hl] = 0;
    p += hl;
    c->port = 6379;
    c->db = 0;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port <= 0 || port > 65535) {
            eb_set_err(err, err_len, "Redis URL \"%s\" has a bad port", url);
            return EB_ERR_INVALID;
        }
        c->port = (int)port;
        p = end;
    }
    if (*p == '/' && p[1]) {
        char *end;
        long db = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end || db < 0 || db > 1000000) {
            eb_set_err(err, err_len, "Redis URL \"%s\" has a bad database number", url);
            return EB_ERR_INVALID;
        }
        c->db = (int)db;
    } else if (*p && strcmp(p, "/") != 0) {
        eb_set_err(err, err_len, "Redis URL \"%s\" has trailing characters", url);
        return EB_ERR_INVALID;
    }
    if (strcmp(c->host, "localhost") == 0)
        snprintf(c->host, sizeof c->host, "127.0.0.1");
    return EB_OK;
}

/* ---- request list ----------------------------------------------------------------------- */

static void req_link(eb_cache *c, cache_req *r)
{
    r->prev = NULL;
    r->next = c->reqs;
    if (c->reqs)
        c->reqs->prev = r;
    c->reqs = r;
    c->stats.inflight++;
}

static void req_free(eb_cache *c, cache_req *r)
{
    eb_loop_timer_stop(c->loop, &r->timer);
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    c->stats.inflight--;
    free(r);
}

/* ---- connection management -------------------------------------------------------------- */

static void schedule_reconnect(eb_cache *c);
static void start_connect(eb_cache *c);

static void update_fd_events(eb_cache *c)
{
    if (!c->fd_registered)
        return;
    short ev = (short)((c->want_read ? ZMQ_POLLIN : 0) | (c->want_write ? ZMQ_POLLOUT : 0));
    eb_loop_set_events(c->loop, NULL, c->fd, ev);
}

static void ev_add_read(void *privdata)
{
    eb_cache *c = privdata;
    c->want_read = true;
    update_fd_events(c);
}

static void ev_del_read(void *privdata)
{
    eb_cache *c = privdata;
    c->want_read = false;
    update_fd_events(c);
}

static void ev_add_write(void *privdata)
{
    eb_cache *c = privdata;
    c->want_write = true;
    update_fd_events(c);
}

static void ev_del_write(void *privdata)
{
    eb_cache *c = privdata;
    c->want_write = false;
    update_fd_events(c);
}

/* hiredis is about to free its context: forget the socket. */
static void ev_cleanup(void *privdata)
{
    eb_cache *c = privdata;
    if (c->fd_registered)
        eb_loop_remove(c->loop, NULL, c->fd);
    c->fd_registered = false;
    c->want_read = c->want_write = false;
    c->fd = -1;
}

static void on_io(eb_loop *loop, void *socket, int fd, short revents, void *arg)
{
    (void)loop;
    (void)socket;
    (void)fd;
    eb_cache *c = arg;
    if (c->ac && (revents & (ZMQ_POLLIN | ZMQ_POLLERR)) && c->want_read)
        redisAsyncHandleRead(c->ac);
    /* The read may have dropped the connection (c->ac is then NULL). */
    if (c->ac && (revents & (ZMQ_POLLOUT | ZMQ_POLLERR)) && c->want_write)
        redisAsyncHandleWrite(c->ac);
}

static void mark_down(eb_cache *c, const char *why)
{
    if (c->state == CACHE_UP)
        eb_log_warn("redis_down",
                    "addr=%s:%d reason=\"%s\" effect=\"requests served without cache\"",
                    c->host, c->port, why);
    c->state = CACHE_DOWN;
    c->stats.up = false;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    eb_cache *c = ac->ev.data;
    (void)status;
    c->ac = NULL;
    c->stats.disconnects++;
    eb_loop_timer_stop(c->loop, &c->drop_timer);
    if (c->destroying)
        return;
    if (c->state != CACHE_DOWN) {
        note_error(c, "Redis at %s:%d closed the connection: %s", c->host, c->port,
                   ac->errstr ? ac->errstr : "no reason given");
        mark_down(c, c->stats.last_error);
    }
    schedule_reconnect(c);
}

/* Replies to the AUTH/SELECT sent after connecting. */
static void on_setup_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)ac;
    cache_req *req = privdata;
    eb_cache *c = req->cache;
    redisReply *reply = r;
    if (reply && reply->type == REDIS_REPLY_ERROR && !c->destroying) {
        note_error(c, "Redis at %s:%d refused setup: %s", c->host, c->port, reply->str);
        eb_log_error("redis_setup_failed", "addr=%s:%d reason=\"%s\"", c->host, c->port,
                     reply->str);
    }
    req_free(c, req);
}

static void send_setup(eb_cache *c, const char *cmd, const char *argument)
{
    cache_req *req = calloc(1, sizeof *req);
    if (!req)
        return;
    req->cache = c;
    req->internal = true;
    eb_loop_timer_init(&req->timer, NULL, NULL);
    const char *argv[2] = {cmd, argument};
    size_t lens[2] = {strlen(cmd), strlen(argument)};
    if (redisAsyncCommandArgv(c->ac, on_setup_reply, req, 2, argv, lens) != REDIS_OK) {
        free(req);
        return;
    }
    req_link(c, req);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    eb_cache *c = ac->ev.data;
    eb_loop_timer_stop(c->loop, &c->connect_timer);
    if (status != REDIS_OK) {
        /* hiredis frees the context itself after this callback. */
        note_error(c, "Redis at %s:%d unreachable: %s; requests served without cache", c->host,
                   c->port, ac->errstr ? ac->errstr : "connect failed");
        c->ac = NULL;
        mark_down(c, c->stats.last_error);
        schedule_reconnect(c);
        return;
    }
    c->state = CACHE_UP;
    c->stats.up = true;
    c->stats.connects++;
    c->consecutive_failures = 0;
    if (c->password[0])
        send_setup(c, "AUTH", c->password);
    if (c->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", c->db);
        send_setup(c, "SELECT", db);
    }
    eb_log_info("redis_up", "addr=%s:%d", c->host, c->port);
}

static void on_reconnect_timer(eb_loop *loop, eb_loop_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    start_connect(arg);
}

static void on_connect_timeout(eb_loop *loop, eb_loop_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    eb_cache *c = arg;
    if (c->state != CACHE_CONNECTING || !c->ac)
        return;
    note_error(c, "Redis at %s:%d did not accept a connection within %u ms; requests served "
                  "without cache",
               c->host, c->port, c->opt.connect_timeout_ms);
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    c->state = CACHE_DOWN;
    redisAsyncFree(ac); /* not connected yet: no disconnect callback */
    schedule_reconnect(c);
}

/* Drop the connection after too many failures (deferred out of hiredis callbacks). */
static void on_drop_timer(eb_loop *loop, eb_loop_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    eb_cache *c = arg;
    if (!c->ac)
        return;
    redisAsyncContext *ac = c->ac;
    /* Pending hiredis callbacks run now with a NULL reply; on_disconnect then schedules the
     * reconnect (it only runs for a connected context, so cover the other case too). */
    redisAsyncFree(ac);
    if (c->ac == ac) {
        c->ac = NULL;
        schedule_reconnect(c);
    }
}

static void schedule_reconnect(eb_cache *c)
{
    if (c->destroying || eb_loop_timer_armed(&c->reconnect_timer))
        return;
    uint32_t delay = c->backoff_ms;
    c->backoff_ms = c->backoff_ms * 2 > c->opt.backoff_max_ms ? c->opt.backoff_max_ms
                                                              : c->backoff_ms * 2;
    eb_loop_timer_start(c->loop, &c->reconnect_timer, eb_now_us() + (int64_t)delay * 1000);
}

static void start_connect(eb_cache *c)
{
    if (c->ac || c->destroying)
        return;
    redisAsyncContext *ac = redisAsyncConnect(c->host, c->port);
    if (!ac) {
        note_error(c, "cannot allocate a Redis connection");
        schedule_reconnect(c);
        return;
    }
    if (ac->err) {
        note_error(c, "Redis at %s:%d unreachable: %s; requests served without cache", c->host,
                   c->port, ac->errstr);
        redisAsyncFree(ac);
        mark_down(c, c->stats.last_error);
        schedule_reconnect(c);
        return;
    }
    c->ac = ac;
    c->fd = ac->c.fd;
    if (eb_loop_add_fd(c->loop, c->fd, 0, on_io, c) != EB_OK) {
        note_error(c, "cannot watch the Redis socket");
        c->ac = NULL;
        redisAsyncFree(ac);
        schedule_reconnect(c);
        return;
    }
    c->fd_registered = true;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    c->state = CACHE_CONNECTING;
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    redisAsyncSetConnectCallback(ac, on_connect); /* arms write interest */
    eb_loop_timer_start(c->loop, &c->connect_timer,
                        eb_now_us() + (int64_t)c->opt.connect_timeout_ms * 1000);
}

/* A command failed (timeout, error reply, lost connection): count it, maybe go down. */
static void note_failure(eb_cache *c)
{
    c->consecutive_failures++;
    if (c->consecutive_failures >= c->opt.max_failures && c->state == CACHE_UP) {
        char why[240];
        snprintf(why, sizeof why, "%u consecutive failures, last: %s", c->consecutive_failures,
                 c->stats.last_error);
        mark_down(c, why);
        eb_loop_timer_start(c->loop, &c->drop_timer, eb_now_us());
    }
}

static void note_success(eb_cache *c)
{
    c->consecutive_failures = 0;
    c->backoff_ms = c->opt.backoff_min_ms;
}

/* ---- commands --------------------------------------------------------------------------- */

static void on_req_timeout(eb_loop *loop, eb_loop_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    cache_req *r = arg;
    eb_cache *c = r->cache;
    r->done = true;
    c->stats.timeouts++;
    note_error(c, "Redis at %s:%d did not answer within %u ms", c->host, c->port,
               c->opt.command_timeout_ms);
    if (r->is_put)
        c->stats.puts_failed++;
    else
        r->fn(r->arg, EB_ERR_TIMEOUT, NULL, 0);
    note_failure(c);
}

static void on_get_reply(redisAsyncContext *ac, void *rp, void *privdata)
{
    (void)ac;
    cache_req *r = privdata;
    eb_cache *c = r->cache;
    redisReply *reply = rp;
    if (r->done) { /* answered already (timeout or shutdown): drop the late reply */
        req_free(c, r);
        return;
    }
    eb_loop_timer_stop(c->loop, &r->timer);
    r->done = true;
    eb_status st;
    uint32_t dims = 0;
    if (!reply) {
        st = EB_ERR_UNAVAILABLE;
        c->stats.errors++;
        if (!c->destroying)
            note_failure(c);
    } else if (reply->type == REDIS_REPLY_NIL) {
        st = EB_ERR_NOT_FOUND;
        c->stats.misses++;
        note_success(c);
    } else if (reply->type == REDIS_REPLY_STRING) {
        note_success(c);
        size_t len = reply->len;
        uint32_t need =
            len >= EB_CACHE_VALUE_HEADER ? (uint32_t)((len - EB_CACHE_VALUE_HEADER) / 4) : 0;
        if (need > c->decode_cap) {
            float *buf = realloc(c->decode_buf, (size_t)need * sizeof *buf);
            if (buf) {
                c->decode_buf = buf;
                c->decode_cap = need;
            }
        }
        st = eb_cache_value_decode((const uint8_t *)reply->str, len, r->expected_dims,
                                   c->decode_buf, c->decode_cap, &dims, NULL);
        if (st == EB_OK) {
            c->stats.hits++;
        } else {
            c->stats.misses++;
            c->stats.corrupt++;
            c->stats.errors++;
            note_error(c, "corrupt cache value (%zu bytes, expected %u dims): %s", len,
                       r->expected_dims, eb_status_str(st));
            eb_log_warn("cache_corrupt_value", "bytes=%zu expected_dims=%u reason=%s", len,
                        r->expected_dims, eb_status_str(st));
            st = EB_ERR_NOT_FOUND;
        }
    } else {
        st = EB_ERR_UNAVAILABLE;
        c->stats.errors++;
        note_error(c, "Redis GET failed: %s",
                   reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply type");
        note_failure(c);
    }
    r->fn(r->arg, st, st == EB_OK ? c->decode_buf : NULL, st == EB_OK ? dims : 0);
    req_free(c, r);
}

static void on_put_reply(redisAsyncContext *ac, void *rp, void *privdata)
{
    (void)ac;
    cache_req *r = privdata;
    eb_cache *c = r->cache;
    redisReply *reply = rp;
    if (!r->done) {
        r->done = true;
        if (reply && reply->type == REDIS_REPLY_STATUS) {
            c->stats.puts_done++;
            note_success(c);
        } else {
            c->stats.puts_failed++;
            c->stats.errors++;
            if (reply && reply->type == REDIS_REPLY_ERROR)
                note_error(c, "Redis SET failed: %s", reply->str);
            if (!c->destroying)
                note_failure(c);
        }
    }
    req_free(c, r);
}

static eb_status check_ready(eb_cache *c)
{
    if (c->state != CACHE_UP || !c->ac) {
        c->stats.unavailable++;
        return EB_ERR_UNAVAILABLE;
    }
    if (c->stats.inflight >= c->opt.max_inflight)
        return EB_ERR_BUSY;
    return EB_OK;
}

static cache_req *new_req(eb_cache *c, bool is_put)
{
    cache_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->cache = c;
    r->is_put = is_put;
    eb_loop_timer_init(&r->timer, on_req_timeout, r);
    return r;
}

/* ---- public ----------------------------------------------------------------------------- */

void eb_cache_options_default(eb_cache_options *o)
{
    *o = (eb_cache_options){
        .url = NULL,
        .ttl_ms = 7u * 24 * 3600 * 1000,
        .command_timeout_ms = 50,
        .connect_timeout_ms = 500,
        .max_failures = 3,
        .backoff_min_ms = 100,
        .backoff_max_ms = 5000,
        .max_inflight = 10000,
    };
}

eb_cache *eb_cache_new(eb_loop *loop, const eb_cache_options *options, char *err,
                       size_t err_len)
{
    if (!loop || !options) {
        eb_set_err(err, err_len, "eb_cache_new: missing loop or options");
        return NULL;
    }
    eb_cache *c = calloc(1, sizeof *c);
    if (!c) {
        eb_set_err(err, err_len, "out of memory");
        return NULL;
    }
    c->loop = loop;
    c->opt = *options;
    eb_cache_options def;
    eb_cache_options_default(&def);
    if (!c->opt.ttl_ms)
        c->opt.ttl_ms = def.ttl_ms;
    if (!c->opt.command_timeout_ms)
        c->opt.command_timeout_ms = def.command_timeout_ms;
    if (!c->opt.connect_timeout_ms)
        c->opt.connect_timeout_ms = def.connect_timeout_ms;
    if (!c->opt.max_failures)
        c->opt.max_failures = def.max_failures;
    if (!c->opt.backoff_min_ms)
        c->opt.backoff_min_ms = def.backoff_min_ms;
    if (c->opt.backoff_max_ms < c->opt.backoff_min_ms)
        c->opt.backoff_max_ms = c->opt.backoff_min_ms > def.backoff_max_ms ? c->opt.backoff_min_ms
                                                                           : def.backoff_max_ms;
    if (!c->opt.max_inflight)
        c->opt.max_inflight = def.max_inflight;
    if (parse_url(c, options->url, err, err_len) != EB_OK) {
        free(c);
        return NULL;
    }
    c->opt.url = NULL; /* not kept: host/port/db/password are */
    c->fd = -1;
    c->backoff_ms = c->opt.backoff_min_ms;
    eb_loop_timer_init(&c->reconnect_timer, on_reconnect_timer, c);
    eb_loop_timer_init(&c->connect_timer, on_connect_timeout, c);
    eb_loop_timer_init(&c->drop_timer, on_drop_timer, c);
    c->state = CACHE_DOWN;
    start_connect(c);
    return c;
}

void eb_cache_destroy(eb_cache **cache)
{
    if (!cache || !*cache)
        return;
    eb_cache *c = *cache;
    c->destroying = true;
    eb_loop_timer_stop(c->loop, &c->reconnect_timer);
    eb_loop_timer_stop(c->loop, &c->connect_timer);
    eb_loop_timer_stop(c->loop, &c->drop_timer);
    for (cache_req *r = c->reqs; r; r = r->next) {
        eb_loop_timer_stop(c->loop, &r->timer);
        if (!r->done) {
            r->done = true;
            if (!r->is_put && !r->internal)
                r->fn(r->arg, EB_ERR_SHUTDOWN, NULL, 0);
        }
    }
    if (c->ac) {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        redisAsyncFree(ac); /* runs the remaining callbacks with NULL: they free requests */
    }
    while (c->reqs) /* requests hiredis never took (should not happen) */
        req_free(c, c->reqs);
    if (c->fd_registered)
        eb_loop_remove(c->loop, NULL, c->fd);
    free(c->decode_buf);
    free(c);
    *cache = NULL;
}

eb_status eb_cache_get(eb_cache *c, const char *model, const char *model_rev,
                       const char *preproc_rev, const uint8_t hash[EB_HASH_LEN],
                       uint32_t expected_dims, eb_cache_get_fn fn, void *arg)
{
    if (!c || !fn)
        return EB_ERR_INVALID;
    char key[KEY_MAX];
    size_t klen = eb_cache_key(key, sizeof key, model, model_rev, preproc_rev, hash);
    if (klen == 0)
        return EB_ERR_INVALID;
    eb_status st = check_ready(c);
    if (st != EB_OK)
        return st;
    cache_req *r = new_req(c, false);
    if (!r)
        return EB_ERR_NOMEM;
    r->fn = fn;
    r->arg = arg;
    r->expected_dims = expected_dims;
    const char *argv[2] = {"GET", key};
    size_t lens[2] = {3, klen};
    if (redisAsyncCommandArgv(c->ac, on_get_reply, r, 2, argv, lens) != REDIS_OK) {
        free(r);
        c->stats.errors++;
        return EB_ERR_UNAVAILABLE;
    }
    req_link(c, r);
    eb_loop_timer_start(c->loop, &r->timer,
                        eb_now_us() + (int64_t)c->opt.command_timeout_ms * 1000);
    return EB_OK;
}

eb_status eb_cache_put(eb_cache *c, const char *model, const char *model_rev,
                       const char *preproc_rev, const uint8_t hash[EB_HASH_LEN],
                       const float *values, uint32_t dims, uint16_t flags)
{
    if (!c || !values)
        return EB_ERR_INVALID;
    char key[KEY_MAX];
    size_t klen = eb_cache_key(key, sizeof key, model, model_rev, preproc_rev, hash);
    if (klen == 0 || dims == 0 || dims > 65536)
        return EB_ERR_INVALID;
    eb_status st = check_ready(c);
    if (st != EB_OK) {
        c->stats.puts_failed++;
        return st;
    }
    size_t vlen = eb_cache_value_size(dims);
    uint8_t *value = malloc(vlen);
    if (!value)
        return EB_ERR_NOMEM;
    eb_cache_value_encode(values, dims, flags, value, vlen);
    cache_req *r = new_req(c, true);
    if (!r) {
        free(value);
        return EB_ERR_NOMEM;
    }
    char ttl[24];
    int tl = snprintf(ttl, sizeof ttl, "%u", c->opt.ttl_ms);
    const char *argv[5] = {"SET", key, (const char *)value, "PX", ttl};
    size_t lens[5] = {3, klen, vlen, 2, (size_t)tl};
    int rc = redisAsyncCommandArgv(c->ac, on_put_reply, r, 5, argv, lens);
    free(value); /* hiredis formatted its own copy */
    if (rc != REDIS_OK) {
        free(r);
        c->stats.puts_failed++;
        return EB_ERR_UNAVAILABLE;
    }
    req_link(c, r);
    c->stats.puts++;
    eb_loop_timer_start(c->loop, &r->timer,
                        eb_now_us() + (int64_t)c->opt.command_timeout_ms * 1000);
    return EB_OK;
}

bool eb_cache_is_up(const eb_cache *c)
{
    return c && c->state == CACHE_UP;
}

void eb_cache_get_stats(const eb_cache *c, eb_cache_stats *stats)
{
    *stats = c->stats;
    stats->up = c->state == CACHE_UP;
}

size_t eb_cache_key(char *out, size_t cap, const char *model, const char *model_rev,
                    const char *preproc_rev, const uint8_t hash[EB_HASH_LEN])
{
    if (!out || !model || !model_rev || !preproc_rev || !hash || !*model)
        return 0;
    char hex[2 * EB_HASH_LEN + 1];
    eb_hex(hash, EB_HASH_LEN, hex);
    int n = snprintf(out, cap, "emb:%s:%s:%s:%s", model, model_rev, preproc_rev, hex);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    return (size_t)n;
}

size_t eb_cache_value_size(uint32_t dims)
{
    return EB_CACHE_VALUE_HEADER + 4 * (size_t)dims;
}

eb_status eb_cache_value_encode(const float *values, uint32_t dims, uint16_t flags,
                                uint8_t *out, size_t cap)
{
    if (!values || !out || dims == 0 || dims > 65536)
        return EB_ERR_INVALID;
    if (cap < eb_cache_value_size(dims))
        return EB_ERR_TOO_LARGE;
    uint8_t *payload = out + EB_CACHE_VALUE_HEADER;
    for (uint32_t i = 0; i < dims; i++) {
        uint32_t bits;
        memcpy(&bits, &values[i], 4);
        put_le32(payload + 4 * (size_t)i, bits);
    }
    memcpy(out, "EBCV", 4);
    out[4] = 1;
    out[5] = 1;
    put_le16(out + 6, flags);
    put_le32(out + 8, dims);
    put_le32(out + 12, eb_crc32c(0, payload, 4 * (size_t)dims));
    return EB_OK;
}

eb_status eb_cache_value_decode(const uint8_t *buf, size_t len, uint32_t expected_dims,
                                float *out, uint32_t cap, uint32_t *dims, uint16_t *flags)
{
    if (!buf || len < EB_CACHE_VALUE_HEADER || memcmp(buf, "EBCV", 4) != 0 || buf[4] != 1 ||
        buf[5] != 1)
        return EB_ERR_PROTOCOL;
    uint32_t n = get_le32(buf + 8);
    if (n == 0 || len != eb_cache_value_size(n) || (expected_dims && n != expected_dims))
        return EB_ERR_PROTOCOL;
    const uint8_t *payload = buf + EB_CACHE_VALUE_HEADER;
    if (eb_crc32c(0, payload, 4 * (size_t)n) != get_le32(buf + 12))
        return EB_ERR_PROTOCOL;
    if (!out || n > cap)
        return EB_ERR_TOO_LARGE;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t bits = get_le32(payload + 4 * (size_t)i);
        memcpy(&out[i], &bits, 4);
    }
    if (dims)
        *dims = n;
    if (flags)
        *flags = (uint16_t)(buf[6] | (buf[7] << 8));
    return EB_OK;
}
