/* eb_safetensors — parse and validate safetensors files and shards (see eb_safetensors.h).
 *
 * Each file is mapped read-only once; the JSON header is parsed with cJSON, every entry checked
 * against the data area, and the entries of all shards are kept in one array sorted by name so
 * lookups are a binary search. Nothing is copied: tensor data pointers point into the mappings,
 * and the loader converts from there straight into the backend's weight buffer.
 */
#include "eb_safetensors.h"
#include "eb_status.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct st_file {
    char *path;
    void *map;
    size_t size;
} st_file;

struct eb_safetensors {
    st_file *files;
    size_t n_files;
    eb_st_tensor *tensors; // sorted by name
    size_t n_tensors;
    size_t cap_tensors;
};

typedef struct dtype_info {
    const char *name;
    size_t size;
    bool ok;
    eb_dtype dtype;
} dtype_info;

// Every dtype the safetensors format defines; only the floating weights we compute with are ok.
static const dtype_info DTYPES[] = {
    {"F32", 4, true, EB_DTYPE_F32},    {"F16", 2, true, EB_DTYPE_F16},
    {"BF16", 2, true, EB_DTYPE_BF16},  {"F64", 8, false, EB_DTYPE_F32},
    {"I64", 8, false, EB_DTYPE_F32},   {"I32", 4, false, EB_DTYPE_F32},
    {"I16", 2, false, EB_DTYPE_F32},   {"I8", 1, false, EB_DTYPE_F32},
    {"U64", 8, false, EB_DTYPE_F32},   {"U32", 4, false, EB_DTYPE_F32},
    {"U16", 2, false, EB_DTYPE_F32},   {"U8", 1, false, EB_DTYPE_F32},
    {"BOOL", 1, false, EB_DTYPE_F32},  {"F8_E4M3", 1, false, EB_DTYPE_F32},
    {"F8_E5M2", 1, false, EB_DTYPE_F32},
};

static const dtype_info *find_dtype(const char *name)
{
    for (size_t i = 0; i < sizeof(DTYPES) / sizeof(DTYPES[0]); i++)
        if (strcmp(DTYPES[i].name, name) == 0)
            return &DTYPES[i];
    return NULL;
}

// A JSON number that is a non-negative integer below 2^53 (exact in a double).
static bool json_uint(const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item))
        return false;
    double d = item->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || floor(d) != d)
        return false;
    *out = (uint64_t)d;
    return true;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const eb_st_tensor *)a)->name, ((const eb_st_tensor *)b)->name);
}

typedef struct range {
    uint64_t begin, end;
    const char *name;
} range;

static int cmp_range(const void *a, const void *b)
{
    const range *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static void free_tensor_strings(eb_st_tensor *t)
{
    free((char *)t->name);
    t->name = NULL;
}

void eb_safetensors_close(eb_safetensors **pst)
{
    if (!pst || !*pst)
        return;
    eb_safetensors *st = *pst;
    for (size_t i = 0; i < st->n_tensors; i++)
        free_tensor_strings(&st->tensors[i]);
    free(st->tensors);
    for (size_t i = 0; i < st->n_files; i++) {
        if (st->files[i].map && st->files[i].size)
            munmap(st->files[i].map, st->files[i].size);
        free(st->files[i].path);
    }
    free(st->files);
    free(st);
    *pst = NULL;
}

// Map `path` and append its tensors to st. On failure st keeps what it had (the caller closes).
static eb_status add_file(eb_safetensors *st, const char *path, char *err, size_t err_len)
{
    st_file *files = realloc(st->files, (st->n_files + 1) * sizeof(*files));
    if (!files) {
        eb_set_err(err, err_len, "cannot open model \"%s\": out of memory", path);
        return EB_ERR_NOMEM;
    }
    st->files = files;
    st_file *f = &st->files[st->n_files];
    memset(f, 0, sizeof(*f));
    f->path = strdup(path);
    if (!f->path) {
        eb_set_err(err, err_len, "cannot open model \"%s\": out of memory", path);
        return EB_ERR_NOMEM;
    }
    st->n_files++;

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        eb_set_err(err, err_len, "cannot open model \"%s\": %s", path, strerror(e));
        return e == ENOENT ? EB_ERR_NOT_FOUND : EB_ERR_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        eb_set_err(err, err_len, "cannot open model \"%s\": not a regular file", path);
        close(fd);
        return EB_ERR_IO;
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        eb_set_err(err, err_len,
                   "cannot open model \"%s\": file is %zu bytes, too short for the 8-byte header "
                   "length of a safetensors file",
                   path, size);
        close(fd);
        return EB_ERR_INVALID;
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        eb_set_err(err, err_len, "cannot open model \"%s\": mmap failed: %s", path, strerror(errno));
        return EB_ERR_IO;
    }
    f->map = map;
    f->size = size;

    const uint8_t *bytes = map;
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--)
        header_len = header_len << 8 | bytes[i];
    if (header_len > size - 8) {
        eb_set_err(
            err, err_len,
            "cannot open model \"%s\": header length %llu exceeds file size %zu (truncated or "
            "not a safetensors file)",
            path, (unsigned long long)header_len, size);
        return EB_ERR_INVALID;
    }
    if (header_len > EB_ST_MAX_HEADER) {
        eb_set_err(err, err_len, "cannot open model \"%s\": header length %llu exceeds the limit %u",
                   path, (unsigned long long)header_len, EB_ST_MAX_HEADER);
        return EB_ERR_INVALID;
    }
    const char *header = (const char *)bytes + 8;
    const uint8_t *data = bytes + 8 + header_len;
    uint64_t data_size = size - 8 - header_len;

    const char *parse_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(header, (size_t)header_len, &parse_end, false);
    if (!root || !cJSON_IsObject(root)) {
        size_t at = parse_end && parse_end >= header ? (size_t)(parse_end - header) : 0;
        eb_set_err(err, err_len,
                   "cannot open model \"%s\": header is not a JSON object (parse error near byte "
                   "%zu of %llu)",
                   path, at, (unsigned long long)header_len);
        cJSON_Delete(root);
        return EB_ERR_INVALID;
    }
    // Anything after the JSON must be padding spaces (the format pads headers with 0x20).
    if (parse_end) {
        for (const char *p = parse_end; p < header + header_len; p++)
            if (*p != ' ' && *p != '\0' && *p != '\n' && *p != '\t' && *p != '\r') {
                eb_set_err(
                    err, err_len,
                    "cannot open model \"%s\": header has data after the JSON object at byte "
                    "%zu",
                    path, (size_t)(p - header));
                cJSON_Delete(root);
                return EB_ERR_INVALID;
            }
    }

    size_t n_entries = (size_t)cJSON_GetArraySize(root);
    range *ranges = calloc(n_entries ? n_entries : 1, sizeof(*ranges));
    if (!ranges) {
        cJSON_Delete(root);
        eb_set_err(err, err_len, "cannot open model \"%s\": out of memory", path);
        return EB_ERR_NOMEM;
    }
    size_t n_ranges = 0;
    size_t first_new = st->n_tensors;
    eb_status status = EB_OK;
    const cJSON *item;
    cJSON_ArrayForEach(item, root)
    {
        const char *name = item->string;
        if (!name) {
            eb_set_err(err, err_len, "cannot open model \"%s\": header entry without a name", path);
            status = EB_ERR_INVALID;
            break;
        }
        if (strcmp(name, "__metadata__") == 0)
            continue;
        if (!cJSON_IsObject(item)) {
            eb_set_err(err, err_len, "cannot open model \"%s\": tensor \"%s\": entry is not an object",
                       path, name);
            status = EB_ERR_INVALID;
            break;
        }
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(item, "dtype");
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(item, "shape");
        const cJSON *jo = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
        const dtype_info *di = cJSON_IsString(jd) ? find_dtype(jd->valuestring) : NULL;
        if (!di) {
            eb_set_err(err, err_len, "cannot open model \"%s\": tensor \"%s\": unknown dtype %s%s%s",
                       path, name, cJSON_IsString(jd) ? "\"" : "",
                       cJSON_IsString(jd) ? jd->valuestring : "(missing)",
                       cJSON_IsString(jd) ? "\"" : "");
            status = EB_ERR_INVALID;
            break;
        }
        if (!cJSON_IsArray(js) || cJSON_GetArraySize(js) > EB_ST_MAX_DIMS) {
            eb_set_err(
                err, err_len,
                "cannot open model \"%s\": tensor \"%s\": shape must be an array of at most %d "
                "integers",
                path, name, EB_ST_MAX_DIMS);
            status = EB_ERR_INVALID;
            break;
        }
        if (st->n_tensors == st->cap_tensors) {
            size_t cap = st->cap_tensors ? st->cap_tensors * 2 : 64;
            eb_st_tensor *t = realloc(st->tensors, cap * sizeof(*t));
            if (!t) {
                eb_set_err(err, err_len, "cannot open model \"%s\": out of memory", path);
                status = EB_ERR_NOMEM;
                break;
            }
            st->tensors = t;
            st->cap_tensors = cap;
        }
        eb_st_tensor *t = &st->tensors[st->n_tensors];
        memset(t, 0, sizeof(*t));
        t->ndim = cJSON_GetArraySize(js);
        uint64_t nelem = 1;
        bool shape_ok = true, overflow = false;
        for (int d = 0; d < t->ndim; d++) {
            uint64_t v;
            if (!json_uint(cJSON_GetArrayItem(js, d), &v)) {
                shape_ok = false;
                break;
            }
            t->shape[d] = (int64_t)v;
            if (v && nelem > UINT64_MAX / v)
                overflow = true;
            else
                nelem *= v;
        }
        if (!shape_ok) {
            eb_set_err(
                err, err_len,
                "cannot open model \"%s\": tensor \"%s\": shape entries must be non-negative "
                "integers",
                path, name);
            status = EB_ERR_INVALID;
            break;
        }
        uint64_t begin, end;
        if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2 ||
            !json_uint(cJSON_GetArrayItem(jo, 0), &begin) ||
            !json_uint(cJSON_GetArrayItem(jo, 1), &end)) {
            eb_set_err(err, err_len,
                       "cannot open model \"%s\": tensor \"%s\": data_offsets must be two "
                       "non-negative integers [begin, end]",
                       path, name);
            status = EB_ERR_INVALID;
            break;
        }
        if (begin > end || end > data_size) {
            eb_set_err(err, err_len,
                       "cannot open model \"%s\": tensor \"%s\": data_offsets [%llu, %llu] lie "
                       "outside the data area of %llu bytes (file truncated or header corrupt)",
                       path, name, (unsigned long long)begin, (unsigned long long)end,
                       (unsigned long long)data_size);
            status = EB_ERR_INVALID;
            break;
        }
        if (overflow || nelem > UINT64_MAX / di->size || nelem * di->size != end - begin) {
            char shape_str[160];
            size_t off = 0;
            shape_str[0] = '\0';
            for (int d = 0; d < t->ndim && off < sizeof(shape_str); d++)
                off += (size_t)snprintf(shape_str + off, sizeof(shape_str) - off, "%s%lld",
                                        d ? ", " : "", (long long)t->shape[d]);
            eb_set_err(err, err_len,
                       "cannot open model \"%s\": tensor \"%s\": shape [%s] of %s needs %llu bytes "
                       "but data_offsets [%llu, %llu] hold %llu",
                       path, name, shape_str, di->name,
                       overflow ? 0ull : (unsigned long long)(nelem * di->size),
                       (unsigned long long)begin, (unsigned long long)end,
                       (unsigned long long)(end - begin));
            status = EB_ERR_INVALID;
            break;
        }
        if (((uintptr_t)(data + begin)) % di->size) {
            eb_set_err(err, err_len,
                       "cannot open model \"%s\": tensor \"%s\": data at byte %llu is not aligned to "
                       "its %zu-byte elements (header not padded)",
                       path, name, (unsigned long long)(8 + header_len + begin), di->size);
            status = EB_ERR_INVALID;
            break;
        }
        t->name = strdup(name);
        if (!t->name) {
            eb_set_err(err, err_len, "cannot open model \"%s\": out of memory", path);
            status = EB_ERR_NOMEM;
            break;
        }
        t->dtype_name = di->name;
        t->dtype_ok = di->ok;
        t->dtype = di->dtype;
        t->elem_size = di->size;
        t->nelem = (int64_t)nelem;
        t->data = data + begin;
        t->nbytes = (size_t)(end - begin);
        t->file = f->path;
        st->n_tensors++;
        ranges[n_ranges++] = (range){begin, end, t->name};
    }
    cJSON_Delete(root);
    if (status == EB_OK) {
        qsort(ranges, n_ranges, sizeof(*ranges), cmp_range);
        for (size_t i = 1; i < n_ranges; i++) {
            // Empty tensors occupy no bytes and cannot overlap anything.
            if (ranges[i].begin == ranges[i].end || ranges[i - 1].begin == ranges[i - 1].end)
                continue;
            if (ranges[i].begin < ranges[i - 1].end) {
                eb_set_err(err, err_len,
                           "cannot open model \"%s\": tensors \"%s\" [%llu, %llu] and \"%s\" [%llu, "
                           "%llu] overlap",
                           path, ranges[i - 1].name, (unsigned long long)ranges[i - 1].begin,
                           (unsigned long long)ranges[i - 1].end, ranges[i].name,
                           (unsigned long long)ranges[i].begin, (unsigned long long)ranges[i].end);
                status = EB_ERR_INVALID;
                break;
            }
        }
    }
    free(ranges);
    if (status != EB_OK) {
        // Drop this file's tensors; the caller closes st.
        for (size_t i = first_new; i < st->n_tensors; i++)
            free_tensor_strings(&st->tensors[i]);
        st->n_tensors = first_new;
    }
    return status;
}

static eb_status finish(eb_safetensors *st, char *err, size_t err_len)
{
    qsort(st->tensors, st->n_tensors, sizeof(*st->tensors), cmp_tensor_name);
    for (size_t i = 1; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, st->tensors[i - 1].name) == 0) {
            eb_set_err(err, err_len, "cannot open model: tensor \"%s\" appears twice (in \"%s\" and \"%s\")",
                       st->tensors[i].name, st->tensors[i - 1].file, st->tensors[i].file);
            return EB_ERR_INVALID;
        }
    return EB_OK;
}

eb_safetensors *eb_safetensors_open(const char *path, char *err, size_t err_len)
{
    eb_safetensors *st = calloc(1, sizeof(*st));
    if (!st) {
        eb_set_err(err, err_len, "cannot open model \"%s\": out of memory", path);
        return NULL;
    }
    if (add_file(st, path, err, err_len) != EB_OK || finish(st, err, err_len) != EB_OK) {
        eb_safetensors_close(&st);
        return NULL;
    }
    return st;
}

static char *read_small_file(const char *path, size_t max, size_t *len, int *err_no)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *err_no = errno;
        return NULL;
    }
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    fclose(f);
    if (!buf || n > max) {
        free(buf);
        *err_no = buf ? EFBIG : ENOMEM;
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static eb_safetensors *open_index(const char *dir, const char *index_path, char *err,
                                  size_t err_len)
{
    size_t len = 0;
    int e = 0;
    char *text = read_small_file(index_path, 64u << 20, &len, &e);
    if (!text) {
        eb_set_err(err, err_len, "cannot open model index \"%s\": %s", index_path, strerror(e));
        return NULL;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *map = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(map)) {
        eb_set_err(err, err_len, "cannot open model index \"%s\": %s", index_path,
                   root ? "no \"weight_map\" object" : "invalid JSON");
        cJSON_Delete(root);
        return NULL;
    }
    eb_safetensors *st = calloc(1, sizeof(*st));
    size_t n = (size_t)cJSON_GetArraySize(map);
    char **shards = calloc(n ? n : 1, sizeof(char *));
    size_t n_shards = 0;
    if (!st || !shards) {
        eb_set_err(err, err_len, "cannot open model index \"%s\": out of memory", index_path);
        goto fail;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, map)
    {
        if (!cJSON_IsString(item) || !item->valuestring[0] || strchr(item->valuestring, '/') ||
            strcmp(item->valuestring, "..") == 0 || strcmp(item->valuestring, ".") == 0) {
            eb_set_err(err, err_len,
                       "cannot open model index \"%s\": tensor \"%s\" maps to an invalid shard name "
                       "(must be a file name in the same directory)",
                       index_path, item->string ? item->string : "?");
            goto fail;
        }
        shards[n_shards++] = item->valuestring;
    }
    qsort(shards, n_shards, sizeof(char *), cmp_str);
    for (size_t i = 0; i < n_shards; i++) {
        if (i && strcmp(shards[i], shards[i - 1]) == 0)
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, shards[i]);
        if (add_file(st, path, err, err_len) != EB_OK)
            goto fail;
    }
    if (finish(st, err, err_len) != EB_OK)
        goto fail;
    cJSON_ArrayForEach(item, map)
    {
        const eb_st_tensor *t = eb_safetensors_find(st, item->string);
        const char *slash = t ? strrchr(t->file, '/') : NULL;
        const char *base = slash ? slash + 1 : (t ? t->file : "");
        if (!t || strcmp(base, item->valuestring) != 0) {
            if (t)
                eb_set_err(err, err_len,
                           "cannot open model index \"%s\": tensor \"%s\" is listed in shard "
                           "\"%s\" but is stored in \"%s\"",
                           index_path, item->string, item->valuestring, t->file);
            else
                eb_set_err(err, err_len,
                           "cannot open model index \"%s\": tensor \"%s\" is listed in shard "
                           "\"%s\" but that file does not contain it",
                           index_path, item->string, item->valuestring);
            goto fail;
        }
    }
    free(shards);
    cJSON_Delete(root);
    return st;
fail:
    free(shards);
    cJSON_Delete(root);
    eb_safetensors_close(&st);
    return NULL;
}

eb_safetensors *eb_safetensors_open_dir(const char *dir, char *err, size_t err_len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
    if (access(path, F_OK) == 0)
        return open_index(dir, path, err, err_len);
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    if (access(path, F_OK) != 0) {
        eb_set_err(err, err_len,
                   "cannot open model in \"%s\": neither model.safetensors nor "
                   "model.safetensors.index.json exists (download the checkpoint or run "
                   "mkcheckpoint)",
                   dir);
        return NULL;
    }
    return eb_safetensors_open(path, err, err_len);
}

size_t eb_safetensors_count(const eb_safetensors *st)
{
    return st->n_tensors;
}

const eb_st_tensor *eb_safetensors_at(const eb_safetensors *st, size_t i)
{
    return i < st->n_tensors ? &st->tensors[i] : NULL;
}

const eb_st_tensor *eb_safetensors_find(const eb_safetensors *st, const char *name)
{
    if (!name)
        return NULL;
    eb_st_tensor key = {.name = name};
    return bsearch(&key, st->tensors, st->n_tensors, sizeof(*st->tensors), cmp_tensor_name);
}

size_t eb_safetensors_file_count(const eb_safetensors *st)
{
    return st->n_files;
}

const char *eb_safetensors_file_path(const eb_safetensors *st, size_t i)
{
    return i < st->n_files ? st->files[i].path : NULL;
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t off = 0;
    buf[0] = '\0';
    off += (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && off < cap; d++)
        off += (size_t)snprintf(buf + off, cap - off, "%s%lld", d ? ", " : "",
                                (long long)shape[d]);
    if (off < cap)
        snprintf(buf + off, cap - off, "]");
}

const eb_st_tensor *eb_safetensors_expect(const eb_safetensors *st, const char *name, int ndim,
                                          const int64_t *shape, char *err, size_t err_len)
{
    const eb_st_tensor *t = eb_safetensors_find(st, name);
    if (!t) {
        const char *where = st->n_files == 1 ? st->files[0].path : "any shard of the model";
        eb_set_err(err, err_len,
                   "tensor \"%s\" not found in %s (is this a SigLIP/Qwen3 checkpoint of the layout "
                   "config.json describes?)",
                   name, where);
        return NULL;
    }
    bool same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = t->shape[d] == shape[d];
    if (!same) {
        char have[160], want[160];
        format_shape(have, sizeof(have), t->ndim, t->shape);
        format_shape(want, sizeof(want), ndim, shape);
        eb_set_err(err, err_len, "tensor \"%s\" in %s has shape %s but the config needs %s", name,
                   t->file, have, want);
        return NULL;
    }
    if (!t->dtype_ok) {
        eb_set_err(err, err_len, "tensor \"%s\" in %s has dtype %s; weights must be F32, F16 or BF16",
                   name, t->file, t->dtype_name);
        return NULL;
    }
    return t;
}
