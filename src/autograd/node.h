// A recorded operation in the define-by-run graph. Each differentiable function creates one
// Node per call, holding what its backward needs (saved tensors are detached so the graph
// holds no cycles) and an edge per input to the node that produced that input (or to the
// input's gradient accumulator when it is a leaf).
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "core/grad_mode.h"
#include "core/tensor.h"

namespace attn::autograd {

// Every differentiable op, once. A Node can only be created with one of these ids, and the
// gradient-check test requires a check for each: a new op cannot land without its check.
#define ATTN_DIFFERENTIABLE_OPS(X) \
  X(matmul)                        \
  X(linear)                        \
  X(linear_relu)                   \
  X(add)                           \
  X(sub)                           \
  X(mul)                           \
  X(scale)                         \
  X(relu)                          \
  X(dropout)                       \
  X(embedding)                     \
  X(layer_norm)                    \
  X(softmax)                       \
  X(attention)                     \
  X(cross_entropy)                 \
  X(sum)                           \
  X(mean)                          \
  X(reshape)                       \
  X(transpose)                     \
  X(split_heads)                   \
  X(merge_heads)                   \
  X(concat)                        \
  X(slice)                         \
  X(cast)

enum class OpId {
#define ATTN_X(name) name,
  ATTN_DIFFERENTIABLE_OPS(ATTN_X)
#undef ATTN_X
      accumulate_grad  // not an op: the sink that writes a leaf's .grad
};

const char* op_name(OpId op);
// All differentiable ops (accumulate_grad excluded).
const std::vector<OpId>& differentiable_ops();

class Node {
 public:
  explicit Node(OpId op) : op_(op) {}
  virtual ~Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  OpId op() const { return op_; }
  const char* name() const { return op_name(op_); }

  // Gradients with respect to each input, given the gradient of the output. An undefined
  // tensor means "no gradient for this input". Runs with grad mode off.
  virtual std::vector<Tensor> backward(const Tensor& grad_output) = 0;
  // Drops saved tensors once backward has run (unless the graph is retained).
  virtual void release_saved() {}

  struct Input {
    std::shared_ptr<Node> node;  // null: the input needs no gradient
    Shape shape;
    DType dtype = kF32;
  };
  std::vector<Input> inputs;
  bool released = false;

 protected:
  static Tensor save(const Tensor& t) { return t.defined() ? t.detach() : t; }

 private:
  OpId op_;
};

// The sink for a leaf: adds incoming gradients into the leaf's .grad.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(std::weak_ptr<TensorImpl> leaf)
      : Node(OpId::accumulate_grad), leaf_(std::move(leaf)) {}
  std::vector<Tensor> backward(const Tensor& grad_output) override;

 private:
  std::weak_ptr<TensorImpl> leaf_;
};

// A node whose backward is a closure; the closure's captures are its saved tensors (capture
// them detached: Node::save) and are dropped by release_saved().
class FunctionNode final : public Node {
 public:
  using Backward = std::function<std::vector<Tensor>(const Tensor&)>;
  FunctionNode(OpId op, Backward fn) : Node(op), fn_(std::move(fn)) {}
  std::vector<Tensor> backward(const Tensor& grad_output) override { return fn_(grad_output); }
  void release_saved() override { fn_ = nullptr; }
  using Node::save;

 private:
  Backward fn_;
};

// Records `output` = op(inputs) with a closure backward, when any input needs a gradient.
void record_fn(Tensor& output, OpId op, const std::vector<Tensor>& inputs,
               FunctionNode::Backward fn);

// True when an op on these inputs must be recorded.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Makes `output` the result of `node`, wiring an edge per input (in the order backward
// returns their gradients).
void record(Tensor& output, const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs);

}  // namespace attn::autograd
