// CPU reference for kernels/cross_entropy.h. Rows run in parallel and write their results to
// per-row slots; the totals are then summed in row order (deterministic for any thread
// count).
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cross_entropy.h"

namespace attn::kernels {
namespace {

// Below this many logits a parallel region costs more than the row loop it splits.
constexpr int64_t kParallelElements = 1 << 15;

enum class RowState : uint8_t { kIgnored, kWrong, kCorrect, kBadTarget };

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
    double m = static_cast<double>(xr[0]);
    int64_t argmax = 0;
    double sum_x = m;
    for (int64_t j = 1; j < vocab; ++j) {
      const double v = static_cast<double>(xr[j]);
      sum_x += v;
      if (v > m) {  // strict: ties keep the first maximum, as torch.argmax
        m = v;
        argmax = j;
      }
    }
    double sum_exp = 0;
    for (int64_t j = 0; j < vocab; ++j) sum_exp += std::exp(static_cast<double>(xr[j]) - m);
    const double l = m + std::log(sum_exp);
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
    const double l = static_cast<double>(lse[r]);
    for (int64_t j = 0; j < vocab; ++j)
      dr[j] = static_cast<T>(g * (std::exp(static_cast<double>(xr[j]) - l) - uniform));
    // The target's extra (1 - eps) is applied here rather than by a branch in the loop.
    dr[t] = static_cast<T>(g * (std::exp(static_cast<double>(xr[t]) - l) - uniform - (1.0 - eps)));
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
