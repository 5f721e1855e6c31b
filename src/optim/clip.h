// Global gradient-norm clipping (torch.nn.utils.clip_grad_norm_ semantics).
#pragma once

#include <vector>

#include "core/tensor.h"

namespace attn::optim {

// L2 norm of all defined gradients of `params` taken together, accumulated in double.
// Parameters without a gradient are skipped. List each parameter once.
double grad_norm(const std::vector<Tensor>& params);

// Returns the norm before clipping. If it exceeds max_norm > 0, every gradient is scaled in
// place by max_norm / (norm + 1e-6). A non-finite norm is returned as it is and the gradients
// are left untouched: whether to skip the step is the caller's decision.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

}  // namespace attn::optim
