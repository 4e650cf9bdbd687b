/* eb_worker — the embroker-worker process core: a compute thread that runs the models and serves
 * the connection whenever it is not running one, and an I/O thread that keeps the connection
 * alive while it is.
 *
 *   compute thread                                 I/O thread (the caller of eb_worker_run)
 *   ─────────────────────────────────────────────  ──────────────────────────────────────────────
 *   between forwards it owns the DEALER socket:    wakes 4 times per heartbeat interval; while a
 *   sleeps in zmq_poll, receives REQUESTs, groups  forward runs it owns the socket: receives what
 *   them (take_group), copies shm items (guarded   the broker sent (REQUESTs wait in the queue,
 *   copy) or reads inline frames, hashes every     RELEASE_SEGMENT → segment cache), HEARTBEATs,
 *   input (eb_hash), runs the model (eb_model),    reconnects with backoff when the broker is
 *   sends each REPLY + CREDIT itself, HEARTBEATs   silent for 3 intervals or restarted (new
 *   when idle, READY on every new connection       instance id); watchdog over the forwards
 *
 * A request thus costs one thread wake-up in the worker, not three (eb_worker.c says why), and
 * heartbeats still never wait for a batch.
 *
 * Credit: the worker holds at most `queue_items` items (default 2 × max_batch: one batch running,
 * one waiting). CREDIT is an increment (docs/protocol.md): after READY the worker grants its free
 * capacity, then freed capacity once it reaches a quarter of queue_items, or at once when the
 * broker's credit falls below one batch (also for dropped batches of an older connection, whose
 * slots were withheld from that connection's first grant). Queued jobs for one model run as one
 * forward (up to the model's max batch), so small batches sent eagerly still share a forward. Items beyond
 * the capacity are still accepted and computed, never refused.
 *
 * Failures are per item: a bad shared-memory reference (unknown or released segment, stale
 * epoch, out of bounds, truncated), a wrong input kind or a model error on one input fails that
 * item with its code and message; the rest of the batch is answered normally. A model that fails
 * a whole batch fails every item of it.
 *
 * Watchdog: when one forward runs longer than watchdog_ms, the I/O thread logs it, sends a
 * HEARTBEAT with healthy=false and a DISCONNECT, and eb_worker_run returns EB_ERR_TIMEOUT; the
 * program then exits non-zero at once (the stuck compute thread cannot be joined) so the
 * supervisor restarts it and the broker requeues the batch.
 */
#ifndef EB_WORKER_H
#define EB_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_config.h"
#include "eb_model.h"
#include "eb_proto.h"
#include "eb_status.h"

typedef struct eb_worker eb_worker;

typedef struct eb_worker_options {
    const char *endpoint;          /* backend endpoint, e.g. "ipc:///run/embroker/backend.sock";
                                      copied */
    const char *worker_id;         /* unique name; NULL = "<hostname>:<pid>"; copied */
    int heartbeat_interval_ms;     /* default 1000 */
    int watchdog_ms;               /* default 60000 */
    uint32_t max_batch_items;      /* READY max_batch; 0 = smallest max_batch_items of the models */
    uint32_t queue_items;          /* items held at once; 0 = 2 × max_batch_items */
    int reconnect_max_ms;          /* reconnect backoff ceiling, default 2000 */
    int canary_interval_ms;        /* rerun every model's canary this often when idle (and at most
                                      this often under load); 0 = never; default 300000 */
    double canary_tolerance;       /* relative L2 a canary may move; default 1e-5 */
    eb_proto_limits limits;        /* decode limits (eb_proto_limits_default) */
} eb_worker_options;

/* Counters, readable at any time (a snapshot). */
typedef struct eb_worker_stats {
    uint64_t batches;        /* batches computed */
    uint64_t items;          /* items computed (ok + failed) */
    uint64_t items_failed;   /* items answered with an error */
    uint64_t replies_dropped;/* results of batches from a previous broker connection */
    uint64_t reconnects;     /* new connections after the first */
    uint64_t segments_mapped;/* segments currently in the cache */
    uint64_t bad_messages;   /* malformed messages from the broker, dropped */
    uint64_t canary_checks;  /* canary runs after the first (recording) one */
    uint64_t canary_failures;/* runs whose vector moved: the worker then reports unhealthy */
} eb_worker_stats;

/* Defaults for every field (endpoint NULL). */
void eb_worker_options_default(eb_worker_options *opt);

/* Fill options from config keys broker (or run_dir → ipc://<run_dir>/backend.sock), worker_id,
 * heartbeat_interval_ms, watchdog_ms, max_batch_items, worker_queue_items, canary_interval_ms,
 * canary_tolerance (a number, e.g. 1e-5), plus the protocol
 * limits. Strings point into cfg (keep cfg alive until eb_worker_new). EB_ERR_INVALID with the
 * reason in err for a malformed value. */
eb_status eb_worker_options_from_config(const eb_config *cfg, eb_worker_options *opt,
                                        char *endpoint_buf, size_t endpoint_cap, char *err,
                                        size_t err_len);

/* The default run directory: $EMBROKER_RUN_DIR, else $XDG_RUNTIME_DIR/embroker, else
 * /tmp/embroker-<uid>; written into buf. Shared with the client library's rule. */
void eb_worker_default_run_dir(char *buf, size_t cap);

/* A worker serving `models` (n_models >= 1, names distinct). Takes ownership of the models array
 * entries (destroyed by eb_worker_destroy; the array itself stays the caller's). NULL on failure
 * with the reason in err (models are then NOT consumed). Nothing connects until eb_worker_run. */
eb_worker *eb_worker_new(const eb_worker_options *opt, eb_model **models, size_t n_models,
                         char *err, size_t err_len);

/* Run until eb_worker_stop (returns EB_OK after sending DISCONNECT) or the watchdog fires
 * (EB_ERR_TIMEOUT: exit the process non-zero without destroying the worker). EB_ERR_IO when the
 * ZMQ context or socket cannot be created. Runs the I/O loop on the calling thread and starts
 * the compute thread. */
eb_status eb_worker_run(eb_worker *w);

/* Ask eb_worker_run to return. Async-signal-safe; callable from any thread. */
void eb_worker_stop(eb_worker *w);

/* Stop the compute thread, unmap every segment, destroy the models, free; *w = NULL. NULL-safe.
 * Only after eb_worker_run returned EB_OK (or was never called). */
void eb_worker_destroy(eb_worker **w);

void eb_worker_get_stats(const eb_worker *w, eb_worker_stats *stats);

#endif
