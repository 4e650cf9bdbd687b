/* eb_status — the one status type every embroker action returns.
 *
 * 0 is success; every error is a distinct negative value so callers can switch on the kind of
 * failure without parsing messages. The same numbers travel on the wire as error codes
 * (docs/protocol.md lists them), so values are append-only: never renumber.
 */
#ifndef EB_STATUS_H
#define EB_STATUS_H

#include <stddef.h>

typedef enum eb_status {
    EB_OK = 0,
    EB_ERR_INVALID = -1,      /* an argument or field is malformed or out of range */
    EB_ERR_NOMEM = -2,        /* an allocation failed */
    EB_ERR_IO = -3,           /* a system call on a file, socket or mapping failed */
    EB_ERR_PROTOCOL = -4,     /* a message does not follow docs/protocol.md */
    EB_ERR_TOO_LARGE = -5,    /* a message, input, batch or image exceeds a configured limit */
    EB_ERR_NOT_FOUND = -6,    /* a model, segment, file or key does not exist */
    EB_ERR_BUSY = -7,         /* a bounded queue or segment is full; retry later */
    EB_ERR_TIMEOUT = -8,      /* a wait ran past its timeout */
    EB_ERR_DEADLINE = -9,     /* a request's deadline passed before it could be served */
    EB_ERR_DENIED = -10,      /* permission or ownership check failed */
    EB_ERR_STALE = -11,       /* a reference names a destroyed or recreated segment (epoch) */
    EB_ERR_BOUNDS = -12,      /* a reference lies outside its segment */
    EB_ERR_DECODE = -13,      /* an image or text could not be decoded */
    EB_ERR_MODEL = -14,       /* the model failed on an input */
    EB_ERR_UNAVAILABLE = -15, /* a dependency (worker, Redis, PostgreSQL) is unreachable */
    EB_ERR_CANCELLED = -16,   /* the request was cancelled by its client */
    EB_ERR_RESTARTED = -17,   /* the broker restarted while the request was in flight */
    EB_ERR_WORKER_LOST = -18, /* the worker serving the request died (twice) */
    EB_ERR_UNSUPPORTED = -19, /* a valid request this build or model cannot serve */
    EB_ERR_INTERNAL = -20,    /* a bug: an invariant was violated */
    EB_ERR_SHUTDOWN = -21,    /* the process is shutting down and takes no new work */
} eb_status;

#define EB_STATUS_MIN EB_ERR_SHUTDOWN

/* A short constant name for the status, e.g. "EB_ERR_BUSY" -> "busy". Never NULL; unknown
 * values give "unknown". The string is static: do not free it. */
const char *eb_status_str(eb_status status);

/* Write a printf-style reason into err (err_len bytes, truncated, always NUL-terminated): the
 * "reason in err" half of every eb_ function that fails. Does nothing when err is NULL or
 * err_len is 0. */
void eb_set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The status whose eb_status_str() is `name`, or EB_ERR_INVALID when none matches. */
eb_status eb_status_from_str(const char *name);

#endif
