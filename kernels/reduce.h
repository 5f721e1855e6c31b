// Sum over the middle axis of a tensor viewed as [outer, n, inner]: out[o, i] = sum_j x[o, j, i].
// Accumulates in double. With accumulate = true the result is added into out (used for bias
// gradients, which accumulate), else written.
#pragma once

#include <cstdint>

#include "kernels/types.h"

namespace attn::kernels {

template <class T>
void sum_axis_cpu(const T* x, T* out, int64_t outer, int64_t n, int64_t inner, bool accumulate);

// CUDA (kernels/reduce_cuda.cu), T in {float, bf16, f16}: fp32 accumulation, the result rounded
// once to T. Deterministic: the split of the work depends only on the shape, and partial sums
// are added in a fixed order. Large reductions are split along n into per-block partial sums
// kept in `workspace` (sum_axis_cuda_workspace(outer, n, inner) floats; none needed when it
// returns 0, then workspace may be null), then summed per output by a second kernel.
int64_t sum_axis_cuda_workspace(int64_t outer, int64_t n, int64_t inner);
template <class T>
void sum_axis_cuda(const T* x, T* out, int64_t outer, int64_t n, int64_t inner, bool accumulate,
                   float* workspace, cudaStream_t stream);

}  // namespace attn::kernels
