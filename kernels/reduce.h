// Sum over the middle axis of a tensor viewed as [outer, n, inner]: out[o, i] = sum_j x[o, j, i].
// Accumulates in double. With accumulate = true the result is added into out (used for bias
// gradients, which accumulate), else written.
#pragma once

#include <cstdint>

#include "kernels/types.h"

namespace attn::kernels {

template <class T>
void sum_axis_cpu(const T* x, T* out, int64_t outer, int64_t n, int64_t inner, bool accumulate);

}  // namespace attn::kernels
