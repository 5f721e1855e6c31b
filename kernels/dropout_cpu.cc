// CPU reference for kernels/dropout.h. Forward and backward are the same masked scaling, so
// both call one routine; element i depends only on i, so any split across threads gives the
// same result.
#include <algorithm>

#include "kernels/dropout.h"

namespace attn::kernels {

namespace {
template <class T>
void masked_scale(const T* in, T* out, int64_t n, float p, uint64_t seed, uint64_t offset) {
  // 1/(1-p) in double, rounded once to T: the kept values are exactly x * T(1/(1-p)).
  const T keep_scale = static_cast<T>(1.0 / (1.0 - static_cast<double>(p)));
  // One Philox block gives the 4 elements that share its counter (philox.h's convention), so
  // each block is drawn once rather than once per element.
  const int64_t blocks = static_cast<int64_t>(philox_counters(static_cast<uint64_t>(n)));
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t c = 0; c < blocks; ++c) {
    const Philox4 r = philox_block(seed, offset + static_cast<uint64_t>(c));
    const int64_t end = std::min<int64_t>(n, 4 * c + 4);
    for (int64_t i = 4 * c; i < end; ++i)
      out[i] = dropout_keep_bits(r.v[i - 4 * c], p) ? in[i] * keep_scale : T(0);
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
