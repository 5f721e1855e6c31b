#include "kernels/cast.h"

namespace attn::kernels {

template <class Src, class Dst>
void cast_cpu(const Src* src, Dst* dst, int64_t n) {
#pragma omp parallel for if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) dst[i] = from_float<Dst>(static_cast<double>(to_float(src[i])));
}

template <class T>
void fill_cpu(T* dst, double value, int64_t n) {
  const T v = from_float<T>(value);
  for (int64_t i = 0; i < n; ++i) dst[i] = v;
}

#define ATTN_CAST_PAIR(S, D) template void cast_cpu<S, D>(const S*, D*, int64_t);
#define ATTN_CAST_FROM(S)  \
  ATTN_CAST_PAIR(S, float) \
  ATTN_CAST_PAIR(S, double) ATTN_CAST_PAIR(S, bf16) ATTN_CAST_PAIR(S, f16) ATTN_CAST_PAIR(S, int32_t)
ATTN_CAST_FROM(float)
ATTN_CAST_FROM(double)
ATTN_CAST_FROM(bf16)
ATTN_CAST_FROM(f16)
ATTN_CAST_FROM(int32_t)
#undef ATTN_CAST_FROM
#undef ATTN_CAST_PAIR

template void fill_cpu<float>(float*, double, int64_t);
template void fill_cpu<double>(double*, double, int64_t);
template void fill_cpu<bf16>(bf16*, double, int64_t);
template void fill_cpu<f16>(f16*, double, int64_t);
template void fill_cpu<int32_t>(int32_t*, double, int64_t);

}  // namespace attn::kernels
