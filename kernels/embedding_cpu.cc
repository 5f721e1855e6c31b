// CPU reference for kernels/embedding.h.
#include <algorithm>

#include "kernels/embedding.h"

namespace attn::kernels {

int64_t embedding_first_invalid_cpu(const int32_t* ids, int64_t n, int64_t vocab) {
  for (int64_t r = 0; r < n; ++r)
    if (ids[r] < 0 || ids[r] >= vocab) return r;
  return -1;
}

template <class T>
void embedding_forward_cpu(const int32_t* ids, const T* weight, T* out, int64_t rows, int64_t dim,
                           double scale, const T* pe, int64_t seq_len) {
#pragma omp parallel for schedule(static) if (rows * dim > (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    const T* w = weight + static_cast<int64_t>(ids[r]) * dim;
    T* o = out + r * dim;
    if (pe) {
      const T* e = pe + (r % seq_len) * dim;
      for (int64_t c = 0; c < dim; ++c)
        o[c] = static_cast<T>(static_cast<double>(w[c]) * scale + static_cast<double>(e[c]));
    } else {
      for (int64_t c = 0; c < dim; ++c) o[c] = static_cast<T>(static_cast<double>(w[c]) * scale);
    }
  }
}

template <class T>
void embedding_backward_cpu(const int32_t* ids, const T* grad_out, T* grad_weight, int64_t rows,
                            int64_t dim, double scale) {
  // Column blocks of 64 keep a thread's writes within a few cache lines per row.
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (dim + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (rows * dim > (1 << 15))
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kBlock, c1 = std::min(dim, c0 + kBlock);
    for (int64_t r = 0; r < rows; ++r) {
      const T* g = grad_out + r * dim;
      T* gw = grad_weight + static_cast<int64_t>(ids[r]) * dim;
      for (int64_t c = c0; c < c1; ++c) gw[c] += static_cast<T>(scale * static_cast<double>(g[c]));
    }
  }
}

template <class T>
void sinusoidal_positions_cpu(T* out, int64_t length, int64_t dim, int64_t offset) {
#pragma omp parallel for schedule(static) if (length * dim > (1 << 14))
  for (int64_t p = 0; p < length; ++p)
    for (int64_t c = 0; c < dim; ++c)
      out[p * dim + c] = static_cast<T>(sinusoidal_position_value(offset + p, c, dim));
}

template void embedding_forward_cpu<float>(const int32_t*, const float*, float*, int64_t, int64_t,
                                           double, const float*, int64_t);
template void embedding_forward_cpu<double>(const int32_t*, const double*, double*, int64_t,
                                            int64_t, double, const double*, int64_t);
template void embedding_backward_cpu<float>(const int32_t*, const float*, float*, int64_t, int64_t,
                                            double);
template void embedding_backward_cpu<double>(const int32_t*, const double*, double*, int64_t,
                                             int64_t, double);
template void sinusoidal_positions_cpu<float>(float*, int64_t, int64_t, int64_t);
template void sinusoidal_positions_cpu<double>(double*, int64_t, int64_t, int64_t);

}  // namespace attn::kernels
