#include "kernels/elementwise.h"

namespace attn::kernels {

namespace {
constexpr int64_t kParallelMin = 1 << 15;  // below this, threads cost more than they save
}

template <class T>
void binary_cpu(BinaryOp op, const T* a, const T* b, T* out, int64_t n) {
  switch (op) {
    case BinaryOp::kAdd:
#pragma omp parallel for if (n > kParallelMin)
      for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
      break;
    case BinaryOp::kSub:
#pragma omp parallel for if (n > kParallelMin)
      for (int64_t i = 0; i < n; ++i) out[i] = a[i] - b[i];
      break;
    case BinaryOp::kMul:
#pragma omp parallel for if (n > kParallelMin)
      for (int64_t i = 0; i < n; ++i) out[i] = a[i] * b[i];
      break;
  }
}

template <class T>
void axpy_cpu(T* dst, double alpha, const T* src, int64_t n) {
  const T a = static_cast<T>(alpha);
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) dst[i] += a * src[i];
}

template <class T>
void scale_cpu(const T* x, double alpha, T* out, int64_t n) {
  const T a = static_cast<T>(alpha);
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = a * x[i];
}

template <class T>
void relu_forward_cpu(const T* x, T* y, int64_t n) {
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] : T(0);
}

template <class T>
void relu_backward_cpu(const T* dy, const T* y, T* dx, int64_t n) {
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) dx[i] = y[i] > T(0) ? dy[i] : T(0);
}

#define ATTN_INSTANTIATE(T)                                                \
  template void binary_cpu<T>(BinaryOp, const T*, const T*, T*, int64_t); \
  template void axpy_cpu<T>(T*, double, const T*, int64_t);               \
  template void scale_cpu<T>(const T*, double, T*, int64_t);              \
  template void relu_forward_cpu<T>(const T*, T*, int64_t);               \
  template void relu_backward_cpu<T>(const T*, const T*, T*, int64_t);
ATTN_INSTANTIATE(float)
ATTN_INSTANTIATE(double)
#undef ATTN_INSTANTIATE

}  // namespace attn::kernels
