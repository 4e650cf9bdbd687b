/* The load generator of embroker-bench (bench/eb_bench_load) against a real embrokerd and
 * embroker-worker serving the identity models (started by bench/eb_bench_cluster). No timing is
 * asserted beyond what a working generator must show on any machine: counts add up, failures
 * land under their status code, the open loop offers its rate whatever the system does, and its
 * latency includes the queueing an overloaded worker causes (which a closed loop would hide). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "eb_bench_cluster.h"
#include "eb_bench_load.h"
#include "eb_model_identity.h"
#include "eb_test.h"

static char bin_dir[4096];

typedef struct fixture {
    char *dir;
    eb_cluster cluster;
    eb_load_inputs inputs;
} fixture;

static int start(fixture *f, const char *worker_args, int max_batch)
{
    memset(f, 0, sizeof *f);
    f->dir = eb_test_tmpdir("benchload");
    if (!f->dir)
        return -1;
    eb_cluster_options co = {.bin_dir = bin_dir,
                             .run_dir = f->dir,
                             .workers = 1,
                             .models = "identity,identity-text",
                             .worker_args = worker_args,
                             .max_batch = max_batch,
                             .ready_timeout_ms = 30000};
    f->inputs.raw_bytes = 3000;
    char err[256];
    if (eb_load_inputs_texts(&f->inputs, NULL, 64, err, sizeof err) != 0)
        return -1;
    return eb_cluster_start(&f->cluster, &co);
}

static void stop(fixture *f)
{
    eb_cluster_stop(&f->cluster);
    eb_load_inputs_free(&f->inputs);
    if (f->dir) {
        eb_test_rmtree(f->dir);
        free(f->dir);
    }
}

/* Closed loop with a request budget: every measured request is counted once, every reply's
 * stages are there, and a 1:1 mix sends both kinds. */
static void test_closed_loop_counts_and_stages(void **state)
{
    (void)state;
    fixture f;
    assert_int_equal(start(&f, NULL, 0), 0);
    eb_load_config cfg = {.run_dir = f.dir,
                          .mode = EB_LOAD_CLOSED,
                          .clients = 3,
                          .duration_s = 30,
                          .warmup_s = 0.2,
                          .max_requests = 600,
                          .inputs = &f.inputs,
                          .timeout_ms = 10000,
                          .seed = 7};
    cfg.weights[EB_LOAD_EMBED_IMAGE] = 1;
    cfg.weights[EB_LOAD_EMBED_TEXT] = 1;
    eb_load_result r;
    char err[256];
    assert_int_equal(eb_load_run(&cfg, &r, err, sizeof err), 0);
    assert_int_equal(r.latency.n, 600);
    assert_int_equal(r.sent, 600);
    assert_int_equal(r.completed, 600);
    assert_int_equal(r.errors, 0);
    size_t images = r.op_latency[EB_LOAD_EMBED_IMAGE].n, texts = r.op_latency[EB_LOAD_EMBED_TEXT].n;
    assert_int_equal(images + texts, 600);
    assert_true(images > 200 && texts > 200); /* 1:1 mix; 600 draws stay well inside this */
    assert_int_equal(r.stages[EB_LOAD_STAGE_HASH].n, 600);
    assert_int_equal(r.stages[EB_LOAD_STAGE_INFER].n, 600);
    assert_int_equal(r.stages[EB_LOAD_STAGE_BROKER_TOTAL].n, 600);
    assert_int_equal(r.stages[EB_LOAD_STAGE_COPY].n, images); /* raw images travel through shm */
    assert_true(r.achieved_rps > 0);
    eb_row row;
    eb_row_init(&row, "x");
    eb_load_result_row(&r, &row);
    assert_int_equal(row.ncols, 12);
    assert_float_equal(row.values[3], 600.0, 0.0); /* n */
    eb_load_result_free(&r);
    stop(&f);
}

/* Inputs the identity model fails on purpose are counted under EB_ERR_MODEL, not as latency. */
static void test_errors_by_code(void **state)
{
    (void)state;
    fixture f;
    assert_int_equal(start(&f, NULL, 0), 0);
    char path[4200];
    snprintf(path, sizeof path, "%s/texts.txt", f.dir);
    FILE *tf = fopen(path, "w");
    assert_non_null(tf);
    fprintf(tf, "%s one\nan ordinary text\n%s two\nanother text\n", EB_MODEL_IDENTITY_FAIL_PREFIX,
            EB_MODEL_IDENTITY_FAIL_PREFIX);
    fclose(tf);
    eb_load_inputs texts = {0};
    char err[256];
    assert_int_equal(eb_load_inputs_texts(&texts, path, 0, err, sizeof err), 0);
    assert_int_equal(texts.n_texts, 4);
    eb_load_config cfg = {.run_dir = f.dir,
                          .mode = EB_LOAD_CLOSED,
                          .clients = 1,
                          .duration_s = 30,
                          .max_requests = 100,
                          .inputs = &texts,
                          .timeout_ms = 10000};
    cfg.weights[EB_LOAD_EMBED_TEXT] = 1;
    eb_load_result r;
    assert_int_equal(eb_load_run(&cfg, &r, err, sizeof err), 0);
    /* one client takes the texts in order: every other one fails */
    assert_int_equal(r.errors_by_code[-EB_ERR_MODEL], 50);
    assert_int_equal(r.errors, 50);
    assert_int_equal(r.latency.n, 50);
    eb_load_result_free(&r);
    eb_load_inputs_free(&texts);
    stop(&f);
}

/* Open loop below capacity: it sends about rate x duration requests and gets them all back. */
static void test_open_loop_offers_its_rate(void **state)
{
    (void)state;
    fixture f;
    assert_int_equal(start(&f, NULL, 0), 0);
    eb_load_config cfg = {.run_dir = f.dir,
                          .mode = EB_LOAD_OPEN,
                          .clients = 2,
                          .rate = 300,
                          .duration_s = 2,
                          .warmup_s = 0.2,
                          .inputs = &f.inputs,
                          .timeout_ms = 10000,
                          .seed = 3};
    cfg.weights[EB_LOAD_EMBED_IMAGE] = 1;
    eb_load_result r;
    char err[256];
    assert_int_equal(eb_load_run(&cfg, &r, err, sizeof err), 0);
    /* Poisson count with mean 600: sd ~24.5, so 480..720 is beyond 4.8 sd either way */
    assert_true(r.sent > 480 && r.sent < 720);
    assert_int_equal(r.completed, r.sent);
    assert_int_equal(r.errors + r.backlog, 0);
    assert_int_equal((int64_t)r.latency.n, r.sent);
    assert_float_equal(r.offered_rps, 300.0, 0.0);
    eb_load_result_free(&r);
    stop(&f);
}

/* A worker that needs 20 ms per item (batch 1) serves at most 50/s. Offered 100/s for 1.5 s,
 * the queue grows by ~50 items a second, so the last requests wait most of a second: the open
 * loop keeps sending and its p90 shows the queueing, while a closed loop on the same worker
 * (which only sends when the previous reply is back) sees ~20 ms and hides it. */
static void test_open_loop_charges_queueing(void **state)
{
    (void)state;
    fixture f;
    assert_int_equal(start(&f, "--identity-delay-ms 20", 1), 0);
    eb_load_config cfg = {.run_dir = f.dir,
                          .mode = EB_LOAD_CLOSED,
                          .clients = 1,
                          .duration_s = 1,
                          .warmup_s = 0.1,
                          .inputs = &f.inputs,
                          .timeout_ms = 20000,
                          .seed = 5};
    cfg.weights[EB_LOAD_EMBED_IMAGE] = 1;
    eb_load_result closed, open;
    char err[256];
    assert_int_equal(eb_load_run(&cfg, &closed, err, sizeof err), 0);
    cfg.mode = EB_LOAD_OPEN;
    cfg.rate = 100;
    cfg.duration_s = 1.5;
    assert_int_equal(eb_load_run(&cfg, &open, err, sizeof err), 0);
    eb_summary c, o;
    eb_samples_summarise(&closed.latency, &c);
    eb_samples_summarise(&open.latency, &o);
    assert_true(c.p50_us >= 20000 && c.p50_us < 200000);
    assert_true(o.p90_us > 300000);
    assert_true(open.achieved_rps < 80); /* it cannot do more than ~50/s */
    assert_int_equal(open.errors, 0);
    eb_load_result_free(&closed);
    eb_load_result_free(&open);
    stop(&f);
}

static int setup_paths(void **state)
{
    (void)state;
    const char *b = getenv("EMBROKER_BIN");
    if (b && *b)
        snprintf(bin_dir, sizeof bin_dir, "%s", b);
    else
        eb_test_path(bin_dir, sizeof bin_dir, "build/bin");
    char p[4300];
    snprintf(p, sizeof p, "%s/embrokerd", bin_dir);
    if (access(p, X_OK) != 0) {
        fprintf(stderr, "test_bench_load: %s not found (set EMBROKER_BIN)\n", p);
        return -1;
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_closed_loop_counts_and_stages),
        cmocka_unit_test(test_errors_by_code),
        cmocka_unit_test(test_open_loop_offers_its_rate),
        cmocka_unit_test(test_open_loop_charges_queueing),
    };
    return cmocka_run_group_tests(tests, setup_paths, NULL);
}
