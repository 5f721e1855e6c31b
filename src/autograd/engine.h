// Runs backward over the recorded graph: nodes in reverse topological order (Kahn's algorithm
// on the edges reachable from the root), gradients for a node summed over all its consumers
// before it runs (so a tensor used twice, e.g. tied embeddings, gets the sum), leaves'
// gradients accumulated into .grad with +=.
#pragma once

#include "core/tensor.h"

namespace attn::autograd {

// `grad` defaults to 1 for a one-element root. Without retain_graph the graph's saved
// tensors are freed and a second backward through it is an error.
void backward(const Tensor& root, const Tensor& grad = {}, bool retain_graph = false);

}  // namespace attn::autograd
