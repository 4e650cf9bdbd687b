/* eb_tokenizer — byte-level BPE exactly as the Hugging Face `tokenizers` library runs it.
 *
 * The idea: a tokenizer.json describes a pipeline, and for byte-level BPE files (GPT-2, Qwen2,
 * Qwen3) that pipeline has few moving parts, so we implement those parts and refuse the rest
 * loudly instead of approximating it. For every input:
 *
 *   1. added tokens (special or not) whose `normalized` flag is false are cut out of the raw text
 *      at the leftmost position, longest first (tokenizers uses a leftmost-longest Aho-Corasick
 *      automaton; with a few dozen added tokens a first-byte filter plus memcmp is the same thing);
 *   2. every remaining piece is normalised (NFC by utf8proc), then added tokens with
 *      `normalized` true are cut out of the normalised piece;
 *   3. each piece is split by the pre-tokenizer's regex(es) with behaviour "Isolated" (matches and
 *      the gaps between them become words), run by PCRE2 in UTF + UCP mode;
 *   4. each word's bytes are mapped to the GPT-2 byte alphabet, i.e. straight to the ids of the
 *      256 one-character tokens, and merged pair by pair, lowest merge rank first and leftmost
 *      first among equal ranks (tokenizers' word.rs does this with a binary heap; so do we).
 *
 * The regex comes from the file, but tokenizers runs it with Oniguruma, whose Unicode classes
 * differ from PCRE2's in a few code points (PCRE2's \s also matches U+180E; its \w lacks marks),
 * so the pattern is rewritten with explicit classes before compiling (onig_to_pcre2 below). In
 * the same way NFC is computed here from utf8proc's data with a short patch list, because the
 * normaliser inside tokenizers knows fewer combining classes than utf8proc (nfc_patched).
 *
 * Words repeat (" the", ","), so each scratch keeps a cache of word -> ids; a loaded tokenizer
 * never changes, which is what makes it safe to share between threads.
 */
#include "eb_tokenizer.h"
#include "eb_status.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cJSON.h>
#include <pcre2.h>
#include <utf8proc.h>

/* ---- types ---------------------------------------------------------------------------------- */

#define MAX_SPLIT_STEPS 4
#define MAX_NORM_STEPS 4
#define EOS_CONTENT "<|endoftext|>"

typedef struct added_token {
    char *content;
    size_t len;
    int32_t id;
    bool special, lstrip, rstrip, normalized, single_word;
} added_token;

/* One merge: the pair (left id, right id) packed in `key`, its rank and the merged token's id. */
typedef struct merge_slot {
    uint64_t key; /* MERGE_EMPTY when unused */
    uint32_t rank;
    int32_t new_id;
} merge_slot;

#define MERGE_EMPTY UINT64_MAX

/* A group of added tokens matched on the same text (raw or normalised), longest first. */
typedef struct added_group {
    const added_token **tokens;
    size_t n;
    bool first_byte[256]; /* some token in the group starts with this byte */
} added_group;

struct eb_tokenizer {
    char *origin; /* file name for messages */

    /* Token text per id (as written in the file), and a hash of the model vocabulary. */
    char *blob;
    size_t blob_len, blob_cap;
    uint32_t *tok_off; /* per id, UINT32_MAX when the id has no token */
    size_t n_ids;      /* one past the largest id */
    uint32_t *vocab_slots; /* id + 1, 0 = empty */
    size_t vocab_mask;
    size_t model_vocab_n;

    merge_slot *merges;
    size_t merge_mask;
    size_t n_merges;

    int32_t byte_id[256]; /* id of the byte-level character of each byte, -1 if absent */
    int32_t unk_id;
    bool fuse_unk;
    bool ignore_merges;

    added_token *added;
    size_t n_added;
    added_group raw_group, norm_group;
    int32_t eos_id;

    uint32_t norm_opts[MAX_NORM_STEPS]; /* utf8proc options per normaliser step */
    bool norm_is_nfc[MAX_NORM_STEPS];
    size_t n_norm;

    pcre2_code *split_re[MAX_SPLIT_STEPS];
    bool split_jit[MAX_SPLIT_STEPS];
    size_t n_split;
};

typedef struct bpe_sym {
    int32_t id;
    int32_t prev, next;
    bool alive;
} bpe_sym;

typedef struct bpe_merge {
    uint32_t rank;
    uint32_t pos;
    int32_t new_id;
} bpe_merge;

/* Word cache slot: the word's bytes and ids live in the scratch's arena at `off`. */
typedef struct cache_slot {
    uint64_t hash;
    uint32_t off; /* 0 = empty (the arena starts with a reserved word) */
    uint16_t key_len;
    uint16_t n_ids;
} cache_slot;

#define CACHE_SLOTS 16384u          /* power of two; at most half are used */
#define CACHE_ARENA (1u << 20)      /* bytes */
#define CACHE_MAX_WORD 255u         /* longer words are not cached */

struct eb_tokenizer_scratch {
    const eb_tokenizer *tok;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;

    int32_t *ucs; /* code points for normalisation; re-encoded to UTF-8 in place */
    size_t ucs_cap;
    char *norm; /* the normalised piece */
    size_t norm_cap;

    bpe_sym *syms;
    size_t syms_cap;
    bpe_merge *heap;
    size_t heap_cap;
    char *bytes; /* byte-level text of one word (ignore_merges lookups) */
    size_t bytes_cap;
    char *query;
    size_t query_cap;

    cache_slot *cache;
    size_t cache_used;
    unsigned char *arena;
    size_t arena_used;
};

/* State of one encode call. */
typedef struct enc_ctx {
    const eb_tokenizer *tok;
    eb_tokenizer_scratch *s;
    int32_t *ids;
    size_t n, limit;
    bool overflow;
    eb_status status; /* first error other than overflow */
    char *err;
    size_t err_len;
} enc_ctx;

/* ---- small helpers -------------------------------------------------------------------------- */

static uint64_t hash_bytes(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (len * 0xff51afd7ed558ccdull);
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        p += 8;
        len -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, p, len);
    h = (h ^ v) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static size_t pow2_at_least(size_t n)
{
    size_t p = 16;
    while (p < n)
        p <<= 1;
    return p;
}

/* Grow *buf (elements of `elem` bytes) to hold `need`; false when out of memory. */
static bool grow(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *p = realloc(*buf, n * elem);
    if (!p)
        return false;
    *buf = p;
    *cap = n;
    return true;
}

/* Encode code point cp as UTF-8 into out (4 bytes room); returns the length. */
static size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decode one code point from valid UTF-8 at p (no checks); sets *n to its length. */
static uint32_t utf8_get(const unsigned char *p, size_t *n)
{
    if (p[0] < 0x80) {
        *n = 1;
        return p[0];
    }
    if (p[0] < 0xE0) {
        *n = 2;
        return ((uint32_t)(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
    }
    if (p[0] < 0xF0) {
        *n = 3;
        return ((uint32_t)(p[0] & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    }
    *n = 4;
    return ((uint32_t)(p[0] & 0x07) << 18) | ((uint32_t)(p[1] & 0x3F) << 12) |
           ((uint32_t)(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
}

/* Check UTF-8 as Unicode defines it (no overlongs, no surrogates, nothing above U+10FFFF).
 * Returns true when valid; else sets *bad_off and *why. */
static bool utf8_valid(const unsigned char *p, size_t len, size_t *bad_off, const char **why)
{
    size_t i = 0;
    while (i < len) {
        /* ASCII fast path, 8 bytes at a time. */
        while (i + 8 <= len) {
            uint64_t v;
            memcpy(&v, p + i, 8);
            if (v & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= len)
            break;
        unsigned char c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0;
            if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90;
            if (c == 0xF4)
                hi = 0x8F;
        } else {
            *bad_off = i;
            if (c >= 0x80 && c <= 0xBF)
                *why = "continuation byte without a lead byte";
            else if (c == 0xC0 || c == 0xC1)
                *why = "overlong encoding";
            else
                *why = "byte never valid in UTF-8";
            return false;
        }
        for (size_t k = 1; k <= need; k++) {
            if (i + k >= len) {
                *bad_off = i;
                *why = "truncated multi-byte sequence at the end of the text";
                return false;
            }
            unsigned char b = p[i + k];
            unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
            if (b < l || b > h) {
                *bad_off = i;
                if (k == 1 && c == 0xED && b >= 0xA0 && b <= 0xBF)
                    *why = "UTF-16 surrogate (U+D800..U+DFFF)";
                else if (k == 1 && (c == 0xE0 || c == 0xF0) && b >= 0x80 && b < lo)
                    *why = "overlong encoding";
                else if (k == 1 && c == 0xF4 && b > 0x8F && b <= 0xBF)
                    *why = "code point above U+10FFFF";
                else
                    *why = "truncated multi-byte sequence";
                return false;
            }
        }
        i += need + 1;
    }
    return true;
}

/* ---- Unicode version patches ---------------------------------------------------------------- */

/* tokenizers classifies with Oniguruma's tables (Unicode 16) and normalises with an older crate;
 * PCRE2 10.42 and utf8proc 2.6 carry other versions. These tables hold every code point where
 * the two disagree on what matters here; test_tokenizer checks them against the reference. */
/* BEGIN GENERATED by tools/reference/qwen3_tokenizer.py --unicode-tables */
/* letters (\p{L}) for tokenizers, unassigned for PCRE2 */
static const uint32_t onig_extra_letter[][2] = {
    {0x01C89, 0x01C8A}, {0x0A7CB, 0x0A7CD}, {0x0A7DA, 0x0A7DC}, {0x105C0, 0x105F3},
    {0x10D4A, 0x10D65}, {0x10D6F, 0x10D85}, {0x10EC2, 0x10EC4}, {0x1123F, 0x11240},
    {0x11380, 0x11389}, {0x1138B, 0x1138B}, {0x1138E, 0x1138E}, {0x11390, 0x113B5},
    {0x113B7, 0x113B7}, {0x113D1, 0x113D1}, {0x113D3, 0x113D3}, {0x11BC0, 0x11BE0},
    {0x11F02, 0x11F02}, {0x11F04, 0x11F10}, {0x11F12, 0x11F33}, {0x1342F, 0x1342F},
    {0x13441, 0x13446}, {0x13460, 0x143FA}, {0x16100, 0x1611D}, {0x16D40, 0x16D6C},
    {0x18CFF, 0x18CFF}, {0x1B132, 0x1B132}, {0x1B155, 0x1B155}, {0x1DF25, 0x1DF2A},
    {0x1E030, 0x1E06D}, {0x1E4D0, 0x1E4EB}, {0x1E5D0, 0x1E5ED}, {0x1E5F0, 0x1E5F0},
    {0x2B739, 0x2B739}, {0x2EBF0, 0x2EE5D}, {0x31350, 0x323AF},
};
/* numbers (\p{N}) for tokenizers, unassigned for PCRE2 */
static const uint32_t onig_extra_number[][2] = {
    {0x10D40, 0x10D49}, {0x116D0, 0x116E3}, {0x11BF0, 0x11BF9}, {0x11F50, 0x11F59},
    {0x16130, 0x16139}, {0x16D70, 0x16D79}, {0x1CCF0, 0x1CCF9}, {0x1D2C0, 0x1D2D3},
    {0x1E4F0, 0x1E4F9}, {0x1E5F1, 0x1E5FA},
};
/* marks utf8proc gives a combining class that tokenizers' NFC treats as 0 */
static const uint32_t nfc_class_zero[][2] = {
    {0x007FD, 0x007FD}, {0x00898, 0x0089F}, {0x008CA, 0x008D3}, {0x009FE, 0x009FE},
    {0x00C3C, 0x00C3C}, {0x00D3B, 0x00D3C}, {0x00EBA, 0x00EBA}, {0x01715, 0x01715},
    {0x01ABF, 0x01ACE}, {0x01DF6, 0x01DFA}, {0x0A82C, 0x0A82C}, {0x10D24, 0x10D27},
    {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85},
    {0x11070, 0x11070}, {0x1133B, 0x1133B}, {0x1145E, 0x1145E}, {0x11839, 0x1183A},
    {0x1193D, 0x1193E}, {0x11943, 0x11943}, {0x119E0, 0x119E0}, {0x11A34, 0x11A34},
    {0x11A47, 0x11A47}, {0x11A99, 0x11A99}, {0x11D42, 0x11D42}, {0x11D44, 0x11D45},
    {0x11D97, 0x11D97}, {0x11F41, 0x11F42}, {0x16FF0, 0x16FF1}, {0x1E08F, 0x1E08F},
    {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF},
};
/* composites utf8proc composes that tokenizers' NFC does not know */
static const uint32_t nfc_no_compose[][2] = {
    {0x11938, 0x11938},
};
/* END GENERATED */

static bool in_ranges(const uint32_t (*r)[2], size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0])
            hi = mid;
        else if (cp > r[mid][1])
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

#define N_RANGES(t) (sizeof(t) / sizeof((t)[0]))

/* Combining class as tokenizers' NFC sees it. */
static int nfc_class(uint32_t cp)
{
    if (cp < 0x300)
        return 0;
    if (in_ranges(nfc_class_zero, N_RANGES(nfc_class_zero), cp))
        return 0;
    return utf8proc_get_property((utf8proc_int32_t)cp)->combining_class;
}

/* ---- NFC quick check ------------------------------------------------------------------------ */

/* Code points >= U+0300 that NFC may change or that may combine with a neighbour: nonzero
 * combining class, any decomposition, Hangul jamo, or a non-first element of some canonical
 * decomposition (e.g. U+09BE, which composes with U+09C7 although its class is 0). Below U+0300
 * nothing changes under NFC. A piece without such code points is already NFC, so the costly
 * decompose/recompose pass runs only where it can matter. Built once per process. */
static uint8_t nfc_sensitive[0x110000 / 8];
static pthread_once_t nfc_once = PTHREAD_ONCE_INIT;

static void nfc_mark(uint32_t cp)
{
    nfc_sensitive[cp >> 3] |= (uint8_t)(1u << (cp & 7));
}

static void nfc_build(void)
{
    for (uint32_t cp = 0x300; cp < 0x110000; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF)
            continue;
        const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
        if (p->combining_class != 0 || (cp >= 0x1100 && cp <= 0x11FF))
            nfc_mark(cp);
        if (p->decomp_seqindex != UINT16_MAX) {
            nfc_mark(cp);
            utf8proc_int32_t d[32];
            int boundclass = 0;
            utf8proc_ssize_t n = utf8proc_decompose_char((utf8proc_int32_t)cp, d, 32,
                                                         UTF8PROC_DECOMPOSE, &boundclass);
            for (utf8proc_ssize_t k = 1; k < n && k < 32; k++)
                if (d[k] >= 0x300)
                    nfc_mark((uint32_t)d[k]);
        }
    }
}

static bool nfc_is_sensitive(uint32_t cp)
{
    return cp >= 0x300 && (nfc_sensitive[cp >> 3] >> (cp & 7) & 1);
}

/* True when NFC(text) == text certainly (valid UTF-8 input). */
static bool nfc_quick_yes(const unsigned char *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (p[i] < 0xCC) { /* lead bytes below 0xCC encode code points below U+0300 */
            i++;
            continue;
        }
        size_t n;
        uint32_t cp = utf8_get(p + i, &n);
        if (nfc_is_sensitive(cp))
            return false;
        i += n;
    }
    return true;
}

/* ---- Oniguruma -> PCRE2 pattern rewrite ----------------------------------------------------- */

/* Oniguruma's \s (Unicode): U+0009..U+000D, U+0085 and the Z categories (= White_Space).
 * PCRE2 10.42's \s under UCP adds U+180E; the explicit list pins Oniguruma's meaning. */
#define ONIG_SPACE "\\t\\n\\x0B\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}" \
                   "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
/* Oniguruma's \w (Unicode): Letter, Mark, Number, Connector_Punctuation. */
#define ONIG_WORD "\\p{L}\\p{M}\\p{N}\\p{Pc}"
/* Oniguruma's \h is a hexadecimal digit (PCRE2's \h is horizontal space). */
#define ONIG_HEX "0-9a-fA-F"

typedef struct strbuf {
    char *p;
    size_t len, cap;
    bool oom;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (!grow((void **)&b->p, &b->cap, b->len + n + 1, 1)) {
        b->oom = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_str(strbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_ranges(strbuf *b, const uint32_t (*r)[2], size_t n)
{
    for (size_t k = 0; k < n; k++) {
        if (r[k][0] == 0 && r[k][1] == 0)
            continue;
        char tmp[40];
        if (r[k][0] == r[k][1])
            snprintf(tmp, sizeof tmp, "\\x{%X}", r[k][0]);
        else
            snprintf(tmp, sizeof tmp, "\\x{%X}-\\x{%X}", r[k][0], r[k][1]);
        sb_str(b, tmp);
    }
}

/* Rewrite the class escapes whose meaning differs between Oniguruma and PCRE2 (UCP). Returns a
 * malloc'd pattern, or NULL with err set (unsupported construct or no memory). */
static char *onig_to_pcre2(const char *in, size_t len, char *err, size_t err_len)
{
    strbuf b = {0};
    bool in_class = false;
    size_t class_start = 0; /* index just after '[' or '[^' */
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '\\' && i + 1 < len) {
            char e = in[++i];
            const char *set = NULL;
            bool negated = false;
            switch (e) {
            case 's': set = ONIG_SPACE; break;
            case 'S': set = ONIG_SPACE; negated = true; break;
            case 'w': set = ONIG_WORD; break;
            case 'W': set = ONIG_WORD; negated = true; break;
            case 'h': set = ONIG_HEX; break;
            case 'H': set = ONIG_HEX; negated = true; break;
            case 'p':
            case 'P': {
                /* \p{L} and \p{N} gain the code points newer than PCRE2's tables. */
                size_t plen = 0;
                char prop = 0;
                if (i + 3 < len && in[i + 1] == '{' && in[i + 3] == '}')
                    prop = in[i + 2], plen = 3;
                else if (i + 1 < len && in[i + 1] != '{')
                    prop = in[i + 1], plen = 1;
                if (prop == 'L' || prop == 'N') {
                    bool neg = e == 'P';
                    if (in_class && neg) {
                        eb_set_err(err, err_len, "pre-tokenizer regex uses \\P{%c} inside a "
                                   "character class at offset %zu; not supported", prop, i - 1);
                        free(b.p);
                        return NULL;
                    }
                    if (!in_class)
                        sb_str(&b, neg ? "[^" : "[");
                    sb_str(&b, prop == 'L' ? "\\p{L}" : "\\p{N}");
                    if (prop == 'L')
                        sb_ranges(&b, onig_extra_letter, N_RANGES(onig_extra_letter));
                    else
                        sb_ranges(&b, onig_extra_number, N_RANGES(onig_extra_number));
                    if (!in_class)
                        sb_str(&b, "]");
                    i += plen;
                    continue;
                }
                break;
            }
            default: break;
            }
            if (!set) {
                char esc[2] = {'\\', e};
                sb_add(&b, esc, 2);
                continue;
            }
            if (!in_class) {
                sb_str(&b, negated ? "[^" : "[");
                sb_str(&b, set);
                sb_str(&b, "]");
            } else if (!negated) {
                sb_str(&b, set);
            } else {
                eb_set_err(err, err_len,
                           "pre-tokenizer regex uses \\%c inside a character class at offset %zu; "
                           "this rewrite cannot express it for PCRE2",
                           e, i - 1);
                free(b.p);
                return NULL;
            }
            continue;
        }
        if (!in_class && c == '[') {
            in_class = true;
            sb_add(&b, &c, 1);
            if (i + 1 < len && in[i + 1] == '^') {
                sb_add(&b, "^", 1);
                i++;
            }
            class_start = i + 1;
            continue;
        }
        if (in_class && c == '[') {
            if (i + 1 < len && in[i + 1] == ':') { /* POSIX class [:name:], copy as is */
                const char *end = strstr(in + i, ":]");
                if (end && (size_t)(end - in) < len) {
                    sb_add(&b, in + i, (size_t)(end - in) + 2 - i);
                    i = (size_t)(end - in) + 1;
                    continue;
                }
            }
            eb_set_err(err, err_len,
                       "pre-tokenizer regex has a nested character class at offset %zu "
                       "(Oniguruma syntax PCRE2 lacks)", i);
            free(b.p);
            return NULL;
        }
        if (in_class && c == ']' && i != class_start)
            in_class = false;
        sb_add(&b, &c, 1);
    }
    if (b.oom || !b.p) {
        free(b.p);
        if (len == 0) {
            eb_set_err(err, err_len, "pre-tokenizer regex is empty");
            return NULL;
        }
        eb_set_err(err, err_len, "out of memory rewriting the pre-tokenizer regex");
        return NULL;
    }
    return b.p;
}

/* ---- loading -------------------------------------------------------------------------------- */

static uint32_t vocab_find(const eb_tokenizer *t, const char *s, size_t len)
{
    uint64_t h = hash_bytes(s, len);
    for (size_t i = h & t->vocab_mask;; i = (i + 1) & t->vocab_mask) {
        uint32_t v = t->vocab_slots[i];
        if (v == 0)
            return UINT32_MAX;
        uint32_t id = v - 1;
        const char *tok = t->blob + t->tok_off[id];
        if (strlen(tok) == len && memcmp(tok, s, len) == 0)
            return id;
    }
}

static const merge_slot *merge_find(const eb_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    for (size_t i = hash_u64(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const merge_slot *m = &t->merges[i];
        if (m->key == key)
            return m;
        if (m->key == MERGE_EMPTY)
            return NULL;
    }
}

/* Store a token's text for `id` in the blob. */
static bool blob_put(eb_tokenizer *t, int32_t id, const char *s)
{
    size_t n = strlen(s) + 1;
    if (!grow((void **)&t->blob, &t->blob_cap, t->blob_len + n, 1))
        return false;
    memcpy(t->blob + t->blob_len, s, n);
    t->tok_off[id] = (uint32_t)t->blob_len;
    t->blob_len += n;
    return true;
}

#define LOAD_FAIL(...)                                                                             \
    do {                                                                                           \
        char msg_[400];                                                                            \
        snprintf(msg_, sizeof msg_, __VA_ARGS__);                                                  \
        eb_set_err(err, err_len, "cannot load tokenizer \"%s\": %s", origin, msg_);                   \
        return false;                                                                              \
    } while (0)

static bool json_is_null_or_missing(const cJSON *j)
{
    return j == NULL || cJSON_IsNull(j);
}

#define MAX_ID (1 << 24)

static bool load_vocab(eb_tokenizer *t, const cJSON *model, const cJSON *added, const char *origin,
                       char *err, size_t err_len)
{
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab))
        LOAD_FAIL("model.vocab is %s, expected an object of token -> id; is this a BPE "
                  "tokenizer.json?", vocab ? "not an object" : "missing");
    size_t n = (size_t)cJSON_GetArraySize(vocab);
    if (n == 0)
        LOAD_FAIL("model.vocab is empty");
    /* One past the largest id over the vocabulary and the added tokens. */
    int64_t max_id = -1;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= MAX_ID ||
            e->valuedouble != (double)(int64_t)e->valuedouble)
            LOAD_FAIL("model.vocab[\"%.60s\"] is not an id in 0..%d", e->string ? e->string : "",
                      MAX_ID - 1);
        if (e->valueint > max_id)
            max_id = e->valueint;
    }
    const cJSON *a;
    cJSON_ArrayForEach(a, added)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        if (cJSON_IsNumber(id) && id->valuedouble >= 0 && id->valuedouble < MAX_ID &&
            id->valueint > max_id)
            max_id = id->valueint;
    }
    t->n_ids = (size_t)max_id + 1;
    t->tok_off = malloc(t->n_ids * sizeof *t->tok_off);
    size_t slots = pow2_at_least(n * 2);
    t->vocab_slots = calloc(slots, sizeof *t->vocab_slots);
    if (!t->tok_off || !t->vocab_slots)
        LOAD_FAIL("out of memory for %zu vocabulary entries", n);
    memset(t->tok_off, 0xFF, t->n_ids * sizeof *t->tok_off);
    t->vocab_mask = slots - 1;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int32_t id = e->valueint;
        if (t->tok_off[id] != UINT32_MAX)
            LOAD_FAIL("model.vocab gives id %d to both \"%.60s\" and \"%.60s\"", id,
                      t->blob + t->tok_off[id], e->string);
        size_t len = strlen(e->string);
        if (vocab_find(t, e->string, len) != UINT32_MAX)
            LOAD_FAIL("model.vocab lists \"%.60s\" twice", e->string);
        if (!blob_put(t, id, e->string))
            LOAD_FAIL("out of memory for the vocabulary");
        uint64_t h = hash_bytes(e->string, len);
        size_t i = h & t->vocab_mask;
        while (t->vocab_slots[i])
            i = (i + 1) & t->vocab_mask;
        t->vocab_slots[i] = (uint32_t)id + 1;
    }
    t->model_vocab_n = n;
    return true;
}

/* Split a legacy "a b" merge string at its single space. */
static bool merge_parts(const cJSON *m, const char **a, size_t *alen, const char **b, size_t *blen)
{
    if (cJSON_IsString(m)) {
        const char *s = m->valuestring;
        const char *sp = strchr(s, ' ');
        if (!sp || sp == s || sp[1] == 0 || strchr(sp + 1, ' '))
            return false;
        *a = s;
        *alen = (size_t)(sp - s);
        *b = sp + 1;
        *blen = strlen(sp + 1);
        return true;
    }
    if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2) {
        const cJSON *x = m->child, *y = m->child->next;
        if (!cJSON_IsString(x) || !cJSON_IsString(y))
            return false;
        *a = x->valuestring;
        *alen = strlen(x->valuestring);
        *b = y->valuestring;
        *blen = strlen(y->valuestring);
        return true;
    }
    return false;
}

static bool load_merges(eb_tokenizer *t, const cJSON *model, const char *origin, char *err,
                        size_t err_len)
{
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsArray(merges))
        LOAD_FAIL("model.merges is %s, expected an array of \"a b\" strings or [a, b] pairs",
                  merges ? "not an array" : "missing");
    size_t n = (size_t)cJSON_GetArraySize(merges);
    size_t slots = pow2_at_least(n * 2 + 2);
    t->merges = malloc(slots * sizeof *t->merges);
    if (!t->merges)
        LOAD_FAIL("out of memory for %zu merges", n);
    for (size_t i = 0; i < slots; i++)
        t->merges[i].key = MERGE_EMPTY;
    t->merge_mask = slots - 1;
    char *joined = NULL;
    size_t joined_cap = 0;
    uint32_t rank = 0;
    for (const cJSON *m = merges->child; m; m = m->next, rank++) {
        const char *a, *b;
        size_t alen, blen;
        if (!merge_parts(m, &a, &alen, &b, &blen)) {
            free(joined);
            LOAD_FAIL("model.merges[%u] is neither \"a b\" (two tokens, one space) nor a pair "
                      "of two strings", rank);
        }
        if (!grow((void **)&joined, &joined_cap, alen + blen + 1, 1)) {
            free(joined);
            LOAD_FAIL("out of memory for merges");
        }
        memcpy(joined, a, alen);
        memcpy(joined + alen, b, blen);
        joined[alen + blen] = 0;
        uint32_t ia = vocab_find(t, a, alen), ib = vocab_find(t, b, blen);
        uint32_t inew = vocab_find(t, joined, alen + blen);
        if (ia == UINT32_MAX || ib == UINT32_MAX || inew == UINT32_MAX) {
            const char *missing = ia == UINT32_MAX ? a : ib == UINT32_MAX ? b : joined;
            int mlen = (int)(ia == UINT32_MAX ? alen : ib == UINT32_MAX ? blen : alen + blen);
            char shown[64];
            snprintf(shown, sizeof shown, "%.*s", mlen < 60 ? mlen : 60, missing);
            free(joined);
            LOAD_FAIL("model.merges[%u] (\"%.*s\" + \"%.*s\") needs token \"%s\", which is not "
                      "in model.vocab; the file is damaged or vocab and merges do not belong "
                      "together", rank, (int)(alen < 40 ? alen : 40), a,
                      (int)(blen < 40 ? blen : 40), b, shown);
        }
        uint64_t key = ((uint64_t)ia << 32) | ib;
        size_t i = hash_u64(key) & t->merge_mask;
        while (t->merges[i].key != MERGE_EMPTY && t->merges[i].key != key)
            i = (i + 1) & t->merge_mask;
        /* A repeated pair takes its later rank, as a map built in file order would. */
        t->merges[i].key = key;
        t->merges[i].rank = rank;
        t->merges[i].new_id = (int32_t)inew;
    }
    free(joined);
    t->n_merges = n;
    return true;
}

static bool load_model(eb_tokenizer *t, const cJSON *root, const char *origin, char *err,
                       size_t err_len)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model))
        LOAD_FAIL("no \"model\" object; is this a Hugging Face tokenizer.json?");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (type && !(cJSON_IsString(type) && strcmp(type->valuestring, "BPE") == 0))
        LOAD_FAIL("model.type is %s; only \"BPE\" is supported",
                  cJSON_IsString(type) ? type->valuestring : "not a string");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (!json_is_null_or_missing(dropout) &&
        !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0.0))
        LOAD_FAIL("model.dropout is set; BPE dropout is random and not supported for inference");
    static const char *const empty_strings[] = {"continuing_subword_prefix",
                                                "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(model, empty_strings[i]);
        if (!json_is_null_or_missing(s) && !(cJSON_IsString(s) && s->valuestring[0] == 0))
            LOAD_FAIL("model.%s is set; byte-level BPE with affixes is not supported",
                      empty_strings[i]);
    }
    const cJSON *bf = cJSON_GetObjectItemCaseSensitive(model, "byte_fallback");
    if (cJSON_IsTrue(bf))
        LOAD_FAIL("model.byte_fallback is true; only byte-level BPE is supported");
    t->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    t->fuse_unk = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "fuse_unk"));

    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!load_vocab(t, model, added, origin, err, err_len))
        return false;
    if (!load_merges(t, model, origin, err, err_len))
        return false;

    t->unk_id = -1;
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (cJSON_IsString(unk)) {
        uint32_t id = vocab_find(t, unk->valuestring, strlen(unk->valuestring));
        if (id == UINT32_MAX)
            LOAD_FAIL("model.unk_token \"%.60s\" is not in model.vocab", unk->valuestring);
        t->unk_id = (int32_t)id;
    }

    /* GPT-2 bytes_to_unicode: printable bytes stand for themselves, the other 68 bytes take
     * the code points from U+0100 upwards in byte order. */
    uint32_t next = 256;
    for (int byte = 0; byte < 256; byte++) {
        bool printable = (byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) ||
                         (byte >= 174 && byte <= 255);
        uint32_t cp = printable ? (uint32_t)byte : next++;
        char u[4];
        size_t n = utf8_put(cp, u);
        uint32_t id = vocab_find(t, u, n);
        t->byte_id[byte] = id == UINT32_MAX ? -1 : (int32_t)id;
    }
    return true;
}

static int cmp_added_len_desc(const void *x, const void *y)
{
    const added_token *a = *(const added_token *const *)x, *b = *(const added_token *const *)y;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static bool group_build(added_group *g, const added_token *all, size_t n, bool normalized)
{
    g->tokens = calloc(n ? n : 1, sizeof *g->tokens);
    if (!g->tokens)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (all[i].normalized != normalized)
            continue;
        g->tokens[g->n++] = &all[i];
        g->first_byte[(unsigned char)all[i].content[0]] = true;
    }
    qsort(g->tokens, g->n, sizeof *g->tokens, cmp_added_len_desc);
    return true;
}

/* Normalise `in` with the tokenizer's normaliser steps into a malloc'd string (for the
 * contents of normalized added tokens, matched against normalised text). */
static char *normalize_copy(const eb_tokenizer *t, const char *in)
{
    char *cur = strdup(in);
    for (size_t k = 0; cur && k < t->n_norm; k++) {
        utf8proc_uint8_t *out = NULL;
        utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)cur, 0, &out,
                                          (utf8proc_option_t)(t->norm_opts[k] |
                                                              UTF8PROC_NULLTERM));
        free(cur);
        cur = r < 0 ? NULL : (char *)out;
    }
    return cur;
}

static bool load_added(eb_tokenizer *t, const cJSON *root, const char *origin, char *err,
                       size_t err_len)
{
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    t->eos_id = -1;
    if (json_is_null_or_missing(added))
        goto groups;
    if (!cJSON_IsArray(added))
        LOAD_FAIL("added_tokens is not an array");
    size_t n = (size_t)cJSON_GetArraySize(added);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added)
        LOAD_FAIL("out of memory");
    size_t k = 0;
    const cJSON *a;
    cJSON_ArrayForEach(a, added)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= MAX_ID ||
            !cJSON_IsString(content))
            LOAD_FAIL("added_tokens[%zu] needs a numeric \"id\" (0..%d) and a string "
                      "\"content\"", k, MAX_ID - 1);
        if (content->valuestring[0] == 0)
            continue; /* tokenizers ignores empty added tokens */
        bool dup = false;
        for (size_t j = 0; j < k; j++)
            dup |= strcmp(t->added[j].content, content->valuestring) == 0;
        if (dup)
            continue;
        added_token *x = &t->added[k];
        x->id = id->valueint;
        x->special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "special"));
        x->lstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "lstrip"));
        x->rstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "rstrip"));
        x->single_word = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "single_word"));
        const cJSON *norm = cJSON_GetObjectItemCaseSensitive(a, "normalized");
        /* tokenizers' default: special tokens are matched raw, others after normalisation. */
        x->normalized = norm ? cJSON_IsTrue(norm) : !x->special;
        x->content = x->normalized && t->n_norm ? normalize_copy(t, content->valuestring)
                                                : strdup(content->valuestring);
        if (!x->content)
            LOAD_FAIL("out of memory");
        x->len = strlen(x->content);
        k++;
        if ((size_t)x->id < t->n_ids && t->tok_off[x->id] == UINT32_MAX &&
            !blob_put(t, x->id, content->valuestring))
            LOAD_FAIL("out of memory");
        if (strcmp(content->valuestring, EOS_CONTENT) == 0)
            t->eos_id = x->id;
    }
    t->n_added = k;
groups:
    if (!group_build(&t->raw_group, t->added, t->n_added, false) ||
        !group_build(&t->norm_group, t->added, t->n_added, true))
        LOAD_FAIL("out of memory");
    return true;
}

static bool load_normalizer_one(eb_tokenizer *t, const cJSON *n, const char *origin, char *err,
                                size_t err_len)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(n, "type");
    if (!cJSON_IsString(type))
        LOAD_FAIL("normalizer without a \"type\"");
    const char *ty = type->valuestring;
    if (strcmp(ty, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list))
            LOAD_FAIL("normalizer Sequence without a \"normalizers\" array");
        const cJSON *e;
        cJSON_ArrayForEach(e, list)
        {
            if (!load_normalizer_one(t, e, origin, err, err_len))
                return false;
        }
        return true;
    }
    uint32_t opts;
    if (strcmp(ty, "NFC") == 0)
        opts = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    else if (strcmp(ty, "NFD") == 0)
        opts = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
    else if (strcmp(ty, "NFKC") == 0)
        opts = UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    else if (strcmp(ty, "NFKD") == 0)
        opts = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    else
        LOAD_FAIL("normalizer type \"%.40s\" is not supported (NFC, NFD, NFKC, NFKD and "
                  "Sequence of them are)", ty);
    if (t->n_norm == MAX_NORM_STEPS)
        LOAD_FAIL("more than %d normalizer steps", MAX_NORM_STEPS);
    t->norm_is_nfc[t->n_norm] = strcmp(ty, "NFC") == 0;
    t->norm_opts[t->n_norm++] = opts;
    return true;
}

static bool add_split_regex(eb_tokenizer *t, const char *pat, size_t len, bool literal,
                            const char *origin, char *err, size_t err_len)
{
    if (t->n_split == MAX_SPLIT_STEPS)
        LOAD_FAIL("more than %d pre-tokenizer splits", MAX_SPLIT_STEPS);
    char rerr[300] = "";
    char *pcre_pat = literal ? strndup(pat, len) : onig_to_pcre2(pat, len, rerr, sizeof rerr);
    if (!pcre_pat)
        LOAD_FAIL("%s", rerr[0] ? rerr : "out of memory");
    int code = 0;
    PCRE2_SIZE off = 0;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pcre_pat, strlen(pcre_pat), opts, &code, &off,
                                   NULL);
    free(pcre_pat);
    if (!re) {
        PCRE2_UCHAR msg[200];
        pcre2_get_error_message(code, msg, sizeof msg);
        LOAD_FAIL("pre-tokenizer regex does not compile with PCRE2 at offset %zu: %s",
                  (size_t)off, (const char *)msg);
    }
    t->split_re[t->n_split] = re;
    t->split_jit[t->n_split] = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    t->n_split++;
    return true;
}

/* GPT-2's pattern, used by a ByteLevel pre-tokenizer with use_regex true (tokenizers'
 * byte_level.rs). */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static bool load_pretok_one(eb_tokenizer *t, const cJSON *p, bool *byte_level, const char *origin,
                            char *err, size_t err_len)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(p, "type");
    if (!cJSON_IsString(type))
        LOAD_FAIL("pre_tokenizer without a \"type\"");
    const char *ty = type->valuestring;
    if (*byte_level)
        LOAD_FAIL("pre_tokenizer step \"%.40s\" after ByteLevel is not supported", ty);
    if (strcmp(ty, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(list))
            LOAD_FAIL("pre_tokenizer Sequence without a \"pretokenizers\" array");
        const cJSON *e;
        cJSON_ArrayForEach(e, list)
        {
            if (!load_pretok_one(t, e, byte_level, origin, err, err_len))
                return false;
        }
        return true;
    }
    if (strcmp(ty, "Split") == 0) {
        const cJSON *behavior = cJSON_GetObjectItemCaseSensitive(p, "behavior");
        const cJSON *invert = cJSON_GetObjectItemCaseSensitive(p, "invert");
        const cJSON *pattern = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        if (!cJSON_IsString(behavior) || strcmp(behavior->valuestring, "Isolated") != 0)
            LOAD_FAIL("pre_tokenizer Split behavior %s is not supported (only \"Isolated\")",
                      cJSON_IsString(behavior) ? behavior->valuestring : "(missing)");
        if (cJSON_IsTrue(invert))
            LOAD_FAIL("pre_tokenizer Split with invert true is not supported");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pattern, "Regex");
        const cJSON *lit = cJSON_GetObjectItemCaseSensitive(pattern, "String");
        if (cJSON_IsString(re))
            return add_split_regex(t, re->valuestring, strlen(re->valuestring), false, origin,
                                   err, err_len);
        if (cJSON_IsString(lit))
            return add_split_regex(t, lit->valuestring, strlen(lit->valuestring), true, origin,
                                   err, err_len);
        LOAD_FAIL("pre_tokenizer Split needs pattern {\"Regex\": ...} or {\"String\": ...}");
    }
    if (strcmp(ty, "ByteLevel") == 0) {
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "add_prefix_space")))
            LOAD_FAIL("pre_tokenizer ByteLevel with add_prefix_space true is not supported");
        *byte_level = true;
        const cJSON *use_regex = cJSON_GetObjectItemCaseSensitive(p, "use_regex");
        /* tokenizers' default for a missing use_regex is true. */
        if (!use_regex || cJSON_IsTrue(use_regex))
            return add_split_regex(t, gpt2_pattern, strlen(gpt2_pattern), false, origin, err,
                                   err_len);
        return true;
    }
    LOAD_FAIL("pre_tokenizer type \"%.40s\" is not supported (Sequence, Split, ByteLevel are)",
              ty);
}

static bool load_pipeline(eb_tokenizer *t, const cJSON *root, const char *origin, char *err,
                          size_t err_len)
{
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (!json_is_null_or_missing(norm) && !load_normalizer_one(t, norm, origin, err, err_len))
        return false;
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    bool byte_level = false;
    if (json_is_null_or_missing(pre))
        LOAD_FAIL("no pre_tokenizer; only byte-level BPE files (with a ByteLevel "
                  "pre-tokenizer) are supported");
    if (!load_pretok_one(t, pre, &byte_level, origin, err, err_len))
        return false;
    if (!byte_level)
        LOAD_FAIL("pre_tokenizer has no ByteLevel step; only byte-level BPE is supported");
    return true;
}

#undef LOAD_FAIL

/* ---- public: lifetime ----------------------------------------------------------------------- */

eb_tokenizer *eb_tokenizer_load_json(const char *json, size_t len, const char *origin, char *err,
                                     size_t err_len)
{
    if (!origin)
        origin = "(memory)";
    pthread_once(&nfc_once, nfc_build);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *where = cJSON_GetErrorPtr();
        size_t off = where && where >= json && where <= json + len ? (size_t)(where - json) : 0;
        eb_set_err(err, err_len,
                   "cannot load tokenizer \"%s\": not valid JSON (near byte %zu); fetch the file "
                   "again (scripts/setup)", origin, off);
        return NULL;
    }
    eb_tokenizer *t = calloc(1, sizeof *t);
    if (!t || !(t->origin = strdup(origin))) {
        eb_set_err(err, err_len, "cannot load tokenizer \"%s\": out of memory", origin);
        free(t);
        cJSON_Delete(root);
        return NULL;
    }
    bool ok = load_pipeline(t, root, origin, err, err_len) &&
              load_model(t, root, origin, err, err_len) &&
              load_added(t, root, origin, err, err_len);
    cJSON_Delete(root);
    if (!ok) {
        eb_tokenizer_destroy(&t);
        return NULL;
    }
    return t;
}

eb_tokenizer *eb_tokenizer_load(const char *path, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        eb_set_err(err, err_len,
                   "cannot open tokenizer \"%s\": %s; run scripts/setup to fetch it "
                   "or point the model at a directory with a tokenizer.json",
                   path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (!grow((void **)&buf, &cap, len + 65536, 1)) {
            fclose(f);
            free(buf);
            eb_set_err(err, err_len, "cannot read tokenizer \"%s\": out of memory", path);
            return NULL;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0)
            break;
    }
    bool read_err = ferror(f);
    fclose(f);
    if (read_err) {
        free(buf);
        eb_set_err(err, err_len, "cannot read tokenizer \"%s\": read error", path);
        return NULL;
    }
    eb_tokenizer *t = eb_tokenizer_load_json(buf, len, path, err, err_len);
    free(buf);
    return t;
}

void eb_tokenizer_destroy(eb_tokenizer **tok)
{
    if (!tok || !*tok)
        return;
    eb_tokenizer *t = *tok;
    for (size_t i = 0; i < t->n_split; i++)
        pcre2_code_free(t->split_re[i]);
    for (size_t i = 0; i < t->n_added; i++)
        free(t->added[i].content);
    free(t->added);
    free(t->raw_group.tokens);
    free(t->norm_group.tokens);
    free(t->merges);
    free(t->vocab_slots);
    free(t->tok_off);
    free(t->blob);
    free(t->origin);
    free(t);
    *tok = NULL;
}

eb_tokenizer_scratch *eb_tokenizer_scratch_new(const eb_tokenizer *tok)
{
    if (!tok)
        return NULL;
    eb_tokenizer_scratch *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->tok = tok;
    s->md = pcre2_match_data_create(4, NULL);
    s->mctx = pcre2_match_context_create(NULL);
    s->jit_stack = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, NULL);
    s->cache = calloc(CACHE_SLOTS, sizeof *s->cache);
    s->arena = malloc(CACHE_ARENA);
    if (!s->md || !s->mctx || !s->jit_stack || !s->cache || !s->arena) {
        eb_tokenizer_scratch_destroy(&s);
        return NULL;
    }
    pcre2_jit_stack_assign(s->mctx, NULL, s->jit_stack);
    s->arena_used = 4; /* offset 0 marks an empty cache slot */
    return s;
}

void eb_tokenizer_scratch_destroy(eb_tokenizer_scratch **scratch)
{
    if (!scratch || !*scratch)
        return;
    eb_tokenizer_scratch *s = *scratch;
    pcre2_match_data_free(s->md);
    pcre2_match_context_free(s->mctx);
    if (s->jit_stack)
        pcre2_jit_stack_free(s->jit_stack);
    free(s->ucs);
    free(s->norm);
    free(s->syms);
    free(s->heap);
    free(s->bytes);
    free(s->query);
    free(s->cache);
    free(s->arena);
    free(s);
    *scratch = NULL;
}

/* ---- encoding: output ----------------------------------------------------------------------- */

static bool emit(enc_ctx *c, int32_t id)
{
    if (c->n >= c->limit) {
        c->overflow = true;
        return false;
    }
    c->ids[c->n++] = id;
    return true;
}

static bool fail(enc_ctx *c, eb_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool fail(enc_ctx *c, eb_status st, const char *fmt, ...)
{
    if (c->status == EB_OK) {
        c->status = st;
        if (c->err && c->err_len) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->err, c->err_len, fmt, ap);
            va_end(ap);
        }
    }
    return false;
}

/* ---- encoding: BPE -------------------------------------------------------------------------- */

static bool heap_less(const bpe_merge *a, const bpe_merge *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(bpe_merge *h, size_t *n, bpe_merge m)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(&m, &h[parent]))
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = m;
}

static bpe_merge heap_pop(bpe_merge *h, size_t *n)
{
    bpe_merge top = h[0];
    bpe_merge last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= *n)
            break;
        size_t m = l + 1 < *n && heap_less(&h[l + 1], &h[l]) ? l + 1 : l;
        if (!heap_less(&h[m], &last))
            break;
        h[i] = h[m];
        i = m;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}

static void push_pair(const eb_tokenizer *t, eb_tokenizer_scratch *s, size_t *hn, int32_t pos)
{
    const bpe_sym *l = &s->syms[pos];
    if (l->next < 0)
        return;
    const merge_slot *m = merge_find(t, l->id, s->syms[l->next].id);
    if (m)
        heap_push(s->heap, hn, (bpe_merge){m->rank, (uint32_t)pos, m->new_id});
}

/* Run BPE on one word's bytes; the ids land in s->syms (alive ones, in order via next).
 * Returns the index of the first symbol, or -1 for no symbols; -2 when out of memory. */
static int32_t bpe_merge_word(const eb_tokenizer *t, eb_tokenizer_scratch *s,
                              const unsigned char *w, size_t n)
{
    if (!grow((void **)&s->syms, &s->syms_cap, n, sizeof *s->syms) ||
        !grow((void **)&s->heap, &s->heap_cap, 2 * n + 2, sizeof *s->heap))
        return -2;
    /* Initial symbols: one per byte, bytes without a vocabulary entry become unk or vanish,
     * as in tokenizers' BPE::merge_word. */
    int32_t count = 0;
    bool prev_unk = false;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[w[i]];
        if (id < 0) {
            if (t->unk_id < 0)
                continue;
            if (t->fuse_unk && prev_unk)
                continue;
            id = t->unk_id;
            prev_unk = true;
        } else {
            prev_unk = false;
        }
        s->syms[count] = (bpe_sym){id, count - 1, count + 1, true};
        count++;
    }
    if (count == 0)
        return -1;
    s->syms[count - 1].next = -1;
    size_t hn = 0;
    for (int32_t i = 0; i + 1 < count; i++)
        push_pair(t, s, &hn, i);
    while (hn > 0) {
        bpe_merge top = heap_pop(s->heap, &hn);
        bpe_sym *l = &s->syms[top.pos];
        if (!l->alive || l->next < 0)
            continue;
        bpe_sym *r = &s->syms[l->next];
        /* Skip entries made stale by an earlier merge (same test as tokenizers' word.rs). */
        const merge_slot *m = merge_find(t, l->id, r->id);
        if (!m || m->new_id != top.new_id)
            continue;
        l->id = top.new_id;
        r->alive = false;
        l->next = r->next;
        if (r->next >= 0)
            s->syms[r->next].prev = (int32_t)top.pos;
        if (l->prev >= 0)
            push_pair(t, s, &hn, l->prev);
        push_pair(t, s, &hn, (int32_t)top.pos);
    }
    return 0;
}

static cache_slot *cache_lookup(eb_tokenizer_scratch *s, const unsigned char *w, size_t n,
                                uint64_t h)
{
    for (size_t i = h & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
        cache_slot *c = &s->cache[i];
        if (c->off == 0)
            return c;
        if (c->hash == h && c->key_len == n &&
            memcmp(s->arena + c->off + c->n_ids * sizeof(int32_t), w, n) == 0)
            return c;
    }
}

static void cache_clear(eb_tokenizer_scratch *s)
{
    memset(s->cache, 0, CACHE_SLOTS * sizeof *s->cache);
    s->cache_used = 0;
    s->arena_used = 4;
}

/* Tokenize one pre-tokenized word and emit its ids. */
static bool bpe_word(enc_ctx *c, const unsigned char *w, size_t n)
{
    const eb_tokenizer *t = c->tok;
    eb_tokenizer_scratch *s = c->s;
    if (n == 0)
        return true;
    uint64_t h = 0;
    cache_slot *slot = NULL;
    if (n <= CACHE_MAX_WORD) {
        h = hash_bytes(w, n);
        slot = cache_lookup(s, w, n, h);
        if (slot->off) {
            const unsigned char *p = s->arena + slot->off;
            for (uint16_t i = 0; i < slot->n_ids; i++) {
                int32_t id;
                memcpy(&id, p + i * sizeof id, sizeof id);
                if (!emit(c, id))
                    return false;
            }
            return true;
        }
    }
    if (t->ignore_merges) {
        /* The whole word as one vocabulary entry wins over merging (tokenizers' ignore_merges). */
        if (!grow((void **)&s->bytes, &s->bytes_cap, 2 * n + 1, 1))
            return fail(c, EB_ERR_NOMEM, "out of memory tokenizing a %zu-byte word", n);
        size_t bl = 0;
        for (size_t i = 0; i < n; i++) {
            int32_t id = t->byte_id[w[i]];
            const char *tok = id >= 0 ? t->blob + t->tok_off[id] : "";
            size_t tl = strlen(tok);
            memcpy(s->bytes + bl, tok, tl);
            bl += tl;
        }
        uint32_t id = vocab_find(t, s->bytes, bl);
        if (id != UINT32_MAX)
            return emit(c, (int32_t)id);
    }
    int32_t first = bpe_merge_word(t, s, w, n);
    if (first == -2)
        return fail(c, EB_ERR_NOMEM, "out of memory tokenizing a %zu-byte word", n);
    if (first == -1)
        return true;
    /* Store in the cache first (when it fits), then emit. */
    if (slot) {
        size_t n_ids = 0;
        for (int32_t i = first; i >= 0; i = s->syms[i].next)
            n_ids++;
        size_t need = (n_ids * sizeof(int32_t) + n + 3) & ~(size_t)3;
        if (s->cache_used + 1 > CACHE_SLOTS / 2 || s->arena_used + need > CACHE_ARENA) {
            cache_clear(s);
            slot = cache_lookup(s, w, n, h);
        }
        unsigned char *p = s->arena + s->arena_used;
        size_t k = 0;
        for (int32_t i = first; i >= 0; i = s->syms[i].next, k++)
            memcpy(p + k * sizeof(int32_t), &s->syms[i].id, sizeof(int32_t));
        memcpy(p + n_ids * sizeof(int32_t), w, n);
        *slot = (cache_slot){h, (uint32_t)s->arena_used, (uint16_t)n, (uint16_t)n_ids};
        s->arena_used += need;
        s->cache_used++;
    }
    for (int32_t i = first; i >= 0; i = s->syms[i].next)
        if (!emit(c, s->syms[i].id))
            return false;
    return true;
}

/* ---- encoding: pre-tokenization ------------------------------------------------------------- */

/* Split `p` with split regex `step` (matches and gaps alike become pieces, "Isolated"), handing
 * each piece to the next step; after the last step each piece is a BPE word. */
static bool pretokenize(enc_ctx *c, const unsigned char *p, size_t n, size_t step)
{
    const eb_tokenizer *t = c->tok;
    if (step == t->n_split)
        return bpe_word(c, p, n);
    if (n == 0)
        return true;
    pcre2_code *re = t->split_re[step];
    size_t pos = 0, gap = 0;
    while (pos < n) {
        int rc = t->split_jit[step]
                     ? pcre2_jit_match(re, p, n, pos, 0, c->s->md, c->s->mctx)
                     : pcre2_match(re, p, n, pos, PCRE2_NO_UTF_CHECK, c->s->md, c->s->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[200];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return fail(c, EB_ERR_INTERNAL,
                        "pre-tokenizer regex failed at byte %zu of a %zu-byte piece: %s", pos, n,
                        (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->s->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) {
            /* An empty match splits nothing; step over one character. */
            size_t k;
            utf8_get(p + pos, &k);
            pos += k;
            continue;
        }
        if (ms > gap && !pretokenize(c, p + gap, ms - gap, step + 1))
            return false;
        if (!pretokenize(c, p + ms, me - ms, step + 1))
            return false;
        gap = pos = me;
    }
    if (gap < n)
        return pretokenize(c, p + gap, n - gap, step + 1);
    return true;
}

/* ---- encoding: added tokens and normalisation ----------------------------------------------- */

static bool is_ws(uint32_t cp)
{
    const utf8proc_property_t *pr = utf8proc_get_property((utf8proc_int32_t)cp);
    return (cp >= 9 && cp <= 13) || cp == 0x85 || pr->category == UTF8PROC_CATEGORY_ZS ||
           pr->category == UTF8PROC_CATEGORY_ZL || pr->category == UTF8PROC_CATEGORY_ZP;
}

static bool is_word(uint32_t cp)
{
    if (cp == '_')
        return true;
    const utf8proc_property_t *pr = utf8proc_get_property((utf8proc_int32_t)cp);
    switch (pr->category) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

/* The code point ending just before p[at] (at > 0, valid UTF-8). */
static uint32_t cp_before(const unsigned char *p, size_t at, size_t *len)
{
    size_t k = at - 1;
    while (k > 0 && (p[k] & 0xC0) == 0x80)
        k--;
    return utf8_get(p + k, len);
}

static bool process_normalized(enc_ctx *c, const unsigned char *p, size_t n);

typedef bool (*piece_fn)(enc_ctx *c, const unsigned char *p, size_t n);

/* Cut the group's added tokens out of p (leftmost, longest first, honouring single_word, lstrip
 * and rstrip like tokenizers' AddedVocabulary::find_matches); gaps go to `rest`. */
static bool split_added(enc_ctx *c, const added_group *g, const unsigned char *p, size_t n,
                        piece_fn rest)
{
    if (g->n == 0)
        return rest(c, p, n);
    size_t start_offset = 0, i = 0;
    while (i < n) {
        if (!g->first_byte[p[i]]) {
            i++;
            continue;
        }
        const added_token *hit = NULL;
        for (size_t k = 0; k < g->n; k++) {
            const added_token *a = g->tokens[k];
            if (a->len <= n - i && memcmp(p + i, a->content, a->len) == 0) {
                hit = a;
                break;
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        size_t start = i, stop = i + hit->len, cl;
        i = stop; /* the search resumes after the match, kept or not */
        if (hit->single_word) {
            bool word_before = start > 0 && is_word(cp_before(p, start, &cl));
            bool word_after = stop < n && is_word(utf8_get(p + stop, &cl));
            if (word_before || word_after)
                continue;
        }
        if (hit->lstrip) {
            size_t ns = start;
            while (ns > 0 && is_ws(cp_before(p, ns, &cl)))
                ns -= cl;
            start = ns > start_offset ? ns : start_offset;
        }
        if (hit->rstrip) {
            while (stop < n && is_ws(utf8_get(p + stop, &cl)))
                stop += cl;
            i = stop;
        }
        if (start_offset < start && !rest(c, p + start_offset, start - start_offset))
            return false;
        if (!emit(c, hit->id))
            return false;
        start_offset = stop;
    }
    if (start_offset < n)
        return rest(c, p + start_offset, n - start_offset);
    return true;
}

static bool process_pretok(enc_ctx *c, const unsigned char *p, size_t n)
{
    return pretokenize(c, p, n, 0);
}

static bool process_normalized(enc_ctx *c, const unsigned char *p, size_t n)
{
    return split_added(c, &c->tok->norm_group, p, n, process_pretok);
}

/* The primary composite of a + b, or -1. Hangul is arithmetic; the rest asks utf8proc about the
 * pair, minus the composites tokenizers' NFC does not know. */
static int32_t nfc_compose_pair(uint32_t a, uint32_t b)
{
    if (a >= 0x1100 && a <= 0x1112 && b >= 0x1161 && b <= 0x1175)
        return (int32_t)(0xAC00 + ((a - 0x1100) * 21 + (b - 0x1161)) * 28);
    if (a >= 0xAC00 && a <= 0xD7A3 && (a - 0xAC00) % 28 == 0 && b >= 0x11A8 && b <= 0x11C2)
        return (int32_t)(a + (b - 0x11A7));
    if (!nfc_is_sensitive(b)) /* b is no second element of any composition */
        return -1;
    utf8proc_int32_t pair[2] = {(utf8proc_int32_t)a, (utf8proc_int32_t)b};
    if (utf8proc_normalize_utf32(pair, 2, (utf8proc_option_t)(UTF8PROC_STABLE | UTF8PROC_COMPOSE))
        != 1)
        return -1;
    if (in_ranges(nfc_no_compose, N_RANGES(nfc_no_compose), (uint32_t)pair[0]))
        return -1;
    return pair[0];
}

/* NFC of valid UTF-8 (UAX #15: canonical decomposition, canonical ordering, canonical
 * composition), with utf8proc's data patched to match tokenizers (nfc_class, nfc_no_compose).
 * The result goes to s->norm. */
static bool nfc_patched(enc_ctx *c, const unsigned char *in, size_t n, size_t *out_len)
{
    eb_tokenizer_scratch *s = c->s;
    enum { MAX_DECOMP = 32 };
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        size_t k;
        uint32_t cp = utf8_get(in + i, &k);
        i += k;
        if (!grow((void **)&s->ucs, &s->ucs_cap, m + MAX_DECOMP, sizeof *s->ucs))
            return fail(c, EB_ERR_NOMEM, "out of memory normalising %zu bytes", n);
        if (cp < 0xC0 || in_ranges(nfc_no_compose, N_RANGES(nfc_no_compose), cp)) {
            s->ucs[m++] = (int32_t)cp;
            continue;
        }
        int boundclass = 0;
        utf8proc_ssize_t r = utf8proc_decompose_char((utf8proc_int32_t)cp, s->ucs + m, MAX_DECOMP,
                                                     UTF8PROC_DECOMPOSE, &boundclass);
        if (r < 0 || r > MAX_DECOMP)
            return fail(c, EB_ERR_INTERNAL, "cannot decompose U+%04X: %s", cp,
                        r < 0 ? utf8proc_errmsg(r) : "decomposition too long");
        m += (size_t)r;
    }
    /* Canonical ordering: a stable insertion sort of each run of non-starters by class. */
    for (size_t i = 1; i < m; i++) {
        int32_t x = s->ucs[i];
        int cc = nfc_class((uint32_t)x);
        if (cc == 0)
            continue;
        size_t j = i;
        while (j > 0 && nfc_class((uint32_t)s->ucs[j - 1]) > cc) {
            s->ucs[j] = s->ucs[j - 1];
            j--;
        }
        s->ucs[j] = x;
    }
    /* Canonical composition: each character joins the last starter unless blocked by a
     * character in between of class 0 or of a class >= its own. */
    size_t w = 0;
    ptrdiff_t starter = -1;
    for (size_t i = 0; i < m; i++) {
        uint32_t cp = (uint32_t)s->ucs[i];
        int cc = nfc_class(cp);
        if (starter >= 0) {
            bool adjacent = (size_t)starter == w - 1;
            int last_cc = nfc_class((uint32_t)s->ucs[w - 1]);
            if (adjacent || (last_cc != 0 && last_cc < cc)) {
                int32_t comp = nfc_compose_pair((uint32_t)s->ucs[starter], cp);
                if (comp >= 0) {
                    s->ucs[starter] = comp;
                    continue;
                }
            }
        }
        if (cc == 0)
            starter = (ptrdiff_t)w;
        s->ucs[w++] = (int32_t)cp;
    }
    if (!grow((void **)&s->norm, &s->norm_cap, 4 * w + 1, 1))
        return fail(c, EB_ERR_NOMEM, "out of memory normalising %zu bytes", n);
    size_t bl = 0;
    for (size_t i = 0; i < w; i++)
        bl += utf8_put((uint32_t)s->ucs[i], s->norm + bl);
    *out_len = bl;
    return true;
}

/* Normalise one piece that is not an added token, then continue with it. */
static bool process_raw_piece(enc_ctx *c, const unsigned char *p, size_t n)
{
    const eb_tokenizer *t = c->tok;
    eb_tokenizer_scratch *s = c->s;
    const unsigned char *cur = p;
    size_t cur_len = n;
    for (size_t k = 0; k < t->n_norm; k++) {
        if (t->norm_is_nfc[k]) {
            if (nfc_quick_yes(cur, cur_len))
                continue;
            size_t out_len = 0;
            if (!nfc_patched(c, cur, cur_len, &out_len))
                return false;
            cur = (const unsigned char *)s->norm;
            cur_len = out_len;
            continue;
        }
        utf8proc_option_t opts = (utf8proc_option_t)t->norm_opts[k];
        utf8proc_ssize_t need = utf8proc_decompose(cur, (utf8proc_ssize_t)cur_len, s->ucs,
                                                   (utf8proc_ssize_t)s->ucs_cap, opts);
        if (need >= 0 && (size_t)need > s->ucs_cap) {
            /* +1: utf8proc_reencode writes a NUL after the UTF-8 it leaves in the buffer. */
            if (!grow((void **)&s->ucs, &s->ucs_cap, (size_t)need + 1, sizeof *s->ucs))
                return fail(c, EB_ERR_NOMEM, "out of memory normalising %zu bytes", cur_len);
            need = utf8proc_decompose(cur, (utf8proc_ssize_t)cur_len, s->ucs,
                                      (utf8proc_ssize_t)s->ucs_cap, opts);
        }
        if (need < 0)
            return fail(c, EB_ERR_INTERNAL, "normalisation failed: %s",
                        utf8proc_errmsg(need));
        utf8proc_ssize_t bytes = utf8proc_reencode(s->ucs, need, opts);
        if (bytes < 0)
            return fail(c, EB_ERR_INTERNAL, "normalisation failed: %s",
                        utf8proc_errmsg(bytes));
        if (!grow((void **)&s->norm, &s->norm_cap, (size_t)bytes + 1, 1))
            return fail(c, EB_ERR_NOMEM, "out of memory normalising %zu bytes", cur_len);
        memcpy(s->norm, s->ucs, (size_t)bytes);
        cur = (const unsigned char *)s->norm;
        cur_len = (size_t)bytes;
    }
    return process_normalized(c, cur, cur_len);
}

/* ---- public: encoding ----------------------------------------------------------------------- */

size_t eb_tokenizer_max_ids(size_t len)
{
    return 3 * len + 1;
}

eb_status eb_tokenizer_encode(const eb_tokenizer *tok, eb_tokenizer_scratch *scratch,
                              const char *text, size_t len, const eb_tokenizer_options *opts,
                              int32_t *ids, size_t ids_cap, size_t *n_ids, char *err,
                              size_t err_len)
{
    static const eb_tokenizer_options no_opts = {0};
    if (n_ids)
        *n_ids = 0;
    if (!opts)
        opts = &no_opts;
    if (!tok || !n_ids || (!ids && ids_cap > 0) || (!text && len > 0)) {
        eb_set_err(err, err_len, "tokenize: NULL argument (tokenizer, ids, n_ids or text)");
        return EB_ERR_INVALID;
    }
    if (scratch && scratch->tok != tok) {
        eb_set_err(err, err_len, "tokenize: the scratch was made for another tokenizer");
        return EB_ERR_INVALID;
    }
    if (opts->overflow != EB_TOKENIZER_OVERFLOW_ERROR &&
        opts->overflow != EB_TOKENIZER_OVERFLOW_TRUNCATE) {
        eb_set_err(err, err_len, "tokenize: unknown overflow policy %d", (int)opts->overflow);
        return EB_ERR_INVALID;
    }
    if (opts->append_eos && tok->eos_id < 0) {
        eb_set_err(err, err_len, "tokenize: append_eos asked, but tokenizer \"%s\" has no added "
                   "token \"%s\"", tok->origin, EOS_CONTENT);
        return EB_ERR_UNSUPPORTED;
    }
    size_t bad_off;
    const char *why;
    if (len > 0 && !utf8_valid((const unsigned char *)text, len, &bad_off, &why)) {
        eb_set_err(err, err_len, "text is not valid UTF-8: byte 0x%02X at offset %zu: %s; send "
                   "UTF-8 text", (unsigned)(unsigned char)text[bad_off], bad_off, why);
        return EB_ERR_INVALID;
    }
    size_t reserve = opts->append_eos ? 1 : 0;
    /* limit: ids the text itself may produce before overflow. */
    size_t limit = SIZE_MAX;
    bool limit_is_max_tokens = false;
    if (opts->max_tokens > 0) {
        limit = opts->max_tokens - (opts->max_tokens >= reserve ? reserve : 0);
        limit_is_max_tokens = true;
    }
    if (ids_cap < reserve || ids_cap - reserve < limit) {
        limit = ids_cap >= reserve ? ids_cap - reserve : 0;
        limit_is_max_tokens = false;
    }
    if (ids_cap < reserve) {
        eb_set_err(err, err_len, "tokenize: ids buffer holds %zu ids, the eos alone needs 1",
                   ids_cap);
        return EB_ERR_TOO_LARGE;
    }
    eb_tokenizer_scratch *own = NULL;
    if (!scratch) {
        own = scratch = eb_tokenizer_scratch_new(tok);
        if (!own) {
            eb_set_err(err, err_len, "tokenize: out of memory for scratch");
            return EB_ERR_NOMEM;
        }
    }
    enc_ctx c = {.tok = tok, .s = scratch, .ids = ids, .limit = limit, .err = err,
                 .err_len = err_len};
    split_added(&c, &tok->raw_group, (const unsigned char *)text, len, process_raw_piece);
    eb_tokenizer_scratch_destroy(&own);
    if (c.status != EB_OK)
        return c.status;
    if (c.overflow) {
        if (!limit_is_max_tokens) {
            eb_set_err(err, err_len, "tokenize: the ids buffer (%zu ids) is too small for this "
                       "%zu-byte text; size it with eb_tokenizer_max_ids() or set max_tokens",
                       ids_cap, len);
            return EB_ERR_TOO_LARGE;
        }
        if (opts->overflow == EB_TOKENIZER_OVERFLOW_ERROR) {
            eb_set_err(err, err_len, "text too long: more than %zu tokens (max_tokens %zu%s); "
                       "shorten it or ask for truncation", limit + reserve, opts->max_tokens,
                       reserve ? ", eos included" : "");
            return EB_ERR_TOO_LARGE;
        }
    }
    if (opts->append_eos)
        c.ids[c.n++] = tok->eos_id;
    *n_ids = c.n;
    return EB_OK;
}

size_t eb_tokenizer_format_query(char *out, size_t out_cap, const char *task, size_t task_len,
                                 const char *text, size_t text_len)
{
    static const char pre[] = "Instruct: ", mid[] = "\nQuery:";
    size_t total = (sizeof pre - 1) + task_len + (sizeof mid - 1) + text_len;
    if (out && out_cap > total) {
        char *p = out;
        memcpy(p, pre, sizeof pre - 1);
        p += sizeof pre - 1;
        if (task_len)
            memcpy(p, task, task_len);
        p += task_len;
        memcpy(p, mid, sizeof mid - 1);
        p += sizeof mid - 1;
        if (text_len)
            memcpy(p, text, text_len);
        p[text_len] = 0;
    }
    return total;
}

eb_status eb_tokenizer_encode_query(const eb_tokenizer *tok, eb_tokenizer_scratch *scratch,
                                    const char *task, size_t task_len, const char *text,
                                    size_t text_len, const eb_tokenizer_options *opts,
                                    int32_t *ids, size_t ids_cap, size_t *n_ids, char *err,
                                    size_t err_len)
{
    if ((!task && task_len) || (!text && text_len)) {
        if (n_ids)
            *n_ids = 0;
        eb_set_err(err, err_len, "tokenize query: NULL task or text");
        return EB_ERR_INVALID;
    }
    size_t need = eb_tokenizer_format_query(NULL, 0, task, task_len, text, text_len) + 1;
    char *buf, *own = NULL;
    if (scratch) {
        if (!grow((void **)&scratch->query, &scratch->query_cap, need, 1)) {
            eb_set_err(err, err_len, "tokenize query: out of memory");
            return EB_ERR_NOMEM;
        }
        buf = scratch->query;
    } else {
        buf = own = malloc(need);
        if (!own) {
            eb_set_err(err, err_len, "tokenize query: out of memory");
            return EB_ERR_NOMEM;
        }
    }
    eb_tokenizer_format_query(buf, need, task, task_len, text, text_len);
    eb_status st = eb_tokenizer_encode(tok, scratch, buf, need - 1, opts, ids, ids_cap, n_ids,
                                       err, err_len);
    free(own);
    return st;
}

int32_t eb_tokenizer_eos_id(const eb_tokenizer *tok)
{
    return tok ? tok->eos_id : -1;
}

size_t eb_tokenizer_vocab_size(const eb_tokenizer *tok)
{
    return tok ? tok->n_ids : 0;
}

int32_t eb_tokenizer_token_id(const eb_tokenizer *tok, const char *token)
{
    if (!tok || !token)
        return -1;
    for (size_t i = 0; i < tok->n_added; i++)
        if (strcmp(tok->added[i].content, token) == 0)
            return tok->added[i].id;
    uint32_t id = vocab_find(tok, token, strlen(token));
    return id == UINT32_MAX ? -1 : (int32_t)id;
}

const char *eb_tokenizer_id_token(const eb_tokenizer *tok, int32_t id)
{
    if (!tok || id < 0 || (size_t)id >= tok->n_ids || tok->tok_off[id] == UINT32_MAX)
        return NULL;
    return tok->blob + tok->tok_off[id];
}
