#include "optim/adam.h"

#include <cmath>
#include <set>

#include "core/grad_mode.h"
#include "ops/optim.h"

namespace attn::optim {

Adam::Adam(std::vector<std::pair<std::string, Tensor>> named_params, AdamOptions options)
    : options_(options) {
  ATTN_CHECK(std::isfinite(options.lr) && options.lr >= 0, "Adam: lr must be >= 0, got ",
             options.lr);
  ATTN_CHECK(options.beta1 >= 0 && options.beta1 < 1, "Adam: beta1 must be in [0, 1), got ",
             options.beta1);
  ATTN_CHECK(options.beta2 >= 0 && options.beta2 < 1, "Adam: beta2 must be in [0, 1), got ",
             options.beta2);
  ATTN_CHECK(std::isfinite(options.eps) && options.eps >= 0, "Adam: eps must be >= 0, got ",
             options.eps);
  ATTN_CHECK(std::isfinite(options.weight_decay) && options.weight_decay >= 0,
             "Adam: weight_decay must be >= 0, got ", options.weight_decay);
  std::set<std::string> names;
  std::map<const void*, std::string> storage;  // a tied weight listed twice would step twice
  slots_.reserve(named_params.size());
  for (auto& [name, p] : named_params) {
    ATTN_CHECK(names.insert(name).second, "Adam: parameter name '", name, "' appears twice");
    ATTN_CHECK(p.defined(), "Adam: parameter '", name, "' is undefined");
    ATTN_CHECK(is_floating(p.dtype()), "Adam: parameter '", name, "' is ", p.dtype(),
               "; only floating tensors can be optimized");
    if (p.numel() > 0) {
      const auto [it, fresh] = storage.emplace(p.raw_data(), name);
      ATTN_CHECK(fresh, "Adam: parameters '", it->second, "' and '", name,
                 "' are the same tensor (list tied weights once)");
    }
    slots_.push_back({name, p, Tensor::zeros_like(p), Tensor::zeros_like(p)});
  }
}

void Adam::step(double lr) { step(lr, Tensor()); }

void Adam::step(double lr, const Tensor& clip_state) {
  ATTN_CHECK(std::isfinite(lr) && lr >= 0, "Adam::step: lr must be finite and >= 0, got ", lr);
  NoGradGuard no_grad;
  ++step_;
  ops::AdamStepArgs args;
  args.lr = lr;
  args.beta1 = options_.beta1;
  args.beta2 = options_.beta2;
  args.eps = options_.eps;
  args.weight_decay = options_.weight_decay;
  args.bias_correction1 = 1.0 - std::pow(options_.beta1, static_cast<double>(step_));
  args.bias_correction2 = 1.0 - std::pow(options_.beta2, static_cast<double>(step_));
  std::vector<Tensor> params, grads, exp_avg, exp_avg_sq;
  bool one_device = true;
  for (Slot& s : slots_) {
    const Tensor g = s.param.grad();
    if (!g.defined()) continue;
    ATTN_CHECK(g.shape() == s.param.shape() && g.dtype() == s.param.dtype() &&
                   g.device() == s.param.device(),
               "Adam::step: gradient of '", s.name, "' is ", g.dtype(), " ", g.shape(), " on ",
               g.device(), " but the parameter is ", s.param.dtype(), " ", s.param.shape(), " on ",
               s.param.device());
    if (!params.empty() && s.param.device() != params.front().device()) one_device = false;
    params.push_back(s.param.detach());  // same storage, without autograd state
    grads.push_back(g);
    exp_avg.push_back(s.exp_avg);
    exp_avg_sq.push_back(s.exp_avg_sq);
  }
  if (one_device || clip_state.defined()) {
    ops::adam_step_multi_(params, grads, exp_avg, exp_avg_sq, args, clip_state);
  } else {  // parameters spread over devices: one update each
    for (size_t i = 0; i < params.size(); ++i)
      ops::adam_step_(params[i], grads[i], exp_avg[i], exp_avg_sq[i], args);
  }
}

void Adam::zero_grad() {
  for (Slot& s : slots_) s.param.zero_grad();
}

std::vector<std::pair<std::string, Tensor>> Adam::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(2 * slots_.size());
  for (const Slot& s : slots_) {
    out.emplace_back(s.name + ".exp_avg", s.exp_avg);
    out.emplace_back(s.name + ".exp_avg_sq", s.exp_avg_sq);
  }
  return out;
}

void Adam::load_state(const std::map<std::string, Tensor>& tensors, int64_t step_count) {
  ATTN_CHECK(step_count >= 0, "Adam::load_state: step count must be >= 0, got ", step_count);
  std::set<std::string> expected;
  std::vector<std::pair<Tensor*, const Tensor*>> copies;
  for (Slot& s : slots_) {
    const std::pair<const char*, Tensor*> parts[] = {{".exp_avg", &s.exp_avg},
                                                     {".exp_avg_sq", &s.exp_avg_sq}};
    for (const auto& [suffix, dst] : parts) {
      const std::string key = s.name + suffix;
      expected.insert(key);
      const auto it = tensors.find(key);
      ATTN_CHECK(it != tensors.end(), "Adam::load_state: optimizer state has no '", key,
                 "' (the checkpoint is from a different model?)");
      ATTN_CHECK(it->second.defined() && it->second.shape() == s.param.shape(),
                 "Adam::load_state: '", key, "' has shape ",
                 it->second.defined() ? it->second.shape() : Shape{}, " but parameter '", s.name,
                 "' has shape ", s.param.shape());
      ATTN_CHECK(it->second.dtype() == dst->dtype(), "Adam::load_state: '", key, "' is ",
                 it->second.dtype(), " but the optimizer keeps it as ", dst->dtype());
      copies.emplace_back(dst, &it->second);
    }
  }
  for (const auto& [key, t] : tensors) {
    ATTN_CHECK(expected.count(key), "Adam::load_state: optimizer state has '", key,
               "', which matches no parameter (the checkpoint is from a different model?)");
  }
  NoGradGuard no_grad;
  for (auto& [dst, src] : copies) dst->copy_(*src);
  step_ = step_count;
}

}  // namespace attn::optim
