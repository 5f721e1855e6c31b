#include "autograd/engine.h"

#include <utility>

#include <algorithm>
#include <unordered_map>

#include "autograd/node.h"
#include "ops/elementwise.h"

namespace attn::autograd {

const char* op_name(OpId op) {
  switch (op) {
#define ATTN_X(name) \
  case OpId::name:   \
    return #name;
    ATTN_DIFFERENTIABLE_OPS(ATTN_X)
#undef ATTN_X
    case OpId::accumulate_grad:
      return "accumulate_grad";
  }
  return "?";
}

const std::vector<OpId>& differentiable_ops() {
  static const std::vector<OpId> ops = {
#define ATTN_X(name) OpId::name,
      ATTN_DIFFERENTIABLE_OPS(ATTN_X)
#undef ATTN_X
  };
  return ops;
}

namespace {
thread_local GradReadyHook g_grad_ready_hook;
}  // namespace

GradReadyHookGuard::GradReadyHookGuard(GradReadyHook hook)
    : previous_(std::exchange(g_grad_ready_hook, std::move(hook))) {}

GradReadyHookGuard::~GradReadyHookGuard() { g_grad_ready_hook = std::move(previous_); }

std::vector<Tensor> AccumulateGrad::backward(const Tensor& grad_output) {
  auto leaf = leaf_.lock();
  if (!leaf) return {};  // the leaf is gone; nobody can read its gradient
  if (!leaf->grad) {
    leaf->grad = grad_output.clone().impl_ptr();
  } else {
    Tensor acc(leaf->grad);
    ops::add_(acc, grad_output);
  }
  if (g_grad_ready_hook) g_grad_ready_hook(leaf.get());
  return {};
}

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

namespace {
std::shared_ptr<Node> edge_for(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return nullptr;
  TensorImpl* impl = t.impl();
  if (impl->grad_fn) return impl->grad_fn;
  if (!impl->grad_accumulator) {
    impl->grad_accumulator = std::make_shared<AccumulateGrad>(t.impl_ptr());
  }
  return impl->grad_accumulator;
}
}  // namespace

void record(Tensor& output, const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs) {
  node->inputs.clear();
  for (const Tensor& t : inputs) {
    Node::Input in;
    in.node = edge_for(t);
    if (t.defined()) {
      in.shape = t.shape();
      in.dtype = t.dtype();
    }
    node->inputs.push_back(std::move(in));
  }
  output.impl()->requires_grad = true;
  output.impl()->grad_fn = node;
}

void record_fn(Tensor& output, OpId op, const std::vector<Tensor>& inputs,
               FunctionNode::Backward fn) {
  if (!needs_grad(inputs)) return;
  record(output, std::make_shared<FunctionNode>(op, std::move(fn)), inputs);
}

void backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
  ATTN_CHECK(root.defined(), "backward: called on an undefined tensor");
  ATTN_CHECK(root.requires_grad(),
             "backward: the tensor does not require grad (no input of the ops that produced it "
             "requires grad, or it was computed under NoGradGuard)");
  Tensor seed = grad;
  if (!seed.defined()) {
    ATTN_CHECK(root.numel() == 1, "backward: a gradient must be given for a non-scalar root of "
                                  "shape ", root.shape());
    seed = Tensor::ones(root.shape(), root.dtype(), root.device());
  }
  ATTN_CHECK(seed.shape() == root.shape(), "backward: gradient of shape ", seed.shape(),
             " for a root of shape ", root.shape());

  std::shared_ptr<Node> start = root.is_leaf() ? edge_for(root) : root.impl()->grad_fn;

  // Dependency counts: how many edges from reachable nodes point at each node.
  std::unordered_map<Node*, int> deps;
  std::vector<Node*> stack = {start.get()};
  std::unordered_map<Node*, bool> seen = {{start.get(), true}};
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    ATTN_CHECK(!n->released, "backward: the graph through '", n->name(),
               "' was already freed by an earlier backward; pass retain_graph=true to the first "
               "backward to backpropagate through it twice");
    for (const auto& in : n->inputs) {
      if (!in.node) continue;
      deps[in.node.get()]++;
      if (!seen[in.node.get()]) {
        seen[in.node.get()] = true;
        stack.push_back(in.node.get());
      }
    }
  }

  NoGradGuard no_grad;
  std::unordered_map<Node*, Tensor> pending = {{start.get(), seed.detach()}};
  std::vector<Node*> ready = {start.get()};
  while (!ready.empty()) {
    Node* n = ready.back();
    ready.pop_back();
    Tensor g;
    if (auto it = pending.find(n); it != pending.end()) {
      g = std::move(it->second);
      pending.erase(it);
    }
    // A node that received no gradient still runs its bookkeeping so that its inputs'
    // dependency counts reach zero.
    std::vector<Tensor> grads;
    if (g.defined()) {
      grads = n->backward(g);
      ATTN_CHECK(n->op() == OpId::accumulate_grad || grads.size() == n->inputs.size(),
                 "backward of '", n->name(), "' returned ", grads.size(), " gradients for ",
                 n->inputs.size(), " inputs");
    }
    if (!retain_graph && n->op() != OpId::accumulate_grad) {
      n->release_saved();
      n->released = true;
    }
    for (size_t i = 0; i < n->inputs.size(); ++i) {
      const auto& in = n->inputs[i];
      if (!in.node) continue;
      if (i < grads.size() && grads[i].defined()) {
        const Tensor& gi = grads[i];
        ATTN_CHECK(gi.shape() == in.shape, "backward of '", n->name(), "' returned a gradient of ",
                   "shape ", gi.shape(), " for input ", i, " of shape ", in.shape);
        auto it = pending.find(in.node.get());
        if (it == pending.end()) {
          pending.emplace(in.node.get(), gi);
        } else {
          // Sum into a fresh tensor: either side may alias a saved tensor.
          it->second = ops::add(it->second, gi);
        }
      }
      if (--deps[in.node.get()] == 0) ready.push_back(in.node.get());
    }
  }
}

}  // namespace attn::autograd

namespace attn {
void Tensor::backward(const Tensor& grad, bool retain_graph) const {
  autograd::backward(*this, grad, retain_graph);
}
}  // namespace attn
