/* eb_shm_guard — copy bytes out of a mapping that another process may shrink at any moment.
 *
 * Touching a page of a MAP_SHARED mapping that lies past the current end of its file raises
 * SIGBUS. A reader cannot prevent that (checking the size first races with the owner's
 * ftruncate), so the copy itself runs under a guard: a process-wide SIGBUS handler that, when
 * the fault happens inside a guarded copy on the faulting thread, jumps back out of the copy
 * and makes it fail. Faults anywhere else are passed on to whatever handler was installed
 * before (or the default action, which kills the process), so genuine bugs still crash.
 */
#ifndef EB_SHM_GUARD_H
#define EB_SHM_GUARD_H

#include <stddef.h>

#include "eb_status.h"

/* Install the SIGBUS handler once per process (later calls do nothing). eb_shm_guard_copy calls
 * it itself; call it early yourself only to control ordering: a handler installed by someone
 * else AFTER this one replaces it and disables the guard, one installed before is chained to.
 * EB_OK, or EB_ERR_IO when sigaction fails. Thread-safe. */
eb_status eb_shm_guard_install(void);

/* Copy len bytes from src (inside a shared mapping) to dst (private memory). EB_OK, or
 * EB_ERR_IO when reading src raised SIGBUS (the object was truncated under the mapping); dst
 * then holds an unspecified prefix of the bytes. Does not check that src is mapped at all: an
 * address that is not mapped still crashes (SIGSEGV), as it should for a bug. Callable from any
 * thread, concurrently; not async-signal-safe. len 0 copies nothing. */
eb_status eb_shm_guard_copy(void *dst, const void *src, size_t len);

#endif
