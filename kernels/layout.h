// Data movement without arithmetic; typed so the same code serves every dtype.
//  - swap_axes: x viewed as [outer, a, mid, b, inner] -> out [outer, b, mid, a, inner]
//    (transpose of two dimensions; split/merge of attention heads is the case mid = 1).
//  - copy_2d: rows x cols block between arrays with row strides (concat, slice and their
//    backwards are block copies on the [outer, dim*inner] view).
#pragma once

#include <cstdint>

#include "kernels/types.h"

namespace attn::kernels {

struct SwapAxesShape {
  int64_t outer, a, mid, b, inner;
};

// swap_axes' row map, shared by the CPU and CUDA kernels: row r of the input, enumerating
// [outer, a, mid, b], is row swap_axes_dst_row(r, a, mid, b) of the output [outer, b, mid, a].
// The divisions run in Index (the CUDA kernel uses uint32_t when every row index fits: much
// cheaper); the row is int64_t (uint64_t when Index is).
template <class Index>
ATTN_HD inline auto swap_axes_dst_row(Index r, Index a, Index mid, Index b) {
  const Index ib = r % b;
  r /= b;
  const Index im = r % mid;
  r /= mid;
  const Index ia = r % a;
  const Index io = r / a;
  return ((static_cast<int64_t>(io) * b + ib) * mid + im) * a + ia;
}

template <class T>
void swap_axes_cpu(const T* x, T* out, const SwapAxesShape& s);

template <class T>
void copy_2d_cpu(const T* src, int64_t src_stride, T* dst, int64_t dst_stride, int64_t rows,
                 int64_t cols);

// Broadcast along a new middle axis: out viewed as [outer, n, inner], out[o, j, i] = x[o, i]
// (ops::expand_dim; the bias rows that linear's GEMM accumulates onto). One parallel loop over
// the outer * n rows: as n calls of copy_2d_cpu it cost an OpenMP region per bias row, ~16% of
// a CPU training step of the demo model (docs/PERFORMANCE.md).
template <class T>
void expand_axis_cpu(const T* x, T* out, int64_t outer, int64_t n, int64_t inner);

// CUDA launchers (kernels/layout_cuda.cu), T in {float, double, bf16, f16, int32_t}: pure byte
// movement, bit-identical to the CPU. Source and destination must not overlap.
template <class T>
void swap_axes_cuda(const T* x, T* out, const SwapAxesShape& s, cudaStream_t stream);
template <class T>
void copy_2d_cuda(const T* src, int64_t src_stride, T* dst, int64_t dst_stride, int64_t rows,
                  int64_t cols, cudaStream_t stream);
// expand_axis_cpu's counterpart, one launch.
template <class T>
void expand_axis_cuda(const T* x, T* out, int64_t outer, int64_t n, int64_t inner,
                      cudaStream_t stream);

}  // namespace attn::kernels
