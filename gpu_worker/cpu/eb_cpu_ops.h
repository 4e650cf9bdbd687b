/* eb_cpu_ops — the CPU backend of the op interface (eb_ops.h).
 *
 * fp32 everywhere: weights are converted to fp32 at upload whatever the checkpoint dtype.
 * Matrix products (linear layers, patch embedding, attention's q·kᵀ and p·v per head) go to
 * eb_cpu_gemm's AVX-512 kernel on CPUs that have it, with each weight repacked once, in place,
 * at its first matmul (invisible to callers: uploads and row gathers see the plain matrix), and
 * to OpenBLAS sgemm elsewhere (or with EB_CPU_NO_PACKED_GEMM=1 in the environment); everything
 * else is plain C loops written so the compiler vectorises them. One thread pool (eb_cpu_pool)
 * runs everything, with OpenBLAS itself set to one thread, so two thread pools never fight over
 * the cores. This backend is also the numerical reference the CUDA backend is checked against.
 */
#ifndef EB_CPU_OPS_H
#define EB_CPU_OPS_H

#include <stddef.h>

#include "eb_ops.h"

/* Create the CPU backend with params->n_threads compute threads (0 = online CPUs; params may be
 * NULL). Sets OpenBLAS to one thread for the whole process (see above). NULL on failure with the
 * reason in err. The caller owns the backend: eb_backend_destroy(). */
eb_backend *eb_cpu_backend_create(const eb_backend_params *params, char *err, size_t err_len);

/* OpenBLAS picks its kernels once, when the library loads, from the CPU model; releases that do
 * not know the CPU (0.3.21 and Sapphire/Emerald Rapids, common in VMs) fall back to the generic
 * SSE3 "Prescott" kernels, 4-6x slower. Only the OPENBLAS_CORETYPE environment variable, read
 * at load time, changes that. Call this first thing in main(): when OPENBLAS_CORETYPE is unset,
 * OpenBLAS chose a generic core and the CPU has AVX-512 (or AVX2+FMA), it sets
 * OPENBLAS_CORETYPE=SkylakeX (or Haswell) and re-executes the program with the same argv (once:
 * EB_BLAS_REEXEC guards the loop). Returns normally when nothing needed doing or exec failed. */
void eb_cpu_blas_ensure_coretype(char **argv);

/* OpenBLAS's kernel family name for this process (e.g. "SkylakeX", "Prescott"). Static string. */
const char *eb_cpu_blas_corename(void);

#endif
