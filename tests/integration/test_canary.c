/* The worker's canary, end to end: two identity workers behind one broker, one of them made to
 * drift after a few items (identity_corrupt_after, a test-only simulated broken device). Within a
 * few canary intervals the broker's health shows the drifting worker unhealthy and the other one
 * healthy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cJSON.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "eb_clock.h"
#include "eb_test.h"
#include "embroker.h"

/* healthy flag of worker `id` in the broker's health JSON: 1, 0, or -1 when absent */
static int worker_healthy(embroker_t *eb, const char *id)
{
    char *json = NULL, err[256];
    if (embroker_health(eb, &json, err, sizeof err) != EB_OK)
        return -1;
    cJSON *h = cJSON_Parse(json);
    free(json);
    int result = -1;
    cJSON *w;
    cJSON_ArrayForEach(w, cJSON_GetObjectItem(h, "workers"))
    {
        const char *wid = cJSON_GetStringValue(cJSON_GetObjectItem(w, "id"));
        if (wid && strcmp(wid, id) == 0)
            result = cJSON_IsTrue(cJSON_GetObjectItem(w, "healthy")) ? 1 : 0;
    }
    cJSON_Delete(h);
    return result;
}

static void test_drifting_worker_reported_unhealthy(void **state)
{
    (void)state;
    const char *bin_env = getenv("EMBROKER_BIN");
    char bin[4096], broker[4200], worker[4200], run_dir[4200], log[4200];
    snprintf(bin, sizeof bin, "%s", bin_env ? bin_env : "build/bin");
    char *dir = eb_test_tmpdir("canary");
    snprintf(run_dir, sizeof run_dir, "%s/run", dir);
    snprintf(log, sizeof log, "%s/processes.log", dir);
    snprintf(broker, sizeof broker, "%s/embrokerd", bin);
    snprintf(worker, sizeof worker, "%s/embroker-worker", bin);
    char *bargv[] = {broker, "--run-dir", run_dir, "--heartbeat-interval-ms", "100", NULL};
    pid_t b = eb_test_spawn(bargv, log);
    eb_sleep_us(200000);
    char *steady_argv[] = {worker, "--run-dir", run_dir, "--heartbeat-interval-ms", "100",
                           "--worker-id", "steady", "--models", "identity",
                           "--canary-interval-ms", "150", NULL};
    char *drift_argv[] = {worker, "--run-dir", run_dir, "--heartbeat-interval-ms", "100",
                          "--worker-id", "drifting", "--models", "identity",
                          "--canary-interval-ms", "150", "--identity-corrupt-after", "4", NULL};
    pid_t w1 = eb_test_spawn(steady_argv, log), w2 = eb_test_spawn(drift_argv, log);

    embroker_options_t opt;
    embroker_options_default(&opt);
    opt.run_dir = run_dir;
    opt.heartbeat_interval_ms = 100;
    opt.timeout_ms = 10000;
    embroker_t *eb = NULL;
    char err[512];
    for (int i = 0; i < 50 && embroker_connect(&opt, &eb, err, sizeof err) != EB_OK; i++)
        eb_sleep_us(100000);
    assert_non_null(eb);
    /* both come up healthy */
    int64_t until = eb_now_us() + 5000000;
    while ((worker_healthy(eb, "steady") != 1 || worker_healthy(eb, "drifting") != 1) &&
           eb_now_us() < until)
        eb_sleep_us(50000);
    assert_int_equal(worker_healthy(eb, "steady"), 1);
    assert_int_equal(worker_healthy(eb, "drifting"), 1);
    /* traffic for both (least-recently-used alternates) */
    for (int i = 0; i < 12; i++) {
        uint8_t px[12] = {(uint8_t)i, 1, 2, 3};
        embroker_request_t *req = NULL;
        assert_int_equal(embroker_embed_raw_rgb8(eb, "identity", px, 2, 2, &req), EB_OK);
        embroker_request_free(&req);
    }
    until = eb_now_us() + 5000000;
    while (worker_healthy(eb, "drifting") != 0 && eb_now_us() < until)
        eb_sleep_us(50000);
    assert_int_equal(worker_healthy(eb, "drifting"), 0);
    assert_int_equal(worker_healthy(eb, "steady"), 1);

    embroker_close(&eb);
    eb_test_stop(w1);
    eb_test_stop(w2);
    eb_test_stop(b);
    /* the drifting worker said why */
    size_t len = 0;
    char *text = (char *)eb_test_read_file(log, &len);
    assert_non_null(text);
    assert_non_null(strstr(text, "worker_canary_failed"));
    free(text);
    eb_test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drifting_worker_reported_unhealthy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
