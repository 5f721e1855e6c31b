// Helpers shared by the CUDA kernels (kernels/*_cuda.cu): storage-type mapping, element
// conversion to and from fp32, 16-byte vector access, warp and block reductions, row groups and
// the held-row geometry of the row-wise kernels, and launch-geometry arithmetic. Include only
// from .cu files (it pulls in CUDA headers). Everything lives in attn::kernels::cuda_common; a
// .cu file brings it in with `using namespace cuda_common;` inside its anonymous namespace.
//
// Conversions round to nearest even (the hardware intrinsics), like kernels/types.h on the host.
// Reductions add in a fixed order, so results do not depend on timing.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "base/error.h"
#include "kernels/types.h"

namespace attn::kernels::cuda_common {

constexpr float kLog2e = 1.4426950408889634f;

template <int N>
using Int = std::integral_constant<int, N>;
template <bool B>
using Bool = std::integral_constant<bool, B>;

// ---- storage types ------------------------------------------------------------------------

// The CUDA type with T's bits: attn::bf16 -> __nv_bfloat16, attn::f16 -> __half, else T.
template <class T>
struct DeviceType {
  using type = T;
};
template <>
struct DeviceType<bf16> {
  using type = __nv_bfloat16;
};
template <>
struct DeviceType<f16> {
  using type = __half;
};

// ---- element access -----------------------------------------------------------------------

// fp32 value of a float, bf16 or f16 element (attn storage structs or CUDA types).
__device__ __forceinline__ float to_f(float v) {
  return v;
}
__device__ __forceinline__ float to_f(bf16 v) {
  return __bfloat162float(__ushort_as_bfloat16(v.bits));
}
__device__ __forceinline__ float to_f(f16 v) {
  return __half2float(__ushort_as_half(v.bits));
}
__device__ __forceinline__ float to_f(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
__device__ __forceinline__ float to_f(__half v) {
  return __half2float(v);
}

// v rounded to T (round to nearest even).
template <class T>
__device__ __forceinline__ T from_f(float v) {
  if constexpr (std::is_same_v<T, bf16>) {
    return bf16{__bfloat16_as_ushort(__float2bfloat16_rn(v))};
  } else if constexpr (std::is_same_v<T, f16>) {
    return f16{__half_as_ushort(__float2half_rn(v))};
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(v);
  } else {
    static_assert(std::is_same_v<T, float>, "from_f: T must be float, bf16 or f16");
    return v;
  }
}

// N consecutive elements as floats; N == 1 or N * sizeof(T) == 16 with p 16-byte aligned.
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

// N elements moved as one vector access (16 bytes by default); the pointer must be aligned to
// sizeof(Pack) (see aligned()).
template <class T, int N = 16 / sizeof(T)>
struct alignas(N * sizeof(T)) Pack {
  static constexpr int kN = N;
  T v[N];
};

// ---- reductions ---------------------------------------------------------------------------

// Butterfly reductions over a full warp: every lane ends with the same value (the operations
// are commutative).
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

// Tree sum over a full warp, complete in lane 0 only.
template <class V>
__device__ __forceinline__ V warp_sum_down(V v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// Sum over a block of kThreads threads, complete in thread 0 (0 elsewhere): warp tree sums,
// then the warps in order. Uses its own shared array, so call it at most once per kernel.
template <int kThreads, class V>
__device__ __forceinline__ V block_sum(V v) {
  __shared__ V warp_sums[kThreads / 32];
  v = warp_sum_down(v);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = v;
  __syncthreads();
  V total = V(0);
  if (threadIdx.x == 0) {
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  }
  return total;
}

// ---- row groups (row-wise kernels) --------------------------------------------------------

// The threads that share one row: a warp (kWarpRow) or the whole block.
struct RowGroup {
  int rank;        // this thread's index within the group
  int size;        // threads in the group
  int64_t first;   // first row of this group
  int64_t stride;  // rows between this group's consecutive rows
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

// ---- host: alignment and launch geometry --------------------------------------------------

// Whether p is a multiple of `bytes` (> 0); aligned16(nullptr) holds.
inline bool aligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}
inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Blocks of per_block work items each for a grid-stride kernel: at least 1, at most max_blocks
// (the loop covers the rest; max_blocks fits the int grid dimension).
inline int grid_blocks(int64_t work, int64_t per_block, int64_t max_blocks) {
  return static_cast<int>(std::clamp<int64_t>(ceil_div(work, per_block), 1, max_blocks));
}

// Launch shape for a 2-D grid-stride walk over [rows, units]: block (tx, ty) with tx = units
// rounded up to a power of two (at most `threads`) and ty = threads / tx rows, so a warp covers
// whole rows; grid.y covers the units (at most 1024), grid.x the rows, grid.x * grid.y at most
// max_blocks (but grid.x >= 1). rows, units >= 1.
struct RowsGrid {
  dim3 grid, block;
};
inline RowsGrid rows_units_grid(int64_t rows, int64_t units, int threads, int64_t max_blocks) {
  int tx = 1;
  while (tx < units && tx < threads) tx *= 2;
  const int ty = threads / tx;
  const int64_t gy = std::min<int64_t>(ceil_div(units, tx), 1024);
  const int64_t gx =
      std::clamp<int64_t>(ceil_div(rows, ty), 1, std::max<int64_t>(max_blocks / gy, 1));
  return {dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)),
          dim3(static_cast<unsigned>(tx), static_cast<unsigned>(ty))};
}

// Calls fn(U{}) with the widest copy unit U (uint4, uint2, uint32_t, uint16_t) whose size
// divides `align` (an OR of addresses and byte counts).
template <class Fn>
void with_copy_unit(uint64_t align, Fn&& fn) {
  if (align % 16 == 0) {
    fn(uint4{});
  } else if (align % 8 == 0) {
    fn(uint2{});
  } else if (align % 4 == 0) {
    fn(uint32_t{});
  } else {
    fn(uint16_t{});
  }
}

inline uint64_t addr(const void* p) {
  return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p));
}

// ---- held-row kernels (softmax, layer norm) -----------------------------------------------
//
// A row of cols values stays in registers: each thread of the row's group owns ITEMS vectors
// of VEC columns. Groups, chosen by cols only:
//   cols <= kWarpMaxCols                  a warp per row, kWarpRowsPerBlock rows per block
//   kWarpMaxCols < cols <= kBlockMaxCols  a block of 64..512 threads per row
//                                         (at most kValuesPerThread values per thread)
//   cols > kBlockMaxCols                  a kLoopThreads block per row looping over global
//                                         memory (a separate "loop" kernel)
namespace held_row {

constexpr int kWarpMaxCols = 512;      // a warp holds the row: 32 lanes x 16 values
constexpr int kBlockMaxCols = 8192;    // a block holds the row: 512 threads x 16 values
constexpr int kValuesPerThread = 16;   // register budget per thread in the held-row kernels
constexpr int kWarpRowsPerBlock = 4;   // warp-per-row kernels: 128-thread blocks
constexpr int kLoopThreads = 256;      // cols > kBlockMaxCols
constexpr int64_t kMaxGrid = 1 << 20;  // grid cap (grids stride over rows)

// Threads of a block-per-row group holding cols values at kValuesPerThread per thread.
inline int block_threads(int64_t cols) {
  int t = 64;
  while (t < 512 && static_cast<int64_t>(t) * kValuesPerThread < cols) t *= 2;
  return t;
}

namespace detail {
// f(Int<VEC>, Int<I>, Bool<true>) for the smallest power of two I >= items, I <= kMaxItems.
template <int VEC, int kMaxItems, int I, class F>
void with_warp_items(int64_t items, int64_t cols, F&& f) {
  if (items <= I) {
    f(Int<VEC>{}, Int<I>{}, Bool<true>{});
    return;
  }
  if constexpr (2 * I <= kMaxItems) {
    with_warp_items<VEC, kMaxItems, 2 * I>(items, cols, f);
  } else {
    ATTN_FAIL("no held-row geometry for ", cols, " columns");  // unreachable: cols <= 512
  }
}
}  // namespace detail

// Calls f(Int<VEC>, Int<ITEMS>, Bool<kWarpRow>) for a held-row kernel covering cols
// (cols <= kBlockMaxCols): a warp per row up to kWarpMaxCols, with the fewest items (a power
// of two) that cover the row; a block per row above, with kValuesPerThread values per thread.
template <int VEC, class F>
void with_geometry(int64_t cols, F&& f) {
  constexpr int kMaxItems = kValuesPerThread / VEC;
  if (cols > kWarpMaxCols) {
    f(Int<VEC>{}, Int<kMaxItems>{}, Bool<false>{});
    return;
  }
  // <= kMaxItems since cols <= 32 * kValuesPerThread.
  detail::with_warp_items<VEC, kMaxItems, 1>(ceil_div(cols, 32 * VEC), cols, f);
}

// Most blocks of a grid (grids stride over rows): for the warp-per-row kernels and for the
// block-per-row and loop kernels. A backward that keeps one partial sum per block caps both.
struct GridCaps {
  int64_t warp_rows = kMaxGrid;
  int64_t block_rows = kMaxGrid;
};

// Blocks of the grid launch() picks for (rows, cols) under `caps` (rows > 0): what a caller
// sizes per-block scratch by.
inline int grid_for(int64_t rows, int64_t cols, GridCaps caps = {}) {
  if (cols <= kWarpMaxCols) return grid_blocks(rows, kWarpRowsPerBlock, caps.warp_rows);
  return grid_blocks(rows, 1, caps.block_rows);
}

// Launch of a row kernel (rows > 0): the loop kernel, loop(grid), for cols > kBlockMaxCols;
// else held(Int<VEC>, Int<ITEMS>, Bool<kWarpRow>, grid, threads), vectorised
// (VEC = 16 / sizeof(T)) when `vec` (every pointer 16-byte aligned) and cols % VEC == 0, else
// VEC = 1. grid is grid_for(rows, cols, caps).
template <class T, class Held, class Loop>
void launch(int64_t rows, int64_t cols, bool vec, Held&& held, Loop&& loop, GridCaps caps = {}) {
  const int grid = grid_for(rows, cols, caps);
  if (cols > kBlockMaxCols) {
    loop(grid);
    return;
  }
  auto launch_held = [&](auto v, auto items, auto warp_row) {
    constexpr bool W = decltype(warp_row)::value;
    const int threads = W ? 32 * kWarpRowsPerBlock : block_threads(cols);
    held(v, items, warp_row, grid, threads);
  };
  constexpr int kVec = 16 / sizeof(T);
  if (vec && cols % kVec == 0) {
    with_geometry<kVec>(cols, launch_held);
  } else {
    with_geometry<1>(cols, launch_held);
  }
}

}  // namespace held_row

}  // namespace attn::kernels::cuda_common
