/* eb_shm_segment — a client's shared-memory segment and the allocator over its data area.
 *
 * The segment is one POSIX shared-memory object, fully reserved at creation (posix_fallocate),
 * so the client's own writes can never fault. Regions are handed out by a first-fit allocator
 * over a free list kept in private memory: an array of free extents sorted by offset, every
 * extent a multiple of EB_SHM_ALIGN. Allocation takes the first extent long enough; freeing
 * inserts the extent back and merges it with its neighbours, so a fully freed segment is one
 * extent again. One mutex guards the list; a condition variable (monotonic clock) wakes
 * allocators waiting for space. A segment holds at most a few thousand regions in flight, so
 * linear scans are cheap next to the copies that fill the regions.
 *
 * Freeing checks that the extent overlaps no free extent, which catches double frees and
 * references that were never allocated before they could corrupt the list.
 */
#include "eb_shm_segment.h"
#include "eb_status.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "eb_shm_owner.h"

/* Largest data area accepted: far beyond any real use, small enough that sizes never overflow. */
#define MAX_DATA_SIZE (UINT64_C(1) << 40)

typedef struct extent {
    uint64_t offset; /* from byte 0 of the segment */
    uint64_t length;
} extent;

struct eb_shm_segment {
    char name[EB_SHM_NAME_MAX];
    uint8_t *base; /* mapping of the whole object, read-write */
    uint64_t size;
    uint32_t epoch;

    pthread_mutex_t lock;
    pthread_cond_t space_freed;
    extent *free_list; /* sorted by offset, disjoint, never adjacent (merged) */
    size_t free_count;
    size_t free_capacity;
    uint64_t bytes_free;
};

static uint64_t align_up(uint64_t value, uint64_t align)
{
    return (value + align - 1) / align * align;
}

static eb_status random_bytes(void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return EB_ERR_IO;
        }
        p += n;
        len -= (size_t)n;
    }
    return EB_OK;
}

/* Open a fresh object under a random name (retrying the unlikely collision). */
static int open_fresh(char *name, size_t name_cap, char *err, size_t err_len)
{
    for (int attempt = 0; attempt < 8; attempt++) {
        uint64_t suffix;
        if (random_bytes(&suffix, sizeof suffix) != EB_OK) {
            eb_set_err(err, err_len, "cannot create shared-memory segment: getrandom: %s",
                       strerror(errno));
            return -1;
        }
        snprintf(name, name_cap, EB_SHM_NAME_PREFIX "%u-%d-%016" PRIx64, (unsigned)geteuid(),
                 (int)getpid(), suffix);
        int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0)
            return fd;
        if (errno != EEXIST) {
            eb_set_err(err, err_len, "cannot create shared-memory segment \"%s\": shm_open: %s",
                       name, strerror(errno));
            return -1;
        }
    }
    eb_set_err(err, err_len, "cannot create shared-memory segment: 8 random names all existed");
    return -1;
}

static eb_status init_sync(eb_shm_segment *seg)
{
    if (pthread_mutex_init(&seg->lock, NULL) != 0)
        return EB_ERR_NOMEM;
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        goto fail_mutex;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&seg->space_freed, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0)
        goto fail_mutex;
    return EB_OK;
fail_mutex:
    pthread_mutex_destroy(&seg->lock);
    return EB_ERR_NOMEM;
}

eb_status eb_shm_segment_create(size_t data_size, eb_shm_segment **out, char *err,
                                size_t err_len)
{
    *out = NULL;
    long page = sysconf(_SC_PAGESIZE);
    uint64_t page_size = page > 0 ? (uint64_t)page : 4096;
    if (data_size == 0 || (uint64_t)data_size > MAX_DATA_SIZE) {
        eb_set_err(err, err_len, "cannot create shared-memory segment: data size %zu is out of "
                   "range (1 .. %" PRIu64 ")", data_size, MAX_DATA_SIZE);
        return EB_ERR_INVALID;
    }
    uint64_t size = align_up(EB_SHM_HEADER_SIZE + (uint64_t)data_size, page_size);

    eb_shm_segment *seg = calloc(1, sizeof *seg);
    if (!seg) {
        eb_set_err(err, err_len, "cannot create shared-memory segment: out of memory");
        return EB_ERR_NOMEM;
    }
    eb_status status = EB_ERR_IO;
    seg->size = size;
    seg->free_capacity = 16;
    seg->free_list = malloc(seg->free_capacity * sizeof *seg->free_list);
    if (!seg->free_list || init_sync(seg) != EB_OK) {
        free(seg->free_list);
        free(seg);
        eb_set_err(err, err_len, "cannot create shared-memory segment: out of memory");
        return EB_ERR_NOMEM;
    }

    int fd = open_fresh(seg->name, sizeof seg->name, err, err_len);
    if (fd < 0)
        goto fail_sync;
    /* The umask may have cleared bits of 0600; readers of the same uid need exactly 0600. */
    if (fchmod(fd, 0600) != 0) {
        eb_set_err(err, err_len, "cannot set mode 0600 on segment \"%s\": %s", seg->name,
                   strerror(errno));
        goto fail_unlink;
    }
    int rc = posix_fallocate(fd, 0, (off_t)size);
    if (rc != 0) {
        status = rc == ENOSPC ? EB_ERR_NOMEM : EB_ERR_IO;
        eb_set_err(err, err_len, "cannot reserve %" PRIu64 " bytes for segment \"%s\": %s%s", size,
                   seg->name, strerror(rc),
                   rc == ENOSPC ? " (reduce the segment size or enlarge /dev/shm)" : "");
        goto fail_unlink;
    }
    void *base = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        status = errno == ENOMEM ? EB_ERR_NOMEM : EB_ERR_IO;
        eb_set_err(err, err_len, "cannot map segment \"%s\" (%" PRIu64 " bytes): %s", seg->name,
                   size, strerror(errno));
        goto fail_unlink;
    }
    seg->base = base;

    eb_shm_header header;
    memset(&header, 0, sizeof header);
    memcpy(header.magic, EB_SHM_MAGIC, sizeof header.magic);
    header.version = EB_SHM_VERSION;
    header.header_size = EB_SHM_HEADER_SIZE;
    header.total_size = size;
    do {
        if (random_bytes(&header.epoch, sizeof header.epoch) != EB_OK) {
            eb_set_err(err, err_len, "cannot create segment \"%s\": getrandom: %s", seg->name,
                       strerror(errno));
            goto fail_unmap;
        }
    } while (header.epoch == 0);
    header.owner_pid = (int32_t)getpid();
    if (eb_shm_owner_starttime(0, &header.owner_starttime) != EB_OK) {
        eb_set_err(err, err_len, "cannot create segment \"%s\": cannot read /proc/self/stat",
                   seg->name);
        goto fail_unmap;
    }
    header.owner_uid = (uint32_t)geteuid();
    memcpy(seg->base, &header, sizeof header);
    seg->epoch = header.epoch;
    close(fd);

    seg->free_list[0] = (extent){EB_SHM_HEADER_SIZE, size - EB_SHM_HEADER_SIZE};
    seg->free_count = 1;
    seg->bytes_free = size - EB_SHM_HEADER_SIZE;
    *out = seg;
    return EB_OK;

fail_unmap:
    munmap(seg->base, (size_t)size);
fail_unlink:
    shm_unlink(seg->name);
    close(fd);
fail_sync:
    pthread_cond_destroy(&seg->space_freed);
    pthread_mutex_destroy(&seg->lock);
    free(seg->free_list);
    free(seg);
    return status;
}

void eb_shm_segment_destroy(eb_shm_segment **segp)
{
    if (!segp || !*segp)
        return;
    eb_shm_segment *seg = *segp;
    shm_unlink(seg->name); /* ENOENT: cleanup or the broker already removed it; fine */
    munmap(seg->base, (size_t)seg->size);
    pthread_cond_destroy(&seg->space_freed);
    pthread_mutex_destroy(&seg->lock);
    free(seg->free_list);
    free(seg);
    *segp = NULL;
}

const char *eb_shm_segment_name(const eb_shm_segment *seg)
{
    return seg->name;
}

uint32_t eb_shm_segment_epoch(const eb_shm_segment *seg)
{
    return seg->epoch;
}

uint64_t eb_shm_segment_size(const eb_shm_segment *seg)
{
    return seg->size;
}

uint64_t eb_shm_segment_data_size(const eb_shm_segment *seg)
{
    return seg->size - EB_SHM_HEADER_SIZE;
}

uint64_t eb_shm_segment_bytes_free(const eb_shm_segment *seg)
{
    eb_shm_segment *mutable_seg = (eb_shm_segment *)seg;
    pthread_mutex_lock(&mutable_seg->lock);
    uint64_t bytes = seg->bytes_free;
    pthread_mutex_unlock(&mutable_seg->lock);
    return bytes;
}

eb_status eb_shm_segment_write_nonce(eb_shm_segment *seg, const uint8_t *nonce, size_t len)
{
    if (!nonce || len == 0 || len > EB_SHM_NONCE_MAX)
        return EB_ERR_INVALID;
    eb_shm_header *header = (eb_shm_header *)seg->base;
    pthread_mutex_lock(&seg->lock);
    /* Length last, with release order: a reader never pairs a new length with old bytes. */
    __atomic_store_n(&header->nonce_len, 0u, __ATOMIC_RELEASE);
    memset(header->nonce, 0, sizeof header->nonce);
    memcpy(header->nonce, nonce, len);
    __atomic_store_n(&header->nonce_len, (uint32_t)len, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&seg->lock);
    return EB_OK;
}

/* First fit; called with the lock held. True and *offset set when an extent was carved. */
static bool take_first_fit(eb_shm_segment *seg, uint64_t need, uint64_t *offset)
{
    for (size_t i = 0; i < seg->free_count; i++) {
        extent *e = &seg->free_list[i];
        if (e->length < need)
            continue;
        *offset = e->offset;
        e->offset += need;
        e->length -= need;
        if (e->length == 0) {
            memmove(e, e + 1, (seg->free_count - i - 1) * sizeof *e);
            seg->free_count--;
        }
        seg->bytes_free -= need;
        return true;
    }
    return false;
}

static struct timespec deadline_after_ms(int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

eb_status eb_shm_segment_alloc(eb_shm_segment *seg, size_t len, int timeout_ms, eb_shm_ref *ref,
                               void **data, char *err, size_t err_len)
{
    uint64_t data_size = seg->size - EB_SHM_HEADER_SIZE;
    if (len == 0) {
        eb_set_err(err, err_len, "cannot allocate 0 bytes in segment \"%s\"", seg->name);
        return EB_ERR_INVALID;
    }
    if ((uint64_t)len > data_size) {
        eb_set_err(err, err_len, "cannot allocate %zu bytes in segment \"%s\": its data area holds "
                   "%" PRIu64 " bytes; send the input inline or use a larger segment",
                   len, seg->name, data_size);
        return EB_ERR_TOO_LARGE;
    }
    uint64_t need = align_up(len, EB_SHM_ALIGN); /* <= data_size: it is a multiple of the page */
    struct timespec deadline = deadline_after_ms(timeout_ms > 0 ? timeout_ms : 0);
    uint64_t offset = 0;
    eb_status status = EB_OK;

    pthread_mutex_lock(&seg->lock);
    while (!take_first_fit(seg, need, &offset)) {
        if (timeout_ms == 0) {
            status = EB_ERR_BUSY;
            break;
        }
        int rc = timeout_ms < 0 ? pthread_cond_wait(&seg->space_freed, &seg->lock)
                                : pthread_cond_timedwait(&seg->space_freed, &seg->lock, &deadline);
        if (rc == ETIMEDOUT) {
            if (!take_first_fit(seg, need, &offset))
                status = EB_ERR_TIMEOUT;
            break;
        }
    }
    uint64_t bytes_free = seg->bytes_free;
    pthread_mutex_unlock(&seg->lock);

    if (status == EB_ERR_BUSY)
        eb_set_err(err, err_len, "segment \"%s\" is full: no free run of %" PRIu64 " bytes (%" PRIu64
                   " bytes free in total)", seg->name, need, bytes_free);
    else if (status == EB_ERR_TIMEOUT)
        eb_set_err(err, err_len, "segment \"%s\" stayed full for %d ms: no free run of %" PRIu64
                   " bytes (%" PRIu64 " bytes free in total)", seg->name, timeout_ms, need,
                   bytes_free);
    if (status != EB_OK)
        return status;
    *ref = (eb_shm_ref){.epoch = seg->epoch, .offset = offset, .length = len};
    if (data)
        *data = seg->base + offset;
    return EB_OK;
}

/* Index of the first free extent whose offset is greater than `offset` (lock held). */
static size_t first_after(const eb_shm_segment *seg, uint64_t offset)
{
    size_t lo = 0, hi = seg->free_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (seg->free_list[mid].offset > offset)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Insert [offset, offset+length) at index i, merging with neighbours (lock held). */
static eb_status insert_extent(eb_shm_segment *seg, size_t i, uint64_t offset, uint64_t length)
{
    extent *list = seg->free_list;
    bool merge_prev = i > 0 && list[i - 1].offset + list[i - 1].length == offset;
    bool merge_next = i < seg->free_count && offset + length == list[i].offset;
    if (merge_prev && merge_next) {
        list[i - 1].length += length + list[i].length;
        memmove(&list[i], &list[i + 1], (seg->free_count - i - 1) * sizeof *list);
        seg->free_count--;
    } else if (merge_prev) {
        list[i - 1].length += length;
    } else if (merge_next) {
        list[i].offset = offset;
        list[i].length += length;
    } else {
        if (seg->free_count == seg->free_capacity) {
            size_t capacity = seg->free_capacity * 2;
            extent *grown = realloc(list, capacity * sizeof *list);
            if (!grown)
                return EB_ERR_NOMEM;
            seg->free_list = list = grown;
            seg->free_capacity = capacity;
        }
        memmove(&list[i + 1], &list[i], (seg->free_count - i) * sizeof *list);
        list[i] = (extent){offset, length};
        seg->free_count++;
    }
    seg->bytes_free += length;
    return EB_OK;
}

eb_status eb_shm_segment_free(eb_shm_segment *seg, const eb_shm_ref *ref)
{
    if (ref->epoch != seg->epoch)
        return EB_ERR_STALE;
    if (ref->length == 0 || ref->offset < EB_SHM_HEADER_SIZE || ref->offset % EB_SHM_ALIGN != 0 ||
        ref->offset > seg->size || ref->length > seg->size - ref->offset)
        return EB_ERR_INVALID;
    uint64_t length = align_up(ref->length, EB_SHM_ALIGN);
    if (length > seg->size - ref->offset)
        return EB_ERR_INVALID;

    pthread_mutex_lock(&seg->lock);
    size_t i = first_after(seg, ref->offset);
    const extent *list = seg->free_list;
    eb_status status = EB_OK;
    if ((i > 0 && list[i - 1].offset + list[i - 1].length > ref->offset) ||
        (i < seg->free_count && ref->offset + length > list[i].offset))
        status = EB_ERR_INVALID; /* overlaps free space: double free or never allocated */
    else
        status = insert_extent(seg, i, ref->offset, length);
    if (status == EB_OK)
        pthread_cond_broadcast(&seg->space_freed);
    pthread_mutex_unlock(&seg->lock);
    return status;
}

void *eb_shm_segment_region(const eb_shm_segment *seg, const eb_shm_ref *ref)
{
    if (ref->epoch != seg->epoch || ref->length == 0 || ref->offset < EB_SHM_HEADER_SIZE ||
        ref->offset > seg->size || ref->length > seg->size - ref->offset)
        return NULL;
    return seg->base + ref->offset;
}
