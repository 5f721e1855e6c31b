// Reductions (no autograd). Accumulation in double on the CPU.
#pragma once

#include "core/tensor.h"

namespace attn::ops {

Tensor sum_all(const Tensor& x);  // scalar (shape {})
Tensor sum_dim(const Tensor& x, int64_t dim, bool keepdim = false);
// Sum over every dimension but the last: [..., n] -> [n] (bias gradients).
Tensor sum_to_last(const Tensor& x);
// Broadcasts `x` (the result of sum_dim with keepdim, or a scalar) back to `shape`.
Tensor expand_dim(const Tensor& x, const Shape& shape, int64_t dim);

}  // namespace attn::ops
