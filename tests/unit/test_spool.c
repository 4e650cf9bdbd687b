/* Unit tests for broker/eb_spool: durability hand-off, acks in any order, recovery after a
 * clean close and after kill -9, torn tails, checksum failures, rotation and memory bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "eb_spool.h"
#include "eb_test.h"

typedef struct collected {
    uint64_t seqs[4096];
    char payloads[4096][32];
    size_t n;
} collected;

static void collect(void *ctx, uint64_t seq, const void *data, size_t len)
{
    collected *c = ctx;
    assert_true(c->n < 4096);
    assert_true(len < 32);
    c->seqs[c->n] = seq;
    memcpy(c->payloads[c->n], data, len);
    c->payloads[c->n][len] = '\0';
    c->n++;
}

/* Wait until `want` records have been handed out as durable (5 s at most). */
static void wait_durable(eb_spool *s, collected *c, size_t want)
{
    for (int i = 0; i < 500 && c->n < want; i++) {
        struct pollfd p = {.fd = eb_spool_notify_fd(s), .events = POLLIN};
        poll(&p, 1, 10);
        eb_spool_take_durable(s, collect, c);
    }
    assert_int_equal(c->n, want);
}

static void append_n(eb_spool *s, int from, int to)
{
    for (int i = from; i < to; i++) {
        char buf[32];
        int len = snprintf(buf, sizeof buf, "store-%d", i);
        uint64_t seq = 0;
        assert_int_equal(eb_spool_append(s, buf, (size_t)len, &seq), EB_OK);
        assert_int_equal(seq, (uint64_t)i + 1);
    }
}

static char *newest_file(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "ls %s/spool-*.log | sort | tail -1", dir);
    FILE *p = popen(cmd, "r");
    static char line[4200];
    line[0] = '\0';
    if (fgets(line, sizeof line, p))
        line[strcspn(line, "\n")] = '\0';
    pclose(p);
    return line;
}

static int count_files(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "ls %s/spool-*.log 2>/dev/null | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (fscanf(p, "%d", &n) != 1)
        n = -1;
    pclose(p);
    return n;
}

static void test_append_durable_ack(void **state)
{
    (void)state;
    char *dir = eb_test_tmpdir("spool");
    char err[256];
    eb_spool *s = eb_spool_open(dir, NULL, err, sizeof err);
    assert_non_null(s);
    static collected c;
    memset(&c, 0, sizeof c);
    append_n(s, 0, 100);
    wait_durable(s, &c, 100);
    for (size_t i = 0; i < 100; i++) {
        char want[32];
        snprintf(want, sizeof want, "store-%zu", i);
        assert_int_equal(c.seqs[i], i + 1);
        assert_string_equal(c.payloads[i], want);
    }
    eb_spool_stats st;
    eb_spool_get_stats(s, &st);
    assert_int_equal(st.durable_seq, 100);
    assert_int_equal(st.pending, 100);
    assert_true(st.syncs >= 1 && st.syncs <= 100);
    /* acks out of order: the watermark only moves over contiguous acks */
    assert_int_equal(eb_spool_ack(s, 2), EB_OK);
    eb_spool_get_stats(s, &st);
    assert_int_equal(st.acked_seq, 0);
    assert_int_equal(eb_spool_ack(s, 1), EB_OK);
    eb_spool_get_stats(s, &st);
    assert_int_equal(st.acked_seq, 2);
    assert_int_equal(eb_spool_ack(s, 2), EB_ERR_NOT_FOUND); /* twice */
    assert_int_equal(eb_spool_ack(s, 1000), EB_ERR_NOT_FOUND);
    for (uint64_t q = 3; q <= 100; q++)
        assert_int_equal(eb_spool_ack(s, q), EB_OK);
    eb_spool_get_stats(s, &st);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.pending_bytes, 0);
    assert_int_equal(st.acked_seq, 100);
    assert_int_equal(eb_spool_append(s, "", 0, NULL), EB_ERR_INVALID);
    eb_spool_close(&s);
    assert_null(s);
    /* nothing to replay after everything was acked */
    s = eb_spool_open(dir, NULL, err, sizeof err);
    assert_non_null(s);
    eb_spool_get_stats(s, &st);
    assert_int_equal(st.replayed, 0);
    uint64_t seq;
    assert_int_equal(eb_spool_append(s, "x", 1, &seq), EB_OK);
    assert_int_equal(seq, 101); /* numbering continues */
    eb_spool_close(&s);
    eb_test_rmtree(dir);
    free(dir);
}

static void test_replay_after_close(void **state)
{
    (void)state;
    char *dir = eb_test_tmpdir("spool");
    char err[256];
    eb_spool *s = eb_spool_open(dir, NULL, err, sizeof err);
    static collected c;
    memset(&c, 0, sizeof c);
    append_n(s, 0, 50);
    wait_durable(s, &c, 50);
    for (uint64_t q = 1; q <= 20; q++)
        eb_spool_ack(s, q);
    eb_spool_ack(s, 30); /* out of order: not covered by the watermark, replayed harmlessly */
    eb_spool_close(&s);
    usleep(1000);

    s = eb_spool_open(dir, NULL, err, sizeof err);
    assert_non_null(s);
    eb_spool_stats st;
    eb_spool_get_stats(s, &st);
    assert_int_equal(st.replayed, 30);
    assert_int_equal(st.acked_seq, 20);
    memset(&c, 0, sizeof c);
    wait_durable(s, &c, 30);
    for (size_t i = 0; i < 30; i++) {
        char want[32];
        snprintf(want, sizeof want, "store-%zu", i + 20);
        assert_int_equal(c.seqs[i], i + 21);
        assert_string_equal(c.payloads[i], want);
    }
    /* for_each_pending resends all unacked durable records */
    collected again;
    memset(&again, 0, sizeof again);
    assert_int_equal(eb_spool_for_each_pending(s, collect, &again), 30);
    eb_spool_close(&s);
    eb_test_rmtree(dir);
    free(dir);
}

static void test_replay_after_kill9(void **state)
{
    (void)state;
    char *dir = eb_test_tmpdir("spool");
    pid_t pid = fork();
    if (pid == 0) {
        char err[256];
        eb_spool *s = eb_spool_open(dir, NULL, err, sizeof err);
        static collected c;
        append_n(s, 0, 200);
        wait_durable(s, &c, 200);
        kill(getpid(), SIGKILL); /* no close, no flush: only what was synced survives */
        _exit(1);
    }
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status));
    char err[256];
    eb_spool *s = eb_spool_open(dir, NULL, err, sizeof err);
    assert_non_null(s);
    static collected c;
    memset(&c, 0, sizeof c);
    wait_durable(s, &c, 200);
    assert_string_equal(c.payloads[199], "store-199");
    eb_spool_close(&s);
    eb_test_rmtree(dir);
    free(dir);
}

static void test_torn_tail_and_corruption(void **state)
{
    (void)state;
    char *dir = eb_test_tmpdir("spool");
    char err[256];
    eb_spool *s = eb_spool_open(dir, NULL, err, sizeof err);
    static collected c;
    memset(&c, 0, sizeof c);
    append_n(s, 0, 10);
    wait_durable(s, &c, 10);
    eb_spool_close(&s);

    /* a crash in the middle of writing record 11: half a header at the end */
    char *path = strdup(newest_file(dir));
    struct stat st0;
    stat(path, &st0);
    FILE *f = fopen(path, "ab");
    fwrite("EBSP\x05\x00", 1, 6, f);
    fclose(f);
    s = eb_spool_open(dir, NULL, err, sizeof err);
    assert_non_null(s);
    struct stat st1;
    stat(path, &st1);
    assert_int_equal(st1.st_size, st0.st_size); /* torn tail cut off */
    eb_spool_stats st;
    eb_spool_get_stats(s, &st);
    assert_int_equal(st.replayed, 10);
    uint64_t seq;
    assert_int_equal(eb_spool_append(s, "next", 4, &seq), EB_OK);
    assert_int_equal(seq, 11);
    eb_spool_close(&s);

    /* flip one payload byte of record 5 (each record is 24 + 7 bytes: "store-N") */
    f = fopen(path, "r+b");
    fseek(f, 4 * (24 + 7) + 24 + 3, SEEK_SET);
    fputc('X', f);
    fclose(f);
    s = eb_spool_open(dir, NULL, err, sizeof err);
    assert_non_null(s);
    eb_spool_get_stats(s, &st);
    /* records 1..4, then record 5 fails its checksum and the rest of that file is skipped;
     * record 11 ("next") lives in the file opened by the second run and is recovered */
    assert_int_equal(st.replayed, 5);
    eb_spool_close(&s);
    free(path);
    eb_test_rmtree(dir);
    free(dir);
}

static void test_rotation_and_cleanup(void **state)
{
    (void)state;
    char *dir = eb_test_tmpdir("spool");
    char err[256];
    eb_spool_options o;
    eb_spool_options_default(&o);
    o.max_file_bytes = 200; /* ~6 records per file */
    eb_spool *s = eb_spool_open(dir, &o, err, sizeof err);
    static collected c;
    memset(&c, 0, sizeof c);
    append_n(s, 0, 60);
    wait_durable(s, &c, 60);
    assert_true(count_files(dir) >= 9);
    for (uint64_t q = 1; q <= 60; q++)
        eb_spool_ack(s, q);
    eb_spool_close(&s); /* the writer deletes acked files before it stops */
    assert_int_equal(count_files(dir), 1);
    eb_test_rmtree(dir);
    free(dir);
}

static void test_pending_bound(void **state)
{
    (void)state;
    char *dir = eb_test_tmpdir("spool");
    char err[256];
    eb_spool_options o;
    eb_spool_options_default(&o);
    o.max_pending_bytes = 1000;
    eb_spool *s = eb_spool_open(dir, &o, err, sizeof err);
    char big[600];
    memset(big, 'a', sizeof big);
    assert_int_equal(eb_spool_append(s, big, sizeof big, NULL), EB_OK);
    assert_int_equal(eb_spool_append(s, big, sizeof big, NULL), EB_ERR_BUSY);
    eb_spool_close(&s);
    /* an unusable directory is a clear error */
    assert_null(eb_spool_open("/proc/nonexistent/spool", NULL, err, sizeof err));
    assert_non_null(strstr(err, "/proc/nonexistent/spool"));
    eb_test_rmtree(dir);
    free(dir);
}

static void test_crc32c_vector(void **state)
{
    (void)state;
    /* RFC 3720 B.4 check value: CRC-32C("123456789") = 0xE3069283 */
    assert_int_equal(eb_crc32c(0, "123456789", 9), 0xE3069283u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_vector),
        cmocka_unit_test(test_append_durable_ack),
        cmocka_unit_test(test_replay_after_close),
        cmocka_unit_test(test_replay_after_kill9),
        cmocka_unit_test(test_torn_tail_and_corruption),
        cmocka_unit_test(test_rotation_and_cleanup),
        cmocka_unit_test(test_pending_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
