// Row selection along the first dimension (no autograd): decoder state is kept or reordered
// by batch row during beam search, where no gradient is wanted.
#pragma once

#include "core/tensor.h"

namespace attn::ops {

// out[i, ...] = x[index[i], ...]; index is i32 [N] with values in [0, x.size(0)), may repeat,
// and is moved to x's device if it lives elsewhere. out has shape [N, x.shape()[1:]...].
Tensor index_select0(const Tensor& x, const Tensor& index);

}  // namespace attn::ops
