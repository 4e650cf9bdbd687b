/* eb_bench_scan — quick scan end to end (`embroker-bench scan`): a photo in, the matching
 * products out, through a real embrokerd + embroker-worker (SigLIP on the CPU, or whatever the
 * worker picks), Redis and PostgreSQL + pgvector.
 *
 * The benchmark creates its own database on the server of `pg_url` (migrated for image_dim +
 * text_dim, dropped at the end), starts embrokerd (database, cache) and one worker in its run
 * directory, and measures, each as one row laid out like "model loading | embedding | search |
 * total" with queue and cache stages beside:
 *   - cold start: a worker started from nothing to its first scan answered (`cold` times; the
 *     scan waits in the broker's queue while the model loads, so queue = model loading),
 *   - cache-miss scans at each concurrency of `concurrency` (every request a different JPEG:
 *     the photo with a unique comment segment, so the pixels are the same and the hash is not),
 *   - cache-hit scans (the same bytes again: answered from Redis, no worker),
 *   - cache-miss scans at concurrency 1 while a backfill of stores runs in the bulk class, and
 *     that backfill's rate.
 * Before the cold starts the demo catalogue (scripts/make-demo-catalogue output) is backfilled
 * through the broker with bulk stores by a first worker. Columns are per-request medians:
 * model loading (cold rows: the queue wait behind the loading worker), embedding (total - model
 * loading - search - cache: hashing, transport, waiting in or for the worker, decode,
 * preprocess, forward), search, total (client clock, with p90/p99; p99 only from 1,000
 * samples), then queue (broker), infer (the worker's forward) and cache (Redis lookup).
 *
 * Config keys (flags --name value; defaults in brackets):
 *   catalogue [var/demo-catalogue]  make-demo-catalogue output (products-images-only.jsonl)
 *   file [<catalogue>/queries/coffee.jpg]  the JPEG photo scanned
 *   siglip_dir [var/models/siglip-base-patch16-224]  worker checkpoint
 *   worker_args [""]  extra worker flags (e.g. "--device cpu")
 *   pg_url [$EMBROKER_PG_URL] redis_url [$EMBROKER_REDIS_URL]
 *   image_dim [768] text_dim [1024] template [demo] k [10]
 *   cold [3] requests [100] cache-miss scans per concurrency level (split over the clients),
 *   concurrency [1,8] hits [1000] cache-hit scans per level, during [20] scans during backfill,
 *   backfill_in_flight [8] bulk stores kept in flight during that row
 */
#ifndef EB_BENCH_SCAN_H
#define EB_BENCH_SCAN_H

#include <stddef.h>

#include "eb_bench_stats.h"
#include "eb_config.h"

/* Run it with embrokerd/embroker-worker from bin_dir, sockets and logs in run_dir. Fills rows
 * (at most max_rows; 16 is always enough) and notes, and returns the number of rows, or -1 with
 * a message on stderr (the broker's log is run_dir/scan-bench.log). */
int eb_bench_scan(const eb_config *cfg, const char *bin_dir, const char *run_dir, eb_row *rows,
                  int max_rows, char *notes, size_t notes_len);

#endif
