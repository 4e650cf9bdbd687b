/* eb_checkpoint — a Hugging Face model directory: config, preprocessing config, weights, and the
 * revisions that identify them.
 *
 * A directory holds config.json (a full model config with e.g. "vision_config", or a bare one),
 * optionally preprocessor_config.json, and model.safetensors or a sharded
 * model.safetensors.index.json (see eb_safetensors.h). Opening parses both JSON files and opens
 * and validates the weights; the model modules (eb_siglip, later Qwen3) pick what they need.
 *
 * model_rev: SHA-256 (hex) of "embroker-model-rev-1\n" followed, for every weights file in name
 * order, by "<file name>\n<sha256 of the whole file, hex>\n", then "config.json\n<sha256 of
 * config.json, hex>\n". Any changed weight byte, shard layout or config value gives a new
 * revision. Hashing 1 GB takes about a second, so each file's hash is cached beside the
 * checkpoint in ".embroker-rev-cache", keyed by file name, size, inode and modification time
 * (ns); a changed file misses the cache and is hashed again. A read-only directory just means
 * no cache (a warning is logged).
 *
 * preproc_rev: SHA-256 (hex) of a canonical text of the image preprocessing parameters (size,
 * resample filter, rescale factor, mean, std, flags) and the version string of our resize code,
 * so embeddings made with different preprocessing never share a cache key.
 */
#ifndef EB_CHECKPOINT_H
#define EB_CHECKPOINT_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_safetensors.h"
#include "eb_status.h"

/* Length of a revision string (64 hex digits) plus the NUL. */
#define EB_REV_LEN 65

/* Name of the per-directory cache of weight-file hashes. */
#define EB_CHECKPOINT_REV_CACHE ".embroker-rev-cache"

typedef struct eb_checkpoint eb_checkpoint;

/* Open the model directory `dir`: config.json (required), preprocessor_config.json (optional)
 * and the weights. NULL on failure with the reason in err (missing file, invalid JSON naming
 * the file and position, any safetensors validation error). Caller owns the result. */
eb_checkpoint *eb_checkpoint_open(const char *dir, char *err, size_t err_len);

/* Close *ck (NULL is fine) and set it to NULL. Pointers obtained from it become invalid. */
void eb_checkpoint_close(eb_checkpoint **ck);

/* The directory, as given to open (owned by ck). */
const char *eb_checkpoint_dir(const eb_checkpoint *ck);

/* The parsed config.json root (owned by ck). */
const cJSON *eb_checkpoint_config(const eb_checkpoint *ck);

/* The parsed preprocessor_config.json root, or NULL when the file is absent (owned by ck). */
const cJSON *eb_checkpoint_preprocessor(const eb_checkpoint *ck);

/* The weights (owned by ck). */
const eb_safetensors *eb_checkpoint_weights(const eb_checkpoint *ck);

/* Compute (or take from the cache) the model revision into rev (EB_REV_LEN bytes). EB_ERR_IO
 * with err when a weights file cannot be read. The result is remembered: later calls are free. */
eb_status eb_checkpoint_model_rev(eb_checkpoint *ck, char *rev, char *err, size_t err_len);

/* ---- config values ------------------------------------------------------------------------ */

/* Read integer `key` of object `obj` into *out: `dflt` when absent (or JSON null); an error
 * naming `what` (e.g. "config.json vision_config"), the key and the value when it is not an
 * integer in [min, max]. */
eb_status eb_json_get_int(const cJSON *obj, const char *what, const char *key, int64_t dflt,
                          int64_t min, int64_t max, int64_t *out, char *err, size_t err_len);

/* The same for a number (double) in [min, max]. */
eb_status eb_json_get_double(const cJSON *obj, const char *what, const char *key, double dflt,
                             double min, double max, double *out, char *err, size_t err_len);

/* The same for a boolean. */
eb_status eb_json_get_bool(const cJSON *obj, const char *what, const char *key, bool dflt,
                           bool *out, char *err, size_t err_len);

/* The same for a string: *out points into obj (or is dflt). */
eb_status eb_json_get_string(const cJSON *obj, const char *what, const char *key,
                             const char *dflt, const char **out, char *err, size_t err_len);

/* ---- image preprocessing ------------------------------------------------------------------ */

/* PIL resample codes (preprocessor_config.json "resample"). Only BICUBIC is implemented. */
#define EB_RESAMPLE_BICUBIC 3

/* What SiglipImageProcessor does to an image, from preprocessor_config.json with its defaults. */
typedef struct eb_image_preproc {
    int height, width;     /* "size": {"height", "width"}; default the model's image_size */
    int resample;          /* default 3 (BICUBIC) */
    bool do_resize;        /* default true */
    bool do_rescale;       /* default true */
    double rescale_factor; /* default 1/255 */
    bool do_normalize;     /* default true */
    float mean[3];         /* "image_mean", default 0.5 */
    float std[3];          /* "image_std", default 0.5 */
} eb_image_preproc;

/* Fill *p from the checkpoint's preprocessor_config.json (or the defaults when absent), with
 * `image_size` as the default size. EB_ERR_INVALID/EB_ERR_UNSUPPORTED with err for values we
 * cannot reproduce (a resample filter other than BICUBIC, a non-positive std, a size that is
 * not image_size when do_resize is false, ...). */
eb_status eb_checkpoint_image_preproc(const eb_checkpoint *ck, int image_size,
                                      eb_image_preproc *p, char *err, size_t err_len);

/* preproc_rev of p and the resize implementation's version string into rev (EB_REV_LEN);
 * resize_version NULL means EB_RESIZE_VERSION (eb_resize.h), the resize we actually run. */
void eb_image_preproc_rev(const eb_image_preproc *p, const char *resize_version, char *rev);

#endif
