// Softmax over the last dimension on the GPU; the semantics of kernels/softmax.h and its CPU
// reference, with fp32 arithmetic.
//
// Forward: m = max(row), e = exp(x - m) (as exp2f((x - m) * log2 e)), y = e / sum(e).
// Backward: dx = y * (dy - sum(dy * y)), written with = (an activation gradient).
// A row is held in registers: each thread of the row's group owns ITEMS vectors of VEC columns
// (16-byte loads when cols % VEC == 0 and every pointer is 16-byte aligned, else VEC = 1), so
// the inputs are read once and the output written once. Groups, chosen by cols:
//   cols <= 512           a warp per row, 4 rows per 128-thread block, shuffle reductions
//   512 < cols <= 8192    a block of 64..512 threads per row (16 values per thread)
//   cols > 8192           a 256-thread block per row looping over global memory
//                         (forward: max, sum, write; backward: dot, write)
// Grids stride over rows. Each row is reduced in a fixed order: deterministic.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/cuda_check.h"
#include "core/error.h"
#include "kernels/softmax.h"

namespace attn::kernels {
namespace {

constexpr int kWarpMaxCols = 512;
constexpr int kBlockMaxCols = 8192;
constexpr int kValuesPerThread = 16;
constexpr int kWarpRowsPerBlock = 4;
constexpr int kLoopThreads = 256;
constexpr int64_t kMaxGrid = 1 << 20;
constexpr float kLog2e = 1.4426950408889634f;

// ---- element access -----------------------------------------------------------------------

template <class T>
__device__ __forceinline__ float to_f(T v) {
  if constexpr (std::is_same_v<T, bf16>) {
    return __bfloat162float(__ushort_as_bfloat16(v.bits));
  } else if constexpr (std::is_same_v<T, f16>) {
    return __half2float(__ushort_as_half(v.bits));
  } else {
    return v;
  }
}

template <class T>
__device__ __forceinline__ T from_f(float v) {
  if constexpr (std::is_same_v<T, bf16>) {
    return bf16{__bfloat16_as_ushort(__float2bfloat16_rn(v))};
  } else if constexpr (std::is_same_v<T, f16>) {
    return f16{__half_as_ushort(__float2half_rn(v))};
  } else {
    return v;
  }
}

template <class T, int N>
__device__ __forceinline__ void load_vec(const T* __restrict__ p, float (&out)[N]) {
  if constexpr (N == 1) {
    out[0] = to_f(*p);
  } else {
    static_assert(N * sizeof(T) == 16, "vector loads are 16 bytes");
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    T e[N];
    memcpy(e, &raw, 16);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = to_f(e[i]);
  }
}

template <class T, int N>
__device__ __forceinline__ void store_vec(T* __restrict__ p, const float (&in)[N]) {
  if constexpr (N == 1) {
    *p = from_f<T>(in[0]);
  } else {
    static_assert(N * sizeof(T) == 16, "vector stores are 16 bytes");
    T e[N];
#pragma unroll
    for (int i = 0; i < N; ++i) e[i] = from_f<T>(in[i]);
    uint4 raw;
    memcpy(&raw, e, 16);
    *reinterpret_cast<uint4*>(p) = raw;
  }
}

// ---- row groups and their reductions ------------------------------------------------------

struct RowGroup {
  int rank, size;
  int64_t first, stride;
};

template <bool kWarpRow>
__device__ __forceinline__ RowGroup row_group() {
  if constexpr (kWarpRow) {
    const int groups = static_cast<int>(blockDim.x) / 32;
    return {static_cast<int>(threadIdx.x & 31), 32,
            static_cast<int64_t>(blockIdx.x) * groups + threadIdx.x / 32,
            static_cast<int64_t>(gridDim.x) * groups};
  } else {
    return {static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x),
            static_cast<int64_t>(blockIdx.x), static_cast<int64_t>(gridDim.x)};
  }
}

// Butterfly reductions: every lane ends with the same value (the operations are commutative).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

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

template <int N>
using Int = std::integral_constant<int, N>;
template <bool B>
using Bool = std::integral_constant<bool, B>;

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

int block_threads(int64_t cols) {
  int t = 64;
  while (t < 512 && static_cast<int64_t>(t) * kValuesPerThread < cols) t *= 2;
  return t;
}

// Calls f(Int<VEC>, Int<ITEMS>, Bool<kWarpRow>) for a held-row kernel covering cols
// (cols <= kBlockMaxCols); see the file comment.
template <int VEC, class F>
void with_held_row_geometry(int64_t cols, F&& f) {
  constexpr int kMaxItems = kValuesPerThread / VEC;
  if (cols > kWarpMaxCols) {
    f(Int<VEC>{}, Int<kMaxItems>{}, Bool<false>{});
    return;
  }
  const int64_t items = ceil_div(cols, 32 * VEC);  // <= kMaxItems since cols <= 32 * 16
  if (items <= 1) {
    f(Int<VEC>{}, Int<1>{}, Bool<true>{});
    return;
  }
  if constexpr (kMaxItems >= 2) {
    if (items <= 2) {
      f(Int<VEC>{}, Int<2>{}, Bool<true>{});
      return;
    }
  }
  if constexpr (kMaxItems >= 4) {
    if (items <= 4) {
      f(Int<VEC>{}, Int<4>{}, Bool<true>{});
      return;
    }
  }
  if constexpr (kMaxItems >= 8) {
    if (items <= 8) {
      f(Int<VEC>{}, Int<8>{}, Bool<true>{});
      return;
    }
  }
  if constexpr (kMaxItems >= 16) {
    if (items <= 16) {
      f(Int<VEC>{}, Int<16>{}, Bool<true>{});
      return;
    }
  }
  ATTN_FAIL("no held-row geometry for ", cols, " columns");  // unreachable: cols <= 512
}

// Launches the held-row kernel for cols (vectorised when `vec` and cols allow) or the loop kernel.
template <class T, class Held, class Loop>
void launch_rows(int64_t rows, int64_t cols, bool vec, Held&& held, Loop&& loop) {
  if (cols > kBlockMaxCols) {
    loop(static_cast<int>(std::min<int64_t>(rows, kMaxGrid)));
    return;
  }
  auto launch = [&](auto v, auto items, auto warp_row) {
    constexpr bool W = decltype(warp_row)::value;
    const int threads = W ? 32 * kWarpRowsPerBlock : block_threads(cols);
    const int64_t rows_per_block = W ? kWarpRowsPerBlock : 1;
    const int grid = static_cast<int>(std::min<int64_t>(ceil_div(rows, rows_per_block), kMaxGrid));
    held(v, items, warp_row, grid, threads);
  };
  constexpr int kVec = 16 / sizeof(T);
  if (vec && cols % kVec == 0) {
    with_held_row_geometry<kVec>(cols, launch);
  } else {
    with_held_row_geometry<1>(cols, launch);
  }
}

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
  launch_rows<T>(
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
  launch_rows<T>(
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

template void softmax_forward_cuda<float>(const float*, float*, int64_t, int64_t, cudaStream_t);
template void softmax_forward_cuda<bf16>(const bf16*, bf16*, int64_t, int64_t, cudaStream_t);
template void softmax_forward_cuda<f16>(const f16*, f16*, int64_t, int64_t, cudaStream_t);
template void softmax_backward_cuda<float>(const float*, const float*, float*, int64_t, int64_t,
                                           cudaStream_t);
template void softmax_backward_cuda<bf16>(const bf16*, const bf16*, bf16*, int64_t, int64_t,
                                          cudaStream_t);
template void softmax_backward_cuda<f16>(const f16*, const f16*, f16*, int64_t, int64_t,
                                         cudaStream_t);

}  // namespace attn::kernels
