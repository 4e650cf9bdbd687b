/* eb_config — settings from a file, the environment and command-line flags; flags win.
 *
 * Keys are lower-case words joined by '_' ("max_batch_items"). The same key is spelled
 *   file:        max_batch_items = 32        (one per line, '#' starts a comment)
 *   environment: EMBROKER_MAX_BATCH_ITEMS=32
 *   flag:        --max-batch-items=32  or  --max-batch-items 32
 * Each source has a rank (file < environment < flag): a value set from a lower-ranked source
 * never replaces one from a higher-ranked source, whatever the order of loading.
 *
 * Not thread-safe while loading; concurrent getters on a loaded config are fine. */
#ifndef EB_CONFIG_H
#define EB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_status.h"

typedef struct eb_config eb_config;

typedef enum eb_config_source {
    EB_CONFIG_DEFAULT = 0,
    EB_CONFIG_FILE = 1,
    EB_CONFIG_ENV = 2,
    EB_CONFIG_FLAG = 3,
} eb_config_source;

/* A new, empty configuration, or NULL when out of memory. Free with eb_config_destroy. */
eb_config *eb_config_new(void);

/* Free the configuration and every string it holds; sets *cfg to NULL. NULL-safe. */
void eb_config_destroy(eb_config **cfg);

/* Set `key` to a copy of `value` from `source`, unless a higher-ranked source set it. */
eb_status eb_config_set(eb_config *cfg, const char *key, const char *value, eb_config_source source);

/* Read `key = value` lines from `path`. On failure returns EB_ERR_IO (cannot read) or
 * EB_ERR_INVALID (a line is not `key = value`) and writes a one-line reason into err. */
eb_status eb_config_load_file(eb_config *cfg, const char *path, char *err, size_t err_len);

/* Take every EMBROKER_* variable of the environment (EMBROKER_CONFIG excepted). */
eb_status eb_config_load_env(eb_config *cfg);

/* Take flags from argv[1..argc-1]. `bool_flags` (NULL-terminated, may be NULL) lists keys that
 * take no value: `--inline` sets "true", `--no-inline` sets "false". Other flags take the next
 * argument unless written `--key=value`. Arguments that are not flags are positional: pointers
 * to them (not copies) are stored in order in positional[0..*n_positional-1], at most
 * max_positional. `--` ends flags. Returns EB_ERR_INVALID with a reason in err for a flag
 * missing its value or too many positional arguments. */
eb_status eb_config_load_args(eb_config *cfg, int argc, char **argv, const char *const *bool_flags,
                              char **positional, int max_positional, int *n_positional,
                              char *err, size_t err_len);

/* Load in the usual order: the file named by --config or EMBROKER_CONFIG (if any), then the
 * environment, then flags. Same contract as eb_config_load_args. */
eb_status eb_config_load_all(eb_config *cfg, int argc, char **argv, const char *const *bool_flags,
                             char **positional, int max_positional, int *n_positional, char *err,
                             size_t err_len);

/* The value of `key`, or `fallback` when unset. The string belongs to cfg. */
const char *eb_config_get(const eb_config *cfg, const char *key, const char *fallback);

/* Integer value of `key` in [min, max], or `fallback` when unset. EB_ERR_INVALID with a reason
 * ("max_batch_items=abc is not an integer in [1, 4096]") when set but malformed or out of range;
 * *out is left at fallback then. Accepts k/M/G (x1024) suffixes for sizes. */
eb_status eb_config_get_int(const eb_config *cfg, const char *key, int64_t fallback, int64_t min,
                            int64_t max, int64_t *out, char *err, size_t err_len);

/* Boolean value of `key` (true/false/1/0/yes/no/on/off), or `fallback` when unset or malformed. */
bool eb_config_get_bool(const eb_config *cfg, const char *key, bool fallback);

/* Where the current value of `key` came from (EB_CONFIG_DEFAULT when unset). */
eb_config_source eb_config_source_of(const eb_config *cfg, const char *key);

#endif
