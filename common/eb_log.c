/* eb_log — structured one-line logging. Formatting happens into a stack buffer and leaves with a
 * single write(2), which POSIX makes atomic for pipes up to PIPE_BUF and which in practice keeps
 * lines whole on terminals and files too; no lock is needed. */
#define _GNU_SOURCE
#include "eb_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *log_program = "embroker";
static int log_level = -1; /* -1: not yet read from the environment */

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void eb_log_set_program(const char *program) { log_program = program; }

void eb_log_set_level(eb_log_level level) { log_level = (int)level; }

bool eb_log_level_parse(const char *name, eb_log_level *level)
{
    for (int i = 0; i < 4; i++) {
        if (name && strcasecmp(name, level_names[i]) == 0) {
            *level = (eb_log_level)i;
            return true;
        }
    }
    return false;
}

bool eb_log_enabled(eb_log_level level)
{
    if (log_level < 0) {
        eb_log_level from_env = EB_LOG_INFO;
        eb_log_level_parse(getenv("EMBROKER_LOG_LEVEL"), &from_env);
        log_level = (int)from_env;
    }
    return (int)level <= log_level;
}

void eb_log(eb_log_level level, const char *event, const char *fmt, ...)
{
    if (!eb_log_enabled(level))
        return;
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ %s %s[%d] %s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (long)tv.tv_usec, level_names[level], log_program, (int)getpid(),
                     event);
    if (fmt && *fmt && n < (int)sizeof line - 2) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        va_end(ap);
        n = m < 0 ? n : n + m;
    }
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2; /* truncated: keep the newline */
    line[n++] = '\n';
    ssize_t ignored = write(STDERR_FILENO, line, (size_t)n);
    (void)ignored;
}
