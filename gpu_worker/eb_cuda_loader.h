/* eb_cuda_loader — find libeb_cuda.so and its extra entry points (eb_cuda_ext.h).
 *
 * eb_backend_create("cuda") (eb_ops.c) opens the library itself; this module serves the
 * programs that need more than the op table (the op test, the model comparison, the GPU
 * benchmark) and that live in other folders than the worker: it chooses the library path the
 * same way for all of them, so a test binary in $B/tests/unit/ finds $B/lib/libeb_cuda.so.
 * Nothing here links CUDA: the library is dlopen()ed, so these programs build and run (and
 * report "no GPU") on machines without CUDA.
 */
#ifndef EB_CUDA_LOADER_H
#define EB_CUDA_LOADER_H

#include <stddef.h>

/* The path of libeb_cuda.so to load: $EB_CUDA_LIBRARY when set; else the first existing of
 * <exe dir>/../lib/libeb_cuda.so, <exe dir>/../../lib/libeb_cuda.so; else NULL (let the dynamic
 * loader search). Written into buf (cap bytes); returns buf or NULL. */
const char *eb_cuda_loader_path(char *buf, size_t cap);

/* Address of `symbol` in libeb_cuda.so (loaded from eb_cuda_loader_path(), or found by the
 * dynamic loader), or NULL with the reason in err. The library stays loaded for the life of
 * the process. */
void *eb_cuda_loader_symbol(const char *symbol, char *err, size_t err_len);

#endif
