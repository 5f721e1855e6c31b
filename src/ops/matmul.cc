#include "ops/matmul.h"

#include "core/cuda_backend.h"
#include "kernels/gemm.h"
#include "ops/check.h"
#include "ops/dispatch.h"
#include "ops/elementwise.h"
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
  if (b.dim() == 2 && !ta && p.g.batch > 1) {
    // A shared b against untransposed a: the batch entries are consecutive rows of one
    // [batch * M, K] matrix, and one large GEMM beats many small ones.
    p.g.m = m * p.g.batch;
    p.g.batch = 1;
    p.g.stride_a = p.g.stride_b = p.g.stride_c = 0;
  }
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
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::gemm_cuda<T>(p.g, alpha, a.data<T>(), b.data<T>(), beta, out.data<T>(),
                              cuda::gemm_context(a.device().index));
      });
}

struct LinearPlan {
  kernels::GemmShape g;  // [rows, in] @ [out, in]^T
  Shape out_shape;
};

LinearPlan plan_linear(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_float(op, "x", x);
  check_dim(op, "weight", w, 2);
  check_like(op, "x", x, "weight", w);
  check_like(op, "x", x, "bias", bias);
  ATTN_CHECK(x.dim() >= 1 && x.size(-1) == w.size(1), op, ": x has shape ", x.shape(),
             " but weight has shape ", w.shape(), " (expected [out, ", x.size(-1), "])");
  if (bias.defined()) {
    ATTN_CHECK(bias.dim() == 1 && bias.size(0) == w.size(0), op, ": bias has shape ",
               bias.shape(), " but weight has shape ", w.shape());
  }
  const int64_t in = w.size(1), out_f = w.size(0);
  LinearPlan p;
  p.g.m = in ? x.numel() / in : shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  p.g.n = out_f;
  p.g.k = in;
  p.g.trans_b = true;
  p.out_shape = x.shape();
  p.out_shape.back() = out_f;
  return p;
}

Tensor linear_impl(const char* op, const Tensor& x, const Tensor& w, const Tensor& bias,
                   bool relu) {
  const LinearPlan p = plan_linear(op, x, w, bias);
  if (x.device().is_cuda()) {
    // The bias (and relu) in the GEMM's epilogue: one pass over the output.
    Tensor out = Tensor::empty(p.out_shape, x.dtype(), x.device());
    bool fused = false;
    dispatch_float(
        op, x, [](auto) {},
        [&](auto t) {
          using T = typename decltype(t)::type;
          fused = kernels::gemm_bias_cuda<T>(p.g, x.data<T>(), w.data<T>(),
                                             bias.defined() ? bias.data<T>() : nullptr, relu,
                                             out.data<T>(), cuda::gemm_context(x.device().index));
        });
    if (fused) return out;
  }
  // With a bias, every output row starts as the bias and the product accumulates onto it.
  const int64_t rows = p.g.m, out_f = p.g.n;
  Tensor out = bias.defined()
                   ? expand_dim(bias.detach().view({1, out_f}), {rows, out_f}, 0).view(p.out_shape)
                   : Tensor::empty(p.out_shape, x.dtype(), x.device());
  const double beta = bias.defined() ? 1.0 : 0.0;
  dispatch_float(
      op, x,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::gemm_cpu<T>(p.g, 1.0, x.data<T>(), w.data<T>(), beta, out.data<T>());
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::gemm_cuda<T>(p.g, 1.0, x.data<T>(), w.data<T>(), beta, out.data<T>(),
                              cuda::gemm_context(x.device().index));
      });
  return relu ? ops::relu(out) : out;
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
  return linear_impl("linear", x, w, bias, false);
}

Tensor linear_relu(const Tensor& x, const Tensor& w, const Tensor& bias) {
  return linear_impl("linear_relu", x, w, bias, true);
}

Tensor linear_weight_grad(const Tensor& g, const Tensor& x, Tensor* bias_grad) {
  const char* op = "linear_weight_grad";
  check_float(op, "grad", g);
  check_like(op, "grad", g, "x", x);
  ATTN_CHECK(g.dim() >= 1 && x.dim() == g.dim() &&
                 Shape(g.shape().begin(), g.shape().end() - 1) ==
                     Shape(x.shape().begin(), x.shape().end() - 1),
             op, ": grad ", g.shape(), " and x ", x.shape(), " differ in their leading dimensions");
  const int64_t out_f = g.size(-1), in = x.size(-1);
  const int64_t rows = shape_numel(Shape(g.shape().begin(), g.shape().end() - 1));
  kernels::GemmShape s;  // dW [out, in] = g2^T [out, rows] @ x2 [rows, in]
  s.m = out_f;
  s.n = in;
  s.k = rows;
  s.trans_a = true;
  Tensor dw = Tensor::empty({out_f, in}, g.dtype(), g.device());
  if (bias_grad && g.device().is_cuda()) {
    Tensor db = Tensor::empty({out_f}, g.dtype(), g.device());
    bool fused = false;
    dispatch_float(
        op, g, [](auto) {},
        [&](auto t) {
          using T = typename decltype(t)::type;
          fused = kernels::gemm_bias_grad_cuda<T>(s, g.data<T>(), x.data<T>(), dw.data<T>(),
                                                  db.data<T>(), cuda::gemm_context(g.device().index));
        });
    if (fused) {
      *bias_grad = db;
      return dw;
    }
  }
  dispatch_float(
      op, g,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::gemm_cpu<T>(s, 1.0, g.data<T>(), x.data<T>(), 0.0, dw.data<T>());
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::gemm_cuda<T>(s, 1.0, g.data<T>(), x.data<T>(), 0.0, dw.data<T>(),
                              cuda::gemm_context(g.device().index));
      });
  if (bias_grad) *bias_grad = sum_to_last(g);
  return dw;
}

}  // namespace attn::ops
