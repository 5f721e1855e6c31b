// Softmax over the last dimension on the GPU; the semantics of kernels/softmax.h and its CPU
// reference, with fp32 arithmetic.
//
// Forward: m = max(row), e = exp(x - m) (as exp2f((x - m) * log2 e)), y = e / sum(e).
// Backward: dx = y * (dy - sum(dy * y)), written with = (an activation gradient).
// A row is held in registers: each thread of the row's group owns ITEMS vectors of VEC columns
// (16-byte loads when cols % VEC == 0 and every pointer is 16-byte aligned, else VEC = 1), so
// the inputs are read once and the output written once. Groups, chosen by cols (held_row in
// kernels/cuda_common.cuh, shared with layer norm):
//   cols <= 512           a warp per row, 4 rows per 128-thread block, shuffle reductions
//   512 < cols <= 8192    a block of 64..512 threads per row (16 values per thread)
//   cols > 8192           a 256-thread block per row looping over global memory
//                         (forward: max, sum, write; backward: dot, write)
// Grids stride over rows. Each row is reduced in a fixed order: deterministic.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "base/cuda_check.h"
#include "base/error.h"
#include "kernels/cuda_common.cuh"
#include "kernels/softmax.h"

namespace attn::kernels {
namespace {

using namespace cuda_common;
using namespace cuda_common::held_row;

// Sum (kMax false) or maximum over the row group, the same value in every thread. Block
// groups use red[0 .. warps) and must be called by every thread of the block.
template <bool kWarpRow, bool kMax>
__device__ __forceinline__ float group_reduce(float v, float* red) {
  v = kMax ? warp_max(v) : warp_sum(v);
  if constexpr (!kWarpRow) {
    const int warps = blockDim.x >> 5;
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    v = red[0];
    for (int w = 1; w < warps; ++w) v = kMax ? fmaxf(v, red[w]) : v + red[w];
    __syncthreads();  // red is reused by the next call
  }
  return v;
}

// ---- kernels ------------------------------------------------------------------------------

// Thread `rank` of the group owns columns (k * size + rank) * VEC + i.
template <class T, int VEC, int ITEMS, bool kWarpRow>
__global__ void __launch_bounds__(512)
    softmax_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int cols) {
  __shared__ float red[32];
  const RowGroup grp = row_group<kWarpRow>();
  for (int64_t row = grp.first; row < rows; row += grp.stride) {
    const int64_t base = row * cols;
    float v[ITEMS][VEC];
    float m = -INFINITY;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int c = (k * grp.size + grp.rank) * VEC;
      if (c < cols) {
        load_vec<T, VEC>(x + base + c, v[k]);
#pragma unroll
        for (int i = 0; i < VEC; ++i) m = fmaxf(m, v[k][i]);
      }
    }
    m = group_reduce<kWarpRow, true>(m, red);
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int c = (k * grp.size + grp.rank) * VEC;
      if (c < cols) {
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          v[k][i] = exp2f((v[k][i] - m) * kLog2e);
          sum += v[k][i];
        }
      }
    }
    const float inv = 1.f / group_reduce<kWarpRow, false>(sum, red);
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int c = (k * grp.size + grp.rank) * VEC;
      if (c < cols) {
        float out[VEC];
#pragma unroll
        for (int i = 0; i < VEC; ++i) out[i] = v[k][i] * inv;
        store_vec<T, VEC>(y + base + c, out);
      }
    }
  }
}

template <class T, int VEC, int ITEMS, bool kWarpRow>
__global__ void __launch_bounds__(512)
    softmax_backward_kernel(const T* __restrict__ y, const T* __restrict__ dy, T* __restrict__ dx,
                            int64_t rows, int cols) {
  __shared__ float red[32];
  const RowGroup grp = row_group<kWarpRow>();
  for (int64_t row = grp.first; row < rows; row += grp.stride) {
    const int64_t base = row * cols;
    float yv[ITEMS][VEC], dv[ITEMS][VEC];
    float dot = 0.f;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int c = (k * grp.size + grp.rank) * VEC;
      if (c < cols) {
        load_vec<T, VEC>(y + base + c, yv[k]);
        load_vec<T, VEC>(dy + base + c, dv[k]);
#pragma unroll
        for (int i = 0; i < VEC; ++i) dot += yv[k][i] * dv[k][i];
      }
    }
    dot = group_reduce<kWarpRow, false>(dot, red);
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int c = (k * grp.size + grp.rank) * VEC;
      if (c < cols) {
        float out[VEC];
#pragma unroll
        for (int i = 0; i < VEC; ++i) out[i] = yv[k][i] * (dv[k][i] - dot);
        store_vec<T, VEC>(dx + base + c, out);
      }
    }
  }
}

// cols > kBlockMaxCols: one block per row, rows re-read from global memory (L2) per pass.
template <class T>
__global__ void __launch_bounds__(kLoopThreads)
    softmax_forward_loop_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows,
                                int cols) {
  __shared__ float red[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * cols;
    T* yr = y + row * cols;
    float m = -INFINITY;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, to_f(xr[j]));
    m = group_reduce<false, true>(m, red);
    float sum = 0.f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) sum += exp2f((to_f(xr[j]) - m) * kLog2e);
    const float inv = 1.f / group_reduce<false, false>(sum, red);
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
      yr[j] = from_f<T>(exp2f((to_f(xr[j]) - m) * kLog2e) * inv);
  }
}

template <class T>
__global__ void __launch_bounds__(kLoopThreads)
    softmax_backward_loop_kernel(const T* __restrict__ y, const T* __restrict__ dy,
                                 T* __restrict__ dx, int64_t rows, int cols) {
  __shared__ float red[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* yr = y + row * cols;
    const T* dyr = dy + row * cols;
    T* dxr = dx + row * cols;
    float dot = 0.f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) dot += to_f(yr[j]) * to_f(dyr[j]);
    dot = group_reduce<false, false>(dot, red);
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
      dxr[j] = from_f<T>(to_f(yr[j]) * (to_f(dyr[j]) - dot));
  }
}

// ---- launch helpers -----------------------------------------------------------------------

void check_sizes(const char* op, int64_t rows, int64_t cols) {
  ATTN_CHECK(rows >= 0 && cols >= 0 && cols <= INT32_MAX, op, ": unsupported size [", rows, ", ",
             cols, "]");
}

}  // namespace

template <class T>
void softmax_forward_cuda(const T* x, T* y, int64_t rows, int64_t cols, cudaStream_t stream) {
  check_sizes("softmax_forward_cuda", rows, cols);
  if (rows == 0 || cols == 0) return;
  const int icols = static_cast<int>(cols);
  held_row::launch<T>(
      rows, cols, aligned16(x) && aligned16(y),
      [&](auto v, auto items, auto warp_row, int grid, int threads) {
        constexpr int V = decltype(v)::value, I = decltype(items)::value;
        constexpr bool W = decltype(warp_row)::value;
        softmax_forward_kernel<T, V, I, W><<<grid, threads, 0, stream>>>(x, y, rows, icols);
        ATTN_CUDA_LAUNCH_CHECK();
      },
      [&](int grid) {
        softmax_forward_loop_kernel<T><<<grid, kLoopThreads, 0, stream>>>(x, y, rows, icols);
        ATTN_CUDA_LAUNCH_CHECK();
      });
}

template <class T>
void softmax_backward_cuda(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols,
                           cudaStream_t stream) {
  check_sizes("softmax_backward_cuda", rows, cols);
  if (rows == 0 || cols == 0) return;
  const int icols = static_cast<int>(cols);
  held_row::launch<T>(
      rows, cols, aligned16(y) && aligned16(dy) && aligned16(dx),
      [&](auto v, auto items, auto warp_row, int grid, int threads) {
        constexpr int V = decltype(v)::value, I = decltype(items)::value;
        constexpr bool W = decltype(warp_row)::value;
        softmax_backward_kernel<T, V, I, W><<<grid, threads, 0, stream>>>(y, dy, dx, rows, icols);
        ATTN_CUDA_LAUNCH_CHECK();
      },
      [&](int grid) {
        softmax_backward_loop_kernel<T><<<grid, kLoopThreads, 0, stream>>>(y, dy, dx, rows, icols);
        ATTN_CUDA_LAUNCH_CHECK();
      });
}

#define ATTN_SOFTMAX_CUDA_INSTANTIATE(T)                                               \
  template void softmax_forward_cuda<T>(const T*, T*, int64_t, int64_t, cudaStream_t); \
  template void softmax_backward_cuda<T>(const T*, const T*, T*, int64_t, int64_t, cudaStream_t);
ATTN_FOR_EACH_FLOAT_TYPE(ATTN_SOFTMAX_CUDA_INSTANTIATE)
#undef ATTN_SOFTMAX_CUDA_INSTANTIATE

}  // namespace attn::kernels
