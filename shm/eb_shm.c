/* eb_shm — the segment format shared by creator, readers and cleanup.
 *
 * Names and headers arrive from other processes (a client tells the broker its segment's name;
 * cleanup reads headers of segments left by crashed programs), so both are parsed strictly here
 * once and every other module relies on these two checks.
 */
#include "eb_shm.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

_Static_assert(sizeof(eb_shm_header) <= EB_SHM_HEADER_SIZE, "header must fit its reserved page");
_Static_assert(offsetof(eb_shm_header, nonce) == 48, "header layout is documented in docs/shm.md");
_Static_assert(sizeof(eb_shm_header) == 80, "header layout is documented in docs/shm.md");

/* Parses a decimal number without sign or leading zeros (except "0") that fits in `max`;
 * advances *p past it. */
static bool parse_decimal(const char **p, uint64_t max, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9') {
        unsigned digit = (unsigned)(s[n] - '0');
        if (v > (max - digit) / 10)
            return false;
        v = v * 10 + digit;
        n++;
    }
    if (n == 0 || (n > 1 && s[0] == '0'))
        return false;
    *p = s + n;
    *out = v;
    return true;
}

bool eb_shm_name_parse(const char *name, uid_t *uid, pid_t *pid)
{
    if (!name || strlen(name) >= EB_SHM_NAME_MAX)
        return false;
    size_t prefix_len = strlen(EB_SHM_NAME_PREFIX);
    if (strncmp(name, EB_SHM_NAME_PREFIX, prefix_len) != 0)
        return false;
    const char *p = name + prefix_len;
    uint64_t uid_value, pid_value;
    if (!parse_decimal(&p, UINT32_MAX - 1, &uid_value) || *p++ != '-')
        return false;
    if (!parse_decimal(&p, INT32_MAX, &pid_value) || pid_value == 0 || *p++ != '-')
        return false;
    size_t hex = 0;
    while ((p[hex] >= '0' && p[hex] <= '9') || (p[hex] >= 'a' && p[hex] <= 'f'))
        hex++;
    if (hex != 16 || p[hex] != '\0')
        return false;
    if (uid)
        *uid = (uid_t)uid_value;
    if (pid)
        *pid = (pid_t)pid_value;
    return true;
}

eb_status eb_shm_header_check(const eb_shm_header *header, uint64_t object_size,
                              const char *name, char *err, size_t err_len)
{
    const char *what = NULL;
    uint64_t got = 0, want = 0;
    if (memcmp(header->magic, EB_SHM_MAGIC, sizeof header->magic) != 0) {
        what = "bad magic (not an embroker segment)";
    } else if (header->version != EB_SHM_VERSION) {
        what = "unsupported version", got = header->version, want = EB_SHM_VERSION;
    } else if (header->header_size != EB_SHM_HEADER_SIZE) {
        what = "header_size", got = header->header_size, want = EB_SHM_HEADER_SIZE;
    } else if (header->epoch == 0) {
        what = "epoch is 0 (header not written yet)";
    } else if (header->total_size != object_size) {
        what = "total_size differs from the object's size", got = header->total_size,
        want = object_size;
    } else if (header->nonce_len > EB_SHM_NONCE_MAX) {
        what = "nonce_len exceeds the maximum", got = header->nonce_len, want = EB_SHM_NONCE_MAX;
    }
    if (!what)
        return EB_OK;
    if (err && err_len) {
        if (got || want)
            snprintf(err, err_len, "shared-memory segment \"%s\": %s: %llu (expected %llu)",
                     name ? name : "?", what, (unsigned long long)got, (unsigned long long)want);
        else
            snprintf(err, err_len, "shared-memory segment \"%s\": %s", name ? name : "?", what);
    }
    return EB_ERR_INVALID;
}
