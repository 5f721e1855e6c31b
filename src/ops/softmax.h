// Softmax over the last dimension (no autograd; see kernels/softmax.h).
#pragma once

#include "core/tensor.h"

namespace attn::ops {

Tensor softmax_forward(const Tensor& x);
// dx = y * (dy - sum(dy * y)) over the last dimension, from the forward's output y.
Tensor softmax_backward(const Tensor& y, const Tensor& dy);

}  // namespace attn::ops
