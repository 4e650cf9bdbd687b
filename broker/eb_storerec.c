/* eb_storerec — a stable, versioned byte form for one store record.
 *
 * The record is written once and read possibly much later (after a crash, by a newer broker),
 * so the format is explicit little-endian with a version byte, and the reader checks every
 * length against the buffer before touching it. Floats are kept as raw little-endian bytes; the
 * sender turns them straight into pgvector's big-endian binary without an intermediate copy
 * (eb_storerec_view_of + eb_pgvector_encode_le).
 */
#include "eb_storerec.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "eb_pgvector.h"

#define HEADER_LEN 22

eb_status eb_store_id_new(uint8_t id[EB_STORE_ID_LEN])
{
    size_t got = 0;
    while (got < EB_STORE_ID_LEN) {
        ssize_t n = getrandom(id + got, EB_STORE_ID_LEN - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return EB_ERR_IO;
        }
        got += (size_t)n;
    }
    id[6] = (uint8_t)((id[6] & 0x0f) | 0x40); /* version 4 */
    id[8] = (uint8_t)((id[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    return EB_OK;
}

void eb_store_id_str(const uint8_t id[EB_STORE_ID_LEN], char out[37])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < EB_STORE_ID_LEN; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[id[i] >> 4];
        out[o++] = hex[id[i] & 15];
    }
    out[o] = 0;
}

static void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

eb_status eb_storerec_encode(const eb_store_record *rec, uint8_t **out, size_t *len)
{
    if (!rec || !out || !len)
        return EB_ERR_INVALID;
    const char *strs[6] = {rec->product_id, rec->business_template, rec->source_type,
                           rec->model,      rec->model_rev,         rec->preproc_rev};
    const float *vecs[3] = {rec->image, rec->text, rec->combined};
    uint32_t dims[3] = {rec->image_dims, rec->text_dims, rec->combined_dims};
    size_t total = HEADER_LEN + (rec->content_hash ? EB_HASH_LEN : 0);
    for (int i = 0; i < 6; i++) {
        if (!strs[i] || !*strs[i] || strlen(strs[i]) > 65535)
            return EB_ERR_INVALID;
        total += 2 + strlen(strs[i]);
    }
    for (int i = 0; i < 3; i++) {
        if ((vecs[i] == NULL) != (dims[i] == 0) || dims[i] > EB_PGVECTOR_MAX_DIM)
            return EB_ERR_INVALID;
        for (uint32_t k = 0; k < dims[i]; k++)
            if (!isfinite(vecs[i][k]))
                return EB_ERR_INVALID;
        total += 4 + 4 * (size_t)dims[i];
    }
    if (rec->upsert && strcmp(rec->source_type, "scan") == 0)
        return EB_ERR_INVALID;
    uint8_t *b = malloc(total);
    if (!b)
        return EB_ERR_NOMEM;
    memcpy(b, "EBSR", 4);
    b[4] = EB_STOREREC_VERSION;
    b[5] = (uint8_t)((rec->upsert ? 1 : 0) | (rec->content_hash ? 2 : 0));
    memcpy(b + 6, rec->store_id, EB_STORE_ID_LEN);
    size_t o = HEADER_LEN;
    for (int i = 0; i < 6; i++) {
        size_t n = strlen(strs[i]);
        put_le16(b + o, (uint16_t)n);
        memcpy(b + o + 2, strs[i], n);
        o += 2 + n;
    }
    if (rec->content_hash) {
        memcpy(b + o, rec->content_hash, EB_HASH_LEN);
        o += EB_HASH_LEN;
    }
    for (int i = 0; i < 3; i++) {
        put_le32(b + o, dims[i]);
        o += 4;
        for (uint32_t k = 0; k < dims[i]; k++) {
            uint32_t bits;
            memcpy(&bits, &vecs[i][k], 4);
            put_le32(b + o, bits);
            o += 4;
        }
    }
    *out = b;
    *len = total;
    return EB_OK;
}

eb_status eb_storerec_view_of(const void *buf, size_t len, eb_storerec_view *v)
{
    const uint8_t *b = buf;
    if (!b || !v || len < HEADER_LEN || memcmp(b, "EBSR", 4) != 0)
        return EB_ERR_PROTOCOL;
    if (b[4] != EB_STOREREC_VERSION)
        return EB_ERR_UNSUPPORTED;
    if (b[5] & ~3u)
        return EB_ERR_PROTOCOL;
    memset(v, 0, sizeof *v);
    v->store_id = b + 6;
    v->upsert = b[5] & 1;
    size_t o = HEADER_LEN;
    for (int i = 0; i < 6; i++) {
        if (len - o < 2)
            return EB_ERR_PROTOCOL;
        uint16_t n = (uint16_t)(b[o] | (b[o + 1] << 8));
        o += 2;
        if (n == 0 || len - o < n || memchr(b + o, 0, n))
            return EB_ERR_PROTOCOL;
        v->str[i] = (const char *)b + o;
        v->str_len[i] = n;
        o += n;
    }
    if (b[5] & 2) {
        if (len - o < EB_HASH_LEN)
            return EB_ERR_PROTOCOL;
        v->content_hash = b + o;
        o += EB_HASH_LEN;
    }
    for (int i = 0; i < 3; i++) {
        if (len - o < 4)
            return EB_ERR_PROTOCOL;
        uint32_t d = get_le32(b + o);
        o += 4;
        if (d > EB_PGVECTOR_MAX_DIM || len - o < 4 * (size_t)d)
            return EB_ERR_PROTOCOL;
        v->vec[i] = d ? b + o : NULL;
        v->vec_dims[i] = d;
        o += 4 * (size_t)d;
    }
    if (o != len)
        return EB_ERR_PROTOCOL;
    return EB_OK;
}

eb_status eb_storerec_decode(const void *buf, size_t len, eb_store_record *rec, void **storage)
{
    if (!rec || !storage)
        return EB_ERR_INVALID;
    eb_storerec_view v;
    eb_status st = eb_storerec_view_of(buf, len, &v);
    if (st != EB_OK)
        return st;
    /* One block: floats first (aligned by malloc), then the hash, then the strings. */
    size_t floats = (size_t)v.vec_dims[0] + v.vec_dims[1] + v.vec_dims[2];
    size_t bytes = floats * sizeof(float) + EB_HASH_LEN;
    for (int i = 0; i < 6; i++)
        bytes += (size_t)v.str_len[i] + 1;
    uint8_t *mem = malloc(bytes);
    if (!mem)
        return EB_ERR_NOMEM;
    memset(rec, 0, sizeof *rec);
    memcpy(rec->store_id, v.store_id, EB_STORE_ID_LEN);
    rec->upsert = v.upsert;
    float *f = (float *)(void *)mem;
    const float **vec_out[3] = {&rec->image, &rec->text, &rec->combined};
    uint32_t *dims_out[3] = {&rec->image_dims, &rec->text_dims, &rec->combined_dims};
    for (int i = 0; i < 3; i++) {
        *dims_out[i] = v.vec_dims[i];
        *vec_out[i] = v.vec_dims[i] ? f : NULL;
        for (uint32_t k = 0; k < v.vec_dims[i]; k++) {
            uint32_t bits = get_le32(v.vec[i] + 4 * (size_t)k);
            memcpy(f++, &bits, 4);
        }
    }
    uint8_t *p = mem + floats * sizeof(float);
    if (v.content_hash) {
        memcpy(p, v.content_hash, EB_HASH_LEN);
        rec->content_hash = p;
    }
    p += EB_HASH_LEN;
    const char **str_out[6] = {&rec->product_id, &rec->business_template, &rec->source_type,
                               &rec->model,      &rec->model_rev,         &rec->preproc_rev};
    for (int i = 0; i < 6; i++) {
        memcpy(p, v.str[i], v.str_len[i]);
        p[v.str_len[i]] = 0;
        *str_out[i] = (const char *)p;
        p += v.str_len[i] + 1;
    }
    *storage = mem;
    return EB_OK;
}
