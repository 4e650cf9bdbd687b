/* eb_shm_owner — is the process that created a segment still alive?
 *
 * A pid alone cannot say: pids are reused, so a new process may carry a dead owner's pid. The
 * pair (pid, start time) can: the start time (field 22 of /proc/<pid>/stat, clock ticks since
 * boot) of a reused pid differs from the original's. Linux only; pids are those of the caller's
 * pid namespace, so owner and checker must share it (they do when they share /dev/shm in
 * practice, but containers with a shared /dev/shm and separate pid namespaces are not supported).
 */
#ifndef EB_SHM_OWNER_H
#define EB_SHM_OWNER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "eb_status.h"

/* The start time of process `pid` (0 means the calling process) into *starttime. EB_OK;
 * EB_ERR_NOT_FOUND when no such process exists or it is a zombie (it has exited and can no
 * longer use anything); EB_ERR_IO when /proc cannot be read or parsed. Thread-safe. */
eb_status eb_shm_owner_starttime(pid_t pid, uint64_t *starttime);

/* True when process `pid` (> 0; anything else is never alive) exists, has not exited (zombies
 * count as dead) and started at `starttime`. When /proc cannot be read for another reason
 * (permissions, hidepid) the answer is true: cleanup must never remove a segment whose owner it
 * cannot prove dead. Thread-safe. */
bool eb_shm_owner_alive(pid_t pid, uint64_t starttime);

#endif
