/* eb_storepump — moves durable store records from the spool to PostgreSQL and acks them.
 *
 *   eb_storepump_store (or eb_spool_append of eb_storerec bytes)
 *     → spool writer thread makes it durable → notify fd → the pump sends it (eb_search_store)
 *     → PostgreSQL answers OK (inserted, or already there) → eb_spool_ack
 *
 * A store that fails because PostgreSQL is unavailable (or slow, or the pool is full) stays
 * pending; while anything is pending and unsent (the "backlog"), the pump retries every
 * retry_ms once the pool is up, resending pending records in sequence order from the oldest
 * that needs it, at most max_inflight at a time. Records sent twice are inserted once (unique
 * StoreId, ON CONFLICT DO NOTHING). A record the database rejects (EB_ERR_INVALID: wrong
 * dimensions, bad data) or that does not parse can never succeed: it is logged, counted in
 * stats.rejected and acked, so it does not block the spool forever.
 *
 * Lifetime: destroy the pool (whose pending callbacks then run with EB_ERR_SHUTDOWN) before the
 * pump. Loop thread only.
 */
#ifndef EB_STOREPUMP_H
#define EB_STOREPUMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_loop.h"
#include "eb_pgpool.h"
#include "eb_search.h"
#include "eb_spool.h"
#include "eb_status.h"
#include "eb_storerec.h"

typedef struct eb_storepump eb_storepump;

typedef struct eb_storepump_options {
    uint32_t max_inflight; /* stores sent and not yet answered; default 64 */
    uint32_t retry_ms;     /* backlog retry period while PostgreSQL is down; default 500 */
    /* Optional: called from the loop after records became durable, with the spool's
     * durable_seq (every record <= it is on disk), so callers can answer "stored" replies. */
    void (*durable_fn)(void *arg, uint64_t durable_seq);
    void *durable_arg;
} eb_storepump_options;

typedef struct eb_storepump_stats {
    uint64_t sent;       /* sends, including resends */
    uint64_t stored;     /* acked with a row inserted/updated */
    uint64_t duplicates; /* acked, the row was already there (a replay) */
    uint64_t rejected;   /* acked without a row: the database refused the data */
    uint64_t failed;     /* sends that failed and stay pending */
    uint32_t inflight;
    bool backlog;        /* pending records wait for a (re)send */
} eb_storepump_stats;

/* Defaults listed above. */
void eb_storepump_options_default(eb_storepump_options *options);

/* A pump watching `spool`'s notify fd in `loop`, sending through `search` on `pool`. Records
 * left in the spool from an earlier run are sent once the pool is up. NULL with a reason in err
 * when the fd cannot be watched or out of memory. */
eb_storepump *eb_storepump_new(eb_loop *loop, eb_spool *spool, eb_pgpool *pool,
                               eb_search *search, const eb_storepump_options *options,
                               char *err, size_t err_len);

/* Stop watching and free (records stay in the spool); sets *pump to NULL; NULL-safe. */
void eb_storepump_destroy(eb_storepump **pump);

/* Serialise rec and append it to the spool (it is sent once durable). *seq (may be NULL)
 * receives its spool sequence number. EB_ERR_INVALID for a record eb_storerec_encode refuses,
 * EB_ERR_BUSY when the spool's memory bound is reached (report the store as not accepted),
 * EB_ERR_IO when the spool's writer failed. */
eb_status eb_storepump_store(eb_storepump *pump, const eb_store_record *rec, uint64_t *seq);

void eb_storepump_get_stats(const eb_storepump *pump, eb_storepump_stats *stats);

#endif
