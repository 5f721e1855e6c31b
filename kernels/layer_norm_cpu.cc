// CPU reference for kernels/layer_norm.h. One row per iteration, statistics in double;
// rows are spread over OpenMP threads when there is enough work to pay for the fork.
#include <cmath>
#include <vector>

#include "kernels/layer_norm.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace attn::kernels {
namespace {

// Below this many elements a parallel region costs more than the row loop it splits.
constexpr int64_t kParallelElements = 1 << 15;

// s[j] rounded to T, so that the fused add gives bit-for-bit what a separate add would.
template <class T>
inline double sum_at(const T* x, const T* residual, int64_t j) {
  return residual ? static_cast<double>(static_cast<T>(x[j] + residual[j]))
                  : static_cast<double>(x[j]);
}

}  // namespace

template <class T>
void layer_norm_forward_cpu(const T* x, const T* residual, const T* gamma, const T* beta,
                            double eps, int64_t rows, int64_t cols, T* y, T* mean, T* rstd) {
#pragma omp parallel for schedule(static) if (rows > 1 && rows * cols >= kParallelElements)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    const T* rr = residual ? residual + r * cols : nullptr;
    T* yr = y + r * cols;
    double sum = 0;
    for (int64_t j = 0; j < cols; ++j) sum += sum_at(xr, rr, j);
    const double mu = sum / static_cast<double>(cols);
    // Two passes: the one-pass E[s^2] - E[s]^2 cancels catastrophically for large means.
    double sq = 0;
    for (int64_t j = 0; j < cols; ++j) {
      const double d = sum_at(xr, rr, j) - mu;
      sq += d * d;
    }
    const double rs = 1.0 / std::sqrt(sq / static_cast<double>(cols) + eps);
    for (int64_t j = 0; j < cols; ++j) {
      const double xhat = (sum_at(xr, rr, j) - mu) * rs;
      yr[j] = static_cast<T>(xhat * static_cast<double>(gamma[j]) + static_cast<double>(beta[j]));
    }
    mean[r] = static_cast<T>(mu);
    rstd[r] = static_cast<T>(rs);
  }
}

template <class T>
void layer_norm_backward_cpu(const T* dy, const T* x, const T* residual, const T* gamma,
                             const T* mean, const T* rstd, int64_t rows, int64_t cols, T* dx,
                             T* dgamma, T* dbeta) {
  int nthreads = 1;
#ifdef _OPENMP
  if (rows > 1 && rows * cols >= kParallelElements) nthreads = omp_get_max_threads();
#endif
  // Each thread sums its rows' dgamma/dbeta contributions into its own slice; the slices are
  // then added in thread order, so the result does not depend on scheduling.
  std::vector<double> partial(static_cast<size_t>(2 * cols * nthreads), 0.0);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    double* dg = partial.data() + 2 * cols * tid;
    double* db = dg + cols;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * cols;
      const T* rr = residual ? residual + r * cols : nullptr;
      const T* dyr = dy + r * cols;
      T* dxr = dx + r * cols;
      const double mu = static_cast<double>(mean[r]);
      const double rs = static_cast<double>(rstd[r]);
      double sum_g = 0, sum_gx = 0;
      for (int64_t j = 0; j < cols; ++j) {
        const double xhat = (sum_at(xr, rr, j) - mu) * rs;
        const double d = static_cast<double>(dyr[j]);
        const double g = d * static_cast<double>(gamma[j]);
        sum_g += g;
        sum_gx += g * xhat;
        dg[j] += d * xhat;
        db[j] += d;
      }
      const double mean_g = sum_g / static_cast<double>(cols);
      const double mean_gx = sum_gx / static_cast<double>(cols);
      for (int64_t j = 0; j < cols; ++j) {
        const double xhat = (sum_at(xr, rr, j) - mu) * rs;
        const double g = static_cast<double>(dyr[j]) * static_cast<double>(gamma[j]);
        dxr[j] = static_cast<T>(rs * (g - mean_g - xhat * mean_gx));
      }
    }
  }
  for (int64_t j = 0; j < cols; ++j) {
    double sg = 0, sb = 0;
    for (int t = 0; t < nthreads; ++t) {
      sg += partial[2 * cols * t + j];
      sb += partial[2 * cols * t + cols + j];
    }
    dgamma[j] = static_cast<T>(static_cast<double>(dgamma[j]) + sg);
    dbeta[j] = static_cast<T>(static_cast<double>(dbeta[j]) + sb);
  }
}

#define ATTN_LAYER_NORM_INSTANTIATE(T)                                                             \
  template void layer_norm_forward_cpu<T>(const T*, const T*, const T*, const T*, double, int64_t, \
                                          int64_t, T*, T*, T*);                                    \
  template void layer_norm_backward_cpu<T>(const T*, const T*, const T*, const T*, const T*,       \
                                           const T*, int64_t, int64_t, T*, T*, T*);
ATTN_LAYER_NORM_INSTANTIATE(float)
ATTN_LAYER_NORM_INSTANTIATE(double)
#undef ATTN_LAYER_NORM_INSTANTIATE

}  // namespace attn::kernels
