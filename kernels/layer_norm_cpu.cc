// CPU reference for kernels/layer_norm.h. One row per iteration; rows are spread over OpenMP
// threads when there is enough work to pay for the fork. f64 data: statistics in double, one
// scalar accumulator (the gradient checks' reference). f32 data: row statistics in float, as
// the CUDA kernels keep them, in `omp simd` loops that vectorise (the double form, converting
// every element, was ~6% of a demo-model CPU training step; docs/PERFORMANCE.md); dgamma and
// dbeta, sums over all rows, go from float sums of 32 rows into double totals.
#include <algorithm>
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

// The backward's row loop and its dgamma/dbeta sums: body(dg, db) runs in every thread of one
// parallel region (it holds the `omp for` over the rows) with the thread's own double slices
// dg, db of cols values; the slices are then added into dgamma/dbeta in thread order, so the
// result does not depend on scheduling.
template <class T, class Body>
void with_param_grad_slices(int64_t rows, int64_t cols, T* dgamma, T* dbeta, Body body) {
  int nthreads = 1;
#ifdef _OPENMP
  if (rows > 1 && rows * cols >= kParallelElements) nthreads = omp_get_max_threads();
#endif
  std::vector<double> partial(static_cast<size_t>(2 * cols * nthreads), 0.0);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    double* dg = partial.data() + 2 * cols * tid;
    body(dg, dg + cols);
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
  with_param_grad_slices(rows, cols, dgamma, dbeta, [&](double* dg, double* db) {
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
  });
}

namespace {

// One row of the f32 forward; kResidual: s = x + residual (rounded to float), else s = x.
template <bool kResidual>
void forward_row_f32(const float* xr, const float* rr, const float* gamma, const float* beta,
                     float eps, int64_t cols, float* yr, float* mean, float* rstd) {
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < cols; ++j) sum += kResidual ? xr[j] + rr[j] : xr[j];
  const float mu = sum / static_cast<float>(cols);
  // Two passes: the one-pass E[s^2] - E[s]^2 cancels catastrophically for large means.
  float sq = 0;
#pragma omp simd reduction(+ : sq)
  for (int64_t j = 0; j < cols; ++j) {
    const float d = (kResidual ? xr[j] + rr[j] : xr[j]) - mu;
    sq += d * d;
  }
  const float rs = 1.0f / std::sqrt(sq / static_cast<float>(cols) + eps);
#pragma omp simd
  for (int64_t j = 0; j < cols; ++j)
    yr[j] = ((kResidual ? xr[j] + rr[j] : xr[j]) - mu) * rs * gamma[j] + beta[j];
  *mean = mu;
  *rstd = rs;
}

// One row of the f32 backward: dx of the row, its dgamma / dbeta terms added to dg / db (float
// sums of at most kFlushRows rows, then moved into double: the full sums run over every row of
// the batch, thousands of terms).
constexpr int64_t kFlushRows = 32;
template <bool kResidual>
void backward_row_f32(const float* dyr, const float* xr, const float* rr, const float* gamma,
                      float mu, float rs, int64_t cols, float* dxr, float* dg, float* db) {
  float sum_g = 0, sum_gx = 0;
#pragma omp simd reduction(+ : sum_g, sum_gx)
  for (int64_t j = 0; j < cols; ++j) {
    const float xhat = ((kResidual ? xr[j] + rr[j] : xr[j]) - mu) * rs;
    const float g = dyr[j] * gamma[j];
    sum_g += g;
    sum_gx += g * xhat;
    dg[j] += dyr[j] * xhat;
    db[j] += dyr[j];
  }
  const float mean_g = sum_g / static_cast<float>(cols);
  const float mean_gx = sum_gx / static_cast<float>(cols);
#pragma omp simd
  for (int64_t j = 0; j < cols; ++j) {
    const float xhat = ((kResidual ? xr[j] + rr[j] : xr[j]) - mu) * rs;
    dxr[j] = rs * (dyr[j] * gamma[j] - mean_g - xhat * mean_gx);
  }
}

}  // namespace

template <>
void layer_norm_forward_cpu<float>(const float* x, const float* residual, const float* gamma,
                                   const float* beta, double eps, int64_t rows, int64_t cols,
                                   float* y, float* mean, float* rstd) {
  const float e = static_cast<float>(eps);
#pragma omp parallel for schedule(static) if (rows > 1 && rows * cols >= kParallelElements)
  for (int64_t r = 0; r < rows; ++r) {
    if (residual)
      forward_row_f32<true>(x + r * cols, residual + r * cols, gamma, beta, e, cols, y + r * cols,
                            mean + r, rstd + r);
    else
      forward_row_f32<false>(x + r * cols, nullptr, gamma, beta, e, cols, y + r * cols, mean + r,
                             rstd + r);
  }
}

template <>
void layer_norm_backward_cpu<float>(const float* dy, const float* x, const float* residual,
                                    const float* gamma, const float* mean, const float* rstd,
                                    int64_t rows, int64_t cols, float* dx, float* dgamma,
                                    float* dbeta) {
  with_param_grad_slices(rows, cols, dgamma, dbeta, [&](double* dg, double* db) {
    std::vector<float> block(static_cast<size_t>(2 * cols), 0.0f);
    float* fg = block.data();
    float* fb = fg + cols;
    int64_t in_block = 0;
    auto flush = [&] {
      for (int64_t j = 0; j < cols; ++j) {
        dg[j] += static_cast<double>(fg[j]);
        db[j] += static_cast<double>(fb[j]);
      }
      std::fill(block.begin(), block.end(), 0.0f);
      in_block = 0;
    };
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t o = r * cols;
      if (residual)
        backward_row_f32<true>(dy + o, x + o, residual + o, gamma, mean[r], rstd[r], cols, dx + o,
                               fg, fb);
      else
        backward_row_f32<false>(dy + o, x + o, nullptr, gamma, mean[r], rstd[r], cols, dx + o, fg,
                                fb);
      if (++in_block == kFlushRows) flush();
    }
    if (in_block > 0) flush();
  });
}

#define ATTN_LAYER_NORM_INSTANTIATE(T)                                                             \
  template void layer_norm_forward_cpu<T>(const T*, const T*, const T*, const T*, double, int64_t, \
                                          int64_t, T*, T*, T*);                                    \
  template void layer_norm_backward_cpu<T>(const T*, const T*, const T*, const T*, const T*,       \
                                           const T*, int64_t, int64_t, T*, T*, T*);
ATTN_LAYER_NORM_INSTANTIATE(double)  // float: the specialisations above
#undef ATTN_LAYER_NORM_INSTANTIATE

}  // namespace attn::kernels
