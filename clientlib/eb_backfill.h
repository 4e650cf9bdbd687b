/* eb_backfill — load a catalogue into the broker's product table: read rows, send each as an
 * op `store` in the bulk priority class with a bounded number of requests in flight, retry what
 * failed for a passing reason, checkpoint what the broker acknowledged, report progress and a
 * summary. `embroker backfill` (clientlib/cli_main.c) is the command around it.
 *
 * Rows come from a source callback (eb_backfill_input.h reads JSONL and CSV files; the CLI
 * adds a PostgreSQL query). Each row is handled alone: a bad row (no product id, unreadable
 * image, invalid UTF-8, refused by the broker) fails with a reason and the rest go on.
 *
 * Resuming. With a state (eb_backfill_state.h), rows the state says are done are skipped, and
 * a row is marked done only once the broker acknowledged its store, which it does once the row
 * is durable in its spool. The state is saved every checkpoint_interval_ms and at the end; rows
 * in flight at a kill were never marked, so the next run sends them again (an upsert: harmless).
 * Reading stops `window` rows past the watermark so the checkpoint stays small even when one
 * row is slow.
 *
 * Duplicates. The table keeps one catalogue row per (ProductId, SourceType, model revision),
 * so a product id seen earlier in the same input is skipped (the first occurrence wins) and
 * counted as a duplicate.
 */
#ifndef EB_BACKFILL_H
#define EB_BACKFILL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "eb_backfill_input.h"
#include "eb_backfill_state.h"
#include "eb_status.h"
#include "embroker.h"

/* Where rows come from. */
typedef struct eb_backfill_source {
    void *ctx;
    /* The next row into *row (already cleared): EB_OK (row->status says whether it is usable),
     * EB_ERR_NOT_FOUND at the end, anything else stops the backfill with a reason in err. */
    eb_status (*next)(void *ctx, eb_backfill_row *row, char *err, size_t err_len);
    const char *base_dir; /* relative image paths are relative to this (NULL: the cwd) */
    uint64_t total_rows;  /* for the progress ETA; 0 = unknown */
} eb_backfill_source;

typedef struct eb_backfill_config {
    const char *template_default; /* template of rows that have none (NULL: such rows fail) */
    const char *source_type;      /* the rows' SourceType (NULL: the broker's "catalogue") */
    unsigned in_flight;           /* requests in flight (0: 8) */
    const char *image_model, *text_model; /* NULL: broker defaults */
    uint32_t deadline_ms;         /* per request; 0: broker default */
    int request_timeout_ms;       /* one attempt's limit before it is cancelled and retried
                                     (0: 120000) */
    unsigned max_attempts;        /* attempts per row for passing failures (0: 4) */
    unsigned window;              /* rows read past the watermark at most (0: 1024 or
                                     64 x in_flight, whichever is larger) */
    eb_backfill_state *state;     /* progress to skip and to update; NULL: no resuming */
    const char *checkpoint_path;  /* where to save state (NULL: never saved) */
    int checkpoint_interval_ms;   /* 0: 1000 */
    FILE *progress;               /* progress output (stderr), NULL: none */
    bool progress_tty;            /* a redrawn bar (terminal) instead of periodic lines */
    int progress_interval_ms;     /* plain lines: 0 = 10000; bar: redrawn every 200 ms */
    volatile sig_atomic_t *stop;  /* becomes non-zero (a signal): stop, save, return */
} eb_backfill_config;

enum { EB_BACKFILL_MAX_REASONS = 16, EB_BACKFILL_EXAMPLES = 3 };

/* Failures grouped by reason, with the first few examples. */
typedef struct eb_backfill_reason {
    char reason[64];
    uint64_t count;
    size_t n_examples;
    char examples[EB_BACKFILL_EXAMPLES][320];
} eb_backfill_reason;

typedef struct eb_backfill_summary {
    uint64_t rows;               /* rows read from the source */
    uint64_t done;               /* stored in this run (acknowledged by the broker) */
    uint64_t skipped_checkpoint; /* done by an earlier run */
    uint64_t skipped_duplicate;  /* product id seen earlier in the input */
    uint64_t failed;             /* failed in this run (retried by the next one) */
    uint64_t retries;            /* extra attempts after passing failures */
    uint64_t cache_hits;         /* stores whose embeddings came from the broker's cache */
    size_t n_reasons;
    eb_backfill_reason reasons[EB_BACKFILL_MAX_REASONS];
    uint64_t other_reasons;      /* failures whose reason did not fit in reasons[] */
    double seconds;
    bool interrupted;            /* stopped by cfg->stop */
    uint64_t watermark;          /* rows before this are settled (checkpoint "next") */
} eb_backfill_summary;

/* Run the backfill to the end of the source (or a stop). Fills *sum in every case. EB_OK when
 * every row was handled (some may have failed: sum->failed); otherwise why it stopped early
 * (the source failed, the broker kept failing, the checkpoint could not be written, or
 * EB_ERR_CANCELLED after a stop), with a reason in err. The state is saved before returning
 * whenever a checkpoint path is set. */
eb_status eb_backfill_run(embroker_t *eb, const eb_backfill_source *src,
                          const eb_backfill_config *cfg, eb_backfill_summary *sum, char *err,
                          size_t err_len);

/* Add one failure to the summary (reason grouping and examples). */
void eb_backfill_summary_add_failure(eb_backfill_summary *sum, const char *reason,
                                     const char *example);

/* The summary as one JSON object (with a newline) / as a few human lines. */
void eb_backfill_summary_json(const eb_backfill_summary *sum, FILE *f);
void eb_backfill_summary_text(const eb_backfill_summary *sum, FILE *f);

/* Is `st` a passing failure worth another attempt (busy, timeout, deadline, broker restarted,
 * worker lost, unavailable, shutting down)? */
bool eb_backfill_status_retryable(eb_status st);

#endif
