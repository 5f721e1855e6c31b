// Tensor-level optimizer kernels (no autograd; callers hold NoGradGuard or work on detached
// tensors): the fused Adam update and the pieces of gradient-norm clipping.
#pragma once

#include "core/tensor.h"

namespace attn::ops {

struct AdamStepArgs {
  double lr = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;      // decoupled (AdamW)
  double bias_correction1 = 1.0;  // 1 - beta1^t
  double bias_correction2 = 1.0;  // 1 - beta2^t
};

// One fused Adam update of `param`, `m` and `v` in place (kernels/adam.h). All four tensors have
// the same shape, dtype and device.
void adam_step_(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamStepArgs& args);

// sum(x^2), accumulated in double, independent of the thread count.
double squared_norm(const Tensor& x);

// x *= factor in place (gradient clipping rescales gradients where they are).
void clip_scale_(Tensor& x, double factor);

}  // namespace attn::ops
