/* eb_shm_owner — process identity as (pid, start time), read from /proc.
 *
 * /proc/<pid>/stat is "pid (comm) state ppid ...": comm may contain spaces and parentheses, so
 * parsing starts after the LAST ')' in the line; from there the fields are state (3), ppid (4),
 * ... starttime (22).
 */
#include "eb_shm_owner.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Read /proc/<pid>/stat and pick out state and starttime. */
static eb_status read_stat(pid_t pid, char *state, uint64_t *starttime)
{
    char path[64];
    if (pid == 0)
        snprintf(path, sizeof path, "/proc/self/stat");
    else
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ESRCH ? EB_ERR_NOT_FOUND : EB_ERR_IO;
    char line[1024];
    ssize_t n;
    do {
        n = read(fd, line, sizeof line - 1);
    } while (n < 0 && errno == EINTR);
    int read_errno = errno;
    close(fd);
    if (n < 0) /* the process exited between open and read */
        return read_errno == ESRCH ? EB_ERR_NOT_FOUND : EB_ERR_IO;
    line[n] = '\0';

    char *p = strrchr(line, ')');
    if (!p || p[1] != ' ' || !p[2])
        return EB_ERR_IO;
    p += 2;
    *state = *p;
    /* p is at field 3; advance to field 22. */
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p)
            return EB_ERR_IO;
        p++;
    }
    char *end;
    errno = 0;
    unsigned long long value = strtoull(p, &end, 10);
    if (end == p || errno != 0 || (*end != ' ' && *end != '\n' && *end != '\0'))
        return EB_ERR_IO;
    *starttime = value;
    return EB_OK;
}

eb_status eb_shm_owner_starttime(pid_t pid, uint64_t *starttime)
{
    char state = 0;
    uint64_t value = 0;
    eb_status status = read_stat(pid, &state, &value);
    if (status != EB_OK)
        return status;
    if (state == 'Z' || state == 'X' || state == 'x')
        return EB_ERR_NOT_FOUND;
    *starttime = value;
    return EB_OK;
}

bool eb_shm_owner_alive(pid_t pid, uint64_t starttime)
{
    if (pid <= 0)
        return false;
    uint64_t actual = 0;
    eb_status status = eb_shm_owner_starttime(pid, &actual);
    if (status == EB_ERR_NOT_FOUND)
        return false;
    if (status != EB_OK)
        return true;
    return actual == starttime;
}
