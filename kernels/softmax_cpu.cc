// CPU reference for kernels/softmax.h: one row per iteration, sums in double, rows over
// OpenMP threads when the tensor is large enough.
#include <cmath>

#include "kernels/softmax.h"

namespace attn::kernels {
namespace {
// Below this many elements a parallel region costs more than the row loop it splits.
constexpr int64_t kParallelElements = 1 << 15;
}  // namespace

template <class T>
void softmax_forward_cpu(const T* x, T* y, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows > 1 && rows * cols >= kParallelElements)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    double m = -INFINITY;
    for (int64_t j = 0; j < cols; ++j) m = std::fmax(m, static_cast<double>(xr[j]));
    double sum = 0;
    for (int64_t j = 0; j < cols; ++j) {
      const double e = std::exp(static_cast<double>(xr[j]) - m);
      sum += e;
      yr[j] = static_cast<T>(e);
    }
    const double inv = 1.0 / sum;
    for (int64_t j = 0; j < cols; ++j) yr[j] = static_cast<T>(static_cast<double>(yr[j]) * inv);
  }
}

template <class T>
void softmax_backward_cpu(const T* y, const T* dy, T* dx, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows > 1 && rows * cols >= kParallelElements)
  for (int64_t r = 0; r < rows; ++r) {
    const T* yr = y + r * cols;
    const T* dyr = dy + r * cols;
    T* dxr = dx + r * cols;
    double dot = 0;
    for (int64_t j = 0; j < cols; ++j)
      dot += static_cast<double>(dyr[j]) * static_cast<double>(yr[j]);
    for (int64_t j = 0; j < cols; ++j)
      dxr[j] = static_cast<T>(static_cast<double>(yr[j]) * (static_cast<double>(dyr[j]) - dot));
  }
}

template void softmax_forward_cpu<float>(const float*, float*, int64_t, int64_t);
template void softmax_forward_cpu<double>(const double*, double*, int64_t, int64_t);
template void softmax_backward_cpu<float>(const float*, const float*, float*, int64_t, int64_t);
template void softmax_backward_cpu<double>(const double*, const double*, double*, int64_t, int64_t);

}  // namespace attn::kernels
