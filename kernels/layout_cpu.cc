#include "kernels/layout.h"

#include <cstring>

namespace attn::kernels {

// Loops over [outer, a] blocks of mid * b consecutive source rows, the destination row computed
// from the loop indices: swap_axes_dst_row's three 64-bit divisions per row cost more than
// moving a head's 32 floats (most of the head split/merge time of a CPU training step).
template <class T>
void swap_axes_cpu(const T* x, T* out, const SwapAxesShape& s) {
  const int64_t blocks = s.outer * s.a;
  const int64_t rows = blocks * s.mid * s.b;
#pragma omp parallel for if (rows * s.inner > (1 << 16))
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t io = blk / s.a, ia = blk % s.a;
    const T* src = x + blk * s.mid * s.b * s.inner;
    for (int64_t im = 0; im < s.mid; ++im)
      for (int64_t ib = 0; ib < s.b; ++ib, src += s.inner) {
        const int64_t dst_row = ((io * s.b + ib) * s.mid + im) * s.a + ia;
        std::memcpy(out + dst_row * s.inner, src, sizeof(T) * s.inner);
      }
  }
}

template <class T>
void copy_2d_cpu(const T* src, int64_t src_stride, T* dst, int64_t dst_stride, int64_t rows,
                 int64_t cols) {
#pragma omp parallel for if (rows * cols > (1 << 16))
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(dst + r * dst_stride, src + r * src_stride, sizeof(T) * cols);
}

template <class T>
void expand_axis_cpu(const T* x, T* out, int64_t outer, int64_t n, int64_t inner) {
  const int64_t rows = outer * n;
#pragma omp parallel for if (rows * inner > (1 << 16))
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(out + r * inner, x + (r / n) * inner, sizeof(T) * inner);
}

#define ATTN_INSTANTIATE(T)                                                         \
  template void swap_axes_cpu<T>(const T*, T*, const SwapAxesShape&);             \
  template void copy_2d_cpu<T>(const T*, int64_t, T*, int64_t, int64_t, int64_t); \
  template void expand_axis_cpu<T>(const T*, T*, int64_t, int64_t, int64_t);
ATTN_FOR_EACH_DTYPE(ATTN_INSTANTIATE)
#undef ATTN_INSTANTIATE

}  // namespace attn::kernels
