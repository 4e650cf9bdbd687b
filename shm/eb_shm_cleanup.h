/* eb_shm_cleanup — remove segments whose owner is dead; remove one segment by name.
 *
 * A client killed with SIGKILL never unlinks its segment, and /dev/shm is RAM: the broker calls
 * eb_shm_cleanup_dead at start (and may call it periodically) to reclaim leftovers. Only
 * segments of the given uid are considered, checked twice: the uid in the name and the owner
 * of the object (st_uid). Owner liveness is (pid, start time) from the header, or the pid in
 * the name when the header was never written (a creator killed mid-creation, or one still
 * creating: then it is alive and its segment is kept).
 */
#ifndef EB_SHM_CLEANUP_H
#define EB_SHM_CLEANUP_H

#include <stddef.h>
#include <sys/types.h>

#include "eb_status.h"

/* Scan /dev/shm for embroker segments of `uid` and unlink those whose owner is dead. Mapped
 * copies elsewhere stay valid until unmapped (unlink only removes the name). *removed (may be
 * NULL) receives how many were unlinked. EB_OK even when individual segments could not be
 * examined (they are kept and logged at debug level); EB_ERR_IO when /dev/shm cannot be
 * listed. Thread-safe; several processes may clean up at once (a name already gone is not an
 * error and not counted). */
eb_status eb_shm_cleanup_dead(uid_t uid, size_t *removed);

/* Unlink segment `name` if it is an embroker segment name of `uid` and the object belongs to
 * `uid` (the broker calls this for a dead client's segment). EB_OK (also when the name is
 * already gone); EB_ERR_INVALID for a name of another form or another uid; EB_ERR_DENIED when
 * the object belongs to another uid; EB_ERR_IO when the unlink fails otherwise. */
eb_status eb_shm_cleanup_unlink(const char *name, uid_t uid);

#endif
