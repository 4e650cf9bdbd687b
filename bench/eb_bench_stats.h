/* eb_bench_stats — latency samples, percentiles and result rows for the benchmarks.
 *
 * Samples are kept whole (a benchmark run is at most a few hundred thousand requests), sorted
 * once, and read as exact order statistics: p50 is the sample at rank ceil(0.50 n), and so on.
 * p99 is reported only when n >= 1000 (below that it is one of the top few samples and says
 * nothing stable); the column then reads "-" and the JSON holds null. */
#ifndef EB_BENCH_STATS_H
#define EB_BENCH_STATS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct eb_samples {
    int64_t *us; /* latencies in microseconds */
    size_t n, cap;
    int64_t errors;
} eb_samples;

/* Append one latency; returns 0, or -1 when out of memory. */
int eb_samples_add(eb_samples *s, int64_t us);

/* Move every sample of `from` into `into` (from is emptied). */
int eb_samples_merge(eb_samples *into, eb_samples *from);

void eb_samples_free(eb_samples *s);

/* Summary of a sorted sample set. */
typedef struct eb_summary {
    size_t n;
    int64_t errors;
    double mean_us, p50_us, p90_us, p99_us, p999_us, max_us; /* p99/p999 < 0 when n too small */
} eb_summary;

/* Sort s and summarise it. */
void eb_samples_summarise(eb_samples *s, eb_summary *out);

/* One row of a result table: a label plus named numeric columns. */
#define EB_ROW_MAX_COLS 16
typedef struct eb_row {
    char label[96];
    int ncols;
    char names[EB_ROW_MAX_COLS][32];
    double values[EB_ROW_MAX_COLS]; /* NaN prints as "-" / null */
} eb_row;

void eb_row_init(eb_row *row, const char *label);
void eb_row_add(eb_row *row, const char *name, double value);

/* Print rows as an aligned table (header from the first row) to f. */
void eb_rows_print_table(FILE *f, const char *title, const eb_row *rows, size_t n);

/* Write rows as CSV (header from the first row). */
void eb_rows_write_csv(FILE *f, const eb_row *rows, size_t n);

/* Write rows as a markdown table. */
void eb_rows_write_markdown(FILE *f, const char *title, const eb_row *rows, size_t n);

#endif
