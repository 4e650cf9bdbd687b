/* eb_shm_segment — the client's own shared-memory segment: create it, prove ownership with a
 * nonce, hand out regions of it to many threads, destroy it.
 *
 *   eb_shm_segment *seg = NULL;
 *   if (eb_shm_segment_create(64 << 20, &seg, err, sizeof err) != EB_OK) ...;
 *   eb_shm_ref ref; void *p;
 *   switch (eb_shm_segment_alloc(seg, len, timeout_ms, &ref, &p, err, sizeof err)) {
 *   case EB_OK: memcpy(p, bytes, len); send ref; on its reply: eb_shm_segment_free(seg, &ref);
 *   case EB_ERR_BUSY: case EB_ERR_TIMEOUT: case EB_ERR_TOO_LARGE: send the bytes inline;
 *   }
 *   eb_shm_segment_destroy(&seg);
 *
 * Full policy: an allocation that does not fit waits up to timeout_ms for other threads to free
 * space (0: fail at once with EB_ERR_BUSY; negative: wait without limit); one that could never
 * fit (larger than the data area) fails at once with EB_ERR_TOO_LARGE. The caller decides what
 * a failure means (the client library falls back to inline bytes).
 *
 * The allocator's bookkeeping lives in the client's private memory, never in the segment, so
 * nothing a reader sees or a buggy write into a region can corrupt it.
 *
 * Thread-safety: alloc, free, region, write_nonce and every accessor may be called from any
 * number of threads at once. create and destroy are not concurrent with anything else on the
 * same segment: destroy only after every other thread has stopped using it.
 */
#ifndef EB_SHM_SEGMENT_H
#define EB_SHM_SEGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "eb_shm.h"
#include "eb_status.h"

typedef struct eb_shm_segment eb_shm_segment;

/* Create a segment whose data area holds at least data_size bytes (rounded up to the page
 * size), under a fresh random name, reserved in full with posix_fallocate so later writes can
 * never fail for lack of space (no SIGBUS), mapped read-write, header written.
 * On EB_OK *out owns the segment (release with eb_shm_segment_destroy). On failure *out is
 * NULL, nothing is left in /dev/shm, err says why, and the status is EB_ERR_INVALID (data_size
 * 0 or absurdly large), EB_ERR_NOMEM (/dev/shm or memory is full: reduce the size or enlarge
 * /dev/shm) or EB_ERR_IO (another system call failed). */
eb_status eb_shm_segment_create(size_t data_size, eb_shm_segment **out, char *err,
                                size_t err_len);

/* Unlink the name (an already-missing name is fine), unmap, free, and set *seg to NULL. Readers
 * that have it mapped keep their mapping until they detach. Regions still allocated are simply
 * gone. NULL or *seg == NULL does nothing. */
void eb_shm_segment_destroy(eb_shm_segment **seg);

/* The segment's name ("/embroker-..."), owned by the segment. */
const char *eb_shm_segment_name(const eb_shm_segment *seg);

/* The epoch written in the header; every reference into this segment carries it. */
uint32_t eb_shm_segment_epoch(const eb_shm_segment *seg);

/* Bytes of the whole object (header + data area): what readers see as its size. */
uint64_t eb_shm_segment_size(const eb_shm_segment *seg);

/* Bytes of the data area (size - EB_SHM_HEADER_SIZE): the largest possible allocation. */
uint64_t eb_shm_segment_data_size(const eb_shm_segment *seg);

/* Bytes of the data area not allocated right now (a snapshot; other threads may change it). */
uint64_t eb_shm_segment_bytes_free(const eb_shm_segment *seg);

/* Write the broker-chosen nonce (1..EB_SHM_NONCE_MAX bytes, copied) into the header; readers
 * compare it with eb_shm_reader_verify_nonce. A later call replaces the previous nonce.
 * EB_OK, or EB_ERR_INVALID for a bad length. */
eb_status eb_shm_segment_write_nonce(eb_shm_segment *seg, const uint8_t *nonce, size_t len);

/* Allocate a region of `len` bytes starting on a EB_SHM_ALIGN boundary. On EB_OK *ref describes
 * it (ref->length == len) and *data (may be NULL) points at it in this process; the caller owns
 * the region until eb_shm_segment_free. Errors (err written, *ref untouched):
 *   EB_ERR_INVALID    len is 0
 *   EB_ERR_TOO_LARGE  len exceeds the data area: it can never fit
 *   EB_ERR_BUSY       timeout_ms == 0 and no free run is long enough now
 *   EB_ERR_TIMEOUT    no space was freed in time (timeout_ms > 0)
 * timeout_ms < 0 waits until space is freed, however long that takes. */
eb_status eb_shm_segment_alloc(eb_shm_segment *seg, size_t len, int timeout_ms, eb_shm_ref *ref,
                               void **data, char *err, size_t err_len);

/* Return a region obtained from eb_shm_segment_alloc (pass the same reference) and wake
 * waiting allocators. EB_OK; EB_ERR_STALE for another segment's epoch; EB_ERR_INVALID for a
 * reference that was not allocated here or is already free (the allocator state is unchanged);
 * EB_ERR_NOMEM when the free list cannot grow (the region is then lost until destroy). */
eb_status eb_shm_segment_free(eb_shm_segment *seg, const eb_shm_ref *ref);

/* Where the region `ref` lies in this process's mapping, or NULL when ref has another epoch or
 * does not lie inside the data area. Does not check that the region is allocated. */
void *eb_shm_segment_region(const eb_shm_segment *seg, const eb_shm_ref *ref);

#endif
