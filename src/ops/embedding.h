// Token embedding with optional sinusoidal positions, and the position table (no autograd).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace attn::ops {

// out[..., :] = weight[ids[...], :] * scale (+ pe[position_offset + t] with t the index along
// the last dimension of ids). ids: i32, any shape, values in [0, vocab); weight [vocab, dim].
// Returns ids.shape + [dim].
Tensor embedding_forward(const Tensor& ids, const Tensor& weight, double scale = 1.0,
                         bool add_positions = false, int64_t position_offset = 0);
// Gradient of the weight, [vocab, dim]: zeros plus scale * grad_out scattered to ids' rows.
// deterministic (CUDA only; the CPU is always deterministic): sort-based, the same bits on
// every run; false uses float atomics (faster for some shapes, run-to-run rounding noise).
Tensor embedding_backward(const Tensor& ids, const Tensor& grad_out, int64_t vocab, double scale,
                          bool deterministic = true);
// [length, dim] table of the paper's encoding for positions offset .. offset+length-1,
// computed in double (kernels/embedding.h) and rounded to dtype.
Tensor sinusoidal_positions(int64_t length, int64_t dim, int64_t offset = 0, DType dtype = kF32,
                            Device device = Device::cpu());

}  // namespace attn::ops
