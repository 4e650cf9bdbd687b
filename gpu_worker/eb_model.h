/* eb_model — the interface every embedding model of the worker implements, and the registry that
 * finds a model implementation by name ("identity", later "siglip" and "qwen3").
 *
 * A model is a table of functions (eb_model_ops) plus the state its load() returns. The worker
 * loads each configured model once at start, warms it up, announces what describe() says in READY
 * and then calls run_batch() from its compute thread for every batch, never load() per request.
 *
 *   load(cfg)          read weights/config; keys are "<name>_<key>" (e.g. "identity_dims",
 *                      "siglip_dir", "qwen3_dir"), so several models share one eb_config
 *   describe()         name, model_rev, preproc_rev, dims, input kind, largest batch
 *   warm_up()          run every batch shape once (CUDA graphs, caches) before READY
 *   run_batch(in, out) one forward pass over n inputs; fills out[i] for each input, failing only
 *                      the inputs that are bad (status per item), or returns an error for the
 *                      whole batch (e.g. a CUDA fault: the worker then exits and its work is
 *                      requeued)
 *   destroy()          free everything
 *
 * Inputs reach the model as private bytes (the worker has already copied them out of a client's
 * shared-memory segment or taken them from an inline frame, and hashed them):
 *   EB_INPUT_IMAGE     encoded JPEG/PNG/WebP bytes; the model decodes and preprocesses
 *   EB_INPUT_RAW_RGB8  width*height*3 bytes, rows top to bottom; the model preprocesses
 *   EB_INPUT_TEXT      UTF-8 text (not NUL-terminated: use len), plus an optional instruction
 * An image model (input == EB_INPUT_IMAGE in describe) accepts IMAGE and RAW_RGB8; a text model
 * accepts TEXT. The worker rejects other kinds before calling run_batch.
 *
 * Threads: load/describe/warm_up/destroy are called from one thread; run_batch is called from the
 * worker's compute thread only, one batch at a time, so a model needs no locking of its own.
 */
#ifndef EB_MODEL_H
#define EB_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_config.h"
#include "eb_proto.h"
#include "eb_status.h"

enum {
    EB_MODEL_REV_MAX = 128,   /* model_rev / preproc_rev strings, NUL included */
    EB_MODEL_ERROR_MAX = 256, /* per-item error messages, NUL included */
};

/* What a loaded model is (READY carries all of it). Strings are owned by the model state and live
 * until destroy(). */
typedef struct eb_model_info {
    const char *name;           /* registry name, e.g. "identity": [a-z0-9._-]{1,64} */
    const char *model_rev;      /* hash of all weights (hex), or a fixed tag for test models */
    const char *preproc_rev;    /* revision of the preprocessing that feeds the model */
    uint32_t dims;              /* embedding length before any output_dim truncation */
    eb_proto_input_kind input;  /* EB_INPUT_IMAGE (image and raw_rgb8) or EB_INPUT_TEXT */
    uint32_t max_batch_items;   /* largest batch run_batch accepts (>= 1) */
    const char *backend;        /* "cpu", "cuda", … */
    const char *device;         /* human-readable device name */
} eb_model_info;

/* One input of a batch. All pointers are borrowed for the duration of run_batch. */
typedef struct eb_model_input {
    eb_proto_input_kind kind;  /* IMAGE, RAW_RGB8 or TEXT */
    eb_proto_format format;    /* IMAGE: the claimed format (AUTO = detect from magic bytes) */
    uint32_t width, height;    /* RAW_RGB8 only: len == width * height * 3 */
    const uint8_t *bytes;      /* the input: private copy, len bytes (text: UTF-8, no NUL) */
    size_t len;
    bool normalize;            /* L2-normalise the output (default true) */
    const char *instruction;   /* text models: instruction prefix (UTF-8) or NULL */
    size_t instruction_len;
    uint32_t output_dim;       /* 0 = full dims; else truncate to this many (Matryoshka) */
} eb_model_input;

/* One output of a batch. The worker points `embedding` at room for info.dims floats and sets
 * everything else to zero/-1 before run_batch; the model fills the rest. */
typedef struct eb_model_output {
    float *embedding;          /* (dims,) written by the model; borrowed */
    uint32_t dims;             /* floats written (<= info.dims); 0 when the item failed */
    eb_status status;          /* EB_OK, or why this item failed (EB_ERR_DECODE, …) */
    char error[EB_MODEL_ERROR_MAX]; /* message when status != EB_OK */
    int64_t decode_us;         /* stage timings of this item, -1 = stage did not run */
    int64_t preprocess_us;
    int64_t infer_us;          /* the batch's forward time (shared by its items) */
} eb_model_output;

typedef struct eb_model_ops {
    const char *name; /* registry name */

    /* Create the model from configuration. On success *state is the model's own state (opaque to
     * the worker). On failure returns a status and writes what failed and what to do into err. */
    eb_status (*load)(const eb_config *cfg, void **state, char *err, size_t err_len);

    /* Fill *info; never fails once loaded. */
    void (*describe)(const void *state, eb_model_info *info);

    /* Run every batch shape once. May be NULL (nothing to warm). */
    eb_status (*warm_up)(void *state, char *err, size_t err_len);

    /* Embed n inputs (1 <= n <= info.max_batch_items): out[i] for in[i]. EB_OK when the batch ran
     * (individual items may still have failed: see out[i].status). Another status means the whole
     * batch failed (message in err) and the worker fails every item with it. */
    eb_status (*run_batch)(void *state, const eb_model_input *in, eb_model_output *out, size_t n,
                           char *err, size_t err_len);

    /* Free the state. NULL-safe. */
    void (*destroy)(void *state);
} eb_model_ops;

/* A loaded model: its ops, its state and its description. */
typedef struct eb_model {
    const eb_model_ops *ops;
    void *state;
    eb_model_info info;
    bool warm;
    float *canary;          /* the canary input's vector recorded at warm-up (info.dims), or NULL */
    uint32_t canary_dims;
} eb_model;

/* The implementation registered under `name`, or NULL. Built-in: "identity" (test model, see
 * eb_model_identity.h). Thread-safe once registration is done. */
const eb_model_ops *eb_model_find(const char *name);

/* Add an implementation (e.g. one built in a later issue, or a test double). EB_ERR_INVALID for a
 * NULL/incomplete table or a name that is not [a-z0-9._-]{1,64}, EB_ERR_BUSY when the name is
 * already registered, EB_ERR_TOO_LARGE when the registry (32 entries) is full. The table must
 * outlive the registry (static storage). Not thread-safe: register before starting threads. */
eb_status eb_model_register(const eb_model_ops *ops);

/* Comma-separated names of every registered implementation into out (for error messages). */
void eb_model_list(char *out, size_t cap);

/* Find `name`, load it with cfg and describe it. NULL on failure with the reason in err
 * ("unknown model \"foo\": this worker knows identity, siglip; check --models"). The caller
 * owns the result: free with eb_model_destroy. */
eb_model *eb_model_load(const char *name, const eb_config *cfg, char *err, size_t err_len);

/* warm_up (when the model has one) and mark the model warm. */
eb_status eb_model_warm_up(eb_model *model, char *err, size_t err_len);

/* The canary: a fixed input (a 64x64 raw RGB gradient for image models, a fixed sentence for text
 * models) whose vector is recorded once and recomputed from time to time. A model that silently
 * starts computing something else (corrupted weights, a broken device, a bad driver) gives a
 * different vector, and the worker reports itself unhealthy.
 *
 * eb_model_canary_record runs the canary and keeps its vector (call after warm-up).
 * eb_model_canary_check runs it again; EB_OK when the relative L2 distance to the recorded vector
 * is within `tolerance` (*distance receives it), EB_ERR_MODEL with a message when not, another
 * status when the run itself failed. Both are called from the thread that runs batches. */
eb_status eb_model_canary_record(eb_model *model, char *err, size_t err_len);
eb_status eb_model_canary_check(eb_model *model, double tolerance, double *distance, char *err,
                                size_t err_len);

/* Destroy the state and free the model; sets *model to NULL. NULL-safe. */
void eb_model_destroy(eb_model **model);

/* True when an input of `kind` can be served by a model whose describe() says `model_input`. */
bool eb_model_accepts(eb_proto_input_kind model_input, eb_proto_input_kind kind);

/* L2-normalise v (n floats) in place; leaves an all-zero vector unchanged. Shared by models. */
void eb_model_l2_normalize(float *v, size_t n);

#endif
