// Tensor-level optimizer kernels (no autograd; callers hold NoGradGuard or work on detached
// tensors): the fused Adam update and the pieces of gradient-norm clipping.
#pragma once

#include <vector>

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

// sum(x^2), accumulated in double, independent of the thread count. On CUDA this reads the
// result back (a host synchronisation); the training step uses grad_norm_state_ instead.
double squared_norm(const Tensor& x);

// x *= factor in place (gradient clipping rescales gradients where they are).
void clip_scale_(Tensor& x, double factor);

// ---- Multi-tensor forms: the optimizer step without a host synchronisation on CUDA ----

// The clip state: zeros, f64 [kernels::kClipStateSize] on `device` (slots: kernels/adam.h).
// grad_norm_state_ writes it, adam_step_multi_ reads it, the host reads it when it logs.
Tensor make_clip_state(Device device);

// Global gradient norm and clip factor into `state` (kernels::clip_state_update):
// norm = sqrt(sum of squares of every defined gradient) / loss_scale; factor = 1 / loss_scale,
// times max_norm / (norm + 1e-6) when max_norm > 0 and norm > max_norm; the window slots
// (kClipNormSum, kClipSteps, kClipNonfinite, kClipFirstNonfinite) accumulate. On CUDA (all
// gradients on state's device, f32/bf16/f16, mixed allowed) two launches and no host
// synchronisation; on the CPU the sum is squared_norm's, tensor by tensor in order, i.e. the
// value optim::grad_norm computes.
void grad_norm_state_(const std::vector<Tensor>& grads, double max_norm, double loss_scale,
                      Tensor& state);

// adam_step_ on every (params[i], grads[i], exp_avg[i], exp_avg_sq[i]); one launch on CUDA.
// With a clip state (may be undefined): when its norm is not finite nothing changes; otherwise
// each gradient is multiplied by its factor first, without changing the gradient tensors. The
// results equal clip_scale_(grad, factor) followed by adam_step_ (bit for bit for f32 and f64
// on the CPU and for f32 on CUDA).
void adam_step_multi_(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                      const std::vector<Tensor>& exp_avg, const std::vector<Tensor>& exp_avg_sq,
                      const AdamStepArgs& args, const Tensor& clip_state = Tensor());

}  // namespace attn::ops
