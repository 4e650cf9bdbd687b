/* eb_image — untrusted image bytes in, Pillow-identical RGB8 out.
 *
 * The reference pipeline opens files with Pillow and calls convert("RGB"), so "correct" here
 * means "the bytes Pillow would produce", including Pillow's odd corners. Each decoder asks its
 * library for the file's native samples (libjpeg-turbo through TurboJPEG, libspng in raw PNG
 * sample format, libwebp) and then applies Pillow's unpacking and conversion rules itself:
 *   - JPEG: ISLOW IDCT and fancy upsampling (Pillow's libjpeg settings); CMYK is taken as Adobe
 *     (inverted) CMYK like Pillow's "CMYK;I" raw mode and converted with Pillow's cmyk2rgb;
 *   - PNG: 1/2/4-bit gray scaled to 0..255, 16-bit samples reduced to their high byte, except
 *     16-bit grayscale, which Pillow opens as I;16 and clips at 255 when converting;
 *     palette indices past the PLTE entries come out black;
 *   - WebP: decoded as libwebp's animation decoder does for the first frame (RGBA, default
 *     options), alpha then dropped.
 * Alpha is dropped (convert("RGB")) unless EB_ALPHA_WHITE asks for transformers' white
 * compositing, done with Pillow's alpha_composite integer arithmetic.
 * Limits come first: the encoded size, then width/height from the header, before any pixel
 * is decoded. Truncation is an error, as in Pillow (LOAD_TRUNCATED_IMAGES is off by default).
 */
#include "eb_image.h"
#include "eb_status.h"

#include <spng.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <webp/decode.h>

/* ---- helpers ------------------------------------------------------------------------------ */

/* Checks the header's dimensions against the limits before anything is allocated. */
static eb_status check_size(const char *what, uint64_t w, uint64_t h, const eb_image_options *o,
                            char *err, size_t err_len)
{
    if (w == 0 || h == 0) {
        eb_set_err(err, err_len, "%s image is %llux%llu pixels: empty image; send a real picture",
                   what, (unsigned long long)w, (unsigned long long)h);
        return EB_ERR_INVALID;
    }
    if (w > EB_IMAGE_MAX_SIDE || h > EB_IMAGE_MAX_SIDE) {
        eb_set_err(err, err_len,
                   "%s image is %llux%llu pixels, a side longer than %d; downscale it before "
                   "sending", what, (unsigned long long)w, (unsigned long long)h,
                   EB_IMAGE_MAX_SIDE);
        return EB_ERR_TOO_LARGE;
    }
    if (w * h > o->max_pixels) {
        eb_set_err(err, err_len,
                   "%s image is %llux%llu = %llu pixels, over the limit of %llu (max_pixels); "
                   "downscale it before sending",
                   what, (unsigned long long)w, (unsigned long long)h,
                   (unsigned long long)(w * h), (unsigned long long)o->max_pixels);
        return EB_ERR_TOO_LARGE;
    }
    if (w < (uint64_t)o->min_side || h < (uint64_t)o->min_side) {
        eb_set_err(err, err_len,
                   "%s image is %llux%llu pixels, smaller than the minimum %dx%d; send an image "
                   "at least %d pixels on each side",
                   what, (unsigned long long)w, (unsigned long long)h, o->min_side, o->min_side,
                   o->min_side);
        return EB_ERR_INVALID;
    }
    return EB_OK;
}

static uint8_t *alloc_rgb(int w, int h)
{
    return malloc((size_t)w * (size_t)h * 3);
}

/* Pillow's alpha_composite of (r, g, b, a) over opaque white (AlphaComposite.c, 7 extra bits).
 * The result is what transformers' convert_to_rgb produces. */
static inline void over_white(uint8_t *px, unsigned a)
{
    if (a == 0) {
        px[0] = px[1] = px[2] = 255;
        return;
    }
    const uint32_t prec = 7;
    uint32_t blend = 255u * (255u - a);
    uint32_t outa255 = a * 255u + blend;
    uint32_t coef1 = a * 255u * 255u * (1u << prec) / outa255;
    uint32_t coef2 = 255u * (1u << prec) - coef1;
    for (int c = 0; c < 3; c++) {
        uint32_t t = px[c] * coef1 + 255u * coef2 + (0x80u << prec);
        px[c] = (uint8_t)((((t >> 8) + t) >> 8) >> prec);
    }
}

/* ---- JPEG --------------------------------------------------------------------------------- */

/* Pillow's cmyk2rgb applied to Pillow's CMYK samples, which are the inverted libjpeg samples
 * (raw mode "CMYK;I": Pillow assumes Adobe polarity for every CMYK JPEG). */
static void cmyk_to_rgb(const uint8_t *cmyk, size_t n, uint8_t *rgb)
{
    for (size_t i = 0; i < n; i++, cmyk += 4, rgb += 3) {
        int nk = cmyk[3]; /* 255 - Pillow's K, Pillow's K being 255 - libjpeg's */
        for (int c = 0; c < 3; c++) {
            int v = 255 - cmyk[c];
            int tmp = v * nk + 128;
            int r = nk - (((tmp >> 8) + tmp) >> 8);
            rgb[c] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
        }
    }
}

/* Whether a failed tjDecompress2 only met a warning that Pillow ignores too.
 * libjpeg warns (and goes on) on damaged entropy data or odd markers; Pillow ignores those
 * warnings and returns the image. A premature end of data is also only a warning in libjpeg
 * (it pads the image with grey), but Pillow refuses truncated files, and so do we.
 * TurboJPEG keeps the text of the first warning, but a later fatal error overwrites it, and
 * tjGetErrorCode says "warning" whenever any warning came first; so the decision is made on the
 * text: only a known benign warning text means that no fatal error followed. */
static bool jpeg_benign_warning(tjhandle tj)
{
    static const char *const benign[] = {
        "Corrupt JPEG data",                  /* extraneous bytes, bad Huffman code, ... */
        "Inconsistent progression sequence",  /* JWRN_BOGUS_PROGRESSION */
        "Unknown Adobe color transform code", /* JWRN_ADOBE_XFORM */
        "Warning: unknown JFIF revision",     /* JWRN_JFIF_MAJOR */
        "Invalid SOS parameters for sequential JPEG", /* JWRN_NOT_SEQUENTIAL */
    };
    if (tjGetErrorCode(tj) != TJERR_WARNING) {
        return false;
    }
    const char *msg = tjGetErrorStr2(tj);
    for (size_t i = 0; i < sizeof(benign) / sizeof(benign[0]); i++) {
        if (strncmp(msg, benign[i], strlen(benign[i])) == 0) {
            return true;
        }
    }
    return false;
}

static eb_status decode_jpeg(const uint8_t *bytes, size_t len, const eb_image_options *o,
                             eb_image *out, char *err, size_t err_len)
{
    eb_status st = EB_OK;
    uint8_t *rgb = NULL;
    uint8_t *samples = NULL; /* gray or CMYK samples before conversion; NULL for RGB */
    tjhandle tj = tjInitDecompress();
    if (!tj) {
        eb_set_err(err, err_len, "JPEG decoder could not start: %s", tjGetErrorStr2(NULL));
        return EB_ERR_NOMEM;
    }
    int w = 0, h = 0, subsamp = 0, cs = 0;
    if (tjDecompressHeader3(tj, bytes, (unsigned long)len, &w, &h, &subsamp, &cs) != 0 &&
        !jpeg_benign_warning(tj)) {
        eb_set_err(err, err_len, "JPEG header could not be read (%zu bytes): %s; the file is "
                   "truncated or not a valid JPEG", len, tjGetErrorStr2(tj));
        st = EB_ERR_DECODE;
        goto done;
    }
    st = check_size("JPEG", (uint64_t)w, (uint64_t)h, o, err, err_len);
    if (st != EB_OK) {
        goto done;
    }
    /* Pillow picks the mode from the component count: 1 -> L, 3 -> RGB, 4 -> CMYK. */
    int pf = TJPF_RGB, channels = 3;
    const char *mode = "RGB";
    if (cs == TJCS_GRAY) {
        pf = TJPF_GRAY, channels = 1, mode = "L";
    } else if (cs == TJCS_CMYK || cs == TJCS_YCCK) {
        pf = TJPF_CMYK, channels = 4, mode = "CMYK";
    }
    rgb = alloc_rgb(w, h);
    if (channels != 3) {
        samples = malloc((size_t)w * h * channels);
    }
    if (!rgb || (channels != 3 && !samples)) {
        eb_set_err(err, err_len, "out of memory decoding a %dx%d JPEG", w, h);
        st = EB_ERR_NOMEM;
        goto done;
    }
    /* ISLOW and fancy upsampling are Pillow's (libjpeg's) defaults; LIMITSCANS refuses
     * progressive files with absurd scan counts (a CPU-exhaustion trick) that no camera or
     * encoder produces. */
    int flags = TJFLAG_ACCURATEDCT | TJFLAG_LIMITSCANS;
    uint8_t *dst = channels == 3 ? rgb : samples;
    if (tjDecompress2(tj, bytes, (unsigned long)len, dst, w, 0, h, pf, flags) != 0 &&
        !jpeg_benign_warning(tj)) {
        bool truncated = strstr(tjGetErrorStr2(tj), "Premature end") != NULL;
        eb_set_err(err, err_len, "JPEG data is %s (%dx%d, %zu bytes): %s; send the complete, "
                   "undamaged file", truncated ? "truncated" : "corrupt", w, h, len,
                   tjGetErrorStr2(tj));
        st = EB_ERR_DECODE;
        goto done;
    }
    size_t n = (size_t)w * h;
    if (channels == 1) {
        for (size_t i = 0; i < n; i++) {
            rgb[i * 3 + 0] = rgb[i * 3 + 1] = rgb[i * 3 + 2] = samples[i];
        }
    } else if (channels == 4) {
        cmyk_to_rgb(samples, n, rgb);
    }
    out->width = w;
    out->height = h;
    out->rgb = rgb;
    out->format = EB_IMAGE_JPEG;
    out->mode = mode;
    rgb = NULL;
done:
    free(samples);
    free(rgb);
    tjDestroy(tj);
    return st;
}

/* ---- PNG ---------------------------------------------------------------------------------- */

/* Sample x of a packed row of `depth`-bit samples (1, 2, 4, 8 or 16; big-endian). */
static inline unsigned sample_at(const uint8_t *row, size_t x, int depth)
{
    switch (depth) {
    case 16:
        return ((unsigned)row[2 * x] << 8) | row[2 * x + 1];
    case 8:
        return row[x];
    default: {
        size_t bit = x * (size_t)depth;
        unsigned shift = 8 - (unsigned)depth - (unsigned)(bit % 8);
        return (row[bit / 8] >> shift) & ((1u << depth) - 1);
    }
    }
}

typedef struct png_info {
    struct spng_ihdr ihdr;
    struct spng_plte plte;
    struct spng_trns trns;
    bool has_trns;
} png_info;

/* Converts one decoded row (SPNG_FMT_RAW) into RGB8 the way Pillow unpacks and converts it;
 * with `white`, transparent or translucent pixels are composited onto white as transformers
 * does for images that have alpha (an alpha channel or a tRNS chunk). */
static void png_row_to_rgb(const png_info *pi, const uint8_t *row, int w, uint8_t *o, bool white)
{
    const int depth = pi->ihdr.bit_depth;
    const int ct = pi->ihdr.color_type;
    const bool composite = white && (pi->has_trns || ct == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA ||
                                     ct == SPNG_COLOR_TYPE_TRUECOLOR_ALPHA);
    for (int x = 0; x < w; x++, o += 3) {
        unsigned a = 255;
        switch (pi->ihdr.color_type) {
        case SPNG_COLOR_TYPE_GRAYSCALE: {
            unsigned v = sample_at(row, (size_t)x, depth);
            unsigned g;
            if (depth == 16) {
                g = v > 255 ? 255 : v; /* Pillow: I;16 -> RGB clips */
            } else if (depth == 8) {
                g = v;
            } else {
                g = v * (depth == 1 ? 255 : depth == 2 ? 85 : 17); /* Pillow's 1, L;2, L;4 */
            }
            o[0] = o[1] = o[2] = (uint8_t)g;
            /* Pillow keeps the tRNS value as stored and compares it with the converted pixel */
            if (pi->has_trns && pi->trns.gray == (depth == 16 ? v : g)) {
                a = 0;
            }
            break;
        }
        case SPNG_COLOR_TYPE_TRUECOLOR: {
            unsigned s = depth == 16 ? 2 : 1; /* 16-bit: Pillow's RGB;16B keeps the high byte */
            o[0] = row[(size_t)x * 3 * s];
            o[1] = row[(size_t)x * 3 * s + s];
            o[2] = row[(size_t)x * 3 * s + 2 * s];
            if (pi->has_trns && pi->trns.red == o[0] && pi->trns.green == o[1] &&
                pi->trns.blue == o[2]) {
                a = 0;
            }
            break;
        }
        case SPNG_COLOR_TYPE_INDEXED: {
            unsigned idx = sample_at(row, (size_t)x, depth);
            if (idx < pi->plte.n_entries) {
                o[0] = pi->plte.entries[idx].red;
                o[1] = pi->plte.entries[idx].green;
                o[2] = pi->plte.entries[idx].blue;
            } else {
                o[0] = o[1] = o[2] = 0; /* Pillow: entries past PLTE are black */
            }
            if (pi->has_trns && idx < pi->trns.n_type3_entries) {
                a = pi->trns.type3_alpha[idx];
            }
            break;
        }
        case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA: {
            unsigned s = depth == 16 ? 2 : 1;
            o[0] = o[1] = o[2] = row[(size_t)x * 2 * s];
            a = row[(size_t)x * 2 * s + s];
            break;
        }
        case SPNG_COLOR_TYPE_TRUECOLOR_ALPHA: {
            unsigned s = depth == 16 ? 2 : 1;
            o[0] = row[(size_t)x * 4 * s];
            o[1] = row[(size_t)x * 4 * s + s];
            o[2] = row[(size_t)x * 4 * s + 2 * s];
            a = row[(size_t)x * 4 * s + 3 * s];
            break;
        }
        default:
            break;
        }
        if (composite) {
            over_white(o, a);
        }
    }
}

/* Adam7 pass origins and steps (x0, y0, dx, dy). */
static const int ADAM7[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};

/* Reads every pass scanline of an interlaced PNG (progressive decoding already started) and
 * places its pixels into raw, (h, stride) packed samples laid out as a non-interlaced image.
 * libspng's own SPNG_FMT_RAW deinterlacing misplaces sub-byte pixels (0.7.3), so the pixels
 * are placed here, bit-exactly for every depth. Returns 0 or a libspng error. */
static int png_deinterlace(spng_ctx *ctx, const struct spng_ihdr *ih, uint8_t *raw,
                           size_t raw_len)
{
    static const int channels_of[7] = {1, 0, 3, 1, 2, 0, 4};
    const size_t h = ih->height, w = ih->width;
    const size_t stride = raw_len / h;
    const size_t bpp = (size_t)ih->bit_depth * channels_of[ih->color_type % 7]; /* bits */
    uint8_t *scan = malloc(stride + 1);
    if (!scan) {
        return SPNG_EMEM;
    }
    memset(raw, 0, raw_len);
    int r;
    do {
        struct spng_row_info ri;
        r = spng_get_row_info(ctx, &ri);
        if (r != 0) {
            break;
        }
        r = spng_decode_scanline(ctx, scan, stride + 1);
        if (r != 0 && r != SPNG_EOI) {
            break;
        }
        if (ri.pass < 0 || ri.pass > 6 || ri.row_num >= h) {
            r = SPNG_EINTERNAL;
            break;
        }
        const size_t x0 = (size_t)ADAM7[ri.pass][0], dx = (size_t)ADAM7[ri.pass][2];
        uint8_t *row = raw + (size_t)ri.row_num * stride;
        for (size_t i = 0, x = x0; x < w; i++, x += dx) {
            if (bpp >= 8) {
                memcpy(row + x * (bpp / 8), scan + i * (bpp / 8), bpp / 8);
            } else {
                size_t from = i * bpp, to = x * bpp;
                unsigned v = (scan[from / 8] >> (8 - bpp - from % 8)) & ((1u << bpp) - 1);
                row[to / 8] |= (uint8_t)(v << (8 - bpp - to % 8));
            }
        }
    } while (r != SPNG_EOI);
    free(scan);
    return r == SPNG_EOI ? 0 : r;
}

static const char *png_mode(const struct spng_ihdr *ih)
{
    switch (ih->color_type) {
    case SPNG_COLOR_TYPE_GRAYSCALE:
        return ih->bit_depth == 1 ? "1" : ih->bit_depth == 16 ? "I;16" : "L";
    case SPNG_COLOR_TYPE_TRUECOLOR:
        return "RGB";
    case SPNG_COLOR_TYPE_INDEXED:
        return "P";
    case SPNG_COLOR_TYPE_GRAYSCALE_ALPHA:
        return ih->bit_depth == 16 ? "RGBA" : "LA";
    default:
        return "RGBA";
    }
}

static eb_status decode_png(const uint8_t *bytes, size_t len, const eb_image_options *o,
                            eb_image *out, char *err, size_t err_len)
{
    eb_status st = EB_OK;
    uint8_t *raw = NULL;
    uint8_t *rgb = NULL;
    png_info pi;
    memset(&pi, 0, sizeof(pi));
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) {
        eb_set_err(err, err_len, "PNG decoder could not start: out of memory");
        return EB_ERR_NOMEM;
    }
    /* Ancillary chunks (text, ICC profiles) are not needed; bound what they may cost. */
    spng_set_chunk_limits(ctx, (size_t)16 << 20, (size_t)32 << 20);
    int r = spng_set_png_buffer(ctx, bytes, len);
    if (r == 0) {
        r = spng_get_ihdr(ctx, &pi.ihdr);
    }
    if (r != 0) {
        eb_set_err(err, err_len, "PNG header could not be read (%zu bytes): %s; the file is "
                   "truncated or not a valid PNG", len, spng_strerror(r));
        st = EB_ERR_DECODE;
        goto done;
    }
    int w = (int)pi.ihdr.width, h = (int)pi.ihdr.height;
    st = check_size("PNG", pi.ihdr.width, pi.ihdr.height, o, err, err_len);
    if (st != EB_OK) {
        goto done;
    }
    size_t raw_len = 0;
    r = spng_decoded_image_size(ctx, SPNG_FMT_RAW, &raw_len);
    if (r != 0) {
        eb_set_err(err, err_len, "PNG %dx%d cannot be decoded: %s", w, h, spng_strerror(r));
        st = EB_ERR_DECODE;
        goto done;
    }
    /* Non-interlaced images are decoded a row at a time, so the raw samples (up to 8 bytes a
     * pixel for 16-bit RGBA) never exist for the whole image; interlaced ones need it all. */
    bool by_row = pi.ihdr.interlace_method == 0;
    size_t stride = raw_len / (size_t)h;
    raw = malloc(by_row ? stride : raw_len);
    rgb = alloc_rgb(w, h);
    if (!raw || !rgb) {
        eb_set_err(err, err_len, "out of memory decoding a %dx%d PNG", w, h);
        st = EB_ERR_NOMEM;
        goto done;
    }
    r = spng_decode_image(ctx, NULL, 0, SPNG_FMT_RAW, SPNG_DECODE_PROGRESSIVE);
    if (r == 0 && !by_row) {
        r = png_deinterlace(ctx, &pi.ihdr, raw, raw_len);
    }
    if (r != 0) {
        goto corrupt;
    }
    if (pi.ihdr.color_type == SPNG_COLOR_TYPE_INDEXED) {
        r = spng_get_plte(ctx, &pi.plte);
        if (r != 0) {
            eb_set_err(err, err_len, "palette PNG (%dx%d) has no usable PLTE chunk: %s", w, h,
                       spng_strerror(r));
            st = EB_ERR_DECODE;
            goto done;
        }
    }
    pi.has_trns = spng_get_trns(ctx, &pi.trns) == 0;
    for (int y = 0; y < h; y++) {
        const uint8_t *row = raw + (by_row ? 0 : (size_t)y * stride);
        if (by_row) {
            r = spng_decode_row(ctx, raw, stride);
            /* SPNG_EOI comes with the last row */
            if (r != 0 && !(r == SPNG_EOI && y == h - 1)) {
                goto corrupt;
            }
        }
        png_row_to_rgb(&pi, row, w, rgb + (size_t)y * w * 3, o->alpha == EB_ALPHA_WHITE);
    }
    out->width = w;
    out->height = h;
    out->rgb = rgb;
    out->format = EB_IMAGE_PNG;
    out->mode = png_mode(&pi.ihdr);
    rgb = NULL;
    goto done;
corrupt:
    eb_set_err(err, err_len, "PNG data is truncated or corrupt (%dx%d, %zu bytes): %s; send the "
               "complete, undamaged file", w, h, len, spng_strerror(r));
    st = EB_ERR_DECODE;
done:
    free(raw);
    free(rgb);
    spng_ctx_free(ctx);
    return st;
}

/* ---- WebP --------------------------------------------------------------------------------- */

static const char *webp_status_str(VP8StatusCode s)
{
    switch (s) {
    case VP8_STATUS_OUT_OF_MEMORY:
        return "out of memory";
    case VP8_STATUS_INVALID_PARAM:
        return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR:
        return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE:
        return "unsupported feature";
    case VP8_STATUS_SUSPENDED:
        return "suspended";
    case VP8_STATUS_USER_ABORT:
        return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA:
        return "not enough data (truncated)";
    default:
        return "unknown error";
    }
}

static eb_status decode_webp(const uint8_t *bytes, size_t len, const eb_image_options *o,
                             eb_image *out, char *err, size_t err_len)
{
    WebPDecoderConfig cfg;
    if (!WebPInitDecoderConfig(&cfg)) {
        eb_set_err(err, err_len, "WebP decoder could not start: library version mismatch");
        return EB_ERR_INTERNAL;
    }
    VP8StatusCode s = WebPGetFeatures(bytes, len, &cfg.input);
    if (s != VP8_STATUS_OK) {
        eb_set_err(err, err_len, "WebP header could not be read (%zu bytes): %s; the file is "
                   "truncated or not a valid WebP", len, webp_status_str(s));
        return EB_ERR_DECODE;
    }
    int w = cfg.input.width, h = cfg.input.height;
    eb_status st = check_size("WebP", (uint64_t)w, (uint64_t)h, o, err, err_len);
    if (st != EB_OK) {
        return st;
    }
    if (cfg.input.has_animation) {
        eb_set_err(err, err_len, "WebP image (%dx%d) is animated; animated WebP is not supported, "
                   "send a single frame as PNG, JPEG or still WebP", w, h);
        return EB_ERR_UNSUPPORTED;
    }
    /* Pillow decodes through libwebp's animation decoder, which writes non-premultiplied RGBA
     * for the first frame with default options; without alpha, MODE_RGB yields the same RGB. */
    bool alpha = cfg.input.has_alpha != 0;
    int channels = alpha ? 4 : 3;
    uint8_t *buf = malloc((size_t)w * h * channels);
    if (!buf) {
        eb_set_err(err, err_len, "out of memory decoding a %dx%d WebP", w, h);
        return EB_ERR_NOMEM;
    }
    cfg.output.colorspace = alpha ? MODE_RGBA : MODE_RGB;
    cfg.output.is_external_memory = 1;
    cfg.output.u.RGBA.rgba = buf;
    cfg.output.u.RGBA.stride = w * channels;
    cfg.output.u.RGBA.size = (size_t)w * h * channels;
    s = WebPDecode(bytes, len, &cfg);
    WebPFreeDecBuffer(&cfg.output);
    if (s != VP8_STATUS_OK) {
        free(buf);
        eb_set_err(err, err_len, "WebP data is truncated or corrupt (%dx%d, %zu bytes): %s; send "
                   "the complete, undamaged file", w, h, len, webp_status_str(s));
        return EB_ERR_DECODE;
    }
    if (alpha) {
        /* RGBA -> RGB in place: the write index never passes the read index. */
        size_t n = (size_t)w * h;
        for (size_t i = 0; i < n; i++) {
            uint8_t a = buf[i * 4 + 3];
            buf[i * 3 + 0] = buf[i * 4 + 0];
            buf[i * 3 + 1] = buf[i * 4 + 1];
            buf[i * 3 + 2] = buf[i * 4 + 2];
            if (o->alpha == EB_ALPHA_WHITE) {
                over_white(buf + i * 3, a);
            }
        }
        uint8_t *shrunk = realloc(buf, n * 3);
        if (shrunk) {
            buf = shrunk;
        }
    }
    out->width = w;
    out->height = h;
    out->rgb = buf;
    out->format = EB_IMAGE_WEBP;
    out->mode = alpha ? "RGBA" : "RGB";
    return EB_OK;
}

/* ---- public ------------------------------------------------------------------------------- */

void eb_image_options_default(eb_image_options *o)
{
    o->max_encoded_bytes = EB_IMAGE_DEFAULT_MAX_ENCODED_BYTES;
    o->max_pixels = EB_IMAGE_DEFAULT_MAX_PIXELS;
    o->min_side = EB_IMAGE_DEFAULT_MIN_SIDE;
    o->alpha = EB_ALPHA_DROP;
}

eb_image_format eb_image_sniff(const uint8_t *b, size_t len)
{
    if (!b) {
        return EB_IMAGE_AUTO;
    }
    if (len >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) {
        return EB_IMAGE_JPEG;
    }
    if (len >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0) {
        return EB_IMAGE_PNG;
    }
    if (len >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0) {
        return EB_IMAGE_WEBP;
    }
    return EB_IMAGE_AUTO;
}

const char *eb_image_format_name(eb_image_format fmt)
{
    switch (fmt) {
    case EB_IMAGE_JPEG:
        return "jpeg";
    case EB_IMAGE_PNG:
        return "png";
    case EB_IMAGE_WEBP:
        return "webp";
    case EB_IMAGE_RAW_RGB8:
        return "raw_rgb8";
    default:
        return "auto";
    }
}

/* "ff d8 ff e0 ..." for the first up to 8 bytes. */
static void first_bytes(const uint8_t *b, size_t len, char *buf, size_t cap)
{
    size_t n = len < 8 ? len : 8, used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used + 4 < cap; i++) {
        used += (size_t)snprintf(buf + used, cap - used, "%s%02x", i ? " " : "", b[i]);
    }
}

static void options_or_default(const eb_image_options *opt, eb_image_options *o)
{
    if (opt) {
        *o = *opt;
    } else {
        eb_image_options_default(o);
    }
}

eb_status eb_image_decode(const uint8_t *bytes, size_t len, eb_image_format fmt,
                          const eb_image_options *opt, eb_image *out, char *err, size_t err_len)
{
    if (!out) {
        eb_set_err(err, err_len, "eb_image_decode: no output image given");
        return EB_ERR_INVALID;
    }
    memset(out, 0, sizeof(*out));
    eb_set_err(err, err_len, "%s", "");
    eb_image_options o;
    options_or_default(opt, &o);
    if (len == 0 || !bytes) {
        eb_set_err(err, err_len, "image is empty (0 bytes); send the file's contents");
        return EB_ERR_DECODE;
    }
    if (len > o.max_encoded_bytes) {
        eb_set_err(err, err_len, "image is %zu bytes, over the limit of %zu (max_encoded_bytes); "
                   "send a smaller file", len, o.max_encoded_bytes);
        return EB_ERR_TOO_LARGE;
    }
    if (fmt == EB_IMAGE_RAW_RGB8) {
        eb_set_err(err, err_len, "raw RGB8 needs its width and height; use "
                   "eb_image_from_raw_rgb8");
        return EB_ERR_INVALID;
    }
    eb_image_format sniffed = eb_image_sniff(bytes, len);
    char head[40];
    first_bytes(bytes, len, head, sizeof(head));
    if (sniffed == EB_IMAGE_AUTO) {
        eb_set_err(err, err_len, "unknown image format (first bytes %s); send JPEG, PNG or WebP, "
                   "or raw RGB8 with its width and height", head);
        return EB_ERR_DECODE;
    }
    if (fmt != EB_IMAGE_AUTO && fmt != sniffed) {
        eb_set_err(err, err_len, "image was declared %s but its bytes are %s (first bytes %s); "
                   "declare the right format or use auto", eb_image_format_name(fmt),
                   eb_image_format_name(sniffed), head);
        return EB_ERR_DECODE;
    }
    eb_status st;
    switch (sniffed) {
    case EB_IMAGE_JPEG:
        st = decode_jpeg(bytes, len, &o, out, err, err_len);
        break;
    case EB_IMAGE_PNG:
        st = decode_png(bytes, len, &o, out, err, err_len);
        break;
    default:
        st = decode_webp(bytes, len, &o, out, err, err_len);
        break;
    }
    if (st != EB_OK) {
        memset(out, 0, sizeof(*out));
    }
    return st;
}

eb_status eb_image_from_raw_rgb8(const uint8_t *bytes, size_t len, int width, int height,
                                 const eb_image_options *opt, eb_image *out, char *err,
                                 size_t err_len)
{
    if (!out) {
        eb_set_err(err, err_len, "eb_image_from_raw_rgb8: no output image given");
        return EB_ERR_INVALID;
    }
    memset(out, 0, sizeof(*out));
    eb_set_err(err, err_len, "%s", "");
    eb_image_options o;
    options_or_default(opt, &o);
    if (width < 0 || height < 0) {
        eb_set_err(err, err_len, "raw RGB8 image has a negative size %dx%d", width, height);
        return EB_ERR_INVALID;
    }
    if (len > o.max_encoded_bytes) {
        eb_set_err(err, err_len, "raw RGB8 image is %zu bytes, over the limit of %zu "
                   "(max_encoded_bytes); send a smaller image", len, o.max_encoded_bytes);
        return EB_ERR_TOO_LARGE;
    }
    eb_status st = check_size("raw RGB8", (uint64_t)width, (uint64_t)height, &o, err, err_len);
    if (st != EB_OK) {
        return st;
    }
    uint64_t want = (uint64_t)width * (uint64_t)height * 3;
    if (!bytes || (uint64_t)len != want) {
        eb_set_err(err, err_len, "raw RGB8 image of %dx%d needs %llu bytes, got %zu; send "
                   "width*height*3 bytes, rows top to bottom, R G B per pixel", width, height,
                   (unsigned long long)want, len);
        return EB_ERR_INVALID;
    }
    uint8_t *rgb = alloc_rgb(width, height);
    if (!rgb) {
        eb_set_err(err, err_len, "out of memory copying a %dx%d raw image", width, height);
        return EB_ERR_NOMEM;
    }
    memcpy(rgb, bytes, len);
    out->width = width;
    out->height = height;
    out->rgb = rgb;
    out->format = EB_IMAGE_RAW_RGB8;
    out->mode = "RGB";
    return EB_OK;
}

void eb_image_free(eb_image *img)
{
    if (!img) {
        return;
    }
    free(img->rgb);
    memset(img, 0, sizeof(*img));
}
