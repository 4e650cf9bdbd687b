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

/* Make the guard's SIGBUS handler the current one, remembering the handler it replaces (faults
 * outside guarded copies go there). Does nothing when it is already current. The first
 * eb_shm_guard_copy calls it; call it yourself (at startup, after other libraries set up their
 * signal handlers) when something may have installed a SIGBUS handler after the guard did: that
 * handler would otherwise receive guarded faults and the guard would not work. Do not call it
 * over a handler that itself chains back to ours (the two would hand a foreign fault back and
 * forth). EB_OK, or EB_ERR_IO when sigaction fails. Thread-safe. */
eb_status eb_shm_guard_install(void);

/* Copy len bytes from src (inside a shared mapping) to dst (private memory). EB_OK, or
 * EB_ERR_IO when reading src raised SIGBUS (the object was truncated under the mapping); dst
 * then holds an unspecified prefix of the bytes. Does not check that src is mapped at all: an
 * address that is not mapped still crashes (SIGSEGV), as it should for a bug. Callable from any
 * thread, concurrently; not async-signal-safe. len 0 copies nothing. */
eb_status eb_shm_guard_copy(void *dst, const void *src, size_t len);

#endif
