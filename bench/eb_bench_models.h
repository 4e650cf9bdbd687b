/* eb_bench_models — CPU model benchmarks for embroker-bench: SigLIP forward latency and
 * throughput, Qwen3 tokens/s, tokenizer MB/s, and OpenBLAS's own sgemm peak measured in the same
 * process so achieved GFLOP/s can be read as a fraction of what the machine's sgemm reaches. */
#ifndef EB_BENCH_MODELS_H
#define EB_BENCH_MODELS_H

#include <stddef.h>

#include "eb_bench_stats.h"
#include "eb_config.h"

/* sgemm GFLOP/s for an n×n×n product with `threads` OpenBLAS threads (best of `reps`). */
double eb_bench_sgemm_gflops(int n, int threads, int reps);

/* Each fills rows (at most max_rows) and returns how many, or -1 with a message on stderr.
 * Config keys: siglip_dir / qwen3_dir / tokenizer, threads, seconds, batches. */
int eb_bench_siglip(const eb_config *cfg, eb_row *rows, int max_rows);
int eb_bench_qwen3(const eb_config *cfg, eb_row *rows, int max_rows);
int eb_bench_tokenizer(const eb_config *cfg, eb_row *rows, int max_rows);

#endif
