// Adam with bias correction (Kingma & Ba 2015; PyTorch's torch.optim.Adam numerics) and, when
// weight_decay > 0, decoupled weight decay (AdamW). The learning rate comes from the schedule
// at every step; `lr` in the options is only a default for callers without one.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace attn::optim {

struct AdamOptions {
  double lr = 1e-3;  // overridden each step by the schedule
  double beta1 = 0.9;
  double beta2 = 0.98;  // the paper's value (PyTorch's default is 0.999)
  double eps = 1e-9;
  double weight_decay = 0.0;  // decoupled (AdamW)
};

class Adam {
 public:
  // Each parameter is listed once (tied weights: one entry), under a unique name. The optimizer
  // keeps handles to the parameters and updates their storage in place, so the model sees
  // every step. exp_avg / exp_avg_sq are zeros of the parameter's shape, dtype and device.
  Adam(std::vector<std::pair<std::string, Tensor>> named_params, AdamOptions options);

  // One update of every parameter that has a gradient; others are left as they are. The step
  // count (and so the bias correction) is shared by all parameters and advances on every call.
  // On CUDA all parameters are updated by one multi-tensor launch.
  void step(double lr);
  // The same with the gradient clipping of `clip_state` (ops::grad_norm_state_, e.g. from
  // GradClipper::state()) applied inside the update: gradients are multiplied by its factor,
  // and no parameter changes when its norm is not finite (the step count still advances; the
  // caller learns of it from the state). On CUDA this needs no host synchronisation.
  void step(double lr, const Tensor& clip_state);
  // Drops every parameter's gradient (the next backward writes fresh ones).
  void zero_grad();
  int64_t step_count() const { return step_; }
  const AdamOptions& options() const { return options_; }

  // "<param>.exp_avg" and "<param>.exp_avg_sq" for every parameter, in parameter order. The
  // tensors share storage with the optimizer's state: save them before the next step.
  std::vector<std::pair<std::string, Tensor>> state_tensors() const;
  // Restores a state written by state_tensors() (values converted to each parameter's dtype and
  // device). Missing keys, unknown keys and shape mismatches are errors naming the key; nothing
  // is changed unless the whole state fits.
  void load_state(const std::map<std::string, Tensor>& tensors, int64_t step_count);

 private:
  struct Slot {
    std::string name;
    Tensor param;  // the model's own handle: same storage
    Tensor exp_avg;
    Tensor exp_avg_sq;
  };
  std::vector<Slot> slots_;
  AdamOptions options_;
  int64_t step_ = 0;
};

}  // namespace attn::optim
