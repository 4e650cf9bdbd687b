/* eb_cuda_loader — locating libeb_cuda.so for programs outside the worker.
 *
 * The library sits in $B/lib; programs sit in $B/bin (worker, tools, benchmarks) or
 * $B/tests/unit (tests). Trying ../lib and ../../lib next to the executable covers both
 * without configuration; EB_CUDA_LIBRARY overrides it (a carried prebuilt copy on a GPU
 * machine, say). dlopen() of a path already loaded returns the same handle, so looking up an
 * extra symbol here and creating the backend through eb_ops.c share one library instance.
 */
#include "eb_cuda_loader.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *eb_cuda_loader_path(char *buf, size_t cap)
{
    const char *env = getenv("EB_CUDA_LIBRARY");
    if (env && *env) {
        snprintf(buf, cap, "%s", env);
        return buf;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return NULL;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    static const char *const rel[] = {"/../lib/libeb_cuda.so", "/../../lib/libeb_cuda.so"};
    for (size_t i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
        int w = snprintf(buf, cap, "%s%s", exe, rel[i]);
        if (w > 0 && (size_t)w < cap && access(buf, R_OK) == 0)
            return buf;
    }
    return NULL;
}

void *eb_cuda_loader_symbol(const char *symbol, char *err, size_t err_len)
{
    char path[PATH_MAX];
    const char *p = eb_cuda_loader_path(path, sizeof(path));
    void *h = dlopen(p ? p : "libeb_cuda.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(err, err_len,
                 "cannot load the CUDA backend library %s: %s (build it with nvcc, or set "
                 "EB_CUDA_LIBRARY)",
                 p ? p : "libeb_cuda.so", dlerror());
        return NULL;
    }
    void *sym = dlsym(h, symbol);
    if (!sym)
        snprintf(err, err_len, "the CUDA backend library %s lacks symbol %s",
                 p ? p : "libeb_cuda.so", symbol);
    return sym; // the handle is deliberately kept: backends hold pointers into the library
}
