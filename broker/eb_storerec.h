/* eb_storerec — the serialised form of one store (a row for "ProductEmbeddings").
 *
 * A store is serialised once, when it is accepted: the bytes go into the durable spool
 * (eb_spool) and, once durable, to PostgreSQL (eb_search_store takes them as they are), so a
 * store replayed after a crash is byte-for-byte the one first accepted, StoreId included.
 *
 * Format (all integers little-endian; version 1):
 *
 *   0   4   magic "EBSR"
 *   4   1   version (1)
 *   5   1   flags: bit 0 upsert (catalogue row), bit 1 content hash present
 *   6   16  StoreId (UUID bytes)
 *   22  ... six strings, each u16 length + bytes (no NUL): ProductId, BusinessTemplate,
 *           SourceType, Model, ModelRev, PreprocRev
 *       32  content hash, when flag bit 1
 *       ... three vectors, each u32 dims + dims × float32: image, text, combined (dims 0 =
 *           absent, stored as SQL NULL)
 *
 * Nothing may follow the last vector. A decoder that sees another version refuses the record
 * (EB_ERR_UNSUPPORTED), so a newer broker's spool is never misread by an older one.
 */
#ifndef EB_STOREREC_H
#define EB_STOREREC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_hash.h"
#include "eb_status.h"

#define EB_STORE_ID_LEN 16
#define EB_STOREREC_VERSION 1

typedef struct eb_store_record {
    uint8_t store_id[EB_STORE_ID_LEN];
    bool upsert;                 /* catalogue row: update on (ProductId, SourceType, ModelRev);
                                  * false: insert, ON CONFLICT DO NOTHING */
    const char *product_id;      /* required, all strings ≤ 65535 bytes */
    const char *business_template;
    const char *source_type;     /* 'scan' rows cannot be upserts */
    const char *model;
    const char *model_rev;
    const char *preproc_rev;
    const uint8_t *content_hash; /* EB_HASH_LEN bytes, or NULL */
    const float *image;          /* NULL with image_dims 0 when absent */
    uint32_t image_dims;
    const float *text;
    uint32_t text_dims;
    const float *combined;       /* required for a searchable row */
    uint32_t combined_dims;
} eb_store_record;

/* A fresh random (version 4) UUID. EB_ERR_IO when the kernel's random source fails. */
eb_status eb_store_id_new(uint8_t id[EB_STORE_ID_LEN]);

/* Canonical text form "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" into out (37 bytes). */
void eb_store_id_str(const uint8_t id[EB_STORE_ID_LEN], char out[37]);

/* Serialise rec into a malloc'd buffer (*out, *len; caller frees). EB_ERR_INVALID for a
 * missing string, an over-long string, a vector with dims but no data (or the reverse), a
 * non-finite element, dims above 16000, or an upsert with SourceType 'scan'. */
eb_status eb_storerec_encode(const eb_store_record *rec, uint8_t **out, size_t *len);

/* Parse a serialised record. On EB_OK, rec's pointers point into *storage (one malloc'd block
 * holding NUL-terminated strings and aligned floats; caller frees it with free()).
 * EB_ERR_PROTOCOL for a truncated or malformed record, EB_ERR_UNSUPPORTED for another
 * version. */
eb_status eb_storerec_decode(const void *buf, size_t len, eb_store_record *rec, void **storage);

/* Zero-copy view for senders: where each field lies inside the serialised bytes. */
typedef struct eb_storerec_view {
    const uint8_t *store_id;
    bool upsert;
    const char *str[6];   /* not NUL-terminated */
    uint16_t str_len[6];
    const uint8_t *content_hash; /* or NULL */
    const uint8_t *vec[3];       /* raw float32 LE bytes (any alignment), or NULL */
    uint32_t vec_dims[3];
} eb_storerec_view;

/* Validate and map a serialised record without copying. Same errors as eb_storerec_decode. */
eb_status eb_storerec_view_of(const void *buf, size_t len, eb_storerec_view *view);

#endif
