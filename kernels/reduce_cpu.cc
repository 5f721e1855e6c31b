#include "kernels/reduce.h"

#include <vector>

namespace attn::kernels {

template <class T>
void sum_axis_cpu(const T* x, T* out, int64_t outer, int64_t n, int64_t inner, bool accumulate) {
#pragma omp parallel for if (outer * n * inner > (1 << 16) && outer > 1)
  for (int64_t o = 0; o < outer; ++o) {
    std::vector<double> acc(static_cast<size_t>(inner), 0.0);
    const T* xo = x + o * n * inner;
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < inner; ++i) acc[i] += static_cast<double>(xo[j * inner + i]);
    T* oo = out + o * inner;
    for (int64_t i = 0; i < inner; ++i)
      oo[i] = accumulate ? static_cast<T>(oo[i] + acc[i]) : static_cast<T>(acc[i]);
  }
}

template void sum_axis_cpu<float>(const float*, float*, int64_t, int64_t, int64_t, bool);
template void sum_axis_cpu<double>(const double*, double*, int64_t, int64_t, int64_t, bool);

}  // namespace attn::kernels
