/* eb_shm — what every side of a shared-memory segment agrees on: the header layout at offset 0,
 * the name format, and the reference type {epoch, offset, length}.
 *
 * A segment is a POSIX shared-memory object created by one client (eb_shm_segment.h) and
 * mapped read-only by the broker and the workers (eb_shm_reader.h). Leftovers of dead owners
 * are removed by eb_shm_cleanup.h. docs/shm.md describes the layout for other languages.
 *
 *   offset 0            EB_SHM_HEADER_SIZE (4096)                       total_size
 *   | eb_shm_header ... | data area: regions handed out by the client's allocator |
 *
 * Names: "/embroker-<uid>-<pid>-<16 lowercase hex>" (uid and pid in decimal; pid is the
 * creator's). The uid in the name lets cleanup skip other users' segments without opening them;
 * the pid is a fallback for a segment whose header was never written.
 *
 * All multi-byte header fields are in the host's byte order: a segment never leaves its machine.
 */
#ifndef EB_SHM_H
#define EB_SHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "eb_status.h"

#define EB_SHM_MAGIC "EBSHMSEG"     /* 8 bytes, no terminator stored */
#define EB_SHM_VERSION 1u
#define EB_SHM_HEADER_SIZE 4096u    /* the data area starts here; offsets are from byte 0 */
#define EB_SHM_ALIGN 64u            /* every region the client allocates starts on this */
#define EB_SHM_NONCE_MAX 32u        /* longest nonce a header can hold */
#define EB_SHM_NAME_PREFIX "/embroker-"
#define EB_SHM_NAME_MAX 64u         /* bytes including the terminator; real names are shorter */

/* The header at offset 0 of every segment (80 bytes used, EB_SHM_HEADER_SIZE reserved).
 * Written once by the creator before the name is published, except the nonce, which the
 * creator writes when the broker asks (nonce bytes first, nonce_len last). */
typedef struct eb_shm_header {
    char magic[8];             /* EB_SHM_MAGIC */
    uint32_t version;          /* EB_SHM_VERSION */
    uint32_t header_size;      /* EB_SHM_HEADER_SIZE */
    uint64_t total_size;       /* bytes of the whole object, header included */
    uint32_t epoch;            /* random, nonzero; a reference must carry the same value */
    int32_t owner_pid;         /* the creating process */
    uint64_t owner_starttime;  /* its start time: /proc/<pid>/stat field 22, clock ticks */
    uint32_t owner_uid;        /* the creator's effective uid */
    uint32_t nonce_len;        /* 0 until a nonce is written; at most EB_SHM_NONCE_MAX */
    uint8_t nonce[EB_SHM_NONCE_MAX];
} eb_shm_header;

/* A region of a segment as it travels in requests. offset counts from byte 0 of the segment
 * (so it is always >= EB_SHM_HEADER_SIZE); length is in bytes and never 0. */
typedef struct eb_shm_ref {
    uint32_t epoch;
    uint64_t offset;
    uint64_t length;
} eb_shm_ref;

/* Parse a segment name. True when `name` has exactly the form above; then *uid and *pid (each
 * may be NULL) receive the numbers in it. Anything else, including names with extra slashes,
 * upper-case hex or over-long numbers, is false. Pure; thread-safe. */
bool eb_shm_name_parse(const char *name, uid_t *uid, pid_t *pid);

/* Check a header copied out of a segment: magic, version, header size, nonzero epoch, and
 * total_size equal to `object_size` (the size fstat reported). EB_OK, or EB_ERR_INVALID with
 * the first mismatch described in err (which names the segment `name`). Pure; thread-safe. */
eb_status eb_shm_header_check(const eb_shm_header *header, uint64_t object_size,
                              const char *name, char *err, size_t err_len);

#endif
