/* eb_backfill_state — the backfill checkpoint: a watermark, the done rows above it, the failed
 * rows; saved atomically (write, fsync, rename, fsync the directory).
 *
 * Both sets are sorted arrays. "ahead" holds every settled row above the watermark (done or
 * failed) and stays small because the backfill never reads more than a bounded window past the
 * watermark; "failed" holds every failed row, above or below it, and is as long as the number
 * of failures.
 */
#include "eb_backfill_state.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eb_hash.h"

#define MAGIC "embroker-backfill-checkpoint 1"
enum { PREFIX_BYTES = 64 * 1024, PER_LINE = 32 };

typedef struct u64set {
    uint64_t *v;
    size_t n, cap;
} u64set;

struct eb_backfill_state {
    char *input_id;
    uint64_t watermark;
    u64set ahead;  /* settled rows > watermark */
    u64set failed; /* failed rows, anywhere */
};

/* ---- sorted sets ----------------------------------------------------------------------- */

static size_t lower_bound(const u64set *s, uint64_t x)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->v[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool set_has(const u64set *s, uint64_t x)
{
    size_t i = lower_bound(s, x);
    return i < s->n && s->v[i] == x;
}

static bool set_add(u64set *s, uint64_t x)
{
    size_t i = lower_bound(s, x);
    if (i < s->n && s->v[i] == x)
        return true;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        uint64_t *grown = realloc(s->v, cap * sizeof *grown);
        if (!grown)
            return false;
        s->v = grown;
        s->cap = cap;
    }
    memmove(s->v + i + 1, s->v + i, (s->n - i) * sizeof *s->v);
    s->v[i] = x;
    s->n++;
    return true;
}

static void set_remove(u64set *s, uint64_t x)
{
    size_t i = lower_bound(s, x);
    if (i < s->n && s->v[i] == x) {
        memmove(s->v + i, s->v + i + 1, (s->n - i - 1) * sizeof *s->v);
        s->n--;
    }
}

/* Advance the watermark over the settled rows at the front of `ahead`. */
static void advance(eb_backfill_state *st)
{
    size_t k = 0;
    while (k < st->ahead.n && st->ahead.v[k] == st->watermark) {
        st->watermark++;
        k++;
    }
    if (k) {
        memmove(st->ahead.v, st->ahead.v + k, (st->ahead.n - k) * sizeof *st->ahead.v);
        st->ahead.n -= k;
    }
}

static void settle(eb_backfill_state *st, uint64_t ordinal)
{
    if (ordinal < st->watermark)
        return;
    if (ordinal == st->watermark) {
        st->watermark++;
        advance(st);
        return;
    }
    set_add(&st->ahead, ordinal); /* out of memory: the row is simply redone after a restart */
}

/* ---- public ---------------------------------------------------------------------------- */

eb_backfill_state *eb_backfill_state_new(const char *input_id)
{
    eb_backfill_state *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->input_id = strdup(input_id ? input_id : "");
    if (!st->input_id) {
        free(st);
        return NULL;
    }
    return st;
}

void eb_backfill_state_destroy(eb_backfill_state **stp)
{
    if (!stp || !*stp)
        return;
    free((*stp)->input_id);
    free((*stp)->ahead.v);
    free((*stp)->failed.v);
    free(*stp);
    *stp = NULL;
}

bool eb_backfill_state_is_done(const eb_backfill_state *st, uint64_t ordinal)
{
    if (set_has(&st->failed, ordinal))
        return false;
    return ordinal < st->watermark || set_has(&st->ahead, ordinal);
}

void eb_backfill_state_mark_done(eb_backfill_state *st, uint64_t ordinal)
{
    set_remove(&st->failed, ordinal);
    settle(st, ordinal);
}

void eb_backfill_state_mark_failed(eb_backfill_state *st, uint64_t ordinal)
{
    set_add(&st->failed, ordinal);
    settle(st, ordinal);
}

uint64_t eb_backfill_state_watermark(const eb_backfill_state *st)
{
    return st->watermark;
}

size_t eb_backfill_state_ahead(const eb_backfill_state *st)
{
    return st->ahead.n;
}

size_t eb_backfill_state_failed_count(const eb_backfill_state *st)
{
    return st->failed.n;
}

/* SHA-256 of the first n bytes of path in hex (out: 65 bytes). false when the file is shorter
 * or unreadable. */
static bool prefix_hash(const char *path, uint64_t n, char *out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    uint8_t *buf = malloc(n ? n : 1);
    bool ok = buf && fread(buf, 1, n, f) == n;
    fclose(f);
    if (ok) {
        uint8_t digest[EB_HASH_LEN];
        eb_sha256(buf, n, digest);
        eb_hex(digest, EB_HASH_LEN, out);
    }
    free(buf);
    return ok;
}

char *eb_backfill_state_input_id(const char *path, const char *sql, char *err, size_t err_len)
{
    char *id = NULL;
    if (path) {
        char real[PATH_MAX];
        struct stat sb;
        if (!realpath(path, real) || stat(real, &sb) != 0) {
            snprintf(err, err_len, "cannot read %s: %s", path, strerror(errno));
            return NULL;
        }
        uint64_t n = (uint64_t)sb.st_size < PREFIX_BYTES ? (uint64_t)sb.st_size : PREFIX_BYTES;
        char hex[2 * EB_HASH_LEN + 1];
        if (!prefix_hash(real, n, hex)) {
            snprintf(err, err_len, "cannot read %s", real);
            return NULL;
        }
        if (asprintf(&id, "file %" PRIu64 " %s %s", n, hex, real) < 0)
            id = NULL;
    } else {
        uint8_t digest[EB_HASH_LEN];
        char hex[2 * EB_HASH_LEN + 1];
        eb_sha256(sql ? sql : "", sql ? strlen(sql) : 0, digest);
        if (asprintf(&id, "sql %s", eb_hex(digest, EB_HASH_LEN, hex)) < 0)
            id = NULL;
    }
    if (!id)
        snprintf(err, err_len, "out of memory");
    return id;
}

/* Does the stored identity match the current input? Files match when the path is the same and
 * the first n bytes (n as stored) still hash the same, so appended rows keep the checkpoint. */
static bool same_input(const char *current, const char *stored)
{
    if (strcmp(current, stored) == 0)
        return true;
    uint64_t n_cur, n_old;
    int off_cur = 0, off_old = 0;
    char hex_cur[65], hex_old[65];
    if (sscanf(current, "file %" SCNu64 " %64s %n", &n_cur, hex_cur, &off_cur) != 2 ||
        sscanf(stored, "file %" SCNu64 " %64s %n", &n_old, hex_old, &off_old) != 2 ||
        !off_cur || !off_old)
        return false;
    const char *path = current + off_cur;
    if (strcmp(path, stored + off_old) != 0 || n_cur < n_old)
        return false;
    char hex_now[65];
    return prefix_hash(path, n_old, hex_now) && strcmp(hex_now, hex_old) == 0;
}

static bool parse_list(const char *s, u64set *set)
{
    while (*s) {
        while (*s == ' ')
            s++;
        if (!*s || *s == '\n')
            break;
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (end == s || errno || (*end && *end != ' ' && *end != '\n'))
            return false;
        if (!set_add(set, v))
            return false;
        s = end;
    }
    return true;
}

eb_status eb_backfill_state_load(eb_backfill_state *st, const char *path, char *err,
                                 size_t err_len)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return EB_ERR_NOT_FOUND;
        snprintf(err, err_len, "cannot read the checkpoint %s: %s", path, strerror(errno));
        return EB_ERR_IO;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int lineno = 0;
    bool seen_end = false, seen_next = false;
    eb_status rc = EB_OK;
    uint64_t watermark = 0;
    u64set ahead = {0}, failed = {0};
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (n && line[n - 1] == '\n')
            line[--n] = '\0';
        if (lineno == 1) {
            if (strcmp(line, MAGIC) != 0) {
                snprintf(err, err_len, "%s is not a backfill checkpoint (first line \"%.40s\"); "
                         "pass another --checkpoint or delete it", path, line);
                rc = EB_ERR_INVALID;
                break;
            }
            continue;
        }
        if (strncmp(line, "input ", 6) == 0) {
            if (!same_input(st->input_id, line + 6)) {
                snprintf(err, err_len, "checkpoint %s was written for another input (%.200s); "
                         "this input is %.200s. Delete the checkpoint to start over, or pass "
                         "--checkpoint with another file", path, line + 6, st->input_id);
                rc = EB_ERR_INVALID;
                break;
            }
        } else if (strncmp(line, "next ", 5) == 0) {
            char *end = NULL;
            errno = 0;
            watermark = strtoull(line + 5, &end, 10);
            seen_next = !errno && end != line + 5 && *end == '\0';
        } else if (strncmp(line, "done ", 5) == 0) {
            if (!parse_list(line + 5, &ahead))
                rc = EB_ERR_INVALID;
        } else if (strncmp(line, "failed ", 7) == 0) {
            if (!parse_list(line + 7, &failed))
                rc = EB_ERR_INVALID;
        } else if (strcmp(line, "end") == 0) {
            seen_end = true;
        }
        if (rc != EB_OK) {
            snprintf(err, err_len, "checkpoint %s line %d is malformed; delete the file to start "
                     "over", path, lineno);
            break;
        }
    }
    if (rc == EB_OK && ferror(f)) {
        snprintf(err, err_len, "cannot read the checkpoint %s: %s", path, strerror(errno));
        rc = EB_ERR_IO;
    }
    if (rc == EB_OK && (lineno == 0 || !seen_end || !seen_next)) {
        snprintf(err, err_len, "checkpoint %s is incomplete (no %s line); delete it to start "
                 "over", path, !seen_next ? "next" : "end");
        rc = EB_ERR_INVALID;
    }
    free(line);
    fclose(f);
    if (rc != EB_OK) {
        free(ahead.v);
        free(failed.v);
        return rc;
    }
    free(st->ahead.v);
    free(st->failed.v);
    st->watermark = watermark;
    st->ahead = ahead;
    st->failed = failed;
    /* Rows listed in both are failed (a failed row is never done) and stay settled. */
    for (size_t i = 0; i < failed.n; i++)
        if (failed.v[i] > st->watermark)
            set_add(&st->ahead, failed.v[i]);
    advance(st);
    return EB_OK;
}

static void write_list(FILE *f, const char *key, const u64set *s, const u64set *exclude)
{
    size_t on_line = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (exclude && set_has(exclude, s->v[i]))
            continue;
        if (on_line == 0)
            fputs(key, f);
        fprintf(f, " %" PRIu64, s->v[i]);
        if (++on_line == PER_LINE) {
            fputc('\n', f);
            on_line = 0;
        }
    }
    if (on_line)
        fputc('\n', f);
}

eb_status eb_backfill_state_save(const eb_backfill_state *st, const char *path, char *err,
                                 size_t err_len)
{
    char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp", path) < 0) {
        snprintf(err, err_len, "out of memory");
        return EB_ERR_NOMEM;
    }
    eb_status rc = EB_ERR_IO;
    FILE *f = fopen(tmp, "w");
    if (!f) {
        snprintf(err, err_len, "cannot write the checkpoint %s: %s", tmp, strerror(errno));
        goto out;
    }
    fprintf(f, MAGIC "\ninput %s\nnext %" PRIu64 "\n", st->input_id, st->watermark);
    write_list(f, "done", &st->ahead, &st->failed);
    write_list(f, "failed", &st->failed, NULL);
    fputs("end\n", f);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        snprintf(err, err_len, "cannot write the checkpoint %s: %s", tmp, strerror(errno));
        fclose(f);
        unlink(tmp);
        goto out;
    }
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        snprintf(err, err_len, "cannot replace the checkpoint %s: %s", path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    /* The rename is durable once the directory is. */
    char *dir = strdup(path);
    if (dir) {
        char *slash = strrchr(dir, '/');
        const char *d = slash ? (slash == dir ? "/" : (*slash = '\0', dir)) : ".";
        int fd = open(d, O_RDONLY | O_DIRECTORY);
        if (fd >= 0) {
            fsync(fd);
            close(fd);
        }
        free(dir);
    }
    rc = EB_OK;
out:
    free(tmp);
    return rc;
}
