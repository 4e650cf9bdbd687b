/* eb_bench_cluster — embrokerd plus N embroker-worker processes for one benchmark scenario.
 *
 * The processes are plain fork/exec children whose output goes to one log file in the run
 * directory; the cluster is "started" only once a real request has been answered, which is the
 * moment a user of a warm deployment sees. Stopping is SIGTERM, then SIGKILL after 2 s. */
#include "eb_bench_cluster.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "eb_clock.h"
#include "embroker.h"

#define MAX_ARGS 64

pid_t eb_cluster_spawn(char *const argv[], const char *log_path)
{
    pid_t pid = fork();
    if (pid == 0) {
        FILE *log = fopen(log_path, "a");
        if (log) {
            dup2(fileno(log), STDOUT_FILENO);
            dup2(fileno(log), STDERR_FILENO);
        }
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

/* Build the worker's argv in `storage` (split worker_args on spaces). */
static void worker_argv(const eb_cluster_options *opt, const char *run_dir, char *storage,
                        size_t storage_len, char *argv[MAX_ARGS])
{
    int n = 0;
    size_t used = 0;
#define ADD(str)                                                                                   \
    do {                                                                                           \
        int w_ = snprintf(storage + used, storage_len - used, "%s", (str));                        \
        if (w_ < 0 || (size_t)w_ >= storage_len - used || n >= MAX_ARGS - 1)                       \
            break;                                                                                 \
        argv[n++] = storage + used;                                                                \
        used += (size_t)w_ + 1;                                                                    \
    } while (0)
    char path[1100], batch[32];
    snprintf(path, sizeof path, "%s/embroker-worker", opt->bin_dir);
    ADD(path);
    ADD("--run-dir");
    ADD(run_dir);
    ADD("--models");
    ADD(opt->models ? opt->models : "identity");
    ADD("--log-level");
    ADD("warn");
    if (opt->max_batch > 0) {
        snprintf(batch, sizeof batch, "%d", opt->max_batch);
        ADD("--max-batch-items");
        ADD(batch);
        ADD("--identity-max-batch");
        ADD(batch);
        ADD("--siglip-max-batch");
        ADD(batch);
    }
    if (opt->worker_args) {
        char copy[2048];
        snprintf(copy, sizeof copy, "%s", opt->worker_args);
        char *save = NULL;
        for (char *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save))
            ADD(tok);
    }
#undef ADD
    argv[n] = NULL;
}

static bool ready(const eb_cluster *c, const eb_cluster_options *opt)
{
    embroker_options_t eo;
    embroker_options_default(&eo);
    eo.run_dir = c->run_dir;
    eo.timeout_ms = 2000;
    eo.connect_timeout_ms = 1000;
    embroker_t *eb = NULL;
    char err[512];
    if (embroker_connect(&eo, &eb, err, sizeof err) != EB_OK)
        return false;
    embroker_request_t *req = NULL;
    static const uint8_t pixels[2 * 2 * 3] = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120};
    const char *model = opt->ready_model ? opt->ready_model : "identity";
    eb_status st = opt->ready_text ? embroker_embed_text(eb, model, "ready", &req)
                                   : embroker_embed_raw_rgb8(eb, model, pixels, 2, 2, &req);
    embroker_request_free(&req);
    embroker_close(&eb);
    return st == EB_OK;
}

int eb_cluster_start(eb_cluster *c, const eb_cluster_options *opt)
{
    memset(c, 0, sizeof *c);
    snprintf(c->run_dir, sizeof c->run_dir, "%s", opt->run_dir);
    snprintf(c->log_path, sizeof c->log_path, "%s/cluster.log", opt->run_dir);
    char broker[1100], queue[32];
    snprintf(broker, sizeof broker, "%s/embrokerd", opt->bin_dir);
    snprintf(queue, sizeof queue, "%d", opt->queue_limit > 0 ? opt->queue_limit : 1024);
    char *bargv[MAX_ARGS] = {broker,     "--run-dir",           c->run_dir, "--max-input-bytes",
                             "33554432", "--max-message-bytes", "67108864", "--queue-limit",
                             queue,      "--log-level",         "warn",     NULL};
    int bargc = 11;
    char extra[2048];
    snprintf(extra, sizeof extra, "%s", opt->broker_args ? opt->broker_args : "");
    char *save = NULL;
    for (char *tok = strtok_r(extra, " ", &save); tok && bargc < MAX_ARGS - 1;
         tok = strtok_r(NULL, " ", &save))
        bargv[bargc++] = tok;
    bargv[bargc] = NULL;
    c->broker_pid = eb_cluster_spawn(bargv, c->log_path);
    int workers = opt->workers < 0 ? 0 : opt->workers;
    if (workers > EB_CLUSTER_MAX_WORKERS)
        workers = EB_CLUSTER_MAX_WORKERS;
    for (int i = 0; i < workers; i++)
        if (eb_cluster_spawn_worker(c, opt) < 0)
            break;
    int timeout_ms = opt->ready_timeout_ms > 0 ? opt->ready_timeout_ms : 60000;
    int64_t deadline = eb_now_us() + (int64_t)timeout_ms * 1000;
    char frontend[1200];
    snprintf(frontend, sizeof frontend, "%s/frontend.sock", c->run_dir);
    while (eb_now_us() < deadline) {
        /* without workers nothing can answer: the broker's socket existing is "started" */
        if (workers == 0 ? access(frontend, F_OK) == 0 : ready(c, opt))
            return 0;
        eb_sleep_us(workers == 0 ? 10000 : 50000);
    }
    fprintf(stderr,
            "bench: broker + %d worker(s) (models %s) did not answer within %d ms "
            "(log: %s)\n",
            workers, opt->models ? opt->models : "identity", timeout_ms, c->log_path);
    eb_cluster_stop(c);
    return -1;
}

pid_t eb_cluster_spawn_worker(eb_cluster *c, const eb_cluster_options *opt)
{
    if (c->workers >= EB_CLUSTER_MAX_WORKERS)
        return -1;
    char storage[4096];
    char *argv[MAX_ARGS];
    worker_argv(opt, c->run_dir, storage, sizeof storage, argv);
    pid_t pid = eb_cluster_spawn(argv, c->log_path);
    if (pid > 0)
        c->worker_pids[c->workers++] = pid;
    return pid;
}

void eb_cluster_stop_worker(eb_cluster *c, pid_t pid)
{
    for (int i = 0; i < c->workers; i++)
        if (c->worker_pids[i] == pid) {
            eb_cluster_stop_pid(&c->worker_pids[i]);
            c->worker_pids[i] = c->worker_pids[--c->workers];
            return;
        }
}

void eb_cluster_stop_pid(pid_t *pid)
{
    if (!pid || *pid <= 0)
        return;
    kill(*pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(*pid, NULL, WNOHANG) == *pid) {
            *pid = 0;
            return;
        }
        eb_sleep_us(20000);
    }
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
    *pid = 0;
}

void eb_cluster_stop(eb_cluster *c)
{
    for (int i = 0; i < c->workers; i++)
        eb_cluster_stop_pid(&c->worker_pids[i]);
    c->workers = 0;
    eb_cluster_stop_pid(&c->broker_pid);
}
