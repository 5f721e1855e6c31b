#include "ops/index.h"

#include "core/cuda_backend.h"
#include "kernels/index.h"
#include "ops/check.h"
#include "ops/dispatch.h"

namespace attn::ops {

Tensor index_select0(const Tensor& x, const Tensor& index) {
  constexpr const char* kOp = "index_select0";
  check_defined(kOp, "x", x);
  check_dtype(kOp, "index", index, kI32);
  ATTN_CHECK(x.dim() >= 1, kOp, ": x must have at least one dimension, got shape ", x.shape());
  ATTN_CHECK(index.dim() == 1, kOp, ": index must be 1-D, got shape ", index.shape());
  // Checked on the host: an out-of-range row would read outside x's storage.
  const std::vector<int32_t> idx = index.to_int_vector();
  for (size_t i = 0; i < idx.size(); ++i) {
    ATTN_CHECK(idx[i] >= 0 && idx[i] < x.size(0), kOp, ": index[", i, "] = ", idx[i],
               " is outside [0, ", x.size(0), ") for x of shape ", x.shape());
  }
  Shape out_shape = x.shape();
  out_shape[0] = index.size(0);
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  if (out.numel() == 0) return out;
  const Tensor dev_index = index.device() == x.device() ? index : index.to(x.device());
  const int64_t row_size = x.size(0) ? x.numel() / x.size(0) : 0;
  dispatch_any(
      kOp, x,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::gather_rows_cpu<T>(x.data<T>(), dev_index.data<int32_t>(), out.data<T>(),
                                    index.size(0), row_size);
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::gather_rows_cuda<T>(x.data<T>(), dev_index.data<int32_t>(), out.data<T>(),
                                     index.size(0), row_size, cuda::stream(x.device().index));
      });
  return out;
}

}  // namespace attn::ops
