/* eb_proto — the embroker wire protocol: message structs and their msgpack bodies.
 *
 * docs/protocol.md is the normative description; this header is its C mirror. A message on the
 * wire is a ZMQ multipart message:
 *
 *   frame 0  protocol header: "EMB1C" (client <-> broker) or "EMB1W" (worker <-> broker)
 *   frame 1  one command byte (eb_proto_client_cmd / eb_proto_worker_cmd)
 *   frame 2  one msgpack body: a map with short string keys
 *   frame 3… item frames: raw bytes, one per item (inline inputs in requests, little-endian
 *            float32 embeddings in replies); "frame index" i in a body means multipart frame 3+i
 *
 * (a ROUTER socket additionally sees the peer identity frame before frame 0; eb_frames.h handles
 * that). This module knows nothing about sockets: it encodes a message struct into a body and
 * decodes a body (plus the sizes of the item frames that came with it) into a message struct,
 * validating every field against eb_proto_limits first. eb_frames.h does the multipart part.
 *
 * Ownership:
 *   - Messages you build for eb_proto_encode point to your own memory; the encoder only reads it.
 *   - Messages filled by eb_proto_decode own everything they point to (strings, arrays, blobs)
 *     in a per-message arena: nothing points into the body buffer, so the body (zmq_msg_t) may be
 *     closed right after decoding. Release with eb_proto_msg_free(). Decoded strings are
 *     NUL-terminated, valid UTF-8, and have no embedded NULs.
 *
 * Thread safety: all functions are reentrant; a message must not be used by two threads at once.
 */
#ifndef EB_PROTO_H
#define EB_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_config.h"
#include "eb_status.h"

/* ---- constants --------------------------------------------------------------------------- */

#define EB_PROTO_CLIENT_HEADER "EMB1C" /* frame 0 between clients and the broker */
#define EB_PROTO_WORKER_HEADER "EMB1W" /* frame 0 between workers and the broker */
#define EB_PROTO_HEADER_LEN 5
#define EB_PROTO_VERSION 1

enum {
    EB_PROTO_HASH_BYTES = 32,      /* SHA-256 content hashes */
    EB_PROTO_NONCE_BYTES = 32,     /* registration challenge nonce */
    EB_PROTO_MODEL_NAME_MAX = 64,  /* model names: [a-z0-9._-]{1,64} */
    EB_PROTO_SEGMENT_NAME_MAX = 255, /* shm names: "/" then [A-Za-z0-9._-]{1,254} */
    EB_PROTO_ID_MAX = 256,         /* worker ids, product ids, templates, revisions, … */
    EB_PROTO_MESSAGE_MAX = 4096,   /* error messages, disconnect reasons */
    EB_PROTO_MAX_DEPTH = 32,       /* nesting limit for skipped unknown fields and health */
};

/* Which conversation a message belongs to (frame 0). */
typedef enum eb_proto_channel {
    EB_PROTO_CHANNEL_CLIENT = 1, /* "EMB1C" */
    EB_PROTO_CHANNEL_WORKER = 2, /* "EMB1W" */
} eb_proto_channel;

/* Command bytes (frame 1) on the client channel; the arrow is the direction. */
typedef enum eb_proto_client_cmd {
    EB_PROTO_C_REGISTER = 0x01,   /* client -> broker: register a shm segment */
    EB_PROTO_C_CHALLENGE = 0x02,  /* broker -> client: nonce to write into the segment */
    EB_PROTO_C_PROVE = 0x03,      /* client -> broker: nonce written, please check */
    EB_PROTO_C_REGISTERED = 0x04, /* broker -> client: segment id + epoch, or an error */
    EB_PROTO_C_REQUEST = 0x05,    /* client -> broker */
    EB_PROTO_C_REPLY = 0x06,      /* broker -> client (also every error about a request) */
    EB_PROTO_C_HEARTBEAT = 0x07,  /* both ways */
    EB_PROTO_C_CANCEL = 0x08,     /* client -> broker */
    EB_PROTO_C_DISCONNECT = 0x09, /* both ways */
} eb_proto_client_cmd;

/* Command bytes (frame 1) on the worker channel (values of Majordomo, ZeroMQ RFC 7/18, plus
 * two of ours). */
typedef enum eb_proto_worker_cmd {
    EB_PROTO_W_READY = 0x01,           /* worker -> broker, once per connection */
    EB_PROTO_W_REQUEST = 0x02,         /* broker -> worker: a batch */
    EB_PROTO_W_REPLY = 0x03,           /* worker -> broker: the batch's results */
    EB_PROTO_W_HEARTBEAT = 0x04,       /* both ways */
    EB_PROTO_W_DISCONNECT = 0x05,      /* both ways */
    EB_PROTO_W_CREDIT = 0x06,          /* worker -> broker: n more items it can take */
    EB_PROTO_W_RELEASE_SEGMENT = 0x07, /* broker -> worker: unmap a client segment */
} eb_proto_worker_cmd;

/* One value per (channel, command) pair: the tag of eb_proto_msg. */
typedef enum eb_proto_kind {
    EB_MSG_NONE = 0,
    EB_MSG_C_REGISTER,
    EB_MSG_C_CHALLENGE,
    EB_MSG_C_PROVE,
    EB_MSG_C_REGISTERED,
    EB_MSG_C_REQUEST,
    EB_MSG_C_REPLY,
    EB_MSG_C_HEARTBEAT,
    EB_MSG_C_CANCEL,
    EB_MSG_C_DISCONNECT,
    EB_MSG_W_READY,
    EB_MSG_W_REQUEST,
    EB_MSG_W_REPLY,
    EB_MSG_W_HEARTBEAT,
    EB_MSG_W_DISCONNECT,
    EB_MSG_W_CREDIT,
    EB_MSG_W_RELEASE_SEGMENT,
    EB_MSG_KIND_COUNT
} eb_proto_kind;

/* Input kinds; wire strings "image", "raw_rgb8", "text". Numbers are also the kind byte of the
 * canonical hash header. */
typedef enum eb_proto_input_kind {
    EB_INPUT_IMAGE = 1,    /* encoded image bytes (format below) */
    EB_INPUT_RAW_RGB8 = 2, /* width*height*3 bytes, rows top to bottom, no padding */
    EB_INPUT_TEXT = 3,     /* UTF-8 text, carried in the body */
} eb_proto_input_kind;

/* Encoded image formats; wire strings "auto", "jpeg", "png", "webp". "auto": detect from the
 * magic bytes. Raw and text inputs use EB_FORMAT_AUTO (0) and carry no format on the wire. */
typedef enum eb_proto_format {
    EB_FORMAT_AUTO = 0,
    EB_FORMAT_JPEG = 1,
    EB_FORMAT_PNG = 2,
    EB_FORMAT_WEBP = 3,
} eb_proto_format;

/* Where an input's bytes are. */
typedef enum eb_proto_source {
    EB_SOURCE_NONE = 0,   /* text inputs: the text is in the body */
    EB_SOURCE_SHM = 1,    /* a shared-memory reference */
    EB_SOURCE_INLINE = 2, /* an item frame of this message */
} eb_proto_source;

/* Client operations; wire strings as in the comments. */
typedef enum eb_proto_op {
    EB_OP_EMBED_IMAGE = 1, /* "embed_image": 1..max_batch_items image/raw_rgb8 inputs */
    EB_OP_EMBED_TEXT = 2,  /* "embed_text": 1..max_batch_items text inputs */
    EB_OP_SCAN = 3,        /* "scan": one image and/or one text input, top-k search */
    EB_OP_HEALTH = 4,      /* "health": no inputs, no model */
    EB_OP_DELETE = 5,      /* "delete": no inputs, options.product_id required */
    EB_OP_STORE = 6,       /* "store": like scan's inputs, no search; stores a catalogue row
                              (product_id and template required) and answers once durable */
    EB_OP_LAST = EB_OP_STORE,
} eb_proto_op;

typedef enum eb_proto_priority {
    EB_PRIORITY_INTERACTIVE = 0, /* "interactive" (default) */
    EB_PRIORITY_BULK = 1,        /* "bulk" */
} eb_proto_priority;

/* Stages of the timings map (µs). Wire keys in comments. */
typedef enum eb_proto_stage {
    EB_STAGE_HASH = 0,      /* "hash" */
    EB_STAGE_CACHE,         /* "cache" */
    EB_STAGE_QUEUE,         /* "queue" */
    EB_STAGE_COPY,          /* "copy" */
    EB_STAGE_DECODE,        /* "decode" */
    EB_STAGE_PREPROCESS,    /* "preprocess" */
    EB_STAGE_INFER,         /* "infer" */
    EB_STAGE_SEARCH,        /* "search" */
    EB_STAGE_STORE_ENQUEUE, /* "store_enqueue" */
    EB_STAGE_TOTAL,         /* "total" */
    EB_STAGE_COUNT
} eb_proto_stage;

/* Timings in microseconds; -1 = the stage did not run (not sent). eb_proto_timings_clear()
 * sets every stage to -1. */
typedef struct eb_proto_timings {
    int64_t us[EB_STAGE_COUNT];
} eb_proto_timings;

/* ---- limits ------------------------------------------------------------------------------ */

/* Everything the decoder enforces. Fill with eb_proto_limits_default() and override from
 * config (eb_proto_limits_from_config). */
typedef struct eb_proto_limits {
    uint64_t max_message_bytes; /* body + all item frames; default 64 MiB */
    uint64_t max_body_bytes;    /* the msgpack body alone; default 20 MiB */
    uint64_t max_input_bytes;   /* one input: inline frame or shm len; default 32 MiB */
    uint32_t max_batch_items;   /* inputs/items/results per message; default 256 */
    uint32_t max_text_bytes;    /* one text input (and an instruction); default 64 KiB */
    uint32_t max_deadline_ms;   /* options.deadline_ms upper bound; default 3,600,000 (1 h) */
    uint32_t max_k;             /* options.k upper bound (lower bound is 1); default 1000 */
    uint32_t max_models;        /* models in READY; default 64 */
    uint32_t max_dims;          /* embedding dimensions; default 65536 */
    uint32_t max_pixels;        /* raw_rgb8 width*height; default 64 Mi pixels */
} eb_proto_limits;

/* The documented defaults (docs/protocol.md, "Limits"). */
void eb_proto_limits_default(eb_proto_limits *limits);

/* Defaults overridden by config keys max_message_bytes, max_body_bytes, max_input_bytes,
 * max_batch_items, max_text_bytes, max_deadline_ms, max_k, max_models, max_dims, max_pixels.
 * EB_ERR_INVALID with a reason in err when a value is malformed or out of range (limits is
 * still fully filled: defaults for the bad keys). */
eb_status eb_proto_limits_from_config(const eb_config *cfg, eb_proto_limits *limits, char *err,
                                      size_t err_len);

/* ---- client channel bodies --------------------------------------------------------------- */

/* REGISTER (client -> broker). */
typedef struct eb_proto_register {
    const char *segment; /* "name": shm name, "/" + [A-Za-z0-9._-]{1,254} */
    uint64_t size;       /* "size": bytes of the segment, > 0 */
} eb_proto_register;

/* CHALLENGE (broker -> client). */
typedef struct eb_proto_challenge {
    const char *segment;                   /* "name": echoes REGISTER */
    uint8_t nonce[EB_PROTO_NONCE_BYTES];   /* "nonce": bin 32 */
} eb_proto_challenge;

/* PROVE (client -> broker). */
typedef struct eb_proto_prove {
    const char *segment; /* "name": the segment whose header now holds the nonce */
} eb_proto_prove;

/* REGISTERED (broker -> client). */
typedef struct eb_proto_registered {
    const char *segment; /* "name" */
    int32_t status;      /* "status": eb_status; 0 = registered */
    const char *error;   /* "error".message when status != 0 (NULL otherwise) */
    uint32_t seg;        /* "seg": broker-chosen segment id to use in references (status 0) */
    uint32_t epoch;      /* "epoch": the epoch the broker read from the segment header
                            (docs/shm.md); references must carry it (status 0) */
} eb_proto_registered;

/* One client input. */
typedef struct eb_proto_input {
    eb_proto_input_kind kind; /* "kind" */
    eb_proto_format format;   /* "format" (image only; absent = auto) */
    uint32_t width, height;   /* "width", "height" (raw_rgb8 only; len == width*height*3) */
    eb_proto_source source;   /* "shm" map or "frame" (image, raw_rgb8); NONE for text */
    uint32_t seg, epoch;      /* "shm": {"seg", "epoch", "off", "len"} */
    uint64_t off, len;        /* for INLINE, len is the item frame's size (set by decode) */
    uint32_t frame;           /* "frame": item frame index (INLINE) */
    const char *text;         /* "text" (text only): UTF-8, NUL-terminated */
    uint32_t text_len;        /* bytes of text without the NUL */
    bool has_hash;            /* "hash": client-computed content hash (optional) */
    uint8_t hash[EB_PROTO_HASH_BYTES];
} eb_proto_input;

/* Request options ("options" map; every key optional). */
typedef struct eb_proto_options {
    uint32_t deadline_ms;        /* "deadline_ms": relative to receipt; 0/absent = broker default */
    eb_proto_priority priority;  /* "priority" */
    bool normalize;              /* "normalize": L2-normalise embeddings; default true */
    bool return_embedding;       /* "return_embedding": item frames in the reply; default true
                                    (false by default for scan) */
    uint32_t k;                  /* "k": scan top-k in 1..max_k; 0/absent = 10 */
    const char *template_name;   /* "template": filter BusinessTemplate (scan/delete) or NULL */
    const char *source_type;     /* "source_type": filter SourceType (scan), store SourceType */
    bool store;                  /* "store": scan stores its embedding asynchronously */
    const char *product_id;      /* "product_id": for store and delete */
    const char *instruction;     /* "instruction": text models' instruction prefix or NULL */
    uint32_t output_dim;         /* "output_dim": truncate (Matryoshka); 0 = full */
    double text_weight;          /* "text_weight": scan; < 0 = broker default */
    double image_weight;         /* "image_weight": scan; < 0 = broker default */
} eb_proto_options;

/* REQUEST (client -> broker). Item frames: the inline inputs, each referenced exactly once. */
typedef struct eb_proto_request {
    uint64_t id;             /* "id": client-chosen, echoed in the reply */
    eb_proto_op op;          /* "op" */
    const char *model;       /* "model": [a-z0-9._-]{1,64}; required for embed_*; for scan
                                the image model (NULL = broker default); NULL for health */
    const char *text_model;  /* "text_model": scan only, model for the text input (NULL =
                                broker default) */
    uint32_t n_inputs;       /* "inputs": array */
    eb_proto_input *inputs;
    eb_proto_options options;
} eb_proto_request;

/* One input's outcome in a REPLY. */
typedef struct eb_proto_result {
    int32_t status;         /* "status": eb_status of this input */
    const char *error;      /* "error": message when status != 0, else NULL */
    bool has_hash;          /* "hash": worker-verified (or cache key) content hash */
    uint8_t hash[EB_PROTO_HASH_BYTES];
    uint32_t dims;          /* "dims": floats in this input's item frame (0 when failed) */
    const char *worker;     /* "worker": id of the worker that computed it, NULL if cached */
    bool cached;            /* "cached": served from the Redis cache */
    const char *model_rev;  /* "model_rev": revision of the model that produced it, or NULL */
} eb_proto_result;

/* One scan match. */
typedef struct eb_proto_match {
    const char *product_id;    /* "product_id" */
    double score;              /* "score": inner product (higher is closer) */
    const char *template_name; /* "template" */
    const char *source_type;   /* "source_type" */
} eb_proto_match;

/* An error object {code, message}. */
typedef struct eb_proto_error {
    int32_t code;        /* eb_status */
    const char *message; /* may be NULL */
} eb_proto_error;

/* REPLY (broker -> client). Item frames: none, or one per result in input order (empty frame
 * for a failed input), each dims*4 bytes of little-endian float32. */
typedef struct eb_proto_reply {
    uint64_t id;               /* "id": the request's id (0 when the request was unreadable) */
    int32_t status;            /* "status": eb_status of the whole request */
    const char *error;         /* "error": {"code": status, "message"}; NULL when none */
    uint32_t n_results;        /* "results" */
    eb_proto_result *results;
    eb_proto_timings timings;  /* "timings" */
    uint32_t n_matches;        /* "matches" (scan) */
    eb_proto_match *matches;
    bool has_search_error;     /* "search_error": scan answered without search */
    eb_proto_error search_error;
    const char *store_id;      /* "store_id": id of the queued store (scan with store) or NULL */
    bool has_deleted;          /* "deleted": rows removed (delete) */
    uint64_t deleted;
    const uint8_t *health;     /* "health": the msgpack encoding of the health map, or NULL */
    size_t health_len;         /*   (docs/protocol.md documents its keys) */
} eb_proto_reply;

/* CANCEL (client -> broker). */
typedef struct eb_proto_cancel {
    uint64_t id; /* "id": the request to cancel */
} eb_proto_cancel;

/* DISCONNECT (either channel, either way). */
typedef struct eb_proto_disconnect {
    const char *reason; /* "reason" or NULL */
} eb_proto_disconnect;

/* HEARTBEAT (either channel, either way). The state fields are sent by workers only. */
typedef struct eb_proto_heartbeat {
    bool has_state;          /* worker -> broker: the three fields below are present */
    bool warm;               /* "warm": every batch shape warmed up */
    bool healthy;            /* "healthy": false = watchdog fired, worker about to exit */
    uint32_t inflight_items; /* "inflight": items accepted but not yet answered */
} eb_proto_heartbeat;

/* ---- worker channel bodies --------------------------------------------------------------- */

/* One model a worker serves. */
typedef struct eb_proto_model_desc {
    const char *name;          /* "name": [a-z0-9._-]{1,64} */
    const char *model_rev;     /* "model_rev": hash of all weights */
    const char *preproc_rev;   /* "preproc_rev": preprocessing revision */
    uint32_t dims;             /* "dims": embedding length, 1..max_dims */
    eb_proto_input_kind input; /* "input": "image" (accepts image and raw_rgb8) or "text" */
} eb_proto_model_desc;

/* READY (worker -> broker, once per connection). */
typedef struct eb_proto_ready {
    const char *worker_id;    /* "worker": unique name, e.g. "host:pid:gpu0" */
    const char *backend;      /* "backend": "cpu" or "cuda" (other names allowed) */
    const char *device;       /* "device": human-readable device name */
    uint32_t max_batch_items; /* "max_batch": items per batch, 1..max_batch_items */
    uint32_t n_models;        /* "models": 1..max_models */
    eb_proto_model_desc *models;
} eb_proto_ready;

/* CREDIT (worker -> broker). */
typedef struct eb_proto_credit {
    uint32_t credit; /* "credit": MORE items the worker can take (an increment: the broker adds
                        it to the worker's credit and subtracts one per item it sends, so
                        messages crossing in flight never overcommit; docs/protocol.md) */
} eb_proto_credit;

/* One item of a batch (broker -> worker). */
typedef struct eb_proto_item {
    uint64_t item_id;         /* "id": broker-chosen, echoed in the reply */
    eb_proto_input_kind kind; /* "kind" */
    eb_proto_format format;   /* "format" */
    uint32_t width, height;   /* "width", "height" (raw_rgb8) */
    eb_proto_source source;   /* "shm" map or "frame"; NONE for text */
    const char *segment;      /* "shm": {"name", "epoch", "off", "len"} */
    uint32_t epoch;
    uint64_t off, len;        /* for INLINE, len is the item frame's size (set by decode) */
    uint32_t frame;           /* "frame" */
    const char *text;         /* "text" (text items) */
    uint32_t text_len;
    bool normalize;           /* "normalize": default true */
    const char *instruction;  /* "instruction" or NULL */
    uint32_t output_dim;      /* "output_dim": 0 = full */
} eb_proto_item;

/* REQUEST (broker -> worker): a batch for one model. Item frames: the inline items. */
typedef struct eb_proto_batch {
    uint64_t batch_id; /* "batch": broker-chosen, echoed in the reply */
    const char *model; /* "model" */
    uint32_t n_items;  /* "items": 1..max_batch_items */
    eb_proto_item *items;
} eb_proto_batch;

/* One item's outcome (worker -> broker). */
typedef struct eb_proto_item_result {
    uint64_t item_id;          /* "id" */
    int32_t status;            /* "status": eb_status */
    const char *error;         /* "error": message when status != 0 */
    bool has_hash;             /* "hash": eb_content_hash over the bytes the worker read */
    uint8_t hash[EB_PROTO_HASH_BYTES];
    uint32_t dims;             /* "dims": floats in the item frame (0 when failed) */
    eb_proto_timings timings;  /* "timings": copy, hash, decode, preprocess, infer */
} eb_proto_item_result;

/* REPLY (worker -> broker). Item frames: exactly one per item in item order (empty when the
 * item failed), dims*4 bytes of little-endian float32. */
typedef struct eb_proto_batch_reply {
    uint64_t batch_id; /* "batch" */
    uint32_t n_items;  /* "items" */
    eb_proto_item_result *items;
} eb_proto_batch_reply;

/* RELEASE_SEGMENT (broker -> worker). */
typedef struct eb_proto_release {
    const char *segment; /* "name": unmap once no item in flight reads from it */
} eb_proto_release;

/* ---- the message ------------------------------------------------------------------------- */

struct eb_proto_arena;

typedef struct eb_proto_msg {
    eb_proto_kind kind;
    bool from_broker; /* sender is the broker (fixed by kind except HEARTBEAT/DISCONNECT) */
    uint64_t bid;     /* "bid": broker instance id; in every message the broker sends */
    union {
        eb_proto_register reg;           /* EB_MSG_C_REGISTER */
        eb_proto_challenge challenge;    /* EB_MSG_C_CHALLENGE */
        eb_proto_prove prove;            /* EB_MSG_C_PROVE */
        eb_proto_registered registered;  /* EB_MSG_C_REGISTERED */
        eb_proto_request request;        /* EB_MSG_C_REQUEST */
        eb_proto_reply reply;            /* EB_MSG_C_REPLY */
        eb_proto_cancel cancel;          /* EB_MSG_C_CANCEL */
        eb_proto_heartbeat heartbeat;    /* EB_MSG_C_HEARTBEAT, EB_MSG_W_HEARTBEAT */
        eb_proto_disconnect disconnect;  /* EB_MSG_C_DISCONNECT, EB_MSG_W_DISCONNECT */
        eb_proto_ready ready;            /* EB_MSG_W_READY */
        eb_proto_credit credit;          /* EB_MSG_W_CREDIT */
        eb_proto_batch batch;            /* EB_MSG_W_REQUEST */
        eb_proto_batch_reply batch_reply; /* EB_MSG_W_REPLY */
        eb_proto_release release;        /* EB_MSG_W_RELEASE_SEGMENT */
    } u;
    struct eb_proto_arena *arena; /* owns decoded memory; NULL for messages you build */
} eb_proto_msg;

/* Zero `msg`, set its kind and from_broker (true for broker-sent kinds; false for HEARTBEAT and
 * DISCONNECT: set it yourself when the broker sends them) and the documented defaults of the
 * fields it holds directly (request options: normalize and return_embedding true, weights -1;
 * reply timings -1). Arrays you attach are yours to initialise: set eb_proto_item.normalize
 * (true is the default) and eb_proto_timings_clear() each eb_proto_item_result.timings. */
void eb_proto_msg_init(eb_proto_msg *msg, eb_proto_kind kind);

/* Free what a decoded message owns and zero it. NULL-safe; harmless on built messages. */
void eb_proto_msg_free(eb_proto_msg *msg);

/* Set every stage to -1 (not run). */
void eb_proto_timings_clear(eb_proto_timings *timings);

/* ---- encode / decode --------------------------------------------------------------------- */

/* An encoded body. `data` is malloc'ed and owned by the holder: free with eb_proto_buf_free()
 * (or hand it to zmq_msg_init_data with a free() callback and set data to NULL). */
typedef struct eb_proto_buf {
    uint8_t *data;
    size_t len;
} eb_proto_buf;

void eb_proto_buf_free(eb_proto_buf *buf);

/* Channel and command byte of a kind. false for EB_MSG_NONE / out of range. */
bool eb_proto_kind_wire(eb_proto_kind kind, eb_proto_channel *channel, uint8_t *command);

/* The kind for (channel, command), or EB_MSG_NONE for an unknown pair. */
eb_proto_kind eb_proto_kind_of(eb_proto_channel channel, uint8_t command);

/* Short name for logs: "REQUEST", "READY", … ("?" when unknown). Static string. */
const char *eb_proto_kind_name(eb_proto_kind kind);

/* Encode msg's body (frame 2) into *out (out->data malloc'ed; previous contents ignored).
 * Writes "bid" when msg->from_broker. Checks the message is encodable (enums in range, required
 * strings non-NULL, arrays non-NULL when counted); EB_ERR_INVALID with a reason otherwise,
 * EB_ERR_NOMEM. It does NOT apply eb_proto_limits: decode is where limits are enforced. */
eb_status eb_proto_encode(const eb_proto_msg *msg, eb_proto_buf *out, char *err, size_t err_len);

/* Parse a protocol header frame (frame 0). EB_OK and *channel for "EMB1C"/"EMB1W";
 * EB_ERR_PROTOCOL with a reason otherwise ("protocol header \"EMB2C\": version 2 is not
 * supported, this side speaks EMB1"). */
eb_status eb_proto_parse_header(const void *data, size_t len, eb_proto_channel *channel,
                                char *err, size_t err_len);

/* Decode one message body.
 *   channel, command:  from frames 0 and 1
 *   from_broker:       true when this side is a client or worker (reading what the broker sent),
 *                      false when this side is the broker; a kind sent the wrong way is a
 *                      protocol error, and "bid" is required when from_broker
 *   body, body_len:    frame 2 (not referenced after return)
 *   frame_sizes:       byte sizes of the item frames (frames 3..), n_frames of them; frame_sizes
 *                      may be NULL only when n_frames is 0
 *   limits:            NULL = defaults
 * On success *out is a decoded message that owns its memory (free with eb_proto_msg_free).
 * On failure *out is zeroed (nothing to free) and the return value says why, with a precise
 * message in err ("request.inputs[3].shm.len 40000000 exceeds max_input_bytes 33554432"):
 *   EB_ERR_PROTOCOL     unknown command, malformed msgpack, trailing bytes, wrong type, missing
 *                       field, bad frame index / unreferenced or doubly referenced frame, wrong
 *                       direction
 *   EB_ERR_TOO_LARGE    a size or count over a limit
 *   EB_ERR_INVALID      a well-typed value out of range (model name, UTF-8, hash length, k, …)
 *   EB_ERR_UNSUPPORTED  an unknown op / kind / format string (a newer peer)
 *   EB_ERR_NOMEM
 * Unknown map keys are ignored (forward compatibility). When the body was readable enough to
 * find the request id, *request_id (if not NULL) is set to it (else 0) so the broker can address
 * its error REPLY. */
eb_status eb_proto_decode(eb_proto_channel channel, uint8_t command, bool from_broker,
                          const void *body, size_t body_len, const size_t *frame_sizes,
                          size_t n_frames, const eb_proto_limits *limits, eb_proto_msg *out,
                          uint64_t *request_id, char *err, size_t err_len);

/* ---- validators and helpers -------------------------------------------------------------- */

/* Strict UTF-8: rejects overlong forms, surrogates (U+D800..DFFF), code points > U+10FFFF,
 * truncated sequences and stray continuation bytes. NUL bytes are valid UTF-8 (the decoder
 * rejects them separately). */
bool eb_proto_utf8_valid(const void *data, size_t len);

/* [a-z0-9._-]{1,64} */
bool eb_proto_model_name_valid(const char *name, size_t len);

/* "/" followed by [A-Za-z0-9._-]{1,254} */
bool eb_proto_segment_name_valid(const char *name, size_t len);

/* Wire strings of the enums ("embed_image", "raw_rgb8", "jpeg", "bulk", "store_enqueue", …) and
 * back; _from_ return false for unknown strings. Static strings; NULL for out-of-range values. */
const char *eb_proto_op_str(eb_proto_op op);
bool eb_proto_op_from_str(const char *s, size_t len, eb_proto_op *op);
const char *eb_proto_input_kind_str(eb_proto_input_kind kind);
const char *eb_proto_format_str(eb_proto_format format);
const char *eb_proto_priority_str(eb_proto_priority priority);
const char *eb_proto_stage_str(eb_proto_stage stage);

/* Content hashes ("hash" fields) are defined once, in eb_hash.h (eb_content_hash): SHA-256 over
 * a canonical text header followed by the input bytes. docs/protocol.md repeats the definition
 * for clients in other languages. */

/* Validate a msgpack-encoded value (well-formed, one value, nesting <= EB_PROTO_MAX_DEPTH) and
 * render it as JSON (bin/ext as lowercase hex strings, non-finite floats as null, integer/bool/nil
 * map keys quoted) into a malloc'ed NUL-terminated string *json (caller frees). For printing
 * health. EB_ERR_PROTOCOL for malformed input or a map/array/bin used as a map key,
 * EB_ERR_NOMEM. */
eb_status eb_proto_msgpack_to_json(const void *data, size_t len, char **json);

#endif
