// Differentiable layer norm, softmax and cross-entropy. Each records a closure node whose
// captures are its saved tensors, detached (FunctionNode::save) so the graph holds no cycles:
//   layer_norm    saves x, residual, gamma and the per-row mean/rstd (s = x + residual is
//                 recomputed in backward rather than stored)
//   softmax       saves its output y
//   cross_entropy saves the logits, targets and per-row logsumexp, never the probabilities
#include "autograd/functions.h"
#include "autograd/node.h"
#include "ops/cross_entropy.h"
#include "ops/layer_norm.h"
#include "ops/softmax.h"

namespace attn {

using autograd::FunctionNode;
using autograd::OpId;
using autograd::record_fn;

Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps,
                  const Tensor& residual) {
  ops::LayerNormOutput f = ops::layer_norm_forward(x, gamma, beta, eps, residual);
  if (!autograd::needs_grad({&x, &gamma, &beta, &residual})) return f.y;
  record_fn(f.y, OpId::layer_norm, {x, gamma, beta, residual},
            [sx = FunctionNode::save(x), sr = FunctionNode::save(residual),
             sg = FunctionNode::save(gamma), mean = f.mean, rstd = f.rstd](const Tensor& dy) {
              ops::LayerNormGrads g = ops::layer_norm_backward(dy, sx, sr, sg, mean, rstd);
              // d(x + residual)/dresidual = d/dx: the residual shares dx.
              return std::vector<Tensor>{g.dx, g.dgamma, g.dbeta, sr.defined() ? g.dx : Tensor()};
            });
  return f.y;
}

Tensor softmax(const Tensor& x) {
  Tensor y = ops::softmax_forward(x);
  if (!autograd::needs_grad({&x})) return y;
  record_fn(y, OpId::softmax, {x}, [sy = FunctionNode::save(y)](const Tensor& dy) {
    return std::vector<Tensor>{ops::softmax_backward(sy, dy)};
  });
  return y;
}

CrossEntropyResult cross_entropy(const Tensor& logits, const Tensor& targets,
                                 double label_smoothing, int32_t ignore_index) {
  ops::CrossEntropyForward f =
      ops::cross_entropy_forward(logits, targets, label_smoothing, ignore_index);
  CrossEntropyResult r{f.loss, f.nll, f.ntokens, f.ncorrect};
  if (!autograd::needs_grad({&logits})) return r;
  record_fn(r.loss, OpId::cross_entropy, {logits},
            [sl = FunctionNode::save(logits), st = FunctionNode::save(targets), lse = f.lse,
             label_smoothing, ignore_index](const Tensor& g) {
              return std::vector<Tensor>{
                  ops::cross_entropy_backward(g, sl, st, lse, label_smoothing, ignore_index)};
            });
  return r;
}

}  // namespace attn
