/* eb_status — names for status codes. The table is indexed by -status, so adding a status
 * means adding one line here and one in the header. */
#include "eb_status.h"

#include <stdarg.h>
#include <stdio.h>

#include <string.h>

static const char *const status_names[] = {
    "ok",          "invalid",     "nomem",    "io",          "protocol",    "too_large",
    "not_found",   "busy",        "timeout",  "deadline",    "denied",      "stale",
    "bounds",      "decode",      "model",    "unavailable", "cancelled",   "restarted",
    "worker_lost", "unsupported", "internal", "shutdown",
};

_Static_assert(sizeof status_names / sizeof status_names[0] == 1 - EB_STATUS_MIN,
               "status_names must name every eb_status");

const char *eb_status_str(eb_status status)
{
    if (status > 0 || status < EB_STATUS_MIN)
        return "unknown";
    return status_names[-status];
}

eb_status eb_status_from_str(const char *name)
{
    for (int i = 0; i <= -EB_STATUS_MIN; i++)
        if (name && strcmp(name, status_names[i]) == 0)
            return (eb_status)-i;
    return EB_ERR_INVALID;
}

void eb_set_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (!err || err_len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}
