// Layer norm on the GPU, fused with the residual add; the semantics of kernels/layer_norm.h
// and its CPU reference, with all arithmetic in fp32 and the statistics stored as float.
//
// Forward. s = x + residual (rounded to T, as a separate add would give), mean, then the
// biased variance as the mean of squared deviations (two passes, like the reference, so a
// large mean does not cancel), y = (s - mean) * rstd * gamma + beta. A row's values stay in
// registers: each thread of the row's group owns ITEMS vectors of VEC columns (16-byte loads
// when cols % VEC == 0 and every pointer is 16-byte aligned, else VEC = 1), so x, residual
// and y are touched once. Groups, chosen by cols only (held_row, kernels/cuda_common.cuh):
//   cols <= 512           a warp per row, 4 rows per 128-thread block, shuffle reductions
//   512 < cols <= 8192    a block of 64..512 threads per row (at most 16 values per thread),
//                         shuffles then shared memory
//   cols > 8192           a 256-thread block per row looping over global memory (3 passes)
// Grids stride over rows; rows are processed independently, so the forward is deterministic.
//
// Backward. Same groups. Per row: xhat = (s - mean) * rstd, g = dy * gamma, the row sums of
// g and g * xhat, then dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), written with =
// (an activation gradient). Every thread also keeps running sums of dy * xhat and dy for the
// columns it owns over the rows its group visits. A block's warps are then combined in warp
// order in shared memory and the block writes one row of an fp32 scratch
// partial[block][2][cols]; layer_norm_param_grad_kernel sums those rows in a fixed order and
// adds the result to dgamma and dbeta (+=, parameter gradients). The number of blocks depends
// only on rows and cols and no atomics are used, so the result is the same on every run.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "base/cuda_check.h"
#include "base/error.h"
#include "kernels/cuda_common.cuh"
#include "kernels/layer_norm.h"

namespace attn::kernels {
namespace {

using namespace cuda_common;
using namespace cuda_common::held_row;  // the groups (kWarpMaxCols, kBlockMaxCols, ...)

// Backward grid caps (= rows of the partial-sum scratch): about one wave of resident blocks
// on current GPUs; the warp-per-row blocks are small, so more of them.
constexpr int kMaxPartialBlocksWarp = 1024;
constexpr int kMaxPartialBlocksBlock = 512;
constexpr int kParamTileCols = 32;    // layer_norm_param_grad_kernel: 32 columns x
constexpr int kParamTileSlices = 16;  // 16 slices of the partial rows per block

// v rounded to T and back (the value a T tensor would hold).
template <class T>
__device__ __forceinline__ float round_to(float v) {
  return to_f(from_f<T>(v));
}

// ---- row group reductions -----------------------------------------------------------------

// Sum of a and b over the row group, the same in every thread of the group. Block groups
// use red[0 .. 2 * warps) and must be called by every thread of the block. (Not softmax's
// group_reduce: that starts from red[0], this from 0.f, which differ on signed zeros.)
template <bool kWarpRow>
__device__ __forceinline__ void group_sum2(float& a, float& b, float* red) {
  a = warp_sum(a);
  b = warp_sum(b);
  if constexpr (!kWarpRow) {
    const int warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if ((threadIdx.x & 31) == 0) {
      red[2 * warp] = a;
      red[2 * warp + 1] = b;
    }
    __syncthreads();
    a = 0.f;
    b = 0.f;
    for (int w = 0; w < warps; ++w) {  // same order in every thread
      a += red[2 * w];
      b += red[2 * w + 1];
    }
    __syncthreads();  // red is reused by the next call
  }
}

template <bool kWarpRow>
__device__ __forceinline__ float group_sum(float a, float* red) {
  float unused = 0.f;
  group_sum2<kWarpRow>(a, unused, red);
  return a;
}

// s[j] = x[j] (+ residual[j], rounded to T).
template <class T>
__device__ __forceinline__ float sum_at(const T* __restrict__ x, const T* __restrict__ residual,
                                        int64_t j) {
  return residual ? round_to<T>(to_f(x[j]) + to_f(residual[j])) : to_f(x[j]);
}

// ---- forward ------------------------------------------------------------------------------

// Row held in registers: thread `rank` of the group owns columns (k * size + rank) * VEC + i.
template <class T, int VEC, int ITEMS, bool kWarpRow>
__global__ void __launch_bounds__(512)
    layer_norm_forward_kernel(const T* __restrict__ x, const T* __restrict__ residual,
                              const T* __restrict__ gamma, const T* __restrict__ beta, float eps,
                              int64_t rows, int cols, T* __restrict__ y,
                              float* __restrict__ mean_out, float* __restrict__ rstd_out) {
  __shared__ float red[64];
  const RowGroup grp = row_group<kWarpRow>();
  for (int64_t row = grp.first; row < rows; row += grp.stride) {
    const int64_t base = row * cols;
    float v[ITEMS][VEC];
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int c = (k * grp.size + grp.rank) * VEC;
      if (c < cols) {
        load_vec<T, VEC>(x + base + c, v[k]);
        if (residual) {
          float r[VEC];
          load_vec<T, VEC>(residual + base + c, r);
#pragma unroll
          for (int i = 0; i < VEC; ++i) v[k][i] = round_to<T>(v[k][i] + r[i]);
        }
#pragma unroll
        for (int i = 0; i < VEC; ++i) sum += v[k][i];
      }
    }
    const float mu = group_sum<kWarpRow>(sum, red) / static_cast<float>(cols);
    float sq = 0.f;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int c = (k * grp.size + grp.rank) * VEC;
      if (c < cols) {
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const float d = v[k][i] - mu;
          sq += d * d;
        }
      }
    }
    const float var = group_sum<kWarpRow>(sq, red) / static_cast<float>(cols);
    const float rs = 1.f / sqrtf(var + eps);
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int c = (k * grp.size + grp.rank) * VEC;
      if (c < cols) {
        float g[VEC], b[VEC], out[VEC];
        load_vec<T, VEC>(gamma + c, g);
        load_vec<T, VEC>(beta + c, b);
#pragma unroll
        for (int i = 0; i < VEC; ++i) out[i] = (v[k][i] - mu) * rs * g[i] + b[i];
        store_vec<T, VEC>(y + base + c, out);
      }
    }
    if (grp.rank == 0) {
      mean_out[row] = mu;
      rstd_out[row] = rs;
    }
  }
}

// cols > kBlockMaxCols: one block per row, three passes over the row in global memory.
template <class T>
__global__ void __launch_bounds__(kLoopThreads)
    layer_norm_forward_loop_kernel(const T* __restrict__ x, const T* __restrict__ residual,
                                   const T* __restrict__ gamma, const T* __restrict__ beta,
                                   float eps, int64_t rows, int cols, T* __restrict__ y,
                                   float* __restrict__ mean_out, float* __restrict__ rstd_out) {
  __shared__ float red[64];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * cols;
    const T* rr = residual ? residual + row * cols : nullptr;
    T* yr = y + row * cols;
    float sum = 0.f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) sum += sum_at(xr, rr, j);
    const float mu = group_sum<false>(sum, red) / static_cast<float>(cols);
    float sq = 0.f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
      const float d = sum_at(xr, rr, j) - mu;
      sq += d * d;
    }
    const float rs = 1.f / sqrtf(group_sum<false>(sq, red) / static_cast<float>(cols) + eps);
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
      yr[j] = from_f<T>((sum_at(xr, rr, j) - mu) * rs * to_f(gamma[j]) + to_f(beta[j]));
    if (threadIdx.x == 0) {
      mean_out[row] = mu;
      rstd_out[row] = rs;
    }
  }
}

// ---- backward -----------------------------------------------------------------------------

// partial: [gridDim.x][2][cols] (dgamma then dbeta), every element written. Warp-per-row
// blocks need 2 * cols floats of dynamic shared memory to combine their warps.
template <class T, int VEC, int ITEMS, bool kWarpRow>
__global__ void __launch_bounds__(512)
    layer_norm_backward_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                               const T* __restrict__ residual, const T* __restrict__ gamma,
                               const float* __restrict__ mean, const float* __restrict__ rstd,
                               int64_t rows, int cols, T* __restrict__ dx,
                               float* __restrict__ partial) {
  __shared__ float red[64];
  extern __shared__ float combine[];
  const RowGroup grp = row_group<kWarpRow>();
  float dg[ITEMS][VEC], db[ITEMS][VEC];
#pragma unroll
  for (int k = 0; k < ITEMS; ++k) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      dg[k][i] = 0.f;
      db[k][i] = 0.f;
    }
  }
  for (int64_t row = grp.first; row < rows; row += grp.stride) {
    const int64_t base = row * cols;
    const float mu = mean[row], rs = rstd[row];
    float xh[ITEMS][VEC], d[ITEMS][VEC];
    float sum_g = 0.f, sum_gx = 0.f;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int c = (k * grp.size + grp.rank) * VEC;
      if (c < cols) {
        float g[VEC];
        load_vec<T, VEC>(x + base + c, xh[k]);
        if (residual) {
          float r[VEC];
          load_vec<T, VEC>(residual + base + c, r);
#pragma unroll
          for (int i = 0; i < VEC; ++i) xh[k][i] = round_to<T>(xh[k][i] + r[i]);
        }
        load_vec<T, VEC>(dy + base + c, d[k]);
        load_vec<T, VEC>(gamma + c, g);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          xh[k][i] = (xh[k][i] - mu) * rs;
          const float gg = d[k][i] * g[i];
          sum_g += gg;
          sum_gx += gg * xh[k][i];
          dg[k][i] += d[k][i] * xh[k][i];
          db[k][i] += d[k][i];
        }
      }
    }
    group_sum2<kWarpRow>(sum_g, sum_gx, red);
    const float mean_g = sum_g / static_cast<float>(cols);
    const float mean_gx = sum_gx / static_cast<float>(cols);
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int c = (k * grp.size + grp.rank) * VEC;
      if (c < cols) {
        float g[VEC], out[VEC];
        load_vec<T, VEC>(gamma + c, g);
#pragma unroll
        for (int i = 0; i < VEC; ++i) out[i] = rs * (d[k][i] * g[i] - mean_g - xh[k][i] * mean_gx);
        store_vec<T, VEC>(dx + base + c, out);
      }
    }
  }

  float* prow = partial + static_cast<int64_t>(blockIdx.x) * 2 * cols;
  if constexpr (!kWarpRow) {
    // One group per block: the thread's columns are its own.
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int c = (k * grp.size + grp.rank) * VEC;
      if (c < cols) {
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          prow[c + i] = dg[k][i];
          prow[cols + c + i] = db[k][i];
        }
      }
    }
  } else {
    // Each warp covers every column once; add the warps in warp order.
    const int warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (int w = 0; w < warps; ++w) {
      if (warp == w) {
#pragma unroll
        for (int k = 0; k < ITEMS; ++k) {
          const int c = (k * grp.size + grp.rank) * VEC;
          if (c < cols) {
#pragma unroll
            for (int i = 0; i < VEC; ++i) {
              combine[c + i] = w == 0 ? dg[k][i] : combine[c + i] + dg[k][i];
              combine[cols + c + i] = w == 0 ? db[k][i] : combine[cols + c + i] + db[k][i];
            }
          }
        }
      }
      __syncthreads();
    }
    for (int j = threadIdx.x; j < 2 * cols; j += blockDim.x) prow[j] = combine[j];
  }
}

// cols > kBlockMaxCols: one block per row, two passes over global memory. Thread t owns the
// columns j = t (mod blockDim) of the block's partial row, so its += need no synchronisation.
template <class T>
__global__ void __launch_bounds__(kLoopThreads)
    layer_norm_backward_loop_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                    const T* __restrict__ residual, const T* __restrict__ gamma,
                                    const float* __restrict__ mean, const float* __restrict__ rstd,
                                    int64_t rows, int cols, T* __restrict__ dx,
                                    float* __restrict__ partial) {
  __shared__ float red[64];
  float* pg = partial + static_cast<int64_t>(blockIdx.x) * 2 * cols;
  float* pb = pg + cols;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) {
    pg[j] = 0.f;
    pb[j] = 0.f;
  }
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * cols;
    const T* rr = residual ? residual + row * cols : nullptr;
    const T* dyr = dy + row * cols;
    T* dxr = dx + row * cols;
    const float mu = mean[row], rs = rstd[row];
    float sum_g = 0.f, sum_gx = 0.f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
      const float xh = (sum_at(xr, rr, j) - mu) * rs;
      const float gg = to_f(dyr[j]) * to_f(gamma[j]);
      sum_g += gg;
      sum_gx += gg * xh;
    }
    group_sum2<false>(sum_g, sum_gx, red);
    const float mean_g = sum_g / static_cast<float>(cols);
    const float mean_gx = sum_gx / static_cast<float>(cols);
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
      const float xh = (sum_at(xr, rr, j) - mu) * rs;
      const float d = to_f(dyr[j]);
      dxr[j] = from_f<T>(rs * (d * to_f(gamma[j]) - mean_g - xh * mean_gx));
      pg[j] += d * xh;
      pb[j] += d;
    }
  }
}

// dgamma[j] += sum_p partial[p][0][j], dbeta[j] += sum_p partial[p][1][j]. Block: 32 columns
// x 16 slices; slice q sums partial rows q, q + 16, ... and the slices are added in order.
template <class T>
__global__ void __launch_bounds__(kParamTileCols* kParamTileSlices)
    layer_norm_param_grad_kernel(const float* __restrict__ partial, int nparts, int cols,
                                 T* __restrict__ dgamma, T* __restrict__ dbeta) {
  __shared__ float tile[kParamTileSlices][kParamTileCols + 1];
  const int width = 2 * cols;
  const int j = blockIdx.x * kParamTileCols + threadIdx.x;
  float acc = 0.f;
  if (j < width) {
    for (int p = threadIdx.y; p < nparts; p += kParamTileSlices)
      acc += partial[static_cast<int64_t>(p) * width + j];
  }
  tile[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < width) {
    float s = 0.f;
#pragma unroll
    for (int q = 0; q < kParamTileSlices; ++q) s += tile[q][threadIdx.x];
    T* out = j < cols ? dgamma + j : dbeta + (j - cols);
    *out = from_f<T>(to_f(*out) + s);
  }
}

// ---- launch helpers -----------------------------------------------------------------------

// The backward's grid: one row of partial sums (dgamma, dbeta) per block, so the grid is
// capped; blocks = rows of the partial-sum scratch.
constexpr held_row::GridCaps kBackwardCaps{kMaxPartialBlocksWarp, kMaxPartialBlocksBlock};

void check_sizes(const char* op, int64_t rows, int64_t cols) {
  // 2 * cols indexes the partial rows as int.
  ATTN_CHECK(rows >= 0 && cols > 0 && cols <= (int64_t{1} << 30), op, ": unsupported size [", rows,
             ", ", cols, "]");
}

}  // namespace

template <class T>
void layer_norm_forward_cuda(const T* x, const T* residual, const T* gamma, const T* beta,
                             double eps, int64_t rows, int64_t cols, T* y, float* mean, float* rstd,
                             cudaStream_t stream) {
  check_sizes("layer_norm_forward_cuda", rows, cols);
  if (rows == 0) return;
  const int icols = static_cast<int>(cols);
  const float feps = static_cast<float>(eps);
  // aligned16(nullptr) holds, so a missing residual does not stop vectorisation.
  const bool vec =
      aligned16(x) && aligned16(residual) && aligned16(gamma) && aligned16(beta) && aligned16(y);
  held_row::launch<T>(
      rows, cols, vec,
      [&](auto v, auto items, auto warp_row, int grid, int threads) {
        constexpr int V = decltype(v)::value, I = decltype(items)::value;
        constexpr bool W = decltype(warp_row)::value;
        layer_norm_forward_kernel<T, V, I, W><<<grid, threads, 0, stream>>>(
            x, residual, gamma, beta, feps, rows, icols, y, mean, rstd);
        ATTN_CUDA_LAUNCH_CHECK();
      },
      [&](int grid) {
        layer_norm_forward_loop_kernel<T><<<grid, kLoopThreads, 0, stream>>>(
            x, residual, gamma, beta, feps, rows, icols, y, mean, rstd);
        ATTN_CUDA_LAUNCH_CHECK();
      });
}

int64_t layer_norm_backward_cuda_workspace(int64_t rows, int64_t cols) {
  check_sizes("layer_norm_backward_cuda", rows, cols);
  return rows == 0 ? 0 : static_cast<int64_t>(held_row::grid_for(rows, cols, kBackwardCaps)) * 2 * cols;
}

template <class T>
void layer_norm_backward_cuda(const T* dy, const T* x, const T* residual, const T* gamma,
                              const float* mean, const float* rstd, int64_t rows, int64_t cols,
                              T* dx, T* dgamma, T* dbeta, float* workspace, cudaStream_t stream) {
  check_sizes("layer_norm_backward_cuda", rows, cols);
  if (rows == 0) return;  // nothing to write; dgamma/dbeta += 0
  const int icols = static_cast<int>(cols);
  const int blocks = held_row::grid_for(rows, cols, kBackwardCaps);
  // aligned16(nullptr) holds, so a missing residual does not stop vectorisation.
  const bool vec = aligned16(dy) && aligned16(x) && aligned16(residual) && aligned16(gamma) &&
                   aligned16(dx);
  held_row::launch<T>(
      rows, cols, vec,
      [&](auto v, auto items, auto warp_row, int grid, int threads) {
        constexpr int V = decltype(v)::value, I = decltype(items)::value;
        constexpr bool W = decltype(warp_row)::value;
        const size_t smem = W ? 2 * static_cast<size_t>(cols) * sizeof(float) : 0;
        layer_norm_backward_kernel<T, V, I, W><<<grid, threads, smem, stream>>>(
            dy, x, residual, gamma, mean, rstd, rows, icols, dx, workspace);
        ATTN_CUDA_LAUNCH_CHECK();
      },
      [&](int grid) {
        layer_norm_backward_loop_kernel<T><<<grid, kLoopThreads, 0, stream>>>(
            dy, x, residual, gamma, mean, rstd, rows, icols, dx, workspace);
        ATTN_CUDA_LAUNCH_CHECK();
      },
      kBackwardCaps);
  const int width = 2 * icols;
  const dim3 block(kParamTileCols, kParamTileSlices);
  const int grid = static_cast<int>(ceil_div(width, kParamTileCols));
  layer_norm_param_grad_kernel<T>
      <<<grid, block, 0, stream>>>(workspace, blocks, icols, dgamma, dbeta);
  ATTN_CUDA_LAUNCH_CHECK();
}

#define ATTN_LAYER_NORM_CUDA_INSTANTIATE(T)                                                       \
  template void layer_norm_forward_cuda<T>(const T*, const T*, const T*, const T*, double,        \
                                           int64_t, int64_t, T*, float*, float*, cudaStream_t);   \
  template void layer_norm_backward_cuda<T>(const T*, const T*, const T*, const T*, const float*, \
                                            const float*, int64_t, int64_t, T*, T*, T*, float*,   \
                                            cudaStream_t);
ATTN_FOR_EACH_FLOAT_TYPE(ATTN_LAYER_NORM_CUDA_INSTANTIATE)
#undef ATTN_LAYER_NORM_CUDA_INSTANTIATE

}  // namespace attn::kernels
