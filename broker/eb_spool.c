/* eb_spool — durable store queue (see eb_spool.h for the format and the contract).
 *
 * Two threads share one mutex-protected hand-off: the event loop appends record nodes to a
 * write queue and reads `durable_seq`; the writer thread takes the whole queue at once, writes
 * it with one writev per record, syncs once for the group, publishes the new durable_seq and
 * pokes an eventfd. All file-system work (writes, syncs, rotation, deleting acked files,
 * rewriting the "acked" file) happens on the writer thread, so the loop never waits on a disk.
 *
 * Memory: each record is one node holding its payload. The loop keeps every unacked node in a
 * window indexed by sequence number (seq - base) so acks in any order are O(1); a node is freed
 * when acked, which can only happen after it is durable, when the writer no longer touches it.
 */
#include "eb_spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "eb_log.h"

#define SPOOL_MAGIC "EBSP"
#define RECORD_HEADER 24
#define MAX_RECORD (1u << 30)

typedef struct spool_node {
    uint64_t seq;
    uint32_t len;
    bool acked;
    struct spool_node *next_write; /* writer queue link */
    uint8_t data[];
} spool_node;

typedef struct spool_file {
    uint64_t first_seq;
    uint64_t last_seq; /* 0 while empty */
} spool_file;

struct eb_spool {
    char *dir;
    eb_spool_options options;
    int event_fd;

    /* loop-thread state */
    spool_node **window; /* window[head + i] holds seq base_seq + i (NULL once acked/freed) */
    size_t head, window_len, window_cap; /* live slots are window[head .. head+window_len) */
    uint64_t base_seq;     /* seq of window[0] */
    uint64_t next_seq;     /* next sequence number to assign */
    uint64_t handed_seq;   /* every durable record <= this was handed out */
    uint64_t appended, replayed, pending, pending_bytes;

    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    spool_node *queue_head, *queue_tail;
    uint64_t durable_seq;
    uint64_t acked_seq;      /* contiguous acknowledged watermark */
    bool housekeeping;       /* acked_seq moved: writer should delete files / rewrite acked */
    bool stop;
    char error[256];         /* writer error, "" when healthy */
    uint64_t syncs;

    /* writer-thread state (files) — read by stats under mu */
    spool_file *files;
    size_t n_files, files_cap;
    int current_fd;
    uint64_t current_bytes;
    pthread_t thread;
    bool thread_started;
};

/* ---- CRC-32C ------------------------------------------------------------------------------ */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t eb_crc32c(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = data;
    crc = ~crc;
    while (len--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static void file_path(const eb_spool *s, uint64_t first_seq, char *out, size_t cap)
{
    snprintf(out, cap, "%s/spool-%016llx.log", s->dir, (unsigned long long)first_seq);
}

static uint32_t record_crc(const uint8_t *header, const void *payload, uint32_t len)
{
    return eb_crc32c(eb_crc32c(0, header + 4, 12), payload, len);
}

static void build_header(uint8_t header[RECORD_HEADER], const spool_node *n)
{
    memcpy(header, SPOOL_MAGIC, 4);
    put_u32(header + 4, n->len);
    put_u64(header + 8, n->seq);
    put_u32(header + 16, record_crc(header, n->data, n->len));
    put_u32(header + 20, 0);
}

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static bool window_push(eb_spool *s, spool_node *n)
{
    if (s->head && s->head + s->window_len == s->window_cap) {
        /* slide the live part down instead of growing: acks advance head */
        memmove(s->window, s->window + s->head, s->window_len * sizeof *s->window);
        s->head = 0;
    }
    if (s->head + s->window_len == s->window_cap) {
        size_t cap = s->window_cap ? s->window_cap * 2 : 1024;
        spool_node **w = realloc(s->window, cap * sizeof *w);
        if (!w)
            return false;
        s->window = w;
        s->window_cap = cap;
    }
    if (s->window_len == 0) {
        s->head = 0;
        if (n)
            s->base_seq = n->seq;
    }
    s->window[s->head + s->window_len++] = n;
    return true;
}

static spool_node *window_get(const eb_spool *s, uint64_t seq)
{
    if (seq < s->base_seq || seq - s->base_seq >= s->window_len)
        return NULL;
    return s->window[s->head + (seq - s->base_seq)];
}

static void set_error(eb_spool *s, const char *what, const char *path)
{
    pthread_mutex_lock(&s->mu);
    snprintf(s->error, sizeof s->error, "spool %s \"%s\" failed: %s", what, path, strerror(errno));
    pthread_mutex_unlock(&s->mu);
    eb_log_error("spool_io_error", "op=%s path=%s errno=%d", what, path, errno);
}

/* ---- writer thread ------------------------------------------------------------------------ */

static bool open_new_file(eb_spool *s, uint64_t first_seq)
{
    char path[4096];
    file_path(s, first_seq, path, sizeof path);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        set_error(s, "create", path);
        return false;
    }
    if (s->current_fd >= 0) {
        if (s->options.sync && fdatasync(s->current_fd) != 0)
            set_error(s, "fdatasync", path);
        close(s->current_fd);
    }
    if (s->options.sync)
        sync_dir(s->dir); /* the new file's directory entry must survive a crash too */
    pthread_mutex_lock(&s->mu);
    if (s->n_files == s->files_cap) {
        size_t cap = s->files_cap ? s->files_cap * 2 : 8;
        spool_file *f = realloc(s->files, cap * sizeof *f);
        if (!f) {
            pthread_mutex_unlock(&s->mu);
            close(fd);
            return false;
        }
        s->files = f;
        s->files_cap = cap;
    }
    s->files[s->n_files++] = (spool_file){first_seq, 0};
    pthread_mutex_unlock(&s->mu);
    s->current_fd = fd;
    s->current_bytes = 0;
    return true;
}

/* Write one record to the current file, rotating first when it would overflow. */
static bool write_record(eb_spool *s, const spool_node *n)
{
    uint64_t size = RECORD_HEADER + (uint64_t)n->len;
    if (s->current_fd < 0 || (s->current_bytes > 0 && s->current_bytes + size > s->options.max_file_bytes)) {
        if (!open_new_file(s, n->seq))
            return false;
    }
    uint8_t header[RECORD_HEADER];
    build_header(header, n);
    struct iovec iov[2] = {{header, RECORD_HEADER}, {(void *)n->data, n->len}};
    size_t done = 0;
    while (done < size) {
        /* a short write is continued from where it stopped */
        struct iovec part[2];
        int cnt = 0;
        size_t skip = done;
        for (int i = 0; i < 2; i++) {
            if (skip >= iov[i].iov_len) {
                skip -= iov[i].iov_len;
                continue;
            }
            part[cnt].iov_base = (uint8_t *)iov[i].iov_base + skip;
            part[cnt].iov_len = iov[i].iov_len - skip;
            skip = 0;
            cnt++;
        }
        ssize_t w = writev(s->current_fd, part, cnt);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            char path[4096];
            file_path(s, s->files[s->n_files - 1].first_seq, path, sizeof path);
            set_error(s, "write", path);
            return false;
        }
        done += (size_t)w;
    }
    s->current_bytes += size;
    pthread_mutex_lock(&s->mu);
    s->files[s->n_files - 1].last_seq = n->seq;
    pthread_mutex_unlock(&s->mu);
    return true;
}

/* Delete files all of whose records are acked (never the current one) and record the
 * watermark. */
static void housekeep(eb_spool *s, uint64_t acked)
{
    for (;;) {
        pthread_mutex_lock(&s->mu);
        bool removable = s->n_files > 1 && s->files[0].last_seq != 0 && s->files[0].last_seq <= acked;
        uint64_t first = removable ? s->files[0].first_seq : 0;
        if (removable) {
            memmove(s->files, s->files + 1, (s->n_files - 1) * sizeof *s->files);
            s->n_files--;
        }
        pthread_mutex_unlock(&s->mu);
        if (!removable)
            break;
        char path[4096];
        file_path(s, first, path, sizeof path);
        if (unlink(path) != 0 && errno != ENOENT)
            set_error(s, "unlink", path);
    }
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/acked", s->dir);
    snprintf(tmp, sizeof tmp, "%s/acked.tmp", s->dir);
    FILE *f = fopen(tmp, "w");
    if (f) {
        fprintf(f, "%llu\n", (unsigned long long)acked);
        if (fclose(f) == 0)
            rename(tmp, path);
    }
}

static void *writer_main(void *arg)
{
    eb_spool *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->queue_head && !s->housekeeping && !s->stop)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->queue_head && !s->housekeeping && s->stop)
            break;
        spool_node *batch = s->queue_head;
        s->queue_head = s->queue_tail = NULL;
        bool keep = s->housekeeping;
        s->housekeeping = false;
        uint64_t acked = s->acked_seq;
        bool failed = s->error[0] != '\0';
        pthread_mutex_unlock(&s->mu);

        uint64_t last = 0;
        for (spool_node *n = batch; n && !failed; n = n->next_write) {
            if (!write_record(s, n)) {
                failed = true;
                break;
            }
            last = n->seq;
        }
        if (last && !failed && s->options.sync && fdatasync(s->current_fd) != 0) {
            set_error(s, "fdatasync", s->dir);
            failed = true;
        }
        if (keep)
            housekeep(s, acked);

        pthread_mutex_lock(&s->mu);
        if (last && !failed) {
            s->durable_seq = last;
            s->syncs += s->options.sync ? 1 : 0;
            uint64_t one = 1;
            ssize_t w = write(s->event_fd, &one, sizeof one);
            (void)w;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- recovery ----------------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Read one spool file; add unacked records to the window. `last_file` allows cutting a torn
 * tail. Returns false on allocation failure. */
static bool recover_file(eb_spool *s, uint64_t first_seq, bool last_file, uint64_t acked,
                         uint64_t *prev_seq, uint64_t *last_in_file)
{
    char path[4096];
    file_path(s, first_seq, path, sizeof path);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        eb_log_error("spool_recover_open", "path=%s errno=%d", path, errno);
        return true;
    }
    struct stat st;
    fstat(fd, &st);
    uint64_t size = (uint64_t)st.st_size, off = 0;
    *last_in_file = 0;
    while (off < size) {
        uint8_t header[RECORD_HEADER];
        const char *problem = NULL;
        if (size - off < RECORD_HEADER || pread(fd, header, RECORD_HEADER, (off_t)off) != RECORD_HEADER) {
            problem = "torn record header";
        } else if (memcmp(header, SPOOL_MAGIC, 4) != 0) {
            problem = "bad magic";
        } else {
            uint32_t len = get_u32(header + 4);
            uint64_t seq = get_u64(header + 8);
            if (len == 0 || len >= MAX_RECORD || size - off - RECORD_HEADER < len) {
                problem = "torn record payload";
            } else if (seq <= *prev_seq) {
                problem = "sequence number out of order";
            } else {
                spool_node *n = malloc(sizeof *n + len);
                if (!n) {
                    close(fd);
                    return false;
                }
                n->seq = seq;
                n->len = len;
                n->acked = false;
                n->next_write = NULL;
                if (pread(fd, n->data, len, (off_t)(off + RECORD_HEADER)) != (ssize_t)len ||
                    record_crc(header, n->data, len) != get_u32(header + 16)) {
                    free(n);
                    problem = "checksum mismatch";
                } else {
                    *prev_seq = seq;
                    *last_in_file = seq;
                    if (seq > acked) {
                        /* keep the window contiguous: acked holes become NULL slots */
                        while (s->window_len && s->base_seq + s->window_len < seq)
                            if (!window_push(s, NULL))
                                return false;
                        if (!window_push(s, n)) {
                            free(n);
                            close(fd);
                            return false;
                        }
                        if (s->window_len == 1)
                            s->base_seq = seq;
                        s->pending++;
                        s->pending_bytes += len;
                        s->replayed++;
                    } else {
                        free(n);
                    }
                    off += RECORD_HEADER + len;
                    continue;
                }
            }
        }
        if (last_file && strncmp(problem, "torn", 4) == 0) {
            eb_log_warn("spool_torn_tail", "path=%s offset=%llu size=%llu: cut", path,
                        (unsigned long long)off, (unsigned long long)size);
            if (ftruncate(fd, (off_t)off) != 0)
                eb_log_error("spool_truncate", "path=%s errno=%d", path, errno);
        } else {
            eb_log_error("spool_corrupt", "path=%s offset=%llu problem=\"%s\": rest of file skipped",
                         path, (unsigned long long)off, problem);
        }
        break;
    }
    close(fd);
    return true;
}

static bool recover(eb_spool *s, char *err, size_t err_len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/acked", s->dir);
    uint64_t acked = 0;
    FILE *f = fopen(path, "r");
    if (f) {
        unsigned long long v = 0;
        if (fscanf(f, "%llu", &v) == 1)
            acked = v;
        fclose(f);
    }
    DIR *d = opendir(s->dir);
    if (!d) {
        snprintf(err, err_len, "cannot read spool directory \"%s\": %s", s->dir, strerror(errno));
        return false;
    }
    uint64_t *firsts = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned long long first;
        char tail[8];
        if (sscanf(e->d_name, "spool-%16llx.%4s", &first, tail) == 2 && strcmp(tail, "log") == 0) {
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                uint64_t *g = realloc(firsts, cap * sizeof *g);
                if (!g)
                    break;
                firsts = g;
            }
            firsts[n++] = first;
        }
    }
    closedir(d);
    if (n)
        qsort(firsts, n, sizeof *firsts, cmp_u64);
    uint64_t prev_seq = 0; /* records must be strictly increasing across all files */
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        uint64_t last_in_file = 0;
        ok = recover_file(s, firsts[i], i + 1 == n, acked, &prev_seq, &last_in_file);
        if (s->n_files == s->files_cap) {
            size_t fc = s->files_cap ? s->files_cap * 2 : 8;
            spool_file *g = realloc(s->files, fc * sizeof *g);
            if (!g) {
                ok = false;
                break;
            }
            s->files = g;
            s->files_cap = fc;
        }
        s->files[s->n_files++] = (spool_file){firsts[i], last_in_file ? last_in_file : firsts[i]};
    }
    free(firsts);
    if (!ok) {
        snprintf(err, err_len, "out of memory recovering spool \"%s\"", s->dir);
        return false;
    }
    uint64_t max_seq = prev_seq > acked ? prev_seq : acked;
    s->next_seq = max_seq + 1;
    s->acked_seq = acked;
    s->durable_seq = max_seq;
    s->handed_seq = acked;
    /* records recovered are durable: the first take_durable hands them out */
    if (s->replayed) {
        uint64_t one = 1;
        ssize_t w = write(s->event_fd, &one, sizeof one);
        (void)w;
    }
    /* leading acked holes */
    while (s->window_len && !s->window[s->head]) {
        s->head++;
        s->window_len--;
        s->base_seq++;
    }
    return true;
}

/* ---- public API --------------------------------------------------------------------------- */

void eb_spool_options_default(eb_spool_options *options)
{
    options->max_file_bytes = 64ull << 20;
    options->max_pending_bytes = 256ull << 20;
    options->sync = true;
}

eb_spool *eb_spool_open(const char *dir, const eb_spool_options *options, char *err,
                        size_t err_len)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, err_len, "cannot create spool directory \"%s\": %s", dir, strerror(errno));
        return NULL;
    }
    eb_spool *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    if (options)
        s->options = *options;
    else
        eb_spool_options_default(&s->options);
    s->dir = strdup(dir);
    s->current_fd = -1;
    s->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (!s->dir || s->event_fd < 0 || !recover(s, err, err_len)) {
        if (s->event_fd < 0)
            snprintf(err, err_len, "eventfd failed: %s", strerror(errno));
        eb_spool_close(&s);
        return NULL;
    }
    if (pthread_create(&s->thread, NULL, writer_main, s) != 0) {
        snprintf(err, err_len, "cannot start spool writer thread");
        eb_spool_close(&s);
        return NULL;
    }
    s->thread_started = true;
    if (s->replayed)
        eb_log_info("spool_recovered", "dir=%s records=%llu acked=%llu", dir,
                    (unsigned long long)s->replayed, (unsigned long long)s->acked_seq);
    return s;
}

void eb_spool_close(eb_spool **spool)
{
    if (!spool || !*spool)
        return;
    eb_spool *s = *spool;
    if (s->thread_started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    /* nodes still queued for writing (writer failed) are also in the window */
    for (size_t i = 0; i < s->window_len; i++)
        free(s->window[s->head + i]);
    free(s->window);
    free(s->files);
    if (s->current_fd >= 0)
        close(s->current_fd);
    if (s->event_fd >= 0)
        close(s->event_fd);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->dir);
    free(s);
    *spool = NULL;
}

eb_status eb_spool_append(eb_spool *s, const void *data, size_t len, uint64_t *seq)
{
    if (len == 0 || len >= MAX_RECORD)
        return EB_ERR_INVALID;
    if (s->pending_bytes + len > s->options.max_pending_bytes)
        return EB_ERR_BUSY;
    pthread_mutex_lock(&s->mu);
    bool failed = s->error[0] != '\0';
    pthread_mutex_unlock(&s->mu);
    if (failed)
        return EB_ERR_IO;
    spool_node *n = malloc(sizeof *n + len);
    if (!n)
        return EB_ERR_NOMEM;
    n->seq = s->next_seq;
    n->len = (uint32_t)len;
    n->acked = false;
    n->next_write = NULL;
    memcpy(n->data, data, len);
    if (!window_push(s, n)) {
        free(n);
        return EB_ERR_NOMEM;
    }
    s->next_seq++;
    s->appended++;
    s->pending++;
    s->pending_bytes += len;
    pthread_mutex_lock(&s->mu);
    if (s->queue_tail)
        s->queue_tail->next_write = n;
    else
        s->queue_head = n;
    s->queue_tail = n;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (seq)
        *seq = n->seq;
    return EB_OK;
}

int eb_spool_notify_fd(const eb_spool *s) { return s->event_fd; }

size_t eb_spool_take_durable(eb_spool *s, eb_spool_record_fn fn, void *ctx)
{
    uint64_t drained;
    while (read(s->event_fd, &drained, sizeof drained) > 0) {
    }
    pthread_mutex_lock(&s->mu);
    uint64_t durable = s->durable_seq;
    pthread_mutex_unlock(&s->mu);
    size_t count = 0;
    for (uint64_t seq = s->handed_seq + 1; seq <= durable; seq++) {
        spool_node *n = window_get(s, seq);
        if (n && !n->acked) {
            fn(ctx, n->seq, n->data, n->len);
            count++;
        }
    }
    if (durable > s->handed_seq)
        s->handed_seq = durable;
    return count;
}

size_t eb_spool_for_each_pending(eb_spool *s, eb_spool_record_fn fn, void *ctx)
{
    pthread_mutex_lock(&s->mu);
    uint64_t durable = s->durable_seq;
    pthread_mutex_unlock(&s->mu);
    size_t count = 0;
    for (size_t i = 0; i < s->window_len; i++) {
        spool_node *n = s->window[s->head + i];
        if (n && !n->acked && n->seq <= durable) {
            fn(ctx, n->seq, n->data, n->len);
            count++;
        }
    }
    return count;
}

eb_status eb_spool_ack(eb_spool *s, uint64_t seq)
{
    pthread_mutex_lock(&s->mu);
    uint64_t durable = s->durable_seq;
    pthread_mutex_unlock(&s->mu);
    spool_node *n = seq <= durable ? window_get(s, seq) : NULL;
    if (!n || n->acked)
        return EB_ERR_NOT_FOUND;
    s->pending--;
    s->pending_bytes -= n->len;
    s->window[s->head + (seq - s->base_seq)] = NULL;
    free(n);
    /* advance over the contiguous acked prefix */
    size_t drop = 0;
    while (drop < s->window_len && !s->window[s->head + drop])
        drop++;
    if (drop) {
        s->head += drop;
        s->window_len -= drop;
        s->base_seq += drop;
        pthread_mutex_lock(&s->mu);
        s->acked_seq = s->base_seq - 1;
        s->housekeeping = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
    return EB_OK;
}

void eb_spool_get_stats(eb_spool *s, eb_spool_stats *st)
{
    pthread_mutex_lock(&s->mu);
    st->durable_seq = s->durable_seq;
    st->acked_seq = s->acked_seq;
    st->syncs = s->syncs;
    st->files = s->n_files;
    pthread_mutex_unlock(&s->mu);
    st->appended = s->appended;
    st->pending = s->pending;
    st->pending_bytes = s->pending_bytes;
    st->replayed = s->replayed;
}

const char *eb_spool_error(eb_spool *s)
{
    pthread_mutex_lock(&s->mu);
    const char *e = s->error[0] ? s->error : NULL;
    pthread_mutex_unlock(&s->mu);
    return e;
}
