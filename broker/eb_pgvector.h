/* eb_pgvector — pgvector's binary wire formats and the CombinedEmbedding builder.
 *
 * Binary formats (what vector_send/vector_recv and halfvec_send/halfvec_recv speak):
 *
 *   vector:  int16 dim, int16 unused (must be 0), then dim × float4, all big-endian
 *   halfvec: int16 dim, int16 unused (must be 0), then dim × IEEE binary16, all big-endian
 *
 * CombinedEmbedding rows = [w_img · normalize(image) ; w_txt · normalize(text)], a missing half
 * (NULL) written as zeros. Queries are built with unit weights,
 * [normalize(image) ; normalize(text)] (eb_combined_query), so the inner product of a query
 * with a row is
 *     w_img · cos(image_q, image_r) + w_txt · cos(text_q, text_r)
 * with a term dropping out when either side lacks that half: an image-only query scores exactly
 * w_img × cos(image) whatever the row's text half holds (docs/search.md has the geometry).
 */
#ifndef EB_PGVECTOR_H
#define EB_PGVECTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_status.h"

/* pgvector's limits: vector/halfvec columns hold at most 16,000 dimensions; HNSW indexes at
 * most 2,000 for vector and 4,000 for halfvec. */
#define EB_PGVECTOR_MAX_DIM 16000
#define EB_PGVECTOR_HNSW_MAX_DIM 2000
#define EB_PGHALFVEC_HNSW_MAX_DIM 4000

/* Bytes of the binary form of a vector / halfvec of `dims` elements. */
size_t eb_pgvector_size(uint32_t dims);
size_t eb_pghalfvec_size(uint32_t dims);

/* IEEE binary32 <-> binary16, round to nearest even; overflow gives ±inf, NaN stays NaN. */
uint16_t eb_f32_to_f16(float value);
float eb_f16_to_f32(uint16_t half);

/* Write `dims` floats as pgvector binary into out (cap bytes ≥ eb_pgvector_size(dims));
 * out is undefined after an error.
 * EB_ERR_INVALID when dims is 0 or above EB_PGVECTOR_MAX_DIM or an element is NaN/inf (the
 * server would reject it), EB_ERR_TOO_LARGE when cap is too small. */
eb_status eb_pgvector_encode(const float *values, uint32_t dims, uint8_t *out, size_t cap);

/* Same, reading the floats as raw little-endian float32 bytes (4·dims bytes, any alignment):
 * for vectors kept serialised, e.g. in spooled store records. */
eb_status eb_pgvector_encode_le(const uint8_t *le_floats, uint32_t dims, uint8_t *out,
                                size_t cap);

/* Parse a binary vector of len bytes into out (room for cap floats); *dims receives its
 * length. EB_ERR_PROTOCOL when len does not match the header or unused ≠ 0, EB_ERR_TOO_LARGE
 * when cap < dims. */
eb_status eb_pgvector_decode(const uint8_t *buf, size_t len, float *out, uint32_t cap,
                             uint32_t *dims);

/* halfvec forms of the two above. The encoder also fails (EB_ERR_INVALID) for values whose
 * half-precision rounding overflows (|x| ≥ 65520), as PostgreSQL's halfvec does. */
eb_status eb_pghalfvec_encode(const float *values, uint32_t dims, uint8_t *out, size_t cap);
eb_status eb_pghalfvec_decode(const uint8_t *buf, size_t len, float *out, uint32_t cap,
                              uint32_t *dims);

/* Build a CombinedEmbedding into out (image_dims + text_dims floats):
 *   out[0 .. image_dims)                      = w_img · image / ‖image‖   (zeros if image NULL)
 *   out[image_dims .. image_dims + text_dims) = w_txt · text / ‖text‖     (zeros if text NULL)
 * At least one half must be given. EB_ERR_INVALID for a given half with zero or non-finite
 * norm, non-finite weights, or both halves NULL. Norms are accumulated in double. */
eb_status eb_combined_build(const float *image, uint32_t image_dims, const float *text,
                            uint32_t text_dims, float w_img, float w_txt, float *out);

/* The query form: eb_combined_build(image, image_dims, text, text_dims, 1, 1, out). */
eb_status eb_combined_query(const float *image, uint32_t image_dims, const float *text,
                            uint32_t text_dims, float *out);

#endif
