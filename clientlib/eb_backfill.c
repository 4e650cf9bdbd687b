/* eb_backfill — the backfill loop: a fixed set of slots, each holding one row from read to
 * acknowledgement, driven by embroker_submit_store and embroker_poll on one handle.
 *
 * A slot keeps its row (and image bytes) until the row is settled, so a passing failure (queue
 * full, deadline, broker restart, timeout) is retried from the slot after a backoff without
 * reading anything again. The checkpoint state learns about a row only when it is settled:
 * done after the broker's acknowledgement, failed after a permanent error or the last attempt.
 */
#include "eb_backfill.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "eb_clock.h"

enum { MAX_IMAGE_BYTES = 32 << 20 };

typedef struct slot {
    bool used;
    eb_backfill_row row;
    uint8_t *image;
    size_t image_len;
    embroker_request_t *req;   /* in flight, or NULL while waiting to (re)submit */
    unsigned attempts;
    int64_t sent_us;
    int64_t retry_at_us;
    eb_status last_status;
    char last_error[256];
} slot;

/* Product ids seen so far (duplicates): open addressing, strings owned. */
typedef struct idset {
    char **keys;
    size_t cap, n;
} idset;

typedef struct run {
    embroker_t *eb;
    const eb_backfill_source *src;
    const eb_backfill_config *cfg;
    eb_backfill_summary *sum;
    slot *slots;
    unsigned n_slots;
    unsigned in_flight, max_attempts, window;
    int timeout_ms;
    idset seen;
    int64_t start_us, last_save_us, last_progress_us;
    uint64_t consecutive_broker_failures;
    uint64_t max_ordinal_read; /* next ordinal to expect (for the window) */
    bool progress_drawn;
} run;

/* ---- small helpers --------------------------------------------------------------------- */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Insert key; true when it was already there. Out of memory: treated as new (no dedup). */
static bool idset_check_add(idset *s, const char *key)
{
    if ((s->n + 1) * 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        char **keys = calloc(cap, sizeof *keys);
        if (!keys)
            return false;
        for (size_t i = 0; i < s->cap; i++)
            if (s->keys[i]) {
                size_t j = fnv1a(s->keys[i]) & (cap - 1);
                while (keys[j])
                    j = (j + 1) & (cap - 1);
                keys[j] = s->keys[i];
            }
        free(s->keys);
        s->keys = keys;
        s->cap = cap;
    }
    size_t j = fnv1a(key) & (s->cap - 1);
    while (s->keys[j]) {
        if (strcmp(s->keys[j], key) == 0)
            return true;
        j = (j + 1) & (s->cap - 1);
    }
    s->keys[j] = strdup(key);
    if (s->keys[j])
        s->n++;
    return false;
}

static void idset_free(idset *s)
{
    for (size_t i = 0; i < s->cap; i++)
        free(s->keys[i]);
    free(s->keys);
}

bool eb_backfill_status_retryable(eb_status st)
{
    switch (st) {
    case EB_ERR_BUSY:
    case EB_ERR_TIMEOUT:
    case EB_ERR_DEADLINE:
    case EB_ERR_RESTARTED:
    case EB_ERR_WORKER_LOST:
    case EB_ERR_UNAVAILABLE:
    case EB_ERR_SHUTDOWN:
        return true;
    default:
        return false;
    }
}

void eb_backfill_summary_add_failure(eb_backfill_summary *sum, const char *reason,
                                     const char *example)
{
    sum->failed++;
    eb_backfill_reason *r = NULL;
    for (size_t i = 0; i < sum->n_reasons; i++)
        if (strcmp(sum->reasons[i].reason, reason) == 0)
            r = &sum->reasons[i];
    if (!r) {
        if (sum->n_reasons == EB_BACKFILL_MAX_REASONS) {
            sum->other_reasons++;
            return;
        }
        r = &sum->reasons[sum->n_reasons++];
        memset(r, 0, sizeof *r);
        snprintf(r->reason, sizeof r->reason, "%s", reason);
    }
    r->count++;
    if (r->n_examples < EB_BACKFILL_EXAMPLES)
        snprintf(r->examples[r->n_examples++], sizeof r->examples[0], "%s", example);
}

static void describe_row(const eb_backfill_row *row, char *buf, size_t cap)
{
    if (row->line)
        snprintf(buf, cap, "row %" PRIu64 " (line %" PRIu64 "%s%s)", row->ordinal + 1,
                 row->line, row->product_id ? ", product " : "",
                 row->product_id ? row->product_id : "");
    else
        snprintf(buf, cap, "row %" PRIu64 "%s%s", row->ordinal + 1,
                 row->product_id ? " (product " : "", row->product_id ? row->product_id : "");
    if (!row->line && row->product_id)
        strncat(buf, ")", cap - strlen(buf) - 1);
}

static void fail_row(run *R, const eb_backfill_row *row, const char *reason, const char *msg)
{
    char where[320], example[640];
    describe_row(row, where, sizeof where);
    snprintf(example, sizeof example, "%s: %s", where, msg);
    eb_backfill_summary_add_failure(R->sum, reason, example);
    if (R->cfg->state)
        eb_backfill_state_mark_failed(R->cfg->state, row->ordinal);
}

static void slot_release(slot *s)
{
    embroker_request_free(&s->req);
    eb_backfill_row_clear(&s->row);
    free(s->image);
    memset(s, 0, sizeof *s);
}

/* Read an image file whole. NULL with a reason in err. */
static uint8_t *read_image(const char *base_dir, const char *path, size_t *len, char *err,
                           size_t err_len)
{
    char full[8192];
    if (path[0] == '/' || !base_dir || !*base_dir)
        snprintf(full, sizeof full, "%s", path);
    else
        snprintf(full, sizeof full, "%s/%s", base_dir, path);
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, err_len, "cannot open image %.300s: %s", full, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        snprintf(err, err_len, "image %.300s is not a regular file", full);
        close(fd);
        return NULL;
    }
    if (sb.st_size == 0 || sb.st_size > MAX_IMAGE_BYTES) {
        snprintf(err, err_len, "image %.300s has %lld bytes (must be 1..%d)", full,
                 (long long)sb.st_size, MAX_IMAGE_BYTES);
        close(fd);
        return NULL;
    }
    size_t n = (size_t)sb.st_size, got = 0;
    uint8_t *buf = malloc(n);
    if (!buf)
        snprintf(err, err_len, "cannot read image %.300s: out of memory", full);
    while (buf && got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0) {
            snprintf(err, err_len, "cannot read image %.300s: %s", full,
                     r < 0 ? strerror(errno) : "file shrank while reading");
            free(buf);
            buf = NULL;
        } else {
            got += (size_t)r;
        }
    }
    close(fd);
    *len = n;
    return buf;
}

/* ---- progress -------------------------------------------------------------------------- */

static void fmt_duration(double s, char *buf, size_t cap)
{
    if (s < 0 || s > 1e8) {
        snprintf(buf, cap, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
}

static void progress(run *R, bool final)
{
    const eb_backfill_config *cfg = R->cfg;
    if (!cfg->progress)
        return;
    int64_t now = eb_now_us();
    int64_t every = cfg->progress_tty ? 200000
                                      : (int64_t)(cfg->progress_interval_ms > 0
                                                      ? cfg->progress_interval_ms
                                                      : 10000) * 1000;
    if (!final && now - R->last_progress_us < every)
        return;
    if (final && !cfg->progress_tty && !R->progress_drawn)
        return; /* the summary says it all */
    R->last_progress_us = now;
    const eb_backfill_summary *s = R->sum;
    double elapsed = (double)(now - R->start_us) / 1e6;
    uint64_t worked = s->done + s->failed;
    uint64_t settled = worked + s->skipped_checkpoint + s->skipped_duplicate;
    double rate = elapsed > 0 ? (double)worked / elapsed : 0;
    uint64_t total = R->src->total_rows;
    char eta[32] = "?";
    if (total && rate > 0)
        fmt_duration((double)(total > settled ? total - settled : 0) / rate, eta, sizeof eta);
    FILE *f = cfg->progress;
    if (cfg->progress_tty) {
        fputs("\r", f);
        if (total) {
            double frac = (double)settled / (double)total;
            if (frac > 1)
                frac = 1;
            int width = 30, filled = (int)(frac * width);
            fputc('[', f);
            for (int i = 0; i < width; i++)
                fputc(i < filled ? '#' : '.', f);
            fprintf(f, "] %5.1f%% %" PRIu64 "/%" PRIu64, frac * 100, settled, total);
        } else {
            fprintf(f, "%" PRIu64 " rows", settled);
        }
        fprintf(f, "  %.1f rows/s  ETA %s  failed %" PRIu64 "\033[K", rate, eta, s->failed);
        if (final)
            fputc('\n', f);
    } else {
        fprintf(f, "backfill: %" PRIu64 "%s%" PRIu64 " rows", settled, total ? "/" : "",
                total);
        if (!total)
            fprintf(f, " (total unknown)");
        fprintf(f, ", %.1f rows/s, eta %s, done %" PRIu64 ", skipped %" PRIu64
                   ", failed %" PRIu64 "\n",
                rate, eta, s->done, s->skipped_checkpoint + s->skipped_duplicate, s->failed);
    }
    fflush(f);
    R->progress_drawn = true;
}

/* ---- the loop -------------------------------------------------------------------------- */

static eb_status save_state(run *R, char *err, size_t err_len)
{
    R->last_save_us = eb_now_us();
    if (!R->cfg->state || !R->cfg->checkpoint_path)
        return EB_OK;
    return eb_backfill_state_save(R->cfg->state, R->cfg->checkpoint_path, err, err_len);
}

static void schedule_retry_or_fail(run *R, slot *s, eb_status st, const char *msg)
{
    s->last_status = st;
    snprintf(s->last_error, sizeof s->last_error, "%s", msg); /* msg may live in s->req */
    msg = s->last_error;
    embroker_request_free(&s->req);
    if (eb_backfill_status_retryable(st) && s->attempts < R->max_attempts) {
        /* 0.5 s, 1 s, 2 s, … capped at 10 s: a full queue or a restarting broker needs time */
        int64_t backoff = 500000LL << (s->attempts > 5 ? 5 : s->attempts - 1);
        if (backoff > 10000000)
            backoff = 10000000;
        s->retry_at_us = eb_now_us() + backoff;
        R->sum->retries++;
        return;
    }
    char reason[64];
    snprintf(reason, sizeof reason, "broker: %s", eb_status_str(st));
    char full[400];
    if (eb_backfill_status_retryable(st))
        snprintf(full, sizeof full, "%s (after %u attempts)", msg, s->attempts);
    else
        snprintf(full, sizeof full, "%s", msg);
    fail_row(R, &s->row, reason, full);
    if (eb_backfill_status_retryable(st))
        R->consecutive_broker_failures++;
    slot_release(s);
}

static void submit_slot(run *R, slot *s)
{
    const eb_backfill_config *cfg = R->cfg;
    embroker_scan_options_t o;
    embroker_scan_options_default(&o);
    o.product_id = s->row.product_id;
    o.template_name = s->row.template_name;
    o.source_type = cfg->source_type;
    o.image_model = cfg->image_model;
    o.text_model = cfg->text_model;
    o.deadline_ms = cfg->deadline_ms;
    o.bulk = true;
    embroker_input_t img = {.kind = EMBROKER_INPUT_IMAGE, .format = EMBROKER_FORMAT_AUTO,
                            .bytes = s->image, .len = s->image_len};
    char err[512];
    s->attempts++;
    s->retry_at_us = 0;
    s->sent_us = eb_now_us();
    eb_status st = embroker_submit_store(R->eb, s->image ? &img : NULL, s->row.text, &o, &s->req,
                                         err, sizeof err);
    if (st != EB_OK)
        schedule_retry_or_fail(R, s, st, err);
}

static void on_reply(run *R, slot *s)
{
    embroker_request_t *req = s->req;
    eb_status st = embroker_request_status(req);
    if (st == EB_OK) {
        for (size_t i = 0; i < embroker_request_count(req); i++) {
            const embroker_result_t *r = embroker_request_result(req, i);
            if (!r || r->status != EB_OK) {
                char msg[400];
                snprintf(msg, sizeof msg, "%s input: %s",
                         i == 0 && s->image ? "image" : "text",
                         r && r->message && *r->message ? r->message : "failed");
                schedule_retry_or_fail(R, s, r ? r->status : EB_ERR_PROTOCOL, msg);
                return;
            }
        }
        bool all_cached = embroker_request_count(req) > 0;
        for (size_t i = 0; i < embroker_request_count(req); i++)
            all_cached = all_cached && embroker_request_result(req, i)->cached;
        R->sum->cache_hits += all_cached;
        R->sum->done++;
        R->consecutive_broker_failures = 0;
        if (R->cfg->state)
            eb_backfill_state_mark_done(R->cfg->state, s->row.ordinal);
        slot_release(s);
        return;
    }
    schedule_retry_or_fail(R, s, st, embroker_request_error(req));
}

/* Read rows until a slot is filled (or the source ends / the window is full). Returns EB_OK,
 * EB_ERR_NOT_FOUND at the end, or a fatal source error. */
static eb_status fill_slot(run *R, slot *s, char *err, size_t err_len)
{
    const eb_backfill_config *cfg = R->cfg;
    for (;;) {
        if (cfg->state &&
            R->max_ordinal_read >= eb_backfill_state_watermark(cfg->state) + R->window)
            return EB_ERR_BUSY; /* wait for the watermark to move */
        eb_backfill_row *row = &s->row;
        eb_backfill_row_clear(row);
        eb_status st = R->src->next(R->src->ctx, row, err, err_len);
        if (st != EB_OK)
            return st;
        R->sum->rows++;
        R->max_ordinal_read = row->ordinal + 1;
        if (cfg->state && eb_backfill_state_is_done(cfg->state, row->ordinal)) {
            R->sum->skipped_checkpoint++;
            if (row->product_id)
                idset_check_add(&R->seen, row->product_id);
            continue;
        }
        if (!row->template_name && cfg->template_default)
            row->template_name = strdup(cfg->template_default);
        if (!eb_backfill_row_validate(row)) {
            fail_row(R, row, row->reason, row->error);
            continue;
        }
        if (idset_check_add(&R->seen, row->product_id)) {
            R->sum->skipped_duplicate++;
            if (cfg->state)
                eb_backfill_state_mark_done(cfg->state, row->ordinal);
            continue;
        }
        if (row->image) {
            char why[512];
            s->image = read_image(R->src->base_dir, row->image, &s->image_len, why, sizeof why);
            if (!s->image) {
                fail_row(R, row, "image unreadable", why);
                continue;
            }
        }
        s->used = true;
        return EB_OK;
    }
}

eb_status eb_backfill_run(embroker_t *eb, const eb_backfill_source *src,
                          const eb_backfill_config *cfg, eb_backfill_summary *sum, char *err,
                          size_t err_len)
{
    memset(sum, 0, sizeof *sum);
    run R;
    memset(&R, 0, sizeof R);
    R.eb = eb;
    R.src = src;
    R.cfg = cfg;
    R.sum = sum;
    R.in_flight = cfg->in_flight ? cfg->in_flight : 8;
    R.max_attempts = cfg->max_attempts ? cfg->max_attempts : 4;
    R.timeout_ms = cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms : 120000;
    R.window = cfg->window ? cfg->window : (R.in_flight * 64 > 1024 ? R.in_flight * 64 : 1024);
    if (R.window < R.in_flight)
        R.window = R.in_flight;
    int interval_ms = cfg->checkpoint_interval_ms > 0 ? cfg->checkpoint_interval_ms : 1000;
    R.slots = calloc(R.in_flight, sizeof *R.slots);
    if (!R.slots) {
        snprintf(err, err_len, "out of memory");
        return EB_ERR_NOMEM;
    }
    R.start_us = R.last_save_us = R.last_progress_us = eb_now_us();
    eb_status rc = EB_OK;
    bool eof = false;
    err[0] = '\0';
    for (;;) {
        if (cfg->stop && *cfg->stop) {
            sum->interrupted = true;
            rc = EB_ERR_CANCELLED;
            snprintf(err, err_len, "interrupted; rows in flight will be sent again by the next "
                     "run");
            break;
        }
        /* Fill free slots with new rows and submit them. */
        for (unsigned i = 0; i < R.in_flight && !eof; i++) {
            slot *s = &R.slots[i];
            if (s->used)
                continue;
            eb_status st = fill_slot(&R, s, err, err_len);
            if (st == EB_ERR_NOT_FOUND) {
                eb_backfill_row_clear(&s->row);
                eof = true;
            } else if (st == EB_ERR_BUSY) {
                eb_backfill_row_clear(&s->row);
                break;
            } else if (st != EB_OK) {
                eb_backfill_row_clear(&s->row);
                rc = st;
                goto done;
            } else {
                submit_slot(&R, s);
            }
        }
        /* Resubmit rows whose backoff has passed; note what is in flight. */
        int64_t now = eb_now_us();
        unsigned busy = 0, waiting = 0;
        int64_t next_retry = INT64_MAX;
        for (unsigned i = 0; i < R.in_flight; i++) {
            slot *s = &R.slots[i];
            if (!s->used)
                continue;
            if (!s->req && s->retry_at_us && s->retry_at_us <= now)
                submit_slot(&R, s);
            if (!s->used)
                continue;
            if (s->req) {
                busy++;
                if (now - s->sent_us > (int64_t)R.timeout_ms * 1000) {
                    char msg[200];
                    snprintf(msg, sizeof msg, "no reply within %d ms", R.timeout_ms);
                    embroker_cancel(eb, s->req);
                    schedule_retry_or_fail(&R, s, EB_ERR_TIMEOUT, msg);
                }
            } else if (s->retry_at_us) {
                waiting++;
                if (s->retry_at_us < next_retry)
                    next_retry = s->retry_at_us;
            }
        }
        if (R.consecutive_broker_failures >= (uint64_t)R.in_flight * 2 + 8) {
            rc = EB_ERR_UNAVAILABLE;
            snprintf(err, err_len, "the broker failed %" PRIu64 " rows in a row for passing "
                     "reasons (see the summary); stopping so they are not all failed: fix the "
                     "broker and run again to resume", R.consecutive_broker_failures);
            goto done;
        }
        bool any_used = false;
        for (unsigned i = 0; i < R.in_flight; i++)
            any_used = any_used || R.slots[i].used;
        if (eof && !any_used)
            break;
        /* Wait for a reply (or the next retry). */
        int wait_ms = 200;
        if (waiting && !busy) {
            int64_t left = (next_retry - eb_now_us()) / 1000;
            wait_ms = left < 1 ? 1 : left > 200 ? 200 : (int)left;
        }
        embroker_request_t *done_req = NULL;
        eb_status ps = EB_ERR_NOT_FOUND;
        if (busy) {
            ps = embroker_poll(eb, &done_req, wait_ms);
        } else if (waiting) {
            struct timespec ts = {0, (long)wait_ms * 1000000L};
            nanosleep(&ts, NULL);
        }
        while (ps == EB_OK && done_req) {
            for (unsigned i = 0; i < R.in_flight; i++)
                if (R.slots[i].used && R.slots[i].req == done_req) {
                    on_reply(&R, &R.slots[i]);
                    break;
                }
            done_req = NULL;
            ps = embroker_poll(eb, &done_req, 0);
        }
        if (eb_now_us() - R.last_save_us >= (int64_t)interval_ms * 1000) {
            char serr[512];
            if (save_state(&R, serr, sizeof serr) != EB_OK) {
                snprintf(err, err_len, "%s", serr);
                rc = EB_ERR_IO;
                goto done;
            }
        }
        progress(&R, false);
    }
done:
    for (unsigned i = 0; i < R.in_flight; i++)
        if (R.slots[i].used) {
            if (R.slots[i].req)
                embroker_cancel(eb, R.slots[i].req);
            slot_release(&R.slots[i]); /* not marked: the next run sends it again */
        }
    if (sum->rows) { /* nothing read: the state is as loaded, and no stray file is left */
        char serr[512];
        if (save_state(&R, serr, sizeof serr) != EB_OK && rc == EB_OK) {
            snprintf(err, err_len, "%s", serr);
            rc = EB_ERR_IO;
        }
    }
    sum->seconds = (double)(eb_now_us() - R.start_us) / 1e6;
    sum->watermark = cfg->state ? eb_backfill_state_watermark(cfg->state) : 0;
    progress(&R, true);
    free(R.slots);
    idset_free(&R.seen);
    return rc;
}

/* ---- summary --------------------------------------------------------------------------- */

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

void eb_backfill_summary_json(const eb_backfill_summary *s, FILE *f)
{
    fprintf(f, "{\"rows\": %" PRIu64 ", \"done\": %" PRIu64 ", \"skipped\": %" PRIu64
               ", \"skipped_checkpoint\": %" PRIu64 ", \"skipped_duplicate\": %" PRIu64
               ", \"failed\": %" PRIu64 ", \"retries\": %" PRIu64 ", \"cache_hits\": %" PRIu64
               ", \"seconds\": %.3f, \"rows_per_s\": %.2f, \"interrupted\": %s, "
               "\"checkpoint_next\": %" PRIu64 ", \"failures\": [",
            s->rows, s->done, s->skipped_checkpoint + s->skipped_duplicate,
            s->skipped_checkpoint, s->skipped_duplicate, s->failed, s->retries, s->cache_hits,
            s->seconds, s->seconds > 0 ? (double)(s->done + s->failed) / s->seconds : 0.0,
            s->interrupted ? "true" : "false", s->watermark);
    for (size_t i = 0; i < s->n_reasons; i++) {
        const eb_backfill_reason *r = &s->reasons[i];
        fprintf(f, "%s{\"reason\": ", i ? ", " : "");
        json_string(f, r->reason);
        fprintf(f, ", \"count\": %" PRIu64 ", \"examples\": [", r->count);
        for (size_t k = 0; k < r->n_examples; k++) {
            if (k)
                fputs(", ", f);
            json_string(f, r->examples[k]);
        }
        fputs("]}", f);
    }
    if (s->other_reasons)
        fprintf(f, "%s{\"reason\": \"other\", \"count\": %" PRIu64 ", \"examples\": []}",
                s->n_reasons ? ", " : "", s->other_reasons);
    fputs("]}\n", f);
}

void eb_backfill_summary_text(const eb_backfill_summary *s, FILE *f)
{
    char took[32];
    fmt_duration(s->seconds, took, sizeof took);
    fprintf(f, "backfill %s: %" PRIu64 " rows read, %" PRIu64 " stored, %" PRIu64
               " skipped (%" PRIu64 " done before, %" PRIu64 " duplicates), %" PRIu64
               " failed, %" PRIu64 " retries, in %s (%.1f rows/s)\n",
            s->interrupted ? "interrupted" : "finished", s->rows, s->done,
            s->skipped_checkpoint + s->skipped_duplicate, s->skipped_checkpoint,
            s->skipped_duplicate, s->failed, s->retries, took,
            s->seconds > 0 ? (double)(s->done + s->failed) / s->seconds : 0.0);
    for (size_t i = 0; i < s->n_reasons; i++) {
        const eb_backfill_reason *r = &s->reasons[i];
        fprintf(f, "  failed: %" PRIu64 " x %s\n", r->count, r->reason);
        for (size_t k = 0; k < r->n_examples; k++)
            fprintf(f, "    e.g. %s\n", r->examples[k]);
    }
    if (s->other_reasons)
        fprintf(f, "  failed: %" PRIu64 " x other reasons\n", s->other_reasons);
    if (s->failed)
        fprintf(f, "  failed rows are tried again by the next run with the same checkpoint\n");
}
