// Layer norm over the last dimension, optionally fused with a preceding residual add (no
// autograd; see kernels/layer_norm.h for the algorithm).
#pragma once

#include "core/tensor.h"

namespace attn::ops {

struct LayerNormOutput {
  Tensor y;     // shape of x
  Tensor mean;  // x.shape() without its last dimension; f64 for f64 x, else f32
  Tensor rstd;  // 1 / sqrt(var + eps), same shape and dtype as mean
};

// y = (s - mean) / sqrt(var + eps) * gamma + beta over the last dimension of s = x + residual
// (residual optional, same shape as x). gamma and beta are 1-D of size x.size(-1).
LayerNormOutput layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                   double eps, const Tensor& residual = {});

struct LayerNormGrads {
  Tensor dx;  // also the gradient for residual
  Tensor dgamma;
  Tensor dbeta;
};

// Gradients of layer_norm_forward given dy, the forward's inputs and its mean/rstd.
LayerNormGrads layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& residual,
                                   const Tensor& gamma, const Tensor& mean, const Tensor& rstd);

}  // namespace attn::ops
