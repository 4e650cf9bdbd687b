/* eb_supervisor — embrokerd's supervisor mode: start N workers and restart any that exit.
 *
 *   embrokerd --workers 2 --worker-cmd build/bin/embroker-worker --worker-args "--model identity"
 *
 * Each child is fork+exec'ed with the broker's endpoint and heartbeat interval in its
 * environment (EMBROKER_BROKER, EMBROKER_RUN_DIR, EMBROKER_HEARTBEAT_INTERVAL_MS,
 * EMBROKER_WORKER_INDEX; flags in --worker-args override them). A child that exits is restarted
 * after a delay that doubles from 100 ms to 5 s; the delay resets once a child has run for 30 s.
 * Exits are noticed through SIGCHLD, which the broker reads from its signal self-pipe and passes to
 * eb_supervisor_reap; restarts are loop timers, so nothing here blocks except
 * eb_supervisor_stop at shutdown.
 *
 * Not thread-safe; one supervisor per process.
 */
#ifndef EB_SUPERVISOR_H
#define EB_SUPERVISOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "eb_loop.h"
#include "eb_status.h"

typedef struct eb_supervisor eb_supervisor;

typedef struct eb_supervisor_options {
    int n_workers;               /* >= 1 */
    const char *worker_cmd;      /* program path */
    const char *worker_args;     /* extra arguments, split on blanks ('…' and "…" quote) */
    const char *run_dir;         /* exported as EMBROKER_RUN_DIR */
    const char *broker_endpoint; /* exported as EMBROKER_BROKER */
    int64_t heartbeat_interval_ms;
} eb_supervisor_options;

/* Called for each child that exited (status as from waitpid). */
typedef void (*eb_supervisor_exit_fn)(pid_t pid, int status, void *arg);

/* A supervisor for options (strings copied). NULL with a reason in err when the arguments do
 * not parse or memory runs out. Starts nothing. */
eb_supervisor *eb_supervisor_new(eb_loop *loop, const eb_supervisor_options *options,
                                 char *err, size_t err_len);

/* Start every worker now. EB_ERR_IO when fork fails (the failed ones are retried later). */
eb_status eb_supervisor_start(eb_supervisor *sup);

/* Reap exited children (waitpid WNOHANG), call on_exit for each of ours, schedule restarts
 * unless stopping. Call on SIGCHLD. */
void eb_supervisor_reap(eb_supervisor *sup, eb_supervisor_exit_fn on_exit, void *arg);

/* True when pid is one of the running children. */
bool eb_supervisor_owns(const eb_supervisor *sup, pid_t pid);

/* Stop restarting; SIGTERM every child, wait up to grace_ms for them, SIGKILL the rest and reap
 * them. Blocks (shutdown only). */
void eb_supervisor_stop(eb_supervisor *sup, int64_t grace_ms);

/* Children running now, and restarts so far (for health). */
int eb_supervisor_running(const eb_supervisor *sup);
uint64_t eb_supervisor_restarts(const eb_supervisor *sup);

/* Free (call eb_supervisor_stop first); sets *sup to NULL. NULL-safe. */
void eb_supervisor_destroy(eb_supervisor **sup);

#endif
