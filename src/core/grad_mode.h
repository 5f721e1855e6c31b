// Whether ops record the autograd graph (thread-local). Lives in core so that Tensor can
// refuse conversions that would silently cut a graph.
#pragma once

namespace attn {

bool grad_enabled();
void set_grad_enabled(bool enabled);

// Disables graph recording in a scope (evaluation, decoding, inside backward).
class NoGradGuard {
 public:
  NoGradGuard() : prev_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace attn
