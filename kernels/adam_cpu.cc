#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/adam.h"

namespace attn::kernels {

namespace {
constexpr int64_t kParallelMin = 1 << 15;  // below this, threads cost more than they save
constexpr int64_t kBlock = 1 << 14;        // sum_squares block: fixed, for reproducibility
}  // namespace

template <class T>
void adam_step_cpu(T* param, const T* grad, T* m, T* v, int64_t n, double lr, double beta1,
                   double beta2, double eps, double weight_decay, double bias_correction1,
                   double bias_correction2) {
  const T decay = static_cast<T>(1.0 - lr * weight_decay);
  const T b1 = static_cast<T>(beta1), one_minus_b1 = static_cast<T>(1.0 - beta1);
  const T b2 = static_cast<T>(beta2), one_minus_b2 = static_cast<T>(1.0 - beta2);
  const T step_size = static_cast<T>(lr / bias_correction1);
  const T sqrt_bc2 = static_cast<T>(std::sqrt(bias_correction2));
  const T e = static_cast<T>(eps);
  const bool decays = weight_decay != 0.0;
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const T g = grad[i];
    T p = param[i];
    if (decays) p *= decay;
    const T mi = b1 * m[i] + one_minus_b1 * g;
    const T vi = b2 * v[i] + one_minus_b2 * (g * g);
    m[i] = mi;
    v[i] = vi;
    param[i] = p - step_size * (mi / (std::sqrt(vi) / sqrt_bc2 + e));
  }
}

template <class T>
double sum_squares_cpu(const T* x, int64_t n) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(blocks));
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t end = std::min(n, (b + 1) * kBlock);
    double s = 0.0;
    for (int64_t i = b * kBlock; i < end; ++i) {
      const double xi = static_cast<double>(x[i]);
      s += xi * xi;
    }
    partial[b] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

#define ATTN_INSTANTIATE(T)                                                                     \
  template void adam_step_cpu<T>(T*, const T*, T*, T*, int64_t, double, double, double, double, \
                                 double, double, double);                                       \
  template double sum_squares_cpu<T>(const T*, int64_t);
ATTN_INSTANTIATE(float)
ATTN_INSTANTIATE(double)
#undef ATTN_INSTANTIATE

}  // namespace attn::kernels
