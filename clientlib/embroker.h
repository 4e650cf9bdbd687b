/* embroker.h — the client library of embroker (libembroker): ask a running embrokerd for
 * embeddings of images and texts.
 *
 *   embroker_options_t opt;
 *   embroker_options_default(&opt);              // run dir from $EMBROKER_RUN_DIR or the default
 *   embroker_t *eb = NULL;
 *   char err[512];
 *   if (embroker_connect(&opt, &eb, err, sizeof err) != EB_OK) { puts(err); return 1; }
 *   embroker_request_t *req = NULL;
 *   eb_status st = embroker_embed_image_file(eb, "siglip", "cat.jpg", &req);
 *   const embroker_result_t *r = embroker_request_result(req, 0);
 *   if (st == EB_OK && r->status == EB_OK) use(r->embedding, r->dims);
 *   else puts(embroker_request_error(req));
 *   embroker_request_free(&req);
 *   embroker_close(&eb);
 *
 * docs/client.md has the full guide (asynchronous use, shared memory vs inline, errors, Python).
 *
 * Transport. The library connects a ZMQ DEALER socket to the broker's frontend endpoint. For an
 * ipc:// endpoint (the local broker) it creates its own shared-memory segment (64 MiB by default),
 * registers it with the broker (proving ownership with the broker's nonce) and puts image bytes
 * there, so only a small message travels; for tcp:// brokers, when `inline_only` is set, or when
 * registration failed, bytes travel inline in the message. Inline inputs larger than
 * `max_inline_bytes` are refused before sending (EB_ERR_TOO_LARGE). A full segment either waits
 * (up to `shm_wait_ms`) for earlier requests to finish or falls back to inline
 * (`shm_full_policy`).
 *
 * THREAD-SAFETY CONTRACT. An embroker_t is NOT safe for concurrent use: give each thread its own
 * embroker_t (connecting is cheap), or serialise every call on one handle with your own lock. A
 * handle may move between threads between calls. Requests belong to the handle that created them.
 * Different handles are fully independent. Internally each handle runs one small background
 * thread that only sends heartbeats while the application is not calling the library (so the
 * broker keeps an idle client's segment alive); it takes an internal lock, never blocks the
 * caller for long, and is stopped by embroker_close.
 *
 * Errors. Every function that can fail returns an eb_status (eb_status.h; 0 = EB_OK, negative =
 * error kind) and, where a message helps, writes what failed and what to do into a
 * caller-supplied buffer or into the request (embroker_request_error). A request can fail as a
 * whole (its status) or per input (embroker_result_t.status). Notable codes: EB_ERR_TIMEOUT (no
 * reply within the timeout; the request stays pending and can still be waited for), EB_ERR_BUSY
 * (the broker's queue is full; retry later), EB_ERR_DEADLINE (the deadline passed before a worker
 * took it), EB_ERR_RESTARTED (the broker restarted, or the connection to it dropped, while the
 * request was in flight; resubmit: the handle reconnects and re-registers by itself),
 * EB_ERR_WORKER_LOST, EB_ERR_TOO_LARGE, EB_ERR_NOT_FOUND (unknown model or file).
 *
 * Memory. Everything a request returns (embeddings, messages, worker ids) belongs to the request
 * and stays valid until embroker_request_free. Input bytes are copied (into the segment or into
 * the message) before embroker_submit returns: the caller may reuse its buffers at once.
 */
#ifndef EMBROKER_H
#define EMBROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct embroker embroker_t;
typedef struct embroker_request embroker_request_t;

/* What to do when the shared-memory segment has no room for a request's inputs. */
typedef enum embroker_shm_full_policy {
    EMBROKER_SHM_FULL_WAIT = 0,   /* wait up to shm_wait_ms for replies to free space, then
                                     EB_ERR_BUSY */
    EMBROKER_SHM_FULL_INLINE = 1, /* send the inputs inline (within max_inline_bytes) */
} embroker_shm_full_policy;

typedef struct embroker_options {
    const char *broker;        /* frontend endpoint ("ipc://…/frontend.sock", "tcp://h:p"), or
                                  NULL: ipc://<run_dir>/frontend.sock */
    const char *run_dir;       /* NULL: $EMBROKER_RUN_DIR, else $XDG_RUNTIME_DIR/embroker, else
                                  /tmp/embroker-<uid> */
    int timeout_ms;            /* blocking calls: give up after this long (default 30000) */
    bool inline_only;          /* never use shared memory (default false) */
    uint64_t shm_size;         /* segment size in bytes (default 64 MiB) */
    embroker_shm_full_policy shm_full_policy; /* default EMBROKER_SHM_FULL_WAIT */
    int shm_wait_ms;           /* wait limit for EMBROKER_SHM_FULL_WAIT (default 5000) */
    uint64_t max_inline_bytes; /* largest inline input (default 16 MiB; match the broker) */
    int heartbeat_interval_ms; /* how often an idle client says it is alive (default 1000; match
                                  the broker's heartbeat_interval_ms) */
    int connect_timeout_ms;    /* registration handshake limit (default 5000) */
} embroker_options_t;

/* Input kinds (same numbers as the wire's eb_proto_input_kind). */
typedef enum embroker_input_kind {
    EMBROKER_INPUT_IMAGE = 1,    /* encoded JPEG / PNG / WebP bytes */
    EMBROKER_INPUT_RAW_RGB8 = 2, /* width*height*3 bytes, rows top to bottom, no padding */
    EMBROKER_INPUT_TEXT = 3,     /* UTF-8 text */
} embroker_input_kind;

/* Encoded image formats (same numbers as the wire's eb_proto_format). */
typedef enum embroker_format {
    EMBROKER_FORMAT_AUTO = 0, /* detect from the magic bytes */
    EMBROKER_FORMAT_JPEG = 1,
    EMBROKER_FORMAT_PNG = 2,
    EMBROKER_FORMAT_WEBP = 3,
} embroker_format;

/* One input. All pointers are only read during embroker_submit. */
typedef struct embroker_input {
    embroker_input_kind kind;
    embroker_format format;    /* IMAGE only */
    uint32_t width, height;    /* RAW_RGB8 only */
    const void *bytes;         /* IMAGE / RAW_RGB8 bytes, or TEXT UTF-8 bytes */
    size_t len;                /* bytes of `bytes` (TEXT: without any NUL) */
} embroker_input_t;

/* Per-request options; NULL means all defaults. */
typedef struct embroker_request_options {
    uint32_t deadline_ms;      /* relative deadline the broker enforces; 0 = broker default */
    bool bulk;                 /* bulk priority class instead of interactive */
    bool no_normalize;         /* return raw (unnormalised) embeddings */
    uint32_t output_dim;       /* truncate embeddings to this many dims (0 = full) */
    const char *instruction;   /* text models: instruction prefix, or NULL */
    bool force_inline;         /* send this request's bytes inline even when shm is available */
    bool send_hash;            /* compute each input's content hash here and send it, so the
                                  broker can answer from its cache without a worker (costs about
                                  0.8 ms per MB of input; default off for embed requests) */
} embroker_request_options_t;

/* Timings in microseconds; -1 when the stage did not run. */
typedef struct embroker_timings {
    int64_t queue_us, copy_us, hash_us, decode_us, preprocess_us, infer_us, cache_us;
    int64_t total_us;          /* as measured by the broker */
    int64_t client_total_us;   /* submit to reply, measured by this library */
    int64_t search_us;         /* scan: the pgvector search */
    int64_t store_enqueue_us;  /* scan with store, store: spooling the row */
    int64_t client_hash_us;    /* hashing the inputs in this library before sending */
    int64_t client_copy_us;    /* copying the inputs into the shared-memory segment or into
                                  inline frames in this library (the caller's bytes are always
                                  copied once: embroker never keeps the caller's pointers) */
} embroker_timings_t;

/* Options of scan and store requests (embroker_submit_scan / embroker_submit_store). Fill with
 * embroker_scan_options_default, then set what you need. Strings are only read during submit. */
typedef struct embroker_scan_options {
    uint32_t k;                   /* scan: number of matches, 1..max_k (0 = broker default 10) */
    const char *template_name;    /* scan: BusinessTemplate to search (the broker requires
                                     it); store: the product's template (required) */
    const char *source_type;      /* scan: SourceType filter (NULL = none); store: the row's
                                     SourceType (NULL = "catalogue"); scan with store: the
                                     stored row's SourceType (NULL = broker default "scan") */
    bool store;                   /* scan: also store the scan's embedding (asynchronously: the
                                     reply never waits for it; embroker_request_store_id) */
    const char *product_id;       /* store (required) and scan with store */
    double image_weight, text_weight; /* < 0 = broker default; set by
                                         embroker_scan_options_default */
    bool return_embedding;        /* put the embeddings in the results (default false) */
    const char *image_model, *text_model; /* NULL = broker defaults */
    uint32_t deadline_ms;         /* relative deadline; 0 = broker default */
    bool bulk;                    /* bulk priority class (backfills) instead of interactive */
    bool no_client_hash;          /* do not hash the inputs here (by default scan/store send the
                                     content hash so a repeated scan is a cache hit without a
                                     worker) */
} embroker_scan_options_t;

/* One scan match. Strings owned by the request. */
typedef struct embroker_match {
    const char *product_id;
    double score;                 /* inner product of the combined vectors: higher is closer */
    const char *template_name;    /* "" when the broker did not say */
    const char *source_type;      /* "" when the broker did not say */
} embroker_match_t;

/* One input's result. */
typedef struct embroker_result {
    eb_status status;          /* EB_OK or why this input failed */
    const char *message;       /* error message ("" when OK); owned by the request */
    const float *embedding;    /* dims floats (NULL when failed); owned by the request */
    uint32_t dims;
    bool has_hash;
    uint8_t hash[32];          /* worker-verified content hash (eb_hash.h) */
    const char *worker;        /* id of the worker that computed it ("" when unknown) */
    const char *model_rev;     /* revision of the model that produced it ("" when unknown) */
    bool cached;
} embroker_result_t;

/* ---- connection ------------------------------------------------------------------------- */

/* Fill `opt` with the defaults above, then apply EMBROKER_BROKER / EMBROKER_RUN_DIR /
 * EMBROKER_TIMEOUT_MS / EMBROKER_INLINE / EMBROKER_HEARTBEAT_INTERVAL_MS from the environment. */
void embroker_options_default(embroker_options_t *opt);

/* Connect to the broker and, over ipc://, create and register the shared-memory segment. On
 * success *out is a new handle (free with embroker_close). On failure *out is NULL, the status
 * says why and err names the endpoint and what to do. A broker that is down is not an error
 * here for tcp:// (ZMQ connects lazily); over ipc:// registration waits connect_timeout_ms and
 * then falls back to inline bytes with a warning in the log. */
eb_status embroker_connect(const embroker_options_t *opt, embroker_t **out, char *err,
                           size_t err_len);

/* Tell the broker goodbye, fail pending requests with EB_ERR_CANCELLED (their handles stay
 * valid until freed), unlink the segment, free the handle; sets *eb to NULL. NULL-safe. Free every
 * request before or after; requests must not be waited for after close. */
void embroker_close(embroker_t **eb);

/* True when the handle's inputs travel through shared memory (registered segment). */
bool embroker_uses_shm(const embroker_t *eb);

/* The shared-memory segment's name ("/embroker-…"), or NULL when inline only. Owned by eb. */
const char *embroker_segment_name(const embroker_t *eb);

/* The broker instance id last seen (0 before any broker message). */
uint64_t embroker_broker_instance(const embroker_t *eb);

/* Send a heartbeat now if the handle has been quiet for an interval and process any replies
 * that arrived (never blocks). The background thread does this by itself; calling it is
 * optional. */
eb_status embroker_heartbeat(embroker_t *eb);

/* ---- asynchronous requests -------------------------------------------------------------- */

/* Submit inputs to `model` (all of one family: images/raw for an image model, texts for a text
 * model; 1..256 of them). The bytes are copied before return. On success *out is the pending
 * request (free with embroker_request_free when done). On failure nothing was sent, *out is NULL
 * and err says why (EB_ERR_TOO_LARGE for an inline input over max_inline_bytes, EB_ERR_BUSY for a
 * full segment, EB_ERR_INVALID for bad inputs, EB_ERR_IO for a socket error). */
eb_status embroker_submit(embroker_t *eb, const char *model, const embroker_input_t *inputs,
                          size_t n_inputs, const embroker_request_options_t *ropt,
                          embroker_request_t **out, char *err, size_t err_len);

/* Wait until `req` completes or timeout_ms passes (-1: forever, 0: just check). EB_OK when the
 * request has completed (read embroker_request_status for its outcome), EB_ERR_TIMEOUT when it is
 * still pending. Replies to other requests that arrive meanwhile are stored in them. */
eb_status embroker_wait(embroker_t *eb, embroker_request_t *req, int timeout_ms);

/* Wait until any pending request of this handle completes (or timeout_ms passes) and return one
 * completed request not returned by poll before in *done. EB_OK with *done set; EB_ERR_TIMEOUT
 * with *done NULL; EB_ERR_NOT_FOUND when nothing is pending or completed-unreported. */
eb_status embroker_poll(embroker_t *eb, embroker_request_t **done, int timeout_ms);

/* Ask the broker to drop the request; it completes with EB_ERR_CANCELLED locally at once (a late
 * reply is ignored). */
eb_status embroker_cancel(embroker_t *eb, embroker_request_t *req);

/* Free a request (pending or done); a pending one is cancelled first. Sets *req to NULL. */
void embroker_request_free(embroker_request_t **req);

/* ---- reading a request ------------------------------------------------------------------ */

bool embroker_request_done(const embroker_request_t *req);
/* The whole request's status (EB_ERR_TIMEOUT while pending). Inputs may fail individually even
 * when it is EB_OK. */
eb_status embroker_request_status(const embroker_request_t *req);
/* The request's error message ("" when none). Owned by req. */
const char *embroker_request_error(const embroker_request_t *req);
/* The id the request travelled with (unique per handle). */
uint64_t embroker_request_id(const embroker_request_t *req);
size_t embroker_request_count(const embroker_request_t *req);
/* Result i (0 <= i < count) once done, else NULL. Owned by req. */
const embroker_result_t *embroker_request_result(const embroker_request_t *req, size_t i);
/* Stage timings of the request (maximum over its inputs for per-item stages). */
const embroker_timings_t *embroker_request_timings(const embroker_request_t *req);
/* True when the inputs travelled through shared memory. */
bool embroker_request_used_shm(const embroker_request_t *req);

/* ---- blocking helpers (submit + wait with opt.timeout_ms) ------------------------------- */

/* All of these return the request's status (or the submit/wait error: on EB_ERR_TIMEOUT the
 * request was cancelled) and, whenever a request was created, hand it over in *out for the
 * caller to read and free, even on failure (NULL only when nothing was sent). */
eb_status embroker_embed_image(embroker_t *eb, const char *model, const void *bytes, size_t len,
                               embroker_format format, embroker_request_t **out);
eb_status embroker_embed_raw_rgb8(embroker_t *eb, const char *model, const void *pixels,
                                  uint32_t width, uint32_t height, embroker_request_t **out);
/* Reads each file whole and embeds them as one request (format detected from the bytes).
 * EB_ERR_NOT_FOUND / EB_ERR_IO when a file cannot be read (nothing sent; *out NULL). */
eb_status embroker_embed_image_files(embroker_t *eb, const char *model, const char *const *paths,
                                     size_t n, embroker_request_t **out);
eb_status embroker_embed_image_file(embroker_t *eb, const char *model, const char *path,
                                    embroker_request_t **out);
eb_status embroker_embed_texts(embroker_t *eb, const char *model, const char *const *texts,
                               size_t n, const embroker_request_options_t *ropt,
                               embroker_request_t **out);
eb_status embroker_embed_text(embroker_t *eb, const char *model, const char *text,
                              embroker_request_t **out);
eb_status embroker_embed(embroker_t *eb, const char *model, const embroker_input_t *inputs,
                         size_t n, const embroker_request_options_t *ropt,
                         embroker_request_t **out);

/* ---- scan, store, delete ---------------------------------------------------------------- */

/* k 0, no filters, no store, weights -1 (broker defaults), return_embedding false, default
 * models, deadline 0, interactive, client hashing on. */
void embroker_scan_options_default(embroker_scan_options_t *opt);

/* Submit a scan: embed `image` (IMAGE or RAW_RGB8; NULL for a text-only scan) and/or `text`
 * (UTF-8, NUL-terminated; NULL for an image-only scan), combine them and search the catalogue
 * for the top k matches. `opt` NULL = defaults. Asynchronous like embroker_submit (image bytes
 * travel through shared memory when the handle has it; they are copied before return); wait
 * with embroker_wait / embroker_poll and read embroker_request_matches. Results are in input
 * order: the image's first, then the text's. Unless opt->no_client_hash, each input's content
 * hash is computed here and sent. On failure nothing was sent, *out is NULL and err (may be
 * NULL) says why: EB_ERR_INVALID for no input, a bad image kind, invalid UTF-8, a bad model
 * name or store without product_id. */
eb_status embroker_submit_scan(embroker_t *eb, const embroker_input_t *image, const char *text,
                               const embroker_scan_options_t *opt, embroker_request_t **out,
                               char *err, size_t err_len);

/* Submit a store: embed like a scan (no search) and upsert the catalogue row of
 * opt->product_id (required) with template opt->template_name (required) and SourceType
 * opt->source_type (NULL = "catalogue"). The broker replies once the row is durable in its
 * spool (embroker_request_store_id); the database write follows. Errors as for scan. */
eb_status embroker_submit_store(embroker_t *eb, const embroker_input_t *image, const char *text,
                                const embroker_scan_options_t *opt, embroker_request_t **out,
                                char *err, size_t err_len);

/* Blocking forms: submit, then wait up to the handle's timeout_ms. Return value and *out as for
 * the blocking helpers above (on a submit failure *out is NULL and the reason is logged). */
eb_status embroker_scan(embroker_t *eb, const embroker_input_t *image, const char *text,
                        const embroker_scan_options_t *opt, embroker_request_t **out);
eb_status embroker_store(embroker_t *eb, const embroker_input_t *image, const char *text,
                         const embroker_scan_options_t *opt, embroker_request_t **out);

/* Delete the catalogue rows of `product_id` (only those of `template_name` when not NULL: the
 * protocol allows it, the current broker answers EB_ERR_UNSUPPORTED, so pass NULL); blocking. EB_OK with *deleted (may be NULL) = rows removed (0 when there were none), else the
 * error with a reason in err (may be NULL). */
eb_status embroker_delete(embroker_t *eb, const char *product_id, const char *template_name,
                          uint64_t *deleted, char *err, size_t err_len);

/* Scan matches of a finished request, best first; *n (may be NULL) = how many. NULL with *n 0
 * when there are none (pending, not a scan, search failed). Owned by req. */
const embroker_match_t *embroker_request_matches(const embroker_request_t *req, size_t *n);

/* EB_OK when the scan's search ran (even with no match); otherwise why the broker answered
 * without searching (e.g. EB_ERR_UNAVAILABLE: PostgreSQL unreachable; the embedding is still
 * in the results), with the broker's message in *message (may be NULL; owned by req, "" when
 * none). A request that is not a finished scan returns EB_ERR_INVALID. */
eb_status embroker_request_search_error(const embroker_request_t *req, const char **message);

/* The store id the broker assigned (store, scan with store), or NULL. Owned by req. */
const char *embroker_request_store_id(const embroker_request_t *req);

/* True when the reply carried a delete count, with it in *n (may be NULL). */
bool embroker_request_deleted(const embroker_request_t *req, uint64_t *n);

/* The broker's health report as a JSON string (malloc'ed; caller frees) in *json. Errors as
 * above with the reason in err. */
eb_status embroker_health(embroker_t *eb, char **json, char *err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif
