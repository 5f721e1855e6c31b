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

template <class T>
void swap_axes_cpu(const T* x, T* out, const SwapAxesShape& s);

template <class T>
void copy_2d_cpu(const T* src, int64_t src_stride, T* dst, int64_t dst_stride, int64_t rows,
                 int64_t cols);

}  // namespace attn::kernels
