/* eb_tokenizer — byte-level BPE tokenizer driven by a Hugging Face tokenizer.json (Qwen3).
 *
 * Produces exactly the ids of the Rust `tokenizers` library's
 * `tokenizer.encode(text, add_special_tokens=False)` for the files it accepts (Qwen2/Qwen3 and
 * other GPT-2 style byte-level BPE files): added tokens are cut out of the raw text first, the
 * rest is normalised (NFC), split by the pre-tokenizer's regex (PCRE2, UTF + UCP), mapped to the
 * GPT-2 byte alphabet and merged by rank. On top of that the caller may ask for the end-of-text
 * token to be appended (what embedding models pool on) and for a token limit with an explicit
 * policy. docs/tokenizer.md says which tokenizer.json fields are read and which are rejected.
 *
 * Threads: a loaded eb_tokenizer is immutable; any number of threads may encode with it at once.
 * Each thread passes its own eb_tokenizer_scratch (buffers, a regex match block and a cache of
 * recently tokenized words); a scratch must never be used by two threads at the same time.
 * Passing NULL for the scratch is allowed and creates a temporary one for that call (slower).
 */
#ifndef EB_TOKENIZER_H
#define EB_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_status.h"

typedef struct eb_tokenizer eb_tokenizer;
typedef struct eb_tokenizer_scratch eb_tokenizer_scratch;

/* What to do when the text needs more than max_tokens ids. */
typedef enum eb_tokenizer_overflow {
    EB_TOKENIZER_OVERFLOW_ERROR = 0,    /* fail with EB_ERR_TOO_LARGE */
    EB_TOKENIZER_OVERFLOW_TRUNCATE = 1, /* keep the first ids (then the eos if requested) */
} eb_tokenizer_overflow;

typedef struct eb_tokenizer_options {
    bool append_eos;                /* append the eos id (<|endoftext|>, 151643 in Qwen3) */
    size_t max_tokens;              /* 0 = no limit; else the most ids returned, eos included */
    eb_tokenizer_overflow overflow; /* what happens beyond max_tokens */
} eb_tokenizer_options;

/* Load a tokenizer.json file. Returns NULL on failure with the reason in err (which file, which
 * field, what to do). The caller owns the result; free it with eb_tokenizer_destroy. */
eb_tokenizer *eb_tokenizer_load(const char *path, char *err, size_t err_len);

/* Same from a JSON text in memory (not NUL-terminated necessarily; `len` bytes). The text is not
 * kept. `origin` names it in error messages (may be NULL). */
eb_tokenizer *eb_tokenizer_load_json(const char *json, size_t len, const char *origin, char *err,
                                     size_t err_len);

/* Free the tokenizer and set *tok to NULL. NULL and *tok == NULL are fine. Scratches made for it
 * must be destroyed first (they point into it). */
void eb_tokenizer_destroy(eb_tokenizer **tok);

/* Per-thread working memory for eb_tokenizer_encode with `tok`. NULL when out of memory. The
 * caller owns it; free with eb_tokenizer_scratch_destroy. */
eb_tokenizer_scratch *eb_tokenizer_scratch_new(const eb_tokenizer *tok);

/* Free the scratch and set *scratch to NULL. NULL and *scratch == NULL are fine. */
void eb_tokenizer_scratch_destroy(eb_tokenizer_scratch **scratch);

/* Tokenize `len` bytes of UTF-8 `text` (NUL bytes are ordinary characters) into ids[0..*n_ids).
 *
 * opts may be NULL (no eos, no limit). `scratch` must have been made for `tok`, or be NULL.
 * Errors (with a message in err; *n_ids is then 0):
 *   EB_ERR_INVALID    text is not valid UTF-8 (overlong forms, surrogates, code points above
 *                     U+10FFFF, truncated sequences, stray bytes; the message gives the byte
 *                     offset and why), a scratch made for another tokenizer, a NULL text with
 *                     len > 0, NULL ids with ids_cap > 0, or an unknown overflow policy.
 *   EB_ERR_UNSUPPORTED append_eos asked of a tokenizer without "<|endoftext|>".
 *   EB_ERR_TOO_LARGE  the text needs more than opts->max_tokens ids and the policy is ERROR, or
 *                     the result does not fit ids_cap (pass ids_cap >= max_tokens, or
 *                     >= eb_tokenizer_max_ids(len) without a limit, and this cannot happen).
 *   EB_ERR_NOMEM      an allocation failed.
 *   EB_ERR_INTERNAL   the regex engine failed (message carries PCRE2's text).
 * With OVERFLOW_TRUNCATE and append_eos the result is the first max_tokens-1 ids then the eos
 * (max_tokens == 1 gives just the eos). The empty text gives no ids, or just the eos. */
eb_status eb_tokenizer_encode(const eb_tokenizer *tok, eb_tokenizer_scratch *scratch,
                              const char *text, size_t len, const eb_tokenizer_options *opts,
                              int32_t *ids, size_t ids_cap, size_t *n_ids, char *err,
                              size_t err_len);

/* Write the Qwen3-Embedding query form "Instruct: <task>\nQuery:<text>" into out (NUL-terminated
 * when out_cap > the result). Returns the length of the full result without the NUL, like
 * snprintf: call with out_cap 0 to size the buffer. */
size_t eb_tokenizer_format_query(char *out, size_t out_cap, const char *task, size_t task_len,
                                 const char *text, size_t text_len);

/* eb_tokenizer_encode of eb_tokenizer_format_query(task, text), formatted in the scratch (or a
 * temporary buffer when scratch is NULL). Same errors as eb_tokenizer_encode. */
eb_status eb_tokenizer_encode_query(const eb_tokenizer *tok, eb_tokenizer_scratch *scratch,
                                    const char *task, size_t task_len, const char *text,
                                    size_t text_len, const eb_tokenizer_options *opts,
                                    int32_t *ids, size_t ids_cap, size_t *n_ids, char *err,
                                    size_t err_len);

/* An upper bound on the ids of a `len`-byte text with the eos: NFC can grow UTF-8 at most 3x and
 * every id covers at least one byte. */
size_t eb_tokenizer_max_ids(size_t len);

/* The eos id used by append_eos (the added token "<|endoftext|>"), or -1 when the file has none
 * (append_eos then fails with EB_ERR_UNSUPPORTED). */
int32_t eb_tokenizer_eos_id(const eb_tokenizer *tok);

/* One past the largest id (model vocabulary and added tokens). */
size_t eb_tokenizer_vocab_size(const eb_tokenizer *tok);

/* The id of a token given by its exact text in the file (a vocabulary entry in byte-level form,
 * e.g. "Ġworld", or an added token's content, e.g. "<|im_end|>"), or -1. */
int32_t eb_tokenizer_token_id(const eb_tokenizer *tok, const char *token);

/* The text of an id as the file writes it (NUL-terminated, owned by the tokenizer), or NULL when
 * the id is unknown. */
const char *eb_tokenizer_id_token(const eb_tokenizer *tok, int32_t id);

#endif
