#include "ops/elementwise.h"

#include "core/cuda_backend.h"
#include "kernels/elementwise.h"
#include "ops/check.h"
#include "ops/dispatch.h"

namespace attn::ops {

namespace {
Tensor binary(const char* op, kernels::BinaryOp kind, const Tensor& a, const Tensor& b) {
  check_float(op, "a", a);
  check_float(op, "b", b);
  check_same_shape(op, "a", a, "b", b);
  check_like(op, "a", a, "b", b);
  Tensor out = Tensor::empty_like(a);
  dispatch_float(
      op, a,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::binary_cpu<T>(kind, a.data<T>(), b.data<T>(), out.data<T>(), a.numel());
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::binary_cuda<T>(kind, a.data<T>(), b.data<T>(), out.data<T>(), a.numel(),
                                cuda::stream(a.device().index));
      });
  return out;
}
}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary("add", kernels::BinaryOp::kAdd, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary("sub", kernels::BinaryOp::kSub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary("mul", kernels::BinaryOp::kMul, a, b); }

Tensor scale(const Tensor& x, double factor) {
  check_float("scale", "x", x);
  Tensor out = Tensor::empty_like(x);
  dispatch_float(
      "scale", x,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::scale_cpu<T>(x.data<T>(), factor, out.data<T>(), x.numel());
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::scale_cuda<T>(x.data<T>(), factor, out.data<T>(), x.numel(),
                               cuda::stream(x.device().index));
      });
  return out;
}

void add_(Tensor& dst, const Tensor& src) { axpy_(dst, 1.0, src); }

void axpy_(Tensor& dst, double alpha, const Tensor& src) {
  check_float("axpy_", "dst", dst);
  check_same_shape("axpy_", "dst", dst, "src", src);
  check_like("axpy_", "dst", dst, "src", src);
  dispatch_float(
      "axpy_", dst,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::axpy_cpu<T>(dst.data<T>(), alpha, src.data<T>(), dst.numel());
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::axpy_cuda<T>(dst.data<T>(), alpha, src.data<T>(), dst.numel(),
                              cuda::stream(dst.device().index));
      });
}

Tensor relu(const Tensor& x) {
  check_float("relu", "x", x);
  Tensor out = Tensor::empty_like(x);
  dispatch_float(
      "relu", x,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::relu_forward_cpu<T>(x.data<T>(), out.data<T>(), x.numel());
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::relu_forward_cuda<T>(x.data<T>(), out.data<T>(), x.numel(),
                                      cuda::stream(x.device().index));
      });
  return out;
}

Tensor relu_backward(const Tensor& grad_y, const Tensor& y) {
  check_same_shape("relu_backward", "grad_y", grad_y, "y", y);
  check_like("relu_backward", "y", y, "grad_y", grad_y);
  Tensor dx = Tensor::empty_like(y);
  dispatch_float(
      "relu_backward", y,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::relu_backward_cpu<T>(grad_y.data<T>(), y.data<T>(), dx.data<T>(), y.numel());
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::relu_backward_cuda<T>(grad_y.data<T>(), y.data<T>(), dx.data<T>(), y.numel(),
                                       cuda::stream(y.device().index));
      });
  return dx;
}

Tensor bias_add(const Tensor& x, const Tensor& bias, bool relu) {
  const char* op = relu ? "bias_relu" : "bias_add";
  check_float(op, "x", x);
  check_like(op, "x", x, "bias", bias);
  check_dim(op, "bias", bias, 1);
  ATTN_CHECK(x.dim() >= 1 && x.size(-1) == bias.size(0), op, ": bias has shape ", bias.shape(),
             " but x has shape ", x.shape(), " (expected [", x.dim() ? x.size(-1) : 0, "])");
  Tensor out = Tensor::empty_like(x);
  const int64_t cols = bias.size(0);
  const int64_t rows = cols ? x.numel() / cols : 0;
  dispatch_float(
      op, x,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::bias_add_cpu<T>(x.data<T>(), bias.data<T>(), out.data<T>(), rows, cols, relu);
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::bias_add_cuda<T>(x.data<T>(), bias.data<T>(), out.data<T>(), rows, cols, relu,
                                  cuda::stream(x.device().index));
      });
  return out;
}

}  // namespace attn::ops
