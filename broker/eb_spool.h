/* eb_spool — a durable, append-only local queue for stores that must reach PostgreSQL exactly once.
 *
 * The broker answers a scan before its embedding is stored. To lose nothing when PostgreSQL is
 * down or the broker crashes, every store is first appended here; a writer thread writes and
 * fsyncs records in groups (group commit: one fdatasync covers every record queued meanwhile),
 * never the event loop. Once a record is durable the loop sends it to the database; once the
 * database acknowledges it the loop acks it here. After a crash, every record not known to be
 * acked is replayed in order; the rows carry a unique StoreId and are inserted with
 * ON CONFLICT DO NOTHING, so a replayed record that had in fact been inserted changes nothing.
 *
 * On disk: a directory of files "spool-<first seq, 16 hex>.log", each a sequence of records
 *
 *   offset size
 *   0      4    magic "EBSP"
 *   4      4    payload length n (u32 LE)
 *   8      8    sequence number (u64 LE), strictly increasing from 1
 *   16     4    CRC-32C over bytes 4..15 and the payload (u32 LE)
 *   20     4    reserved, 0
 *   24     n    payload
 *
 * plus "acked": the highest sequence number below which every record is acknowledged (written
 * without fsync: losing it only makes replay redo harmless work). A file whose records are all
 * acked is deleted once a newer file exists; files rotate at `max_file_bytes`. A torn record at
 * the end of the newest file (a crash mid-write) is cut off at open; a record that fails its
 * checksum elsewhere stops replay of that file with an error in the log (its file is kept).
 *
 * Threads: every function except the writer thread's internals is called from one thread (the
 * broker's event loop). Pending (unacked) records are kept in memory, at most
 * `max_pending_bytes`; past that eb_spool_append returns EB_ERR_BUSY and the caller reports the
 * store as not accepted.
 */
#ifndef EB_SPOOL_H
#define EB_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_status.h"

typedef struct eb_spool eb_spool;

typedef struct eb_spool_options {
    uint64_t max_file_bytes;    /* rotate after this many bytes; default 64 MiB */
    uint64_t max_pending_bytes; /* memory bound on unacked payloads; default 256 MiB */
    bool sync;                  /* fdatasync each group (default true; false only for tests) */
} eb_spool_options;

/* Statistics for health and tests. */
typedef struct eb_spool_stats {
    uint64_t appended;      /* records appended since open */
    uint64_t durable_seq;   /* every record <= this is on disk and synced */
    uint64_t acked_seq;     /* every record <= this is acknowledged */
    uint64_t pending;       /* records not yet acked (durable or not) */
    uint64_t pending_bytes; /* their payload bytes */
    uint64_t syncs;         /* fdatasync calls (group commits) */
    uint64_t replayed;      /* records recovered from disk at open */
    uint64_t files;         /* spool files on disk */
} eb_spool_stats;

/* Called for each record that became durable, in sequence order. data is valid during the
 * call only; copy what you keep. */
typedef void (*eb_spool_record_fn)(void *ctx, uint64_t seq, const void *data, size_t len);

/* Defaults listed above. */
void eb_spool_options_default(eb_spool_options *options);

/* Open (creating if needed) the spool in `dir` and start its writer thread. Records left from a
 * previous run that are not acked become pending and durable at once: the first
 * eb_spool_take_durable() hands them out, in order. options NULL = defaults. Returns NULL with a
 * reason in err when the directory cannot be created or read, or a file cannot be opened. */
eb_spool *eb_spool_open(const char *dir, const eb_spool_options *options, char *err,
                        size_t err_len);

/* Stop the writer after it has written and synced everything appended, close files, free all;
 * sets *spool to NULL. NULL-safe. Unacked records stay on disk for the next open. */
void eb_spool_close(eb_spool **spool);

/* Queue a copy of `data` (len ≥ 1, < 1 GiB) for writing; never blocks on I/O. *seq receives its
 * sequence number. EB_ERR_BUSY when pending payloads would exceed max_pending_bytes;
 * EB_ERR_INVALID for an empty or huge record; EB_ERR_IO when the writer has failed (disk full,
 * I/O error: the reason is logged and returned by eb_spool_error). */
eb_status eb_spool_append(eb_spool *spool, const void *data, size_t len, uint64_t *seq);

/* A file descriptor that becomes readable when records became durable; put it in the event
 * loop and call eb_spool_take_durable when it fires. Owned by the spool. */
int eb_spool_notify_fd(const eb_spool *spool);

/* Drain the notification and call fn for every record that became durable since the last call
 * (and, on the first call, for every replayed record). Returns how many were handed out. */
size_t eb_spool_take_durable(eb_spool *spool, eb_spool_record_fn fn, void *ctx);

/* Call fn for every pending record that is durable, in order, whether or not it was handed out
 * before: to resend everything unacknowledged after the database comes back. */
size_t eb_spool_for_each_pending(eb_spool *spool, eb_spool_record_fn fn, void *ctx);

/* The database acknowledged record `seq`. Acks may come in any order; unknown or repeated
 * sequence numbers are ignored (EB_ERR_NOT_FOUND). Frees the record's memory, advances
 * acked_seq over contiguous acks, and deletes files whose records are all acked. */
eb_status eb_spool_ack(eb_spool *spool, uint64_t seq);

/* Current statistics. */
void eb_spool_get_stats(eb_spool *spool, eb_spool_stats *stats);

/* The writer's last error message, or NULL when it is healthy. Owned by the spool. */
const char *eb_spool_error(eb_spool *spool);

/* CRC-32C (Castagnoli) of a buffer, continuing from crc (start with 0). */
uint32_t eb_crc32c(uint32_t crc, const void *data, size_t len);

#endif
