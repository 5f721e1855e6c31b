// Row gather on the GPU (kernels/index.h): out[i, :] = x[index[i], :], as kernels/index_cpu.cc.
//
// Algorithm: rows are copied in the widest unit (16, 8, 4 or 2 bytes) that divides both base
// addresses and the row length in bytes. Block (tx, ty): tx = the row's units rounded up to a
// power of two (at most 256), ty = 256 / tx rows, so a warp copies whole rows in contiguous
// runs; the threads of a row read its index once each (an L1 broadcast). Grid-stride over
// output rows (grid.x) and units (grid.y); offsets in int64.
// Memory: out written with `=`; x and out must not overlap. Indices are trusted (checked by
// ops::index_select0).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "base/cuda_check.h"
#include "kernels/cuda_common.cuh"
#include "kernels/index.h"

namespace attn::kernels {
namespace {

using namespace cuda_common;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;

template <class U>
__global__ void gather_rows_kernel(const U* __restrict__ x, const int32_t* __restrict__ index,
                                   U* __restrict__ out, int64_t rows, int64_t units) {
  const int64_t row_stride = static_cast<int64_t>(gridDim.x) * blockDim.y;
  const int64_t unit_stride = static_cast<int64_t>(gridDim.y) * blockDim.x;
  const int64_t u0 = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; r < rows;
       r += row_stride) {
    const U* src = x + static_cast<int64_t>(index[r]) * units;
    U* dst = out + r * units;
    for (int64_t u = u0; u < units; u += unit_stride) dst[u] = src[u];
  }
}

template <class U>
void launch(const void* x, const int32_t* index, void* out, int64_t rows, int64_t units,
            cudaStream_t stream) {
  const RowsGrid g = rows_units_grid(rows, units, kThreads, kMaxBlocks);
  gather_rows_kernel<U><<<g.grid, g.block, 0, stream>>>(static_cast<const U*>(x), index,
                                                        static_cast<U*>(out), rows, units);
  ATTN_CUDA_LAUNCH_CHECK();
}

}  // namespace

template <class T>
void gather_rows_cuda(const T* x, const int32_t* index, T* out, int64_t n_index,
                      int64_t row_size, cudaStream_t stream) {
  if (n_index <= 0 || row_size <= 0) return;
  const int64_t row_bytes = row_size * static_cast<int64_t>(sizeof(T));
  with_copy_unit(addr(x) | addr(out) | static_cast<uint64_t>(row_bytes), [&](auto unit) {
    using U = decltype(unit);
    launch<U>(x, index, out, n_index, row_bytes / static_cast<int64_t>(sizeof(U)), stream);
  });
}

#define ATTN_INSTANTIATE(T)                                                               \
  template void gather_rows_cuda<T>(const T*, const int32_t*, T*, int64_t, int64_t, \
                                    cudaStream_t);
ATTN_FOR_EACH_DTYPE(ATTN_INSTANTIATE)
#undef ATTN_INSTANTIATE

}  // namespace attn::kernels
