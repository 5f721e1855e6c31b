// Element-wise arithmetic on contiguous arrays of n elements. Outputs are written with `=`
// except the in-place accumulate forms (add_inplace, axpy), which add into dst.
#pragma once

#include <cstdint>

#include "kernels/types.h"

namespace attn::kernels {

enum class BinaryOp { kAdd, kSub, kMul };

template <class T>
void binary_cpu(BinaryOp op, const T* a, const T* b, T* out, int64_t n);
// dst += alpha * src
template <class T>
void axpy_cpu(T* dst, double alpha, const T* src, int64_t n);
// out = alpha * x
template <class T>
void scale_cpu(const T* x, double alpha, T* out, int64_t n);
template <class T>
void relu_forward_cpu(const T* x, T* y, int64_t n);
// dx = dy where y > 0, else 0
template <class T>
void relu_backward_cpu(const T* dy, const T* y, T* dx, int64_t n);

}  // namespace attn::kernels
