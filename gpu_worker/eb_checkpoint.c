/* eb_checkpoint — open a Hugging Face model directory and identify what is in it.
 *
 * The JSON configs are parsed once and kept (models read their keys with the typed getters
 * below, which name the file and key in every error). The weights are opened through
 * eb_safetensors. The model revision hashes every weights file in full — a fine-tune with the
 * same shapes must never be mistaken for the original — and keeps those hashes in a small cache
 * file beside the weights so a restart does not re-read a gigabyte.
 */
#include "eb_checkpoint.h"
#include "eb_status.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eb_log.h"
#include "eb_resize.h"

struct eb_checkpoint {
    char *dir;
    cJSON *config;
    cJSON *preproc;
    eb_safetensors *weights;
    char config_sha[EB_REV_LEN];
    char model_rev[EB_REV_LEN];
    bool have_rev;
};

static void to_hex(const unsigned char *d, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[2 * n] = '\0';
}

static void sha256_hex(const void *data, size_t len, char *hex)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    EVP_Digest(data, len, md, &md_len, EVP_sha256(), NULL);
    to_hex(md, md_len, hex);
}

// Reads a whole small text file; NULL with errno set on failure. Caller frees.
static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n + 1 < cap)
            break;
        if (cap >= (16u << 20)) { // configs are small; refuse absurd files
            free(buf);
            buf = NULL;
            errno = EFBIG;
            break;
        }
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

// Parses a JSON object file; NULL with err on failure. sha (optional) gets the file's SHA-256.
static cJSON *parse_json_file(const char *path, char *sha, char *err, size_t err_len)
{
    size_t len = 0;
    char *text = read_text(path, &len);
    if (!text) {
        eb_set_err(err, err_len, "cannot read \"%s\": %s", path, strerror(errno));
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!root || !cJSON_IsObject(root)) {
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        eb_set_err(err, err_len, "invalid JSON in \"%s\" near byte %zu: expected an object", path,
                   at);
        cJSON_Delete(root);
        free(text);
        return NULL;
    }
    if (sha)
        sha256_hex(text, len, sha);
    free(text);
    return root;
}

eb_checkpoint *eb_checkpoint_open(const char *dir, char *err, size_t err_len)
{
    eb_checkpoint *ck = calloc(1, sizeof(*ck));
    if (!ck || !(ck->dir = strdup(dir))) {
        free(ck);
        eb_set_err(err, err_len, "cannot open model \"%s\": out of memory", dir);
        return NULL;
    }
    char path[4096];
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        eb_set_err(
            err, err_len,
            "cannot open model directory \"%s\": %s (download a checkpoint or create one with "
            "mkcheckpoint)",
            dir, stat(dir, &sb) != 0 ? strerror(errno) : "not a directory");
        goto fail;
    }
    snprintf(path, sizeof(path), "%s/config.json", dir);
    ck->config = parse_json_file(path, ck->config_sha, err, err_len);
    if (!ck->config)
        goto fail;
    snprintf(path, sizeof(path), "%s/preprocessor_config.json", dir);
    if (access(path, F_OK) == 0) {
        ck->preproc = parse_json_file(path, NULL, err, err_len);
        if (!ck->preproc)
            goto fail;
    }
    ck->weights = eb_safetensors_open_dir(dir, err, err_len);
    if (!ck->weights)
        goto fail;
    return ck;
fail:
    eb_checkpoint_close(&ck);
    return NULL;
}

void eb_checkpoint_close(eb_checkpoint **pck)
{
    if (!pck || !*pck)
        return;
    eb_checkpoint *ck = *pck;
    eb_safetensors_close(&ck->weights);
    cJSON_Delete(ck->config);
    cJSON_Delete(ck->preproc);
    free(ck->dir);
    free(ck);
    *pck = NULL;
}

const char *eb_checkpoint_dir(const eb_checkpoint *ck)
{
    return ck->dir;
}

const cJSON *eb_checkpoint_config(const eb_checkpoint *ck)
{
    return ck->config;
}

const cJSON *eb_checkpoint_preprocessor(const eb_checkpoint *ck)
{
    return ck->preproc;
}

const eb_safetensors *eb_checkpoint_weights(const eb_checkpoint *ck)
{
    return ck->weights;
}

/* ---- model revision ------------------------------------------------------------------------- */

typedef struct file_key {
    const char *name; // basename
    unsigned long long size, ino;
    long long mtime_s, mtime_ns;
} file_key;

// A cache line: "<name>\t<size>\t<ino>\t<mtime_s>.<mtime_ns>\t<hex>\n".
static bool cache_lookup(const char *cache_text, const file_key *k, char *hex)
{
    if (!cache_text)
        return false;
    char want[600];
    int n = snprintf(want, sizeof(want), "%s\t%llu\t%llu\t%lld.%09lld\t", k->name, k->size, k->ino,
                     k->mtime_s, k->mtime_ns);
    if (n <= 0 || (size_t)n >= sizeof(want))
        return false;
    for (const char *line = cache_text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t line_len = nl ? (size_t)(nl - line) : strlen(line);
        if (line_len == (size_t)n + 64 && strncmp(line, want, (size_t)n) == 0) {
            memcpy(hex, line + n, 64);
            hex[64] = '\0';
            for (int i = 0; i < 64; i++)
                if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
                    return false;
            return true;
        }
        line = nl ? nl + 1 : NULL;
    }
    return false;
}

static eb_status hash_file(const char *path, char *hex, char *err, size_t err_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        eb_set_err(err, err_len, "cannot hash \"%s\": %s", path, strerror(errno));
        return EB_ERR_IO;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t cap = 8u << 20;
    unsigned char *buf = malloc(cap);
    eb_status st = EB_OK;
    if (!md || !buf || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
        eb_set_err(err, err_len, "cannot hash \"%s\": out of memory", path);
        st = EB_ERR_NOMEM;
        goto out;
    }
    for (;;) {
        ssize_t got = read(fd, buf, cap);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            eb_set_err(err, err_len, "cannot hash \"%s\": read failed: %s", path, strerror(errno));
            st = EB_ERR_IO;
            goto out;
        }
        if (got == 0)
            break;
        EVP_DigestUpdate(md, buf, (size_t)got);
    }
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int out_len = 0;
    EVP_DigestFinal_ex(md, out, &out_len);
    to_hex(out, out_len, hex);
out:
    EVP_MD_CTX_free(md);
    free(buf);
    close(fd);
    return st;
}

static bool stat_key(const char *path, file_key *k)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return false;
    const char *slash = strrchr(path, '/');
    k->name = slash ? slash + 1 : path;
    k->size = (unsigned long long)sb.st_size;
    k->ino = (unsigned long long)sb.st_ino;
    k->mtime_s = (long long)sb.st_mtim.tv_sec;
    k->mtime_ns = (long long)sb.st_mtim.tv_nsec;
    return true;
}

static bool same_key(const file_key *a, const file_key *b)
{
    return a->size == b->size && a->ino == b->ino && a->mtime_s == b->mtime_s &&
           a->mtime_ns == b->mtime_ns;
}

eb_status eb_checkpoint_model_rev(eb_checkpoint *ck, char *rev, char *err, size_t err_len)
{
    if (ck->have_rev) {
        memcpy(rev, ck->model_rev, EB_REV_LEN);
        return EB_OK;
    }
    char cache_path[4096];
    snprintf(cache_path, sizeof(cache_path), "%s/%s", ck->dir, EB_CHECKPOINT_REV_CACHE);
    size_t cache_len = 0;
    char *cache_text = read_text(cache_path, &cache_len);
    if (cache_text && strncmp(cache_text, "embroker-rev-cache-1\n", 21) != 0) {
        free(cache_text); // unknown format: ignore and rewrite
        cache_text = NULL;
    }

    size_t n_files = eb_safetensors_file_count(ck->weights);
    size_t out_cap = 64 + n_files * 600;
    char *out_cache = malloc(out_cap);
    size_t rev_cap = 128 + n_files * 400;
    char *rev_text = malloc(rev_cap);
    if (!out_cache || !rev_text) {
        free(cache_text);
        free(out_cache);
        free(rev_text);
        eb_set_err(err, err_len, "cannot compute model_rev: out of memory");
        return EB_ERR_NOMEM;
    }
    size_t out_len = (size_t)snprintf(out_cache, out_cap, "embroker-rev-cache-1\n");
    size_t rev_len = (size_t)snprintf(rev_text, rev_cap, "embroker-model-rev-1\n");
    bool cache_dirty = cache_text == NULL;
    eb_status status = EB_OK;
    for (size_t i = 0; i < n_files; i++) {
        const char *path = eb_safetensors_file_path(ck->weights, i);
        file_key before, after;
        char hex[EB_REV_LEN];
        if (!stat_key(path, &before)) {
            eb_set_err(err, err_len, "cannot compute model_rev: stat \"%s\": %s", path,
                       strerror(errno));
            status = EB_ERR_IO;
            break;
        }
        bool cacheable = true;
        if (!cache_lookup(cache_text, &before, hex)) {
            status = hash_file(path, hex, err, err_len);
            if (status != EB_OK)
                break;
            // A file that changed while we read it is hashed fine but not cached.
            cacheable = stat_key(path, &after) && same_key(&before, &after);
            cache_dirty = true;
        }
        if (cacheable && out_len < out_cap)
            out_len += (size_t)snprintf(out_cache + out_len, out_cap - out_len,
                                        "%s\t%llu\t%llu\t%lld.%09lld\t%s\n", before.name,
                                        before.size, before.ino, before.mtime_s, before.mtime_ns,
                                        hex);
        if (rev_len < rev_cap)
            rev_len += (size_t)snprintf(rev_text + rev_len, rev_cap - rev_len, "%s\n%s\n",
                                        before.name, hex);
    }
    if (status == EB_OK) {
        if (rev_len < rev_cap)
            rev_len += (size_t)snprintf(rev_text + rev_len, rev_cap - rev_len,
                                        "config.json\n%s\n", ck->config_sha);
        sha256_hex(rev_text, rev_len < rev_cap ? rev_len : rev_cap - 1, ck->model_rev);
        ck->have_rev = true;
        memcpy(rev, ck->model_rev, EB_REV_LEN);
        if (cache_dirty) {
            // Write a temporary file and rename it, so a concurrent reader never sees half.
            char tmp[4200];
            snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", cache_path, (long)getpid());
            FILE *f = fopen(tmp, "wb");
            bool ok = f && fwrite(out_cache, 1, out_len, f) == out_len;
            if (f && fclose(f) != 0)
                ok = false;
            if (ok && rename(tmp, cache_path) != 0)
                ok = false;
            if (!ok) {
                unlink(tmp);
                eb_log_warn("model_rev_cache_unwritable", "path=%s error=\"%s\"", cache_path,
                            strerror(errno));
            }
        }
    }
    free(cache_text);
    free(out_cache);
    free(rev_text);
    return status;
}

/* ---- config getters -------------------------------------------------------------------------- */

static const cJSON *get_item(const cJSON *obj, const char *key)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return v && !cJSON_IsNull(v) ? v : NULL;
}

eb_status eb_json_get_int(const cJSON *obj, const char *what, const char *key, int64_t dflt,
                          int64_t min, int64_t max, int64_t *out, char *err, size_t err_len)
{
    const cJSON *v = get_item(obj, key);
    if (!v) {
        *out = dflt;
        return EB_OK;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!cJSON_IsNumber(v) || floor(d) != d || d < (double)min || d > (double)max) {
        char *printed = cJSON_PrintUnformatted(v);
        eb_set_err(err, err_len, "%s: \"%s\" is %s; expected an integer in [%lld, %lld]", what, key,
                   printed ? printed : "?", (long long)min, (long long)max);
        free(printed);
        return EB_ERR_INVALID;
    }
    *out = (int64_t)d;
    return EB_OK;
}

eb_status eb_json_get_double(const cJSON *obj, const char *what, const char *key, double dflt,
                             double min, double max, double *out, char *err, size_t err_len)
{
    const cJSON *v = get_item(obj, key);
    if (!v) {
        *out = dflt;
        return EB_OK;
    }
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= min && v->valuedouble <= max)) {
        char *printed = cJSON_PrintUnformatted(v);
        eb_set_err(err, err_len, "%s: \"%s\" is %s; expected a number in [%g, %g]", what, key,
                   printed ? printed : "?", min, max);
        free(printed);
        return EB_ERR_INVALID;
    }
    *out = v->valuedouble;
    return EB_OK;
}

eb_status eb_json_get_bool(const cJSON *obj, const char *what, const char *key, bool dflt,
                           bool *out, char *err, size_t err_len)
{
    const cJSON *v = get_item(obj, key);
    if (!v) {
        *out = dflt;
        return EB_OK;
    }
    if (!cJSON_IsBool(v)) {
        eb_set_err(err, err_len, "%s: \"%s\" must be true or false", what, key);
        return EB_ERR_INVALID;
    }
    *out = cJSON_IsTrue(v);
    return EB_OK;
}

eb_status eb_json_get_string(const cJSON *obj, const char *what, const char *key,
                             const char *dflt, const char **out, char *err, size_t err_len)
{
    const cJSON *v = get_item(obj, key);
    if (!v) {
        *out = dflt;
        return EB_OK;
    }
    if (!cJSON_IsString(v)) {
        eb_set_err(err, err_len, "%s: \"%s\" must be a string", what, key);
        return EB_ERR_INVALID;
    }
    *out = v->valuestring;
    return EB_OK;
}

/* ---- image preprocessing ----------------------------------------------------------------------- */

static eb_status get_triple(const cJSON *obj, const char *key, float dflt, float *out, char *err,
                            size_t err_len)
{
    const cJSON *v = get_item(obj, key);
    if (!v) {
        out[0] = out[1] = out[2] = dflt;
        return EB_OK;
    }
    if (cJSON_IsNumber(v)) { // a single number applies to every channel (transformers allows it)
        out[0] = out[1] = out[2] = (float)v->valuedouble;
        return EB_OK;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 3) {
        eb_set_err(err, err_len, "preprocessor_config.json: \"%s\" must be 3 numbers (R, G, B)", key);
        return EB_ERR_INVALID;
    }
    for (int i = 0; i < 3; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        if (!cJSON_IsNumber(e)) {
            eb_set_err(err, err_len, "preprocessor_config.json: \"%s\"[%d] is not a number", key, i);
            return EB_ERR_INVALID;
        }
        out[i] = (float)e->valuedouble;
    }
    return EB_OK;
}

eb_status eb_checkpoint_image_preproc(const eb_checkpoint *ck, int image_size,
                                      eb_image_preproc *p, char *err, size_t err_len)
{
    const cJSON *pc = ck ? ck->preproc : NULL;
    const char *what = "preprocessor_config.json";
    memset(p, 0, sizeof(*p));
    p->height = p->width = image_size;
    int64_t iv;
    eb_status st;
    const cJSON *size = get_item(pc, "size");
    if (size) {
        if (!cJSON_IsObject(size) || !get_item(size, "height") || !get_item(size, "width")) {
            eb_set_err(err, err_len,
                       "%s: \"size\" must be {\"height\": H, \"width\": W} (shortest_edge resizing "
                       "is not SigLIP's and is not supported)",
                       what);
            return EB_ERR_UNSUPPORTED;
        }
        if ((st = eb_json_get_int(size, what, "height", image_size, 1, 1 << 16, &iv, err,
                                  err_len)) != EB_OK)
            return st;
        p->height = (int)iv;
        if ((st = eb_json_get_int(size, what, "width", image_size, 1, 1 << 16, &iv, err,
                                  err_len)) != EB_OK)
            return st;
        p->width = (int)iv;
    }
    if ((st = eb_json_get_int(pc, what, "resample", EB_RESAMPLE_BICUBIC, 0, 5, &iv, err,
                              err_len)) != EB_OK)
        return st;
    p->resample = (int)iv;
    if (p->resample != EB_RESAMPLE_BICUBIC) {
        eb_set_err(err, err_len, "%s: resample %d is not supported; only 3 (BICUBIC) is implemented",
                   what, p->resample);
        return EB_ERR_UNSUPPORTED;
    }
    if ((st = eb_json_get_bool(pc, what, "do_resize", true, &p->do_resize, err, err_len)) ||
        (st = eb_json_get_bool(pc, what, "do_rescale", true, &p->do_rescale, err, err_len)) ||
        (st = eb_json_get_bool(pc, what, "do_normalize", true, &p->do_normalize, err, err_len)) ||
        (st = eb_json_get_double(pc, what, "rescale_factor", 1.0 / 255.0, 0.0, 1e9,
                                 &p->rescale_factor, err, err_len)) ||
        (st = get_triple(pc, "image_mean", 0.5f, p->mean, err, err_len)) ||
        (st = get_triple(pc, "image_std", 0.5f, p->std, err, err_len)))
        return st;
    for (int i = 0; i < 3; i++)
        if (!(p->std[i] > 0.0f)) {
            eb_set_err(err, err_len, "%s: image_std[%d] is %g; it must be positive", what, i,
                       (double)p->std[i]);
            return EB_ERR_INVALID;
        }
    if (p->height != image_size || p->width != image_size) {
        eb_set_err(err, err_len,
                   "%s: size %dx%d differs from the model's image_size %d; the model needs "
                   "%dx%d inputs",
                   what, p->width, p->height, image_size, image_size, image_size);
        return EB_ERR_UNSUPPORTED;
    }
    return EB_OK;
}

void eb_image_preproc_rev(const eb_image_preproc *p, const char *resize_version, char *rev)
{
    char text[1024];
    int n = snprintf(text, sizeof(text),
                     "embroker-preproc-rev-1\nresize=%s\nsize=%dx%d\nresample=%d\ndo_resize=%d\n"
                     "do_rescale=%d\nrescale_factor=%.17g\ndo_normalize=%d\n"
                     "mean=%.9g,%.9g,%.9g\nstd=%.9g,%.9g,%.9g\n",
                     resize_version ? resize_version : EB_RESIZE_VERSION, p->width, p->height, p->resample,
                     p->do_resize, p->do_rescale, p->rescale_factor, p->do_normalize,
                     (double)p->mean[0], (double)p->mean[1], (double)p->mean[2],
                     (double)p->std[0], (double)p->std[1], (double)p->std[2]);
    sha256_hex(text, n > 0 && (size_t)n < sizeof(text) ? (size_t)n : sizeof(text) - 1, rev);
}
