/* eb_supervisor — fork/exec N workers, restart each one that exits, with backoff.
 *
 * Each slot i runs one child at a time. When it exits, the slot's restart timer is armed for
 * now + backoff (100 ms doubling to 5 s; reset to 100 ms when the child had run for 30 s), so a
 * worker that crashes at start does not spin, and one that crashes rarely comes back fast.
 * Children start with default signal dispositions and an empty mask and die with the broker
 * (PR_SET_PDEATHSIG).
 */
#include "eb_supervisor.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "eb_clock.h"
#include "eb_log.h"

enum { MAX_ARGS = 128 };

#define BACKOFF_MIN_US 100000
#define BACKOFF_MAX_US 5000000
#define STABLE_US 30000000

typedef struct sup_slot {
    struct eb_supervisor *sup;
    int index;
    pid_t pid; /* 0 when not running */
    int64_t started_us;
    int64_t backoff_us;
    eb_loop_timer restart_timer;
} sup_slot;

struct eb_supervisor {
    eb_loop *loop;
    char *cmd;
    char *args_buf;          /* split argument storage */
    char *argv[MAX_ARGS + 2]; /* cmd, args..., NULL */
    int argc;
    char *run_dir, *endpoint;
    int64_t heartbeat_interval_ms;
    int n;
    sup_slot *slots;
    bool stopping;
    uint64_t restarts;
};

/* Split on blanks; '…' and "…" group (no escapes inside single quotes, backslash escapes the
 * next character elsewhere). Writes into buf (as long as s). */
static int split_args(const char *s, char *buf, char **out, int max, char *err, size_t err_len)
{
    int n = 0;
    char *w = buf;
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (!*p)
            break;
        if (n >= max) {
            snprintf(err, err_len, "worker_args has more than %d arguments", max);
            return -1;
        }
        out[n++] = w;
        char quote = 0;
        while (*p && (quote || (*p != ' ' && *p != '\t' && *p != '\n'))) {
            if (quote) {
                if (*p == quote)
                    quote = 0;
                else
                    *w++ = *p;
                p++;
            } else if (*p == '\'' || *p == '"') {
                quote = *p++;
            } else if (*p == '\\' && p[1]) {
                *w++ = p[1];
                p += 2;
            } else {
                *w++ = *p++;
            }
        }
        if (quote) {
            snprintf(err, err_len, "worker_args \"%s\": unterminated quote", s);
            return -1;
        }
        *w++ = 0;
    }
    return n;
}

static void spawn(sup_slot *slot)
{
    eb_supervisor *sup = slot->sup;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        eb_log_error("worker_spawn_failed", "slot=%d reason=\"%s\"", slot->index,
                     strerror(errno));
        eb_loop_timer_start(sup->loop, &slot->restart_timer, eb_now_us() + slot->backoff_us);
        return;
    }
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* The broker's handlers write to its self-pipe: not ours to use. */
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        char buf[32];
        setenv("EMBROKER_RUN_DIR", sup->run_dir, 1);
        setenv("EMBROKER_BROKER", sup->endpoint, 1);
        snprintf(buf, sizeof buf, "%lld", (long long)sup->heartbeat_interval_ms);
        setenv("EMBROKER_HEARTBEAT_INTERVAL_MS", buf, 1);
        snprintf(buf, sizeof buf, "%d", slot->index);
        setenv("EMBROKER_WORKER_INDEX", buf, 1);
        execv(sup->cmd, sup->argv);
        fprintf(stderr, "embrokerd: cannot exec worker \"%s\": %s\n", sup->cmd, strerror(errno));
        _exit(127);
    }
    slot->pid = pid;
    slot->started_us = eb_now_us();
    eb_log_info("worker_started", "slot=%d pid=%d cmd=%s", slot->index, (int)pid, sup->cmd);
}

static void on_restart(eb_loop *loop, eb_loop_timer *timer, void *arg)
{
    (void)loop, (void)timer;
    sup_slot *slot = arg;
    if (!slot->sup->stopping && slot->pid == 0) {
        slot->sup->restarts++;
        spawn(slot);
    }
}

eb_supervisor *eb_supervisor_new(eb_loop *loop, const eb_supervisor_options *o, char *err,
                                 size_t err_len)
{
    if (o->n_workers < 1 || !o->worker_cmd || !*o->worker_cmd) {
        snprintf(err, err_len, "supervisor needs --workers >= 1 and --worker-cmd");
        return NULL;
    }
    eb_supervisor *sup = calloc(1, sizeof *sup);
    if (!sup)
        goto nomem;
    sup->loop = loop;
    sup->n = o->n_workers;
    sup->cmd = strdup(o->worker_cmd);
    sup->run_dir = strdup(o->run_dir ? o->run_dir : "");
    sup->endpoint = strdup(o->broker_endpoint ? o->broker_endpoint : "");
    const char *args = o->worker_args ? o->worker_args : "";
    sup->args_buf = malloc(strlen(args) + 1);
    sup->slots = calloc((size_t)sup->n, sizeof *sup->slots);
    if (!sup->cmd || !sup->run_dir || !sup->endpoint || !sup->args_buf || !sup->slots)
        goto nomem;
    sup->heartbeat_interval_ms = o->heartbeat_interval_ms;
    sup->argv[0] = sup->cmd;
    int n = split_args(args, sup->args_buf, sup->argv + 1, MAX_ARGS, err, err_len);
    if (n < 0) {
        eb_supervisor_destroy(&sup);
        return NULL;
    }
    sup->argc = n + 1;
    sup->argv[sup->argc] = NULL;
    if (access(sup->cmd, X_OK) != 0) {
        snprintf(err, err_len, "worker_cmd \"%s\" is not an executable file: %s", sup->cmd,
                 strerror(errno));
        eb_supervisor_destroy(&sup);
        return NULL;
    }
    for (int i = 0; i < sup->n; i++) {
        sup->slots[i].sup = sup;
        sup->slots[i].index = i;
        sup->slots[i].backoff_us = BACKOFF_MIN_US;
        eb_loop_timer_init(&sup->slots[i].restart_timer, on_restart, &sup->slots[i]);
    }
    return sup;
nomem:
    snprintf(err, err_len, "out of memory");
    eb_supervisor_destroy(&sup);
    return NULL;
}

eb_status eb_supervisor_start(eb_supervisor *sup)
{
    for (int i = 0; i < sup->n; i++)
        if (sup->slots[i].pid == 0)
            spawn(&sup->slots[i]);
    return EB_OK;
}

void eb_supervisor_reap(eb_supervisor *sup, eb_supervisor_exit_fn on_exit, void *arg)
{
    for (;;) {
        int status = 0;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return;
        sup_slot *slot = NULL;
        for (int i = 0; i < sup->n; i++)
            if (sup->slots[i].pid == pid)
                slot = &sup->slots[i];
        if (!slot)
            continue;
        int64_t now = eb_now_us();
        int64_t ran = now - slot->started_us;
        slot->pid = 0;
        if (WIFSIGNALED(status))
            eb_log_warn("worker_exited", "slot=%d pid=%d signal=%d ran_ms=%lld", slot->index,
                        (int)pid, WTERMSIG(status), (long long)ran / 1000);
        else
            eb_log_warn("worker_exited", "slot=%d pid=%d code=%d ran_ms=%lld", slot->index,
                        (int)pid, WEXITSTATUS(status), (long long)ran / 1000);
        if (on_exit)
            on_exit(pid, status, arg);
        if (sup->stopping)
            continue;
        if (ran >= STABLE_US)
            slot->backoff_us = BACKOFF_MIN_US;
        eb_log_info("worker_restart_scheduled", "slot=%d delay_ms=%lld", slot->index,
                    (long long)slot->backoff_us / 1000);
        eb_loop_timer_start(sup->loop, &slot->restart_timer, now + slot->backoff_us);
        slot->backoff_us *= 2;
        if (slot->backoff_us > BACKOFF_MAX_US)
            slot->backoff_us = BACKOFF_MAX_US;
    }
}

bool eb_supervisor_owns(const eb_supervisor *sup, pid_t pid)
{
    for (int i = 0; i < sup->n; i++)
        if (sup->slots[i].pid == pid)
            return true;
    return false;
}

void eb_supervisor_stop(eb_supervisor *sup, int64_t grace_ms)
{
    sup->stopping = true;
    for (int i = 0; i < sup->n; i++) {
        eb_loop_timer_stop(sup->loop, &sup->slots[i].restart_timer);
        if (sup->slots[i].pid > 0)
            kill(sup->slots[i].pid, SIGTERM);
    }
    int64_t until = eb_now_us() + grace_ms * 1000;
    for (;;) {
        int running = 0;
        for (int i = 0; i < sup->n; i++) {
            sup_slot *slot = &sup->slots[i];
            if (slot->pid <= 0)
                continue;
            int status;
            pid_t r = waitpid(slot->pid, &status, WNOHANG);
            if (r == slot->pid || (r < 0 && errno == ECHILD))
                slot->pid = 0;
            else
                running++;
        }
        if (running == 0)
            return;
        if (eb_now_us() >= until)
            break;
        eb_sleep_us(10000); /* shutdown only: the loop is no longer serving */
    }
    for (int i = 0; i < sup->n; i++)
        if (sup->slots[i].pid > 0) {
            eb_log_warn("worker_killed", "pid=%d reason=\"did not exit within %lld ms\"",
                        (int)sup->slots[i].pid, (long long)grace_ms);
            kill(sup->slots[i].pid, SIGKILL);
            waitpid(sup->slots[i].pid, NULL, 0);
            sup->slots[i].pid = 0;
        }
}

int eb_supervisor_running(const eb_supervisor *sup)
{
    int n = 0;
    for (int i = 0; i < sup->n; i++)
        n += sup->slots[i].pid > 0;
    return n;
}

uint64_t eb_supervisor_restarts(const eb_supervisor *sup)
{
    return sup->restarts;
}

void eb_supervisor_destroy(eb_supervisor **sup)
{
    if (!sup || !*sup)
        return;
    eb_supervisor *s = *sup;
    if (s->slots)
        for (int i = 0; i < s->n; i++)
            eb_loop_timer_stop(s->loop, &s->slots[i].restart_timer);
    free(s->cmd);
    free(s->args_buf);
    free(s->run_dir);
    free(s->endpoint);
    free(s->slots);
    free(s);
    *sup = NULL;
}
