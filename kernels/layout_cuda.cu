// Layout kernels on the GPU (kernels/layout.h): the byte movement of kernels/layout_cpu.cc.
//
// Everything is a copy of rows, so kernels work on bytes in the widest unit (16, 8, 4 or 2
// bytes) that divides every pointer, row length and row stride involved; T only sets sizes.
//  - copy_rows_kernel: rows of `units` units; a row-map functor gives each row's source and
//    destination offsets (copy_2d: strided rows; expand_axis: source row r / n; swap_axes with
//    inner > 1: the permuted row). Block (tx, ty) = (units rounded up to a power of two, at
//    most 256; 256 / tx): a warp covers whole rows, so both sides are read and written in
//    contiguous runs. Grid-stride over rows (grid.x) and units (grid.y).
//  - transpose_tiles_kernel (swap_axes with inner == 1, a real transpose): 32 x 32 tiles of
//    each [a, b] plane through shared memory (padded to 33 columns against bank conflicts), so
//    reads run along b and writes along a, both coalesced. 32 x 8 threads, 4 elements each.
//  - contiguous copies (copy_2d with dense rows, swaps that are reshapes) are one
//    cudaMemcpyAsync.
// Launch: at most 65536 blocks; all loops are grid-stride, offsets in int64.
// Memory: destinations written with `=`; source and destination must not overlap.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "base/cuda_check.h"
#include "kernels/cuda_common.cuh"
#include "kernels/layout.h"

namespace attn::kernels {
namespace {

using namespace cuda_common;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;
constexpr int kTile = 32;
constexpr int kTileRows = 8;

// ---- row maps: row r -> (source offset, destination offset), in units ----
struct StridedRows {  // copy_2d and expand: source row r / rep
  int64_t src_stride, dst_stride, rep;
  __device__ void operator()(int64_t r, int64_t& s, int64_t& d) const {
    s = (rep == 1 ? r : r / rep) * src_stride;
    d = r * dst_stride;
  }
};

// swap_axes: r enumerates the input's [outer, a, mid, b] rows (as swap_axes_cpu). Index is
// uint32_t when every row index fits, which makes the divisions much cheaper.
template <class Index>
struct SwappedRows {
  Index a, mid, b;
  int64_t row_units;
  __device__ void operator()(int64_t r, int64_t& s, int64_t& d) const {
    s = r * row_units;
    d = swap_axes_dst_row(static_cast<Index>(r), a, mid, b) * row_units;
  }
};

template <class U, class Map>
__global__ void copy_rows_kernel(const U* __restrict__ src, U* __restrict__ dst, int64_t rows,
                                 int64_t units, Map map) {
  const int64_t row_stride = static_cast<int64_t>(gridDim.x) * blockDim.y;
  const int64_t unit_stride = static_cast<int64_t>(gridDim.y) * blockDim.x;
  const int64_t u0 = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; r < rows;
       r += row_stride) {
    int64_t s, d;
    map(r, s, d);
    for (int64_t u = u0; u < units; u += unit_stride) dst[d + u] = src[s + u];
  }
}

// Copies `rows` rows of `units` units of U; map gives offsets in units.
template <class U, class Map>
void launch_copy_rows(const void* src, void* dst, int64_t rows, int64_t units, Map map,
                      cudaStream_t stream) {
  if (rows <= 0 || units <= 0) return;
  const RowsGrid g = rows_units_grid(rows, units, kThreads, kMaxBlocks);
  copy_rows_kernel<U, Map><<<g.grid, g.block, 0, stream>>>(
      static_cast<const U*>(src), static_cast<U*>(dst), rows, units, map);
  ATTN_CUDA_LAUNCH_CHECK();
}

// swap_axes with inner == 1: out[o, ib, m, ia] = x[o, ia, m, ib] for every plane p = (o, m).
// Tiles are numbered plane-major; tb (tile along b) varies fastest.
template <class E>
__global__ void transpose_tiles_kernel(const E* __restrict__ x, E* __restrict__ out, int64_t a,
                                       int64_t mid, int64_t b, int64_t tiles_a, int64_t tiles_b,
                                       int64_t total_tiles) {
  __shared__ E tile[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t in_row = mid * b;   // input stride between consecutive ia
  const int64_t out_row = mid * a;  // output stride between consecutive ib
  for (int64_t t = blockIdx.x; t < total_tiles; t += gridDim.x) {
    const int64_t tb = t % tiles_b;
    const int64_t rest = t / tiles_b;
    const int64_t ta = rest % tiles_a;
    const int64_t plane = rest / tiles_a;
    const int64_t o = plane / mid, m = plane - o * mid;
    const E* in = x + o * a * mid * b + m * b;
    E* dst = out + o * b * mid * a + m * a;
    const int64_t a0 = ta * kTile, b0 = tb * kTile;
#pragma unroll
    for (int k = 0; k < kTile; k += kTileRows) {
      const int64_t ia = a0 + ty + k, ib = b0 + tx;
      if (ia < a && ib < b) tile[ty + k][tx] = in[ia * in_row + ib];
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTile; k += kTileRows) {
      const int64_t ib = b0 + ty + k, ia = a0 + tx;
      if (ib < b && ia < a) dst[ib * out_row + ia] = tile[tx][ty + k];
    }
    __syncthreads();  // the tile is refilled by the next iteration
  }
}

template <class E>
void launch_transpose(const void* x, void* out, const SwapAxesShape& s, cudaStream_t stream) {
  const int64_t tiles_a = ceil_div(s.a, kTile), tiles_b = ceil_div(s.b, kTile);
  const int64_t total = s.outer * s.mid * tiles_a * tiles_b;
  const unsigned blocks = static_cast<unsigned>(grid_blocks(total, 1, kMaxBlocks));
  transpose_tiles_kernel<E><<<blocks, dim3(kTile, kTileRows), 0, stream>>>(
      static_cast<const E*>(x), static_cast<E*>(out), s.a, s.mid, s.b, tiles_a, tiles_b, total);
  ATTN_CUDA_LAUNCH_CHECK();
}

void copy_bytes(void* dst, const void* src, int64_t bytes, cudaStream_t stream) {
  if (bytes <= 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice,
                             stream));
}

}  // namespace

template <class T>
void swap_axes_cuda(const T* x, T* out, const SwapAxesShape& s, cudaStream_t stream) {
  const int64_t rows = s.outer * s.a * s.mid * s.b;
  if (rows <= 0 || s.inner <= 0) return;
  if (s.mid == 1 && (s.a == 1 || s.b == 1)) {  // same element order: a reshape
    copy_bytes(out, x, rows * s.inner * static_cast<int64_t>(sizeof(T)), stream);
    return;
  }
  if (s.inner == 1) {
    if constexpr (sizeof(T) == 2) {
      launch_transpose<uint16_t>(x, out, s, stream);
    } else if constexpr (sizeof(T) == 4) {
      launch_transpose<uint32_t>(x, out, s, stream);
    } else {
      static_assert(sizeof(T) == 8, "swap_axes_cuda: element size must be 2, 4 or 8 bytes");
      launch_transpose<unsigned long long>(x, out, s, stream);
    }
    return;
  }
  const int64_t row_bytes = s.inner * static_cast<int64_t>(sizeof(T));
  with_copy_unit(addr(x) | addr(out) | static_cast<uint64_t>(row_bytes), [&](auto unit) {
    using U = decltype(unit);
    const int64_t units = row_bytes / static_cast<int64_t>(sizeof(U));
    if (rows <= static_cast<int64_t>(UINT32_MAX)) {
      const SwappedRows<uint32_t> map{static_cast<uint32_t>(s.a), static_cast<uint32_t>(s.mid),
                                      static_cast<uint32_t>(s.b), units};
      launch_copy_rows<U>(x, out, rows, units, map, stream);
    } else {
      const SwappedRows<uint64_t> map{static_cast<uint64_t>(s.a), static_cast<uint64_t>(s.mid),
                                      static_cast<uint64_t>(s.b), units};
      launch_copy_rows<U>(x, out, rows, units, map, stream);
    }
  });
}

template <class T>
void copy_2d_cuda(const T* src, int64_t src_stride, T* dst, int64_t dst_stride, int64_t rows,
                  int64_t cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  constexpr int64_t kSize = sizeof(T);
  if (rows == 1 || (src_stride == cols && dst_stride == cols)) {  // one dense block
    copy_bytes(dst, src, rows * cols * kSize, stream);
    return;
  }
  const uint64_t align = addr(src) | addr(dst) | static_cast<uint64_t>(cols * kSize) |
                         static_cast<uint64_t>(src_stride * kSize) |
                         static_cast<uint64_t>(dst_stride * kSize);
  with_copy_unit(align, [&](auto unit) {
    using U = decltype(unit);
    constexpr int64_t k = sizeof(U);
    const StridedRows map{src_stride * kSize / k, dst_stride * kSize / k, 1};
    launch_copy_rows<U>(src, dst, rows, cols * kSize / k, map, stream);
  });
}

template <class T>
void expand_axis_cuda(const T* x, T* out, int64_t outer, int64_t n, int64_t inner,
                      cudaStream_t stream) {
  if (outer <= 0 || n <= 0 || inner <= 0) return;
  constexpr int64_t kSize = sizeof(T);
  const int64_t row_bytes = inner * kSize;
  with_copy_unit(addr(x) | addr(out) | static_cast<uint64_t>(row_bytes), [&](auto unit) {
    using U = decltype(unit);
    const int64_t units = row_bytes / static_cast<int64_t>(sizeof(U));
    const StridedRows map{units, units, n};  // output row r = (o, j) reads input row o = r / n
    launch_copy_rows<U>(x, out, outer * n, units, map, stream);
  });
}

#define ATTN_INSTANTIATE(T)                                                                  \
  template void swap_axes_cuda<T>(const T*, T*, const SwapAxesShape&, cudaStream_t);        \
  template void copy_2d_cuda<T>(const T*, int64_t, T*, int64_t, int64_t, int64_t,           \
                                cudaStream_t);                                              \
  template void expand_axis_cuda<T>(const T*, T*, int64_t, int64_t, int64_t, cudaStream_t);
ATTN_FOR_EACH_DTYPE(ATTN_INSTANTIATE)
#undef ATTN_INSTANTIATE

}  // namespace attn::kernels
