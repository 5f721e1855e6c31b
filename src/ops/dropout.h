// Inverted dropout on tensors (no autograd): the mask is a pure function of (seed, offset,
// element index) (kernels/dropout.h), so the backward takes the same (seed, offset) instead of
// a stored mask. The caller reserves the offset from a Generator once per forward.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace attn::ops {

// Throws unless 0 <= p < 1 (p = 1 would divide by zero; use a zero tensor instead).
void check_dropout_p(const char* op, double p);

// y = x * keep / (1 - p), keep = philox_uniform(seed, offset, i) >= p.
Tensor dropout_forward(const Tensor& x, double p, uint64_t seed, uint64_t offset);
// grad_x = grad_y * keep / (1 - p) with the forward's mask.
Tensor dropout_backward(const Tensor& grad_y, double p, uint64_t seed, uint64_t offset);

}  // namespace attn::ops
