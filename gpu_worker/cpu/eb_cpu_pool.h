/* eb_cpu_pool — a tiny fork-join thread pool for the CPU backend's ops.
 *
 * eb_cpu_pool_run(pool, n, fn, arg) splits [0, n) into one contiguous range per thread (the
 * calling thread takes range 0) and returns when every range is done. The split depends only
 * on n and the thread count, never on timing, so results are reproducible. Workers spin briefly
 * after each job (ops come in quick succession during a forward) and then sleep on a condition
 * variable, so an idle worker costs nothing. eb_cpu_pool_run_dynamic instead hands out small
 * chunks on demand, for work whose results do not depend on who computes what.
 *
 * Not reentrant: fn must not call eb_cpu_pool_run on the same pool. One caller thread at a time.
 */
#ifndef EB_CPU_POOL_H
#define EB_CPU_POOL_H

#include <stdint.h>

typedef struct eb_cpu_pool eb_cpu_pool;

/* Work on [begin, end) as thread `thread_index` (0 = the caller, < eb_cpu_pool_threads()). */
typedef void (*eb_cpu_task_fn)(void *arg, int64_t begin, int64_t end, int thread_index);

/* A pool of n_threads compute threads in total (the caller counts as one, so n_threads - 1
 * workers are started; n_threads <= 0 means the number of online CPUs). NULL on failure.
 * The caller owns the pool: eb_cpu_pool_destroy(). */
eb_cpu_pool *eb_cpu_pool_create(int n_threads);

/* Stop and join the workers, free *pool and set it to NULL (NULL is fine). */
void eb_cpu_pool_destroy(eb_cpu_pool **pool);

/* Total compute threads (workers + caller). */
int eb_cpu_pool_threads(const eb_cpu_pool *pool);

/* Run fn over [0, n) split into min(threads, n) contiguous ranges; returns when all are done.
 * n <= 0 does nothing. */
void eb_cpu_pool_run(eb_cpu_pool *pool, int64_t n, eb_cpu_task_fn fn, void *arg);

/* Like eb_cpu_pool_run, but [0, n) is cut into chunks of `chunk` (> 0) that the threads claim
 * one at a time (an atomic counter), so a thread the OS has paused does not hold up a fixed
 * share of the work: on a busy machine the others take it over. Which thread runs a chunk then
 * depends on timing, so fn's results must not depend on thread_index or on the chunking (only
 * per-thread scratch may be picked by thread_index). Returns when every chunk is done. */
void eb_cpu_pool_run_dynamic(eb_cpu_pool *pool, int64_t n, int64_t chunk, eb_cpu_task_fn fn,
                             void *arg);

#endif
