// Global gradient-norm clipping (torch.nn.utils.clip_grad_norm_ semantics).
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace attn::optim {

// L2 norm of all defined gradients of `params` taken together, accumulated in double.
// Parameters without a gradient are skipped. List each parameter once. With every gradient on
// one CUDA device: one multi-tensor pass and one read-back.
double grad_norm(const std::vector<Tensor>& params);

// Returns the norm before clipping. If it exceeds max_norm > 0, every gradient is scaled in
// place by max_norm / (norm + 1e-6). A non-finite norm is returned as it is and the gradients
// are left untouched: whether to skip the step is the caller's decision.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

// Clipping without a host synchronisation, for the GPU training step:
//
//   clipper.compute(params, loss_scale);     // norm and factor, on the gradients' device
//   adam.step(lr, clipper.state());          // applies the factor; skipped if not finite
//   ...
//   auto w = clipper.take_window();          // at log time: one device-to-host read
//
// The same on the CPU, where the result equals clip_grad_norm + Adam::step bit for bit (with
// loss_scale 1; with a loss scale, the factor is 1 / loss_scale times the clip factor, as
// train::StepEngine computes it). The gradients themselves are never modified.
class GradClipper {
 public:
  explicit GradClipper(double max_norm) : max_norm_(max_norm) {}

  // norm = L2 norm of the gradients / loss_scale, and the factor Adam::step(lr, state())
  // multiplies them by (ops::grad_norm_state_). Asynchronous on CUDA.
  void compute(const std::vector<Tensor>& params, double loss_scale = 1.0);

  // The f64 clip state (slots: kernels/adam.h); undefined before the first compute().
  const Tensor& state() const { return state_; }
  double max_norm() const { return max_norm_; }

  struct Window {
    int64_t steps = 0;            // compute() calls since the previous take_window()
    int64_t nonfinite = 0;        // of which had a non-finite norm (their Adam steps did nothing)
    int64_t first_nonfinite = 0;  // 1-based position of the first of those, 0 if none
    double norm_sum = 0.0;        // sum of the finite norms (mean = norm_sum / (steps - nonfinite))
    double last_norm = 0.0;       // norm of the latest compute() (may be inf or nan)
  };
  // Reads the statistics since the previous call (synchronises with the device) and starts a
  // new window.
  Window take_window();
  // The (unscaled) norm of the latest compute(): one read of the state (synchronises with the
  // device), for callers that decide per step (loss scaling, divergence).
  double last_norm() const;

 private:
  double max_norm_;
  Tensor state_;
};

}  // namespace attn::optim
