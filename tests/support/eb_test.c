/* eb_test — helpers for test programs: paths, temporary directories, whole-file reads. */
#define _GNU_SOURCE
#include "eb_test.h"

#include <ftw.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *eb_test_root(void)
{
    const char *root = getenv("EMBROKER_ROOT");
    return root && *root ? root : ".";
}

char *eb_test_path(char *buf, size_t cap, const char *relative)
{
    snprintf(buf, cap, "%s/%s", eb_test_root(), relative);
    return buf;
}

char *eb_test_tmpdir(const char *tag)
{
    const char *base = getenv("EMBROKER_TEST_TMP");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/%s.XXXXXX", base && *base ? base : "/tmp", tag);
    if (!mkdtemp(tmpl))
        return NULL;
    return strdup(tmpl);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int eb_test_rmtree(const char *path)
{
    return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int eb_test_spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = log ? fopen(log, "a") : NULL;
        if (f) {
            dup2(fileno(f), STDOUT_FILENO);
            dup2(fileno(f), STDERR_FILENO);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

int eb_test_stop(int pid)
{
    if (pid <= 0)
        return -1;
    int status = -1;
    kill(pid, SIGTERM);
    for (int i = 0; i < 200; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return status;
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return status;
}

uint8_t *eb_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return NULL;
    }
    long size = ftell(f);
    rewind(f);
    uint8_t *buf = size >= 0 ? malloc((size_t)size + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[size] = 0;
        *len = (size_t)size;
    }
    return buf;
}
