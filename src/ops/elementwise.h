// Element-wise tensor ops (no autograd). Binary ops need equal shapes, dtypes and devices.
#pragma once

#include "core/tensor.h"

namespace attn::ops {

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, double factor);
// dst += src; dst += alpha * src.
void add_(Tensor& dst, const Tensor& src);
void axpy_(Tensor& dst, double alpha, const Tensor& src);
Tensor relu(const Tensor& x);
// Gradient of relu given its output y.
Tensor relu_backward(const Tensor& grad_y, const Tensor& y);
// x + bias broadcast over the last dimension (bias has shape [x.size(-1)]); with relu,
// max(x + bias, 0) in one pass. The bias epilogue for GEMMs that cannot fuse it.
Tensor bias_add(const Tensor& x, const Tensor& bias, bool relu = false);

}  // namespace attn::ops
