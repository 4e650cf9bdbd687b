/* Unit tests for shm/: names, the client's segment and allocator, the read-only reader with its
 * bounds checks and SIGBUS guard, nonces, owner liveness and cleanup of dead owners' leftovers.
 *
 * Segments are real POSIX shared-memory objects in /dev/shm; every test removes what it
 * creates. Processes that own segments are forked children, killed with SIGKILL where the test
 * needs a dead owner. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "eb_clock.h"
#include "eb_shm.h"
#include "eb_shm_cleanup.h"
#include "eb_shm_guard.h"
#include "eb_shm_owner.h"
#include "eb_shm_reader.h"
#include "eb_shm_segment.h"

/* ---- helpers ----------------------------------------------------------------------------- */

static eb_shm_segment *make_segment(size_t data_size)
{
    char err[256] = "";
    eb_shm_segment *seg = NULL;
    eb_status status = eb_shm_segment_create(data_size, &seg, err, sizeof err);
    if (status != EB_OK)
        fprintf(stderr, "segment_create: %s\n", err);
    assert_int_equal(status, EB_OK);
    assert_non_null(seg);
    return seg;
}

static eb_shm_reader *attach(const char *name)
{
    char err[256] = "";
    eb_shm_reader *reader = NULL;
    eb_status status = eb_shm_reader_attach(name, &reader, err, sizeof err);
    if (status != EB_OK)
        fprintf(stderr, "reader_attach: %s\n", err);
    assert_int_equal(status, EB_OK);
    assert_non_null(reader);
    return reader;
}

static bool shm_exists(const char *name)
{
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

/* A well-formed name that does not exist (random suffix from the clock and a counter). */
static void fresh_name(char *buf, size_t cap, uid_t uid, pid_t pid)
{
    static unsigned counter;
    snprintf(buf, cap, EB_SHM_NAME_PREFIX "%u-%d-%08x%08x", (unsigned)uid, (int)pid,
             (unsigned)eb_now_us(), ++counter);
}

/* A pid that belonged to a process which has exited and been reaped. */
static pid_t dead_pid(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(0);
    int wstatus;
    assert_int_equal(waitpid(pid, &wstatus, 0), pid);
    return pid;
}

/* Fork a child that creates a segment, sends its name through a pipe and waits forever. */
static pid_t spawn_owner(char *name, size_t cap)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        eb_shm_segment *seg = NULL;
        char buf[EB_SHM_NAME_MAX] = "";
        if (eb_shm_segment_create(4096, &seg, NULL, 0) == EB_OK)
            snprintf(buf, sizeof buf, "%s", eb_shm_segment_name(seg));
        if (write(fds[1], buf, sizeof buf) != (ssize_t)sizeof buf)
            _exit(1);
        for (;;)
            pause();
    }
    close(fds[1]);
    char buf[EB_SHM_NAME_MAX];
    ssize_t n = read(fds[0], buf, sizeof buf);
    close(fds[0]);
    assert_int_equal(n, (ssize_t)sizeof buf);
    assert_true(buf[0] == '/');
    snprintf(name, cap, "%s", buf);
    return pid;
}

static void kill_and_reap(pid_t pid)
{
    int wstatus;
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &wstatus, 0), pid);
}

/* ---- names and owners -------------------------------------------------------------------- */

static void test_name_parse(void **state)
{
    (void)state;
    uid_t uid = 7;
    pid_t pid = 7;
    assert_true(eb_shm_name_parse("/embroker-1000-4242-0123456789abcdef", &uid, &pid));
    assert_int_equal(uid, 1000);
    assert_int_equal(pid, 4242);
    assert_true(eb_shm_name_parse("/embroker-0-1-ffffffffffffffff", NULL, NULL));

    const char *bad[] = {
        "",
        "embroker-1000-4242-0123456789abcdef",    /* no leading slash */
        "/embroker-1000-4242-0123456789ABCDEF",   /* upper-case hex */
        "/embroker-1000-4242-0123456789abcde",    /* 15 hex digits */
        "/embroker-1000-4242-0123456789abcdef0",  /* 17 */
        "/embroker-1000-0-0123456789abcdef",      /* pid 0 */
        "/embroker-01000-4242-0123456789abcdef",  /* leading zero */
        "/embroker--4242-0123456789abcdef",       /* empty uid */
        "/embroker-99999999999-4242-0123456789abcdef", /* uid overflows */
        "/embroker-1000-4242-0123456789abcdef/x", /* extra path */
        "/embroker-1000-4242/../0123456789abcdef",
        "/other-1000-4242-0123456789abcdef",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (eb_shm_name_parse(bad[i], NULL, NULL))
            fail_msg("accepted bad name \"%s\"", bad[i]);
    }
    assert_false(eb_shm_name_parse(NULL, NULL, NULL));
}

static void test_owner_alive(void **state)
{
    (void)state;
    uint64_t self_start = 0, self_start_by_pid = 0;
    assert_int_equal(eb_shm_owner_starttime(0, &self_start), EB_OK);
    assert_int_equal(eb_shm_owner_starttime(getpid(), &self_start_by_pid), EB_OK);
    assert_true(self_start > 0);
    assert_int_equal(self_start, self_start_by_pid);
    assert_true(eb_shm_owner_alive(getpid(), self_start));
    assert_false(eb_shm_owner_alive(getpid(), self_start + 1)); /* pid reused by another */
    assert_false(eb_shm_owner_alive(0, self_start));
    assert_false(eb_shm_owner_alive(-5, self_start));
    assert_false(eb_shm_owner_alive(dead_pid(), self_start));

    /* A zombie (exited, not yet reaped) is dead. */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0)
        _exit(0);
    siginfo_t info;
    assert_int_equal(waitid(P_PID, (id_t)child, &info, WEXITED | WNOWAIT), 0);
    uint64_t start = 0;
    assert_int_equal(eb_shm_owner_starttime(child, &start), EB_ERR_NOT_FOUND);
    assert_false(eb_shm_owner_alive(child, self_start));
    int wstatus;
    assert_int_equal(waitpid(child, &wstatus, 0), child);
}

/* ---- segment creation and round trip ----------------------------------------------------- */

static void test_create_and_read_back(void **state)
{
    (void)state;
    eb_shm_segment *seg = make_segment(100000);
    const char *name = eb_shm_segment_name(seg);
    uid_t uid;
    pid_t pid;
    assert_true(eb_shm_name_parse(name, &uid, &pid));
    assert_int_equal(uid, geteuid());
    assert_int_equal(pid, getpid());
    uint64_t size = eb_shm_segment_size(seg);
    assert_int_equal(size % 4096, 0);
    assert_true(eb_shm_segment_data_size(seg) >= 100000);
    assert_int_equal(size, EB_SHM_HEADER_SIZE + eb_shm_segment_data_size(seg));
    assert_int_equal(eb_shm_segment_bytes_free(seg), eb_shm_segment_data_size(seg));
    assert_int_not_equal(eb_shm_segment_epoch(seg), 0);

    /* The object is private to us and fully sized. */
    char path[128];
    snprintf(path, sizeof path, "/dev/shm%s", name);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal((uint64_t)st.st_size, size);
    assert_true((uint64_t)st.st_blocks * 512 >= size); /* reserved, not sparse */

    eb_shm_reader *reader = attach(name);
    assert_string_equal(eb_shm_reader_name(reader), name);
    assert_int_equal(eb_shm_reader_size(reader), size);
    assert_int_equal(eb_shm_reader_version(reader), EB_SHM_VERSION);
    assert_int_equal(eb_shm_reader_epoch(reader), eb_shm_segment_epoch(seg));
    assert_int_equal(eb_shm_reader_owner_pid(reader), getpid());
    assert_int_equal(eb_shm_reader_owner_uid(reader), geteuid());
    uint64_t start;
    assert_int_equal(eb_shm_owner_starttime(0, &start), EB_OK);
    assert_int_equal(eb_shm_reader_owner_starttime(reader), start);

    /* Bytes written by the owner come out identical. */
    eb_shm_ref ref;
    uint8_t *data = NULL;
    char err[256];
    assert_int_equal(eb_shm_segment_alloc(seg, 1000, 0, &ref, (void **)&data, err, sizeof err),
                     EB_OK);
    assert_int_equal(ref.offset % EB_SHM_ALIGN, 0);
    assert_true(ref.offset >= EB_SHM_HEADER_SIZE);
    assert_int_equal(ref.length, 1000);
    assert_ptr_equal(eb_shm_segment_region(seg, &ref), data);
    for (int i = 0; i < 1000; i++)
        data[i] = (uint8_t)(i * 7 + 3);
    uint8_t out[1000];
    memset(out, 0, sizeof out);
    assert_int_equal(eb_shm_reader_copy(reader, &ref, out, sizeof out, err, sizeof err), EB_OK);
    assert_memory_equal(out, data, 1000);
    assert_int_equal(eb_shm_segment_free(seg, &ref), EB_OK);

    eb_shm_reader_destroy(&reader);
    assert_null(reader);
    eb_shm_segment_destroy(&seg);
    assert_null(seg);
    assert_false(shm_exists(path + strlen("/dev/shm")));
    eb_shm_segment_destroy(&seg); /* NULL is fine */

    assert_int_equal(eb_shm_segment_create(0, &seg, err, sizeof err), EB_ERR_INVALID);
    assert_null(seg);
}

/* ---- allocator ----------------------------------------------------------------------------- */

#define THREADS 8
#define ITERATIONS 400
#define MAX_LIVE 8
#define MAX_REGION (24 * 1024)

typedef struct alloc_shared {
    eb_shm_segment *seg;
    pthread_mutex_t map_lock;
    uint8_t *chunk_owner; /* one entry per EB_SHM_ALIGN chunk of the segment: 0 or thread+1 */
    atomic_int failures;
    atomic_int allocations;
    atomic_int busy;
} alloc_shared;

typedef struct alloc_thread {
    alloc_shared *shared;
    int id;
} alloc_thread;

typedef struct live_region {
    eb_shm_ref ref;
    uint8_t *data;
    uint8_t pattern;
} live_region;

/* Mark (or unmark) the chunks of a region; counts a failure on any overlap. */
static void claim_chunks(alloc_shared *shared, const eb_shm_ref *ref, uint8_t owner, bool claim)
{
    uint64_t first = ref->offset / EB_SHM_ALIGN;
    uint64_t last = (ref->offset + ref->length - 1) / EB_SHM_ALIGN;
    pthread_mutex_lock(&shared->map_lock);
    for (uint64_t c = first; c <= last; c++) {
        if (claim) {
            if (shared->chunk_owner[c] != 0)
                atomic_fetch_add(&shared->failures, 1);
            shared->chunk_owner[c] = owner;
        } else {
            if (shared->chunk_owner[c] != owner)
                atomic_fetch_add(&shared->failures, 1);
            shared->chunk_owner[c] = 0;
        }
    }
    pthread_mutex_unlock(&shared->map_lock);
}

static void release(alloc_shared *shared, live_region *region, uint8_t owner)
{
    for (uint64_t i = 0; i < region->ref.length; i++) {
        if (region->data[i] != region->pattern) {
            atomic_fetch_add(&shared->failures, 1); /* someone else wrote into our region */
            break;
        }
    }
    claim_chunks(shared, &region->ref, owner, false);
    if (eb_shm_segment_free(shared->seg, &region->ref) != EB_OK)
        atomic_fetch_add(&shared->failures, 1);
}

static void *alloc_worker(void *arg)
{
    alloc_thread *self = arg;
    alloc_shared *shared = self->shared;
    uint8_t owner = (uint8_t)(self->id + 1);
    unsigned seed = 1234u + (unsigned)self->id * 7919u;
    live_region live[MAX_LIVE];
    int live_count = 0;
    for (int it = 0; it < ITERATIONS; it++) {
        if (live_count == MAX_LIVE || (live_count > 0 && rand_r(&seed) % 3 == 0)) {
            int victim = rand_r(&seed) % live_count;
            release(shared, &live[victim], owner);
            live[victim] = live[--live_count];
            continue;
        }
        size_t len = 1 + (size_t)rand_r(&seed) % MAX_REGION;
        live_region *region = &live[live_count];
        void *data = NULL;
        eb_status status = eb_shm_segment_alloc(shared->seg, len, 0, &region->ref, &data, NULL, 0);
        if (status == EB_ERR_BUSY) {
            /* Full: give back everything we hold so nobody can starve, then go on. */
            atomic_fetch_add(&shared->busy, 1);
            while (live_count > 0)
                release(shared, &live[--live_count], owner);
            continue;
        }
        if (status != EB_OK || region->ref.length != len || region->ref.offset % EB_SHM_ALIGN) {
            atomic_fetch_add(&shared->failures, 1);
            continue;
        }
        region->data = data;
        region->pattern = (uint8_t)(owner * 16 + it % 16);
        claim_chunks(shared, &region->ref, owner, true);
        memset(region->data, region->pattern, len);
        live_count++;
        atomic_fetch_add(&shared->allocations, 1);
        if (it % 64 == 0)
            sched_yield();
    }
    while (live_count > 0)
        release(shared, &live[--live_count], owner);
    return NULL;
}

static void test_alloc_many_threads(void **state)
{
    (void)state;
    alloc_shared shared;
    memset(&shared, 0, sizeof shared);
    /* Small enough that 8 threads holding up to 8 regions each sometimes fill it. */
    shared.seg = make_segment(512 * 1024);
    uint64_t size = eb_shm_segment_size(shared.seg);
    uint64_t data_size = eb_shm_segment_data_size(shared.seg);
    shared.chunk_owner = calloc(size / EB_SHM_ALIGN, 1);
    assert_non_null(shared.chunk_owner);
    pthread_mutex_init(&shared.map_lock, NULL);

    pthread_t threads[THREADS];
    alloc_thread args[THREADS];
    for (int t = 0; t < THREADS; t++) {
        args[t] = (alloc_thread){&shared, t};
        assert_int_equal(pthread_create(&threads[t], NULL, alloc_worker, &args[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(threads[t], NULL);

    assert_int_equal(atomic_load(&shared.failures), 0);
    assert_true(atomic_load(&shared.allocations) > THREADS * ITERATIONS / 3);
    for (uint64_t c = 0; c < size / EB_SHM_ALIGN; c++)
        assert_int_equal(shared.chunk_owner[c], 0);
    /* Everything was merged back into one free run. */
    assert_int_equal(eb_shm_segment_bytes_free(shared.seg), data_size);
    eb_shm_ref whole;
    char err[256];
    assert_int_equal(eb_shm_segment_alloc(shared.seg, data_size, 0, &whole, NULL, err, sizeof err),
                     EB_OK);
    assert_int_equal(whole.offset, EB_SHM_HEADER_SIZE);
    assert_int_equal(eb_shm_segment_bytes_free(shared.seg), 0);
    assert_int_equal(eb_shm_segment_free(shared.seg, &whole), EB_OK);
    print_message("allocations=%d busy=%d\n", atomic_load(&shared.allocations),
                  atomic_load(&shared.busy));

    pthread_mutex_destroy(&shared.map_lock);
    free(shared.chunk_owner);
    eb_shm_segment_destroy(&shared.seg);
}

typedef struct delayed_free {
    eb_shm_segment *seg;
    eb_shm_ref ref;
    int delay_ms;
    eb_status status;
} delayed_free;

static void *free_later(void *arg)
{
    delayed_free *job = arg;
    eb_sleep_us((int64_t)job->delay_ms * 1000);
    job->status = eb_shm_segment_free(job->seg, &job->ref);
    return NULL;
}

static void test_alloc_full_policy(void **state)
{
    (void)state;
    eb_shm_segment *seg = make_segment(64 * 1024);
    uint64_t data_size = eb_shm_segment_data_size(seg);
    char err[256] = "";
    eb_shm_ref all, ref;
    memset(&ref, 0xAB, sizeof ref);
    eb_shm_ref untouched = ref;

    assert_int_equal(eb_shm_segment_alloc(seg, 0, 0, &ref, NULL, err, sizeof err), EB_ERR_INVALID);
    assert_int_equal(eb_shm_segment_alloc(seg, data_size + 1, 0, &ref, NULL, err, sizeof err),
                     EB_ERR_TOO_LARGE);
    assert_non_null(strstr(err, "inline"));
    /* Too large never waits, whatever the timeout. */
    int64_t t0 = eb_now_us();
    assert_int_equal(eb_shm_segment_alloc(seg, SIZE_MAX, 5000, &ref, NULL, err, sizeof err),
                     EB_ERR_TOO_LARGE);
    assert_true(eb_now_us() - t0 < 1000000);

    assert_int_equal(eb_shm_segment_alloc(seg, data_size, 0, &all, NULL, err, sizeof err), EB_OK);
    assert_int_equal(eb_shm_segment_alloc(seg, 1, 0, &ref, NULL, err, sizeof err), EB_ERR_BUSY);
    assert_memory_equal(&ref, &untouched, sizeof ref);
    t0 = eb_now_us();
    assert_int_equal(eb_shm_segment_alloc(seg, 1, 50, &ref, NULL, err, sizeof err),
                     EB_ERR_TIMEOUT);
    assert_true(eb_now_us() - t0 >= 50000);

    /* Another thread frees after 20 ms; a waiting allocation (100 ms) gets the space. */
    delayed_free job = {seg, all, 20, EB_ERR_INTERNAL};
    pthread_t thread;
    t0 = eb_now_us();
    assert_int_equal(pthread_create(&thread, NULL, free_later, &job), 0);
    eb_status status = eb_shm_segment_alloc(seg, 1000, 100, &ref, NULL, err, sizeof err);
    int64_t waited = eb_now_us() - t0;
    pthread_join(thread, NULL);
    if (status != EB_OK)
        fprintf(stderr, "waited %" PRId64 " us: %s\n", waited, err);
    assert_int_equal(status, EB_OK);
    assert_int_equal(job.status, EB_OK);
    assert_true(waited >= 15000); /* it really waited for the free */
    assert_int_equal(ref.offset, EB_SHM_HEADER_SIZE);
    assert_int_equal(eb_shm_segment_free(seg, &ref), EB_OK);
    assert_int_equal(eb_shm_segment_bytes_free(seg), data_size);
    eb_shm_segment_destroy(&seg);
}

static void test_free_rejects_bad_references(void **state)
{
    (void)state;
    eb_shm_segment *seg = make_segment(64 * 1024);
    uint64_t data_size = eb_shm_segment_data_size(seg);
    eb_shm_ref a, b;
    assert_int_equal(eb_shm_segment_alloc(seg, 100, 0, &a, NULL, NULL, 0), EB_OK);
    assert_int_equal(eb_shm_segment_alloc(seg, 200, 0, &b, NULL, NULL, 0), EB_OK);
    assert_int_equal(b.offset, a.offset + 128); /* 100 rounded up to 64-byte alignment */
    uint64_t free_before = eb_shm_segment_bytes_free(seg);
    assert_int_equal(free_before, data_size - 128 - 256);

    eb_shm_ref bad = a;
    bad.epoch ^= 1;
    assert_int_equal(eb_shm_segment_free(seg, &bad), EB_ERR_STALE);
    bad = a, bad.offset += 1;
    assert_int_equal(eb_shm_segment_free(seg, &bad), EB_ERR_INVALID); /* misaligned */
    bad = a, bad.offset = 0;
    assert_int_equal(eb_shm_segment_free(seg, &bad), EB_ERR_INVALID); /* header */
    bad = a, bad.offset = b.offset + 256; /* never allocated: free space */
    assert_int_equal(eb_shm_segment_free(seg, &bad), EB_ERR_INVALID);
    bad = a, bad.length = UINT64_MAX;
    assert_int_equal(eb_shm_segment_free(seg, &bad), EB_ERR_INVALID);
    assert_null(eb_shm_segment_region(seg, &bad));
    assert_int_equal(eb_shm_segment_bytes_free(seg), free_before);

    assert_int_equal(eb_shm_segment_free(seg, &a), EB_OK);
    assert_int_equal(eb_shm_segment_free(seg, &a), EB_ERR_INVALID); /* double free */
    assert_int_equal(eb_shm_segment_free(seg, &b), EB_OK);
    assert_int_equal(eb_shm_segment_free(seg, &b), EB_ERR_INVALID);
    assert_int_equal(eb_shm_segment_bytes_free(seg), data_size);
    eb_shm_segment_destroy(&seg);
}

/* ---- reader: references, nonce, attach errors --------------------------------------------- */

static void test_reader_rejects_bad_references(void **state)
{
    (void)state;
    eb_shm_segment *seg = make_segment(64 * 1024);
    uint64_t size = eb_shm_segment_size(seg);
    uint32_t epoch = eb_shm_segment_epoch(seg);
    eb_shm_reader *reader = attach(eb_shm_segment_name(seg));
    uint8_t *dst = malloc(size);
    assert_non_null(dst);
    char err[256];

    struct {
        uint64_t offset, length;
        eb_status want;
    } cases[] = {
        {EB_SHM_HEADER_SIZE, size - EB_SHM_HEADER_SIZE, EB_OK}, /* the whole data area */
        {size - 1, 1, EB_OK},                                   /* the last byte */
        {0, 10, EB_ERR_BOUNDS},                                 /* inside the header */
        {EB_SHM_HEADER_SIZE - 1, 10, EB_ERR_BOUNDS},            /* starts in the header */
        {EB_SHM_HEADER_SIZE, 0, EB_ERR_BOUNDS},                 /* empty */
        {EB_SHM_HEADER_SIZE, size - EB_SHM_HEADER_SIZE + 1, EB_ERR_BOUNDS}, /* one past end */
        {size, 1, EB_ERR_BOUNDS},
        {size + 4096, 1, EB_ERR_BOUNDS},
        {UINT64_MAX - 1, 10, EB_ERR_BOUNDS},     /* offset + length wraps */
        {EB_SHM_HEADER_SIZE, UINT64_MAX, EB_ERR_BOUNDS},
        {UINT64_MAX, UINT64_MAX, EB_ERR_BOUNDS},
        {size - 8, UINT64_MAX - size + 16, EB_ERR_BOUNDS}, /* wraps to a small sum */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        eb_shm_ref ref = {epoch, cases[i].offset, cases[i].length};
        eb_status got = eb_shm_reader_validate(reader, &ref, err, sizeof err);
        if (got != cases[i].want)
            fail_msg("case %zu {%" PRIu64 ", %" PRIu64 "}: got %d want %d", i, ref.offset,
                     ref.length, got, cases[i].want);
        dst[0] = 0x5A;
        got = eb_shm_reader_copy(reader, &ref, dst, size, err, sizeof err);
        assert_int_equal(got, cases[i].want);
        if (got != EB_OK)
            assert_int_equal(dst[0], 0x5A); /* nothing copied */
    }
    eb_shm_ref ok = {epoch, EB_SHM_HEADER_SIZE, 100};
    assert_int_equal(eb_shm_reader_copy(reader, &ok, dst, 99, err, sizeof err), EB_ERR_TOO_LARGE);
    eb_shm_ref stale = ok;
    stale.epoch = epoch + 1;
    assert_int_equal(eb_shm_reader_validate(reader, &stale, err, sizeof err), EB_ERR_STALE);
    assert_int_equal(eb_shm_reader_copy(reader, &stale, dst, size, err, sizeof err),
                     EB_ERR_STALE);
    assert_non_null(strstr(err, "epoch"));

    /* A reference into a destroyed segment does not fit its successor. */
    eb_shm_ref old_ref;
    assert_int_equal(eb_shm_segment_alloc(seg, 100, 0, &old_ref, NULL, NULL, 0), EB_OK);
    eb_shm_reader_destroy(&reader);
    eb_shm_segment_destroy(&seg);
    seg = make_segment(64 * 1024);
    reader = attach(eb_shm_segment_name(seg));
    if (eb_shm_segment_epoch(seg) != old_ref.epoch) /* equal with probability 2^-32 */
        assert_int_equal(eb_shm_reader_copy(reader, &old_ref, dst, size, err, sizeof err),
                         EB_ERR_STALE);

    free(dst);
    eb_shm_reader_destroy(&reader);
    eb_shm_segment_destroy(&seg);
}

static void test_nonce(void **state)
{
    (void)state;
    eb_shm_segment *seg = make_segment(4096);
    eb_shm_reader *reader = attach(eb_shm_segment_name(seg));
    uint8_t nonce[EB_SHM_NONCE_MAX];
    for (size_t i = 0; i < sizeof nonce; i++)
        nonce[i] = (uint8_t)(0xC3 ^ (i * 29));

    assert_false(eb_shm_reader_verify_nonce(reader, nonce, sizeof nonce)); /* none written yet */
    assert_int_equal(eb_shm_segment_write_nonce(seg, nonce, 0), EB_ERR_INVALID);
    assert_int_equal(eb_shm_segment_write_nonce(seg, nonce, EB_SHM_NONCE_MAX + 1),
                     EB_ERR_INVALID);
    assert_int_equal(eb_shm_segment_write_nonce(seg, nonce, sizeof nonce), EB_OK);
    /* Written after attach, still seen: the reader reads the nonce live. */
    assert_true(eb_shm_reader_verify_nonce(reader, nonce, sizeof nonce));
    assert_false(eb_shm_reader_verify_nonce(reader, nonce, sizeof nonce - 1));
    assert_false(eb_shm_reader_verify_nonce(reader, nonce, 0));
    assert_false(eb_shm_reader_verify_nonce(reader, nonce, EB_SHM_NONCE_MAX + 1));
    for (size_t i = 0; i < sizeof nonce; i += 7) {
        uint8_t wrong[EB_SHM_NONCE_MAX];
        memcpy(wrong, nonce, sizeof wrong);
        wrong[i] ^= 0x01;
        assert_false(eb_shm_reader_verify_nonce(reader, wrong, sizeof wrong));
    }
    /* A second nonce replaces the first. */
    uint8_t second[16] = "sixteen bytes!!";
    assert_int_equal(eb_shm_segment_write_nonce(seg, second, sizeof second), EB_OK);
    assert_true(eb_shm_reader_verify_nonce(reader, second, sizeof second));
    assert_false(eb_shm_reader_verify_nonce(reader, nonce, sizeof nonce));
    assert_false(eb_shm_reader_verify_nonce(reader, nonce, sizeof second));

    eb_shm_reader_destroy(&reader);
    eb_shm_segment_destroy(&seg);
}

static void test_attach_errors(void **state)
{
    (void)state;
    char err[256] = "";
    eb_shm_reader *reader = NULL;
    char name[EB_SHM_NAME_MAX];

    fresh_name(name, sizeof name, geteuid(), getpid());
    assert_int_equal(eb_shm_reader_attach(name, &reader, err, sizeof err), EB_ERR_NOT_FOUND);
    assert_null(reader);
    assert_non_null(strstr(err, name));
    assert_int_equal(eb_shm_reader_attach("/etc/passwd", &reader, err, sizeof err),
                     EB_ERR_INVALID);
    assert_int_equal(eb_shm_reader_attach("/PostgreSQL.1", &reader, err, sizeof err),
                     EB_ERR_INVALID);

    /* Right name, wrong contents. */
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 100), 0);
    assert_int_equal(eb_shm_reader_attach(name, &reader, err, sizeof err), EB_ERR_INVALID);
    assert_int_equal(ftruncate(fd, 8192), 0);
    assert_int_equal(pwrite(fd, "NOTMAGIC and some junk", 22, 0), 22);
    assert_int_equal(eb_shm_reader_attach(name, &reader, err, sizeof err), EB_ERR_INVALID);
    assert_non_null(strstr(err, "magic"));
    assert_null(reader);
    close(fd);
    assert_int_equal(shm_unlink(name), 0);

    /* A real segment whose object grew after creation: total_size disagrees. */
    eb_shm_segment *seg = make_segment(4096);
    fd = shm_open(eb_shm_segment_name(seg), O_RDWR, 0);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)eb_shm_segment_size(seg) + 4096), 0);
    close(fd);
    assert_int_equal(eb_shm_reader_attach(eb_shm_segment_name(seg), &reader, err, sizeof err),
                     EB_ERR_INVALID);
    assert_non_null(strstr(err, "total_size"));
    eb_shm_segment_destroy(&seg);
}

/* ---- truncation under an attached reader ------------------------------------------------- */

typedef struct copy_job {
    const eb_shm_reader *reader;
    eb_shm_ref ref;
    uint8_t *dst;
    size_t cap;
    eb_status status;
    char err[256];
} copy_job;

static void *copy_in_thread(void *arg)
{
    copy_job *job = arg;
    job->status = eb_shm_reader_copy(job->reader, &job->ref, job->dst, job->cap, job->err,
                                     sizeof job->err);
    return NULL;
}

static void test_truncated_segment(void **state)
{
    (void)state;
    /* cmocka installs its own SIGBUS handler for every test, over ours: put ours back first,
     * as a program must after any library that installs handlers. */
    assert_int_equal(eb_shm_guard_install(), EB_OK);
    eb_shm_segment *seg = make_segment(1024 * 1024);
    const char *name = eb_shm_segment_name(seg);
    eb_shm_ref head, filler, tail;
    uint8_t *head_data, *tail_data;
    char err[256] = "";
    assert_int_equal(eb_shm_segment_alloc(seg, 3000, 0, &head, (void **)&head_data, NULL, 0),
                     EB_OK);
    assert_int_equal(eb_shm_segment_alloc(seg, 512 * 1024, 0, &filler, NULL, NULL, 0), EB_OK);
    assert_int_equal(eb_shm_segment_alloc(seg, 200000, 0, &tail, (void **)&tail_data, NULL, 0),
                     EB_OK);
    memset(head_data, 0x11, head.length);
    memset(tail_data, 0x22, tail.length);
    eb_shm_reader *reader = attach(name);
    uint8_t *dst = malloc(tail.length);
    assert_non_null(dst);
    assert_int_equal(eb_shm_reader_copy(reader, &tail, dst, tail.length, err, sizeof err), EB_OK);
    assert_int_equal(dst[tail.length - 1], 0x22);

    /* The owner shrinks its object behind the reader's back, keeping header and head region. */
    off_t new_size = (off_t)(head.offset + 4096);
    int fd = shm_open(name, O_RDWR, 0);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, new_size), 0);
    close(fd);

    /* The reference is still valid against the size recorded at attach, but its pages are gone:
     * the copy fails and we are still here. */
    assert_int_equal(eb_shm_reader_validate(reader, &tail, err, sizeof err), EB_OK);
    assert_int_equal(eb_shm_reader_copy(reader, &tail, dst, tail.length, err, sizeof err),
                     EB_ERR_IO);
    assert_non_null(strstr(err, "segment truncated"));
    /* A region straddling the new end fails too; the part that remains still copies. */
    eb_shm_ref straddle = {head.epoch, head.offset, 8192};
    assert_int_equal(eb_shm_reader_copy(reader, &straddle, dst, 8192, err, sizeof err),
                     EB_ERR_IO);
    memset(dst, 0, head.length);
    assert_int_equal(eb_shm_reader_copy(reader, &head, dst, head.length, err, sizeof err), EB_OK);
    for (uint64_t i = 0; i < head.length; i++)
        assert_int_equal(dst[i], 0x11);

    /* The guard works from any thread, repeatedly. */
    for (int round = 0; round < 3; round++) {
        copy_job jobs[2] = {{reader, tail, NULL, 0, EB_ERR_INTERNAL, ""},
                            {reader, head, NULL, 0, EB_ERR_INTERNAL, ""}};
        pthread_t threads[2];
        for (int j = 0; j < 2; j++) {
            jobs[j].cap = (size_t)jobs[j].ref.length;
            jobs[j].dst = malloc(jobs[j].cap);
            assert_non_null(jobs[j].dst);
            assert_int_equal(pthread_create(&threads[j], NULL, copy_in_thread, &jobs[j]), 0);
        }
        for (int j = 0; j < 2; j++)
            pthread_join(threads[j], NULL);
        assert_int_equal(jobs[0].status, EB_ERR_IO);
        assert_non_null(strstr(jobs[0].err, "segment truncated"));
        assert_int_equal(jobs[1].status, EB_OK);
        assert_int_equal(jobs[1].dst[head.length - 1], 0x11);
        free(jobs[0].dst);
        free(jobs[1].dst);
    }

    /* Even the header gone: nonce checks fail, nothing crashes, re-attach is refused. */
    fd = shm_open(name, O_RDWR, 0);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 0), 0);
    close(fd);
    uint8_t nonce[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_false(eb_shm_reader_verify_nonce(reader, nonce, sizeof nonce));
    eb_shm_reader *again = NULL;
    assert_int_equal(eb_shm_reader_attach(name, &again, err, sizeof err), EB_ERR_INVALID);

    free(dst);
    eb_shm_reader_destroy(&reader);
    eb_shm_segment_destroy(&seg);
}

static void exit_42(int sig, siginfo_t *info, void *context)
{
    (void)sig, (void)info, (void)context;
    _exit(42);
}

/* In a child: set `previous` as the SIGBUS handler, install the guard over it, then read past
 * the end of a truncated mapping outside any guarded copy. Returns the child's wait status. */
static int fault_outside_guard(bool custom_previous)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, STDERR_FILENO); /* silence the sanitizer's report in SAN builds */
        struct sigaction previous;
        memset(&previous, 0, sizeof previous);
        sigemptyset(&previous.sa_mask);
        if (custom_previous) {
            previous.sa_sigaction = exit_42;
            previous.sa_flags = SA_SIGINFO;
        } else {
            previous.sa_handler = SIG_DFL; /* replaces cmocka's (which would longjmp) */
        }
        if (sigaction(SIGBUS, &previous, NULL) != 0 || eb_shm_guard_install() != EB_OK)
            _exit(3);
        eb_shm_segment *seg = NULL;
        if (eb_shm_segment_create(64 * 1024, &seg, NULL, 0) != EB_OK)
            _exit(3);
        eb_shm_ref ref;
        volatile uint8_t *data = NULL;
        if (eb_shm_segment_alloc(seg, 32 * 1024, 0, &ref, (void **)&data, NULL, 0) != EB_OK)
            _exit(3);
        int fd = shm_open(eb_shm_segment_name(seg), O_RDWR, 0);
        if (fd < 0 || ftruncate(fd, 0) != 0)
            _exit(3);
        shm_unlink(eb_shm_segment_name(seg));
        /* A guarded copy that faults first: the guard is live and handles its own fault. */
        uint8_t buf[16];
        if (eb_shm_guard_copy(buf, (const void *)(data + ref.length - 16), 16) != EB_ERR_IO)
            _exit(4);
        uint8_t value = data[ref.length - 1]; /* unguarded read past the end: SIGBUS */
        _exit(value == 0 ? 0 : 0);            /* reached only if the fault was swallowed */
    }
    int wstatus;
    assert_int_equal(waitpid(pid, &wstatus, 0), pid);
    return wstatus;
}

/* A SIGBUS outside any guarded copy is not swallowed: it goes to the previous handler, or kills
 * the process when there was none. */
static void test_guard_passes_on_foreign_faults(void **state)
{
    (void)state;
    int wstatus = fault_outside_guard(true);
    assert_true(WIFEXITED(wstatus));
    assert_int_equal(WEXITSTATUS(wstatus), 42);

    wstatus = fault_outside_guard(false);
    if (WIFEXITED(wstatus)) {
        assert_int_not_equal(WEXITSTATUS(wstatus), 3); /* setup failed */
        assert_int_not_equal(WEXITSTATUS(wstatus), 4); /* guarded copy did not fail */
        assert_int_not_equal(WEXITSTATUS(wstatus), 0); /* the fault was swallowed */
    } else {
        assert_true(WIFSIGNALED(wstatus));
        assert_int_equal(WTERMSIG(wstatus), SIGBUS);
    }
}

/* ---- cleanup ------------------------------------------------------------------------------- */

static void test_cleanup_removes_killed_owner(void **state)
{
    (void)state;
    char name[EB_SHM_NAME_MAX];
    pid_t child = spawn_owner(name, sizeof name);
    assert_true(shm_exists(name));
    eb_shm_reader *reader = attach(name);
    assert_int_equal(eb_shm_reader_owner_pid(reader), child);
    uint64_t child_start = eb_shm_reader_owner_starttime(reader);
    assert_true(eb_shm_owner_alive(child, child_start));

    /* Killed but not yet reaped (a zombie): already dead for cleanup. */
    assert_int_equal(kill(child, SIGKILL), 0);
    siginfo_t info;
    assert_int_equal(waitid(P_PID, (id_t)child, &info, WEXITED | WNOWAIT), 0);
    assert_false(eb_shm_owner_alive(child, child_start));
    size_t removed = 0;
    assert_int_equal(eb_shm_cleanup_dead(geteuid(), &removed), EB_OK);
    assert_true(removed >= 1);
    assert_false(shm_exists(name));
    int wstatus;
    assert_int_equal(waitpid(child, &wstatus, 0), child);

    /* Our mapping outlives the unlink. */
    uint8_t header[16];
    eb_shm_ref ref = {eb_shm_reader_epoch(reader), EB_SHM_HEADER_SIZE, sizeof header};
    assert_int_equal(eb_shm_reader_copy(reader, &ref, header, sizeof header, NULL, 0), EB_OK);
    eb_shm_reader_destroy(&reader);
}

static void test_cleanup_keeps_live_owners(void **state)
{
    (void)state;
    char child_name[EB_SHM_NAME_MAX];
    pid_t child = spawn_owner(child_name, sizeof child_name);
    eb_shm_segment *own = make_segment(4096);
    size_t removed = 99;
    assert_int_equal(eb_shm_cleanup_dead(geteuid(), &removed), EB_OK);
    assert_true(shm_exists(child_name));
    assert_true(shm_exists(eb_shm_segment_name(own)));

    /* Once the child is dead and reaped, its segment goes; ours stays. */
    kill_and_reap(child);
    assert_int_equal(eb_shm_cleanup_dead(geteuid(), &removed), EB_OK);
    assert_true(removed >= 1);
    assert_false(shm_exists(child_name));
    assert_true(shm_exists(eb_shm_segment_name(own)));
    eb_shm_segment_destroy(&own);
}

static void test_cleanup_detects_reused_pid(void **state)
{
    (void)state;
    /* Our own segment, but the header claims a different start time for our pid: the process
     * that created it is gone and the pid now belongs to someone else (us). */
    eb_shm_segment *seg = make_segment(4096);
    char name[EB_SHM_NAME_MAX];
    snprintf(name, sizeof name, "%s", eb_shm_segment_name(seg));
    uint64_t start;
    assert_int_equal(eb_shm_owner_starttime(0, &start), EB_OK);
    uint64_t bogus = start + 12345;
    int fd = shm_open(name, O_RDWR, 0);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, &bogus, sizeof bogus, offsetof(eb_shm_header, owner_starttime)),
                     (ssize_t)sizeof bogus);
    close(fd);
    size_t removed = 0;
    assert_int_equal(eb_shm_cleanup_dead(geteuid(), &removed), EB_OK);
    assert_true(removed >= 1);
    assert_false(shm_exists(name));
    eb_shm_segment_destroy(&seg); /* its name is already gone: fine */
}

static void test_cleanup_without_header_and_other_uids(void **state)
{
    (void)state;
    uid_t uid = geteuid();
    char dead_owner[EB_SHM_NAME_MAX], live_owner[EB_SHM_NAME_MAX], other_uid[EB_SHM_NAME_MAX];
    char chowned[EB_SHM_NAME_MAX];
    pid_t gone = dead_pid();
    fresh_name(dead_owner, sizeof dead_owner, uid, gone);  /* creator died before the header */
    fresh_name(live_owner, sizeof live_owner, uid, getpid()); /* creator still creating */
    fresh_name(other_uid, sizeof other_uid, uid + 1, gone);   /* someone else's name */
    fresh_name(chowned, sizeof chowned, uid, gone);          /* our name, someone else's object */
    const char *names[] = {dead_owner, live_owner, other_uid, chowned};
    for (int i = 0; i < 4; i++) {
        int fd = shm_open(names[i], O_CREAT | O_EXCL | O_RDWR, 0600);
        assert_true(fd >= 0);
        close(fd);
    }
    bool chown_done = uid == 0; /* only root can give an object away */
    if (chown_done) {
        char path[128];
        snprintf(path, sizeof path, "/dev/shm%s", chowned);
        chown_done = chown(path, uid + 1000, (gid_t)-1) == 0;
    }

    size_t removed = 0;
    assert_int_equal(eb_shm_cleanup_dead(uid, &removed), EB_OK);
    assert_false(shm_exists(dead_owner));
    assert_true(shm_exists(live_owner));
    assert_true(shm_exists(other_uid));
    if (chown_done)
        assert_true(shm_exists(chowned));
    /* Cleaning for the other uid does not touch our object either (st_uid is checked). */
    assert_int_equal(eb_shm_cleanup_dead(uid + 1, &removed), EB_OK);
    assert_true(shm_exists(other_uid));
    if (!chown_done)
        print_message("not root: skipped the st_uid check of a chowned object\n");

    /* eb_shm_cleanup_unlink checks the same two things. */
    assert_int_equal(eb_shm_cleanup_unlink(other_uid, uid), EB_ERR_INVALID);
    assert_int_equal(eb_shm_cleanup_unlink("/PostgreSQL.1", uid), EB_ERR_INVALID);
    if (chown_done) {
        assert_int_equal(eb_shm_cleanup_unlink(chowned, uid), EB_ERR_DENIED);
        assert_true(shm_exists(chowned));
    }
    assert_int_equal(eb_shm_cleanup_unlink(live_owner, uid), EB_OK);
    assert_false(shm_exists(live_owner));
    assert_int_equal(eb_shm_cleanup_unlink(live_owner, uid), EB_OK); /* already gone */

    shm_unlink(other_uid);
    shm_unlink(chowned);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_parse),
        cmocka_unit_test(test_owner_alive),
        cmocka_unit_test(test_create_and_read_back),
        cmocka_unit_test(test_alloc_many_threads),
        cmocka_unit_test(test_alloc_full_policy),
        cmocka_unit_test(test_free_rejects_bad_references),
        cmocka_unit_test(test_reader_rejects_bad_references),
        cmocka_unit_test(test_nonce),
        cmocka_unit_test(test_attach_errors),
        cmocka_unit_test(test_truncated_segment),
        cmocka_unit_test(test_guard_passes_on_foreign_faults),
        cmocka_unit_test(test_cleanup_removes_killed_owner),
        cmocka_unit_test(test_cleanup_keeps_live_owners),
        cmocka_unit_test(test_cleanup_detects_reused_pid),
        cmocka_unit_test(test_cleanup_without_header_and_other_uids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
