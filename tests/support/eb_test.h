/* eb_test — small helpers shared by the test programs (not part of any product library).
 *
 * Tests find the repository through EMBROKER_ROOT (set by tests/run), falling back to the
 * current directory, and scratch space through eb_test_tmpdir(). */
#ifndef EB_TEST_H
#define EB_TEST_H

#include <stddef.h>
#include <stdint.h>

/* The repository root (EMBROKER_ROOT or "."). Static string: do not free. */
const char *eb_test_root(void);

/* Writes "<root>/<relative>" into buf (size cap) and returns buf. */
char *eb_test_path(char *buf, size_t cap, const char *relative);

/* A fresh private directory under EMBROKER_TEST_TMP or /tmp, created 0700; the caller owns the
 * returned string (free()) and the directory (eb_test_rmtree). NULL on failure. */
char *eb_test_tmpdir(const char *tag);

/* Remove a directory tree (like rm -rf); returns 0 on success. */
int eb_test_rmtree(const char *path);

/* Start argv[0] with argv (NULL-terminated), its stdout and stderr appended to `log` (or
 * inherited when log is NULL); returns the pid, or -1. */
int eb_test_spawn(char *const argv[], const char *log);

/* SIGTERM `pid`, wait up to 4 s for it to exit, then SIGKILL; always reaps it. Returns its wait
 * status (or -1). */
int eb_test_stop(int pid);

/* Read a whole file into a malloc'd buffer (caller frees); NULL on failure. */
uint8_t *eb_test_read_file(const char *path, size_t *len);

#endif
