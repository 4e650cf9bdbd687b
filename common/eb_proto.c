/* eb_proto — encode and decode the msgpack bodies of the embroker wire protocol.
 *
 * Every byte a peer sends is untrusted, so decoding never hands msgpack to a general-purpose
 * unpacker: msgpack-c's unpacker allocates count * sizeof(msgpack_object) for an array header
 * before reading its elements, so a five-byte body (0xdd ff ff ff ff) asks for 96 GiB. Instead a
 * small pull reader walks the body in place, bounds-checking every length against the bytes
 * that remain, and each message has a schema decoder that reads the fields it knows, checks
 * type, range and limits at once, skips unknown keys, and copies what it keeps into a
 * per-message arena (so the decoded struct never points into the receive buffer). Errors carry
 * the field's path ("request.inputs[3].len …"), kept as a stack of steps and rendered as text
 * only when decoding fails. Encoding writes msgpack straight into one buffer, byte for byte what
 * msgpack-c's packer would write. Every request is encoded and decoded several times across the
 * processes, so the common path avoids per-field strlen, copies and allocations.
 * docs/protocol.md is the normative description; tests/unit/test_proto.c checks that its hex
 * examples decode with this code.
 */
#include "eb_proto.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ------------------------------------------------------------------------------- */

/* A decoded message owns one arena. Its first block shares one malloc with the arena header and
 * is small enough (ARENA_FIRST_BYTES) for glibc's per-thread cache, so decoding a typical
 * message costs one cheap malloc and one free; bigger messages chain more blocks. */
typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
} arena_block;

struct eb_proto_arena {
    arena_block *head; /* newest block first; the last one lives inside this allocation */
};

enum {
    ARENA_FIRST_BYTES = 1024, /* header + first block: at most glibc's tcache limit (1032) */
    ARENA_HEADER_BYTES = (sizeof(struct eb_proto_arena) + _Alignof(max_align_t) - 1) /
                         _Alignof(max_align_t) * _Alignof(max_align_t),
};

static arena_block *arena_first_block(struct eb_proto_arena *a)
{
    return (arena_block *)((unsigned char *)a + ARENA_HEADER_BYTES);
}

/* NULL when out of memory. */
static struct eb_proto_arena *arena_new(void)
{
    struct eb_proto_arena *a = malloc(ARENA_FIRST_BYTES);
    if (!a)
        return NULL;
    arena_block *b = arena_first_block(a);
    b->next = NULL;
    b->used = 0;
    b->cap = ARENA_FIRST_BYTES - ARENA_HEADER_BYTES - sizeof *b;
    a->head = b;
    return a;
}

/* Uninitialised memory (every caller overwrites it or uses arena_zalloc); NULL when out of
 * memory. */
static void *arena_alloc(struct eb_proto_arena *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if (size == 0)
        size = 16;
    arena_block *b = a->head;
    if (b->cap - b->used < size) {
        size_t cap = size > 4096 ? size : 4096;
        b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = (unsigned char *)b->data + b->used;
    b->used += size;
    return p;
}

static void *arena_zalloc(struct eb_proto_arena *a, size_t size)
{
    void *p = arena_alloc(a, size);
    if (p)
        memset(p, 0, size);
    return p;
}

static void arena_free(struct eb_proto_arena *a)
{
    if (!a)
        return;
    arena_block *first = arena_first_block(a);
    arena_block *b = a->head;
    while (b != first) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(a);
}

/* ---- small byte helpers ------------------------------------------------------------------ */

/* Keys and most strings are a few bytes long, where a call to memcmp/memcpy costs more than
 * the work: these read at most n bytes of each side, as overlapping 8- or 4-byte words. */
static inline uint64_t load64(const void *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint32_t load32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline bool bytes_equal(const void *a_, const void *b_, size_t n)
{
    const uint8_t *a = a_, *b = b_;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8)
            if (load64(a + i) != load64(b + i))
                return false;
        return load64(a + n - 8) == load64(b + n - 8);
    }
    if (n >= 4)
        return load32(a) == load32(b) && load32(a + n - 4) == load32(b + n - 4);
    return n == 0 || (a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1]);
}

static inline void bytes_copy(void *dst_, const void *src_, size_t n)
{
    uint8_t *dst = dst_;
    const uint8_t *src = src_;
    if (n > 16) {
        memcpy(dst, src, n);
    } else if (n >= 8) {
        uint64_t head = load64(src), tail = load64(src + n - 8);
        memcpy(dst, &head, 8);
        memcpy(dst + n - 8, &tail, 8);
    } else if (n >= 4) {
        uint32_t head = load32(src), tail = load32(src + n - 4);
        memcpy(dst, &head, 4);
        memcpy(dst + n - 4, &tail, 4);
    } else if (n) {
        uint8_t first = src[0], middle = src[n / 2], last = src[n - 1];
        dst[0] = first;
        dst[n / 2] = middle;
        dst[n - 1] = last;
    }
}

/* True when the n bytes are all in 0x01..0x7f (ASCII without NUL). */
static bool ascii_no_nul(const uint8_t *p, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x = load64(p + i);
        if ((x | ((x - ones) & ~x)) & highs) /* a byte >= 0x80, or a zero byte */
            return false;
    }
    for (; i < n; i++)
        if (p[i] - 1u >= 0x7fu)
            return false;
    return true;
}

/* ---- tables ------------------------------------------------------------------------------ */

/* A map key and its length: the decoder compares lengths before bytes, the encoder writes
 * the length without strlen. */
typedef struct map_key {
    const char *name;
    uint8_t len;
} map_key;

#define KEY(s) {"" s, sizeof(s) - 1}

/* The key equals the len bytes at s. */
static bool key_is(const map_key *key, const uint8_t *s, size_t len)
{
    return key->len == len && bytes_equal(key->name, s, len);
}

static const map_key op_names[] = {{NULL, 0},      KEY("embed_image"), KEY("embed_text"),
                                    KEY("scan"),    KEY("health"),      KEY("delete"),
                                    KEY("store")};
static const map_key kind_names[] = {{NULL, 0}, KEY("image"), KEY("raw_rgb8"), KEY("text")};
static const map_key format_names[] = {KEY("auto"), KEY("jpeg"), KEY("png"), KEY("webp")};
static const map_key priority_names[] = {KEY("interactive"), KEY("bulk")};
#define STAGE_NAMES(X)                                                                             \
    X("hash") X("cache") X("queue") X("copy") X("decode") X("preprocess") X("infer") X("search")  \
    X("store_enqueue") X("total")
#define STAGE_KEY(s) KEY(s),
static const map_key stage_keys[EB_STAGE_COUNT] = {STAGE_NAMES(STAGE_KEY)};

enum { DIR_TO_BROKER = 1, DIR_FROM_BROKER = 2, DIR_BOTH = 3 };

typedef struct kind_info {
    eb_proto_channel channel;
    uint8_t command;
    int dir;
    const char *name; /* for logs */
    const char *path; /* prefix of error paths */
} kind_info;

static const kind_info kinds[EB_MSG_KIND_COUNT] = {
    [EB_MSG_C_REGISTER] = {EB_PROTO_CHANNEL_CLIENT, EB_PROTO_C_REGISTER, DIR_TO_BROKER,
                           "REGISTER", "register"},
    [EB_MSG_C_CHALLENGE] = {EB_PROTO_CHANNEL_CLIENT, EB_PROTO_C_CHALLENGE, DIR_FROM_BROKER,
                            "CHALLENGE", "challenge"},
    [EB_MSG_C_PROVE] = {EB_PROTO_CHANNEL_CLIENT, EB_PROTO_C_PROVE, DIR_TO_BROKER, "PROVE",
                        "prove"},
    [EB_MSG_C_REGISTERED] = {EB_PROTO_CHANNEL_CLIENT, EB_PROTO_C_REGISTERED, DIR_FROM_BROKER,
                             "REGISTERED", "registered"},
    [EB_MSG_C_REQUEST] = {EB_PROTO_CHANNEL_CLIENT, EB_PROTO_C_REQUEST, DIR_TO_BROKER, "REQUEST",
                          "request"},
    [EB_MSG_C_REPLY] = {EB_PROTO_CHANNEL_CLIENT, EB_PROTO_C_REPLY, DIR_FROM_BROKER, "REPLY",
                        "reply"},
    [EB_MSG_C_HEARTBEAT] = {EB_PROTO_CHANNEL_CLIENT, EB_PROTO_C_HEARTBEAT, DIR_BOTH, "HEARTBEAT",
                            "heartbeat"},
    [EB_MSG_C_CANCEL] = {EB_PROTO_CHANNEL_CLIENT, EB_PROTO_C_CANCEL, DIR_TO_BROKER, "CANCEL",
                         "cancel"},
    [EB_MSG_C_DISCONNECT] = {EB_PROTO_CHANNEL_CLIENT, EB_PROTO_C_DISCONNECT, DIR_BOTH,
                             "DISCONNECT", "disconnect"},
    [EB_MSG_W_READY] = {EB_PROTO_CHANNEL_WORKER, EB_PROTO_W_READY, DIR_TO_BROKER, "READY",
                        "ready"},
    [EB_MSG_W_REQUEST] = {EB_PROTO_CHANNEL_WORKER, EB_PROTO_W_REQUEST, DIR_FROM_BROKER,
                          "W_REQUEST", "batch"},
    [EB_MSG_W_REPLY] = {EB_PROTO_CHANNEL_WORKER, EB_PROTO_W_REPLY, DIR_TO_BROKER, "W_REPLY",
                        "batch_reply"},
    [EB_MSG_W_HEARTBEAT] = {EB_PROTO_CHANNEL_WORKER, EB_PROTO_W_HEARTBEAT, DIR_BOTH,
                            "W_HEARTBEAT", "heartbeat"},
    [EB_MSG_W_DISCONNECT] = {EB_PROTO_CHANNEL_WORKER, EB_PROTO_W_DISCONNECT, DIR_BOTH,
                             "W_DISCONNECT", "disconnect"},
    [EB_MSG_W_CREDIT] = {EB_PROTO_CHANNEL_WORKER, EB_PROTO_W_CREDIT, DIR_TO_BROKER, "CREDIT",
                         "credit"},
    [EB_MSG_W_RELEASE_SEGMENT] = {EB_PROTO_CHANNEL_WORKER, EB_PROTO_W_RELEASE_SEGMENT,
                                  DIR_FROM_BROKER, "RELEASE_SEGMENT", "release"},
};

/* ---- msgpack pull reader ----------------------------------------------------------------- */

typedef enum mp_type {
    MP_NIL,
    MP_BOOL,
    MP_UINT, /* any integer >= 0, whatever its encoding */
    MP_INT,  /* any integer < 0 */
    MP_FLOAT,
    MP_STR,
    MP_BIN,
    MP_ARRAY,
    MP_MAP,
    MP_EXT,
} mp_type;

static const char *const mp_type_names[] = {"nil", "bool", "unsigned integer", "negative integer",
                                            "float", "string", "bin", "array", "map", "ext"};

typedef struct mp_val {
    mp_type type;
    bool b;
    uint64_t u;
    int64_t i;
    double f;
    const uint8_t *data; /* str/bin/ext payload */
    uint32_t len;        /* str/bin/ext bytes; array/map element count */
} mp_val;

/* One step of an error path: a map key, or an array index when key is NULL. */
typedef struct path_step {
    const char *key;
    uint32_t index;
} path_step;

enum {
    PATH_MAX_STEPS = 8, /* schemas nest at most 5 deep ("reply.results[0].error.message") */
    PATH_MAX_CHARS = 223, /* rendered paths are cut here */
};

typedef struct dec {
    const uint8_t *start, *p, *end;
    struct eb_proto_arena *arena;
    const eb_proto_limits *lim;
    char *err;
    size_t err_len;
    /* The path of the field being read. It is needed only when decoding fails, so pushing and
     * popping a step is O(1) and fail() renders the text. */
    path_step path[PATH_MAX_STEPS];
    unsigned path_depth;
    const size_t *frame_sizes;
    size_t n_frames;
    uint8_t *frame_used; /* n_frames flags: referenced already */
    bool from_broker;
    uint64_t option_keys_seen; /* request.options keys present */
} dec;

static eb_status fail(dec *d, eb_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void path_render_append(char *out, size_t *len, const char *text, size_t n)
{
    size_t room = PATH_MAX_CHARS - *len;
    if (n > room)
        n = room;
    memcpy(out + *len, text, n);
    *len += n;
}

/* The dotted and bracketed text of the path ("request.inputs[3].shm.len"), cut at
 * PATH_MAX_CHARS. Returns its length. */
static size_t path_render(const dec *d, char out[PATH_MAX_CHARS + 1])
{
    size_t len = 0;
    unsigned depth = d->path_depth < PATH_MAX_STEPS ? d->path_depth : PATH_MAX_STEPS;
    for (unsigned s = 0; s < depth; s++) {
        const path_step *step = &d->path[s];
        if (step->key) {
            if (len)
                path_render_append(out, &len, ".", 1);
            path_render_append(out, &len, step->key, strlen(step->key));
        } else {
            char digits[16];
            int n = snprintf(digits, sizeof digits, "[%u]", step->index);
            path_render_append(out, &len, digits, (size_t)n);
        }
    }
    out[len] = '\0';
    return len;
}

static eb_status fail(dec *d, eb_status status, const char *fmt, ...)
{
    if (d->err && d->err_len) {
        char path[PATH_MAX_CHARS + 1];
        size_t path_len = path_render(d, path);
        int n = snprintf(d->err, d->err_len, "%s%s", path, path_len ? " " : "");
        if (n < 0)
            n = 0;
        if ((size_t)n < d->err_len) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(d->err + n, d->err_len - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return status;
}

/* Steps beyond PATH_MAX_STEPS are counted but not kept (no schema nests that deep). */
static void path_push_key(dec *d, const char *key)
{
    if (d->path_depth < PATH_MAX_STEPS)
        d->path[d->path_depth] = (path_step){key, 0};
    d->path_depth++;
}

static void path_push_index(dec *d, uint32_t index)
{
    if (d->path_depth < PATH_MAX_STEPS)
        d->path[d->path_depth] = (path_step){NULL, index};
    d->path_depth++;
}

static void path_pop(dec *d) { d->path_depth--; }

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        eb_status try_status_ = (expr);                                                            \
        if (try_status_ != EB_OK)                                                                  \
            return try_status_;                                                                    \
    } while (0)

/* Big-endian integer of n = 1, 2, 4 or 8 bytes (spelled out: compilers turn each case into
 * one load, where the general loop stayed a loop). */
static inline uint64_t be(const uint8_t *p, int n)
{
    switch (n) {
    case 1: return p[0];
    case 2: return (uint64_t)p[0] << 8 | p[1];
    case 4: return (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 | (uint64_t)p[2] << 8 | p[3];
    default:
        return (uint64_t)p[0] << 56 | (uint64_t)p[1] << 48 | (uint64_t)p[2] << 40 |
               (uint64_t)p[3] << 32 | (uint64_t)p[4] << 24 | (uint64_t)p[5] << 16 |
               (uint64_t)p[6] << 8 | p[7];
    }
}

static eb_status truncated(dec *d)
{
    return fail(d, EB_ERR_PROTOCOL, "is truncated: the msgpack body ends at byte %zu",
                (size_t)(d->end - d->start));
}

/* Read `n` payload bytes. */
static eb_status take(dec *d, size_t n, const uint8_t **out)
{
    if ((size_t)(d->end - d->p) < n)
        return truncated(d);
    *out = d->p;
    d->p += n;
    return EB_OK;
}

static eb_status mp_read_slow(dec *d, mp_val *v) __attribute__((noinline));

/* Read one value header (and the payload of str/bin/ext; not the elements of arrays/maps).
 * The one-byte forms that make up most of a body are read here; the rest, and every error, in
 * mp_read_slow. */
static eb_status mp_read(dec *d, mp_val *v)
{
    if (d->p >= d->end)
        return mp_read_slow(d, v);
    uint8_t c = *d->p;
    size_t left = (size_t)(d->end - d->p) - 1; /* bytes after c */
    if (c <= 0x7f) {
        *v = (mp_val){.type = MP_UINT, .u = c};
    } else if (c <= 0x9f) { /* fixmap, fixarray: each element takes at least one byte */
        bool map = c <= 0x8f;
        *v = (mp_val){.type = map ? MP_MAP : MP_ARRAY, .len = c & 0x0fu};
        if ((size_t)v->len * (map ? 2 : 1) > left)
            return mp_read_slow(d, v);
    } else if (c <= 0xbf) { /* fixstr */
        *v = (mp_val){.type = MP_STR, .data = d->p + 1, .len = c & 0x1fu};
        if (v->len > left)
            return mp_read_slow(d, v);
        d->p += v->len;
    } else if (c >= 0xe0) {
        *v = (mp_val){.type = MP_INT, .i = (int8_t)c};
    } else if (c == 0xc2 || c == 0xc3) {
        *v = (mp_val){.type = MP_BOOL, .b = c == 0xc3};
    } else if (c >= 0xcc && c <= 0xcf && left >= (size_t)1 << (c - 0xcc)) {
        int n = 1 << (c - 0xcc);
        *v = (mp_val){.type = MP_UINT, .u = be(d->p + 1, n)};
        d->p += n;
    } else {
        return mp_read_slow(d, v);
    }
    d->p++;
    return EB_OK;
}

static eb_status mp_read_slow(dec *d, mp_val *v)
{
    const uint8_t *q = NULL;
    memset(v, 0, sizeof *v);
    if (d->p >= d->end)
        return truncated(d);
    uint8_t c = *d->p++;
    if (c <= 0x7f) {
        v->type = MP_UINT, v->u = c;
    } else if (c <= 0x8f) {
        v->type = MP_MAP, v->len = c & 0x0f;
    } else if (c <= 0x9f) {
        v->type = MP_ARRAY, v->len = c & 0x0f;
    } else if (c <= 0xbf) {
        v->type = MP_STR, v->len = c & 0x1f;
        return take(d, v->len, &v->data);
    } else if (c >= 0xe0) {
        v->type = MP_INT, v->i = (int8_t)c;
    } else {
        switch (c) {
        case 0xc0: v->type = MP_NIL; break;
        case 0xc2: v->type = MP_BOOL, v->b = false; break;
        case 0xc3: v->type = MP_BOOL, v->b = true; break;
        case 0xc4: case 0xc5: case 0xc6: { /* bin 8/16/32 */
            int n = 1 << (c - 0xc4);
            TRY(take(d, (size_t)n, &q));
            v->type = MP_BIN, v->len = (uint32_t)be(q, n);
            return take(d, v->len, &v->data);
        }
        case 0xc7: case 0xc8: case 0xc9: { /* ext 8/16/32 */
            int n = 1 << (c - 0xc7);
            TRY(take(d, (size_t)n + 1, &q));
            v->type = MP_EXT, v->len = (uint32_t)be(q, n);
            return take(d, v->len, &v->data);
        }
        case 0xca: {
            TRY(take(d, 4, &q));
            uint32_t bits = (uint32_t)be(q, 4);
            float f;
            memcpy(&f, &bits, 4);
            v->type = MP_FLOAT, v->f = f;
            break;
        }
        case 0xcb: {
            TRY(take(d, 8, &q));
            uint64_t bits = be(q, 8);
            memcpy(&v->f, &bits, 8);
            v->type = MP_FLOAT;
            break;
        }
        case 0xcc: case 0xcd: case 0xce: case 0xcf: {
            int n = 1 << (c - 0xcc);
            TRY(take(d, (size_t)n, &q));
            v->type = MP_UINT, v->u = be(q, n);
            break;
        }
        case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
            int n = 1 << (c - 0xd0);
            TRY(take(d, (size_t)n, &q));
            uint64_t raw = be(q, n);
            int64_t s;
            if (n == 8) {
                memcpy(&s, &raw, 8);
            } else {
                uint64_t sign = (uint64_t)1 << (8 * n - 1);
                s = (raw & sign) ? (int64_t)(raw | ~(sign * 2 - 1)) : (int64_t)raw;
            }
            if (s >= 0)
                v->type = MP_UINT, v->u = (uint64_t)s;
            else
                v->type = MP_INT, v->i = s;
            break;
        }
        case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: /* fixext 1..16 */
            TRY(take(d, 1, &q));
            v->type = MP_EXT, v->len = 1u << (c - 0xd4);
            return take(d, v->len, &v->data);
        case 0xd9: case 0xda: case 0xdb: {
            int n = 1 << (c - 0xd9);
            TRY(take(d, (size_t)n, &q));
            v->type = MP_STR, v->len = (uint32_t)be(q, n);
            return take(d, v->len, &v->data);
        }
        case 0xdc: case 0xdd: {
            int n = c == 0xdc ? 2 : 4;
            TRY(take(d, (size_t)n, &q));
            v->type = MP_ARRAY, v->len = (uint32_t)be(q, n);
            break;
        }
        case 0xde: case 0xdf: {
            int n = c == 0xde ? 2 : 4;
            TRY(take(d, (size_t)n, &q));
            v->type = MP_MAP, v->len = (uint32_t)be(q, n);
            break;
        }
        default: /* 0xc1 */
            return fail(d, EB_ERR_PROTOCOL, "holds the byte 0xc1, which msgpack never uses");
        }
    }
    /* Every element takes at least one byte: a count beyond what is left is a lie. */
    if (v->type == MP_ARRAY || v->type == MP_MAP) {
        uint64_t min_bytes = (uint64_t)v->len * (v->type == MP_MAP ? 2 : 1);
        if (min_bytes > (uint64_t)(d->end - d->p))
            return fail(d, EB_ERR_PROTOCOL,
                        "claims %u elements but only %zu bytes remain (truncated msgpack)",
                        v->len, (size_t)(d->end - d->p));
    }
    return EB_OK;
}

/* Skip one complete value (iteratively: no recursion, no depth limit needed). */
static eb_status mp_skip(dec *d)
{
    uint64_t pending = 1;
    while (pending > 0) {
        mp_val v;
        TRY(mp_read(d, &v));
        pending--;
        if (v.type == MP_ARRAY)
            pending += v.len;
        else if (v.type == MP_MAP)
            pending += 2 * (uint64_t)v.len;
        if (pending > (uint64_t)(d->end - d->p))
            return truncated(d);
    }
    return EB_OK;
}

/* ---- typed field readers (path already names the field) ---------------------------------- */

static eb_status wrong_type(dec *d, const mp_val *v, const char *expected)
{
    return fail(d, EB_ERR_PROTOCOL, "is a %s, expected %s", mp_type_names[v->type], expected);
}

static eb_status get_uint(dec *d, uint64_t *out)
{
    mp_val v;
    TRY(mp_read(d, &v));
    if (v.type == MP_INT)
        return fail(d, EB_ERR_INVALID, "%lld is negative, expected an unsigned integer",
                    (long long)v.i);
    if (v.type != MP_UINT)
        return wrong_type(d, &v, "an unsigned integer");
    *out = v.u;
    return EB_OK;
}

/* An integer in [min, max]. When limit_name is given, values above max are EB_ERR_TOO_LARGE
 * ("exceeds <limit_name> <max>"), otherwise EB_ERR_INVALID ("is out of range min..max"). */
static eb_status get_u32_range(dec *d, uint32_t min, uint32_t max, const char *limit_name,
                               uint32_t *out)
{
    mp_val v;
    TRY(mp_read(d, &v));
    if (v.type == MP_INT)
        return fail(d, EB_ERR_INVALID, "%lld is out of range %u..%u", (long long)v.i, min, max);
    if (v.type != MP_UINT)
        return wrong_type(d, &v, "an unsigned integer");
    if (v.u > max && limit_name)
        return fail(d, EB_ERR_TOO_LARGE, "%llu exceeds %s %u", (unsigned long long)v.u,
                    limit_name, max);
    if (v.u < min || v.u > max)
        return fail(d, EB_ERR_INVALID, "%llu is out of range %u..%u", (unsigned long long)v.u,
                    min, max);
    *out = (uint32_t)v.u;
    return EB_OK;
}

static eb_status get_status(dec *d, int32_t *out)
{
    mp_val v;
    TRY(mp_read(d, &v));
    if (v.type == MP_UINT && v.u == 0) {
        *out = 0;
        return EB_OK;
    }
    if (v.type == MP_UINT)
        return fail(d, EB_ERR_INVALID, "%llu is not a status code (0 or negative)",
                    (unsigned long long)v.u);
    if (v.type != MP_INT)
        return wrong_type(d, &v, "an integer status code");
    if (v.i < INT32_MIN)
        return fail(d, EB_ERR_INVALID, "%lld is not a status code", (long long)v.i);
    *out = (int32_t)v.i;
    return EB_OK;
}

static eb_status get_bool(dec *d, bool *out)
{
    mp_val v;
    TRY(mp_read(d, &v));
    if (v.type != MP_BOOL)
        return wrong_type(d, &v, "a bool");
    *out = v.b;
    return EB_OK;
}

static eb_status get_double(dec *d, double min, double max, double *out)
{
    mp_val v;
    TRY(mp_read(d, &v));
    double x;
    if (v.type == MP_FLOAT)
        x = v.f;
    else if (v.type == MP_UINT)
        x = (double)v.u;
    else if (v.type == MP_INT)
        x = (double)v.i;
    else
        return wrong_type(d, &v, "a number");
    if (!isfinite(x) || x < min || x > max)
        return fail(d, EB_ERR_INVALID, "%g is out of range %g..%g", x, min, max);
    *out = x;
    return EB_OK;
}

/* Copy a string value NUL-terminated into the arena. */
static eb_status copy_str(dec *d, const mp_val *v, const char **out, uint32_t *len_out)
{
    char *s = arena_alloc(d->arena, (size_t)v->len + 1);
    if (!s)
        return fail(d, EB_ERR_NOMEM, "cannot be copied: out of memory");
    bytes_copy(s, v->data, v->len);
    s[v->len] = '\0';
    *out = s;
    if (len_out)
        *len_out = v->len;
    return EB_OK;
}

/* A string: at most max bytes (EB_ERR_TOO_LARGE, naming limit_name when given), valid UTF-8,
 * no NUL; copied NUL-terminated into the arena. */
static eb_status get_str(dec *d, size_t max, const char *limit_name, const char **out,
                         uint32_t *len_out)
{
    mp_val v;
    TRY(mp_read(d, &v));
    if (v.type != MP_STR)
        return wrong_type(d, &v, "a string");
    if (v.len > max)
        return fail(d, EB_ERR_TOO_LARGE, "is %u bytes, exceeds %s%s%zu", v.len,
                    limit_name ? limit_name : "the maximum", limit_name ? " " : " of ", max);
    /* Most strings are ASCII without NUL, which passes both checks below; the others take
     * them in the original order (UTF-8 first: it decides the error when a string fails
     * both). */
    if (!ascii_no_nul(v.data, v.len)) {
        if (!eb_proto_utf8_valid(v.data, v.len))
            return fail(d, EB_ERR_INVALID, "is not valid UTF-8");
        if (memchr(v.data, 0, v.len))
            return fail(d, EB_ERR_INVALID, "contains a NUL character");
    }
    return copy_str(d, &v, out, len_out);
}

/* A non-empty string of [A-Za-z0-9._-] (model revisions, backends): safe inside Redis keys. */
static bool token_valid(const char *s, size_t len, bool lower_only)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                  c == '-' || (!lower_only && c >= 'A' && c <= 'Z');
        if (!ok)
            return false;
    }
    return true;
}

static eb_status get_token(dec *d, size_t max, bool lower_only, const char **out)
{
    uint32_t len = 0;
    TRY(get_str(d, max, NULL, out, &len));
    if (!token_valid(*out, len, lower_only))
        return fail(d, EB_ERR_INVALID, "\"%s\" must match [%s0-9._-]{1,%zu}", *out,
                    lower_only ? "a-z" : "A-Za-z", max);
    return EB_OK;
}

static eb_status get_model(dec *d, const char **out)
{
    mp_val v;
    TRY(mp_read(d, &v));
    if (v.type != MP_STR)
        return wrong_type(d, &v, "a string");
    if (!eb_proto_model_name_valid((const char *)v.data, v.len))
        return fail(d, EB_ERR_INVALID, "\"%.*s\" is not a model name: use [a-z0-9._-]{1,64}",
                    v.len > 80 ? 80 : (int)v.len, (const char *)v.data);
    /* A valid model name is short ASCII without NUL: get_str's checks would all pass. */
    return copy_str(d, &v, out, NULL);
}

static eb_status get_segment_name(dec *d, const char **out)
{
    uint32_t len = 0;
    TRY(get_str(d, EB_PROTO_SEGMENT_NAME_MAX, NULL, out, &len));
    if (!eb_proto_segment_name_valid(*out, len))
        return fail(d, EB_ERR_INVALID, "\"%s\" is not a segment name: use /[A-Za-z0-9._-]{1,254}",
                    *out);
    return EB_OK;
}

static eb_status get_bin_exact(dec *d, uint8_t *out, uint32_t n)
{
    mp_val v;
    TRY(mp_read(d, &v));
    if (v.type != MP_BIN)
        return wrong_type(d, &v, "a bin");
    if (v.len != n)
        return fail(d, EB_ERR_INVALID, "is %u bytes, expected exactly %u", v.len, n);
    memcpy(out, v.data, n);
    return EB_OK;
}

/* A string that must be one of names[lo..hi]. Unknown names are EB_ERR_UNSUPPORTED (a newer
 * peer may know more). */
static eb_status get_enum(dec *d, const map_key *names, int lo, int hi, int *out)
{
    mp_val v;
    TRY(mp_read(d, &v));
    if (v.type != MP_STR)
        return wrong_type(d, &v, "a string");
    for (int i = lo; i <= hi; i++)
        if (names[i].name && key_is(&names[i], v.data, v.len)) {
            *out = i;
            return EB_OK;
        }
    char list[160] = "";
    size_t used = 0;
    for (int i = lo; i <= hi; i++) {
        if (!names[i].name)
            continue;
        int n = snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "", names[i].name);
        if (n > 0 && used + (size_t)n < sizeof list)
            used += (size_t)n;
    }
    return fail(d, EB_ERR_UNSUPPORTED, "\"%.*s\" is not one of %s", v.len > 64 ? 64 : (int)v.len,
                (const char *)v.data, list);
}

static eb_status get_array(dec *d, uint32_t max, const char *limit_name, uint32_t *n)
{
    mp_val v;
    TRY(mp_read(d, &v));
    if (v.type != MP_ARRAY)
        return wrong_type(d, &v, "an array");
    if (v.len > max)
        return fail(d, EB_ERR_TOO_LARGE, "has %u elements, exceeds %s %u", v.len, limit_name,
                    max);
    *n = v.len;
    return EB_OK;
}

static void *alloc_array(dec *d, uint32_t n, size_t size)
{
    return arena_zalloc(d->arena, (n ? n : 1) * size);
}

/* Read a map, dispatching each known key to fn (path extended with the key); unknown keys are
 * skipped; duplicate known keys are a protocol error; keys in `required` must be present.
 * names has at most 64 entries, all different. *seen_out (may be NULL) gets the set of keys
 * present. */
typedef eb_status (*field_fn)(dec *d, int field, void *obj);

static eb_status dec_map(dec *d, const map_key *names, int n_names, uint64_t required,
                         field_fn fn, void *obj, uint64_t *seen_out)
{
    mp_val v;
    TRY(mp_read(d, &v));
    if (v.type != MP_MAP)
        return wrong_type(d, &v, "a map");
    uint64_t seen = 0;
    int next = 0; /* encoders write keys in table order: try the one after the last match first */
    for (uint32_t i = 0; i < v.len; i++) {
        mp_val k;
        /* Keys are short: read a fixstr in place, anything else through mp_read. */
        if (d->p < d->end && (*d->p & 0xe0) == 0xa0 &&
            (size_t)(d->end - d->p - 1) >= (size_t)(*d->p & 0x1f)) {
            k.type = MP_STR;
            k.len = *d->p & 0x1f;
            k.data = d->p + 1;
            d->p += 1 + k.len;
        } else {
            TRY(mp_read(d, &k));
            if (k.type != MP_STR)
                return fail(d, EB_ERR_PROTOCOL, "has a %s key, expected string keys",
                            mp_type_names[k.type]);
        }
        int field = -1;
        for (int tried = 0, f = next; tried < n_names; tried++) {
            if (key_is(&names[f], k.data, k.len)) {
                field = f;
                break;
            }
            if (++f == n_names)
                f = 0;
        }
        if (field < 0) {
            TRY(mp_skip(d)); /* unknown key: forward compatibility */
            continue;
        }
        next = field + 1 == n_names ? 0 : field + 1;
        if (seen & ((uint64_t)1 << field))
            return fail(d, EB_ERR_PROTOCOL, "has the key \"%s\" twice", names[field].name);
        seen |= (uint64_t)1 << field;
        path_push_key(d, names[field].name);
        TRY(fn(d, field, obj));
        path_pop(d);
    }
    uint64_t missing = required & ~seen;
    if (missing) {
        int f = 0;
        while (!(missing & ((uint64_t)1 << f)))
            f++;
        return fail(d, EB_ERR_PROTOCOL, "lacks the required key \"%s\"", names[f].name);
    }
    if (seen_out)
        *seen_out = seen;
    return EB_OK;
}

#define BIT(i) ((uint64_t)1 << (i))

/* Mark item frame `frame` as referenced by the field at the current path. */
static eb_status use_frame(dec *d, uint32_t frame, uint64_t *len)
{
    if (frame >= d->n_frames)
        return fail(d, EB_ERR_PROTOCOL, "%u is out of range: the message has %zu item frame%s",
                    frame, d->n_frames, d->n_frames == 1 ? "" : "s");
    if (d->frame_used[frame])
        return fail(d, EB_ERR_PROTOCOL, "%u: item frame %u is referenced twice", frame, frame);
    d->frame_used[frame] = 1;
    *len = d->frame_sizes[frame];
    if (*len > d->lim->max_input_bytes)
        return fail(d, EB_ERR_TOO_LARGE, "%u: item frame of %llu bytes exceeds max_input_bytes "
                    "%llu", frame, (unsigned long long)*len,
                    (unsigned long long)d->lim->max_input_bytes);
    return EB_OK;
}

static eb_status check_all_frames_used(dec *d)
{
    for (size_t i = 0; i < d->n_frames; i++)
        if (!d->frame_used[i])
            return fail(d, EB_ERR_PROTOCOL, "leaves item frame %zu unreferenced: every item "
                        "frame must be referenced exactly once", i);
    return EB_OK;
}

/* ---- shared pieces ----------------------------------------------------------------------- */

static eb_status dec_error_obj(dec *d, eb_proto_error *e);

enum { ERR_CODE, ERR_MESSAGE };
static const map_key error_keys[] = {KEY("code"), KEY("message")};

static eb_status error_field(dec *d, int f, void *obj)
{
    eb_proto_error *e = obj;
    if (f == ERR_CODE)
        return get_status(d, &e->code);
    return get_str(d, EB_PROTO_MESSAGE_MAX, NULL, &e->message, NULL);
}

static eb_status dec_error_obj(dec *d, eb_proto_error *e)
{
    memset(e, 0, sizeof *e);
    return dec_map(d, error_keys, 2, BIT(ERR_CODE), error_field, e, NULL);
}

static eb_status timings_field(dec *d, int f, void *obj)
{
    eb_proto_timings *t = obj;
    uint64_t us = 0;
    TRY(get_uint(d, &us));
    if (us > (uint64_t)INT64_MAX)
        return fail(d, EB_ERR_INVALID, "%llu µs is out of range", (unsigned long long)us);
    t->us[f] = (int64_t)us;
    return EB_OK;
}

static eb_status dec_timings(dec *d, eb_proto_timings *t)
{
    eb_proto_timings_clear(t);
    return dec_map(d, stage_keys, EB_STAGE_COUNT, 0, timings_field, t, NULL);
}

/* ---- client channel ---------------------------------------------------------------------- */

/* Top-level keys: index 0 is always "bid". */
enum { F_BID = 0 };

static eb_status get_bid(dec *d, eb_proto_msg *m)
{
    if (!d->from_broker)
        return mp_skip(d); /* only the broker's bid means anything */
    return get_uint(d, &m->bid);
}

enum { REG_BID, REG_NAME, REG_SIZE };
static const map_key register_keys[] = {KEY("bid"), KEY("name"), KEY("size")};

static eb_status register_field(dec *d, int f, void *obj)
{
    eb_proto_msg *m = obj;
    switch (f) {
    case REG_BID: return get_bid(d, m);
    case REG_NAME: return get_segment_name(d, &m->u.reg.segment);
    default: {
        TRY(get_uint(d, &m->u.reg.size));
        if (m->u.reg.size == 0)
            return fail(d, EB_ERR_INVALID, "0: a segment must have at least one byte");
        return EB_OK;
    }
    }
}

enum { CH_BID, CH_NAME, CH_NONCE };
static const map_key challenge_keys[] = {KEY("bid"), KEY("name"), KEY("nonce")};

static eb_status challenge_field(dec *d, int f, void *obj)
{
    eb_proto_msg *m = obj;
    switch (f) {
    case CH_BID: return get_bid(d, m);
    case CH_NAME: return get_segment_name(d, &m->u.challenge.segment);
    default: return get_bin_exact(d, m->u.challenge.nonce, EB_PROTO_NONCE_BYTES);
    }
}

enum { PR_BID, PR_NAME };
static const map_key prove_keys[] = {KEY("bid"), KEY("name")};

static eb_status prove_field(dec *d, int f, void *obj)
{
    eb_proto_msg *m = obj;
    if (f == PR_BID)
        return get_bid(d, m);
    return get_segment_name(d, &m->u.prove.segment);
}

enum { RD_BID, RD_NAME, RD_STATUS, RD_ERROR, RD_SEG, RD_EPOCH };
static const map_key registered_keys[] = {KEY("bid"),   KEY("name"), KEY("status"),
                                          KEY("error"), KEY("seg"),  KEY("epoch")};

static eb_status registered_field(dec *d, int f, void *obj)
{
    eb_proto_msg *m = obj;
    eb_proto_registered *r = &m->u.registered;
    switch (f) {
    case RD_BID: return get_bid(d, m);
    case RD_NAME: return get_segment_name(d, &r->segment);
    case RD_STATUS: return get_status(d, &r->status);
    case RD_ERROR: {
        eb_proto_error e;
        TRY(dec_error_obj(d, &e));
        r->error = e.message;
        return EB_OK;
    }
    case RD_SEG: return get_u32_range(d, 0, UINT32_MAX, NULL, &r->seg);
    default: return get_u32_range(d, 0, UINT32_MAX, NULL, &r->epoch);
    }
}

/* Client input. */
enum { IN_KIND, IN_FORMAT, IN_WIDTH, IN_HEIGHT, IN_SHM, IN_FRAME, IN_TEXT, IN_HASH };
static const map_key input_keys[] = {KEY("kind"), KEY("format"), KEY("width"), KEY("height"),
                                     KEY("shm"),  KEY("frame"),  KEY("text"),  KEY("hash")};

enum { SHM_SEG, SHM_EPOCH, SHM_OFF, SHM_LEN };
static const map_key shm_keys[] = {KEY("seg"), KEY("epoch"), KEY("off"), KEY("len")};
static const map_key wshm_keys[] = {KEY("name"), KEY("epoch"), KEY("off"), KEY("len")};

/* Both shm forms: seg id (client) or segment name (worker) at index 0. */
typedef struct shm_ref {
    uint32_t *seg;
    const char **segment;
    uint32_t *epoch;
    uint64_t *off, *len;
} shm_ref;

static eb_status shm_field(dec *d, int f, void *obj)
{
    shm_ref *r = obj;
    switch (f) {
    case SHM_SEG:
        if (r->segment)
            return get_segment_name(d, r->segment);
        return get_u32_range(d, 0, UINT32_MAX, NULL, r->seg);
    case SHM_EPOCH: return get_u32_range(d, 0, UINT32_MAX, NULL, r->epoch);
    case SHM_OFF: return get_uint(d, r->off);
    default: {
        TRY(get_uint(d, r->len));
        if (*r->len > d->lim->max_input_bytes)
            return fail(d, EB_ERR_TOO_LARGE, "%llu exceeds max_input_bytes %llu",
                        (unsigned long long)*r->len,
                        (unsigned long long)d->lim->max_input_bytes);
        if (*r->len == 0)
            return fail(d, EB_ERR_INVALID, "0: an input must have at least one byte");
        if (*r->off > UINT64_MAX - *r->len)
            return fail(d, EB_ERR_INVALID, "%llu plus off %llu overflows",
                        (unsigned long long)*r->len, (unsigned long long)*r->off);
        return EB_OK;
    }
    }
}

/* Fields common to client inputs and worker items, so both are read by one function. */
typedef struct input_view {
    eb_proto_input_kind *kind;
    eb_proto_format *format;
    uint32_t *width, *height;
    eb_proto_source *source;
    shm_ref shm;
    uint32_t *frame;
    const char **text;
    uint32_t *text_len;
} input_view;

static eb_status input_common_field(dec *d, int f, input_view *in)
{
    int e = 0;
    switch (f) {
    case IN_KIND:
        TRY(get_enum(d, kind_names, 1, 3, &e));
        *in->kind = (eb_proto_input_kind)e;
        return EB_OK;
    case IN_FORMAT:
        TRY(get_enum(d, format_names, 0, 3, &e));
        *in->format = (eb_proto_format)e;
        return EB_OK;
    case IN_WIDTH: return get_u32_range(d, 1, UINT32_MAX, NULL, in->width);
    case IN_HEIGHT: return get_u32_range(d, 1, UINT32_MAX, NULL, in->height);
    case IN_SHM:
        *in->source = EB_SOURCE_SHM;
        return dec_map(d, in->shm.segment ? wshm_keys : shm_keys, 4, 0xf, shm_field, &in->shm,
                       NULL);
    case IN_FRAME:
        *in->source = EB_SOURCE_INLINE;
        TRY(get_u32_range(d, 0, UINT32_MAX, NULL, in->frame));
        return use_frame(d, *in->frame, in->shm.len);
    case IN_TEXT: {
        TRY(get_str(d, d->lim->max_text_bytes, "max_text_bytes", in->text, in->text_len));
        return EB_OK;
    }
    default: return EB_ERR_INTERNAL;
    }
}

/* Cross-field checks after an input/item map was read. */
static eb_status input_check(dec *d, const input_view *in, uint64_t seen)
{
    if (!(seen & BIT(IN_KIND)))
        return fail(d, EB_ERR_PROTOCOL, "lacks the required key \"kind\"");
    bool has_shm = seen & BIT(IN_SHM), has_frame = seen & BIT(IN_FRAME);
    bool has_text = seen & BIT(IN_TEXT);
    if (*in->kind == EB_INPUT_TEXT) {
        if (!has_text)
            return fail(d, EB_ERR_PROTOCOL, "is a text input but lacks the key \"text\"");
        if (has_shm || has_frame)
            return fail(d, EB_ERR_PROTOCOL, "is a text input: its bytes go in \"text\", not in "
                        "\"shm\" or \"frame\"");
        *in->source = EB_SOURCE_NONE;
        *in->format = EB_FORMAT_AUTO;
        return EB_OK;
    }
    if (has_text)
        return fail(d, EB_ERR_PROTOCOL, "is a %s input and must not carry \"text\"",
                    kind_names[*in->kind].name);
    if (has_shm == has_frame)
        return fail(d, EB_ERR_PROTOCOL, "must have exactly one of \"shm\" and \"frame\"");
    if (*in->shm.len == 0)
        return fail(d, EB_ERR_INVALID, "is empty: an input must have at least one byte");
    if (*in->kind == EB_INPUT_RAW_RGB8) {
        if (!(seen & BIT(IN_WIDTH)) || !(seen & BIT(IN_HEIGHT)))
            return fail(d, EB_ERR_PROTOCOL, "is a raw_rgb8 input and needs \"width\" and "
                        "\"height\"");
        uint64_t pixels = (uint64_t)*in->width * *in->height;
        if (pixels > d->lim->max_pixels)
            return fail(d, EB_ERR_TOO_LARGE, "is %ux%u pixels, exceeds max_pixels %u", *in->width,
                        *in->height, d->lim->max_pixels);
        if (pixels * 3 != *in->shm.len)
            return fail(d, EB_ERR_INVALID, "is %ux%u raw_rgb8 and needs %llu bytes, but len is "
                        "%llu", *in->width, *in->height, (unsigned long long)(pixels * 3),
                        (unsigned long long)*in->shm.len);
        *in->format = EB_FORMAT_AUTO;
    } else {
        *in->width = *in->height = 0;
    }
    return EB_OK;
}

static eb_status input_field(dec *d, int f, void *obj)
{
    eb_proto_input *in = obj;
    if (f == IN_HASH) {
        in->has_hash = true;
        return get_bin_exact(d, in->hash, EB_PROTO_HASH_BYTES);
    }
    input_view v = {&in->kind, &in->format, &in->width, &in->height, &in->source,
                    {&in->seg, NULL, &in->epoch, &in->off, &in->len}, &in->frame, &in->text,
                    &in->text_len};
    return input_common_field(d, f, &v);
}

static eb_status dec_input(dec *d, eb_proto_input *in)
{
    uint64_t seen = 0;
    TRY(dec_map(d, input_keys, 8, 0, input_field, in, &seen));
    input_view v = {&in->kind, &in->format, &in->width, &in->height, &in->source,
                    {&in->seg, NULL, &in->epoch, &in->off, &in->len}, &in->frame, &in->text,
                    &in->text_len};
    return input_check(d, &v, seen);
}

enum {
    OPT_DEADLINE, OPT_PRIORITY, OPT_NORMALIZE, OPT_RETURN, OPT_K, OPT_TEMPLATE, OPT_SOURCE_TYPE,
    OPT_STORE, OPT_PRODUCT, OPT_INSTRUCTION, OPT_OUTPUT_DIM, OPT_TEXT_WEIGHT, OPT_IMAGE_WEIGHT,
    OPT_FILTERS
};
static const map_key option_keys[] = {
    KEY("deadline_ms"), KEY("priority"),    KEY("normalize"),   KEY("return_embedding"),
    KEY("k"),           KEY("template"),    KEY("source_type"), KEY("store"),
    KEY("product_id"),  KEY("instruction"), KEY("output_dim"),  KEY("text_weight"),
    KEY("image_weight"), KEY("filters")};

enum { FILT_TEMPLATE, FILT_SOURCE_TYPE };
static const map_key filter_keys[] = {KEY("template"), KEY("source_type")};

static eb_status filter_field(dec *d, int f, void *obj)
{
    eb_proto_options *o = obj;
    if (f == FILT_TEMPLATE)
        return get_str(d, EB_PROTO_ID_MAX, NULL, &o->template_name, NULL);
    return get_str(d, EB_PROTO_ID_MAX, NULL, &o->source_type, NULL);
}

static eb_status option_field(dec *d, int f, void *obj)
{
    eb_proto_options *o = obj;
    int e = 0;
    switch (f) {
    case OPT_DEADLINE: return get_u32_range(d, 0, d->lim->max_deadline_ms, NULL, &o->deadline_ms);
    case OPT_PRIORITY:
        TRY(get_enum(d, priority_names, 0, 1, &e));
        o->priority = (eb_proto_priority)e;
        return EB_OK;
    case OPT_NORMALIZE: return get_bool(d, &o->normalize);
    case OPT_RETURN: return get_bool(d, &o->return_embedding);
    case OPT_K: return get_u32_range(d, 1, d->lim->max_k, NULL, &o->k);
    case OPT_TEMPLATE: return get_str(d, EB_PROTO_ID_MAX, NULL, &o->template_name, NULL);
    case OPT_SOURCE_TYPE: return get_str(d, EB_PROTO_ID_MAX, NULL, &o->source_type, NULL);
    case OPT_STORE: return get_bool(d, &o->store);
    case OPT_PRODUCT: return get_str(d, EB_PROTO_ID_MAX, NULL, &o->product_id, NULL);
    case OPT_INSTRUCTION:
        return get_str(d, d->lim->max_text_bytes, "max_text_bytes", &o->instruction, NULL);
    case OPT_OUTPUT_DIM: return get_u32_range(d, 0, d->lim->max_dims, NULL, &o->output_dim);
    case OPT_TEXT_WEIGHT: return get_double(d, 0, 1000, &o->text_weight);
    case OPT_IMAGE_WEIGHT: return get_double(d, 0, 1000, &o->image_weight);
    default: return dec_map(d, filter_keys, 2, 0, filter_field, o, NULL);
    }
}

enum { RQ_BID, RQ_ID, RQ_OP, RQ_MODEL, RQ_TEXT_MODEL, RQ_INPUTS, RQ_OPTIONS };
static const map_key request_keys[] = {KEY("bid"),    KEY("id"),         KEY("op"),
                                       KEY("model"),  KEY("text_model"), KEY("inputs"),
                                       KEY("options")};

static eb_status request_field(dec *d, int f, void *obj)
{
    eb_proto_msg *m = obj;
    eb_proto_request *r = &m->u.request;
    int e = 0;
    switch (f) {
    case RQ_BID: return get_bid(d, m);
    case RQ_ID: return get_uint(d, &r->id);
    case RQ_OP:
        TRY(get_enum(d, op_names, 1, EB_OP_LAST, &e));
        r->op = (eb_proto_op)e;
        return EB_OK;
    case RQ_MODEL: return get_model(d, &r->model);
    case RQ_TEXT_MODEL: return get_model(d, &r->text_model);
    case RQ_INPUTS: {
        TRY(get_array(d, d->lim->max_batch_items, "max_batch_items", &r->n_inputs));
        r->inputs = alloc_array(d, r->n_inputs, sizeof *r->inputs);
        if (!r->inputs)
            return fail(d, EB_ERR_NOMEM, "cannot be stored: out of memory");
        for (uint32_t i = 0; i < r->n_inputs; i++) {
            path_push_index(d, i);
            TRY(dec_input(d, &r->inputs[i]));
            path_pop(d);
        }
        return EB_OK;
    }
    default:
        return dec_map(d, option_keys, 14, 0, option_field, &r->options, &d->option_keys_seen);
    }
}

/* Per-op rules (docs/protocol.md, "Operations"). */
static eb_status request_check(dec *d, eb_proto_request *r)
{
    uint32_t images = 0, texts = 0;
    for (uint32_t i = 0; i < r->n_inputs; i++)
        if (r->inputs[i].kind == EB_INPUT_TEXT)
            texts++;
        else
            images++;
    const char *op = op_names[r->op].name;
    switch (r->op) {
    case EB_OP_EMBED_IMAGE:
    case EB_OP_EMBED_TEXT:
        if (!r->model)
            return fail(d, EB_ERR_PROTOCOL, "lacks the required key \"model\" (op %s)", op);
        if (r->n_inputs == 0)
            return fail(d, EB_ERR_INVALID, "has no inputs: op %s needs at least one", op);
        if (r->op == EB_OP_EMBED_IMAGE && texts)
            return fail(d, EB_ERR_INVALID, "has a text input: op embed_image takes image and "
                        "raw_rgb8 inputs (use embed_text)");
        if (r->op == EB_OP_EMBED_TEXT && images)
            return fail(d, EB_ERR_INVALID, "has an image input: op embed_text takes text inputs "
                        "(use embed_image)");
        break;
    case EB_OP_SCAN:
        if (images > 1 || texts > 1 || r->n_inputs == 0)
            return fail(d, EB_ERR_INVALID, "has %u image and %u text inputs: op scan takes one "
                        "image, one text, or one of each", images, texts);
        if (!(d->option_keys_seen & BIT(OPT_RETURN)))
            r->options.return_embedding = false; /* scan's default */
        break;
    case EB_OP_STORE:
        if (images > 1 || texts > 1 || r->n_inputs == 0)
            return fail(d, EB_ERR_INVALID, "has %u image and %u text inputs: op store takes one "
                        "image, one text, or one of each", images, texts);
        if (!r->options.product_id || !r->options.template_name)
            return fail(d, EB_ERR_INVALID, "lacks options.product_id or options.filters.template: "
                        "op store needs both");
        if (!(d->option_keys_seen & BIT(OPT_RETURN)))
            r->options.return_embedding = false; /* as scan */
        break;
    case EB_OP_HEALTH:
        if (r->n_inputs)
            return fail(d, EB_ERR_INVALID, "has %u inputs: op health takes none", r->n_inputs);
        break;
    case EB_OP_DELETE:
        if (r->n_inputs)
            return fail(d, EB_ERR_INVALID, "has %u inputs: op delete takes none", r->n_inputs);
        if (!r->options.product_id)
            return fail(d, EB_ERR_INVALID, "lacks options.product_id: op delete needs it");
        break;
    }
    return EB_OK;
}

/* Results of a REPLY. */
enum { RS_STATUS, RS_ERROR, RS_HASH, RS_DIMS, RS_WORKER, RS_CACHED, RS_MODEL_REV };
static const map_key result_keys[] = {KEY("status"), KEY("error"),  KEY("hash"),
                                      KEY("dims"),   KEY("worker"), KEY("cached"),
                                      KEY("model_rev")};

static eb_status result_field(dec *d, int f, void *obj)
{
    eb_proto_result *r = obj;
    switch (f) {
    case RS_STATUS: return get_status(d, &r->status);
    case RS_ERROR: {
        eb_proto_error e;
        TRY(dec_error_obj(d, &e));
        r->error = e.message;
        return EB_OK;
    }
    case RS_HASH:
        r->has_hash = true;
        return get_bin_exact(d, r->hash, EB_PROTO_HASH_BYTES);
    case RS_DIMS: return get_u32_range(d, 0, d->lim->max_dims, "max_dims", &r->dims);
    case RS_WORKER: return get_str(d, EB_PROTO_ID_MAX, NULL, &r->worker, NULL);
    case RS_CACHED: return get_bool(d, &r->cached);
    default: return get_token(d, EB_PROTO_ID_MAX, false, &r->model_rev);
    }
}

enum { MT_PRODUCT, MT_SCORE, MT_TEMPLATE, MT_SOURCE_TYPE };
static const map_key match_keys[] = {KEY("product_id"), KEY("score"), KEY("template"),
                                     KEY("source_type")};

static eb_status match_field(dec *d, int f, void *obj)
{
    eb_proto_match *m = obj;
    switch (f) {
    case MT_PRODUCT: return get_str(d, EB_PROTO_ID_MAX, NULL, &m->product_id, NULL);
    case MT_SCORE: return get_double(d, -1e30, 1e30, &m->score);
    case MT_TEMPLATE: return get_str(d, EB_PROTO_ID_MAX, NULL, &m->template_name, NULL);
    default: return get_str(d, EB_PROTO_ID_MAX, NULL, &m->source_type, NULL);
    }
}

enum {
    RP_BID, RP_ID, RP_STATUS, RP_ERROR, RP_RESULTS, RP_TIMINGS, RP_MATCHES, RP_SEARCH_ERROR,
    RP_STORE_ID, RP_DELETED, RP_HEALTH
};
static const map_key reply_keys[] = {KEY("bid"),          KEY("id"),       KEY("status"),
                                     KEY("error"),        KEY("results"),  KEY("timings"),
                                     KEY("matches"),      KEY("search_error"),
                                     KEY("store_id"),     KEY("deleted"),  KEY("health")};

static eb_status reply_field(dec *d, int f, void *obj)
{
    eb_proto_msg *m = obj;
    eb_proto_reply *r = &m->u.reply;
    switch (f) {
    case RP_BID: return get_bid(d, m);
    case RP_ID: return get_uint(d, &r->id);
    case RP_STATUS: return get_status(d, &r->status);
    case RP_ERROR: {
        eb_proto_error e;
        TRY(dec_error_obj(d, &e));
        r->error = e.message ? e.message : "";
        return EB_OK;
    }
    case RP_RESULTS:
        TRY(get_array(d, d->lim->max_batch_items, "max_batch_items", &r->n_results));
        r->results = alloc_array(d, r->n_results, sizeof *r->results);
        if (!r->results)
            return fail(d, EB_ERR_NOMEM, "cannot be stored: out of memory");
        for (uint32_t i = 0; i < r->n_results; i++) {
            path_push_index(d, i);
            TRY(dec_map(d, result_keys, 7, BIT(RS_STATUS), result_field, &r->results[i], NULL));
            path_pop(d);
        }
        return EB_OK;
    case RP_TIMINGS: return dec_timings(d, &r->timings);
    case RP_MATCHES:
        TRY(get_array(d, d->lim->max_k, "max_k", &r->n_matches));
        r->matches = alloc_array(d, r->n_matches, sizeof *r->matches);
        if (!r->matches)
            return fail(d, EB_ERR_NOMEM, "cannot be stored: out of memory");
        for (uint32_t i = 0; i < r->n_matches; i++) {
            path_push_index(d, i);
            TRY(dec_map(d, match_keys, 4, BIT(MT_PRODUCT) | BIT(MT_SCORE), match_field,
                        &r->matches[i], NULL));
            path_pop(d);
        }
        return EB_OK;
    case RP_SEARCH_ERROR:
        r->has_search_error = true;
        return dec_error_obj(d, &r->search_error);
    case RP_STORE_ID: return get_str(d, EB_PROTO_ID_MAX, NULL, &r->store_id, NULL);
    case RP_DELETED:
        r->has_deleted = true;
        return get_uint(d, &r->deleted);
    default: {
        const uint8_t *start = d->p;
        mp_val v;
        TRY(mp_read(d, &v));
        if (v.type != MP_MAP)
            return wrong_type(d, &v, "a map");
        d->p = start;
        TRY(mp_skip(d));
        r->health_len = (size_t)(d->p - start);
        uint8_t *copy = arena_alloc(d->arena, r->health_len);
        if (!copy)
            return fail(d, EB_ERR_NOMEM, "cannot be stored: out of memory");
        memcpy(copy, start, r->health_len);
        r->health = copy;
        return EB_OK;
    }
    }
}

/* Item frames carry dims float32 for successful items and nothing for failed ones. */
static eb_status check_embedding_frame(dec *d, const char *what, uint32_t i, int32_t status,
                                       uint32_t dims)
{
    uint64_t want = status == 0 ? (uint64_t)dims * 4 : 0;
    if (d->frame_sizes[i] != want)
        return fail(d, EB_ERR_PROTOCOL, "has an item frame %u of %zu bytes for %s[%u] (status "
                    "%d, dims %u): expected %llu", i, d->frame_sizes[i], what, i, status, dims,
                    (unsigned long long)want);
    return EB_OK;
}

enum { CA_BID, CA_ID };
static const map_key cancel_keys[] = {KEY("bid"), KEY("id")};

static eb_status cancel_field(dec *d, int f, void *obj)
{
    eb_proto_msg *m = obj;
    if (f == CA_BID)
        return get_bid(d, m);
    return get_uint(d, &m->u.cancel.id);
}

enum { HB_BID, HB_WARM, HB_HEALTHY, HB_INFLIGHT };
static const map_key heartbeat_keys[] = {KEY("bid"), KEY("warm"), KEY("healthy"),
                                         KEY("inflight")};

static eb_status heartbeat_field(dec *d, int f, void *obj)
{
    eb_proto_msg *m = obj;
    eb_proto_heartbeat *h = &m->u.heartbeat;
    switch (f) {
    case HB_BID: return get_bid(d, m);
    case HB_WARM: h->has_state = true; return get_bool(d, &h->warm);
    case HB_HEALTHY: h->has_state = true; return get_bool(d, &h->healthy);
    default: h->has_state = true; return get_u32_range(d, 0, UINT32_MAX, NULL, &h->inflight_items);
    }
}

enum { DC_BID, DC_REASON };
static const map_key disconnect_keys[] = {KEY("bid"), KEY("reason")};

static eb_status disconnect_field(dec *d, int f, void *obj)
{
    eb_proto_msg *m = obj;
    if (f == DC_BID)
        return get_bid(d, m);
    return get_str(d, EB_PROTO_MESSAGE_MAX, NULL, &m->u.disconnect.reason, NULL);
}

/* ---- worker channel ---------------------------------------------------------------------- */

enum { MD_NAME, MD_MODEL_REV, MD_PREPROC_REV, MD_DIMS, MD_INPUT };
static const map_key model_keys[] = {KEY("name"), KEY("model_rev"), KEY("preproc_rev"),
                                     KEY("dims"), KEY("input")};

static eb_status model_field(dec *d, int f, void *obj)
{
    eb_proto_model_desc *md = obj;
    int e = 0;
    switch (f) {
    case MD_NAME: return get_model(d, &md->name);
    case MD_MODEL_REV: return get_token(d, EB_PROTO_ID_MAX, false, &md->model_rev);
    case MD_PREPROC_REV: return get_token(d, EB_PROTO_ID_MAX, false, &md->preproc_rev);
    case MD_DIMS: return get_u32_range(d, 1, d->lim->max_dims, "max_dims", &md->dims);
    default: {
        static const map_key model_inputs[] = {{NULL, 0}, KEY("image"), {NULL, 0}, KEY("text")};
        TRY(get_enum(d, model_inputs, 1, 3, &e));
        md->input = (eb_proto_input_kind)e;
        return EB_OK;
    }
    }
}

enum { RY_BID, RY_WORKER, RY_BACKEND, RY_DEVICE, RY_MAX_BATCH, RY_MODELS };
static const map_key ready_keys[] = {KEY("bid"),    KEY("worker"),    KEY("backend"),
                                     KEY("device"), KEY("max_batch"), KEY("models")};

static eb_status ready_field(dec *d, int f, void *obj)
{
    eb_proto_msg *m = obj;
    eb_proto_ready *r = &m->u.ready;
    switch (f) {
    case RY_BID: return get_bid(d, m);
    case RY_WORKER: {
        uint32_t len = 0;
        TRY(get_str(d, EB_PROTO_ID_MAX, NULL, &r->worker_id, &len));
        for (uint32_t i = 0; i < len; i++)
            if ((unsigned char)r->worker_id[i] <= 0x20 || (unsigned char)r->worker_id[i] >= 0x7f)
                return fail(d, EB_ERR_INVALID, "\"%s\" must be printable ASCII without spaces",
                            r->worker_id);
        if (len == 0)
            return fail(d, EB_ERR_INVALID, "is empty");
        return EB_OK;
    }
    case RY_BACKEND: return get_token(d, EB_PROTO_MODEL_NAME_MAX, true, &r->backend);
    case RY_DEVICE: return get_str(d, EB_PROTO_ID_MAX, NULL, &r->device, NULL);
    case RY_MAX_BATCH:
        return get_u32_range(d, 1, d->lim->max_batch_items, "max_batch_items",
                             &r->max_batch_items);
    default:
        TRY(get_array(d, d->lim->max_models, "max_models", &r->n_models));
        if (r->n_models == 0)
            return fail(d, EB_ERR_INVALID, "is empty: a worker serves at least one model");
        r->models = alloc_array(d, r->n_models, sizeof *r->models);
        if (!r->models)
            return fail(d, EB_ERR_NOMEM, "cannot be stored: out of memory");
        for (uint32_t i = 0; i < r->n_models; i++) {
            path_push_index(d, i);
            TRY(dec_map(d, model_keys, 5, 0x1f, model_field, &r->models[i], NULL));
            for (uint32_t j = 0; j < i; j++)
                if (strcmp(r->models[j].name, r->models[i].name) == 0)
                    return fail(d, EB_ERR_INVALID, "repeats the model \"%s\"",
                                r->models[i].name);
            path_pop(d);
        }
        return EB_OK;
    }
}

enum { CR_BID, CR_CREDIT };
static const map_key credit_keys[] = {KEY("bid"), KEY("credit")};

static eb_status credit_field(dec *d, int f, void *obj)
{
    eb_proto_msg *m = obj;
    if (f == CR_BID)
        return get_bid(d, m);
    return get_u32_range(d, 0, UINT32_MAX, NULL, &m->u.credit.credit);
}

/* Worker items: the input keys (same indexes) then their own. */
enum { IT_ID = 8, IT_NORMALIZE, IT_INSTRUCTION, IT_OUTPUT_DIM };
static const map_key item_keys[] = {KEY("kind"),      KEY("format"),      KEY("width"),
                                    KEY("height"),    KEY("shm"),         KEY("frame"),
                                    KEY("text"),      KEY("hash"),        KEY("id"),
                                    KEY("normalize"), KEY("instruction"), KEY("output_dim")};

static eb_status item_field(dec *d, int f, void *obj)
{
    eb_proto_item *it = obj;
    switch (f) {
    case IN_HASH: return mp_skip(d); /* workers compute their own */
    case IT_ID: return get_uint(d, &it->item_id);
    case IT_NORMALIZE: return get_bool(d, &it->normalize);
    case IT_INSTRUCTION:
        return get_str(d, d->lim->max_text_bytes, "max_text_bytes", &it->instruction, NULL);
    case IT_OUTPUT_DIM: return get_u32_range(d, 0, d->lim->max_dims, NULL, &it->output_dim);
    default: {
        input_view v = {&it->kind, &it->format, &it->width, &it->height, &it->source,
                        {NULL, &it->segment, &it->epoch, &it->off, &it->len}, &it->frame,
                        &it->text, &it->text_len};
        return input_common_field(d, f, &v);
    }
    }
}

enum { BT_BID, BT_BATCH, BT_MODEL, BT_ITEMS };
static const map_key batch_keys[] = {KEY("bid"), KEY("batch"), KEY("model"), KEY("items")};

static eb_status batch_field(dec *d, int f, void *obj)
{
    eb_proto_msg *m = obj;
    eb_proto_batch *b = &m->u.batch;
    switch (f) {
    case BT_BID: return get_bid(d, m);
    case BT_BATCH: return get_uint(d, &b->batch_id);
    case BT_MODEL: return get_model(d, &b->model);
    default:
        TRY(get_array(d, d->lim->max_batch_items, "max_batch_items", &b->n_items));
        if (b->n_items == 0)
            return fail(d, EB_ERR_INVALID, "is empty: a batch has at least one item");
        b->items = alloc_array(d, b->n_items, sizeof *b->items);
        if (!b->items)
            return fail(d, EB_ERR_NOMEM, "cannot be stored: out of memory");
        for (uint32_t i = 0; i < b->n_items; i++) {
            eb_proto_item *it = &b->items[i];
            it->normalize = true;
            path_push_index(d, i);
            uint64_t seen = 0;
            TRY(dec_map(d, item_keys, 12, BIT(IT_ID), item_field, it, &seen));
            input_view v = {&it->kind, &it->format, &it->width, &it->height, &it->source,
                            {NULL, &it->segment, &it->epoch, &it->off, &it->len}, &it->frame,
                            &it->text, &it->text_len};
            TRY(input_check(d, &v, seen));
            path_pop(d);
        }
        return EB_OK;
    }
}

enum { IR_ID, IR_STATUS, IR_ERROR, IR_HASH, IR_DIMS, IR_TIMINGS };
static const map_key item_result_keys[] = {KEY("id"),   KEY("status"), KEY("error"),
                                           KEY("hash"), KEY("dims"),   KEY("timings")};

static eb_status item_result_field(dec *d, int f, void *obj)
{
    eb_proto_item_result *r = obj;
    switch (f) {
    case IR_ID: return get_uint(d, &r->item_id);
    case IR_STATUS: return get_status(d, &r->status);
    case IR_ERROR: {
        eb_proto_error e;
        TRY(dec_error_obj(d, &e));
        r->error = e.message;
        return EB_OK;
    }
    case IR_HASH:
        r->has_hash = true;
        return get_bin_exact(d, r->hash, EB_PROTO_HASH_BYTES);
    case IR_DIMS: return get_u32_range(d, 0, d->lim->max_dims, "max_dims", &r->dims);
    default: return dec_timings(d, &r->timings);
    }
}

enum { BR_BID, BR_BATCH, BR_ITEMS };
static const map_key batch_reply_keys[] = {KEY("bid"), KEY("batch"), KEY("items")};

static eb_status batch_reply_field(dec *d, int f, void *obj)
{
    eb_proto_msg *m = obj;
    eb_proto_batch_reply *b = &m->u.batch_reply;
    switch (f) {
    case BR_BID: return get_bid(d, m);
    case BR_BATCH: return get_uint(d, &b->batch_id);
    default:
        TRY(get_array(d, d->lim->max_batch_items, "max_batch_items", &b->n_items));
        b->items = alloc_array(d, b->n_items, sizeof *b->items);
        if (!b->items)
            return fail(d, EB_ERR_NOMEM, "cannot be stored: out of memory");
        for (uint32_t i = 0; i < b->n_items; i++) {
            eb_proto_timings_clear(&b->items[i].timings);
            path_push_index(d, i);
            TRY(dec_map(d, item_result_keys, 6, BIT(IR_ID) | BIT(IR_STATUS), item_result_field,
                        &b->items[i], NULL));
            path_pop(d);
        }
        return EB_OK;
    }
}

enum { RL_BID, RL_NAME };
static const map_key release_keys[] = {KEY("bid"), KEY("name")};

static eb_status release_field(dec *d, int f, void *obj)
{
    eb_proto_msg *m = obj;
    if (f == RL_BID)
        return get_bid(d, m);
    return get_segment_name(d, &m->u.release.segment);
}

/* ---- top-level decode -------------------------------------------------------------------- */

typedef struct schema {
    const map_key *keys;
    int n_keys;
    uint64_t required; /* besides bid */
    field_fn fn;
} schema;

static const schema schemas[EB_MSG_KIND_COUNT] = {
    [EB_MSG_C_REGISTER] = {register_keys, 3, BIT(REG_NAME) | BIT(REG_SIZE), register_field},
    [EB_MSG_C_CHALLENGE] = {challenge_keys, 3, BIT(CH_NAME) | BIT(CH_NONCE), challenge_field},
    [EB_MSG_C_PROVE] = {prove_keys, 2, BIT(PR_NAME), prove_field},
    [EB_MSG_C_REGISTERED] = {registered_keys, 6, BIT(RD_NAME) | BIT(RD_STATUS),
                             registered_field},
    [EB_MSG_C_REQUEST] = {request_keys, 7, BIT(RQ_ID) | BIT(RQ_OP), request_field},
    [EB_MSG_C_REPLY] = {reply_keys, 11, BIT(RP_ID) | BIT(RP_STATUS), reply_field},
    [EB_MSG_C_HEARTBEAT] = {heartbeat_keys, 4, 0, heartbeat_field},
    [EB_MSG_C_CANCEL] = {cancel_keys, 2, BIT(CA_ID), cancel_field},
    [EB_MSG_C_DISCONNECT] = {disconnect_keys, 2, 0, disconnect_field},
    [EB_MSG_W_READY] = {ready_keys, 6,
                        BIT(RY_WORKER) | BIT(RY_BACKEND) | BIT(RY_MAX_BATCH) | BIT(RY_MODELS),
                        ready_field},
    [EB_MSG_W_REQUEST] = {batch_keys, 4, BIT(BT_BATCH) | BIT(BT_MODEL) | BIT(BT_ITEMS),
                          batch_field},
    [EB_MSG_W_REPLY] = {batch_reply_keys, 3, BIT(BR_BATCH) | BIT(BR_ITEMS), batch_reply_field},
    [EB_MSG_W_HEARTBEAT] = {heartbeat_keys, 4, 0, heartbeat_field},
    [EB_MSG_W_DISCONNECT] = {disconnect_keys, 2, 0, disconnect_field},
    [EB_MSG_W_CREDIT] = {credit_keys, 2, BIT(CR_CREDIT), credit_field},
    [EB_MSG_W_RELEASE_SEGMENT] = {release_keys, 2, BIT(RL_NAME), release_field},
};

/* After the map: checks that need the whole message. */
static eb_status decode_finish(dec *d, eb_proto_msg *m, uint64_t seen)
{
    switch (m->kind) {
    case EB_MSG_C_REGISTERED:
        if (m->u.registered.status == 0 &&
            (seen & (BIT(RD_SEG) | BIT(RD_EPOCH))) != (BIT(RD_SEG) | BIT(RD_EPOCH)))
            return fail(d, EB_ERR_PROTOCOL, "has status 0 but lacks \"seg\" or \"epoch\"");
        if (m->u.registered.status != 0 && !m->u.registered.error)
            m->u.registered.error = "";
        break;
    case EB_MSG_C_REQUEST:
        TRY(request_check(d, &m->u.request));
        TRY(check_all_frames_used(d));
        break;
    case EB_MSG_C_REPLY: {
        eb_proto_reply *r = &m->u.reply;
        if (r->status != 0 && !r->error)
            r->error = "";
        if (d->n_frames != 0 && d->n_frames != r->n_results)
            return fail(d, EB_ERR_PROTOCOL, "has %zu item frames for %u results: expected none "
                        "or one per result", d->n_frames, r->n_results);
        for (uint32_t i = 0; i < r->n_results; i++) {
            if (r->results[i].status != 0 && !r->results[i].error)
                r->results[i].error = "";
            if (d->n_frames)
                TRY(check_embedding_frame(d, "results", i, r->results[i].status,
                                          r->results[i].dims));
        }
        break;
    }
    case EB_MSG_W_REQUEST:
        TRY(check_all_frames_used(d));
        break;
    case EB_MSG_W_REPLY: {
        eb_proto_batch_reply *b = &m->u.batch_reply;
        if (d->n_frames != b->n_items)
            return fail(d, EB_ERR_PROTOCOL, "has %zu item frames for %u items: expected one per "
                        "item", d->n_frames, b->n_items);
        for (uint32_t i = 0; i < b->n_items; i++) {
            if (b->items[i].status != 0 && !b->items[i].error)
                b->items[i].error = "";
            TRY(check_embedding_frame(d, "items", i, b->items[i].status, b->items[i].dims));
        }
        break;
    }
    default:
        if (d->n_frames)
            return fail(d, EB_ERR_PROTOCOL, "carries %zu item frames: this command takes none",
                        d->n_frames);
        break;
    }
    return EB_OK;
}

/* Best effort after a failed REQUEST/CANCEL decode: find a top-level unsigned "id". */
static uint64_t find_request_id(const void *body, size_t len)
{
    dec d = {0};
    d.start = d.p = body;
    d.end = d.p + len;
    mp_val v;
    if (mp_read(&d, &v) != EB_OK || v.type != MP_MAP)
        return 0;
    for (uint32_t i = 0; i < v.len; i++) {
        mp_val k, x;
        if (mp_read(&d, &k) != EB_OK)
            return 0;
        const uint8_t *save = d.p;
        if (k.type == MP_STR && k.len == 2 && memcmp(k.data, "id", 2) == 0) {
            if (mp_read(&d, &x) == EB_OK && x.type == MP_UINT)
                return x.u;
            return 0;
        }
        d.p = save;
        if (mp_skip(&d) != EB_OK)
            return 0;
    }
    return 0;
}

eb_status eb_proto_decode(eb_proto_channel channel, uint8_t command, bool from_broker,
                          const void *body, size_t body_len, const size_t *frame_sizes,
                          size_t n_frames, const eb_proto_limits *limits, eb_proto_msg *out,
                          uint64_t *request_id, char *err, size_t err_len)
{
    eb_proto_limits defaults;
    if (!limits) {
        eb_proto_limits_default(&defaults);
        limits = &defaults;
    }
    memset(out, 0, sizeof *out);
    if (request_id)
        *request_id = 0;
    if (err && err_len)
        err[0] = '\0';
    dec d = {0};
    d.start = d.p = body;
    d.end = d.p + (body ? body_len : 0);
    d.lim = limits;
    d.err = err;
    d.err_len = err_len;
    d.frame_sizes = frame_sizes;
    d.n_frames = n_frames;
    d.from_broker = from_broker;

    eb_proto_kind kind = eb_proto_kind_of(channel, command);
    if (kind == EB_MSG_NONE)
        return fail(&d, EB_ERR_PROTOCOL, "unknown command byte 0x%02x on the %s channel",
                    command, channel == EB_PROTO_CHANNEL_WORKER ? "worker" : "client");
    const kind_info *ki = &kinds[kind];
    path_push_key(&d, ki->path);
    if ((ki->dir == DIR_TO_BROKER && from_broker) || (ki->dir == DIR_FROM_BROKER && !from_broker))
        return fail(&d, EB_ERR_PROTOCOL, "(command %s 0x%02x) is only sent %s the broker",
                    ki->name, command, ki->dir == DIR_TO_BROKER ? "to" : "by");
    if (!body && body_len)
        return fail(&d, EB_ERR_INVALID, "body is NULL");
    if (body_len > limits->max_body_bytes)
        return fail(&d, EB_ERR_TOO_LARGE, "body of %zu bytes exceeds max_body_bytes %llu",
                    body_len, (unsigned long long)limits->max_body_bytes);
    if (n_frames && !frame_sizes)
        return fail(&d, EB_ERR_INVALID, "frame_sizes is NULL for %zu frames", n_frames);
    if (n_frames > limits->max_batch_items)
        return fail(&d, EB_ERR_TOO_LARGE, "has %zu item frames, exceeds max_batch_items %u",
                    n_frames, limits->max_batch_items);
    uint64_t total = body_len;
    for (size_t i = 0; i < n_frames; i++)
        total += frame_sizes[i];
    if (total > limits->max_message_bytes)
        return fail(&d, EB_ERR_TOO_LARGE, "message of %llu bytes exceeds max_message_bytes %llu",
                    (unsigned long long)total, (unsigned long long)limits->max_message_bytes);

    d.arena = arena_new();
    if (!d.arena)
        return fail(&d, EB_ERR_NOMEM, "cannot be decoded: out of memory");
    d.frame_used = arena_zalloc(d.arena, n_frames ? n_frames : 1);
    eb_status st = d.frame_used ? EB_OK : fail(&d, EB_ERR_NOMEM, "cannot be decoded: out of "
                                                                 "memory");
    eb_proto_msg_init(out, kind);
    out->from_broker = from_broker;
    out->arena = d.arena;
    if (kind == EB_MSG_C_REPLY)
        eb_proto_timings_clear(&out->u.reply.timings);

    const schema *s = &schemas[kind];
    uint64_t seen = 0;
    if (st == EB_OK)
        st = dec_map(&d, s->keys, s->n_keys, s->required | (from_broker ? BIT(F_BID) : 0), s->fn,
                     out, &seen);
    if (st == EB_OK && d.p != d.end)
        st = fail(&d, EB_ERR_PROTOCOL, "body has %zu trailing bytes after the map",
                  (size_t)(d.end - d.p));
    if (st == EB_OK)
        st = decode_finish(&d, out, seen);

    if (request_id && (kind == EB_MSG_C_REQUEST || kind == EB_MSG_C_CANCEL)) {
        if (st == EB_OK)
            *request_id = kind == EB_MSG_C_REQUEST ? out->u.request.id : out->u.cancel.id;
        else
            *request_id = find_request_id(body, body ? body_len : 0);
    }
    if (st != EB_OK)
        eb_proto_msg_free(out);
    return st;
}

/* ---- encoder ----------------------------------------------------------------------------- */

/* The encoder writes msgpack itself, straight into one growing buffer, choosing every header
 * exactly as msgpack-c's packer does (smallest form; str8 for 32..255-byte strings; integers
 * by value, not by C type; doubles always as float 64). msgpack-c's packer hands each header
 * and each body to a write callback, and that per-piece call cost more than the encoding. */
typedef struct enc {
    uint8_t *data; /* malloc'ed; becomes eb_proto_buf.data */
    size_t len, cap;
    bool failed;
    char *err;
    size_t err_len;
    eb_status status;
} enc;

/* Most bodies fit, and a first buffer this small comes from glibc's per-thread cache (requests up
 * to 1032 bytes); the buffer doubles when a body does not fit. */
enum { ENC_FIRST_BYTES = 1024 };

static void enc_nomem(enc *e)
{
    if (!e->failed) {
        e->failed = true;
        e->status = EB_ERR_NOMEM;
        if (e->err && e->err_len)
            snprintf(e->err, e->err_len, "cannot encode: out of memory");
    }
}

static void enc_bad(enc *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void enc_bad(enc *e, const char *fmt, ...)
{
    if (e->failed)
        return;
    e->failed = true;
    e->status = EB_ERR_INVALID;
    if (e->err && e->err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->err, e->err_len, fmt, ap);
        va_end(ap);
    }
}

static uint8_t *enc_grow(enc *e, size_t n) __attribute__((noinline));

static uint8_t *enc_grow(enc *e, size_t n)
{
    size_t cap = e->cap ? e->cap : ENC_FIRST_BYTES;
    while (cap - e->len < n) {
        if (cap > SIZE_MAX / 2) {
            enc_nomem(e);
            return NULL;
        }
        cap *= 2;
    }
    uint8_t *data = realloc(e->data, cap);
    if (!data) {
        enc_nomem(e);
        return NULL;
    }
    e->data = data;
    e->cap = cap;
    return e->data + e->len;
}

/* Room for n more bytes at e->data + e->len, or NULL (out of memory: recorded). */
static inline uint8_t *enc_room(enc *e, size_t n)
{
    if (n <= e->cap - e->len)
        return e->data + e->len;
    return enc_grow(e, n);
}

static void put_raw(enc *e, const void *p, size_t n)
{
    uint8_t *q = enc_room(e, n);
    if (!q)
        return;
    if (n)
        memcpy(q, p, n);
    e->len += n;
}

/* Write a header byte followed by `width` (0, 1, 2, 4 or 8) big-endian bytes of v at q (which
 * has room); returns the bytes written. */
static inline size_t write_head(uint8_t *q, uint8_t byte, int width, uint64_t v)
{
    q[0] = byte;
    for (int i = 0; i < width; i++)
        q[1 + i] = (uint8_t)(v >> (8 * (width - 1 - i)));
    return 1 + (size_t)width;
}

static inline void put_head(enc *e, uint8_t byte, int width, uint64_t v)
{
    uint8_t *q = enc_room(e, 9);
    if (q)
        e->len += write_head(q, byte, width, v);
}

/* Map, array, str and bin headers (at most 5 bytes) at q: fix form (when n < fix_max), then
 * 8 bits (when op8 != 0), 16 bits, 32 bits (n is cut to 32 bits there, as msgpack-c does). */
static inline size_t write_len_head(uint8_t *q, size_t n, uint8_t fix, size_t fix_max,
                                    uint8_t op8, uint8_t op16, uint8_t op32)
{
    if (n < fix_max)
        return write_head(q, (uint8_t)(fix | n), 0, 0);
    if (op8 && n < 256)
        return write_head(q, op8, 1, n);
    if (n < 65536)
        return write_head(q, op16, 2, n);
    return write_head(q, op32, 4, (uint32_t)n);
}

static void put_len_head(enc *e, size_t n, uint8_t fix, size_t fix_max, uint8_t op8,
                         uint8_t op16, uint8_t op32)
{
    uint8_t *q = enc_room(e, 5);
    if (q)
        e->len += write_len_head(q, n, fix, fix_max, op8, op16, op32);
}

/* A str or bin header and its bytes, with one room check. */
static void put_blob(enc *e, const void *p, size_t n, uint8_t fix, size_t fix_max, uint8_t op8,
                     uint8_t op16, uint8_t op32)
{
    uint8_t *q = enc_room(e, 5 + n);
    if (!q)
        return;
    size_t h = write_len_head(q, n, fix, fix_max, op8, op16, op32);
    bytes_copy(q + h, p, n);
    e->len += h + n;
}

static void put_map(enc *e, uint32_t n)
{
    if (n < 16)
        put_head(e, (uint8_t)(0x80 | n), 0, 0);
    else
        put_len_head(e, n, 0x80, 16, 0, 0xde, 0xdf);
}

static void put_array(enc *e, uint32_t n)
{
    if (n < 16)
        put_head(e, (uint8_t)(0x90 | n), 0, 0);
    else
        put_len_head(e, n, 0x90, 16, 0, 0xdc, 0xdd);
}

static void put_uint(enc *e, uint64_t v)
{
    if (v < 0x80)
        put_head(e, (uint8_t)v, 0, 0);
    else if (v < 0x100)
        put_head(e, 0xcc, 1, v);
    else if (v < 0x10000)
        put_head(e, 0xcd, 2, v);
    else if (v < 0x100000000ull)
        put_head(e, 0xce, 4, v);
    else
        put_head(e, 0xcf, 8, v);
}

static void put_int(enc *e, int64_t v)
{
    if (v >= 0)
        put_uint(e, (uint64_t)v);
    else if (v >= -32)
        put_head(e, (uint8_t)v, 0, 0); /* negative fixint */
    else if (v >= -128)
        put_head(e, 0xd0, 1, (uint64_t)v);
    else if (v >= -32768)
        put_head(e, 0xd1, 2, (uint64_t)v);
    else if (v >= INT32_MIN)
        put_head(e, 0xd2, 4, (uint64_t)v);
    else
        put_head(e, 0xd3, 8, (uint64_t)v);
}

static void put_double(enc *e, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_head(e, 0xcb, 8, bits);
}

static void put_bool(enc *e, bool v) { put_head(e, v ? 0xc3 : 0xc2, 0, 0); }

static void put_strn(enc *e, const char *s, size_t n)
{
    put_blob(e, s, n, 0xa0, 32, 0xd9, 0xda, 0xdb);
}

static void put_str(enc *e, const char *s) { put_strn(e, s ? s : "", s ? strlen(s) : 0); }

static void put_bin(enc *e, const uint8_t *p, size_t n)
{
    put_blob(e, p, n, 0, 0, 0xc4, 0xc5, 0xc6);
}

/* A string of at most 31 bytes: a fixstr. */
static void put_fixstr(enc *e, const char *s, size_t n)
{
    uint8_t *q = enc_room(e, 1 + n);
    if (!q)
        return;
    q[0] = (uint8_t)(0xa0 | n);
    bytes_copy(q + 1, s, n);
    e->len += 1 + n;
}

/* Keys are string literals (the "" makes anything else a compile error) shorter than 32 bytes
 * (the array size turns negative otherwise), so they are fixstrs of known length. */
#define put_key(e, key)                                                                            \
    put_fixstr((e), "" key, sizeof(key) - 1 + 0 * sizeof(char[sizeof(key) <= 32 ? 1 : -1]))

/* A required string field. */
static void put_req_str_n(enc *e, const char *key, size_t key_len, const char *s,
                          const char *what)
{
    if (!s)
        enc_bad(e, "cannot encode %s: %s is NULL", what, key);
    put_fixstr(e, key, key_len);
    put_str(e, s);
}

#define put_req_str(e, key, s, what)                                                              \
    put_req_str_n((e), "" key, sizeof(key) - 1 + 0 * sizeof(char[sizeof(key) <= 32 ? 1 : -1]),  \
                  (s), (what))

static void put_error_obj(enc *e, int32_t code, const char *message)
{
    put_map(e, message ? 2 : 1);
    put_key(e, "code");
    put_int(e, code);
    if (message) {
        put_key(e, "message");
        put_str(e, message);
    }
}

static uint32_t timings_count(const eb_proto_timings *t)
{
    uint32_t n = 0;
    for (int i = 0; i < EB_STAGE_COUNT; i++)
        n += t->us[i] >= 0;
    return n;
}

static void put_timings(enc *e, const eb_proto_timings *t)
{
    put_map(e, timings_count(t));
    for (int i = 0; i < EB_STAGE_COUNT; i++)
        if (t->us[i] >= 0) {
            put_fixstr(e, stage_keys[i].name, stage_keys[i].len);
            put_uint(e, (uint64_t)t->us[i]);
        }
}

static bool kind_ok(eb_proto_input_kind k) { return k >= EB_INPUT_IMAGE && k <= EB_INPUT_TEXT; }
static bool format_ok(eb_proto_format f) { return f >= EB_FORMAT_AUTO && f <= EB_FORMAT_WEBP; }

/* The fields shared by client inputs and worker items: kind, format, width/height, source. */
static uint32_t input_common_count(eb_proto_input_kind kind, eb_proto_format format,
                                   eb_proto_source source)
{
    uint32_t n = 1; /* kind */
    if (kind == EB_INPUT_TEXT)
        return n + 1; /* text */
    if (kind == EB_INPUT_IMAGE && format != EB_FORMAT_AUTO)
        n++;
    if (kind == EB_INPUT_RAW_RGB8)
        n += 2;
    return n + (source == EB_SOURCE_SHM || source == EB_SOURCE_INLINE);
}

static void put_input_common(enc *e, eb_proto_input_kind kind, eb_proto_format format,
                             uint32_t width, uint32_t height, eb_proto_source source,
                             const uint32_t *seg, const char *segment, uint32_t epoch,
                             uint64_t off, uint64_t len, uint32_t frame, const char *text,
                             uint32_t text_len)
{
    if (!kind_ok(kind) || !format_ok(format)) {
        enc_bad(e, "cannot encode an input of kind %d format %d", (int)kind, (int)format);
        return;
    }
    put_key(e, "kind");
    put_fixstr(e, kind_names[kind].name, kind_names[kind].len);
    if (kind == EB_INPUT_TEXT) {
        if (!text && text_len)
            enc_bad(e, "cannot encode a text input: text is NULL");
        put_key(e, "text");
        put_strn(e, text ? text : "", text ? text_len : 0);
        return;
    }
    if (kind == EB_INPUT_IMAGE && format != EB_FORMAT_AUTO) {
        put_key(e, "format");
        put_fixstr(e, format_names[format].name, format_names[format].len);
    }
    if (kind == EB_INPUT_RAW_RGB8) {
        put_key(e, "width");
        put_uint(e, width);
        put_key(e, "height");
        put_uint(e, height);
    }
    if (source == EB_SOURCE_SHM) {
        put_key(e, "shm");
        put_map(e, 4);
        if (segment || !seg) {
            put_req_str(e, "name", segment, "a worker item's shm reference");
        } else {
            put_key(e, "seg");
            put_uint(e, *seg);
        }
        put_key(e, "epoch");
        put_uint(e, epoch);
        put_key(e, "off");
        put_uint(e, off);
        put_key(e, "len");
        put_uint(e, len);
    } else if (source == EB_SOURCE_INLINE) {
        put_key(e, "frame");
        put_uint(e, frame);
    } else {
        enc_bad(e, "cannot encode a %s input without a source (shm or inline)",
                kind_names[kind].name);
    }
}

static void put_input(enc *e, const eb_proto_input *in)
{
    put_map(e, input_common_count(in->kind, in->format, in->source) + in->has_hash);
    put_input_common(e, in->kind, in->format, in->width, in->height, in->source, &in->seg, NULL,
                     in->epoch, in->off, in->len, in->frame, in->text, in->text_len);
    if (in->has_hash) {
        put_key(e, "hash");
        put_bin(e, in->hash, EB_PROTO_HASH_BYTES);
    }
}

static void put_options(enc *e, const eb_proto_options *o, eb_proto_op op)
{
    bool return_default = op != EB_OP_SCAN && op != EB_OP_STORE;
    bool filters = o->template_name || o->source_type;
    uint32_t n = (o->deadline_ms != 0) + (o->priority != EB_PRIORITY_INTERACTIVE) +
                 (!o->normalize) + (o->return_embedding != return_default) + (o->k != 0) +
                 filters + o->store + (o->product_id != NULL) + (o->instruction != NULL) +
                 (o->output_dim != 0) + (o->text_weight >= 0) + (o->image_weight >= 0);
    put_map(e, n);
    if (o->deadline_ms) {
        put_key(e, "deadline_ms");
        put_uint(e, o->deadline_ms);
    }
    if (o->priority != EB_PRIORITY_INTERACTIVE) {
        if (!eb_proto_priority_str(o->priority))
            enc_bad(e, "cannot encode priority %d", (int)o->priority);
        put_key(e, "priority");
        put_str(e, eb_proto_priority_str(o->priority));
    }
    if (!o->normalize) {
        put_key(e, "normalize");
        put_bool(e, false);
    }
    if (o->return_embedding != return_default) {
        put_key(e, "return_embedding");
        put_bool(e, o->return_embedding);
    }
    if (o->k) {
        put_key(e, "k");
        put_uint(e, o->k);
    }
    if (filters) { /* the documented nested form; flat "template"/"source_type" also decode */
        put_key(e, "filters");
        put_map(e, (o->template_name != NULL) + (o->source_type != NULL));
        if (o->template_name) {
            put_key(e, "template");
            put_str(e, o->template_name);
        }
        if (o->source_type) {
            put_key(e, "source_type");
            put_str(e, o->source_type);
        }
    }
    if (o->store) {
        put_key(e, "store");
        put_bool(e, true);
    }
    if (o->product_id) {
        put_key(e, "product_id");
        put_str(e, o->product_id);
    }
    if (o->instruction) {
        put_key(e, "instruction");
        put_str(e, o->instruction);
    }
    if (o->output_dim) {
        put_key(e, "output_dim");
        put_uint(e, o->output_dim);
    }
    if (o->text_weight >= 0) {
        put_key(e, "text_weight");
        put_double(e, o->text_weight);
    }
    if (o->image_weight >= 0) {
        put_key(e, "image_weight");
        put_double(e, o->image_weight);
    }
}

static void enc_request(enc *e, const eb_proto_request *r)
{
    const char *op = eb_proto_op_str(r->op);
    if (!op) {
        enc_bad(e, "cannot encode request %llu: op %d is unknown", (unsigned long long)r->id,
                (int)r->op);
        return;
    }
    if (r->n_inputs && !r->inputs) {
        enc_bad(e, "cannot encode request %llu: inputs is NULL", (unsigned long long)r->id);
        return;
    }
    put_map(e, 4 + (r->model != NULL) + (r->text_model != NULL));
    put_key(e, "id");
    put_uint(e, r->id);
    put_key(e, "op");
    put_fixstr(e, op, op_names[r->op].len);
    if (r->model) {
        put_key(e, "model");
        put_str(e, r->model);
    }
    if (r->text_model) {
        put_key(e, "text_model");
        put_str(e, r->text_model);
    }
    put_key(e, "inputs");
    put_array(e, r->n_inputs);
    for (uint32_t i = 0; i < r->n_inputs; i++)
        put_input(e, &r->inputs[i]);
    put_key(e, "options");
    put_options(e, &r->options, r->op);
}

static void put_result(enc *e, const eb_proto_result *r)
{
    uint32_t n = 2 + (r->status != 0) + r->has_hash + (r->worker != NULL) + r->cached +
                 (r->model_rev != NULL);
    put_map(e, n);
    put_key(e, "status");
    put_int(e, r->status);
    if (r->status != 0) {
        put_key(e, "error");
        put_error_obj(e, r->status, r->error);
    }
    if (r->has_hash) {
        put_key(e, "hash");
        put_bin(e, r->hash, EB_PROTO_HASH_BYTES);
    }
    put_key(e, "dims");
    put_uint(e, r->dims);
    if (r->worker) {
        put_key(e, "worker");
        put_str(e, r->worker);
    }
    if (r->cached) { /* sent only when true (absent = false) */
        put_key(e, "cached");
        put_bool(e, true);
    }
    if (r->model_rev) {
        put_key(e, "model_rev");
        put_str(e, r->model_rev);
    }
}

static void enc_reply(enc *e, const eb_proto_reply *r, uint32_t base)
{
    if ((r->n_results && !r->results) || (r->n_matches && !r->matches) ||
        (r->health_len && !r->health)) {
        enc_bad(e, "cannot encode reply %llu: an array or health is NULL",
                (unsigned long long)r->id);
        return;
    }
    uint32_t n = base + 2 + (r->status != 0) + (r->n_results > 0) +
                 (timings_count(&r->timings) > 0) + (r->n_matches > 0) + r->has_search_error +
                 (r->store_id != NULL) + r->has_deleted + (r->health != NULL);
    put_map(e, n);
    put_key(e, "id");
    put_uint(e, r->id);
    put_key(e, "status");
    put_int(e, r->status);
    if (r->status != 0) {
        put_key(e, "error");
        put_error_obj(e, r->status, r->error);
    }
    if (r->n_results) {
        put_key(e, "results");
        put_array(e, r->n_results);
        for (uint32_t i = 0; i < r->n_results; i++) {
            put_result(e, &r->results[i]);
        }
    }
    if (timings_count(&r->timings) > 0) {
        put_key(e, "timings");
        put_timings(e, &r->timings);
    }
    if (r->n_matches) {
        put_key(e, "matches");
        put_array(e, r->n_matches);
        for (uint32_t i = 0; i < r->n_matches; i++) {
            const eb_proto_match *m = &r->matches[i];
            put_map(e, 2 + (m->template_name != NULL) + (m->source_type != NULL));
            put_req_str(e, "product_id", m->product_id, "a match");
            put_key(e, "score");
            put_double(e, m->score);
            if (m->template_name) {
                put_key(e, "template");
                put_str(e, m->template_name);
            }
            if (m->source_type) {
                put_key(e, "source_type");
                put_str(e, m->source_type);
            }
        }
    }
    if (r->has_search_error) {
        put_key(e, "search_error");
        put_error_obj(e, r->search_error.code, r->search_error.message);
    }
    if (r->store_id) {
        put_key(e, "store_id");
        put_str(e, r->store_id);
    }
    if (r->has_deleted) {
        put_key(e, "deleted");
        put_uint(e, r->deleted);
    }
    if (r->health) {
        put_key(e, "health");
        put_raw(e, r->health, r->health_len); /* already msgpack: copied as is */
    }
}

static void enc_ready(enc *e, const eb_proto_ready *r, uint32_t base)
{
    if (!r->n_models || !r->models) {
        enc_bad(e, "cannot encode READY: no models");
        return;
    }
    put_map(e, base + 4 + (r->device != NULL));
    put_req_str(e, "worker", r->worker_id, "READY");
    put_req_str(e, "backend", r->backend, "READY");
    if (r->device) {
        put_key(e, "device");
        put_str(e, r->device);
    }
    put_key(e, "max_batch");
    put_uint(e, r->max_batch_items);
    put_key(e, "models");
    put_array(e, r->n_models);
    for (uint32_t i = 0; i < r->n_models; i++) {
        const eb_proto_model_desc *m = &r->models[i];
        if (m->input != EB_INPUT_IMAGE && m->input != EB_INPUT_TEXT)
            enc_bad(e, "cannot encode READY: model %u input kind %d", i, (int)m->input);
        put_map(e, 5);
        put_req_str(e, "name", m->name, "a model description");
        put_req_str(e, "model_rev", m->model_rev, "a model description");
        put_req_str(e, "preproc_rev", m->preproc_rev, "a model description");
        put_key(e, "dims");
        put_uint(e, m->dims);
        put_key(e, "input");
        put_str(e, m->input == EB_INPUT_TEXT ? "text" : "image");
    }
}

static void enc_batch(enc *e, const eb_proto_batch *b, uint32_t base)
{
    if (b->n_items && !b->items) {
        enc_bad(e, "cannot encode batch %llu: items is NULL", (unsigned long long)b->batch_id);
        return;
    }
    put_map(e, base + 3);
    put_key(e, "batch");
    put_uint(e, b->batch_id);
    put_req_str(e, "model", b->model, "a batch");
    put_key(e, "items");
    put_array(e, b->n_items);
    for (uint32_t i = 0; i < b->n_items; i++) {
        const eb_proto_item *it = &b->items[i];
        uint32_t n = 1 + input_common_count(it->kind, it->format, it->source) + !it->normalize +
                     (it->instruction != NULL) + (it->output_dim != 0);
        put_map(e, n);
        put_key(e, "id");
        put_uint(e, it->item_id);
        put_input_common(e, it->kind, it->format, it->width, it->height, it->source, NULL,
                         it->segment, it->epoch, it->off, it->len, it->frame, it->text,
                         it->text_len);
        if (!it->normalize) {
            put_key(e, "normalize");
            put_bool(e, false);
        }
        if (it->instruction) {
            put_key(e, "instruction");
            put_str(e, it->instruction);
        }
        if (it->output_dim) {
            put_key(e, "output_dim");
            put_uint(e, it->output_dim);
        }
    }
}

static void enc_batch_reply(enc *e, const eb_proto_batch_reply *b, uint32_t base)
{
    if (b->n_items && !b->items) {
        enc_bad(e, "cannot encode batch reply %llu: items is NULL",
                (unsigned long long)b->batch_id);
        return;
    }
    put_map(e, base + 2);
    put_key(e, "batch");
    put_uint(e, b->batch_id);
    put_key(e, "items");
    put_array(e, b->n_items);
    for (uint32_t i = 0; i < b->n_items; i++) {
        const eb_proto_item_result *r = &b->items[i];
        put_map(e, 3 + (r->status != 0) + r->has_hash + (timings_count(&r->timings) > 0));
        put_key(e, "id");
        put_uint(e, r->item_id);
        put_key(e, "status");
        put_int(e, r->status);
        if (r->status != 0) {
            put_key(e, "error");
            put_error_obj(e, r->status, r->error);
        }
        if (r->has_hash) {
            put_key(e, "hash");
            put_bin(e, r->hash, EB_PROTO_HASH_BYTES);
        }
        put_key(e, "dims");
        put_uint(e, r->dims);
        if (timings_count(&r->timings) > 0) {
            put_key(e, "timings");
            put_timings(e, &r->timings);
        }
    }
}

eb_status eb_proto_encode(const eb_proto_msg *msg, eb_proto_buf *out, char *err, size_t err_len)
{
    out->data = NULL;
    out->len = 0;
    if (err && err_len)
        err[0] = '\0';
    if (!msg || msg->kind <= EB_MSG_NONE || msg->kind >= EB_MSG_KIND_COUNT) {
        if (err && err_len)
            snprintf(err, err_len, "cannot encode: message kind %d is unknown",
                     msg ? (int)msg->kind : -1);
        return EB_ERR_INVALID;
    }
    const kind_info *ki = &kinds[msg->kind];
    if ((ki->dir == DIR_TO_BROKER && msg->from_broker) ||
        (ki->dir == DIR_FROM_BROKER && !msg->from_broker)) {
        if (err && err_len)
            snprintf(err, err_len, "cannot encode %s: it is only sent %s the broker (from_broker "
                     "is %s)", ki->name, ki->dir == DIR_TO_BROKER ? "to" : "by",
                     msg->from_broker ? "true" : "false");
        return EB_ERR_INVALID;
    }
    enc e = {0};
    e.err = err;
    e.err_len = err_len;
    uint32_t base = msg->from_broker ? 1 : 0; /* the "bid" key */

    /* Map header (counting "bid" when the broker sends), the fields, then "bid" last: key
     * order carries no meaning in a msgpack map. */
    const eb_proto_heartbeat *hb = &msg->u.heartbeat;
    switch (msg->kind) {
    case EB_MSG_C_REGISTER: put_map(&e, base + 2); break;
    case EB_MSG_C_CHALLENGE: put_map(&e, base + 2); break;
    case EB_MSG_C_PROVE: put_map(&e, base + 1); break;
    case EB_MSG_C_REGISTERED:
        put_map(&e, base + 2 + (msg->u.registered.status != 0 ? 1 : 2));
        break;
    case EB_MSG_C_CANCEL: put_map(&e, base + 1); break;
    case EB_MSG_C_HEARTBEAT:
    case EB_MSG_W_HEARTBEAT: put_map(&e, base + (hb->has_state ? 3 : 0)); break;
    case EB_MSG_C_DISCONNECT:
    case EB_MSG_W_DISCONNECT: put_map(&e, base + (msg->u.disconnect.reason != NULL)); break;
    case EB_MSG_W_CREDIT: put_map(&e, base + 1); break;
    case EB_MSG_W_RELEASE_SEGMENT: put_map(&e, base + 1); break;
    default: break; /* written by the kind's function below */
    }

    switch (msg->kind) {
    case EB_MSG_C_REGISTER:
        put_req_str(&e, "name", msg->u.reg.segment, "REGISTER");
        put_key(&e, "size");
        put_uint(&e, msg->u.reg.size);
        break;
    case EB_MSG_C_CHALLENGE:
        put_req_str(&e, "name", msg->u.challenge.segment, "CHALLENGE");
        put_key(&e, "nonce");
        put_bin(&e, msg->u.challenge.nonce, EB_PROTO_NONCE_BYTES);
        break;
    case EB_MSG_C_PROVE: put_req_str(&e, "name", msg->u.prove.segment, "PROVE"); break;
    case EB_MSG_C_REGISTERED: {
        const eb_proto_registered *r = &msg->u.registered;
        put_req_str(&e, "name", r->segment, "REGISTERED");
        put_key(&e, "status");
        put_int(&e, r->status);
        if (r->status != 0) {
            put_key(&e, "error");
            put_error_obj(&e, r->status, r->error);
        } else {
            put_key(&e, "seg");
            put_uint(&e, r->seg);
            put_key(&e, "epoch");
            put_uint(&e, r->epoch);
        }
        break;
    }
    case EB_MSG_C_REQUEST: enc_request(&e, &msg->u.request); break;
    case EB_MSG_C_REPLY: enc_reply(&e, &msg->u.reply, base); break;
    case EB_MSG_C_CANCEL:
        put_key(&e, "id");
        put_uint(&e, msg->u.cancel.id);
        break;
    case EB_MSG_C_HEARTBEAT:
    case EB_MSG_W_HEARTBEAT:
        if (hb->has_state) {
            put_key(&e, "warm");
            put_bool(&e, hb->warm);
            put_key(&e, "healthy");
            put_bool(&e, hb->healthy);
            put_key(&e, "inflight");
            put_uint(&e, hb->inflight_items);
        }
        break;
    case EB_MSG_C_DISCONNECT:
    case EB_MSG_W_DISCONNECT:
        if (msg->u.disconnect.reason) {
            put_key(&e, "reason");
            put_str(&e, msg->u.disconnect.reason);
        }
        break;
    case EB_MSG_W_READY: enc_ready(&e, &msg->u.ready, base); break;
    case EB_MSG_W_REQUEST: enc_batch(&e, &msg->u.batch, base); break;
    case EB_MSG_W_REPLY: enc_batch_reply(&e, &msg->u.batch_reply, base); break;
    case EB_MSG_W_CREDIT:
        put_key(&e, "credit");
        put_uint(&e, msg->u.credit.credit);
        break;
    case EB_MSG_W_RELEASE_SEGMENT:
        put_req_str(&e, "name", msg->u.release.segment, "RELEASE_SEGMENT");
        break;
    default: break;
    }
    if (base) {
        put_key(&e, "bid");
        put_uint(&e, msg->bid);
    }
    if (e.failed) {
        free(e.data);
        return e.status;
    }
    out->data = e.data;
    out->len = e.len;
    return EB_OK;
}

/* ---- message helpers --------------------------------------------------------------------- */

void eb_proto_timings_clear(eb_proto_timings *timings)
{
    for (int i = 0; i < EB_STAGE_COUNT; i++)
        timings->us[i] = -1;
}

void eb_proto_msg_init(eb_proto_msg *msg, eb_proto_kind kind)
{
    memset(msg, 0, sizeof *msg);
    msg->kind = kind;
    if (kind > EB_MSG_NONE && kind < EB_MSG_KIND_COUNT)
        msg->from_broker = kinds[kind].dir == DIR_FROM_BROKER;
    switch (kind) {
    case EB_MSG_C_REQUEST:
        msg->u.request.options.normalize = true;
        msg->u.request.options.return_embedding = true;
        msg->u.request.options.text_weight = -1;
        msg->u.request.options.image_weight = -1;
        break;
    case EB_MSG_C_REPLY: eb_proto_timings_clear(&msg->u.reply.timings); break;
    default: break;
    }
}

void eb_proto_msg_free(eb_proto_msg *msg)
{
    if (!msg)
        return;
    arena_free(msg->arena);
    memset(msg, 0, sizeof *msg);
}

void eb_proto_buf_free(eb_proto_buf *buf)
{
    if (!buf)
        return;
    free(buf->data);
    buf->data = NULL;
    buf->len = 0;
}

bool eb_proto_kind_wire(eb_proto_kind kind, eb_proto_channel *channel, uint8_t *command)
{
    if (kind <= EB_MSG_NONE || kind >= EB_MSG_KIND_COUNT)
        return false;
    if (channel)
        *channel = kinds[kind].channel;
    if (command)
        *command = kinds[kind].command;
    return true;
}

eb_proto_kind eb_proto_kind_of(eb_proto_channel channel, uint8_t command)
{
    for (int k = EB_MSG_NONE + 1; k < EB_MSG_KIND_COUNT; k++)
        if (kinds[k].channel == channel && kinds[k].command == command)
            return (eb_proto_kind)k;
    return EB_MSG_NONE;
}

const char *eb_proto_kind_name(eb_proto_kind kind)
{
    if (kind <= EB_MSG_NONE || kind >= EB_MSG_KIND_COUNT)
        return "?";
    return kinds[kind].name;
}

eb_status eb_proto_parse_header(const void *data, size_t len, eb_proto_channel *channel,
                                char *err, size_t err_len)
{
    const char *h = data;
    if (h && len == EB_PROTO_HEADER_LEN && memcmp(h, "EMB", 3) == 0 && (h[4] == 'C' || h[4] == 'W')) {
        if (h[3] == '0' + EB_PROTO_VERSION) {
            *channel = h[4] == 'C' ? EB_PROTO_CHANNEL_CLIENT : EB_PROTO_CHANNEL_WORKER;
            return EB_OK;
        }
        if (err && err_len)
            snprintf(err, err_len, "protocol header \"%.5s\": version %c is not supported, this "
                     "side speaks EMB%d%c", h, h[3], EB_PROTO_VERSION, h[4]);
        return EB_ERR_PROTOCOL;
    }
    if (err && err_len) {
        char shown[4 * 16 + 1] = "";
        size_t used = 0;
        for (size_t i = 0; h && i < len && i < 16; i++) {
            unsigned char c = (unsigned char)h[i];
            int n = c >= 0x20 && c < 0x7f && c != '\\' && c != '"'
                        ? snprintf(shown + used, sizeof shown - used, "%c", c)
                        : snprintf(shown + used, sizeof shown - used, "\\x%02x", c);
            if (n > 0)
                used += (size_t)n;
        }
        snprintf(err, err_len, "protocol header \"%s\"%s (%zu bytes) is not \"EMB1C\" or "
                 "\"EMB1W\"", shown, len > 16 ? "..." : "", len);
    }
    return EB_ERR_PROTOCOL;
}

/* ---- limits ------------------------------------------------------------------------------ */

void eb_proto_limits_default(eb_proto_limits *l)
{
    l->max_message_bytes = 64ull << 20;
    l->max_body_bytes = 20ull << 20;
    l->max_input_bytes = 32ull << 20;
    l->max_batch_items = 256;
    l->max_text_bytes = 64u << 10;
    l->max_deadline_ms = 3600000;
    l->max_k = 1000;
    l->max_models = 64;
    l->max_dims = 65536;
    l->max_pixels = 64u << 20;
}

eb_status eb_proto_limits_from_config(const eb_config *cfg, eb_proto_limits *l, char *err,
                                      size_t err_len)
{
    eb_proto_limits_default(l);
    struct {
        const char *key;
        int64_t min, max;
        uint64_t *u64;
        uint32_t *u32;
    } keys[] = {
        {"max_message_bytes", 1024, (int64_t)1 << 40, &l->max_message_bytes, NULL},
        {"max_body_bytes", 1024, (int64_t)1 << 32, &l->max_body_bytes, NULL},
        {"max_input_bytes", 1, (int64_t)1 << 40, &l->max_input_bytes, NULL},
        {"max_batch_items", 1, 65536, NULL, &l->max_batch_items},
        {"max_text_bytes", 1, (int64_t)1 << 30, NULL, &l->max_text_bytes},
        {"max_deadline_ms", 1, UINT32_MAX, NULL, &l->max_deadline_ms},
        {"max_k", 1, 100000, NULL, &l->max_k},
        {"max_models", 1, 4096, NULL, &l->max_models},
        {"max_dims", 1, 1 << 24, NULL, &l->max_dims},
        {"max_pixels", 1, UINT32_MAX, NULL, &l->max_pixels},
    };
    eb_status result = EB_OK;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        int64_t fallback = keys[i].u64 ? (int64_t)*keys[i].u64 : (int64_t)*keys[i].u32, v;
        eb_status st = eb_config_get_int(cfg, keys[i].key, fallback, keys[i].min, keys[i].max, &v,
                                         result == EB_OK ? err : NULL,
                                         result == EB_OK ? err_len : 0);
        if (st != EB_OK) {
            result = st;
            continue;
        }
        if (keys[i].u64)
            *keys[i].u64 = (uint64_t)v;
        else
            *keys[i].u32 = (uint32_t)v;
    }
    return result;
}

/* ---- validators -------------------------------------------------------------------------- */

bool eb_proto_utf8_valid(const void *data, size_t len)
{
    const uint8_t *s = data;
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf)
            n = 1, cp = c & 0x1f, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef)
            n = 2, cp = c & 0x0f, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4)
            n = 3, cp = c & 0x07, min = 0x10000;
        else
            return false; /* continuation byte, overlong lead 0xc0/0xc1, or > U+10FFFF lead */
        if (len - i - 1 < n)
            return false;
        for (size_t j = 1; j <= n; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

bool eb_proto_model_name_valid(const char *name, size_t len)
{
    return name && len <= EB_PROTO_MODEL_NAME_MAX && token_valid(name, len, true);
}

bool eb_proto_segment_name_valid(const char *name, size_t len)
{
    return name && len >= 2 && len <= EB_PROTO_SEGMENT_NAME_MAX && name[0] == '/' &&
           token_valid(name + 1, len - 1, false);
}

const char *eb_proto_op_str(eb_proto_op op)
{
    return op >= EB_OP_EMBED_IMAGE && op <= EB_OP_LAST ? op_names[op].name : NULL;
}

bool eb_proto_op_from_str(const char *s, size_t len, eb_proto_op *op)
{
    for (int i = EB_OP_EMBED_IMAGE; i <= EB_OP_LAST; i++)
        if (s && key_is(&op_names[i], (const uint8_t *)s, len)) {
            *op = (eb_proto_op)i;
            return true;
        }
    return false;
}

const char *eb_proto_input_kind_str(eb_proto_input_kind kind)
{
    return kind >= EB_INPUT_IMAGE && kind <= EB_INPUT_TEXT ? kind_names[kind].name : NULL;
}

const char *eb_proto_format_str(eb_proto_format format)
{
    return format >= EB_FORMAT_AUTO && format <= EB_FORMAT_WEBP ? format_names[format].name : NULL;
}

const char *eb_proto_priority_str(eb_proto_priority priority)
{
    return priority == EB_PRIORITY_INTERACTIVE || priority == EB_PRIORITY_BULK
               ? priority_names[priority].name
               : NULL;
}

const char *eb_proto_stage_str(eb_proto_stage stage)
{
    return stage >= 0 && stage < EB_STAGE_COUNT ? stage_keys[stage].name : NULL;
}

/* ---- msgpack -> JSON --------------------------------------------------------------------- */

typedef struct sbuf {
    char *data;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void sb_json_str(sbuf *b, const uint8_t *s, size_t n, bool valid_utf8)
{
    sb_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_put(b, e, 2);
        } else if (c < 0x20 || (!valid_utf8 && c >= 0x80)) {
            sb_printf(b, "\\u%04x", c);
        } else {
            sb_put(b, (const char *)&s[i], 1);
        }
    }
    sb_put(b, "\"", 1);
}

static eb_status json_value(dec *d, sbuf *b, int depth)
{
    if (depth > EB_PROTO_MAX_DEPTH)
        return EB_ERR_PROTOCOL;
    mp_val v;
    TRY(mp_read(d, &v));
    switch (v.type) {
    case MP_NIL: sb_put(b, "null", 4); break;
    case MP_BOOL: v.b ? sb_put(b, "true", 4) : sb_put(b, "false", 5); break;
    case MP_UINT: sb_printf(b, "%llu", (unsigned long long)v.u); break;
    case MP_INT: sb_printf(b, "%lld", (long long)v.i); break;
    case MP_FLOAT:
        if (isfinite(v.f))
            sb_printf(b, "%.17g", v.f);
        else
            sb_put(b, "null", 4);
        break;
    case MP_STR: sb_json_str(b, v.data, v.len, eb_proto_utf8_valid(v.data, v.len)); break;
    case MP_BIN:
    case MP_EXT:
        sb_put(b, "\"", 1);
        for (uint32_t i = 0; i < v.len; i++)
            sb_printf(b, "%02x", v.data[i]);
        sb_put(b, "\"", 1);
        break;
    case MP_ARRAY:
        sb_put(b, "[", 1);
        for (uint32_t i = 0; i < v.len; i++) {
            if (i)
                sb_put(b, ",", 1);
            TRY(json_value(d, b, depth + 1));
        }
        sb_put(b, "]", 1);
        break;
    case MP_MAP:
        sb_put(b, "{", 1);
        for (uint32_t i = 0; i < v.len; i++) {
            if (i)
                sb_put(b, ",", 1);
            mp_val k;
            TRY(mp_read(d, &k));
            /* JSON keys are strings: scalars are quoted; container keys are refused (rendering
             * them quoted would escape nested quotes once per level: exponential output). */
            if (k.type == MP_STR)
                sb_json_str(b, k.data, k.len, eb_proto_utf8_valid(k.data, k.len));
            else if (k.type == MP_UINT)
                sb_printf(b, "\"%llu\"", (unsigned long long)k.u);
            else if (k.type == MP_INT)
                sb_printf(b, "\"%lld\"", (long long)k.i);
            else if (k.type == MP_BOOL)
                sb_put(b, k.b ? "\"true\"" : "\"false\"", k.b ? 6 : 7);
            else if (k.type == MP_NIL)
                sb_put(b, "\"null\"", 6);
            else
                return EB_ERR_PROTOCOL;
            sb_put(b, ":", 1);
            TRY(json_value(d, b, depth + 1));
        }
        sb_put(b, "}", 1);
        break;
    }
    return EB_OK;
}

eb_status eb_proto_msgpack_to_json(const void *data, size_t len, char **json)
{
    *json = NULL;
    dec d = {0};
    d.start = d.p = data;
    d.end = d.p + (data ? len : 0);
    sbuf b = {0};
    eb_status st = json_value(&d, &b, 0);
    if (st == EB_OK && d.p != d.end)
        st = EB_ERR_PROTOCOL;
    if (st == EB_OK && b.oom)
        st = EB_ERR_NOMEM;
    if (st != EB_OK) {
        free(b.data);
        return st;
    }
    *json = b.data;
    return EB_OK;
}
