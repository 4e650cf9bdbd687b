/* embroker-worker — load the configured models once, warm them up and serve batches from the
 * broker until told to stop.
 *
 *   embroker-worker [--run-dir DIR | --broker ENDPOINT] [--models identity,siglip]
 *                   [--worker-id ID] [--heartbeat-interval-ms N] [--watchdog-ms N]
 *                   [--max-batch-items N] [--worker-queue-items N] [--config FILE]
 *                   [model keys, e.g. --identity-dims 64 --identity-delay-ms 50]
 *
 * Settings come from the config file < EMBROKER_* environment < flags (eb_config.h). Exit
 * status: 0 after SIGTERM/SIGINT, 1 for bad configuration or a model that cannot load, 70 when
 * the watchdog found the compute thread stuck (the supervisor restarts the worker). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eb_config.h"
#include "eb_log.h"
#include "eb_cpu_ops.h"
#include "eb_model.h"
#include "eb_worker.h"

static eb_worker *g_worker;

static void on_signal(int sig)
{
    (void)sig;
    eb_worker_stop(g_worker);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: embroker-worker [--run-dir DIR | --broker ENDPOINT] [--models a,b]\n"
            "                       [--worker-id ID] [--heartbeat-interval-ms N]\n"
            "                       [--watchdog-ms N] [--max-batch-items N] [--config FILE]\n"
            "                       [--identity-dims N] [--identity-delay-ms N] ...\n");
}

int main(int argc, char **argv)
{
    /* Before anything loads OpenBLAS kernels: may re-exec once with OPENBLAS_CORETYPE set when
     * Debian's OpenBLAS would fall back to its generic kernels on this CPU (eb_cpu_ops.h). */
    eb_cpu_blas_ensure_coretype(argv);
    eb_log_set_program("embroker-worker");
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage();
            return 0;
        }
    char err[1024];
    eb_config *cfg = eb_config_new();
    if (!cfg) {
        fprintf(stderr, "embroker-worker: out of memory\n");
        return 1;
    }
    char *positional[1];
    int n_positional = 0;
    if (eb_config_load_all(cfg, argc, argv, NULL, positional, 0, &n_positional, err,
                           sizeof err) != EB_OK) {
        fprintf(stderr, "embroker-worker: %s\n", err);
        usage();
        eb_config_destroy(&cfg);
        return 1;
    }
    eb_log_level level;
    const char *lv = eb_config_get(cfg, "log_level", NULL);
    if (lv && eb_log_level_parse(lv, &level))
        eb_log_set_level(level);

    eb_worker_options opt;
    char endpoint[4200];
    if (eb_worker_options_from_config(cfg, &opt, endpoint, sizeof endpoint, err, sizeof err) !=
        EB_OK) {
        fprintf(stderr, "embroker-worker: %s\n", err);
        eb_config_destroy(&cfg);
        return 1;
    }

    /* Load every model named in "models" (comma-separated). */
    char names[1024];
    snprintf(names, sizeof names, "%s", eb_config_get(cfg, "models", "identity"));
    eb_model *models[64];
    size_t n_models = 0;
    int rc = 1;
    char *save = NULL;
    for (char *name = strtok_r(names, ", ", &save); name; name = strtok_r(NULL, ", ", &save)) {
        if (n_models == 64) {
            fprintf(stderr, "embroker-worker: more than 64 models in --models\n");
            goto out;
        }
        eb_model *m = eb_model_load(name, cfg, err, sizeof err);
        if (!m) {
            fprintf(stderr, "embroker-worker: cannot load model \"%s\": %s\n", name, err);
            goto out;
        }
        models[n_models++] = m;
        if (eb_model_warm_up(m, err, sizeof err) != EB_OK) {
            fprintf(stderr, "embroker-worker: warm-up of model \"%s\" failed: %s\n", name, err);
            goto out;
        }
        eb_log_info("model_loaded", "name=%s model_rev=%s preproc_rev=%s dims=%u max_batch=%u "
                    "backend=%s device=\"%s\"", m->info.name, m->info.model_rev,
                    m->info.preproc_rev, m->info.dims, m->info.max_batch_items,
                    m->info.backend ? m->info.backend : "?", m->info.device ? m->info.device : "?");
    }
    if (n_models == 0) {
        fprintf(stderr, "embroker-worker: no model given (--models identity,...)\n");
        goto out;
    }
    g_worker = eb_worker_new(&opt, models, n_models, err, sizeof err);
    if (!g_worker) {
        fprintf(stderr, "embroker-worker: %s\n", err);
        goto out;
    }
    n_models = 0; /* the worker owns them now */

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    eb_status st = eb_worker_run(g_worker);
    if (st == EB_ERR_TIMEOUT) {
        /* The compute thread is stuck: it cannot be joined. Leave now; the supervisor restarts
         * us and the broker requeues the batch. */
        eb_log_error("worker_exit", "reason=watchdog status=70");
        _exit(70);
    }
    rc = st == EB_OK ? 0 : 1;
    eb_worker_destroy(&g_worker);
out:
    for (size_t i = 0; i < n_models; i++)
        eb_model_destroy(&models[i]);
    eb_config_destroy(&cfg);
    return rc;
}
