#include "ops/matmul.h"

#include "kernels/gemm.h"
#include "ops/check.h"
#include "ops/dispatch.h"
#include "ops/reduce.h"

namespace attn::ops {

namespace {

struct Plan {
  kernels::GemmShape g;
  Shape out_shape;
};

Plan plan(const char* op, const Tensor& a, const Tensor& b, bool ta, bool tb) {
  check_float(op, "a", a);
  check_float(op, "b", b);
  check_like(op, "a", a, "b", b);
  ATTN_CHECK(a.dim() >= 2 && b.dim() >= 2, op, ": operands need at least 2 dimensions, got ",
             a.shape(), " and ", b.shape());
  const int64_t m = ta ? a.size(-1) : a.size(-2);
  const int64_t ka = ta ? a.size(-2) : a.size(-1);
  const int64_t kb = tb ? b.size(-1) : b.size(-2);
  const int64_t n = tb ? b.size(-2) : b.size(-1);
  ATTN_CHECK(ka == kb, op, ": inner dimensions differ: a ", a.shape(), (ta ? " (transposed)" : ""),
             " and b ", b.shape(), (tb ? " (transposed)" : ""));
  const Shape batch_a(a.shape().begin(), a.shape().end() - 2);
  const Shape batch_b(b.shape().begin(), b.shape().end() - 2);
  ATTN_CHECK(b.dim() == 2 || batch_a == batch_b, op, ": batch dimensions differ: a ", a.shape(),
             " and b ", b.shape());
  Plan p;
  p.g.m = m;
  p.g.n = n;
  p.g.k = ka;
  p.g.trans_a = ta;
  p.g.trans_b = tb;
  p.g.batch = shape_numel(batch_a);
  p.g.stride_a = m * ka;
  p.g.stride_b = b.dim() == 2 ? 0 : kb * n;
  p.g.stride_c = m * n;
  p.out_shape = batch_a;
  p.out_shape.push_back(m);
  p.out_shape.push_back(n);
  return p;
}

void run(const char* op, const Plan& p, const Tensor& a, const Tensor& b, double alpha, double beta,
         Tensor& out) {
  dispatch_float(
      op, a,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::gemm_cpu<T>(p.g, alpha, a.data<T>(), b.data<T>(), beta, out.data<T>());
      },
      kNoCuda);
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, double alpha) {
  const Plan p = plan("matmul", a, b, trans_a, trans_b);
  Tensor out = Tensor::empty(p.out_shape, a.dtype(), a.device());
  run("matmul", p, a, b, alpha, 0.0, out);
  return out;
}

void matmul_acc(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, Tensor& out,
                double alpha) {
  const Plan p = plan("matmul", a, b, trans_a, trans_b);
  check_like("matmul", "a", a, "out", out);
  ATTN_CHECK(out.shape() == p.out_shape, "matmul: accumulator has shape ", out.shape(),
             " but the product has shape ", p.out_shape);
  run("matmul", p, a, b, alpha, 1.0, out);
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_float("linear", "x", x);
  check_dim("linear", "weight", w, 2);
  check_like("linear", "x", x, "weight", w);
  check_like("linear", "x", x, "bias", bias);
  ATTN_CHECK(x.dim() >= 1 && x.size(-1) == w.size(1), "linear: x has shape ", x.shape(),
             " but weight has shape ", w.shape(), " (expected [out, ", x.size(-1), "])");
  if (bias.defined()) {
    ATTN_CHECK(bias.dim() == 1 && bias.size(0) == w.size(0), "linear: bias has shape ",
               bias.shape(), " but weight has shape ", w.shape());
  }
  const int64_t in = w.size(1), out_f = w.size(0);
  const int64_t rows =
      in ? x.numel() / in : shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  Shape out_shape = x.shape();
  out_shape.back() = out_f;
  kernels::GemmShape g;
  g.m = rows;
  g.n = out_f;
  g.k = in;
  g.trans_b = true;
  // With a bias, every output row starts as the bias and the product accumulates onto it.
  Tensor out = bias.defined()
                   ? expand_dim(bias.detach().view({1, out_f}), {rows, out_f}, 0).view(out_shape)
                   : Tensor::empty(out_shape, x.dtype(), x.device());
  const double beta = bias.defined() ? 1.0 : 0.0;
  dispatch_float(
      "linear", x,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::gemm_cpu<T>(g, 1.0, x.data<T>(), w.data<T>(), beta, out.data<T>());
      },
      kNoCuda);
  return out;
}

}  // namespace attn::ops
