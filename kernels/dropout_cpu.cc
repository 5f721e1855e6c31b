// CPU reference for kernels/dropout.h. Forward and backward are the same masked scaling, so
// both call one routine; element i depends only on i, so any split across threads gives the
// same result.
#include "kernels/dropout.h"

namespace attn::kernels {

namespace {
template <class T>
void masked_scale(const T* in, T* out, int64_t n, float p, uint64_t seed, uint64_t offset) {
  // 1/(1-p) in double, rounded once to T: the kept values are exactly x * T(1/(1-p)).
  const T keep_scale = static_cast<T>(1.0 / (1.0 - static_cast<double>(p)));
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    out[i] = dropout_keep(seed, offset, static_cast<uint64_t>(i), p) ? in[i] * keep_scale : T(0);
  }
}
}  // namespace

template <class T>
void dropout_forward_cpu(const T* x, T* y, int64_t n, float p, uint64_t seed, uint64_t offset) {
  masked_scale(x, y, n, p, seed, offset);
}

template <class T>
void dropout_backward_cpu(const T* grad_y, T* grad_x, int64_t n, float p, uint64_t seed,
                          uint64_t offset) {
  masked_scale(grad_y, grad_x, n, p, seed, offset);
}

template void dropout_forward_cpu<float>(const float*, float*, int64_t, float, uint64_t, uint64_t);
template void dropout_forward_cpu<double>(const double*, double*, int64_t, float, uint64_t,
                                          uint64_t);
template void dropout_backward_cpu<float>(const float*, float*, int64_t, float, uint64_t, uint64_t);
template void dropout_backward_cpu<double>(const double*, double*, int64_t, float, uint64_t,
                                           uint64_t);

}  // namespace attn::kernels
