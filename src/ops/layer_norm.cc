#include "ops/layer_norm.h"

#include <initializer_list>
#include <utility>

#include "core/cuda_backend.h"
#include "kernels/layer_norm.h"
#include "ops/check.h"
#include "ops/dispatch.h"

namespace attn::ops {

namespace {

// Shape of the per-row statistics: x's shape without the normalised dimension.
Shape row_shape(const Tensor& x) {
  return Shape(x.shape().begin(), x.shape().end() - 1);
}

// Statistics at least in f32 so bf16/f16 data keep them precise.
DType stat_dtype(const Tensor& x) {
  return x.dtype() == kF64 ? kF64 : kF32;
}

using Named = std::pair<const char*, const Tensor*>;

// What forward and backward both need: x float with a non-empty last dimension, each
// parameter ([cols], x's dtype and device) and the optional residual (x's shape).
void check_inputs(const char* op, const Tensor& x, std::initializer_list<Named> params,
                  const Tensor& residual) {
  check_float(op, "x", x);
  ATTN_CHECK(x.dim() >= 1 && x.size(-1) > 0, op,
             ": x needs a non-empty last dimension to normalise over, got shape ", x.shape());
  const int64_t cols = x.size(-1);
  for (auto [name, p] : params) {
    check_defined(op, name, *p);
    ATTN_CHECK(p->dim() == 1 && p->size(0) == cols, op, ": ", name, " has shape ", p->shape(),
               " but x has shape ", x.shape(), " (expected [", cols, "])");
    check_like(op, "x", x, name, *p);
  }
  if (residual.defined()) {
    check_same_shape(op, "x", x, "residual", residual);
    check_like(op, "x", x, "residual", residual);
  }
}

}  // namespace

LayerNormOutput layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                   double eps, const Tensor& residual) {
  const char* op = "layer_norm";
  check_inputs(op, x, {{"gamma", &gamma}, {"beta", &beta}}, residual);
  ATTN_CHECK(eps >= 0, op, ": eps must be >= 0, got ", eps);
  const int64_t cols = x.size(-1);
  const int64_t rows = x.numel() / cols;
  LayerNormOutput out;
  out.y = Tensor::empty_like(x);
  out.mean = Tensor::empty(row_shape(x), stat_dtype(x), x.device());
  out.rstd = Tensor::empty(row_shape(x), stat_dtype(x), x.device());
  dispatch_float(
      op, x,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::layer_norm_forward_cpu<T>(x.data<T>(),
                                           residual.defined() ? residual.data<T>() : nullptr,
                                           gamma.data<T>(), beta.data<T>(), eps, rows, cols,
                                           out.y.data<T>(), out.mean.data<T>(), out.rstd.data<T>());
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::layer_norm_forward_cuda<T>(
            x.data<T>(), residual.defined() ? residual.data<T>() : nullptr, gamma.data<T>(),
            beta.data<T>(), eps, rows, cols, out.y.data<T>(), out.mean.data<float>(),
            out.rstd.data<float>(), cuda::stream(x.device().index));
      });
  return out;
}

LayerNormGrads layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& residual,
                                   const Tensor& gamma, const Tensor& mean, const Tensor& rstd) {
  const char* op = "layer_norm_backward";
  check_inputs(op, x, {{"gamma", &gamma}}, residual);
  check_same_shape(op, "dy", dy, "x", x);
  check_like(op, "x", x, "dy", dy);
  const int64_t cols = x.size(-1);
  const int64_t rows = x.numel() / cols;
  for (auto [name, s] : {Named{"mean", &mean}, {"rstd", &rstd}}) {
    check_defined(op, name, *s);
    ATTN_CHECK(s->shape() == row_shape(x), op, ": ", name, " has shape ", s->shape(),
               " but x has shape ", x.shape());
    ATTN_CHECK(s->dtype() == stat_dtype(x), op, ": ", name, " is ", s->dtype(), " but x is ",
               x.dtype(), " (expected ", stat_dtype(x), " statistics)");
    ATTN_CHECK(s->device() == x.device(), op, ": ", name, " is on ", s->device(), " but x is on ",
               x.device());
  }
  LayerNormGrads g;
  g.dx = Tensor::empty_like(x);
  // The kernel accumulates parameter gradients, so they start at zero.
  g.dgamma = Tensor::zeros_like(gamma);
  g.dbeta = Tensor::zeros_like(gamma);
  dispatch_float(
      op, x,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::layer_norm_backward_cpu<T>(
            dy.data<T>(), x.data<T>(), residual.defined() ? residual.data<T>() : nullptr,
            gamma.data<T>(), mean.data<T>(), rstd.data<T>(), rows, cols, g.dx.data<T>(),
            g.dgamma.data<T>(), g.dbeta.data<T>());
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        // Per-block partial sums of dgamma/dbeta (fp32), reduced in a fixed order.
        Tensor workspace = Tensor::empty({kernels::layer_norm_backward_cuda_workspace(rows, cols)},
                                         kF32, x.device());
        kernels::layer_norm_backward_cuda<T>(
            dy.data<T>(), x.data<T>(), residual.defined() ? residual.data<T>() : nullptr,
            gamma.data<T>(), mean.data<float>(), rstd.data<float>(), rows, cols, g.dx.data<T>(),
            g.dgamma.data<T>(), g.dbeta.data<T>(), workspace.data<float>(),
            cuda::stream(x.device().index));
      });
  return g;
}

}  // namespace attn::ops
