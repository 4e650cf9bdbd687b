/* eb_migrate — apply the numbered SQL migrations in sql/ and read the table's dimensions.
 *
 * Files named NNN_name.sql are applied in order of NNN, each inside its own transaction, and
 * recorded in "schema_migrations" (version, name, checksum of the filled text, dims, time), so
 * running again applies only what is new. Placeholders {{IMAGE_DIM}}, {{TEXT_DIM}} and
 * {{COMBINED_DIM}} (= image + text) are filled from the configured models. When two files
 * share a number, the one named *_halfvec.sql is the variant for COMBINED_DIM above pgvector's
 * 2,000-dimension HNSW limit for `vector`, the other the variant at or below it.
 *
 * A pg_advisory_lock serialises concurrent migrators. The dimensions of an existing table are
 * checked against the configured ones before anything is applied: vector columns cannot change
 * length in place, so a mismatch is an error that says so.
 *
 * This module uses blocking libpq: call it before the event loop starts or from the CLI.
 */
#ifndef EB_MIGRATE_H
#define EB_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_status.h"

/* Dimensions of "ProductEmbeddings" as the database has them. */
typedef struct eb_table_dims {
    bool exists;          /* the table exists */
    uint32_t image;       /* "ImageEmbedding" vector(n) */
    uint32_t text;        /* "TextEmbedding" */
    uint32_t combined;    /* "CombinedEmbedding" */
    bool halfvec_index;   /* the HNSW index is built on a halfvec cast */
} eb_table_dims;

/* Apply migrations from the default sql directory (eb_migrate_sql_dir()). */
eb_status eb_migrate_run(const char *conninfo, uint32_t image_dim, uint32_t text_dim, char *err,
                         size_t err_len);

/* Apply migrations from `sql_dir`; *applied (may be NULL) receives how many were applied now.
 * Errors (with a message in err): EB_ERR_INVALID for bad dims, a dims mismatch with the
 * existing table or an unknown placeholder; EB_ERR_UNAVAILABLE when the database cannot be
 * reached; EB_ERR_NOT_FOUND when sql_dir holds no migrations; EB_ERR_IO when a migration fails
 * (it is rolled back; earlier ones stay applied). */
eb_status eb_migrate_run_dir(const char *conninfo, const char *sql_dir, uint32_t image_dim,
                             uint32_t text_dim, unsigned *applied, char *err, size_t err_len);

/* The sql directory: $EMBROKER_SQL_DIR, else the first of <exe>/../../sql (build tree),
 * <exe>/../share/embroker/sql and ./sql that exists. Static storage. */
const char *eb_migrate_sql_dir(void);

/* Read the table's dimensions (dims->exists false when there is no table). */
eb_status eb_migrate_read_dims(const char *conninfo, eb_table_dims *dims, char *err,
                               size_t err_len);

/* EB_OK when `table` (existing) matches image_dim/text_dim, else EB_ERR_INVALID with a message
 * naming both sides and what to do; `who` names the other side in the message (e.g.
 * "worker w1 (siglip rev 3a9f…)" or "the configuration"). A missing table matches anything. */
eb_status eb_migrate_check_dims(const eb_table_dims *table, uint32_t image_dim,
                                uint32_t text_dim, const char *who, char *err, size_t err_len);

/* Fill the placeholders of one migration text. Returns a malloc'd string (caller frees), or
 * NULL with a message in err for an unknown {{NAME}} or out of memory. */
char *eb_migrate_fill(const char *sql, uint32_t image_dim, uint32_t text_dim, char *err,
                      size_t err_len);

#endif
