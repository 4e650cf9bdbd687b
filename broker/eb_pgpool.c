/* eb_pgpool — non-blocking libpq connections multiplexed on eb_loop.
 *
 * Every connection lives in libpq pipeline mode with a non-blocking socket watched by the loop:
 * POLLIN always (results, and noticing a dead server), POLLOUT only while PQflush reports
 * unsent bytes. A job is a list of steps sent back to back followed by one PQpipelineSync; its
 * results are read in order (each step: results then a NULL; then PGRES_PIPELINE_SYNC), so the
 * code only ever calls PQgetResult when PQisBusy says it will not block. The same machinery runs
 * the internal jobs: connection setup (SET statement_timeout + PQsendPrepare of every registered
 * statement) and the ROLLBACK sent after a transactional job left its connection inside a
 * failed transaction block.
 *
 * Connections move DOWN → CONNECTING (PQconnectPoll) → SETUP → READY; any failure closes the
 * connection, fails the jobs on it with EB_ERR_UNAVAILABLE and rearms a reconnect timer with
 * exponential backoff (reset by a successful setup). The pool is "up" while a connection is
 * READY; when the last one goes, queued jobs fail and new ones are refused until one returns,
 * so callers learn at once that PostgreSQL is gone instead of waiting on a queue.
 *
 * Dispatch runs from a zero-delay timer, never inside eb_pgpool_submit, so callbacks (which a
 * failed send triggers) are never re-entered from the caller's own call.
 */
#include "eb_pgpool.h"
#include "eb_status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "eb_clock.h"
#include "eb_log.h"

typedef enum step_kind { STEP_SQL, STEP_PARAMS, STEP_PREPARED, STEP_PREPARE } step_kind;

typedef struct pg_step {
    step_kind kind;
    char *text;     /* SQL, or the statement name for PREPARED/PREPARE */
    char *prep_sql; /* PREPARE only */
    int n_params;
    char **values;
    int *lengths;
    int *formats;
    int result_format;
} pg_step;

typedef enum job_kind { JOB_USER, JOB_SETUP, JOB_ROLLBACK } job_kind;

typedef struct pg_conn pg_conn;

struct eb_pgjob {
    eb_pgpool_fn fn;
    void *arg;
    pg_step *steps;
    size_t n_steps, cap_steps;
    size_t result_step;
    unsigned flags;
    job_kind kind;

    /* runtime */
    eb_pgpool *pool;
    pg_conn *conn;                /* set while in flight */
    struct eb_pgjob *prev, *next; /* queue or connection in-flight list */
    struct job_list *list;        /* the list it is on, or NULL */
    eb_loop_timer deadline;
    int64_t user_deadline_us; /* caller's deadline (0 = none) */
    int64_t hard_deadline_us; /* submit + query_timeout: past it the connection is reset */
    bool abandoned;           /* answered with EB_ERR_TIMEOUT; results are discarded */
    size_t cur_step;
    bool awaiting_sync;
    PGresult *result;
    eb_status status;
    char error[320];
};

typedef struct job_list {
    eb_pgjob *head, *tail;
    uint32_t count;
} job_list;

typedef enum conn_state { CONN_DOWN, CONN_CONNECTING, CONN_SETUP, CONN_READY } conn_state;

struct pg_conn {
    eb_pgpool *pool;
    unsigned index;
    PGconn *pg;
    int fd;
    bool fd_registered;
    bool want_write;
    conn_state state;
    job_list inflight;
    bool exclusive;     /* the job in flight must run alone (interactive or internal) */
    bool attempted;     /* finished at least one connect attempt */
    eb_loop_timer timer; /* connect deadline while connecting, reconnect delay while down */
    uint32_t backoff_ms;
};

typedef struct pg_stmt {
    char *name;
    char *sql;
} pg_stmt;

struct eb_pgpool {
    eb_loop *loop;
    eb_pgpool_options opt;
    char *conninfo;
    char *app_name;
    char *setup_sql;
    char server[300];
    pg_stmt *stmts;
    size_t n_stmts;
    pg_conn *conns;
    job_list q_inter, q_bulk;
    bool started, destroying, was_up;
    eb_loop_timer kick;
    eb_pgpool_stats stats;
};

/* ---- helpers ---------------------------------------------------------------------------- */

static void note_error(eb_pgpool *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_error(eb_pgpool *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->stats.last_error, sizeof p->stats.last_error, fmt, ap);
    va_end(ap);
}

/* The useful part of a libpq message: the text after "failed: " on its first line, without
 * the trailing newline ("Connection refused"). */
static void short_reason(const char *msg, char *out, size_t cap)
{
    if (!msg || !*msg) {
        snprintf(out, cap, "unknown error");
        return;
    }
    const char *f = strstr(msg, "failed: ");
    const char *s = f ? f + 8 : msg;
    size_t n = strcspn(s, "\n");
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\r'))
        n--;
    snprintf(out, cap, "%.*s", (int)n, s);
}

/* Truncating copy (snprintf("%s") trips -Wformat-truncation on fixed buffers). */
static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void list_push(job_list *l, eb_pgjob *j)
{
    j->prev = l->tail;
    j->next = NULL;
    if (l->tail)
        l->tail->next = j;
    else
        l->head = j;
    l->tail = j;
    l->count++;
    j->list = l;
}

static void list_remove(job_list *l, eb_pgjob *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        l->head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        l->tail = j->prev;
    l->count--;
    j->prev = j->next = NULL;
    j->list = NULL;
}

static eb_pgjob *list_pop(job_list *l)
{
    eb_pgjob *j = l->head;
    if (j)
        list_remove(l, j);
    return j;
}

static void free_step(pg_step *s)
{
    free(s->text);
    free(s->prep_sql);
    if (s->values)
        for (int i = 0; i < s->n_params; i++)
            free(s->values[i]);
    free(s->values);
    free(s->lengths);
    free(s->formats);
}

static void job_destroy(eb_pgjob *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->n_steps; i++)
        free_step(&j->steps[i]);
    free(j->steps);
    if (j->result)
        PQclear(j->result);
    free(j);
}

static pg_step *job_new_step(eb_pgjob *j)
{
    if (j->n_steps == j->cap_steps) {
        size_t cap = j->cap_steps ? j->cap_steps * 2 : 4;
        pg_step *s = realloc(j->steps, cap * sizeof *s);
        if (!s)
            return NULL;
        j->steps = s;
        j->cap_steps = cap;
    }
    pg_step *s = &j->steps[j->n_steps];
    memset(s, 0, sizeof *s);
    return s;
}

/* Copy parameters into the step (binary values by length, text ones by strlen). */
static eb_status step_copy_params(pg_step *s, int n, const char *const *values,
                                  const int *lengths, const int *formats)
{
    s->n_params = n;
    if (n == 0)
        return EB_OK;
    s->values = calloc((size_t)n, sizeof *s->values);
    s->lengths = calloc((size_t)n, sizeof *s->lengths);
    s->formats = calloc((size_t)n, sizeof *s->formats);
    if (!s->values || !s->lengths || !s->formats)
        return EB_ERR_NOMEM;
    for (int i = 0; i < n; i++) {
        int fmt = formats ? formats[i] : 0;
        s->formats[i] = fmt;
        if (!values || !values[i])
            continue; /* SQL NULL */
        size_t len = fmt ? (size_t)(lengths ? lengths[i] : 0) : strlen(values[i]);
        s->values[i] = malloc(len + 1);
        if (!s->values[i])
            return EB_ERR_NOMEM;
        memcpy(s->values[i], values[i], len);
        s->values[i][len] = 0;
        s->lengths[i] = (int)len;
    }
    return EB_OK;
}

static eb_status map_sqlstate(const char *state)
{
    if (!state || !*state)
        return EB_ERR_UNAVAILABLE;
    if (strcmp(state, "57014") == 0)
        return EB_ERR_TIMEOUT;
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
        strcmp(state, "53300") == 0) /* too many connections */
        return EB_ERR_UNAVAILABLE;
    if (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0 ||
        strncmp(state, "42", 2) == 0)
        return EB_ERR_INVALID;
    return EB_ERR_IO;
}

/* ---- connection plumbing ---------------------------------------------------------------- */

static void conn_io(eb_loop *loop, void *socket, int fd, short revents, void *arg);
static void conn_schedule_reconnect(pg_conn *c);
static void conn_broken(pg_conn *c, eb_status status, const char *why);
static void pool_update_up(eb_pgpool *p);
static void kick(eb_pgpool *p);

static void conn_set_events(pg_conn *c, short events)
{
    if (c->fd_registered)
        eb_loop_set_events(c->pool->loop, NULL, c->fd, events);
}

static void conn_watch_fd(pg_conn *c, short events)
{
    int fd = PQsocket(c->pg);
    if (c->fd_registered && fd != c->fd) {
        eb_loop_remove(c->pool->loop, NULL, c->fd);
        c->fd_registered = false;
    }
    c->fd = fd;
    if (fd < 0)
        return;
    if (!c->fd_registered) {
        if (eb_loop_add_fd(c->pool->loop, fd, events, conn_io, c) == EB_OK)
            c->fd_registered = true;
    } else {
        conn_set_events(c, events);
    }
}

static void conn_close(pg_conn *c)
{
    if (c->fd_registered)
        eb_loop_remove(c->pool->loop, NULL, c->fd);
    c->fd_registered = false;
    c->fd = -1;
    if (c->pg)
        PQfinish(c->pg); /* non-blocking socket: the Terminate message is best effort */
    c->pg = NULL;
    c->want_write = false;
    c->exclusive = false;
    c->state = CONN_DOWN;
    eb_loop_timer_stop(c->pool->loop, &c->timer);
}

/* Call a finished user job's callback and free it. */
static void job_complete(eb_pgpool *p, eb_pgjob *j)
{
    eb_loop_timer_stop(p->loop, &j->deadline);
    if (j->abandoned) { /* answered already when its deadline passed */
        job_destroy(j);
        return;
    }
    if (j->status != EB_OK && j->result) {
        PQclear(j->result);
        j->result = NULL;
    }
    if (j->status == EB_OK)
        p->stats.completed++;
    else
        p->stats.failed++;
    if (j->status == EB_ERR_TIMEOUT)
        p->stats.timeouts++;
    if (j->kind == JOB_USER && j->fn)
        j->fn(j->arg, j->status, j->status == EB_OK ? j->result : NULL,
              j->status == EB_OK ? NULL : j->error);
    job_destroy(j);
}

static void job_fail(eb_pgpool *p, eb_pgjob *j, eb_status status, const char *why)
{
    if (j->status == EB_OK || status == EB_ERR_SHUTDOWN) {
        j->status = status;
        copy_str(j->error, sizeof j->error, why);
    }
    job_complete(p, j);
}

static eb_status conn_flush(pg_conn *c)
{
    int rc = PQflush(c->pg);
    if (rc < 0)
        return EB_ERR_IO;
    bool want = rc == 1;
    if (want != c->want_write) {
        c->want_write = want;
        conn_set_events(c, (short)(ZMQ_POLLIN | (want ? ZMQ_POLLOUT : 0)));
    }
    return EB_OK;
}

/* Send every step of j plus a Sync on c. On failure the connection is broken (j included). */
static void conn_send_job(pg_conn *c, eb_pgjob *j, bool exclusive)
{
    eb_pgpool *p = c->pool;
    j->conn = c;
    j->cur_step = 0;
    j->awaiting_sync = false;
    list_push(&c->inflight, j);
    if (exclusive)
        c->exclusive = true;
    if (j->kind == JOB_USER)
        p->stats.inflight++;
    bool ok = true;
    for (size_t i = 0; ok && i < j->n_steps; i++) {
        pg_step *s = &j->steps[i];
        switch (s->kind) {
        case STEP_SQL:
            ok = PQsendQueryParams(c->pg, s->text, 0, NULL, NULL, NULL, NULL, 0);
            break;
        case STEP_PARAMS:
            ok = PQsendQueryParams(c->pg, s->text, s->n_params, NULL,
                                   (const char *const *)s->values, s->lengths, s->formats,
                                   s->result_format);
            break;
        case STEP_PREPARED:
            ok = PQsendQueryPrepared(c->pg, s->text, s->n_params,
                                     (const char *const *)s->values, s->lengths, s->formats,
                                     s->result_format);
            break;
        case STEP_PREPARE:
            ok = PQsendPrepare(c->pg, s->text, s->prep_sql, 0, NULL);
            break;
        }
    }
    if (ok)
        ok = PQpipelineSync(c->pg);
    if (!ok || conn_flush(c) != EB_OK) {
        char why[256];
        short_reason(PQerrorMessage(c->pg), why, sizeof why);
        conn_broken(c, EB_ERR_UNAVAILABLE, why);
    }
}

/* A step's result arrived for job j (step j->cur_step). */
static void job_step_result(eb_pgjob *j, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR) {
        if (j->status == EB_OK) {
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
            char reason[256];
            short_reason(primary ? primary : PQresultErrorMessage(res), reason, sizeof reason);
            j->status = map_sqlstate(state);
            snprintf(j->error, sizeof j->error, "PostgreSQL error %s in step %zu: %s",
                     state ? state : "(none)", j->cur_step + 1, reason);
        }
        PQclear(res);
        return;
    }
    if (st == PGRES_PIPELINE_ABORTED) {
        if (j->status == EB_OK) {
            j->status = EB_ERR_IO;
            snprintf(j->error, sizeof j->error, "pipeline aborted before step %zu",
                     j->cur_step + 1);
        }
        PQclear(res);
        return;
    }
    if (j->cur_step == j->result_step && j->status == EB_OK) {
        if (j->result)
            PQclear(j->result);
        j->result = res;
    } else {
        PQclear(res);
    }
}

static eb_pgjob *internal_job(eb_pgpool *p, job_kind kind)
{
    eb_pgjob *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->kind = kind;
    j->pool = p;
    eb_loop_timer_init(&j->deadline, NULL, NULL);
    return j;
}

/* A job's Sync arrived: it is over. */
static void conn_job_done(pg_conn *c, eb_pgjob *j)
{
    eb_pgpool *p = c->pool;
    list_remove(&c->inflight, j);
    j->conn = NULL;
    if (j->kind == JOB_USER)
        p->stats.inflight--;
    if (c->inflight.count == 0)
        c->exclusive = false;

    if (j->kind == JOB_SETUP) {
        if (j->status != EB_OK) {
            char why[400];
            snprintf(why, sizeof why, "connection setup failed (%s); run `embroker migrate` if "
                                      "the schema is missing",
                     j->error);
            job_destroy(j);
            conn_broken(c, EB_ERR_UNAVAILABLE, why);
            return;
        }
        job_destroy(j);
        eb_loop_timer_stop(p->loop, &c->timer);
        c->state = CONN_READY;
        c->attempted = true;
        c->backoff_ms = p->opt.backoff_min_ms;
        p->stats.connects++;
        pool_update_up(p);
        kick(p);
        return;
    }
    if (j->kind == JOB_ROLLBACK) {
        bool ok = j->status == EB_OK;
        job_destroy(j);
        if (!ok)
            conn_broken(c, EB_ERR_UNAVAILABLE, "ROLLBACK after a failed transaction failed");
        else
            kick(p);
        return;
    }
    /* A transactional job that failed half way leaves the session in an aborted transaction
     * block: clean it before anyone else uses the connection. */
    if (c->inflight.count == 0) {
        PGTransactionStatusType ts = PQtransactionStatus(c->pg);
        if (ts == PQTRANS_INERROR || ts == PQTRANS_INTRANS) {
            eb_pgjob *rb = internal_job(p, JOB_ROLLBACK);
            pg_step *s = rb ? job_new_step(rb) : NULL;
            if (s) {
                s->kind = STEP_SQL;
                s->text = xstrdup("ROLLBACK");
                rb->n_steps = 1;
            }
            if (!s || !s->text) {
                job_destroy(rb);
                job_complete(p, j);
                conn_broken(c, EB_ERR_UNAVAILABLE, "out of memory");
                return;
            }
            conn_send_job(c, rb, true);
        }
    }
    job_complete(p, j);
    kick(p);
}

/* Read every result that is complete without blocking. */
static void conn_process_results(pg_conn *c)
{
    while (c->pg) {
        eb_pgjob *j = c->inflight.head;
        if (!j || PQisBusy(c->pg))
            break;
        PGresult *res = PQgetResult(c->pg);
        if (!res) {
            if (j->awaiting_sync)
                break; /* nothing more until the Sync's ReadyForQuery arrives */
            j->cur_step++;
            if (j->cur_step >= j->n_steps)
                j->awaiting_sync = true;
            continue;
        }
        if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            conn_job_done(c, j);
            continue;
        }
        job_step_result(j, res);
    }
    if (c->pg && PQstatus(c->pg) == CONNECTION_BAD) {
        char why[256];
        short_reason(PQerrorMessage(c->pg), why, sizeof why);
        conn_broken(c, EB_ERR_UNAVAILABLE, why);
    }
}

/* Server notices (e.g. "terminating connection due to immediate shutdown") go to the log, not
 * to stderr. */
static void on_notice(void *arg, const char *message)
{
    pg_conn *c = arg;
    char line[256];
    short_reason(message, line, sizeof line);
    eb_log_debug("pg_notice", "conn=%u message=\"%s\"", c->index, line);
}

static void conn_connected(pg_conn *c)
{
    eb_pgpool *p = c->pool;
    PQsetNoticeProcessor(c->pg, on_notice, c);
    if (PQsetnonblocking(c->pg, 1) != 0 || PQenterPipelineMode(c->pg) != 1) {
        char why[256];
        short_reason(PQerrorMessage(c->pg), why, sizeof why);
        conn_broken(c, EB_ERR_UNAVAILABLE, why);
        return;
    }
    c->state = CONN_SETUP;
    c->want_write = false;
    conn_watch_fd(c, ZMQ_POLLIN);
    eb_pgjob *j = internal_job(p, JOB_SETUP);
    bool ok = j != NULL;
    char sql[64];
    snprintf(sql, sizeof sql, "SET statement_timeout = %u", p->opt.statement_timeout_ms);
    pg_step *s = ok ? job_new_step(j) : NULL;
    if (s) {
        s->kind = STEP_SQL;
        s->text = xstrdup(sql);
        j->n_steps++;
        ok = s->text != NULL;
    } else {
        ok = false;
    }
    if (ok && p->setup_sql) {
        s = job_new_step(j);
        if (s) {
            s->kind = STEP_SQL;
            s->text = xstrdup(p->setup_sql);
            j->n_steps++;
        }
        ok = s && s->text;
    }
    for (size_t i = 0; ok && i < p->n_stmts; i++) {
        s = job_new_step(j);
        if (!s) {
            ok = false;
            break;
        }
        s->kind = STEP_PREPARE;
        s->text = xstrdup(p->stmts[i].name);
        s->prep_sql = xstrdup(p->stmts[i].sql);
        j->n_steps++;
        ok = s->text && s->prep_sql;
    }
    if (!ok) {
        job_destroy(j);
        conn_broken(c, EB_ERR_UNAVAILABLE, "out of memory");
        return;
    }
    j->result_step = j->n_steps; /* none: only errors matter */
    conn_send_job(c, j, true);
}

static void conn_poll_connect(pg_conn *c)
{
    PostgresPollingStatusType ps = PQconnectPoll(c->pg);
    switch (ps) {
    case PGRES_POLLING_READING:
        conn_watch_fd(c, ZMQ_POLLIN);
        break;
    case PGRES_POLLING_WRITING:
        conn_watch_fd(c, ZMQ_POLLOUT);
        break;
    case PGRES_POLLING_OK:
        conn_connected(c);
        break;
    case PGRES_POLLING_FAILED:
    default: {
        char why[256];
        short_reason(PQerrorMessage(c->pg), why, sizeof why);
        conn_broken(c, EB_ERR_UNAVAILABLE, why);
        break;
    }
    }
}

static void conn_io(eb_loop *loop, void *socket, int fd, short revents, void *arg)
{
    (void)loop;
    (void)socket;
    (void)fd;
    pg_conn *c = arg;
    if (!c->pg)
        return;
    if (c->state == CONN_CONNECTING) {
        conn_poll_connect(c);
        return;
    }
    if (revents & (ZMQ_POLLIN | ZMQ_POLLERR)) {
        if (!PQconsumeInput(c->pg)) {
            char why[256];
            short_reason(PQerrorMessage(c->pg), why, sizeof why);
            conn_broken(c, EB_ERR_UNAVAILABLE, why);
            return;
        }
        conn_process_results(c);
        if (!c->pg)
            return;
    }
    if (c->want_write && conn_flush(c) != EB_OK) {
        char why[256];
        short_reason(PQerrorMessage(c->pg), why, sizeof why);
        conn_broken(c, EB_ERR_UNAVAILABLE, why);
    }
}

static void conn_timer(eb_loop *loop, eb_loop_timer *t, void *arg);

static void conn_start(pg_conn *c)
{
    eb_pgpool *p = c->pool;
    const char *keys[] = {"application_name", "gssencmode", "dbname", NULL};
    const char *vals[] = {p->app_name, "disable", p->conninfo, NULL};
    c->pg = PQconnectStartParams(keys, vals, 1);
    if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
        char why[256];
        short_reason(c->pg ? PQerrorMessage(c->pg) : "out of memory", why, sizeof why);
        conn_broken(c, EB_ERR_UNAVAILABLE, why);
        return;
    }
    c->state = CONN_CONNECTING;
    c->fd = -1;
    /* As if PQconnectPoll had returned PGRES_POLLING_WRITING. */
    conn_watch_fd(c, ZMQ_POLLOUT);
    if (!c->fd_registered) {
        conn_broken(c, EB_ERR_UNAVAILABLE, "no socket after PQconnectStart");
        return;
    }
    eb_loop_timer_start(p->loop, &c->timer,
                        eb_now_us() + (int64_t)p->opt.connect_timeout_ms * 1000);
}

static void conn_timer(eb_loop *loop, eb_loop_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    pg_conn *c = arg;
    if (c->state == CONN_DOWN) {
        conn_start(c);
    } else if (c->state == CONN_CONNECTING || c->state == CONN_SETUP) {
        char why[128];
        snprintf(why, sizeof why, "connection not ready within %u ms",
                 c->pool->opt.connect_timeout_ms);
        conn_broken(c, EB_ERR_UNAVAILABLE, why);
    }
}

static void conn_schedule_reconnect(pg_conn *c)
{
    eb_pgpool *p = c->pool;
    if (p->destroying)
        return;
    uint32_t delay = c->backoff_ms;
    c->backoff_ms = c->backoff_ms * 2 > p->opt.backoff_max_ms ? p->opt.backoff_max_ms
                                                              : c->backoff_ms * 2;
    eb_loop_timer_start(p->loop, &c->timer, eb_now_us() + (int64_t)delay * 1000);
}

/* Close c, fail what was on it, plan the reconnect, update the pool's health. */
static void conn_broken(pg_conn *c, eb_status status, const char *why)
{
    eb_pgpool *p = c->pool;
    bool was_ready = c->state == CONN_READY;
    bool was_connecting = c->state == CONN_CONNECTING || c->state == CONN_SETUP || !c->pg;
    char msg[400];
    if (was_ready)
        snprintf(msg, sizeof msg, "connection %u to PostgreSQL at %s lost: %s", c->index,
                 p->server, why);
    else
        snprintf(msg, sizeof msg, "PostgreSQL at %s unreachable: %s", p->server, why);
    note_error(p, "%s", msg);
    if (was_ready)
        p->stats.disconnects++;
    else if (was_connecting)
        p->stats.connect_failures++;
    eb_log_debug("pg_conn_closed", "conn=%u reason=\"%s\"", c->index, msg);

    job_list failed = c->inflight;
    c->inflight = (job_list){0};
    for (eb_pgjob *j = failed.head; j; j = j->next)
        j->list = NULL;
    conn_close(c);
    c->attempted = true;
    while (failed.head) {
        eb_pgjob *j = failed.head;
        failed.head = j->next;
        j->conn = NULL;
        j->prev = j->next = NULL;
        if (j->kind == JOB_USER) {
            p->stats.inflight--;
            job_fail(p, j, status, msg);
        } else {
            job_destroy(j);
        }
        if (p->destroying)
            break;
    }
    if (p->destroying)
        return;
    conn_schedule_reconnect(c);
    pool_update_up(p);
}

static uint32_t count_ready(const eb_pgpool *p)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < p->opt.connections; i++)
        n += p->conns[i].state == CONN_READY;
    return n;
}

static bool all_attempted(const eb_pgpool *p)
{
    for (uint32_t i = 0; i < p->opt.connections; i++)
        if (!p->conns[i].attempted)
            return false;
    return true;
}

/* Jobs are refused (and queued ones failed) once every connection tried and none is usable. */
static bool pool_refusing(const eb_pgpool *p)
{
    return !p->started || (count_ready(p) == 0 && all_attempted(p));
}

static void pool_update_up(eb_pgpool *p)
{
    uint32_t ready = count_ready(p);
    if (ready > 0 && !p->was_up) {
        p->was_up = true;
        eb_log_info("postgres_up", "server=%s connections=%u", p->server, ready);
    } else if (ready == 0 && p->was_up) {
        p->was_up = false;
        eb_log_warn("postgres_down", "server=%s reason=\"%s\" effect=\"searches answered without "
                                     "results, stores spooled\"",
                    p->server, p->stats.last_error);
    }
    if (pool_refusing(p)) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s; searches answered without results, stores spooled",
                 p->stats.last_error[0] ? p->stats.last_error : "PostgreSQL unavailable");
        job_list *qs[2] = {&p->q_inter, &p->q_bulk};
        for (int q = 0; q < 2; q++) {
            eb_pgjob *j;
            while ((j = list_pop(qs[q])) != NULL && !p->destroying)
                job_fail(p, j, EB_ERR_UNAVAILABLE, msg);
        }
    }
}

/* ---- dispatch --------------------------------------------------------------------------- */

static pg_conn *find_idle(eb_pgpool *p)
{
    for (uint32_t i = 0; i < p->opt.connections; i++) {
        pg_conn *c = &p->conns[i];
        if (c->state == CONN_READY && c->inflight.count == 0)
            return c;
    }
    return NULL;
}

static pg_conn *pick_bulk_conn(eb_pgpool *p)
{
    uint32_t bulk_conns = 0;
    pg_conn *best = NULL;
    for (uint32_t i = 0; i < p->opt.connections; i++) {
        pg_conn *c = &p->conns[i];
        if (c->state != CONN_READY || c->inflight.count == 0 || c->exclusive)
            continue;
        bulk_conns++;
        if (c->inflight.count < p->opt.pipeline_depth &&
            (!best || c->inflight.count < best->inflight.count))
            best = c;
    }
    uint32_t max_bulk = p->opt.connections > 1 ? p->opt.connections - 1 : 1;
    if (bulk_conns < max_bulk) {
        pg_conn *idle = find_idle(p);
        if (idle)
            return idle;
    }
    return best;
}

static void dispatch(eb_pgpool *p)
{
    while (!p->destroying) {
        if (p->q_inter.head) {
            pg_conn *c = find_idle(p);
            if (!c)
                break; /* let bulk connections drain rather than feed them */
            eb_pgjob *j = list_pop(&p->q_inter);
            conn_send_job(c, j, true);
            continue;
        }
        if (p->q_bulk.head) {
            pg_conn *c = pick_bulk_conn(p);
            if (!c)
                break;
            eb_pgjob *j = list_pop(&p->q_bulk);
            conn_send_job(c, j, false);
            continue;
        }
        break;
    }
}

static void on_kick(eb_loop *loop, eb_loop_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    dispatch(arg);
}

static void kick(eb_pgpool *p)
{
    if (!p->destroying && !eb_loop_timer_armed(&p->kick))
        eb_loop_timer_start(p->loop, &p->kick, eb_now_us());
}

static void on_job_deadline(eb_loop *loop, eb_loop_timer *t, void *arg)
{
    (void)loop;
    (void)t;
    eb_pgjob *j = arg;
    eb_pgpool *p = j->pool;
    char msg[400];
    int64_t now = eb_now_us();
    bool hard = now >= j->hard_deadline_us;
    if (j->conn && !hard) {
        /* The caller's deadline: answer now, let the statement finish on its connection (its
         * results are dropped); only the hard deadline resets the connection. */
        snprintf(msg, sizeof msg, "deadline passed while PostgreSQL at %s was running the query",
                 p->server);
        j->status = EB_ERR_TIMEOUT;
        copy_str(j->error, sizeof j->error, msg);
        p->stats.failed++;
        p->stats.timeouts++;
        if (j->fn)
            j->fn(j->arg, EB_ERR_TIMEOUT, NULL, j->error);
        j->abandoned = true;
        eb_loop_timer_start(p->loop, &j->deadline, j->hard_deadline_us);
        return;
    }
    if (j->conn) {
        /* The server stopped answering: give up on this connection. */
        pg_conn *c = j->conn;
        list_remove(&c->inflight, j);
        j->conn = NULL;
        p->stats.inflight--;
        snprintf(msg, sizeof msg, "no answer from PostgreSQL at %s within %u ms", p->server,
                 p->opt.query_timeout_ms);
        job_fail(p, j, EB_ERR_TIMEOUT, msg);
        conn_broken(c, EB_ERR_UNAVAILABLE, "reset after a query ran past its deadline");
        return;
    }
    if (j->list)
        list_remove(j->list, j);
    if (hard)
        snprintf(msg, sizeof msg, "no PostgreSQL connection free within %u ms",
                 p->opt.query_timeout_ms);
    else
        snprintf(msg, sizeof msg, "deadline passed while waiting for a PostgreSQL connection");
    job_fail(p, j, EB_ERR_TIMEOUT, msg);
}

/* ---- public ----------------------------------------------------------------------------- */

void eb_pgpool_options_default(eb_pgpool_options *o)
{
    *o = (eb_pgpool_options){
        .conninfo = NULL,
        .connections = 4,
        .statement_timeout_ms = 5000,
        .query_timeout_ms = 0, /* statement_timeout + 2000 */
        .connect_timeout_ms = 3000,
        .backoff_min_ms = 100,
        .backoff_max_ms = 5000,
        .max_queue = 1024,
        .pipeline_depth = 8,
        .application_name = "embrokerd",
    };
}

eb_pgpool *eb_pgpool_new(eb_loop *loop, const eb_pgpool_options *options, char *err,
                         size_t err_len)
{
    if (!loop || !options || !options->conninfo) {
        eb_set_err(err, err_len, "PostgreSQL pool: no connection string configured");
        return NULL;
    }
    char *perr = NULL;
    PQconninfoOption *parsed = PQconninfoParse(options->conninfo, &perr);
    if (!parsed) {
        eb_set_err(err, err_len, "PostgreSQL connection string \"%s\" is invalid: %s",
                   options->conninfo, perr ? perr : "out of memory");
        PQfreemem(perr);
        return NULL;
    }
    eb_pgpool *p = calloc(1, sizeof *p);
    if (!p) {
        PQconninfoFree(parsed);
        eb_set_err(err, err_len, "out of memory");
        return NULL;
    }
    const char *host = NULL, *hostaddr = NULL, *port = NULL;
    for (PQconninfoOption *o = parsed; o->keyword; o++) {
        if (!o->val || !*o->val)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
    }
    snprintf(p->server, sizeof p->server, "%s:%s",
             hostaddr ? hostaddr : host ? host : getenv("PGHOST") ? getenv("PGHOST") : "localhost",
             port ? port : getenv("PGPORT") ? getenv("PGPORT") : "5432");
    PQconninfoFree(parsed);

    p->loop = loop;
    p->opt = *options;
    eb_pgpool_options def;
    eb_pgpool_options_default(&def);
    if (!p->opt.connections)
        p->opt.connections = def.connections;
    if (!p->opt.query_timeout_ms)
        p->opt.query_timeout_ms = p->opt.statement_timeout_ms
                                      ? p->opt.statement_timeout_ms + 2000
                                      : 30000;
    if (!p->opt.connect_timeout_ms)
        p->opt.connect_timeout_ms = def.connect_timeout_ms;
    if (!p->opt.backoff_min_ms)
        p->opt.backoff_min_ms = def.backoff_min_ms;
    if (p->opt.backoff_max_ms < p->opt.backoff_min_ms)
        p->opt.backoff_max_ms =
            p->opt.backoff_min_ms > def.backoff_max_ms ? p->opt.backoff_min_ms : def.backoff_max_ms;
    if (!p->opt.max_queue)
        p->opt.max_queue = def.max_queue;
    if (!p->opt.pipeline_depth)
        p->opt.pipeline_depth = def.pipeline_depth;
    p->conninfo = strdup(options->conninfo);
    p->app_name = strdup(options->application_name ? options->application_name
                                                   : def.application_name);
    p->conns = calloc(p->opt.connections, sizeof *p->conns);
    p->setup_sql = options->setup_sql && *options->setup_sql ? strdup(options->setup_sql) : NULL;
    if (!p->conninfo || !p->app_name || !p->conns ||
        (options->setup_sql && *options->setup_sql && !p->setup_sql)) {
        free(p->setup_sql);
        free(p->conninfo);
        free(p->app_name);
        free(p->conns);
        free(p);
        eb_set_err(err, err_len, "out of memory");
        return NULL;
    }
    p->opt.conninfo = p->conninfo;
    p->opt.application_name = p->app_name;
    p->opt.setup_sql = p->setup_sql;
    for (uint32_t i = 0; i < p->opt.connections; i++) {
        pg_conn *c = &p->conns[i];
        c->pool = p;
        c->index = i;
        c->fd = -1;
        c->backoff_ms = p->opt.backoff_min_ms;
        eb_loop_timer_init(&c->timer, conn_timer, c);
    }
    eb_loop_timer_init(&p->kick, on_kick, p);
    p->stats.connections = p->opt.connections;
    return p;
}

eb_status eb_pgpool_add_statement(eb_pgpool *p, const char *name, const char *sql)
{
    if (!p || !name || !*name || !sql || !*sql || p->started)
        return EB_ERR_INVALID;
    for (size_t i = 0; i < p->n_stmts; i++)
        if (strcmp(p->stmts[i].name, name) == 0)
            return EB_ERR_INVALID;
    pg_stmt *s = realloc(p->stmts, (p->n_stmts + 1) * sizeof *s);
    if (!s)
        return EB_ERR_NOMEM;
    p->stmts = s;
    s[p->n_stmts].name = strdup(name);
    s[p->n_stmts].sql = strdup(sql);
    if (!s[p->n_stmts].name || !s[p->n_stmts].sql) {
        free(s[p->n_stmts].name);
        free(s[p->n_stmts].sql);
        return EB_ERR_NOMEM;
    }
    p->n_stmts++;
    return EB_OK;
}

eb_status eb_pgpool_start(eb_pgpool *p)
{
    if (!p || p->started)
        return EB_ERR_INVALID;
    p->started = true;
    for (uint32_t i = 0; i < p->opt.connections; i++)
        conn_start(&p->conns[i]);
    return EB_OK;
}

void eb_pgpool_destroy(eb_pgpool **pool)
{
    if (!pool || !*pool)
        return;
    eb_pgpool *p = *pool;
    p->destroying = true;
    eb_loop_timer_stop(p->loop, &p->kick);
    for (uint32_t i = 0; i < p->opt.connections; i++) {
        pg_conn *c = &p->conns[i];
        job_list failed = c->inflight;
        c->inflight = (job_list){0};
        conn_close(c);
        while (failed.head) {
            eb_pgjob *j = failed.head;
            failed.head = j->next;
            j->conn = NULL;
            if (j->kind == JOB_USER)
                job_fail(p, j, EB_ERR_SHUTDOWN, "PostgreSQL pool shut down");
            else
                job_destroy(j);
        }
    }
    job_list *qs[2] = {&p->q_inter, &p->q_bulk};
    for (int q = 0; q < 2; q++) {
        eb_pgjob *j;
        while ((j = list_pop(qs[q])) != NULL)
            job_fail(p, j, EB_ERR_SHUTDOWN, "PostgreSQL pool shut down");
    }
    for (size_t i = 0; i < p->n_stmts; i++) {
        free(p->stmts[i].name);
        free(p->stmts[i].sql);
    }
    free(p->stmts);
    free(p->conns);
    free(p->conninfo);
    free(p->app_name);
    free(p->setup_sql);
    free(p);
    *pool = NULL;
}

eb_pgjob *eb_pgjob_new(eb_pgpool_fn fn, void *arg)
{
    eb_pgjob *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->fn = fn;
    j->arg = arg;
    j->kind = JOB_USER;
    j->result_step = SIZE_MAX;
    eb_loop_timer_init(&j->deadline, on_job_deadline, j);
    return j;
}

void eb_pgjob_free(eb_pgjob **job)
{
    if (!job || !*job)
        return;
    job_destroy(*job);
    *job = NULL;
}

eb_status eb_pgjob_add_sql(eb_pgjob *j, const char *sql)
{
    if (!j || !sql || !*sql)
        return EB_ERR_INVALID;
    pg_step *s = job_new_step(j);
    if (!s)
        return EB_ERR_NOMEM;
    s->kind = STEP_SQL;
    s->text = strdup(sql);
    if (!s->text)
        return EB_ERR_NOMEM;
    j->n_steps++;
    return EB_OK;
}

static eb_status add_param_step(eb_pgjob *j, step_kind kind, const char *text, int n_params,
                                const char *const *values, const int *lengths,
                                const int *formats, int result_format)
{
    if (!j || !text || !*text || n_params < 0 || n_params > 65535)
        return EB_ERR_INVALID;
    pg_step *s = job_new_step(j);
    if (!s)
        return EB_ERR_NOMEM;
    s->kind = kind;
    s->result_format = result_format ? 1 : 0;
    s->text = strdup(text);
    if (!s->text || step_copy_params(s, n_params, values, lengths, formats) != EB_OK) {
        free_step(s);
        return EB_ERR_NOMEM;
    }
    j->result_step = j->n_steps;
    j->n_steps++;
    return EB_OK;
}

eb_status eb_pgjob_add_prepared(eb_pgjob *j, const char *name, int n_params,
                                const char *const *values, const int *lengths,
                                const int *formats, int result_format)
{
    return add_param_step(j, STEP_PREPARED, name, n_params, values, lengths, formats,
                          result_format);
}

eb_status eb_pgjob_add_params(eb_pgjob *j, const char *sql, int n_params,
                              const char *const *values, const int *lengths, const int *formats,
                              int result_format)
{
    return add_param_step(j, STEP_PARAMS, sql, n_params, values, lengths, formats,
                          result_format);
}

eb_status eb_pgjob_set_result_step(eb_pgjob *j, size_t index)
{
    if (!j || index >= j->n_steps)
        return EB_ERR_INVALID;
    j->result_step = index;
    return EB_OK;
}

eb_status eb_pgjob_set_deadline(eb_pgjob *j, int64_t deadline_us)
{
    if (!j || deadline_us < 0)
        return EB_ERR_INVALID;
    j->user_deadline_us = deadline_us;
    return EB_OK;
}

size_t eb_pgjob_steps(const eb_pgjob *j)
{
    return j ? j->n_steps : 0;
}

eb_status eb_pgpool_submit(eb_pgpool *p, eb_pgjob *j, unsigned flags)
{
    if (!p || !j || j->n_steps == 0 || j->kind != JOB_USER) {
        job_destroy(j);
        return EB_ERR_INVALID;
    }
    if (p->destroying) {
        job_destroy(j);
        return EB_ERR_SHUTDOWN;
    }
    if (pool_refusing(p)) {
        job_destroy(j);
        return EB_ERR_UNAVAILABLE;
    }
    if (p->q_inter.count + p->q_bulk.count >= p->opt.max_queue) {
        job_destroy(j);
        return EB_ERR_BUSY;
    }
    if (j->result_step == SIZE_MAX)
        j->result_step = j->n_steps - 1;
    j->flags = flags;
    j->pool = p;
    j->status = EB_OK;
    list_push(flags & EB_PGJOB_BULK ? &p->q_bulk : &p->q_inter, j);
    j->hard_deadline_us = eb_now_us() + (int64_t)p->opt.query_timeout_ms * 1000;
    int64_t first = j->hard_deadline_us;
    if (j->user_deadline_us > 0 && j->user_deadline_us < first)
        first = j->user_deadline_us;
    eb_loop_timer_start(p->loop, &j->deadline, first);
    p->stats.submitted++;
    kick(p);
    return EB_OK;
}

eb_status eb_pgpool_query(eb_pgpool *p, const char *sql, eb_pgpool_fn fn, void *arg)
{
    eb_pgjob *j = eb_pgjob_new(fn, arg);
    if (!j)
        return EB_ERR_NOMEM;
    eb_status st = eb_pgjob_add_sql(j, sql);
    if (st != EB_OK) {
        job_destroy(j);
        return st;
    }
    return eb_pgpool_submit(p, j, 0);
}

bool eb_pgpool_is_up(const eb_pgpool *p)
{
    return p && count_ready(p) > 0;
}

void eb_pgpool_get_stats(const eb_pgpool *p, eb_pgpool_stats *s)
{
    *s = p->stats;
    s->connected = count_ready(p);
    s->busy = 0;
    for (uint32_t i = 0; i < p->opt.connections; i++)
        s->busy += p->conns[i].inflight.count > 0;
    s->queued = p->q_inter.count + p->q_bulk.count;
    s->up = s->connected > 0;
}

const char *eb_pgpool_server(const eb_pgpool *p)
{
    return p->server;
}

eb_status eb_pgpool_status_of_sqlstate(const char *sqlstate)
{
    return map_sqlstate(sqlstate);
}
