// CPU emulation of the CUDA runtime subset the Qwen3 kernels use (bench/kernels/emu/run): every
// thread of a block is a std::thread, blocks run one after another; __syncthreads / __syncwarp
// are barriers; shuffles go through a per-warp slot. It checks kernel LOGIC (indexing, masks,
// online softmax, reductions, missing barriers show up as wrong results) without a GPU; it says
// nothing about speed, and the WMMA stand-in (mma.h) follows the documented fragment semantics.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>
#include <algorithm>
#include <stdexcept>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(x)
#define __align__(x)

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
struct uint4 { unsigned x, y, z, w; };
static inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }

typedef int cudaError_t;
typedef void *cudaStream_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorLaunchFailure = 4 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct emu_warp {
    std::barrier<> bar{32};
    float fslot[32];
    double dslot[32];
};
struct emu_block {
    int nthreads;
    std::barrier<> *bar;
    std::vector<emu_warp *> warps;
    std::vector<unsigned char> dyn, stat;
};
extern thread_local dim3 threadIdx, blockIdx;
extern dim3 gridDim, blockDim;
extern thread_local emu_block *emu_cur;
extern int emu_last_error;

static inline int emu_lane() { return threadIdx.x & 31; }
static inline void __syncthreads() { emu_cur->bar->arrive_and_wait(); }
static inline void __syncwarp(unsigned = 0xffffffffu) { emu_cur->warps[threadIdx.x >> 5]->bar.arrive_and_wait(); }
static inline void *emu_dyn_smem() { return emu_cur->dyn.data(); }
static inline void *emu_static_smem() { return emu_cur->stat.data(); }

template <class T> static inline T emu_shfl(T v, int src_lane)
{
    emu_warp *w = emu_cur->warps[threadIdx.x >> 5];
    int l = emu_lane();
    w->dslot[l] = (double)v;
    w->bar.arrive_and_wait();
    double r = w->dslot[src_lane & 31];
    w->bar.arrive_and_wait();
    return (T)r;
}
template <class T> static inline T __shfl_xor_sync(unsigned, T v, int m) { return emu_shfl(v, emu_lane() ^ m); }
template <class T> static inline T __shfl_sync(unsigned, T v, int src) { return emu_shfl(v, src); }

using std::min;
using std::max;
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }

static inline cudaError_t cudaGetLastError() { int e = emu_last_error; emu_last_error = 0; return e; }
template <class F> static inline cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return cudaSuccess; }

// kernel<<<grid, block[, shmem[, stream]]>>>(args...) becomes
// emu_launch(kernel, grid, block, shmem, stream, args...) (transform.py fills in the defaults).
template <class K, class G, class Bk, class... A>
static inline void emu_launch(K kernel, G grid_, Bk block_, size_t shmem, cudaStream_t, A... args)
{
    dim3 grid(grid_), block(block_);
    gridDim = grid;
    blockDim = block;
    int nt = (int)(block.x * block.y * block.z);
    if (nt % 32 || block.y != 1 || block.z != 1) { emu_last_error = cudaErrorInvalidValue; return; }
    if (shmem > 227 * 1024) { emu_last_error = cudaErrorInvalidValue; return; }
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                emu_block blk;
                blk.nthreads = nt;
                std::barrier<> bar(nt);
                blk.bar = &bar;
                for (int w = 0; w < nt / 32; w++) blk.warps.push_back(new emu_warp);
                blk.dyn.assign(shmem + 64, 0xcd); // garbage, like real shared memory
                blk.stat.assign(64 * 1024, 0xcd);
                std::vector<std::thread> th;
                for (int t = 0; t < nt; t++)
                    th.emplace_back([&, t] {
                        threadIdx = dim3(t, 0, 0);
                        blockIdx = dim3(bx, by, bz);
                        emu_cur = &blk;
                        kernel(args...);
                    });
                for (auto &x : th) x.join();
                for (auto *w : blk.warps) delete w;
            }
}

// ---- the host API subset the kernel labs use (memory is host memory) --------------------------
#include <chrono>
#include <cstdlib>
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };
struct cudaDeviceProp { char name[256]; int major, minor; size_t totalGlobalMem; };
typedef std::chrono::steady_clock::time_point *cudaEvent_t;
static inline const char *cudaGetErrorString(cudaError_t e) { return e ? "emulated error" : "no error"; }
static inline cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
static inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int) { memset(p, 0, sizeof(*p)); strcpy(p->name, "CPU emulation"); return cudaSuccess; }
template <class T> static inline cudaError_t cudaMalloc(T **p, size_t n) { *p = (T *)malloc(n ? n : 1); return *p ? cudaSuccess : 2; }
static inline cudaError_t cudaFree(void *p) { free(p); return cudaSuccess; }
static inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind) { memcpy(d, s, n); return cudaSuccess; }
static inline cudaError_t cudaMemset(void *d, int v, size_t n) { memset(d, v, n); return cudaSuccess; }
static inline cudaError_t cudaDeviceSynchronize() { return cudaGetLastError(); }
static inline cudaError_t cudaEventCreate(cudaEvent_t *e) { *e = new std::chrono::steady_clock::time_point(); return cudaSuccess; }
static inline cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
static inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t = 0) { *e = std::chrono::steady_clock::now(); return cudaSuccess; }
static inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
static inline cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) { *ms = std::chrono::duration<float, std::milli>(*b - *a).count(); return cudaSuccess; }
