/* eb_ckpt_writer — deterministic random checkpoints in safetensors format (see the header).
 *
 * The safetensors header is JSON with tensors in name order and data laid out in the same order
 * (like the Python library), padded with spaces to a multiple of 8 bytes so every tensor is
 * aligned. "__metadata__" says {"format": "pt"} as files saved from PyTorch do.
 */
#include "eb_ckpt_writer.h"

#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct spec {
    char *name;
    int ndim;
    int64_t shape[4];
    int64_t nelem;
    eb_init init;
    int shard;
} spec;

struct eb_ckpt_writer {
    eb_dtype dtype;
    uint64_t seed;
    spec *specs;
    size_t n, cap;
};

eb_ckpt_writer *eb_ckpt_writer_new(eb_dtype dtype, uint64_t seed)
{
    if (dtype != EB_DTYPE_F32 && dtype != EB_DTYPE_F16 && dtype != EB_DTYPE_BF16)
        return NULL;
    eb_ckpt_writer *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->dtype = dtype;
    w->seed = seed;
    return w;
}

void eb_ckpt_writer_destroy(eb_ckpt_writer **pw)
{
    if (!pw || !*pw)
        return;
    eb_ckpt_writer *w = *pw;
    for (size_t i = 0; i < w->n; i++)
        free(w->specs[i].name);
    free(w->specs);
    free(w);
    *pw = NULL;
}

eb_status eb_ckpt_writer_add(eb_ckpt_writer *w, const char *name, int ndim, const int64_t *shape,
                             eb_init init)
{
    if (!name || !*name || ndim < 1 || ndim > 4)
        return EB_ERR_INVALID;
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->specs[i].name, name) == 0)
            return EB_ERR_INVALID;
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 128;
        spec *s = realloc(w->specs, cap * sizeof(*s));
        if (!s)
            return EB_ERR_NOMEM;
        w->specs = s;
        w->cap = cap;
    }
    spec *s = &w->specs[w->n];
    memset(s, 0, sizeof(*s));
    s->name = strdup(name);
    if (!s->name)
        return EB_ERR_NOMEM;
    s->ndim = ndim;
    s->nelem = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return EB_ERR_INVALID;
        s->shape[i] = shape[i];
        s->nelem *= shape[i];
    }
    s->init = init;
    w->n++;
    return EB_OK;
}

size_t eb_ckpt_writer_bytes(const eb_ckpt_writer *w)
{
    size_t total = 0;
    for (size_t i = 0; i < w->n; i++)
        total += (size_t)w->specs[i].nelem * eb_dtype_size(w->dtype);
    return total;
}

/* ---- random numbers --------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Uniform in [0, 1) with 53 random bits.
static double uniform01(uint64_t *state)
{
    return (double)(splitmix64(state) >> 11) * (1.0 / 9007199254740992.0);
}

// Irwin–Hall(12) - 6: mean 0, variance 1.
static double normal01(uint64_t *state)
{
    double s = 0.0;
    for (int i = 0; i < 12; i++)
        s += uniform01(state);
    return s - 6.0;
}

static uint64_t name_seed(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull; // FNV-1a
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    uint64_t s = seed ^ h;
    splitmix64(&s);
    return s;
}

void eb_ckpt_init_values(uint64_t seed, const char *name, eb_init init, float *out, size_t n)
{
    uint64_t st = name_seed(seed, name);
    for (size_t i = 0; i < n; i++) {
        double v;
        switch (init.kind) {
        case EB_INIT_ZEROS: v = 0.0; break;
        case EB_INIT_ONES: v = 1.0; break;
        case EB_INIT_NORMAL: v = init.a + init.b * normal01(&st); break;
        case EB_INIT_TRUNC_NORMAL: {
            double z;
            do
                z = normal01(&st);
            while (z < -2.0 || z > 2.0);
            v = init.b * z;
            break;
        }
        case EB_INIT_UNIFORM: v = init.b * (2.0 * uniform01(&st) - 1.0); break;
        default: v = 0.0; break;
        }
        out[i] = (float)v;
    }
}

/* ---- writing ---------------------------------------------------------------------------------- */

static int cmp_spec_name(const void *a, const void *b)
{
    return strcmp(((const spec *)a)->name, ((const spec *)b)->name);
}

static eb_status write_shard(eb_ckpt_writer *w, const char *path, int shard, char *err,
                             size_t err_len)
{
    size_t esize = eb_dtype_size(w->dtype);
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    uint64_t off = 0;
    int64_t max_n = 1;
    for (size_t i = 0; i < w->n; i++) {
        spec *s = &w->specs[i];
        if (s->shard != shard)
            continue;
        cJSON *t = cJSON_AddObjectToObject(root, s->name);
        cJSON_AddStringToObject(t, "dtype", eb_dtype_name(w->dtype));
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; d < s->ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)s->shape[d]));
        cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
        uint64_t bytes = (uint64_t)s->nelem * esize;
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
        if (s->nelem > max_n)
            max_n = s->nelem;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    float *vals = malloc((size_t)max_n * sizeof(float));
    uint16_t *half = w->dtype == EB_DTYPE_F32 ? NULL : malloc((size_t)max_n * sizeof(uint16_t));
    FILE *f = json ? fopen(path, "wb") : NULL;
    eb_status status = EB_OK;
    if (!json || !vals || (w->dtype != EB_DTYPE_F32 && !half) || !f) {
        snprintf(err, err_len, "cannot write \"%s\": %s", path,
                 !f && json && vals ? strerror(errno) : "out of memory");
        status = f ? EB_ERR_NOMEM : EB_ERR_IO;
        goto out;
    }
    size_t json_len = strlen(json);
    size_t padded = (json_len + 7) & ~(size_t)7;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(json, 1, json_len, f) == json_len;
    for (size_t i = json_len; ok && i < padded; i++)
        ok = fputc(' ', f) != EOF;
    for (size_t i = 0; ok && i < w->n; i++) {
        spec *s = &w->specs[i];
        if (s->shard != shard)
            continue;
        eb_ckpt_init_values(w->seed, s->name, s->init, vals, (size_t)s->nelem);
        if (w->dtype == EB_DTYPE_F32) {
            ok = fwrite(vals, sizeof(float), (size_t)s->nelem, f) == (size_t)s->nelem;
        } else {
            if (w->dtype == EB_DTYPE_BF16)
                eb_ops_f32_to_bf16(half, vals, (size_t)s->nelem);
            else
                eb_ops_f32_to_f16(half, vals, (size_t)s->nelem);
            ok = fwrite(half, sizeof(uint16_t), (size_t)s->nelem, f) == (size_t)s->nelem;
        }
    }
    if (fclose(f) != 0)
        ok = false;
    f = NULL;
    if (!ok) {
        snprintf(err, err_len, "cannot write \"%s\": %s", path, strerror(errno));
        status = EB_ERR_IO;
    }
out:
    if (f)
        fclose(f);
    free(json);
    free(vals);
    free(half);
    return status;
}

eb_status eb_ckpt_writer_write(eb_ckpt_writer *w, const char *dir, int shards, char *err,
                               size_t err_len)
{
    if (shards < 1 || shards > 99 || (size_t)shards > (w->n ? w->n : 1)) {
        snprintf(err, err_len, "cannot write checkpoint: %d shards for %zu tensors", shards, w->n);
        return EB_ERR_INVALID;
    }
    qsort(w->specs, w->n, sizeof(*w->specs), cmp_spec_name);
    // Shards hold consecutive tensors in name order, split by bytes.
    size_t total = eb_ckpt_writer_bytes(w), acc = 0;
    for (size_t i = 0; i < w->n; i++) {
        int sh = (int)((double)acc * shards / (double)(total ? total : 1));
        if (sh >= shards)
            sh = shards - 1;
        w->specs[i].shard = sh;
        acc += (size_t)w->specs[i].nelem * eb_dtype_size(w->dtype);
    }
    char path[4096];
    if (shards == 1) {
        snprintf(path, sizeof(path), "%s/model.safetensors", dir);
        return write_shard(w, path, 0, err, err_len);
    }
    cJSON *index = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(index, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)total);
    cJSON *map = cJSON_AddObjectToObject(index, "weight_map");
    for (int sh = 0; sh < shards; sh++) {
        char name[64];
        snprintf(name, sizeof(name), "model-%05d-of-%05d.safetensors", sh + 1, shards);
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        eb_status st = write_shard(w, path, sh, err, err_len);
        if (st != EB_OK) {
            cJSON_Delete(index);
            return st;
        }
        for (size_t i = 0; i < w->n; i++)
            if (w->specs[i].shard == sh)
                cJSON_AddStringToObject(map, w->specs[i].name, name);
    }
    char *text = cJSON_Print(index);
    cJSON_Delete(index);
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
    FILE *f = text ? fopen(path, "wb") : NULL;
    bool ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0)
        ok = false;
    free(text);
    if (!ok) {
        snprintf(err, err_len, "cannot write \"%s\": %s", path, strerror(errno));
        return EB_ERR_IO;
    }
    return EB_OK;
}
