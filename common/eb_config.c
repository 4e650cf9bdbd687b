/* eb_config — a small ranked key/value store. Configurations hold a few dozen keys, so a
 * linear array is simpler and as fast as a hash table. */
#define _GNU_SOURCE
#include "eb_config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

extern char **environ;

typedef struct config_entry {
    char *key;
    char *value;
    eb_config_source source;
} config_entry;

struct eb_config {
    config_entry *entries;
    size_t count;
    size_t capacity;
};

/* Canonical key: lower case, '-' becomes '_'. Writes at most cap-1 chars. */
static void canonical_key(const char *in, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < cap; i++) {
        char c = in[i];
        out[n++] = c == '-' ? '_' : (char)tolower((unsigned char)c);
    }
    out[n] = '\0';
}

static config_entry *find_entry(const eb_config *cfg, const char *key)
{
    for (size_t i = 0; i < cfg->count; i++)
        if (strcmp(cfg->entries[i].key, key) == 0)
            return &cfg->entries[i];
    return NULL;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

eb_config *eb_config_new(void) { return calloc(1, sizeof(eb_config)); }

void eb_config_destroy(eb_config **cfg)
{
    if (!cfg || !*cfg)
        return;
    for (size_t i = 0; i < (*cfg)->count; i++) {
        free((*cfg)->entries[i].key);
        free((*cfg)->entries[i].value);
    }
    free((*cfg)->entries);
    free(*cfg);
    *cfg = NULL;
}

eb_status eb_config_set(eb_config *cfg, const char *key, const char *value, eb_config_source source)
{
    char canon[128];
    canonical_key(key, strlen(key), canon, sizeof canon);
    config_entry *e = find_entry(cfg, canon);
    if (e) {
        if (e->source > source)
            return EB_OK;
        char *copy = strdup(value);
        if (!copy)
            return EB_ERR_NOMEM;
        free(e->value);
        e->value = copy;
        e->source = source;
        return EB_OK;
    }
    if (cfg->count == cfg->capacity) {
        size_t cap = cfg->capacity ? cfg->capacity * 2 : 16;
        config_entry *grown = realloc(cfg->entries, cap * sizeof *grown);
        if (!grown)
            return EB_ERR_NOMEM;
        cfg->entries = grown;
        cfg->capacity = cap;
    }
    char *k = strdup(canon), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return EB_ERR_NOMEM;
    }
    cfg->entries[cfg->count++] = (config_entry){k, v, source};
    return EB_OK;
}

eb_status eb_config_load_file(eb_config *cfg, const char *path, char *err, size_t err_len)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, err_len, "cannot read config file \"%s\": %s", path, strerror(errno));
        return EB_ERR_IO;
    }
    char line[4096];
    int lineno = 0;
    eb_status st = EB_OK;
    while (st == EB_OK && fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (!eq || eq == s) {
            snprintf(err, err_len, "config file \"%s\" line %d: expected `key = value`", path,
                     lineno);
            st = EB_ERR_INVALID;
            break;
        }
        *eq = '\0';
        st = eb_config_set(cfg, trim(s), trim(eq + 1), EB_CONFIG_FILE);
    }
    fclose(f);
    return st;
}

eb_status eb_config_load_env(eb_config *cfg)
{
    static const char prefix[] = "EMBROKER_";
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, prefix, sizeof prefix - 1) != 0)
            continue;
        const char *name = *e + sizeof prefix - 1;
        const char *eq = strchr(name, '=');
        if (!eq || eq == name)
            continue;
        char key[128];
        canonical_key(name, (size_t)(eq - name), key, sizeof key);
        if (strcmp(key, "config") == 0)
            continue;
        eb_status st = eb_config_set(cfg, key, eq + 1, EB_CONFIG_ENV);
        if (st != EB_OK)
            return st;
    }
    return EB_OK;
}

static bool is_bool_flag(const char *const *bool_flags, const char *key)
{
    for (; bool_flags && *bool_flags; bool_flags++) {
        char canon[128];
        canonical_key(*bool_flags, strlen(*bool_flags), canon, sizeof canon);
        if (strcmp(canon, key) == 0)
            return true;
    }
    return false;
}

eb_status eb_config_load_args(eb_config *cfg, int argc, char **argv, const char *const *bool_flags,
                              char **positional, int max_positional, int *n_positional,
                              char *err, size_t err_len)
{
    int npos = 0;
    bool flags_done = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (flags_done || strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            if (!flags_done && strcmp(arg, "--") == 0) {
                flags_done = true;
                continue;
            }
            if (npos >= max_positional) {
                snprintf(err, err_len, "unexpected argument \"%s\"", arg);
                return EB_ERR_INVALID;
            }
            positional[npos++] = argv[i];
            continue;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        char key[128];
        canonical_key(name, eq ? (size_t)(eq - name) : strlen(name), key, sizeof key);
        eb_status st;
        if (eq) {
            st = eb_config_set(cfg, key, eq + 1, EB_CONFIG_FLAG);
        } else if (is_bool_flag(bool_flags, key)) {
            st = eb_config_set(cfg, key, "true", EB_CONFIG_FLAG);
        } else if (strncmp(key, "no_", 3) == 0 && is_bool_flag(bool_flags, key + 3)) {
            st = eb_config_set(cfg, key + 3, "false", EB_CONFIG_FLAG);
        } else if (i + 1 < argc) {
            st = eb_config_set(cfg, key, argv[++i], EB_CONFIG_FLAG);
        } else {
            snprintf(err, err_len, "flag --%s needs a value", name);
            return EB_ERR_INVALID;
        }
        if (st != EB_OK)
            return st;
    }
    if (n_positional)
        *n_positional = npos;
    return EB_OK;
}

eb_status eb_config_load_all(eb_config *cfg, int argc, char **argv, const char *const *bool_flags,
                             char **positional, int max_positional, int *n_positional, char *err,
                             size_t err_len)
{
    eb_status st = eb_config_load_args(cfg, argc, argv, bool_flags, positional, max_positional,
                                       n_positional, err, err_len);
    if (st != EB_OK)
        return st;
    const char *file = eb_config_get(cfg, "config", NULL);
    if (!file)
        file = getenv("EMBROKER_CONFIG");
    if (file && *file) {
        st = eb_config_load_file(cfg, file, err, err_len);
        if (st != EB_OK)
            return st;
    }
    return eb_config_load_env(cfg);
}

const char *eb_config_get(const eb_config *cfg, const char *key, const char *fallback)
{
    const config_entry *e = find_entry(cfg, key);
    return e ? e->value : fallback;
}

eb_status eb_config_get_int(const eb_config *cfg, const char *key, int64_t fallback, int64_t min,
                            int64_t max, int64_t *out, char *err, size_t err_len)
{
    *out = fallback;
    const char *s = eb_config_get(cfg, key, NULL);
    if (!s)
        return EB_OK;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    bool ok = end != s && errno == 0;
    long long mult = 1;
    if (ok && *end) {
        switch (*end) {
        case 'k': case 'K': mult = 1024LL; break;
        case 'M': mult = 1024LL * 1024; break;
        case 'G': mult = 1024LL * 1024 * 1024; break;
        default: ok = false;
        }
        if (ok && end[1] != '\0')
            ok = false;
    }
    if (ok && __builtin_mul_overflow(v, mult, &v))
        ok = false;
    if (!ok || v < min || v > max) {
        snprintf(err, err_len, "%s=%s is not an integer in [%lld, %lld]", key, s, (long long)min,
                 (long long)max);
        return EB_ERR_INVALID;
    }
    *out = v;
    return EB_OK;
}

bool eb_config_get_bool(const eb_config *cfg, const char *key, bool fallback)
{
    const char *s = eb_config_get(cfg, key, NULL);
    if (!s)
        return fallback;
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return true;
        if (strcasecmp(s, no[i]) == 0)
            return false;
    }
    return fallback;
}

eb_config_source eb_config_source_of(const eb_config *cfg, const char *key)
{
    const config_entry *e = find_entry(cfg, key);
    return e ? e->source : EB_CONFIG_DEFAULT;
}
