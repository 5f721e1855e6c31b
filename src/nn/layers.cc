#include "nn/layers.h"

#include <cmath>

#include "autograd/functions.h"

namespace attn::nn {

Linear::Linear(int64_t in_features, int64_t out_features, bool bias, Generator& init_gen) {
  ATTN_CHECK(in_features > 0 && out_features > 0, "Linear: sizes must be positive, got in ",
             in_features, ", out ", out_features);
  const double a = std::sqrt(6.0 / static_cast<double>(in_features + out_features));
  weight_ =
      register_parameter("weight", Tensor::uniform({out_features, in_features}, -a, a, init_gen));
  if (bias) bias_ = register_parameter("bias", Tensor::zeros({out_features}));
}

Tensor Linear::forward(const Tensor& x) const {
  return linear(x, compute(weight_), compute(bias_));
}

Tensor Linear::forward_relu(const Tensor& x) const {
  return linear_relu(x, compute(weight_), compute(bias_));
}

Embedding::Embedding(int64_t vocab, int64_t dim, Generator& init_gen) {
  ATTN_CHECK(vocab > 0 && dim > 0, "Embedding: sizes must be positive, got vocab ", vocab, ", dim ",
             dim);
  weight_ = register_parameter(
      "weight",
      Tensor::normal({vocab, dim}, 0.0, 1.0 / std::sqrt(static_cast<double>(dim)), init_gen));
}

Tensor Embedding::forward(const Tensor& ids, double scale, bool add_positions,
                          int64_t position_offset) const {
  return embedding(ids, compute(weight_), scale, add_positions, position_offset);
}

LayerNorm::LayerNorm(int64_t dim, double eps) : eps_(eps) {
  ATTN_CHECK(dim > 0 && eps > 0, "LayerNorm: dim must be positive and eps > 0, got dim ", dim,
             ", eps ", eps);
  weight_ = register_parameter("weight", Tensor::ones({dim}));
  bias_ = register_parameter("bias", Tensor::zeros({dim}));
}

Tensor LayerNorm::forward(const Tensor& x, const Tensor& residual) const {
  return layer_norm(x, compute(weight_), compute(bias_), eps_, residual);
}

FeedForward::FeedForward(int64_t d_model, int64_t d_ff, double relu_dropout, Generator& init_gen)
    : relu_dropout_(relu_dropout) {
  fc1_ = register_module("fc1", std::make_shared<Linear>(d_model, d_ff, true, init_gen));
  fc2_ = register_module("fc2", std::make_shared<Linear>(d_ff, d_model, true, init_gen));
}

Tensor FeedForward::forward(const Tensor& x) const {
  Tensor h = fc1_->forward_relu(x);
  h = dropout(h, relu_dropout_, is_training(), dropout_generator());
  return fc2_->forward(h);
}

}  // namespace attn::nn
