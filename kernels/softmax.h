// Softmax over the last dimension of a contiguous [rows, cols] tensor, numerically stable:
// y = exp(x - max) / sum(exp(x - max)), sums accumulated in double on the CPU.
// The backward takes the forward's output rather than its input (y is what the formula
// needs, and callers keep it anyway): dx = y * (dy - sum(dy * y)), written with = (an
// activation gradient; nothing accumulates).
#pragma once

#include <cstdint>

#include "kernels/types.h"

namespace attn::kernels {

template <class T>
void softmax_forward_cpu(const T* x, T* y, int64_t rows, int64_t cols);

template <class T>
void softmax_backward_cpu(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols);

// CUDA launchers (kernels/softmax_cuda.cu), T in {float, bf16, f16}, fp32 arithmetic;
// device pointers; nothing is launched when rows or cols is 0.
template <class T>
void softmax_forward_cuda(const T* x, T* y, int64_t rows, int64_t cols, cudaStream_t stream);

template <class T>
void softmax_backward_cuda(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols,
                           cudaStream_t stream);

}  // namespace attn::kernels
