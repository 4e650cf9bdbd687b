/* eb_shm_reader — attach to a client's segment read-only and copy regions out safely.
 *
 * Everything in a client's segment is untrusted input: the header may be garbage, references
 * may point anywhere, and the owner may truncate the object while we read. So attach checks the
 * name and header strictly and records the size; validate does all range arithmetic as
 * "offset <= size && length <= size - offset" (no sum that could wrap); and every read of the
 * mapping, the header included, goes through eb_shm_guard_copy. The nonce is read at the moment
 * of verification, because the client writes it after the broker has attached.
 */
#include "eb_shm_reader.h"
#include "eb_status.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eb_shm_guard.h"

/* Largest object we agree to map: the creator's own limit plus the header, rounded. */
#define MAX_OBJECT_SIZE ((UINT64_C(1) << 40) + (UINT64_C(1) << 20))

struct eb_shm_reader {
    char name[EB_SHM_NAME_MAX];
    const uint8_t *base; /* read-only mapping of `size` bytes */
    uint64_t size;
    uid_t owner_uid;
    eb_shm_header header; /* copied at attach */
};

eb_status eb_shm_reader_attach(const char *name, eb_shm_reader **out, char *err, size_t err_len)
{
    *out = NULL;
    if (!eb_shm_name_parse(name, NULL, NULL)) {
        eb_set_err(err, err_len, "cannot attach shared-memory segment \"%.80s\": not an embroker "
                   "segment name (expected " EB_SHM_NAME_PREFIX "<uid>-<pid>-<16 hex digits>)",
                   name ? name : "(null)");
        return EB_ERR_INVALID;
    }
    /* O_NONBLOCK: a FIFO planted under a valid name must not block us in open. */
    int fd = shm_open(name, O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        eb_set_err(err, err_len, "cannot attach shared-memory segment \"%s\": %s", name,
                   strerror(e));
        return e == ENOENT ? EB_ERR_NOT_FOUND : e == EACCES ? EB_ERR_DENIED : EB_ERR_IO;
    }
    eb_status status = EB_ERR_INVALID;
    void *base = MAP_FAILED;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        status = EB_ERR_IO;
        eb_set_err(err, err_len, "cannot attach shared-memory segment \"%s\": fstat: %s", name,
                   strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode) || st.st_size < (off_t)EB_SHM_HEADER_SIZE ||
        (uint64_t)st.st_size > MAX_OBJECT_SIZE) {
        eb_set_err(err, err_len, "cannot attach shared-memory segment \"%s\": %s of %lld bytes is "
                   "not a segment (needs %u .. %" PRIu64 " bytes)", name,
                   S_ISREG(st.st_mode) ? "object" : "special file", (long long)st.st_size,
                   EB_SHM_HEADER_SIZE, MAX_OBJECT_SIZE);
        goto fail;
    }
    uint64_t size = (uint64_t)st.st_size;
    base = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        status = errno == ENOMEM ? EB_ERR_NOMEM : EB_ERR_IO;
        eb_set_err(err, err_len, "cannot map shared-memory segment \"%s\" (%" PRIu64 " bytes): %s",
                   name, size, strerror(errno));
        goto fail;
    }
    eb_shm_header header;
    if (eb_shm_guard_copy(&header, base, sizeof header) != EB_OK) {
        status = EB_ERR_IO;
        eb_set_err(err, err_len, "cannot attach shared-memory segment \"%s\": segment truncated "
                   "while reading its header", name);
        goto fail;
    }
    status = eb_shm_header_check(&header, size, name, err, err_len);
    if (status != EB_OK)
        goto fail;

    eb_shm_reader *reader = calloc(1, sizeof *reader);
    if (!reader) {
        status = EB_ERR_NOMEM;
        eb_set_err(err, err_len, "cannot attach shared-memory segment \"%s\": out of memory", name);
        goto fail;
    }
    snprintf(reader->name, sizeof reader->name, "%s", name);
    reader->base = base;
    reader->size = size;
    reader->owner_uid = st.st_uid;
    reader->header = header;
    close(fd);
    *out = reader;
    return EB_OK;

fail:
    if (base != MAP_FAILED)
        munmap(base, (size_t)st.st_size);
    close(fd);
    return status;
}

void eb_shm_reader_destroy(eb_shm_reader **readerp)
{
    if (!readerp || !*readerp)
        return;
    eb_shm_reader *reader = *readerp;
    munmap((void *)reader->base, (size_t)reader->size);
    free(reader);
    *readerp = NULL;
}

const char *eb_shm_reader_name(const eb_shm_reader *reader)
{
    return reader->name;
}

uint64_t eb_shm_reader_size(const eb_shm_reader *reader)
{
    return reader->size;
}

uint32_t eb_shm_reader_version(const eb_shm_reader *reader)
{
    return reader->header.version;
}

uint32_t eb_shm_reader_epoch(const eb_shm_reader *reader)
{
    return reader->header.epoch;
}

pid_t eb_shm_reader_owner_pid(const eb_shm_reader *reader)
{
    return (pid_t)reader->header.owner_pid;
}

uint64_t eb_shm_reader_owner_starttime(const eb_shm_reader *reader)
{
    return reader->header.owner_starttime;
}

uid_t eb_shm_reader_owner_uid(const eb_shm_reader *reader)
{
    return reader->owner_uid;
}

eb_status eb_shm_reader_validate(const eb_shm_reader *reader, const eb_shm_ref *ref, char *err,
                                 size_t err_len)
{
    if (ref->epoch != reader->header.epoch) {
        eb_set_err(err, err_len, "stale shared-memory reference: epoch %" PRIu32 " but segment "
                   "\"%s\" has epoch %" PRIu32 " (it was recreated; re-register it)", ref->epoch,
                   reader->name, reader->header.epoch);
        return EB_ERR_STALE;
    }
    if (ref->length == 0 || ref->offset < EB_SHM_HEADER_SIZE || ref->offset > reader->size ||
        ref->length > reader->size - ref->offset) {
        eb_set_err(err, err_len, "shared-memory reference {offset %" PRIu64 ", length %" PRIu64
                   "} lies outside the data area [%u, %" PRIu64 ") of segment \"%s\"", ref->offset,
                ref->length, EB_SHM_HEADER_SIZE, reader->size, reader->name);
        return EB_ERR_BOUNDS;
    }
    return EB_OK;
}

eb_status eb_shm_reader_copy(const eb_shm_reader *reader, const eb_shm_ref *ref, void *dst,
                             size_t dst_cap, char *err, size_t err_len)
{
    eb_status status = eb_shm_reader_validate(reader, ref, err, err_len);
    if (status != EB_OK)
        return status;
    if (ref->length > (uint64_t)dst_cap) {
        eb_set_err(err, err_len, "shared-memory reference of %" PRIu64 " bytes does not fit the "
                   "%zu-byte destination", ref->length, dst_cap);
        return EB_ERR_TOO_LARGE;
    }
    status = eb_shm_guard_copy(dst, reader->base + ref->offset, (size_t)ref->length);
    if (status != EB_OK) {
        eb_set_err(err, err_len, "segment truncated: shared-memory segment \"%s\" shrank below "
                   "offset %" PRIu64 " + length %" PRIu64 " after it was attached with %" PRIu64
                   " bytes (its owner truncated it)", reader->name, ref->offset, ref->length,
                   reader->size);
        return EB_ERR_IO;
    }
    return EB_OK;
}

bool eb_shm_reader_verify_nonce(const eb_shm_reader *reader, const uint8_t *nonce, size_t len)
{
    if (!nonce || len == 0 || len > EB_SHM_NONCE_MAX)
        return false;
    eb_shm_header now;
    if (eb_shm_guard_copy(&now, reader->base, sizeof now) != EB_OK)
        return false;
    /* Both lengths are public; only the bytes are compared in constant time. */
    if (now.nonce_len != len)
        return false;
    uint8_t diff = 0;
    for (size_t i = 0; i < len; i++)
        diff |= (uint8_t)(now.nonce[i] ^ nonce[i]);
    return diff == 0;
}
