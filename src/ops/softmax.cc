#include "ops/softmax.h"

#include <utility>

#include "core/cuda_backend.h"
#include "kernels/softmax.h"
#include "ops/check.h"
#include "ops/dispatch.h"

namespace attn::ops {

namespace {
// Rows and columns of the [rows, cols] view the kernels work on; an empty last dimension
// means no rows. (Not a structured binding: clang before 16 cannot capture those in the
// dispatch lambdas, and the fuzz build uses clang 14.)
struct RowsCols {
  int64_t rows, cols;
};
RowsCols rows_cols(const char* op, const Tensor& x) {
  ATTN_CHECK(x.dim() >= 1, op, ": x must have at least 1 dimension, got shape ", x.shape());
  const int64_t cols = x.size(-1);
  return {cols ? x.numel() / cols : 0, cols};
}
}  // namespace

Tensor softmax_forward(const Tensor& x) {
  check_float("softmax", "x", x);
  const RowsCols rc = rows_cols("softmax", x);
  const int64_t rows = rc.rows, cols = rc.cols;
  Tensor y = Tensor::empty_like(x);
  dispatch_float(
      "softmax", x,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::softmax_forward_cpu<T>(x.data<T>(), y.data<T>(), rows, cols);
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::softmax_forward_cuda<T>(x.data<T>(), y.data<T>(), rows, cols,
                                         cuda::stream(x.device().index));
      });
  return y;
}

Tensor softmax_backward(const Tensor& y, const Tensor& dy) {
  const char* op = "softmax_backward";
  check_float(op, "y", y);
  check_same_shape(op, "y", y, "dy", dy);
  check_like(op, "y", y, "dy", dy);
  const RowsCols rc = rows_cols(op, y);
  const int64_t rows = rc.rows, cols = rc.cols;
  Tensor dx = Tensor::empty_like(y);
  dispatch_float(
      op, y,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::softmax_backward_cpu<T>(y.data<T>(), dy.data<T>(), dx.data<T>(), rows, cols);
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::softmax_backward_cuda<T>(y.data<T>(), dy.data<T>(), dx.data<T>(), rows, cols,
                                          cuda::stream(y.device().index));
      });
  return dx;
}

}  // namespace attn::ops
