#include "optim/clip.h"

#include <cmath>

#include "core/grad_mode.h"
#include "kernels/adam.h"
#include "ops/optim.h"

namespace attn::optim {

namespace {
// The defined gradients of `params`, and whether they all live on one CUDA device.
std::vector<Tensor> gradients(const std::vector<Tensor>& params, bool* one_cuda_device) {
  std::vector<Tensor> grads;
  bool one = true;
  for (const Tensor& p : params) {
    if (!p.defined()) continue;
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (!g.device().is_cuda() || (!grads.empty() && g.device() != grads.front().device()))
      one = false;
    grads.push_back(std::move(g));
  }
  *one_cuda_device = one && !grads.empty();
  return grads;
}
}  // namespace

double grad_norm(const std::vector<Tensor>& params) {
  bool one_cuda_device = false;
  const std::vector<Tensor> grads = gradients(params, &one_cuda_device);
  if (one_cuda_device) {
    Tensor state = ops::make_clip_state(grads.front().device());
    ops::grad_norm_state_(grads, 0.0, 1.0, state);
    return state.to(Device::cpu()).data<double>()[kernels::kClipNorm];
  }
  double total = 0.0;
  for (const Tensor& g : grads) total += ops::squared_norm(g);
  return std::sqrt(total);
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  const double norm = grad_norm(params);
  if (max_norm <= 0 || !std::isfinite(norm) || norm <= max_norm) return norm;
  const double factor = max_norm / (norm + 1e-6);
  NoGradGuard no_grad;
  for (const Tensor& p : params) {
    if (!p.defined()) continue;
    Tensor g = p.grad();
    if (g.defined()) ops::clip_scale_(g, factor);
  }
  return norm;
}

void GradClipper::compute(const std::vector<Tensor>& params, double loss_scale) {
  bool one_cuda_device = false;
  const std::vector<Tensor> grads = gradients(params, &one_cuda_device);
  Device device = Device::cpu();
  if (!grads.empty()) {
    device = grads.front().device();
  } else {
    for (const Tensor& p : params) {
      if (p.defined()) {
        device = p.device();
        break;
      }
    }
  }
  if (!state_.defined() || state_.device() != device) state_ = ops::make_clip_state(device);
  ops::grad_norm_state_(grads, max_norm_, loss_scale, state_);
}

double GradClipper::last_norm() const {
  ATTN_CHECK(state_.defined(), "GradClipper::last_norm: compute() was not called");
  return state_.narrow0(kernels::kClipNorm, kernels::kClipNorm + 1).item();
}

GradClipper::Window GradClipper::take_window() {
  Window w;
  if (!state_.defined()) return w;
  const Tensor host = state_.to(Device::cpu());
  const double* s = host.data<double>();
  w.steps = static_cast<int64_t>(s[kernels::kClipSteps]);
  w.nonfinite = static_cast<int64_t>(s[kernels::kClipNonfinite]);
  w.first_nonfinite = static_cast<int64_t>(s[kernels::kClipFirstNonfinite]);
  w.norm_sum = s[kernels::kClipNormSum];
  w.last_norm = s[kernels::kClipNorm];
  state_.narrow0(kernels::kClipNormSum, kernels::kClipFirstNonfinite + 1).fill_(0.0);
  return w;
}

}  // namespace attn::optim
