#pragma once
// WMMA emulation: every lane holds the whole 16x16 tile (redundantly); lane 0 alone stores.
#include "cuda_runtime.h"
#include "cuda_bf16.h"
namespace nvcuda { namespace wmma {
struct matrix_a {}; struct matrix_b {}; struct accumulator {}; struct row_major {}; struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
template <class Use, int M, int N, int K, class T, class L = void> struct fragment { float x[256]; };
template <class F> static inline void fill_fragment(F &f, float v) { for (float &e : f.x) e = v; }
static inline float tof(__nv_bfloat16 v) { return __bfloat162float(v); }
static inline float tof(float v) { return v; }
template <class T> static inline void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, row_major> &f, const T *p, unsigned ldm)
{ for (int i = 0; i < 16; i++) for (int k = 0; k < 16; k++) f.x[i * 16 + k] = tof(p[i * ldm + k]); }
template <class T> static inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, col_major> &f, const T *p, unsigned ldm)
{ for (int k = 0; k < 16; k++) for (int j = 0; j < 16; j++) f.x[k * 16 + j] = tof(p[j * ldm + k]); }
template <class T> static inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, row_major> &f, const T *p, unsigned ldm)
{ for (int k = 0; k < 16; k++) for (int j = 0; j < 16; j++) f.x[k * 16 + j] = tof(p[k * ldm + j]); }
static inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p, unsigned ldm, layout_t l)
{ for (int i = 0; i < 16; i++) for (int j = 0; j < 16; j++) f.x[i * 16 + j] = l == mem_row_major ? p[i * ldm + j] : p[j * ldm + i]; }
template <class A, class B>
static inline void mma_sync(fragment<accumulator, 16, 16, 16, float> &d, const A &a, const B &b, const fragment<accumulator, 16, 16, 16, float> &c)
{
    float r[256];
    for (int i = 0; i < 16; i++) for (int j = 0; j < 16; j++) {
        float s = c.x[i * 16 + j];
        for (int k = 0; k < 16; k++) s += a.x[i * 16 + k] * b.x[k * 16 + j];
        r[i * 16 + j] = s;
    }
    memcpy(d.x, r, sizeof(r));
}
static inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f, unsigned ldm, layout_t l)
{
    if (emu_lane() != 0) return;
    for (int i = 0; i < 16; i++) for (int j = 0; j < 16; j++) (l == mem_row_major ? p[i * ldm + j] : p[j * ldm + i]) = f.x[i * 16 + j];
}
}}
