/* eb_hash — the content hash that keys caches, merges identical requests and labels stored rows.
 *
 * hash = SHA-256( canonical header || input bytes ), where the canonical header is the ASCII text
 *
 *     "embroker-content-v1\n" "kind=" KIND "\n" "w=" W "\n" "h=" H "\n" "opts=" OPTS "\n" "\n"
 *
 * KIND is "image" (encoded JPEG/PNG/WebP: the bytes name their own format, so the format is not
 * hashed), "raw_rgb8" or "text"; W and H are decimal pixel sizes for raw_rgb8 and 0 otherwise;
 * OPTS is the canonical list of options that change the output, "key=value" pairs sorted by key
 * and joined by ';', built by eb_content_opts(): "dim=N" when an output dimension is requested,
 * "instruction_sha256=HEX" when an instruction is given (hashed so any text is safe in the
 * header), "normalize=0" when the raw (unnormalised) vector is requested; empty for the default
 * request. Options that do not change the vector (deadline, priority, k) are never hashed. The header is text so a client in
 * any language can reproduce the hash (docs/protocol.md repeats this definition).
 *
 * Clients may send this hash with a request (the cache lookup then needs no worker); workers
 * always recompute it over the bytes they actually read, and only that verified hash is used to
 * write the cache. */
#ifndef EB_HASH_H
#define EB_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_status.h"

#define EB_HASH_LEN 32

typedef struct eb_hash_ctx eb_hash_ctx;

/* Canonical OPTS string for the options that change an embedding (see above) into out (cap
 * bytes, at least EB_HASH_OPTS_MAX). output_dim 0 = full; instruction NULL or empty = none. */
#define EB_HASH_OPTS_MAX 160
void eb_content_opts(bool normalize, uint32_t output_dim, const char *instruction,
                     size_t instruction_len, char *out, size_t cap);

/* Compute the content hash in one call. `opts` may be NULL (no options). Returns EB_ERR_INVALID
 * for an unknown kind or an opts string containing a newline, EB_ERR_INTERNAL if libcrypto fails. */
eb_status eb_content_hash(const char *kind, uint32_t width, uint32_t height, const char *opts,
                          const void *bytes, size_t len, uint8_t out[EB_HASH_LEN]);

/* Incremental form, for bytes that arrive in pieces: begin, update any number of times, end.
 * begin returns NULL on bad arguments or allocation failure; end frees the context. */
eb_hash_ctx *eb_content_hash_begin(const char *kind, uint32_t width, uint32_t height,
                                   const char *opts);
void eb_content_hash_update(eb_hash_ctx *ctx, const void *bytes, size_t len);
eb_status eb_content_hash_end(eb_hash_ctx **ctx, uint8_t out[EB_HASH_LEN]);

/* Plain SHA-256 of a buffer (model revisions, checksums). */
void eb_sha256(const void *bytes, size_t len, uint8_t out[EB_HASH_LEN]);

/* Lower-case hex of `len` bytes into out (2*len+1 bytes, NUL-terminated); returns out. */
char *eb_hex(const uint8_t *bytes, size_t len, char *out);

#endif
