/* eb_cache — the Redis embedding cache, asynchronous, inside the broker's event loop.
 *
 * Key:   emb:{model}:{model_rev}:{preproc_rev}:{sha256 hex of the content hash}
 * Value: a 16-byte header then the raw float32 little-endian embedding:
 *
 *   offset size
 *   0      4    magic "EBCV"
 *   4      1    version (1)
 *   5      1    dtype (1 = float32)
 *   6      2    flags (u16 LE; bit 0: the vector is L2-normalised)
 *   8      4    dims (u32 LE)
 *   12     4    CRC-32C of the payload (u32 LE)
 *   16     4·dims float32 LE
 *
 * written with SET key value PX ttl. A value whose header, length, dims or checksum is wrong
 * counts as a miss and an error (stats.corrupt), never as a hit.
 *
 * Redis is an optimisation: every failure is reported promptly and the broker carries on
 * without the cache. Each command has its own timeout (hiredis 0.14 has none for asynchronous
 * commands): on expiry the callback gets EB_ERR_TIMEOUT and the late reply, if any, is dropped.
 * After `max_failures` consecutive timeouts or errors the cache marks Redis down, drops the
 * connection and reconnects with exponential backoff; while down, calls fail at once with
 * EB_ERR_UNAVAILABLE.
 *
 * Callbacks are never called from inside eb_cache_get/eb_cache_put: a call that returns EB_OK
 * has its callback called exactly once later, from the loop; a call that returns an error never
 * calls it. Not thread-safe: use from the loop's thread.
 */
#ifndef EB_CACHE_H
#define EB_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_hash.h"
#include "eb_loop.h"
#include "eb_status.h"

typedef struct eb_cache eb_cache;

typedef struct eb_cache_options {
    const char *url;             /* redis://[:password@]host[:port][/db] (copied); numeric host
                                  * or "localhost": the connect must not block on DNS */
    uint32_t ttl_ms;             /* PX of every SET; default 7 days */
    uint32_t command_timeout_ms; /* per command; default 50 */
    uint32_t connect_timeout_ms; /* default 500 */
    uint32_t max_failures;       /* consecutive timeouts/errors before down; default 3 */
    uint32_t backoff_min_ms;     /* first reconnect delay; default 100 */
    uint32_t backoff_max_ms;     /* cap of the doubling delay; default 5000 */
    uint32_t max_inflight;       /* commands outstanding (including timed-out ones whose reply
                                  * is still due); past it calls fail with EB_ERR_BUSY;
                                  * default 10000 */
} eb_cache_options;

typedef struct eb_cache_stats {
    uint64_t hits, misses;
    uint64_t corrupt;     /* values that failed validation (also counted in misses, errors) */
    uint64_t errors;      /* error replies, corrupt values, dropped connections under a command */
    uint64_t timeouts;    /* commands that ran past command_timeout_ms */
    uint64_t unavailable; /* calls refused because Redis was down */
    uint64_t puts, puts_done, puts_failed; /* accepted puts; acknowledged OK; failed/timed out */
    uint64_t connects, disconnects;
    uint32_t inflight;
    bool up;
    char last_error[192]; /* empty when none yet */
} eb_cache_stats;

/* Result of a lookup. status EB_OK: a hit, values/dims valid during the call only;
 * EB_ERR_NOT_FOUND: a miss (or a corrupt value); EB_ERR_TIMEOUT; EB_ERR_UNAVAILABLE (the
 * connection dropped under the command); EB_ERR_SHUTDOWN (eb_cache_destroy). */
typedef void (*eb_cache_get_fn)(void *arg, eb_status status, const float *values, uint32_t dims);

/* Defaults listed above (url NULL). */
void eb_cache_options_default(eb_cache_options *options);

/* A cache attached to `loop` that starts connecting at once (the first calls may fail with
 * EB_ERR_UNAVAILABLE until it is up). NULL with a reason in err for a malformed URL or out of
 * memory. The loop must outlive the cache. */
eb_cache *eb_cache_new(eb_loop *loop, const eb_cache_options *options, char *err,
                       size_t err_len);

/* Disconnect and free; callbacks of lookups still pending are called with EB_ERR_SHUTDOWN.
 * Not from inside a cache callback. Sets *cache to NULL; NULL-safe. */
void eb_cache_destroy(eb_cache **cache);

/* Look up an embedding. expected_dims 0 accepts any length; otherwise a stored vector of
 * another length counts as corrupt. EB_OK: fn will be called once. EB_ERR_UNAVAILABLE when
 * Redis is down or not yet connected, EB_ERR_BUSY past max_inflight, EB_ERR_INVALID for a
 * missing argument or an over-long key. */
eb_status eb_cache_get(eb_cache *cache, const char *model, const char *model_rev,
                       const char *preproc_rev, const uint8_t hash[EB_HASH_LEN],
                       uint32_t expected_dims, eb_cache_get_fn fn, void *arg);

/* Store an embedding (fire and forget; copies `values`). flags go into the header. The outcome
 * shows in stats.puts_done/puts_failed. Same errors as eb_cache_get. */
eb_status eb_cache_put(eb_cache *cache, const char *model, const char *model_rev,
                       const char *preproc_rev, const uint8_t hash[EB_HASH_LEN],
                       const float *values, uint32_t dims, uint16_t flags);

/* True while connected and not marked down. */
bool eb_cache_is_up(const eb_cache *cache);

/* Current statistics (for health and tests). */
void eb_cache_get_stats(const eb_cache *cache, eb_cache_stats *stats);

/* ---- pure helpers (no connection needed) ------------------------------------------------ */

#define EB_CACHE_VALUE_HEADER 16
#define EB_CACHE_FLAG_NORMALIZED 0x0001u

/* Write the key into out (cap bytes); returns its length, or 0 when it does not fit or an
 * argument is missing. */
size_t eb_cache_key(char *out, size_t cap, const char *model, const char *model_rev,
                    const char *preproc_rev, const uint8_t hash[EB_HASH_LEN]);

/* Bytes of the value for `dims` floats. */
size_t eb_cache_value_size(uint32_t dims);

/* Encode header + floats into out (cap ≥ eb_cache_value_size(dims)). EB_ERR_INVALID for dims 0
 * or above 65536, EB_ERR_TOO_LARGE when cap is short. */
eb_status eb_cache_value_encode(const float *values, uint32_t dims, uint16_t flags,
                                uint8_t *out, size_t cap);

/* Validate a stored value and decode its floats into out (room for cap floats).
 * expected_dims 0 = any. EB_ERR_PROTOCOL for a bad magic/version/dtype/length/checksum or
 * unexpected dims, EB_ERR_TOO_LARGE when cap is short. *dims and *flags (either may be NULL)
 * are set on success. */
eb_status eb_cache_value_decode(const uint8_t *buf, size_t len, uint32_t expected_dims,
                                float *out, uint32_t cap, uint32_t *dims, uint16_t *flags);

#endif
