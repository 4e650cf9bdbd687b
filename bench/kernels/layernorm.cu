/* Kernel lab: LayerNorm fused with the residual add (x += r; y = LN(x) * g + b).
 *
 *   nvcc -O3 -std=c++17 -arch=sm_90 -o lab_layernorm layernorm.cu && ./lab_layernorm
 *
 * version 1: one block of 256 threads per row, block-wide reductions through shared memory.
 * version 2: one warp per row, 4 rows per block, warp shuffles only (no __syncthreads); the
 *            rows are 768 / 1152 floats, so a warp streams a row through L1 three times.
 *            PROMOTED to gpu_worker/cuda/eb_cuda_layernorm.cu as layernorm_kernel2.
 * Each version is checked against a double-precision CPU reference at the SigLIP shapes and
 * timed at batch 256 (GB/s counts x and r read, x and y written).
 */
#include "lab_common.cuh"

// ---- version 1 -------------------------------------------------------------------------------
__global__ void layernorm_kernel1(float *y, float *x, const float *r, const float *g,
                                  const float *b, int rows, int C, float eps)
{
    __shared__ float red[32];
    int row = blockIdx.x;
    float *xr = x + (int64_t)row * C;
    const float *rr = r ? r + (int64_t)row * C : nullptr;
    float s = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float v = xr[i] + (rr ? rr[i] : 0.0f);
        if (rr)
            xr[i] = v;
        s += v;
    }
    int lane = threadIdx.x & 31, nwarps = blockDim.x >> 5;
    s = lab_dwarp_sum(s);
    if (lane == 0)
        red[threadIdx.x >> 5] = s;
    __syncthreads();
    s = lab_dwarp_sum(lane < nwarps ? red[lane] : 0.0f); // every warp gets the total
    float mean = s / C;
    __syncthreads(); // red is reused below
    float q = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float d = xr[i] - mean;
        q += d * d;
    }
    q = lab_dwarp_sum(q);
    if (lane == 0)
        red[threadIdx.x >> 5] = q;
    __syncthreads();
    q = lab_dwarp_sum(lane < nwarps ? red[lane] : 0.0f);
    float rstd = rsqrtf(q / C + eps);
    for (int i = threadIdx.x; i < C; i += blockDim.x)
        y[(int64_t)row * C + i] = (xr[i] - mean) * rstd * g[i] + b[i];
    (void)rows;
}

// ---- version 2 (promoted) ----------------------------------------------------------------------
#define LN_WARPS 4
__global__ void layernorm_kernel2(float *y, float *x, const float *r, const float *g,
                                  const float *b, int rows, int C, float eps)
{
    int row = blockIdx.x * LN_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows)
        return;
    float *xr = x + (int64_t)row * C;
    const float *rr = r ? r + (int64_t)row * C : nullptr;
    float s = 0;
    for (int i = lane; i < C; i += 32) {
        float v = xr[i];
        if (rr) {
            v += rr[i];
            xr[i] = v;
        }
        s += v;
    }
    float mean = lab_dwarp_sum(s) / C;
    float q = 0;
    for (int i = lane; i < C; i += 32) {
        float d = xr[i] - mean;
        q += d * d;
    }
    float rstd = rsqrtf(lab_dwarp_sum(q) / C + eps);
    for (int i = lane; i < C; i += 32)
        y[(int64_t)row * C + i] = (xr[i] - mean) * rstd * g[i] + b[i];
}

static void cpu_layernorm(float *y, float *x, const float *r, const float *g, const float *b,
                          int rows, int C, float eps)
{
    for (int row = 0; row < rows; row++) {
        float *xr = x + (int64_t)row * C;
        double s = 0, q = 0;
        for (int i = 0; i < C; i++) {
            if (r)
                xr[i] += r[(int64_t)row * C + i];
            s += xr[i];
        }
        double mean = s / C;
        for (int i = 0; i < C; i++)
            q += (xr[i] - mean) * (xr[i] - mean);
        double rstd = 1.0 / sqrt(q / C + eps);
        for (int i = 0; i < C; i++)
            y[(int64_t)row * C + i] = (float)((xr[i] - mean) * rstd * g[i] + b[i]);
    }
}

static void launch(int v, float *y, float *x, const float *r, const float *g, const float *b,
                   int rows, int C)
{
    if (v == 1)
        layernorm_kernel1<<<rows, 256>>>(y, x, r, g, b, rows, C, 1e-6f);
    else
        layernorm_kernel2<<<(rows + LN_WARPS - 1) / LN_WARPS, LN_WARPS * 32>>>(y, x, r, g, b,
                                                                               rows, C, 1e-6f);
}

int main(void)
{
    const struct {
        const char *name;
        int rows, C;
    } shapes[] = {{"base 2x196x768", 392, 768}, {"so400m 729x1152", 729, 1152}, {"odd 37x100", 37, 100}};
    for (int v = 1; v <= 2; v++) {
        for (auto &sh : shapes) {
            size_t n = (size_t)sh.rows * sh.C;
            float *x = lab_rand_host(n, 1, 2.0f), *r = lab_rand_host(n, 2, 1.0f);
            float *g = lab_rand_host(sh.C, 3, 1.0f), *b = lab_rand_host(sh.C, 4, 0.5f);
            float *dx = lab_to_device(x, n), *dr = lab_to_device(r, n);
            float *dg = lab_to_device(g, sh.C), *db = lab_to_device(b, sh.C), *dy;
            CK(cudaMalloc(&dy, n * 4));
            float *yref = (float *)malloc(n * 4);
            cpu_layernorm(yref, x, r, g, b, sh.rows, sh.C, 1e-6f);
            launch(v, dy, dx, dr, dg, db, sh.rows, sh.C);
            CK(cudaGetLastError());
            char what[96];
            snprintf(what, sizeof(what), "v%d layernorm+residual %s", v, sh.name);
            lab_check(what, dy, yref, n, 1e-6);
            snprintf(what, sizeof(what), "v%d   x += residual %s", v, sh.name);
            lab_check(what, dx, x, n, 1e-7);
            free(x), free(r), free(g), free(b), free(yref);
            cudaFree(dx), cudaFree(dr), cudaFree(dg), cudaFree(db), cudaFree(dy);
        }
        // timing at SigLIP-base batch 256 (random contents, no check)
        int rows = 256 * 196, C = 768;
        size_t n = (size_t)rows * C;
        float *dx, *dr, *dy, *dg, *db;
        CK(cudaMalloc(&dx, n * 4));
        CK(cudaMalloc(&dr, n * 4));
        CK(cudaMalloc(&dy, n * 4));
        CK(cudaMalloc(&dg, C * 4));
        CK(cudaMalloc(&db, C * 4));
        CK(cudaMemset(dx, 0, n * 4));
        CK(cudaMemset(dr, 0, n * 4));
        CK(cudaMemset(dg, 0, C * 4));
        CK(cudaMemset(db, 0, C * 4));
        double us = lab_time_us([&] { launch(v, dy, dx, dr, dg, db, rows, C); }, 20);
        printf("v%d timing base batch 256 (50176x768): %.1f us, %.0f GB/s\n", v, us,
               4.0 * n * 4 / (us * 1e-6) / 1e9);
        cudaFree(dx), cudaFree(dr), cudaFree(dy), cudaFree(dg), cudaFree(db);
    }
    printf("%s\n", lab_failures ? "FAILED" : "all versions match the CPU reference");
    return lab_failures ? 1 : 0;
}
