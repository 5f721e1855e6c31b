// Basic layers: Linear, Embedding, LayerNorm and the position-wise FeedForward. Parameters
// are f32 on the CPU, initialised from the given generator (reproducible); forward passes
// only use the differentiable API (autograd/functions.h), so they run wherever it does.
#pragma once

#include <cstdint>

#include "core/random.h"
#include "core/tensor.h"
#include "nn/module.h"

namespace attn::nn {

// y = x W^T + b with W [out, in]; Xavier-uniform W (a = sqrt(6 / (in + out))), zero b.
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias, Generator& init_gen);
  Tensor forward(const Tensor& x) const;
  // relu(forward(x)) in one op (cuBLASLt's bias+ReLU epilogue on CUDA).
  Tensor forward_relu(const Tensor& x) const;
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }  // undefined without bias
  int64_t in_features() const { return weight_.size(1); }
  int64_t out_features() const { return weight_.size(0); }

 private:
  Tensor weight_, bias_;
};

// Token table [vocab, dim], initialised normal(0, dim^-1/2) (the tied output projection then
// starts with logits of unit scale).
class Embedding : public Module {
 public:
  Embedding(int64_t vocab, int64_t dim, Generator& init_gen);
  // weight[ids] * scale, plus sinusoidal positions (position_offset + index along the last
  // dimension of ids) when add_positions.
  Tensor forward(const Tensor& ids, double scale = 1.0, bool add_positions = false,
                 int64_t position_offset = 0) const;
  const Tensor& weight() const { return weight_; }

 private:
  Tensor weight_;
};

// Layer norm over the last dimension; gamma ("weight") 1, beta ("bias") 0, as PyTorch names
// them so checkpoints map onto torch.nn.LayerNorm.
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5);
  // LN(x + residual); the residual add is fused into the kernel.
  Tensor forward(const Tensor& x, const Tensor& residual = {}) const;
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }

 private:
  Tensor weight_, bias_;
  double eps_;
};

// fc2(Dropout(ReLU(fc1(x)))), d_model -> d_ff -> d_model.
class FeedForward : public Module {
 public:
  FeedForward(int64_t d_model, int64_t d_ff, double relu_dropout, Generator& init_gen);
  Tensor forward(const Tensor& x) const;

 private:
  std::shared_ptr<Linear> fc1_, fc2_;
  double relu_dropout_;
};

}  // namespace attn::nn
