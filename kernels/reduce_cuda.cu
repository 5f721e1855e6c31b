// Sum over the middle axis of x viewed as [outer, n, inner] on the GPU (kernels/reduce.h), the
// semantics of kernels/reduce_cpu.cc with fp32 instead of double accumulation.
//
// Three kernels, chosen by shape (make_plan):
//  - inner == 1, n <= 1024 (short rows): one warp per row, lanes stride the row, shuffle sum.
//  - inner == 1, long rows (sum_all): each row is cut into `splits` segments, one 256-thread
//    block per (row, segment): strided loads, warp shuffles, then the 8 warp sums in order.
//  - inner > 1 (bias gradients: sum over the rows of [rows, cols]): column-parallel. A 32 x 8
//    block owns 32 adjacent columns (a warp reads 32 consecutive elements of a row: coalesced)
//    and one segment of the rows; its 8 row-threads each sum every 8th row of the segment and
//    the 8 column sums are added in order through shared memory.
// Segments: enough that the main kernel has about 1024 blocks, but each segment keeps at
// least 64 rows (columns) or 2048 elements (rows). With one segment the main kernel writes the
// output itself; otherwise it writes per-segment partials to the workspace,
// [outer][splits][inner] floats, and sum_partials_kernel adds them in segment order (in f64).
// The plan depends only on (outer, n, inner), and every sum has a fixed order: the result is
// deterministic run to run.
// Memory: out[o, i] written with `=`, or with `+=` when accumulate (parameter gradients).
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "base/cuda_check.h"
#include "kernels/cuda_common.cuh"
#include "kernels/reduce.h"

namespace attn::kernels {
namespace {

using namespace cuda_common;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;
constexpr int64_t kTargetBlocks = 1024;
constexpr int64_t kShortRow = 1024;
constexpr int kColTile = 32;    // columns per block (blockDim.x)
constexpr int kRowThreads = 8;  // row-threads per block (blockDim.y)
constexpr int64_t kMinColumnRows = 64;
constexpr int64_t kMinRowElements = 2048;

enum class Kind { kWarpRows, kRowBlocks, kColumns };

struct Plan {
  Kind kind;
  int64_t col_tiles;       // kColumns: ceil(inner / 32)
  int64_t splits;          // segments of n (>= 1)
  int64_t rows_per_split;  // every segment but the last has exactly this many
};

// Requires outer, inner >= 1 and n >= 1.
Plan make_plan(int64_t outer, int64_t n, int64_t inner) {
  Plan p{Kind::kWarpRows, 1, 1, n};
  if (inner == 1 && n <= kShortRow) return p;
  int64_t base, min_rows;
  if (inner == 1) {
    p.kind = Kind::kRowBlocks;
    base = outer;
    min_rows = kMinRowElements;
  } else {
    p.kind = Kind::kColumns;
    p.col_tiles = ceil_div(inner, kColTile);
    base = outer * p.col_tiles;
    min_rows = kMinColumnRows;
  }
  int64_t splits = std::min(ceil_div(kTargetBlocks, base), ceil_div(n, min_rows));
  splits = std::max<int64_t>(splits, 1);
  p.rows_per_split = ceil_div(n, splits);
  p.splits = ceil_div(n, p.rows_per_split);  // no empty segment
  return p;
}

template <class T>
__device__ __forceinline__ void store_sum(T* out, float sum, bool accumulate) {
  *out = from_f<T>(accumulate ? __fadd_rn(to_f(*out), sum) : sum);
}

// inner == 1, short rows: warp w of the grid sums rows w, w + warps, ...
template <class T>
__global__ void sum_rows_warp_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t outer,
                                     int64_t n, bool accumulate) {
  const int lane = threadIdx.x & 31;
  const int64_t warps_per_block = blockDim.x >> 5;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * warps_per_block;
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * warps_per_block + (threadIdx.x >> 5);
       o < outer; o += stride) {
    const T* row = x + o * n;
    float acc = 0.0f;
    for (int64_t i = lane; i < n; i += 32) acc += to_f(row[i]);
    acc = warp_sum_down(acc);  // complete in lane 0
    if (lane == 0) store_sum(out + o, acc, accumulate);
  }
}

// inner == 1, long rows: block b = (row o, segment s) with b = o * splits + s.
template <class T>
__global__ void sum_rows_block_kernel(const T* __restrict__ x, T* __restrict__ out,
                                      float* __restrict__ partial, int64_t n, int64_t splits,
                                      int64_t rows_per_split, bool accumulate) {
  const int64_t b = blockIdx.x;
  const int64_t o = b / splits, s = b - o * splits;
  const int64_t r0 = s * rows_per_split, r1 = std::min(n, r0 + rows_per_split);
  const T* row = x + o * n;
  float acc = 0.0f;
#pragma unroll 4
  for (int64_t i = r0 + threadIdx.x; i < r1; i += kThreads) acc += to_f(row[i]);
  acc = block_sum<kThreads>(acc);  // complete in thread 0
  if (threadIdx.x == 0) {
    if (splits == 1) {
      store_sum(out + o, acc, accumulate);
    } else {
      partial[b] = acc;
    }
  }
}

// inner > 1: blockIdx.x = o * col_tiles + tile, blockIdx.y = segment; block 32 x 8.
template <class T>
__global__ void sum_cols_kernel(const T* __restrict__ x, T* __restrict__ out,
                                float* __restrict__ partial, int64_t n, int64_t inner,
                                int64_t col_tiles, int64_t rows_per_split, bool accumulate) {
  __shared__ float sums[kRowThreads][kColTile];
  const int64_t o = blockIdx.x / col_tiles, tile = blockIdx.x - o * col_tiles;
  const int64_t s = blockIdx.y, splits = gridDim.y;
  const int64_t c = tile * kColTile + threadIdx.x;
  const int64_t r0 = s * rows_per_split, r1 = std::min(n, r0 + rows_per_split);
  float acc = 0.0f;
  if (c < inner) {
    const T* col = x + o * n * inner + c;
#pragma unroll 4
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowThreads) acc += to_f(col[r * inner]);
  }
  sums[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < inner) {
    float total = sums[0][threadIdx.x];
#pragma unroll
    for (int k = 1; k < kRowThreads; ++k) total += sums[k][threadIdx.x];
    if (splits == 1) {
      store_sum(out + o * inner + c, total, accumulate);
    } else {
      partial[(o * splits + s) * inner + c] = total;
    }
  }
}

// out[o, c] (+)= sum over s of partial[o, s, c], s in order, in f64. splits == 0 writes zeros.
template <class T>
__global__ void sum_partials_kernel(const float* __restrict__ partial, T* __restrict__ out,
                                    int64_t outer, int64_t splits, int64_t inner,
                                    bool accumulate) {
  const int64_t total = outer * inner;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += stride) {
    const int64_t o = idx / inner, c = idx - o * inner;
    const float* p = partial + o * splits * inner + c;
    double sum = 0.0;  // few terms, large magnitudes: double costs nothing here
    for (int64_t k = 0; k < splits; ++k) sum += p[k * inner];
    store_sum(out + idx, static_cast<float>(sum), accumulate);
  }
}

unsigned grid_for(int64_t work, int64_t per_block) {
  return static_cast<unsigned>(grid_blocks(work, per_block, kMaxBlocks));
}

}  // namespace

int64_t sum_axis_cuda_workspace(int64_t outer, int64_t n, int64_t inner) {
  if (outer <= 0 || n <= 0 || inner <= 0) return 0;
  const Plan p = make_plan(outer, n, inner);
  return p.splits > 1 ? outer * p.splits * inner : 0;
}

template <class T>
void sum_axis_cuda(const T* x, T* out, int64_t outer, int64_t n, int64_t inner, bool accumulate,
                   float* workspace, cudaStream_t stream) {
  if (outer <= 0 || inner <= 0) return;  // no outputs
  if (n <= 0) {                          // empty sums: 0, or out unchanged when accumulating
    if (!accumulate) {
      sum_partials_kernel<T><<<grid_for(outer * inner, kThreads), kThreads, 0, stream>>>(
          nullptr, out, outer, 0, inner, false);
      ATTN_CUDA_LAUNCH_CHECK();
    }
    return;
  }
  const Plan p = make_plan(outer, n, inner);
  ATTN_CHECK(p.splits == 1 || workspace != nullptr,
             "sum_axis_cuda: this shape needs a workspace (sum_axis_cuda_workspace)");
  switch (p.kind) {
    case Kind::kWarpRows:
      sum_rows_warp_kernel<T><<<grid_for(outer, kThreads / 32), kThreads, 0, stream>>>(
          x, out, outer, n, accumulate);
      break;
    case Kind::kRowBlocks: {
      const int64_t blocks = outer * p.splits;
      ATTN_CHECK(blocks <= INT_MAX, "sum_axis_cuda: too many rows (", outer, ")");
      sum_rows_block_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
          x, out, workspace, n, p.splits, p.rows_per_split, accumulate);
      break;
    }
    case Kind::kColumns: {
      const int64_t blocks = outer * p.col_tiles;
      ATTN_CHECK(blocks <= INT_MAX, "sum_axis_cuda: shape [", outer, ", ", n, ", ", inner,
                 "] is too large");
      const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(p.splits));
      sum_cols_kernel<T><<<grid, dim3(kColTile, kRowThreads), 0, stream>>>(
          x, out, workspace, n, inner, p.col_tiles, p.rows_per_split, accumulate);
      break;
    }
  }
  ATTN_CUDA_LAUNCH_CHECK();
  if (p.splits > 1) {
    sum_partials_kernel<T><<<grid_for(outer * inner, kThreads), kThreads, 0, stream>>>(
        workspace, out, outer, p.splits, inner, accumulate);
    ATTN_CUDA_LAUNCH_CHECK();
  }
}

#define ATTN_INSTANTIATE(T)                                                               \
  template void sum_axis_cuda<T>(const T*, T*, int64_t, int64_t, int64_t, bool, float*, \
                                 cudaStream_t);
ATTN_FOR_EACH_FLOAT_TYPE(ATTN_INSTANTIATE)
#undef ATTN_INSTANTIATE

}  // namespace attn::kernels
