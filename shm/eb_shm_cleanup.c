/* eb_shm_cleanup — reclaim leftover segments of dead owners.
 *
 * The header is read with pread, not through a mapping: the object may be shorter than a header
 * (a creator killed between shm_open and posix_fallocate), and a short read is just a missing
 * header, where touching a mapping would raise SIGBUS. A segment is unlinked only when its
 * owner is proven dead; any doubt (unreadable /proc, a header we cannot interpret and a name
 * pid that is alive) keeps it.
 */
#include "eb_shm_cleanup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eb_log.h"
#include "eb_shm.h"
#include "eb_shm_owner.h"

#define SHM_DIR "/dev/shm"

/* Read the header of an open object; true when it is a written, valid header. */
static bool read_header(int fd, const struct stat *st, const char *name, eb_shm_header *header)
{
    ssize_t n;
    do {
        n = pread(fd, header, sizeof *header, 0);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof *header)
        return false;
    return eb_shm_header_check(header, (uint64_t)st->st_size, name, NULL, 0) == EB_OK;
}

/* Decide for one directory entry; true when `name` was unlinked by us. */
static bool clean_one(const char *name, uid_t uid)
{
    uid_t name_uid;
    pid_t name_pid;
    if (!eb_shm_name_parse(name, &name_uid, &name_pid) || name_uid != uid)
        return false;
    int fd = shm_open(name, O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0);
    if (fd < 0) {
        if (errno != ENOENT)
            eb_log_debug("shm_cleanup_skip", "name=%s reason=open errno=%d", name, errno);
        return false;
    }
    struct stat st;
    bool dead = false;
    if (fstat(fd, &st) != 0 || st.st_uid != uid || !S_ISREG(st.st_mode)) {
        close(fd);
        return false;
    }
    eb_shm_header header;
    pid_t owner_pid = name_pid;
    if (read_header(fd, &st, name, &header)) {
        owner_pid = (pid_t)header.owner_pid;
        dead = !eb_shm_owner_alive(owner_pid, header.owner_starttime);
    } else {
        dead = kill(name_pid, 0) != 0 && errno == ESRCH; /* no header: the name's pid decides */
    }
    close(fd);
    if (!dead)
        return false;
    if (shm_unlink(name) != 0) {
        if (errno != ENOENT)
            eb_log_warn("shm_cleanup_failed", "name=%s errno=%d", name, errno);
        return false;
    }
    eb_log_info("shm_cleanup_removed", "name=%s owner_pid=%d", name, (int)owner_pid);
    return true;
}

eb_status eb_shm_cleanup_dead(uid_t uid, size_t *removed)
{
    size_t count = 0;
    DIR *dir = opendir(SHM_DIR);
    if (!dir) {
        eb_log_warn("shm_cleanup_failed", "dir=" SHM_DIR " errno=%d", errno);
        if (removed)
            *removed = 0;
        return EB_ERR_IO;
    }
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (strncmp(entry->d_name, EB_SHM_NAME_PREFIX + 1, strlen(EB_SHM_NAME_PREFIX) - 1) != 0)
            continue;
        char name[EB_SHM_NAME_MAX + 1];
        size_t len = strlen(entry->d_name);
        if (len + 2 > sizeof name)
            continue;
        name[0] = '/';
        memcpy(name + 1, entry->d_name, len + 1);
        if (clean_one(name, uid))
            count++;
    }
    closedir(dir);
    if (removed)
        *removed = count;
    return EB_OK;
}

eb_status eb_shm_cleanup_unlink(const char *name, uid_t uid)
{
    uid_t name_uid;
    if (!eb_shm_name_parse(name, &name_uid, NULL) || name_uid != uid)
        return EB_ERR_INVALID;
    int fd = shm_open(name, O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0);
    if (fd < 0)
        return errno == ENOENT ? EB_OK : errno == EACCES ? EB_ERR_DENIED : EB_ERR_IO;
    struct stat st;
    int stat_rc = fstat(fd, &st);
    close(fd);
    if (stat_rc != 0)
        return EB_ERR_IO;
    if (st.st_uid != uid)
        return EB_ERR_DENIED;
    if (shm_unlink(name) != 0 && errno != ENOENT)
        return errno == EACCES ? EB_ERR_DENIED : EB_ERR_IO;
    return EB_OK;
}
