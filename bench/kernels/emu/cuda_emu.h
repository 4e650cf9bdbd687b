/* cuda_emu — run the CUDA backend's hand-written kernels on the CPU, for checking them on a
 * machine without a GPU (bench/kernels/emu/run). Not a product path and not fast.
 *
 * Every CUDA thread of a block is an OS thread; __syncthreads is a std::barrier over the block,
 * warp shuffles exchange through a per-warp slot array between two warp barriers; __shared__
 * variables are `static` (blocks run one after another, so one copy per kernel is per block);
 * the dynamic shared array comes from emu_dyn_smem. Device pointers are host pointers.
 * What this cannot check: timing, memory coalescing, races that a real GPU's scheduling would
 * expose differently, cuBLASLt, streams and graphs. It does check indexing, masking, the
 * online-softmax arithmetic and every reduction, which is where kernel bugs usually are.
 */
#ifndef CUDA_EMU_H
#define CUDA_EMU_H

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <thread>
#include <vector>

using std::max;
using std::min;

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
typedef void *cudaStream_t;
inline cudaError_t cudaGetLastError(void) { return cudaSuccess; }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(x)
#define __shared__ static

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

struct __nv_bfloat16 {
    uint16_t bits;
};
inline __nv_bfloat16 __float2bfloat16_rn(float f)
{
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return {(uint16_t)((u >> 16) | 0x40u)};
    u += 0x7fffu + ((u >> 16) & 1u);
    return {(uint16_t)(u >> 16)};
}
inline float __bfloat162float(__nv_bfloat16 b)
{
    uint32_t u = (uint32_t)b.bits << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

struct emu_block_state {
    std::barrier<> *block;
    std::vector<std::barrier<> *> warps;
    float slot_f[1024];
};
inline emu_block_state *emu_blk;
inline thread_local int emu_tid;
inline std::vector<char> emu_dyn_smem_buf;
inline char *emu_dyn_smem;

inline void __syncthreads(void) { emu_blk->block->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float v, int mask)
{
    int w = emu_tid / 32, l = emu_tid % 32;
    emu_blk->slot_f[emu_tid] = v;
    emu_blk->warps[w]->arrive_and_wait();
    float r = emu_blk->slot_f[w * 32 + (l ^ mask)];
    emu_blk->warps[w]->arrive_and_wait();
    return r;
}

inline float __shfl_sync(unsigned, float v, int src)
{
    int w = emu_tid / 32;
    emu_blk->slot_f[emu_tid] = v;
    emu_blk->warps[w]->arrive_and_wait();
    float r = emu_blk->slot_f[w * 32 + (src & 31)];
    emu_blk->warps[w]->arrive_and_wait();
    return r;
}

struct emu_cfg {
    dim3 grid, block;
    size_t shmem;
    emu_cfg(dim3 g, dim3 b, size_t s = 0, cudaStream_t = nullptr) : grid(g), block(b), shmem(s) {}
};

/* Graph capture: while a stream is being captured, launches (and cuBLASLt calls) are recorded
 * as closures instead of run; a launched graph runs them in order. */
#include <functional>
inline bool emu_capturing;
inline std::vector<std::function<void()>> *emu_capture_list;

template <typename F, typename... A> void emu_run_kernel(F *kernel, emu_cfg c, A... args);

template <typename F, typename... A> void emu_launch(F *kernel, emu_cfg c, A... args)
{
    if (emu_capturing) {
        emu_capture_list->push_back([=] { emu_run_kernel(kernel, c, args...); });
        return;
    }
    emu_run_kernel(kernel, c, args...);
}

template <typename F, typename... A> void emu_run_kernel(F *kernel, emu_cfg c, A... args)
{
    gridDim = c.grid;
    blockDim = c.block;
    unsigned nt = c.block.x * c.block.y * c.block.z;
    if (nt % 32 || nt > 1024) {
        fprintf(stderr, "emu: block of %u threads is not a multiple of 32\n", nt);
        abort();
    }
    emu_dyn_smem_buf.assign(c.shmem + 16, 0x7f); // garbage, like real shared memory
    emu_dyn_smem = emu_dyn_smem_buf.data();
    for (unsigned bz = 0; bz < c.grid.z; bz++)
        for (unsigned by = 0; by < c.grid.y; by++)
            for (unsigned bx = 0; bx < c.grid.x; bx++) {
                emu_block_state st;
                std::barrier<> bb((std::ptrdiff_t)nt);
                st.block = &bb;
                std::vector<std::barrier<> *> wb;
                for (unsigned w = 0; w < nt / 32; w++)
                    wb.push_back(new std::barrier<>(32));
                st.warps = wb;
                emu_blk = &st;
                std::vector<std::thread> th;
                th.reserve(nt);
                for (unsigned t = 0; t < nt; t++)
                    th.emplace_back([&, t] {
                        emu_tid = (int)t;
                        threadIdx = dim3(t % c.block.x, (t / c.block.x) % c.block.y,
                                         t / (c.block.x * c.block.y));
                        blockIdx = dim3(bx, by, bz);
                        kernel(args...);
                        // a returned thread no longer takes part in barriers
                        emu_blk->warps[t / 32]->arrive_and_drop();
                        emu_blk->block->arrive_and_drop();
                    });
                for (auto &x : th)
                    x.join();
                for (auto *w : wb)
                    delete w;
            }
}


/* ---- the runtime API the backend uses (host memory stands in for device memory) ---------- */
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 };
enum { cudaStreamNonBlocking = 1, cudaEventDisableTiming = 2, cudaHostAllocDefault = 0 };
enum cudaStreamCaptureMode { cudaStreamCaptureModeThreadLocal = 1 };
typedef void *cudaEvent_t;
typedef std::vector<std::function<void()>> *cudaGraph_t;
typedef std::vector<std::function<void()>> *cudaGraphExec_t;
struct cudaDeviceProp {
    char name[256];
    int major, minor;
    size_t totalGlobalMem;
};
inline const char *cudaGetErrorString(cudaError_t e) { return e ? "emulated error" : "no error"; }
inline const char *cudaGetErrorName(cudaError_t e) { return e ? "cudaErrorEmu" : "cudaSuccess"; }
inline cudaError_t cudaGetDeviceCount(int *n)
{
    *n = 1;
    return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned)
{
    *s = (void *)new char;
    return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    delete (char *)s;
    return cudaSuccess;
}
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned)
{
    *e = (void *)new double(0);
    return cudaSuccess;
}
inline cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }
inline cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    delete (double *)e;
    return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t = nullptr)
{
    *(double *)e = (double)clock() / CLOCKS_PER_SEC;
    return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    *ms = (float)((*(double *)b - *(double *)a) * 1000.0);
    return cudaSuccess;
}
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned)
{
    return emu_capturing ? 1 : cudaSuccess; // the backend never waits inside a capture
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return emu_capturing ? 1 : cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
inline cudaError_t cudaMalloc(void **p, size_t n)
{
    *p = aligned_alloc(256, (n + 255) & ~(size_t)255);
    if (*p)
        memset(*p, 0xA5, n); // garbage, like fresh device memory
    return *p ? cudaSuccess : 2;
}
inline cudaError_t cudaFree(void *p)
{
    free(p);
    return cudaSuccess;
}
inline cudaError_t cudaHostAlloc(void **p, size_t n, unsigned) { return cudaMalloc(p, n); }
inline cudaError_t cudaFreeHost(void *p) { return cudaFree(p); }
inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind)
{
    if (emu_capturing)
        return 1; // not capturable
    memcpy(d, s, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k,
                                   cudaStream_t = nullptr)
{
    return cudaMemcpy(d, s, n, k);
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int)
{
    snprintf(p->name, sizeof(p->name), "CPU emulation of CUDA");
    p->major = 9, p->minor = 0, p->totalGlobalMem = (size_t)1 << 34;
    return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int *v)
{
    *v = 0;
    return cudaSuccess;
}
inline cudaError_t cudaDriverGetVersion(int *v)
{
    *v = 0;
    return cudaSuccess;
}
inline cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode)
{
    if (emu_capturing)
        return 1;
    emu_capturing = true;
    emu_capture_list = new std::vector<std::function<void()>>();
    return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t *g)
{
    if (!emu_capturing)
        return 1;
    emu_capturing = false;
    *g = emu_capture_list;
    emu_capture_list = nullptr;
    return cudaSuccess;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long)
{
    *e = new std::vector<std::function<void()>>(*g);
    return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t g)
{
    delete g;
    return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e)
{
    delete e;
    return cudaSuccess;
}
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t)
{
    for (auto &f : *e)
        f();
    return cudaSuccess;
}

#endif
