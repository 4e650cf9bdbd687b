/* eb_log — one line per event, `key=value` fields, to stderr.
 *
 *   eb_log(EB_LOG_INFO, "worker_ready", "id=%s models=%s batch=%d", id, models, batch);
 * prints
 *   2026-11-28T20:10:01.123456Z info embrokerd[1234] worker_ready id=w1 models=siglip batch=32
 *
 * The level threshold comes from EMBROKER_LOG_LEVEL (error|warn|info|debug, default info) or
 * eb_log_set_level(). Lines are written with one write(2) so lines from several threads or
 * processes sharing stderr never interleave. Thread-safe. */
#ifndef EB_LOG_H
#define EB_LOG_H

#include <stdbool.h>

typedef enum eb_log_level {
    EB_LOG_ERROR = 0,
    EB_LOG_WARN = 1,
    EB_LOG_INFO = 2,
    EB_LOG_DEBUG = 3,
} eb_log_level;

/* Set the program name shown on each line (not copied: pass a string that outlives logging). */
void eb_log_set_program(const char *program);

/* Set the threshold; lines above it are dropped. */
void eb_log_set_level(eb_log_level level);

/* Parse "error", "warn", "info" or "debug"; false (level unchanged) for anything else. */
bool eb_log_level_parse(const char *name, eb_log_level *level);

/* True when a line at `level` would be printed (skip building expensive fields otherwise). */
bool eb_log_enabled(eb_log_level level);

/* Log `event` followed by the printf-formatted key=value fields (fmt may be NULL). */
void eb_log(eb_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define eb_log_error(event, ...) eb_log(EB_LOG_ERROR, event, __VA_ARGS__)
#define eb_log_warn(event, ...) eb_log(EB_LOG_WARN, event, __VA_ARGS__)
#define eb_log_info(event, ...) eb_log(EB_LOG_INFO, event, __VA_ARGS__)
#define eb_log_debug(event, ...) eb_log(EB_LOG_DEBUG, event, __VA_ARGS__)

#endif
