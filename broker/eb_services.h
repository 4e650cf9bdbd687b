/* eb_services — the broker's optional storage services: the Redis cache, the PostgreSQL pool
 * with search and store, and the durable spool with its pump.
 *
 * The broker works without any of them (embeddings only); each one is switched on by its
 * config key (docs/operations.md): cache_url → Redis cache; db_url → search, delete and the
 * store path (spool → pump → PostgreSQL). This module builds them in the right order, reads the
 * table's dimensions once at start, reports them in health, and tears them down so that
 * pending callbacks (which may answer requests) run while the broker can still send.
 *
 * Dimensions: the table's vector lengths come from the database (eb_migrate_read_dims, a short
 * blocking read before the loop starts) or, when PostgreSQL is away at start, from the
 * image_dims/text_dims keys; when both are known and differ, the broker refuses to start. With
 * neither, search stays off and health says why.
 *
 * Not thread-safe: loop thread only (the spool's writer thread is internal to eb_spool).
 */
#ifndef EB_SERVICES_H
#define EB_SERVICES_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "eb_cache.h"
#include "eb_config.h"
#include "eb_loop.h"
#include "eb_migrate.h"
#include "eb_search.h"
#include "eb_status.h"
#include "eb_storepump.h"

typedef struct eb_services eb_services;

typedef struct eb_services_options {
    char cache_url[512];              /* cache_url: redis://host:port[/db]; empty = no cache */
    uint32_t cache_ttl_ms;            /* cache_ttl_ms: default 7 days */
    uint32_t cache_timeout_ms;        /* cache_timeout_ms: per command, default 50 */
    char db_url[1024];                /* db_url: libpq conninfo; empty = no search/store */
    uint32_t db_connections;          /* db_connections: default 4 */
    uint32_t db_statement_timeout_ms; /* db_statement_timeout_ms: default 2000 */
    uint32_t ef_search;               /* search_ef: hnsw.ef_search floor, default 100 */
    uint32_t overfetch;               /* search_overfetch: rows fetched per row returned, 4 */
    uint32_t image_dims, text_dims;   /* image_dims/text_dims: 0 = read from the table */
    char spool_dir[PATH_MAX];         /* spool_dir: default <run_dir>/spool */
    bool spool_sync;                  /* spool_sync: fdatasync each group (default true) */
    uint32_t store_retry_ms;          /* store_retry_ms: backlog retry period, default 500 */
} eb_services_options;

/* Fill options from cfg (defaults for unset keys); run_dir gives the default spool_dir.
 * EB_ERR_INVALID with the key and the accepted range in err for a malformed value. */
eb_status eb_services_options_load(const eb_config *cfg, const char *run_dir,
                                   eb_services_options *options, char *err, size_t err_len);

/* Build what the options switch on, attached to loop. The table's dimensions are read here
 * (blocking, bounded by a 3 s connect timeout). NULL with a reason in err when a service cannot
 * be set up at all (malformed URL, spool directory unusable, dimensions that disagree with
 * image_dims/text_dims); an unreachable Redis or PostgreSQL is NOT an error: the service
 * reconnects in the background and health shows it down. */
eb_services *eb_services_new(eb_loop *loop, const eb_services_options *options, char *err,
                             size_t err_len);

/* Tear down: the pool first (pending search/store callbacks run with EB_ERR_SHUTDOWN), then the
 * pump, the spool (flushed to disk), the search handle and the cache (pending lookups get
 * EB_ERR_SHUTDOWN). Sets *services to NULL; NULL-safe. */
void eb_services_destroy(eb_services **services);

/* The cache, or NULL when cache_url is unset. */
eb_cache *eb_services_cache(eb_services *s);

/* The search handle, or NULL when search is off (no db_url, or dimensions unknown). */
eb_search *eb_services_search(eb_services *s);

/* The store pump, or NULL when search is off. */
eb_storepump *eb_services_pump(eb_services *s);

/* True while PostgreSQL has a usable connection. */
bool eb_services_db_up(const eb_services *s);

/* Why search is unavailable right now (not configured, dimensions unknown, PostgreSQL down
 * with its last error), or NULL when it is available. Owned by s, valid until the next call. */
const char *eb_services_search_unavailable(eb_services *s);

/* The table's dimensions as the broker uses them (zeros when unknown). */
void eb_services_dims(const eb_services *s, uint32_t *image_dims, uint32_t *text_dims);

/* Called (from the loop) after records became durable in the spool, with the highest sequence
 * number below which every record is durable: lets the broker answer `store` requests. */
typedef void (*eb_services_durable_fn)(void *arg, uint64_t durable_seq);
void eb_services_set_durable_fn(eb_services *s, eb_services_durable_fn fn, void *arg);

/* Append two health entries, "redis" and "postgres" (keys in docs/operations.md), to a map
 * being packed (the caller counts them as 2). s may be NULL (both reported as not configured). */
void eb_services_pack_health(eb_services *s, msgpack_packer *pk);

#endif
