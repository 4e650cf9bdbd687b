/* embrokerd — the embroker broker daemon.
 *
 *   embrokerd [--run-dir DIR] [--frontend-tcp tcp://…] [--backend-tcp tcp://…]
 *             [--workers N --worker-cmd PATH --worker-args "…"] [--config FILE] [other keys]
 *
 * Settings come from a config file (--config or EMBROKER_CONFIG), the environment (EMBROKER_*)
 * and flags, flags winning; docs/operations.md lists every key. The process runs in the
 * foreground, logs to stderr, and exits 0 after SIGTERM/SIGINT once in-flight work is finished
 * or the grace period ran out; 1 when it cannot start, 2 for bad usage.
 */
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eb_broker.h"
#include "eb_config.h"
#include "eb_log.h"
#include "eb_proto.h"
#include "eb_supervisor.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: embrokerd [options]\n"
            "  --run-dir DIR              ipc sockets and lock (default $XDG_RUNTIME_DIR/embroker\n"
            "                             or /tmp/embroker-UID); created 0700\n"
            "  --frontend-tcp ENDPOINT    also accept clients on tcp:// (inline inputs only)\n"
            "  --backend-tcp ENDPOINT     also accept workers on tcp://\n"
            "  --heartbeat-interval-ms N  default 1000; peers are dead after 3 missed intervals\n"
            "  --client-timeout-ms N      default 3 x heartbeat interval\n"
            "  --queue-limit N            items per model and priority class (default 1024)\n"
            "  --default-deadline-ms N    deadline of requests that set none (default 60000)\n"
            "  --shutdown-grace-ms N      time in-flight work gets after SIGTERM (default 5000)\n"
            "  --workers N                supervisor mode: run N workers, restart them on exit\n"
            "  --worker-cmd PATH          worker program (default: embroker-worker next to\n"
            "                             embrokerd)\n"
            "  --worker-args \"ARGS\"       extra arguments for each worker\n"
            "  --cache-url redis://H:P    Redis embedding cache (off when unset)\n"
            "  --db-url URL               PostgreSQL + pgvector: scan search, store, delete\n"
            "  --spool-dir DIR            durable store spool (default RUN_DIR/spool)\n"
            "  --scan-image-model NAME    model of scan/store image inputs (default siglip)\n"
            "  --scan-text-model NAME     model of scan/store text inputs (default none)\n"
            "  --image-dims N --text-dims N  table dimensions when PostgreSQL is away at start\n"
            "  --log-level LEVEL          error|warn|info|debug (default info)\n"
            "  --config FILE              key = value settings (flags and EMBROKER_* win)\n"
            "See docs/operations.md for every key, the health fields and the signals.\n");
}

/* Flags embrokerd understands (config keys spelled with '-'); a typo on the command line is an
 * error rather than a silently ignored key. The environment and config files may hold keys for
 * other programs and are not checked. */
static const char *const known_keys[] = {
    "help", "version", "config", "log_level", "run_dir", "frontend_tcp", "backend_tcp",
    "heartbeat_interval_ms", "client_timeout_ms", "default_deadline_ms", "shutdown_grace_ms",
    "unknown_model_wait_ms", "queue_limit", "bulk_inflight_batches", "bulk_max_batch", "workers",
    "worker_cmd", "worker_args",
    "max_message_bytes", "max_body_bytes", "max_input_bytes", "max_batch_items",
    "max_text_bytes", "max_deadline_ms", "max_k", "max_models", "max_dims", "max_pixels",
    "cache_url", "cache_ttl_ms", "cache_timeout_ms", "db_url", "db_connections",
    "db_statement_timeout_ms", "search_ef", "search_overfetch",
    "image_dims", "text_dims", "spool_dir", "spool_sync",
    "store_retry_ms", "scan_image_model", "scan_text_model", "catalogue_source_type",
    "scan_source_type", "image_weight", "text_weight", NULL};

static bool check_flags(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0)
            return true;
        if (strncmp(a, "--", 2) != 0 || !a[2])
            continue;
        char key[128];
        size_t n = 0;
        for (const char *p = a + 2; *p && *p != '=' && n + 1 < sizeof key; p++)
            key[n++] = *p == '-' ? '_' : *p;
        key[n] = 0;
        const char *k = strncmp(key, "no_", 3) == 0 ? key + 3 : key;
        bool known = false;
        for (int j = 0; known_keys[j] && !known; j++)
            known = strcmp(known_keys[j], key) == 0 || strcmp(known_keys[j], k) == 0;
        if (!known) {
            fprintf(stderr, "embrokerd: unknown flag %s (see embrokerd --help)\n", a);
            return false;
        }
        if (!strchr(a, '=') && strcmp(k, "help") != 0 && strcmp(k, "version") != 0)
            i++; /* its value */
    }
    return true;
}

int main(int argc, char **argv)
{
    eb_log_set_program("embrokerd");
    static const char *const bool_flags[] = {"help", "version", NULL};
    char err[1024];
    eb_config *cfg = eb_config_new();
    if (!cfg) {
        fprintf(stderr, "embrokerd: out of memory\n");
        return 1;
    }
    if (!check_flags(argc, argv)) {
        eb_config_destroy(&cfg);
        return 2;
    }
    char *positional[1];
    int n_positional = 0;
    if (eb_config_load_all(cfg, argc, argv, bool_flags, positional, 0, &n_positional, err,
                           sizeof err) != EB_OK) {
        fprintf(stderr, "embrokerd: %s\n", err);
        usage(stderr);
        eb_config_destroy(&cfg);
        return 2;
    }
    if (eb_config_get_bool(cfg, "help", false)) {
        usage(stdout);
        eb_config_destroy(&cfg);
        return 0;
    }
    if (eb_config_get_bool(cfg, "version", false)) {
        printf("embrokerd (embroker), wire protocol %s/%s version %d\n", EB_PROTO_CLIENT_HEADER,
               EB_PROTO_WORKER_HEADER, EB_PROTO_VERSION);
        eb_config_destroy(&cfg);
        return 0;
    }
    const char *level = eb_config_get(cfg, "log_level", NULL);
    if (level) {
        eb_log_level l;
        if (!eb_log_level_parse(level, &l)) {
            fprintf(stderr, "embrokerd: log_level \"%s\" is not error, warn, info or debug\n",
                    level);
            eb_config_destroy(&cfg);
            return 2;
        }
        eb_log_set_level(l);
    }
    eb_broker_options options;
    if (eb_broker_options_load(cfg, &options, err, sizeof err) != EB_OK) {
        fprintf(stderr, "embrokerd: %s\n", err);
        eb_config_destroy(&cfg);
        return 2;
    }
    int64_t n_workers = 0;
    if (eb_config_get_int(cfg, "workers", 0, 0, 1024, &n_workers, err, sizeof err) != EB_OK) {
        fprintf(stderr, "embrokerd: %s\n", err);
        eb_config_destroy(&cfg);
        return 2;
    }
    eb_broker *broker = eb_broker_new(&options, err, sizeof err);
    if (!broker) {
        eb_log_error("broker_start_failed", "reason=\"%s\"", err);
        fprintf(stderr, "embrokerd: %s\n", err);
        eb_config_destroy(&cfg);
        return 1;
    }
    eb_supervisor *sup = NULL;
    if (n_workers > 0) {
        char default_cmd[PATH_MAX] = "";
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n > 0) {
            self[n] = 0;
            snprintf(default_cmd, sizeof default_cmd, "%s/embroker-worker", dirname(self));
        }
        eb_supervisor_options so = {
            .n_workers = (int)n_workers,
            .worker_cmd = eb_config_get(cfg, "worker_cmd", default_cmd),
            .worker_args = eb_config_get(cfg, "worker_args", ""),
            .run_dir = options.run_dir,
            .broker_endpoint = options.backend_ipc,
            .heartbeat_interval_ms = options.heartbeat_interval_ms,
        };
        sup = eb_supervisor_new(eb_broker_loop(broker), &so, err, sizeof err);
        if (!sup) {
            fprintf(stderr, "embrokerd: %s\n", err);
            eb_broker_destroy(&broker);
            eb_config_destroy(&cfg);
            return 2;
        }
        eb_broker_set_supervisor(broker, sup);
        eb_supervisor_start(sup);
    }
    eb_status st = eb_broker_run(broker);
    eb_broker_destroy(&broker);
    eb_supervisor_destroy(&sup);
    eb_config_destroy(&cfg);
    return st == EB_OK ? 0 : 1;
}
