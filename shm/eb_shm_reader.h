/* eb_shm_reader — a read-only view of someone else's segment (used by the broker and workers).
 *
 *   eb_shm_reader *r = NULL;
 *   if (eb_shm_reader_attach(name, &r, err, sizeof err) != EB_OK) ...;   // at registration
 *   if (!eb_shm_reader_verify_nonce(r, nonce, 32)) ... refuse ...;
 *   status = eb_shm_reader_copy(r, &ref, staging, cap, err, sizeof err);  // per item
 *   eb_shm_reader_destroy(&r);                                            // on release
 *
 * The object's size is recorded once, at attach; every reference is checked against it (epoch,
 * bounds, overflow) and the bytes are copied out under a SIGBUS guard (eb_shm_guard.h), so an
 * owner that shrinks or rewrites its segment afterwards spoils only its own request: the copy
 * fails with EB_ERR_IO ("segment truncated"), the reader survives. The owner may still change
 * the bytes during the copy; callers hash and use their private copy, never the mapping.
 * No file descriptor stays open after attach (a worker may map many segments).
 *
 * Thread-safety: a reader is immutable after attach. validate, copy, verify_nonce and the
 * accessors may be called from several threads at once (the SIGBUS guard is per thread); the
 * usual pattern is still one owning thread at a time. destroy must not run concurrently with
 * any other call on the same reader: keep the reader alive while any copy from it is in flight.
 */
#ifndef EB_SHM_READER_H
#define EB_SHM_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "eb_shm.h"
#include "eb_status.h"

typedef struct eb_shm_reader eb_shm_reader;

/* Map the segment `name` read-only and check its header. The name must have the form of
 * eb_shm.h (anything else is EB_ERR_INVALID without touching the file system). On EB_OK *out
 * owns the reader (release with eb_shm_reader_destroy). Errors (*out NULL, err written):
 *   EB_ERR_NOT_FOUND  no such segment
 *   EB_ERR_DENIED     not readable by this process
 *   EB_ERR_INVALID    bad name, not a regular object, smaller than the header, bad magic,
 *                     version, epoch or total size (eb_shm_header_check)
 *   EB_ERR_IO         another system call failed, or the object shrank during attach */
eb_status eb_shm_reader_attach(const char *name, eb_shm_reader **out, char *err, size_t err_len);

/* Unmap, free, and set *reader to NULL. NULL or *reader == NULL does nothing. Never unlinks. */
void eb_shm_reader_destroy(eb_shm_reader **reader);

/* Accessors: the values read at attach (the header is copied once; owners never change them). */
const char *eb_shm_reader_name(const eb_shm_reader *reader); /* owned by the reader */
uint64_t eb_shm_reader_size(const eb_shm_reader *reader);    /* object size at attach */
uint32_t eb_shm_reader_version(const eb_shm_reader *reader);
uint32_t eb_shm_reader_epoch(const eb_shm_reader *reader);
pid_t eb_shm_reader_owner_pid(const eb_shm_reader *reader);
uint64_t eb_shm_reader_owner_starttime(const eb_shm_reader *reader);
uid_t eb_shm_reader_owner_uid(const eb_shm_reader *reader); /* st_uid of the object */

/* Check a reference against the segment: EB_OK; EB_ERR_STALE when ref->epoch is not the
 * segment's; EB_ERR_BOUNDS when length is 0, offset lies inside the header, or
 * offset + length exceeds the size recorded at attach (computed without overflow). err names
 * the values. Does not touch the mapping. */
eb_status eb_shm_reader_validate(const eb_shm_reader *reader, const eb_shm_ref *ref, char *err,
                                 size_t err_len);

/* Validate ref, then copy its bytes into dst (caller's memory, dst_cap bytes available).
 * EB_OK; the errors of eb_shm_reader_validate; EB_ERR_TOO_LARGE when ref->length > dst_cap;
 * EB_ERR_IO with "segment truncated" in err when the owner shrank the object under the
 * mapping (dst then holds an unspecified prefix). */
eb_status eb_shm_reader_copy(const eb_shm_reader *reader, const eb_shm_ref *ref, void *dst,
                             size_t dst_cap, char *err, size_t err_len);

/* True when the segment's header holds exactly this nonce (len bytes, 1..EB_SHM_NONCE_MAX),
 * read now (not at attach), compared in constant time. False for any mismatch, a bad length,
 * no nonce written yet, or a truncated header. */
bool eb_shm_reader_verify_nonce(const eb_shm_reader *reader, const uint8_t *nonce, size_t len);

#endif
