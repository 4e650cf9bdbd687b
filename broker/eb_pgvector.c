/* eb_pgvector — pgvector binary formats and the CombinedEmbedding builder.
 *
 * The broker talks to PostgreSQL in the binary protocol for vectors: a 768-float vector is
 * 3 KiB in binary against ~7 KiB of decimal text, and neither side spends time printing or
 * parsing floats. The formats are pgvector's own send/recv functions (big-endian header and
 * elements); halfvec elements are IEEE binary16, converted here with round-to-nearest-even
 * exactly as pgvector's float4 → halfvec cast does, so a vector cast on the server and one
 * encoded here give the same bits.
 */
#include "eb_pgvector.h"

#include <math.h>
#include <string.h>

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint16_t get_be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint32_t float_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    return x;
}

static float bits_float(uint32_t x)
{
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

/* Shared header check for both decoders: elem_size 4 (vector) or 2 (halfvec). */
static eb_status decode_header(const uint8_t *buf, size_t len, size_t elem_size, uint32_t cap,
                               uint32_t *dims)
{
    if (!buf || len < 4)
        return EB_ERR_PROTOCOL;
    uint32_t n = get_be16(buf);
    if (get_be16(buf + 2) != 0 || len != 4 + elem_size * n)
        return EB_ERR_PROTOCOL;
    if (dims)
        *dims = n;
    if (n > cap)
        return EB_ERR_TOO_LARGE;
    return EB_OK;
}

size_t eb_pgvector_size(uint32_t dims)
{
    return 4 + 4 * (size_t)dims;
}

size_t eb_pghalfvec_size(uint32_t dims)
{
    return 4 + 2 * (size_t)dims;
}

uint16_t eb_f32_to_f16(float value)
{
    uint32_t x = float_bits(value);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xffu;
    uint32_t mant = x & 0x7fffffu;
    if (exp == 0xff) /* inf stays inf; NaN keeps a quiet NaN payload bit */
        return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        /* Subnormal half (or zero): value = m · 2^-24 with m = (1.mant) >> (14 - e). */
        if (e < -10)
            return (uint16_t)sign;
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    /* A carry out of the mantissa bumps the exponent, up to inf: that is the right answer. */
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1)))
        half++;
    return (uint16_t)(sign | half);
}

float eb_f16_to_f32(uint16_t half)
{
    uint32_t sign = (uint32_t)(half & 0x8000u) << 16;
    uint32_t exp = (half >> 10) & 0x1fu;
    uint32_t mant = half & 0x3ffu;
    if (exp == 0) {
        if (mant == 0)
            return bits_float(sign);
        uint32_t e = 0; /* normalise the subnormal */
        while (!(mant & 0x400u)) {
            mant <<= 1;
            e++;
        }
        return bits_float(sign | ((127 - 14 - e) << 23) | ((mant & 0x3ffu) << 13));
    }
    if (exp == 31)
        return bits_float(sign | 0x7f800000u | (mant << 13));
    return bits_float(sign | ((exp + 112) << 23) | (mant << 13));
}

eb_status eb_pgvector_encode(const float *values, uint32_t dims, uint8_t *out, size_t cap)
{
    if (!values || !out || dims == 0 || dims > EB_PGVECTOR_MAX_DIM)
        return EB_ERR_INVALID;
    if (cap < eb_pgvector_size(dims))
        return EB_ERR_TOO_LARGE;
    put_be16(out, (uint16_t)dims);
    put_be16(out + 2, 0);
    for (uint32_t i = 0; i < dims; i++) {
        if (!isfinite(values[i]))
            return EB_ERR_INVALID;
        put_be32(out + 4 + 4 * (size_t)i, float_bits(values[i]));
    }
    return EB_OK;
}

eb_status eb_pgvector_encode_le(const uint8_t *le_floats, uint32_t dims, uint8_t *out,
                                size_t cap)
{
    if (!le_floats || !out || dims == 0 || dims > EB_PGVECTOR_MAX_DIM)
        return EB_ERR_INVALID;
    if (cap < eb_pgvector_size(dims))
        return EB_ERR_TOO_LARGE;
    put_be16(out, (uint16_t)dims);
    put_be16(out + 2, 0);
    for (uint32_t i = 0; i < dims; i++) {
        const uint8_t *p = le_floats + 4 * (size_t)i;
        uint32_t bits = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                        ((uint32_t)p[3] << 24);
        if ((bits & 0x7f800000u) == 0x7f800000u) /* NaN or inf */
            return EB_ERR_INVALID;
        put_be32(out + 4 + 4 * (size_t)i, bits);
    }
    return EB_OK;
}

eb_status eb_pgvector_decode(const uint8_t *buf, size_t len, float *out, uint32_t cap,
                             uint32_t *dims)
{
    uint32_t n = 0;
    eb_status st = decode_header(buf, len, 4, cap, &n);
    if (dims)
        *dims = n;
    if (st != EB_OK)
        return st;
    for (uint32_t i = 0; i < n; i++)
        out[i] = bits_float(get_be32(buf + 4 + 4 * (size_t)i));
    return EB_OK;
}

eb_status eb_pghalfvec_encode(const float *values, uint32_t dims, uint8_t *out, size_t cap)
{
    if (!values || !out || dims == 0 || dims > EB_PGVECTOR_MAX_DIM)
        return EB_ERR_INVALID;
    if (cap < eb_pghalfvec_size(dims))
        return EB_ERR_TOO_LARGE;
    put_be16(out, (uint16_t)dims);
    put_be16(out + 2, 0);
    for (uint32_t i = 0; i < dims; i++) {
        if (!isfinite(values[i]))
            return EB_ERR_INVALID;
        uint16_t h = eb_f32_to_f16(values[i]);
        if ((h & 0x7c00u) == 0x7c00u) /* rounded past 65504 */
            return EB_ERR_INVALID;
        put_be16(out + 4 + 2 * (size_t)i, h);
    }
    return EB_OK;
}

eb_status eb_pghalfvec_decode(const uint8_t *buf, size_t len, float *out, uint32_t cap,
                              uint32_t *dims)
{
    uint32_t n = 0;
    eb_status st = decode_header(buf, len, 2, cap, &n);
    if (dims)
        *dims = n;
    if (st != EB_OK)
        return st;
    for (uint32_t i = 0; i < n; i++)
        out[i] = eb_f16_to_f32(get_be16(buf + 4 + 2 * (size_t)i));
    return EB_OK;
}

/* out[0..n) = w · v / ‖v‖, or zeros when v is NULL. */
static eb_status scaled_unit(const float *v, uint32_t n, float w, float *out)
{
    if (!v) {
        memset(out, 0, (size_t)n * sizeof *out);
        return EB_OK;
    }
    double ss = 0;
    for (uint32_t i = 0; i < n; i++)
        ss += (double)v[i] * v[i];
    if (!(ss > 0) || !isfinite(ss))
        return EB_ERR_INVALID;
    double scale = (double)w / sqrt(ss);
    for (uint32_t i = 0; i < n; i++)
        out[i] = (float)(v[i] * scale);
    return EB_OK;
}

eb_status eb_combined_build(const float *image, uint32_t image_dims, const float *text,
                            uint32_t text_dims, float w_img, float w_txt, float *out)
{
    uint64_t total = (uint64_t)image_dims + text_dims;
    if (!out || (!image && !text) || !isfinite(w_img) || !isfinite(w_txt) || total == 0 ||
        total > EB_PGVECTOR_MAX_DIM)
        return EB_ERR_INVALID;
    eb_status st = scaled_unit(image, image_dims, w_img, out);
    if (st == EB_OK)
        st = scaled_unit(text, text_dims, w_txt, out + image_dims);
    return st;
}

eb_status eb_combined_query(const float *image, uint32_t image_dims, const float *text,
                            uint32_t text_dims, float *out)
{
    return eb_combined_build(image, image_dims, text, text_dims, 1.0f, 1.0f, out);
}
