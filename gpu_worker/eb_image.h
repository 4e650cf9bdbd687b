/* eb_image — decode JPEG, PNG and WebP (or accept raw RGB8) into RGB8 exactly as Pillow does.
 *
 * The reference pipeline is Image.open(f).convert("RGB"): the pixels this module produces are
 * byte-identical to Pillow's for every mode it supports (docs/images.md lists the modes, the
 * conversions and the odd cases, e.g. 16-bit grayscale is clipped, not scaled). Inputs are
 * untrusted: dimensions are read from the header and checked against the limits before any
 * pixel is decoded, and every failure returns a status and a message, never a crash.
 */
#ifndef EB_IMAGE_H
#define EB_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "eb_status.h"

typedef enum eb_image_format {
    EB_IMAGE_AUTO = 0, /* sniff the magic bytes: JPEG, PNG or WebP */
    EB_IMAGE_JPEG = 1,
    EB_IMAGE_PNG = 2,
    EB_IMAGE_WEBP = 3,
    EB_IMAGE_RAW_RGB8 = 4, /* packed (h, w, 3); only through eb_image_from_raw_rgb8 */
} eb_image_format;

/* What happens to an alpha channel (RGBA, LA, palette or colour-key transparency). */
typedef enum eb_image_alpha {
    /* Drop it: Pillow's convert("RGB"), the colour under a transparent pixel shows. Default. */
    EB_ALPHA_DROP = 0,
    /* Composite onto opaque white as transformers' convert_to_rgb does (PIL.Image.alpha_composite
     * over (255, 255, 255, 255), bit for bit), what SiglipImageProcessor(Pil) does by default to
     * a PIL image that has transparency. */
    EB_ALPHA_WHITE = 1,
} eb_image_alpha;

#define EB_IMAGE_DEFAULT_MAX_ENCODED_BYTES ((size_t)64 << 20) /* 64 MiB */
#define EB_IMAGE_DEFAULT_MAX_PIXELS ((uint64_t)64000000)      /* 64 MP */
#define EB_IMAGE_DEFAULT_MIN_SIDE 2
/* Longest side accepted whatever the pixel count (JPEG's own maximum): keeps a 2 x 30,000,000
 * strip from costing hundreds of MB of resize taps. Larger: EB_ERR_TOO_LARGE. */
#define EB_IMAGE_MAX_SIDE 65535

typedef struct eb_image_options {
    size_t max_encoded_bytes; /* larger inputs: EB_ERR_TOO_LARGE before any parsing */
    uint64_t max_pixels;      /* width * height above this: EB_ERR_TOO_LARGE, from the header */
    int min_side;             /* width or height below this: EB_ERR_INVALID (default 2) */
    eb_image_alpha alpha;     /* EB_ALPHA_DROP by default */
} eb_image_options;

/* A decoded image. rgb is (height, width, 3) packed RGB8, owned by the image: eb_image_free. */
typedef struct eb_image {
    int width;
    int height;
    uint8_t *rgb;
    eb_image_format format; /* what the bytes were */
    const char *mode;       /* the mode Pillow opens the file as ("RGB", "L", "P", "CMYK",
                             * "I;16", "RGBA", "LA", "1"); static string */
} eb_image;

/* Fills o with the defaults above. */
void eb_image_options_default(eb_image_options *o);

/* The format the magic bytes announce, or EB_IMAGE_AUTO when none is recognised. */
eb_image_format eb_image_sniff(const uint8_t *bytes, size_t len);

/* Lower-case name of a format ("jpeg", "png", "webp", "raw_rgb8", "auto"). Static string. */
const char *eb_image_format_name(eb_image_format fmt);

/* Decodes bytes (len bytes, borrowed) of format fmt (EB_IMAGE_AUTO: sniff) into out, which
 * receives a freshly allocated RGB8 buffer owned by the caller (eb_image_free). opt may be
 * NULL for the defaults.
 * Returns EB_OK; EB_ERR_DECODE for an unknown format, a format/bytes mismatch, a truncated or
 * corrupt file; EB_ERR_TOO_LARGE when len, a side (over EB_IMAGE_MAX_SIDE) or the pixel count
 * exceeds the limits (checked from the header, before decoding); EB_ERR_INVALID for an image
 * smaller than min_side or bad arguments; EB_ERR_UNSUPPORTED for animated WebP; EB_ERR_NOMEM.
 * On error out is zeroed and err (if not NULL) holds a one-line message saying what failed,
 * with which value, and what to do. */
eb_status eb_image_decode(const uint8_t *bytes, size_t len, eb_image_format fmt,
                          const eb_image_options *opt, eb_image *out, char *err, size_t err_len);

/* Wraps raw packed RGB8 pixels (height, width, 3) into out, copying them (caller owns out:
 * eb_image_free). len must be exactly width * height * 3. Same limits and errors as
 * eb_image_decode (EB_ERR_INVALID for a wrong length or bad size). */
eb_status eb_image_from_raw_rgb8(const uint8_t *bytes, size_t len, int width, int height,
                                 const eb_image_options *opt, eb_image *out, char *err,
                                 size_t err_len);

/* Frees img->rgb and zeroes img. Safe on a zeroed image and on NULL. */
void eb_image_free(eb_image *img);

#endif
