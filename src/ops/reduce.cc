#include "ops/reduce.h"

#include "core/cuda_backend.h"
#include "kernels/layout.h"
#include "kernels/reduce.h"
#include "ops/check.h"
#include "ops/dispatch.h"

namespace attn::ops {

namespace {
Tensor sum_axis(const char* op, const Tensor& x, int64_t outer, int64_t n, int64_t inner,
                const Shape& out_shape) {
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  dispatch_float(
      op, x,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::sum_axis_cpu<T>(x.data<T>(), out.data<T>(), outer, n, inner, false);
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        // Per-segment partial sums of large reductions (freed when the op returns; the
        // allocator orders reuse on the device's stream).
        const int64_t ws = kernels::sum_axis_cuda_workspace(outer, n, inner);
        Tensor workspace = ws > 0 ? Tensor::empty({ws}, kF32, x.device()) : Tensor();
        kernels::sum_axis_cuda<T>(x.data<T>(), out.data<T>(), outer, n, inner, false,
                                  ws > 0 ? workspace.data<float>() : nullptr,
                                  cuda::stream(x.device().index));
      });
  return out;
}
}  // namespace

Tensor sum_all(const Tensor& x) {
  check_float("sum", "x", x);
  return sum_axis("sum", x, 1, x.numel(), 1, Shape{});
}

Tensor sum_dim(const Tensor& x, int64_t dim, bool keepdim) {
  check_float("sum", "x", x);
  const int64_t d = wrap_dim("sum", dim, x.dim());
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= x.size(i);
  for (int64_t i = d + 1; i < x.dim(); ++i) inner *= x.size(i);
  Shape out_shape = x.shape();
  if (keepdim) {
    out_shape[d] = 1;
  } else {
    out_shape.erase(out_shape.begin() + d);
  }
  return sum_axis("sum", x, outer, x.size(d), inner, out_shape);
}

Tensor sum_to_last(const Tensor& x) {
  check_float("sum", "x", x);
  ATTN_CHECK(x.dim() >= 1, "sum: sum_to_last needs at least 1 dimension");
  const int64_t n = x.size(-1);
  return sum_axis("sum", x, 1, n ? x.numel() / n : 0, n, Shape{n});
}

Tensor expand_dim(const Tensor& x, const Shape& shape, int64_t dim) {
  // out[o, j, i] = x[o, i] for j in [0, shape[dim]): a copy of each [inner] block n times.
  const int64_t d = wrap_dim("expand", dim, static_cast<int64_t>(shape.size()));
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < d; ++i) outer *= shape[i];
  for (size_t i = d + 1; i < shape.size(); ++i) inner *= shape[i];
  const int64_t n = shape[d];
  ATTN_CHECK(x.numel() == outer * inner, "expand: cannot expand shape ", x.shape(), " to ", shape,
             " along dimension ", dim);
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  dispatch_any(
      "expand", x,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::expand_axis_cpu<T>(x.data<T>(), out.data<T>(), outer, n, inner);
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::expand_axis_cuda<T>(x.data<T>(), out.data<T>(), outer, n, inner,
                                     cuda::stream(x.device().index));
      });
  return out;
}

}  // namespace attn::ops
