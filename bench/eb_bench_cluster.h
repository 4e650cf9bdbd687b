/* eb_bench_cluster — an embrokerd and its workers started by a benchmark in a private run
 * directory, and stopped by it: the serving path under test, built from the programs next to
 * embroker-bench. Each scenario says which models the workers load and how large their batches
 * may grow; the cluster waits until a real request succeeds before it counts as started, so no
 * benchmark times a worker still loading its weights. */
#ifndef EB_BENCH_CLUSTER_H
#define EB_BENCH_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define EB_CLUSTER_MAX_WORKERS 16

typedef struct eb_cluster_options {
    const char *bin_dir;     /* where embrokerd and embroker-worker are */
    const char *run_dir;     /* private run directory (exists; the caller removes it) */
    int workers;             /* embroker-worker processes (0..EB_CLUSTER_MAX_WORKERS; 0: the
                                broker alone, started once its socket exists) */
    const char *models;      /* worker --models, e.g. "identity,identity-text" or "siglip" */
    const char *worker_args; /* more worker flags, split on spaces (e.g. "--siglip-dir D"), or
                                NULL */
    int max_batch;           /* worker --max-batch-items and the identity/siglip batch limits
                                (0: the models' defaults) */
    int queue_limit;         /* broker --queue-limit (0: the broker's default) */
    const char *broker_args; /* more broker flags, split on spaces (e.g. "--db-url URL"), or
                                NULL */
    const char *ready_model; /* model a readiness request is sent to (default "identity") */
    bool ready_text;         /* the readiness request is a text, not a 2x2 image */
    int ready_timeout_ms;    /* give up waiting after this long (default 60000) */
} eb_cluster_options;

typedef struct eb_cluster {
    pid_t broker_pid;
    pid_t worker_pids[EB_CLUSTER_MAX_WORKERS];
    int workers;
    char run_dir[1024];
    char log_path[1100]; /* broker and worker output, appended */
} eb_cluster;

/* Start the broker and opt->workers workers, then wait until a request to ready_model succeeds.
 * Returns 0, or -1 with a message on stderr naming the log file (everything started is
 * stopped again). */
int eb_cluster_start(eb_cluster *cluster, const eb_cluster_options *opt);

/* Start one more worker with the same flags (the cold-start benchmark uses it). Returns its pid,
 * or -1. It is stopped by eb_cluster_stop unless the caller stops it first with
 * eb_cluster_stop_worker. */
pid_t eb_cluster_spawn_worker(eb_cluster *cluster, const eb_cluster_options *opt);

/* Stop the cluster's worker `pid` (as eb_cluster_stop_pid) and forget it. */
void eb_cluster_stop_worker(eb_cluster *cluster, pid_t pid);

/* fork + execv argv[0] with stdout and stderr appended to log_path; returns the pid, or -1.
 * The one process starter of the benchmarks. */
pid_t eb_cluster_spawn(char *const argv[], const char *log_path);

/* SIGTERM one process, SIGKILL after 2 s, reap it, set *pid to 0. NULL/0-safe. */
void eb_cluster_stop_pid(pid_t *pid);

/* Stop every worker, then the broker. Safe to call twice. */
void eb_cluster_stop(eb_cluster *cluster);

#endif
