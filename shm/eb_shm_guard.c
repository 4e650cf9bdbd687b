/* eb_shm_guard — SIGBUS-guarded copies out of shared mappings.
 *
 * The idea: a thread about to copy from a mapping records, in thread-local storage, a jump
 * buffer and the source range. One process-wide SIGBUS handler looks at the faulting thread's
 * record: when the fault is a kernel-raised bus error inside that range, it siglongjmps back
 * into eb_shm_guard_copy, which reports EB_ERR_IO. Otherwise the fault is not ours and goes to
 * the handler that was installed before us (AddressSanitizer's, a crash reporter's) or to the
 * default action. Because the record is per thread, any number of threads may copy at once and
 * a fault on one never disturbs another.
 *
 * The handler is installed lazily by the first guarded copy. A library that installs its own
 * SIGBUS handler later (a test framework does, per test) switches the guard off until
 * eb_shm_guard_install is called again, which puts ours back in front and chains to the
 * newcomer.
 *
 * sigsetjmp is called without saving the signal mask (saving it costs a system call per copy);
 * after a jump the handler's blocking of SIGBUS is undone by hand instead.
 */
#include "eb_shm_guard.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdbool.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "eb_log.h"

static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned installs; /* how often we (re)installed; guarded by install_lock */
static atomic_bool installed_once;
static struct sigaction previous_action;
static uintptr_t page_size = 4096; /* set at install: sysconf is not async-signal-safe */

/* The current thread's guarded copy, or NULL. Written only by the thread itself and read by its
 * own signal handler, so plain thread-local variables suffice (with signal fences). */
static _Thread_local sigjmp_buf *guard_jump;
static _Thread_local uintptr_t guard_lo, guard_hi;

/* Hand a fault that is not ours to whoever handled SIGBUS before us. */
static void chain_to_previous(int sig, siginfo_t *info, void *context)
{
    if (previous_action.sa_flags & SA_SIGINFO) {
        if (previous_action.sa_sigaction) {
            previous_action.sa_sigaction(sig, info, context);
            return;
        }
    } else if (previous_action.sa_handler == SIG_IGN) {
        return;
    } else if (previous_action.sa_handler != SIG_DFL && previous_action.sa_handler != NULL) {
        previous_action.sa_handler(sig);
        return;
    }
    /* Default action: restore it and make the signal pending again. SIGBUS is blocked while this
     * handler runs, so the re-raised signal is delivered (and kills) as soon as we return; a
     * fault from an instruction would also simply recur. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(SIGBUS, &dfl, NULL);
    raise(SIGBUS);
}

static void on_sigbus(int sig, siginfo_t *info, void *context)
{
    sigjmp_buf *jump = guard_jump;
    if (jump && info && info->si_code > 0) {
        /* Page-round the range: the kernel reports the exact address, but be generous. */
        uintptr_t addr = (uintptr_t)info->si_addr;
        uintptr_t lo = guard_lo & ~(page_size - 1);
        if (addr >= lo && addr < guard_hi) {
            guard_jump = NULL;
            siglongjmp(*jump, 1);
        }
    }
    int saved_errno = errno;
    chain_to_previous(sig, info, context);
    errno = saved_errno;
}

/* Make on_sigbus the current handler, remembering the one it replaces (lock held). */
static eb_status install_locked(void)
{
    struct sigaction current;
    if (sigaction(SIGBUS, NULL, &current) != 0)
        return EB_ERR_IO;
    if ((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == on_sigbus)
        return EB_OK;
    long page = sysconf(_SC_PAGESIZE);
    if (page > 0)
        page_size = (uintptr_t)page;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    /* Block SIGBUS while previous_action changes so our own handler never reads it torn. */
    sigset_t bus, old_mask;
    sigemptyset(&bus);
    sigaddset(&bus, SIGBUS);
    pthread_sigmask(SIG_BLOCK, &bus, &old_mask);
    int rc = sigaction(SIGBUS, &action, &previous_action);
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    if (rc != 0)
        return EB_ERR_IO;
    if (installs++ > 0)
        eb_log_debug("shm_guard_reinstalled", "reason=another SIGBUS handler replaced ours");
    atomic_store_explicit(&installed_once, true, memory_order_release);
    return EB_OK;
}

static bool guard_is_current(void)
{
    struct sigaction current;
    return sigaction(SIGBUS, NULL, &current) == 0 && (current.sa_flags & SA_SIGINFO) &&
           current.sa_sigaction == on_sigbus;
}

eb_status eb_shm_guard_install(void)
{
    if (guard_is_current())
        return EB_OK;
    pthread_mutex_lock(&install_lock);
    eb_status status = install_locked();
    pthread_mutex_unlock(&install_lock);
    return status;
}

eb_status eb_shm_guard_copy(void *dst, const void *src, size_t len)
{
    if (len == 0)
        return EB_OK;
    if (!atomic_load_explicit(&installed_once, memory_order_acquire)) {
        eb_status status = eb_shm_guard_install();
        if (status != EB_OK)
            return status;
    }

    sigjmp_buf jump;
    if (sigsetjmp(jump, 0) != 0) {
        /* Back from the handler, which ran with SIGBUS blocked and did not return normally. */
        sigset_t bus;
        sigemptyset(&bus);
        sigaddset(&bus, SIGBUS);
        pthread_sigmask(SIG_UNBLOCK, &bus, NULL);
        return EB_ERR_IO;
    }
    guard_lo = (uintptr_t)src;
    guard_hi = (uintptr_t)src + len;
    guard_jump = &jump;
    atomic_signal_fence(memory_order_seq_cst);
    memcpy(dst, src, len);
    atomic_signal_fence(memory_order_seq_cst);
    guard_jump = NULL;
    return EB_OK;
}
