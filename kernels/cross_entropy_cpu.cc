// CPU reference for kernels/cross_entropy.h. Rows run in parallel and write their results to
// per-row slots; the totals are then summed in row order (deterministic for any thread
// count). The exponentials of f32 logits use the vectorisable exp_f32 (kernels/cpu_math.h)
// with sums accumulated in double; f64 logits (gradient checks) use std::exp throughout.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/cpu_math.h"
#include "kernels/cross_entropy.h"

namespace attn::kernels {
namespace {

// Below this many logits a parallel region costs more than the row loop it splits.
constexpr int64_t kParallelElements = 1 << 15;

enum class RowState : uint8_t { kIgnored, kWrong, kCorrect, kBadTarget };


// Float partial sums are moved into the double total every kBlock elements per lane, so each
// float sum adds at most 64 terms (relative error <= 64 * 2^-24 before the double total).
constexpr int64_t kBlock = 64 * 4;

// sum_j f(x[j]) in double. f32 rows go 4 at a time through `vec` (f32x4 -> f32x4) with float
// partial sums per block of kBlock; the tail, and f64 rows, go through `one` element by element.
template <class T, class Vec, class One>
double blocked_sum(const T* x, int64_t n, Vec vec, One one) {
  double s = 0;
  int64_t j = 0;
  if constexpr (std::is_same_v<T, float>) {
    while (j + 4 <= n) {
      f32x4 vs{};
      for (const int64_t end = std::min(n - 3, j + kBlock); j < end; j += 4) vs += vec(load4(x + j));
      for (int k = 0; k < 4; ++k) s += static_cast<double>(vs[k]);
    }
  }
  for (; j < n; ++j) s += static_cast<double>(one(x[j]));
  return s;
}

// Largest value of a row (NaNs ignored, as by the strict comparison of a plain loop), its first
// position, and the row's sum in double.
template <class T>
void row_max_sum(const T* x, int64_t n, T& max, int64_t& argmax, double& sum) {
  T m = -std::numeric_limits<T>::infinity();
  f32x4 vm = f32x4{} - std::numeric_limits<float>::infinity();
  sum = blocked_sum(
      x, n,
      [&](auto v) {
        vm = v > vm ? v : vm;
        return v;
      },
      [&](T v) {
        m = v > m ? v : m;
        return v;
      });
  for (int k = 0; k < 4; ++k) m = vm[k] > m ? static_cast<T>(vm[k]) : m;
  int64_t first = 0;
  while (first < n && !(x[first] == m)) ++first;
  max = m;
  argmax = first < n ? first : 0;
}

// sum_j exp(x[j] - shift), the exponentials in T, the sum in double.
template <class T>
double sum_exp(const T* x, int64_t n, T shift) {
  return blocked_sum(
      x, n, [&](auto v) { return exp_f32(v - shift); }, [&](T v) { return exp_t(v - shift); });
}

// d[j] = g * (exp(x[j] - l) - u).
template <class T>
void softmax_grad_row(const T* x, int64_t n, T l, T g, T u, T* d) {
  int64_t j = 0;
  if constexpr (std::is_same_v<T, float>) {
    for (; j + 4 <= n; j += 4) store4(d + j, g * (exp_f32(load4(x + j) - l) - u));
  }
  for (; j < n; ++j) d[j] = g * (exp_t(x[j] - l) - u);
}

}  // namespace

template <class T>
CrossEntropyTotals cross_entropy_forward_cpu(const T* logits, const int32_t* targets, int64_t rows,
                                             int64_t vocab, double label_smoothing,
                                             int32_t ignore_index, T* lse) {
  std::vector<double> row_loss(static_cast<size_t>(rows), 0.0);
  std::vector<double> row_nll(static_cast<size_t>(rows), 0.0);
  std::vector<RowState> state(static_cast<size_t>(rows), RowState::kIgnored);
  const double eps = label_smoothing;
#pragma omp parallel for schedule(static) if (rows > 1 && rows * vocab >= kParallelElements)
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t t = targets[r];
    lse[r] = static_cast<T>(0);
    if (t == ignore_index) continue;
    if (t < 0 || t >= vocab) {
      state[r] = RowState::kBadTarget;
      continue;
    }
    const T* xr = logits + r * vocab;
    T mt;
    int64_t argmax;
    double sum_x;
    row_max_sum(xr, vocab, mt, argmax, sum_x);
    const double m = static_cast<double>(mt);
    const double l = m + std::log(sum_exp(xr, vocab, mt));
    const double nll = l - static_cast<double>(xr[t]);
    double loss = (1.0 - eps) * nll;
    // Skipped when eps == 0 so that a -inf logit does not turn 0 * inf into NaN.
    if (eps != 0.0) loss += eps * (l - sum_x / static_cast<double>(vocab));
    lse[r] = static_cast<T>(l);
    row_loss[r] = loss;
    row_nll[r] = nll;
    state[r] = argmax == t ? RowState::kCorrect : RowState::kWrong;
  }
  CrossEntropyTotals totals;
  for (int64_t r = 0; r < rows; ++r) {
    switch (state[r]) {
      case RowState::kIgnored:
        break;
      case RowState::kBadTarget:
        if (totals.bad_row < 0) {
          totals.bad_row = r;
          totals.bad_target = targets[r];
        }
        break;
      case RowState::kCorrect:
        ++totals.ncorrect;
        [[fallthrough]];
      case RowState::kWrong:
        ++totals.ntokens;
        totals.loss += row_loss[r];
        totals.nll += row_nll[r];
        break;
    }
  }
  return totals;
}

template <class T>
void cross_entropy_backward_cpu(const T* grad_loss, const T* logits, const int32_t* targets,
                                const T* lse, int64_t rows, int64_t vocab, double label_smoothing,
                                int32_t ignore_index, T* dlogits) {
  const double g = static_cast<double>(grad_loss[0]);
  const double eps = label_smoothing;
  const double uniform = eps / static_cast<double>(vocab);
#pragma omp parallel for schedule(static) if (rows > 1 && rows * vocab >= kParallelElements)
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t t = targets[r];
    T* dr = dlogits + r * vocab;
    if (t == ignore_index || t < 0 || t >= vocab) {
      for (int64_t j = 0; j < vocab; ++j) dr[j] = static_cast<T>(0);
      continue;
    }
    const T* xr = logits + r * vocab;
    const T l = lse[r], gt = static_cast<T>(g), ut = static_cast<T>(uniform);
    softmax_grad_row(xr, vocab, l, gt, ut, dr);
    // The target's extra (1 - eps) is applied here rather than by a branch in the loop.
    dr[t] = static_cast<T>(g * (static_cast<double>(exp_t(xr[t] - l)) - uniform - (1.0 - eps)));
  }
}

#define ATTN_CROSS_ENTROPY_INSTANTIATE(T)                                                     \
  template CrossEntropyTotals cross_entropy_forward_cpu<T>(const T*, const int32_t*, int64_t, \
                                                           int64_t, double, int32_t, T*);     \
  template void cross_entropy_backward_cpu<T>(const T*, const T*, const int32_t*, const T*,   \
                                              int64_t, int64_t, double, int32_t, T*);
ATTN_CROSS_ENTROPY_INSTANTIATE(float)
ATTN_CROSS_ENTROPY_INSTANTIATE(double)
#undef ATTN_CROSS_ENTROPY_INSTANTIATE

}  // namespace attn::kernels
