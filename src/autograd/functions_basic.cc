// Differentiable arithmetic, matmul, reductions and layout. Backward closures capture their
// saved tensors detached (FunctionNode::save) so the graph holds no reference cycles.
#include "autograd/functions.h"
#include "autograd/node.h"
#include "ops/check.h"
#include "ops/elementwise.h"
#include "ops/layout.h"
#include "ops/matmul.h"
#include "ops/reduce.h"

namespace attn {

using autograd::FunctionNode;
using autograd::OpId;
using autograd::record_fn;

namespace {
Tensor saved(const Tensor& t) { return t.defined() ? t.detach() : t; }

// Sums a batched gradient [batch..., r, c] down to [r, c] (for a 2-D operand shared across
// the batch).
Tensor reduce_batch(const Tensor& g) {
  if (g.dim() == 2) return g;
  Tensor flat = g.view({-1, g.size(-2), g.size(-1)});
  return ops::sum_dim(flat, 0);
}
}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  Tensor out = ops::matmul(a, b, ta, tb);
  if (!autograd::needs_grad({&a, &b})) return out;
  const bool a_req = a.requires_grad(), b_req = b.requires_grad();
  record_fn(out, OpId::matmul, {a, b},
            [sa = saved(a), sb = saved(b), ta, tb, a_req, b_req](const Tensor& g) {
              const bool shared_b = sb.dim() == 2 && sa.dim() > 2;
              Tensor da, db;
              if (a_req) {
                if (!ta) {
                  da = ops::matmul(g, sb, false, !tb);
                } else if (shared_b) {
                  da = ops::transpose(ops::matmul(g, sb, false, !tb), -1, -2);
                } else {
                  da = ops::matmul(sb, g, tb, true);
                }
              }
              if (b_req) {
                if (shared_b && !ta) {
                  // Sum over the batch inside one GEMM on the flattened rows; a per-batch
                  // product would materialise [batch, K, N] (gigabytes for a tied output
                  // projection) only to add it up.
                  const Tensor a2 = sa.view({-1, sa.size(-1)});
                  const Tensor g2 = g.view({-1, g.size(-1)});
                  db = !tb ? ops::matmul(a2, g2, true, false) : ops::matmul(g2, a2, true, false);
                } else {
                  db = !tb ? ops::matmul(sa, g, !ta, false) : ops::matmul(g, sa, true, ta);
                  if (shared_b) db = reduce_batch(db);
                }
              }
              return std::vector<Tensor>{da, db};
            });
  return out;
}

namespace {
// linear's backward given the gradient of its (pre-activation) output: dx = g W,
// dW = g^T x, db = sum of g's rows (from the same GEMM as dW on CUDA).
std::vector<Tensor> linear_grads(const Tensor& g, const Tensor& x, const Tensor& w, bool x_req,
                                 bool w_req, bool b_req) {
  Tensor dx, dw, db;
  if (x_req) dx = ops::matmul(g, w);
  if (w_req) {
    dw = ops::linear_weight_grad(g, x, b_req ? &db : nullptr);
  } else if (b_req) {
    db = ops::sum_to_last(g);
  }
  return {dx, dw, db};
}
}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  Tensor out = ops::linear(x, w, bias);
  if (!autograd::needs_grad({&x, &w, &bias})) return out;
  const bool x_req = x.requires_grad(), w_req = w.requires_grad();
  const bool b_req = bias.defined() && bias.requires_grad();
  record_fn(out, OpId::linear, {x, w, bias},
            [sx = saved(x), sw = saved(w), x_req, w_req, b_req](const Tensor& g) {
              return linear_grads(g, sx, sw, x_req, w_req, b_req);
            });
  return out;
}

Tensor linear_relu(const Tensor& x, const Tensor& w, const Tensor& bias) {
  Tensor out = ops::linear_relu(x, w, bias);
  if (!autograd::needs_grad({&x, &w, &bias})) return out;
  const bool x_req = x.requires_grad(), w_req = w.requires_grad();
  const bool b_req = bias.defined() && bias.requires_grad();
  record_fn(out, OpId::linear_relu, {x, w, bias},
            [sx = saved(x), sw = saved(w), y = saved(out), x_req, w_req, b_req](const Tensor& g) {
              // The relu mask comes from the output: y > 0 exactly where the input was.
              return linear_grads(ops::relu_backward(g, y), sx, sw, x_req, w_req, b_req);
            });
  return out;
}

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = ops::add(a, b);
  record_fn(out, OpId::add, {a, b}, [](const Tensor& g) { return std::vector<Tensor>{g, g}; });
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = ops::sub(a, b);
  record_fn(out, OpId::sub, {a, b},
            [](const Tensor& g) { return std::vector<Tensor>{g, ops::scale(g, -1.0)}; });
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = ops::mul(a, b);
  if (!autograd::needs_grad({&a, &b})) return out;
  const bool a_req = a.requires_grad(), b_req = b.requires_grad();
  record_fn(out, OpId::mul, {a, b}, [sa = saved(a), sb = saved(b), a_req, b_req](const Tensor& g) {
    return std::vector<Tensor>{a_req ? ops::mul(g, sb) : Tensor(),
                               b_req ? ops::mul(g, sa) : Tensor()};
  });
  return out;
}

Tensor scale(const Tensor& x, double factor) {
  Tensor out = ops::scale(x, factor);
  record_fn(out, OpId::scale, {x},
            [factor](const Tensor& g) { return std::vector<Tensor>{ops::scale(g, factor)}; });
  return out;
}

Tensor relu(const Tensor& x) {
  Tensor out = ops::relu(x);
  if (!autograd::needs_grad({&x})) return out;
  record_fn(out, OpId::relu, {x}, [y = saved(out)](const Tensor& g) {
    return std::vector<Tensor>{ops::relu_backward(g, y)};
  });
  return out;
}

Tensor sum(const Tensor& x) {
  Tensor out = ops::sum_all(x);
  record_fn(out, OpId::sum, {x}, [shape = x.shape()](const Tensor& g) {
    const int64_t n = shape_numel(shape);
    return std::vector<Tensor>{ops::expand_dim(g.view({1}), {n}, 0).view(shape)};
  });
  return out;
}

Tensor sum(const Tensor& x, int64_t dim, bool keepdim) {
  Tensor out = ops::sum_dim(x, dim, keepdim);
  const int64_t d = ops::wrap_dim("sum", dim, x.dim());
  record_fn(out, OpId::sum, {x}, [shape = x.shape(), d](const Tensor& g) {
    return std::vector<Tensor>{ops::expand_dim(g, shape, d)};
  });
  return out;
}

Tensor mean(const Tensor& x) {
  ATTN_CHECK(x.defined() && x.numel() > 0, "mean: needs a non-empty tensor");
  const double inv = 1.0 / static_cast<double>(x.numel());
  Tensor out = ops::scale(ops::sum_all(x), inv);
  record_fn(out, OpId::mean, {x}, [shape = x.shape(), inv](const Tensor& g) {
    const int64_t n = shape_numel(shape);
    return std::vector<Tensor>{ops::scale(ops::expand_dim(g.view({1}), {n}, 0), inv).view(shape)};
  });
  return out;
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  ops::check_defined("reshape", "x", x);
  Tensor out = x.detach().view(shape);
  record_fn(out, OpId::reshape, {x},
            [in = x.shape()](const Tensor& g) { return std::vector<Tensor>{g.view(in)}; });
  return out;
}

Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1) {
  Tensor out = ops::transpose(x, dim0, dim1);
  record_fn(out, OpId::transpose, {x}, [dim0, dim1](const Tensor& g) {
    return std::vector<Tensor>{ops::transpose(g, dim0, dim1)};
  });
  return out;
}

Tensor split_heads(const Tensor& x, int64_t heads) {
  Tensor out = ops::split_heads(x, heads);
  record_fn(out, OpId::split_heads, {x},
            [](const Tensor& g) { return std::vector<Tensor>{ops::merge_heads(g)}; });
  return out;
}

Tensor merge_heads(const Tensor& x) {
  Tensor out = ops::merge_heads(x);
  const int64_t heads = x.size(1);
  record_fn(out, OpId::merge_heads, {x},
            [heads](const Tensor& g) { return std::vector<Tensor>{ops::split_heads(g, heads)}; });
  return out;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  Tensor out = ops::concat(xs, dim);
  std::vector<int64_t> sizes;
  for (const Tensor& x : xs) sizes.push_back(x.size(dim));
  const int64_t d = ops::wrap_dim("concat", dim, out.dim());
  record_fn(out, OpId::concat, xs, [sizes, d](const Tensor& g) {
    std::vector<Tensor> grads;
    int64_t start = 0;
    for (int64_t n : sizes) {
      grads.push_back(ops::slice(g, d, start, start + n));
      start += n;
    }
    return grads;
  });
  return out;
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end) {
  Tensor out = ops::slice(x, dim, start, end);
  const int64_t d = ops::wrap_dim("slice", dim, x.dim());
  record_fn(out, OpId::slice, {x}, [shape = x.shape(), d, start](const Tensor& g) {
    Tensor dx = Tensor::zeros(shape, g.dtype(), g.device());
    ops::slice_assign(dx, d, start, g);
    return std::vector<Tensor>{dx};
  });
  return out;
}

Tensor cast(const Tensor& x, DType dtype) {
  ops::check_defined("cast", "x", x);
  // to() returns its input for the same dtype; the result must be a tensor of its own.
  Tensor out = dtype == x.dtype() ? x.detach().clone() : x.detach().to(dtype);
  if (!is_floating(dtype)) return out;  // integer results carry no gradient
  record_fn(out, OpId::cast, {x},
            [from = x.dtype()](const Tensor& g) { return std::vector<Tensor>{g.to(from)}; });
  return out;
}

}  // namespace attn
