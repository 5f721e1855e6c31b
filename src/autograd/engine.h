// Runs backward over the recorded graph: nodes in reverse topological order (Kahn's algorithm
// on the edges reachable from the root), gradients for a node summed over all its consumers
// before it runs (so a tensor used twice, e.g. tied embeddings, gets the sum), leaves'
// gradients accumulated into .grad with +=.
#pragma once

#include <functional>

#include "core/tensor.h"

namespace attn::autograd {

// `grad` defaults to 1 for a one-element root. Without retain_graph the graph's saved
// tensors are freed and a second backward through it is an error.
void backward(const Tensor& root, const Tensor& grad = {}, bool retain_graph = false);

// Called (on the thread running backward) right after a leaf's gradient for this backward is
// complete: all of the leaf's consumers have contributed and .grad holds the sum. Data
// parallelism uses it to start reducing gradient buckets while backward goes on.
using GradReadyHook = std::function<void(const TensorImpl* leaf)>;

// Installs `hook` for this thread for the guard's lifetime (the previous one is restored).
class GradReadyHookGuard {
 public:
  explicit GradReadyHookGuard(GradReadyHook hook);
  ~GradReadyHookGuard();
  GradReadyHookGuard(const GradReadyHookGuard&) = delete;
  GradReadyHookGuard& operator=(const GradReadyHookGuard&) = delete;

 private:
  GradReadyHook previous_;
};

}  // namespace attn::autograd
