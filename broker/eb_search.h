/* eb_search — filtered top-k search, store and delete on "ProductEmbeddings" through eb_pgpool.
 *
 * Search runs, on one connection and in one round trip,
 *
 *   BEGIN;
 *   SET LOCAL hnsw.iterative_scan = relaxed_order;   -- a selective filter still yields k rows
 *   SET LOCAL hnsw.ef_search = max(k, ef_search);
 *   SELECT "ProductId", -("CombinedEmbedding" <#> $1) AS score, "BusinessTemplate", "SourceType"
 *     FROM "ProductEmbeddings"
 *    WHERE "BusinessTemplate" = $2 AND "SourceType" = $3 AND "ModelRev" = $4
 *      AND "CombinedEmbedding" IS NOT NULL
 *    ORDER BY "CombinedEmbedding" <#> $1 LIMIT $5;   -- $5 = k·overfetch; or the halfvec
 *                                                    -- cast, as the index
 *   COMMIT;
 *
 * with the query vector in pgvector's binary format and binary results; relaxed order can
 * return rows slightly out of order, so the rows are re-sorted by score (the inner product,
 * higher is closer) and the best k kept before the callback sees them.
 *
 * Store takes a serialised record (eb_storerec) — the bytes kept in the spool — and runs an
 * INSERT ... ON CONFLICT DO NOTHING (scan rows; a replayed StoreId changes nothing) or the
 * catalogue upsert ON CONFLICT ("ProductId","SourceType","ModelRev") DO UPDATE, as a bulk job
 * (pipelined, below searches in priority).
 *
 * Callbacks follow eb_pgpool: an error return means the callback is never called.
 */
#ifndef EB_SEARCH_H
#define EB_SEARCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_migrate.h"
#include "eb_pgpool.h"
#include "eb_status.h"

typedef struct eb_search eb_search;

typedef struct eb_search_options {
    uint32_t image_dims;    /* the table's dimensions (eb_migrate_read_dims) */
    uint32_t text_dims;
    uint32_t ef_search;     /* hnsw.ef_search floor; max(k·overfetch, this) is used; default
                             * 100 (unfiltered recall@10 0.92 -> 0.99 for +2 ms, bench/results) */
    uint32_t overfetch;     /* rows fetched per row returned (≥ 1), re-sorted, best k kept;
                             * default 4 */
    uint32_t max_k;         /* largest k accepted; default 1000 */
    int halfvec;            /* -1 auto (combined > 2000), 0 vector index, 1 halfvec index */
} eb_search_options;

typedef struct eb_search_query {
    const char *business_template;
    const char *source_type;
    const char *model_rev;
    const float *vector;    /* CombinedEmbedding query (eb_combined_query), `dims` floats */
    uint32_t dims;
    uint32_t k;
    bool exact_order_only;  /* tests: iterative scan off (plain HNSW, may return < k rows) */
    int64_t deadline_us;    /* answer EB_ERR_TIMEOUT by then (eb_now_us() scale; 0 = the
                             * pool's query timeout) */
} eb_search_query;

typedef struct eb_search_hit {
    const char *product_id;  /* NUL-terminated, valid during the callback */
    double score;            /* inner product with the query; higher is closer */
    const char *business_template;
    const char *source_type;
} eb_search_hit;

/* hits sorted by score, highest first (n ≤ k); on error hits is NULL, n 0, error says why. */
typedef void (*eb_search_fn)(void *arg, eb_status status, const eb_search_hit *hits, size_t n,
                             const char *error);

/* Store/delete outcome: rows inserted/updated (store: 0 when the StoreId or catalogue row was
 * already there with DO NOTHING) or removed (delete). EB_ERR_INVALID means the database
 * rejected the data (e.g. dimensions): retrying will not help. */
typedef void (*eb_search_write_fn)(void *arg, eb_status status, uint64_t rows,
                                   const char *error);

/* Defaults listed above (dims 0). */
void eb_search_options_default(eb_search_options *options);

/* Register the prepared statements on `pool` (which must not be started yet) and return the
 * search handle; NULL with a reason in err for bad dims or out of memory. The pool must outlive
 * it. */
eb_search *eb_search_new(eb_pgpool *pool, const eb_search_options *options, char *err,
                         size_t err_len);

/* Free; sets *search to NULL; NULL-safe. Jobs already submitted still complete through the
 * pool (their callbacks must not use the freed handle). */
void eb_search_destroy(eb_search **search);

/* Top-k search. EB_ERR_INVALID (message in err) for a missing filter field, dims different from
 * the table's, k 0 or above max_k, or a non-finite element; else as eb_pgpool_submit. */
eb_status eb_search_run(eb_search *search, const eb_search_query *query, eb_search_fn fn,
                        void *arg, char *err, size_t err_len);

/* Store one serialised record (bytes copied). EB_ERR_PROTOCOL/EB_ERR_UNSUPPORTED for a record
 * that does not parse, EB_ERR_INVALID for vectors whose dims differ from the table's; else as
 * eb_pgpool_submit. */
eb_status eb_search_store(eb_search *search, const void *record, size_t len,
                          eb_search_write_fn fn, void *arg, char *err, size_t err_len);

/* Delete every row of a product. */
eb_status eb_search_delete(eb_search *search, const char *product_id, eb_search_write_fn fn,
                           void *arg);

/* Table dimensions as the database has them (dims->exists false when there is no table). */
typedef void (*eb_search_dims_fn)(void *arg, eb_status status, const eb_table_dims *dims,
                                  const char *error);

/* Read the table's dimensions through the pool (non-blocking twin of eb_migrate_read_dims), for
 * a broker that starts while PostgreSQL is away and checks once it is back. */
eb_status eb_search_read_dims(eb_search *search, eb_search_dims_fn fn, void *arg);

/* The SELECT text (with $1..$5) as prepared, for EXPLAIN in tests and docs. */
const char *eb_search_select_sql(const eb_search *search);

/* Whether the search orders by the halfvec cast. */
bool eb_search_uses_halfvec(const eb_search *search);

#endif
