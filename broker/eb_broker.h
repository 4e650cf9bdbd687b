/* eb_broker — embrokerd's state and message handling: clients in, batches out, replies back.
 *
 * One eb_broker owns the ZMQ sockets (frontend ROUTERs for clients on ipc:// and optionally
 * tcp://, backend ROUTERs for workers likewise), the registries (eb_clients, eb_workers), the
 * per-model queues (eb_queue) and an event loop (eb_loop). Every received message is decoded
 * and validated by the codec (eb_frames/eb_proto) before anything looks at it; a malformed one
 * gets an error REPLY when it names a request and can be routed, and is otherwise dropped and
 * logged. Nothing blocks: sends use ZMQ_DONTWAIT with ZMQ_ROUTER_MANDATORY, and a peer that
 * cannot take a message loses it (and, for a worker, is declared lost).
 *
 * Request path (docs/operations.md has the operator's view, docs/protocol.md the wire):
 *   REQUEST -> validate (model, op, inputs, queue room; then each shm reference against the
 *   client's registered segments, failing only its own input) -> [cache lookup slots in here] -> one item per input in the model's queue
 *   (interactive or bulk; BUSY past queue_limit) -> a worker with credit gets up to
 *   min(credit, its batch size) items as one REQUEST (inline frames forwarded without copying
 *   the bytes) -> worker REPLY -> when every item of the request is done, one REPLY to the
 *   client, in input order. Deadlines are relative (options.deadline_ms, default
 *   default_deadline_ms): expired items are answered EB_ERR_DEADLINE and never sent.
 *
 * Not thread-safe: everything runs on the loop's thread.
 */
#ifndef EB_BROKER_H
#define EB_BROKER_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "eb_config.h"
#include "eb_loop.h"
#include "eb_proto.h"
#include "eb_services.h"
#include "eb_status.h"

struct eb_supervisor;

/* Settings (config keys in docs/operations.md). */
typedef struct eb_broker_options {
    char run_dir[PATH_MAX];      /* run_dir: created 0700; holds the ipc sockets and the lock */
    char frontend_ipc[PATH_MAX + 32]; /* derived: ipc://<run_dir>/frontend.sock */
    char backend_ipc[PATH_MAX + 32];  /* derived: ipc://<run_dir>/backend.sock */
    char frontend_tcp[256];      /* frontend_tcp: optional tcp:// endpoint for clients */
    char backend_tcp[256];       /* backend_tcp: optional tcp:// endpoint for workers */
    int64_t heartbeat_interval_ms; /* heartbeat_interval_ms: 1000 */
    int64_t client_timeout_ms;     /* client_timeout_ms: 3 x heartbeat_interval_ms */
    int64_t default_deadline_ms;   /* default_deadline_ms: 60000 */
    int64_t shutdown_grace_ms;     /* shutdown_grace_ms: 5000 */
    int64_t unknown_model_wait_ms; /* unknown_model_wait_ms: 10000 (see docs/operations.md) */
    uint32_t queue_limit;          /* queue_limit: items per model and class, 1024 */
    uint32_t bulk_inflight_batches; /* bulk_inflight_batches: a worker gets bulk items only
                                       while it has fewer batches in flight than this (1), so
                                       an interactive request never queues behind more than
                                       one bulk forward inside a worker */
    uint32_t bulk_max_batch;       /* bulk_max_batch: bulk items per batch; 0 (default) = 1
                                      for CPU workers (batching gains them ~6 % while one
                                      bulk forward of 8 images would hold a scan for seconds),
                                      the worker's max batch otherwise */
    uint32_t max_models;           /* max_models of the protocol limits */
    eb_proto_limits limits;        /* max_* keys (eb_proto_limits_from_config) */
    /* quick scan (docs/search.md) */
    char scan_image_model[EB_PROTO_MODEL_NAME_MAX + 1]; /* scan_image_model: "siglip" */
    char scan_text_model[EB_PROTO_MODEL_NAME_MAX + 1];  /* scan_text_model: "" = none (text
                                                           inputs of scan then need a model) */
    double image_weight, text_weight; /* image_weight/text_weight of stored rows: 1.0 each */
    char catalogue_source[EB_PROTO_ID_MAX + 1]; /* catalogue_source_type: "catalogue" (scan's
                                                   default filter, store's default) */
    char scan_source[EB_PROTO_ID_MAX + 1];      /* scan_source_type: "scan" (stored scans) */
    eb_services_options services;  /* cache_url, db_url, spool_dir, … (eb_services.h) */
} eb_broker_options;

typedef struct eb_broker eb_broker;

/* Fill options from cfg (defaults for unset keys). EB_ERR_INVALID with the key, the value and
 * the accepted range in err for a malformed value. */
eb_status eb_broker_options_load(const eb_config *cfg, eb_broker_options *options, char *err,
                                 size_t err_len);

/* Create the run dir (0700; refuse one owned by another uid or open to group/others), take its
 * lock (refuse when another embrokerd holds it), remove leftover segments of dead clients, bind
 * the sockets and draw the instance id. NULL with a reason in err on any failure. */
eb_broker *eb_broker_new(const eb_broker_options *options, char *err, size_t err_len);

/* Close sockets, free everything; sets *broker to NULL. NULL-safe. */
void eb_broker_destroy(eb_broker **broker);

/* The broker's loop (the supervisor and, later, Redis/libpq register fds and timers in it). */
eb_loop *eb_broker_loop(eb_broker *broker);

/* Attach a supervisor (not owned): SIGCHLD is forwarded to it, its children's exits count as
 * worker deaths, and shutdown stops it. */
void eb_broker_set_supervisor(eb_broker *broker, struct eb_supervisor *sup);

/* Run until shut down (SIGTERM/SIGINT, caught by handlers that eb_broker_new installs and
 * that wake the loop through a self-pipe, or eb_broker_shutdown). EB_OK after a graceful shutdown; EB_ERR_IO
 * when the loop fails. */
eb_status eb_broker_run(eb_broker *broker);

/* Begin a graceful shutdown: new requests get EB_ERR_SHUTDOWN, in-flight work has
 * shutdown_grace_ms to finish, the rest is answered EB_ERR_SHUTDOWN, workers get DISCONNECT,
 * then eb_broker_run returns. */
void eb_broker_shutdown(eb_broker *broker);

/* A child process exited (supervisor): the worker it ran, if registered, is lost now. */
void eb_broker_worker_exited(eb_broker *broker, pid_t pid);

/* The random instance id carried in every message the broker sends. */
uint64_t eb_broker_instance_id(const eb_broker *broker);

/* The health map (docs/operations.md, "Health") as msgpack into *out (malloc'ed; free with
 * eb_proto_buf_free). EB_ERR_NOMEM. */
eb_status eb_broker_health(eb_broker *broker, eb_proto_buf *out);

#endif
