/* eb_pgpool — a pool of non-blocking libpq connections inside the broker's event loop.
 *
 * Work is submitted as jobs: a short sequence of statements (steps) sent in libpq pipeline
 * mode on ONE connection, followed by one Sync, so "BEGIN; SET LOCAL ...; SELECT ...; COMMIT"
 * costs one round trip and never interleaves with another job. The callback receives the result
 * of one designated step (by default the last prepared/parameterised step) or the first error.
 *
 * Connections are opened with PQconnectStartParams/PQconnectPoll driven by the loop (no
 * blocking call on the loop, including connect; give a numeric host or a unix socket path:
 * name resolution inside PQconnectStart would block), put in non-blocking pipeline mode, and
 * set up before use with one pipeline: SET statement_timeout, then PQsendPrepare of every
 * registered statement. A connection that breaks or fails setup is closed and reopened with
 * exponential backoff; jobs in flight on it fail with EB_ERR_UNAVAILABLE.
 *
 * Scheduling: two bounded FIFOs. Interactive jobs (searches) go first and run alone on a
 * connection. Bulk jobs (EB_PGJOB_BULK: stores, deletes) may be pipelined up to
 * `pipeline_depth` per connection, each with its own Sync (its own implicit transaction, so one
 * failing store does not affect its neighbours), and never occupy every connection when there
 * are several, so a search always finds one free soon. Bulk jobs must not use explicit
 * transactions.
 *
 * Deadlines: the server enforces statement_timeout (→ EB_ERR_TIMEOUT); a client-side deadline
 * (query_timeout_ms from submit, queue time included) covers a server that stopped answering:
 * the job gets EB_ERR_TIMEOUT and its connection is reset.
 *
 * Callbacks are never called from inside eb_pgpool_submit: EB_OK means the callback will be
 * called exactly once later, from the loop; an error return means it never is. Not thread-safe.
 */
#ifndef EB_PGPOOL_H
#define EB_PGPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "eb_loop.h"
#include "eb_status.h"

typedef struct eb_pgpool eb_pgpool;
typedef struct eb_pgjob eb_pgjob;

typedef struct eb_pgpool_options {
    const char *conninfo;          /* URL or "key=value" string (copied) */
    uint32_t connections;          /* default 4 */
    uint32_t statement_timeout_ms; /* SET statement_timeout per connection; default 5000 */
    uint32_t query_timeout_ms;     /* client deadline per job from submit; default
                                    * statement_timeout + 2000 */
    uint32_t connect_timeout_ms;   /* connect + setup; default 3000 */
    uint32_t backoff_min_ms;       /* first reconnect delay; default 100 */
    uint32_t backoff_max_ms;       /* cap of the doubling delay; default 5000 */
    uint32_t max_queue;            /* queued jobs (both classes); default 1024 */
    uint32_t pipeline_depth;       /* bulk jobs in flight per connection; default 8 */
    const char *application_name;  /* default "embrokerd" */
    const char *setup_sql;         /* optional parameterless statement run on each new
                                    * connection after SET statement_timeout (copied), e.g.
                                    * "SET hnsw.ef_search = 100"; one statement only */
} eb_pgpool_options;

typedef struct eb_pgpool_stats {
    uint32_t connections;        /* configured */
    uint32_t connected;          /* set up and usable */
    uint32_t busy;               /* connections with work in flight */
    uint32_t queued;             /* jobs waiting for a connection */
    uint32_t inflight;           /* jobs sent, not yet answered */
    uint64_t submitted, completed, failed, timeouts;
    uint64_t connects, connect_failures, disconnects;
    bool up;                     /* at least one connection usable */
    char last_error[256];        /* empty when none yet */
} eb_pgpool_stats;

/* Job outcome. EB_OK: `result` is the designated step's result (PGRES_TUPLES_OK or
 * PGRES_COMMAND_OK), owned by the pool and cleared after the callback returns; error is NULL.
 * Otherwise result is NULL and error says what failed:
 *   EB_ERR_TIMEOUT      statement_timeout (SQLSTATE 57014) or the client deadline
 *   EB_ERR_UNAVAILABLE  no usable connection, or the connection broke under the job
 *   EB_ERR_INVALID      the server rejected the data (SQLSTATE classes 22, 23, 42)
 *   EB_ERR_IO           any other server error
 *   EB_ERR_SHUTDOWN     the pool was destroyed */
typedef void (*eb_pgpool_fn)(void *arg, eb_status status, const PGresult *result,
                             const char *error);

enum {
    EB_PGJOB_BULK = 1u << 0, /* low priority, pipelinable (no explicit transaction) */
};

/* Defaults listed above (conninfo NULL). */
void eb_pgpool_options_default(eb_pgpool_options *options);

/* A pool (not connecting yet: register statements, then eb_pgpool_start). NULL with a reason
 * in err for bad options or out of memory. The loop must outlive the pool. */
eb_pgpool *eb_pgpool_new(eb_loop *loop, const eb_pgpool_options *options, char *err,
                         size_t err_len);

/* Register a statement every connection prepares before use (name and sql copied; parameter
 * types inferred by the server, so cast parameters in the SQL where needed). Only before
 * eb_pgpool_start. EB_ERR_INVALID for a duplicate or empty name. */
eb_status eb_pgpool_add_statement(eb_pgpool *pool, const char *name, const char *sql);

/* Start connecting every connection. Jobs submitted before the first connection attempt
 * finishes are queued; afterwards, while no connection is usable, submit fails fast. */
eb_status eb_pgpool_start(eb_pgpool *pool);

/* Close every connection and free the pool; callbacks of queued and in-flight jobs are called
 * with EB_ERR_SHUTDOWN. Not from inside a pool callback. Sets *pool to NULL; NULL-safe. */
void eb_pgpool_destroy(eb_pgpool **pool);

/* ---- jobs ------------------------------------------------------------------------------- */

/* A new empty job whose outcome goes to fn(arg). NULL when out of memory. */
eb_pgjob *eb_pgjob_new(eb_pgpool_fn fn, void *arg);

/* Free a job that was never submitted; sets *job to NULL; NULL-safe. */
void eb_pgjob_free(eb_pgjob **job);

/* Append a parameterless statement (text protocol result), e.g. "BEGIN". sql copied. */
eb_status eb_pgjob_add_sql(eb_pgjob *job, const char *sql);

/* Append an execution of prepared statement `name` with n_params parameters (values copied;
 * lengths used for binary ones; formats NULL = all text; result_format 0 text, 1 binary).
 * It becomes the designated step. */
eb_status eb_pgjob_add_prepared(eb_pgjob *job, const char *name, int n_params,
                                const char *const *values, const int *lengths,
                                const int *formats, int result_format);

/* Append an unnamed parameterised statement (like PQsendQueryParams); becomes designated. */
eb_status eb_pgjob_add_params(eb_pgjob *job, const char *sql, int n_params,
                              const char *const *values, const int *lengths, const int *formats,
                              int result_format);

/* Make step `index` (0-based, in order of addition) the designated one. */
eb_status eb_pgjob_set_result_step(eb_pgjob *job, size_t index);

/* The caller's deadline (absolute, eb_now_us() scale; 0 = none): when it passes, the callback
 * gets EB_ERR_TIMEOUT at once. A job already running keeps its connection until the statement
 * ends (its result is then dropped) or the pool's query_timeout_ms passes (the connection is
 * then reset), so a short deadline does not cost a reconnect. */
eb_status eb_pgjob_set_deadline(eb_pgjob *job, int64_t deadline_us);

/* Number of steps so far. */
size_t eb_pgjob_steps(const eb_pgjob *job);

/* Queue a job (flags: EB_PGJOB_BULK). Takes ownership of job whatever it returns. EB_OK: the
 * callback will be called once. EB_ERR_UNAVAILABLE when no connection is usable (after the
 * first attempt), EB_ERR_BUSY when the queue is full, EB_ERR_INVALID for an empty job. */
eb_status eb_pgpool_submit(eb_pgpool *pool, eb_pgjob *job, unsigned flags);

/* Convenience: one parameterless statement as an interactive job. */
eb_status eb_pgpool_query(eb_pgpool *pool, const char *sql, eb_pgpool_fn fn, void *arg);

/* ---- health ----------------------------------------------------------------------------- */

/* True while at least one connection is usable. */
bool eb_pgpool_is_up(const eb_pgpool *pool);

void eb_pgpool_get_stats(const eb_pgpool *pool, eb_pgpool_stats *stats);

/* "host:port" of the server as libpq resolved it from conninfo (for messages). Owned by the
 * pool. */
const char *eb_pgpool_server(const eb_pgpool *pool);

/* Map a failed result's SQLSTATE to a status (see eb_pgpool_fn). NULL → EB_ERR_UNAVAILABLE. */
eb_status eb_pgpool_status_of_sqlstate(const char *sqlstate);

#endif
