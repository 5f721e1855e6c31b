#include <cstring>

#include "kernels/index.h"

namespace attn::kernels {

template <class T>
void gather_rows_cpu(const T* x, const int32_t* index, T* out, int64_t n_index, int64_t row_size) {
#pragma omp parallel for if (n_index * row_size > (1 << 16))
  for (int64_t i = 0; i < n_index; ++i)
    std::memcpy(out + i * row_size, x + static_cast<int64_t>(index[i]) * row_size,
                sizeof(T) * row_size);
}

#define ATTN_INSTANTIATE(T) \
  template void gather_rows_cpu<T>(const T*, const int32_t*, T*, int64_t, int64_t);
ATTN_FOR_EACH_DTYPE(ATTN_INSTANTIATE)
#undef ATTN_INSTANTIATE

}  // namespace attn::kernels
