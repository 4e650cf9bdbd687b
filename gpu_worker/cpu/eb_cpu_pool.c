/* eb_cpu_pool — fork-join threads for the CPU backend (see eb_cpu_pool.h).
 *
 * A job is published by bumping a generation counter; each worker owns a fixed range index,
 * runs its range and increments a done counter the caller waits on. Workers spin for a short
 * while on the generation before sleeping on a condition variable: during a forward the next
 * op arrives within microseconds, and a futex wake-up per op would cost more than small ops.
 */
#include "eb_cpu_pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

// How many spin iterations a worker waits for the next job before sleeping (~50-100 µs).
#define SPIN_ITERATIONS 20000

typedef struct worker {
    struct eb_cpu_pool *pool;
    int index;
    pthread_t thread;
} worker;

struct eb_cpu_pool {
    int n_threads;
    worker *workers; // n_threads - 1 entries; worker i runs range i + 1

    pthread_mutex_t mutex;
    pthread_cond_t wake;
    atomic_uint_fast64_t generation; // bumped once per job
    atomic_int done;                 // workers finished with the current job
    atomic_bool stop;
    atomic_int sleepers;

    // Current job (written by the caller before bumping generation).
    eb_cpu_task_fn fn;
    void *arg;
    int64_t n;
    int ranges;
    int64_t chunk;            // > 0: dynamic job, chunks claimed from `next`
    atomic_int_fast64_t next; // next chunk index of a dynamic job
};

static void range_of(int64_t n, int ranges, int i, int64_t *begin, int64_t *end)
{
    *begin = n * i / ranges;
    *end = n * (i + 1) / ranges;
}

// Claim and run chunks of the current dynamic job until none is left.
static void run_chunks(eb_cpu_pool *pool, int thread_index)
{
    for (;;) {
        int64_t i = atomic_fetch_add_explicit(&pool->next, 1, memory_order_relaxed);
        int64_t b = i * pool->chunk;
        if (b >= pool->n)
            return;
        int64_t e = b + pool->chunk < pool->n ? b + pool->chunk : pool->n;
        pool->fn(pool->arg, b, e, thread_index);
    }
}

static void *worker_main(void *p)
{
    worker *w = p;
    eb_cpu_pool *pool = w->pool;
    uint_fast64_t seen = 0;
    for (;;) {
        uint_fast64_t gen;
        int spins = 0;
        while ((gen = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen &&
               !atomic_load(&pool->stop)) {
            if (++spins < SPIN_ITERATIONS) {
                CPU_RELAX();
                continue;
            }
            pthread_mutex_lock(&pool->mutex);
            atomic_fetch_add(&pool->sleepers, 1);
            while (atomic_load(&pool->generation) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->wake, &pool->mutex);
            atomic_fetch_sub(&pool->sleepers, 1);
            pthread_mutex_unlock(&pool->mutex);
            spins = 0;
        }
        if (atomic_load(&pool->stop))
            return NULL;
        seen = gen;
        if (pool->chunk > 0) {
            run_chunks(pool, w->index);
        } else if (w->index < pool->ranges) {
            int64_t b, e;
            range_of(pool->n, pool->ranges, w->index, &b, &e);
            if (e > b)
                pool->fn(pool->arg, b, e, w->index);
        }
        atomic_fetch_add_explicit(&pool->done, 1, memory_order_release);
    }
}

eb_cpu_pool *eb_cpu_pool_create(int n_threads)
{
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    eb_cpu_pool *pool = calloc(1, sizeof(*pool));
    if (!pool)
        return NULL;
    pool->n_threads = n_threads;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->wake, NULL);
    atomic_init(&pool->generation, 0);
    atomic_init(&pool->done, 0);
    atomic_init(&pool->stop, false);
    atomic_init(&pool->sleepers, 0);
    atomic_init(&pool->next, 0);
    if (n_threads > 1) {
        pool->workers = calloc((size_t)n_threads - 1, sizeof(worker));
        if (!pool->workers)
            goto fail;
        for (int i = 0; i < n_threads - 1; i++) {
            pool->workers[i].pool = pool;
            pool->workers[i].index = i + 1;
            if (pthread_create(&pool->workers[i].thread, NULL, worker_main, &pool->workers[i])) {
                pool->n_threads = i + 1; // join the ones that started
                goto fail;
            }
        }
    }
    return pool;
fail:
    eb_cpu_pool_destroy(&pool);
    return NULL;
}

void eb_cpu_pool_destroy(eb_cpu_pool **pp)
{
    if (!pp || !*pp)
        return;
    eb_cpu_pool *pool = *pp;
    pthread_mutex_lock(&pool->mutex);
    atomic_store(&pool->stop, true);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    if (pool->workers)
        for (int i = 0; i < pool->n_threads - 1; i++)
            pthread_join(pool->workers[i].thread, NULL);
    free(pool->workers);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mutex);
    free(pool);
    *pp = NULL;
}

int eb_cpu_pool_threads(const eb_cpu_pool *pool)
{
    return pool->n_threads;
}

// Publish the job written into *pool, run the caller's share (range 0, or chunks), and wait
// for every worker.
static void publish_and_wait(eb_cpu_pool *pool, bool static_ranges)
{
    atomic_store_explicit(&pool->done, 0, memory_order_relaxed);
    atomic_fetch_add(&pool->generation, 1); // seq_cst: pairs with the sleepers check below
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->mutex);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->mutex);
    }
    if (static_ranges) {
        int64_t b, e;
        range_of(pool->n, pool->ranges, 0, &b, &e);
        pool->fn(pool->arg, b, e, 0);
    } else {
        run_chunks(pool, 0);
    }
    int workers = pool->n_threads - 1;
    // Spin briefly (the other ranges usually finish within microseconds of ours), then yield:
    // on an oversubscribed machine the worker we wait for may need our core to run at all.
    int spins = 0;
    while (atomic_load_explicit(&pool->done, memory_order_acquire) < workers) {
        if (++spins < 4096)
            CPU_RELAX();
        else
            sched_yield();
    }
}

void eb_cpu_pool_run(eb_cpu_pool *pool, int64_t n, eb_cpu_task_fn fn, void *arg)
{
    if (n <= 0)
        return;
    int ranges = pool->n_threads;
    if (n < ranges)
        ranges = (int)n;
    if (ranges <= 1) {
        fn(arg, 0, n, 0);
        return;
    }
    pool->fn = fn;
    pool->arg = arg;
    pool->n = n;
    pool->ranges = ranges;
    pool->chunk = 0;
    publish_and_wait(pool, true);
}

void eb_cpu_pool_run_dynamic(eb_cpu_pool *pool, int64_t n, int64_t chunk, eb_cpu_task_fn fn,
                             void *arg)
{
    if (n <= 0)
        return;
    if (chunk < 1)
        chunk = 1;
    if (pool->n_threads <= 1 || n <= chunk) {
        fn(arg, 0, n, 0);
        return;
    }
    pool->fn = fn;
    pool->arg = arg;
    pool->n = n;
    pool->ranges = pool->n_threads;
    pool->chunk = chunk;
    atomic_store_explicit(&pool->next, 0, memory_order_relaxed);
    publish_and_wait(pool, false);
}
