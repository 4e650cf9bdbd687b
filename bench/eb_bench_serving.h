/* eb_bench_serving — the embroker-bench scenarios that drive a whole serving path (broker +
 * workers) with the load generator: `load` (latency distribution, throughput, scaling sweeps) and
 * `coldwarm` (a worker started per request against the warm broker). bench_main.c dispatches to
 * them; each writes a table on stdout and CSV/markdown/JSON files into the output directory. */
#ifndef EB_BENCH_SERVING_H
#define EB_BENCH_SERVING_H

#include "eb_config.h"

/* Where the programs are, a private run directory the command may use (it exists; the caller
 * removes it), and where results go. */
typedef struct eb_bench_paths {
    const char *bin_dir;
    const char *run_dir;
    const char *out_dir;
} eb_bench_paths;

/* embroker-bench load: see the usage text in eb_bench_serving.c. Returns a process exit code. */
int eb_bench_cmd_load(const eb_bench_paths *paths, const eb_config *cfg);

/* embroker-bench coldwarm --siglip-dir DIR --file IMAGE [--cold-runs 3] [--warm-requests 20]
 * [--threads 2]. Returns a process exit code. */
int eb_bench_cmd_coldwarm(const eb_bench_paths *paths, const eb_config *cfg);

#endif
