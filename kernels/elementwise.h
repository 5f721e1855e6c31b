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

// y[r, c] = x[r, c] + bias[c] over a [rows, cols] matrix, followed by relu when `relu` is set
// (y = max(x + bias, 0); NaN gives 0, as relu_forward_cpu). x and y may alias. The bias
// epilogue for GEMMs that cannot fuse it. Reference, in the header because it is tiny.
template <class T>
inline void bias_add_cpu(const T* x, const T* bias, T* y, int64_t rows, int64_t cols, bool relu) {
#pragma omp parallel for if (rows * cols > (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const T v = x[r * cols + c] + bias[c];
      y[r * cols + c] = relu ? (v > T(0) ? v : T(0)) : v;
    }
  }
}

// CUDA launchers (kernels/elementwise_cuda.cu), T in {float, bf16, f16}. Arithmetic in fp32,
// rounded once to T. For float the results are bit-identical to the CPU functions above.
// Pointers may be unaligned (tensor views); 16-byte vector loads are used when all are aligned.
template <class T>
void binary_cuda(BinaryOp op, const T* a, const T* b, T* out, int64_t n, cudaStream_t stream);
template <class T>
void axpy_cuda(T* dst, double alpha, const T* src, int64_t n, cudaStream_t stream);
// x and out may alias (in-place scaling).
template <class T>
void scale_cuda(const T* x, double alpha, T* out, int64_t n, cudaStream_t stream);
template <class T>
void relu_forward_cuda(const T* x, T* y, int64_t n, cudaStream_t stream);
template <class T>
void relu_backward_cuda(const T* dy, const T* y, T* dx, int64_t n, cudaStream_t stream);
template <class T>
void bias_add_cuda(const T* x, const T* bias, T* y, int64_t rows, int64_t cols, bool relu,
                   cudaStream_t stream);

}  // namespace attn::kernels
