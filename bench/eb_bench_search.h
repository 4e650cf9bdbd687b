/* eb_bench_search — search latency and recall@k of the production search path on synthetic
 * clustered rows (`embroker-bench search`).
 *
 * In a fresh database (created on the server of `pg_url`, dropped at the end unless keep_db):
 * migrate with the configured image/text dims, load `rows` clustered rows by binary COPY
 * (HNSW index dropped during the load and rebuilt afterwards, both timed), then for each query
 * type (image-only, text-only, combined) and each filter (none; one template of `templates`;
 * the same template filter with the planner steered onto the index)
 * run `queries` searches through eb_pgpool + eb_search, one at a time, and score them against
 * the exact top-k computed in this process by a full inner-product scan (sgemm) over the same
 * float32 rows; a few queries per cell are also checked against PostgreSQL's own exact scan
 * (index scans disabled) to show the two ground truths agree.
 *
 * Config keys (flags --name value; defaults in brackets):
 *   pg_url [$EMBROKER_PG_URL]  server to create the database on
 *   image_dim [768] text_dim [1024] rows [100000] clusters [1000] templates [20]
 *   queries [1000] per cell, warmup [100] per cell, k [10], ef_search [100] (eb_search's floor)
 *   m [16] ef_construction [64] (the HNSW build; sql/002_hnsw.sql's values by default)
 *   build_workers [1] (max_parallel_maintenance_workers), maintenance_work_mem ["2GB"]
 *   w_img [1.0] w_txt [1.0] (the broker's defaults) text_missing_pct [10] seed [1] verify [5] per
 * cell, keep_db [0] threads [2] OpenBLAS threads for the exact scan steered [1] also run the
 * filtered cells with the planner steered onto the HNSW index (sequential/bitmap scans and sorts
 * off): the broker does not steer, and at 5 % on 100,000 rows the planner prefers an exact bitmap
 * scan + sort; these rows show what the index with iterative scan would give instead
 */
#ifndef EB_BENCH_SEARCH_H
#define EB_BENCH_SEARCH_H

#include <stddef.h>

#include "eb_bench_stats.h"
#include "eb_config.h"

/* Run the benchmark. Fills rows (max_rows at least 9: one per query type × filter mode — none,
 * one template as the broker runs it, one template with the planner steered onto HNSW),
 * notes (setup times, sample counts, plans, cross-check) and name (result file stem, "search"
 * or "search-halfvec"), writes <out_dir>/<name>.json with setup figures and every row, and
 * returns the number of rows, or -1 with a message on stderr. */
int eb_bench_search(const eb_config *cfg, const char *out_dir, eb_row *rows, int max_rows,
                    char *notes, size_t notes_len, char *name, size_t name_len);

#endif
