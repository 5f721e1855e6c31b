#include "nn/transformer_layers.h"

#include "autograd/functions.h"

namespace attn::nn {

namespace {

// One residual sublayer around f, post-norm LN(x + Dropout(f(x))) or pre-norm
// x + Dropout(f(LN(x))).
template <class F>
Tensor residual_sublayer(const Module& owner, bool pre_norm, double p, const Tensor& x,
                         const LayerNorm& norm, F&& f) {
  if (pre_norm) {
    Tensor h = f(norm.forward(x));
    return add(x, dropout(h, p, owner.is_training(), owner.dropout_generator()));
  }
  Tensor h = dropout(f(x), p, owner.is_training(), owner.dropout_generator());
  return norm.forward(h, x);
}

}  // namespace

EncoderLayer::EncoderLayer(const TransformerConfig& cfg, Generator& init_gen)
    : dropout_(cfg.dropout), pre_norm_(cfg.pre_norm) {
  self_attn_ =
      register_module("self_attn", std::make_shared<MultiHeadAttention>(
                                       cfg.d_model, cfg.heads, cfg.attention_dropout, init_gen, cfg.attention));
  self_attn_norm_ = register_module("self_attn_norm",
                                    std::make_shared<LayerNorm>(cfg.d_model, cfg.layer_norm_eps));
  ffn_ = register_module(
      "ffn", std::make_shared<FeedForward>(cfg.d_model, cfg.d_ff, cfg.relu_dropout, init_gen));
  ffn_norm_ =
      register_module("ffn_norm", std::make_shared<LayerNorm>(cfg.d_model, cfg.layer_norm_eps));
}

Tensor EncoderLayer::forward(const Tensor& x, const Tensor& src_lengths) const {
  Tensor h = residual_sublayer(
      *this, pre_norm_, dropout_, x, *self_attn_norm_,
      [&](const Tensor& in) { return self_attn_->forward(in, in, src_lengths, false); });
  return residual_sublayer(*this, pre_norm_, dropout_, h, *ffn_norm_,
                           [&](const Tensor& in) { return ffn_->forward(in); });
}

DecoderLayer::DecoderLayer(const TransformerConfig& cfg, Generator& init_gen)
    : dropout_(cfg.dropout), pre_norm_(cfg.pre_norm) {
  self_attn_ =
      register_module("self_attn", std::make_shared<MultiHeadAttention>(
                                       cfg.d_model, cfg.heads, cfg.attention_dropout, init_gen, cfg.attention));
  self_attn_norm_ = register_module("self_attn_norm",
                                    std::make_shared<LayerNorm>(cfg.d_model, cfg.layer_norm_eps));
  cross_attn_ =
      register_module("cross_attn", std::make_shared<MultiHeadAttention>(
                                        cfg.d_model, cfg.heads, cfg.attention_dropout, init_gen, cfg.attention));
  cross_attn_norm_ = register_module("cross_attn_norm",
                                     std::make_shared<LayerNorm>(cfg.d_model, cfg.layer_norm_eps));
  ffn_ = register_module(
      "ffn", std::make_shared<FeedForward>(cfg.d_model, cfg.d_ff, cfg.relu_dropout, init_gen));
  ffn_norm_ =
      register_module("ffn_norm", std::make_shared<LayerNorm>(cfg.d_model, cfg.layer_norm_eps));
}

Tensor DecoderLayer::forward(const Tensor& y, const Tensor& memory,
                             const Tensor& src_lengths) const {
  Tensor h = residual_sublayer(
      *this, pre_norm_, dropout_, y, *self_attn_norm_,
      [&](const Tensor& in) { return self_attn_->forward(in, in, Tensor(), /*causal=*/true); });
  h = residual_sublayer(*this, pre_norm_, dropout_, h, *cross_attn_norm_, [&](const Tensor& in) {
    return cross_attn_->forward(in, memory, src_lengths, false);
  });
  return residual_sublayer(*this, pre_norm_, dropout_, h, *ffn_norm_,
                           [&](const Tensor& in) { return ffn_->forward(in); });
}

Tensor DecoderLayer::forward_step(const Tensor& y, DecoderLayerCache& cache,
                                  const Tensor& src_lengths) const {
  ATTN_CHECK(!cache.cross_attn.empty(),
             "DecoderLayer::forward_step: the cross-attention cache is empty (init_cache)");
  Tensor h = residual_sublayer(
      *this, pre_norm_, dropout_, y, *self_attn_norm_,
      [&](const Tensor& in) { return self_attn_->forward_incremental(in, cache.self_attn); });
  h = residual_sublayer(*this, pre_norm_, dropout_, h, *cross_attn_norm_, [&](const Tensor& in) {
    return cross_attn_->attend(in, cache.cross_attn, src_lengths, false);
  });
  return residual_sublayer(*this, pre_norm_, dropout_, h, *ffn_norm_,
                           [&](const Tensor& in) { return ffn_->forward(in); });
}

DecoderLayerCache DecoderLayer::init_cache(const Tensor& memory) const {
  DecoderLayerCache c;
  c.cross_attn = cross_attn_->project_kv(memory);
  return c;
}

Encoder::Encoder(const TransformerConfig& cfg, Generator& init_gen) {
  layers_ = register_module("layers", std::make_shared<ModuleList<EncoderLayer>>());
  for (int64_t i = 0; i < cfg.encoder_layers; ++i)
    layers_->push_back(std::make_shared<EncoderLayer>(cfg, init_gen));
  if (cfg.pre_norm)
    norm_ = register_module("norm", std::make_shared<LayerNorm>(cfg.d_model, cfg.layer_norm_eps));
}

Tensor Encoder::forward(const Tensor& x, const Tensor& src_lengths) const {
  Tensor h = x;
  for (const auto& layer : *layers_) h = layer->forward(h, src_lengths);
  return norm_ ? norm_->forward(h) : h;
}

Decoder::Decoder(const TransformerConfig& cfg, Generator& init_gen) {
  layers_ = register_module("layers", std::make_shared<ModuleList<DecoderLayer>>());
  for (int64_t i = 0; i < cfg.decoder_layers; ++i)
    layers_->push_back(std::make_shared<DecoderLayer>(cfg, init_gen));
  if (cfg.pre_norm)
    norm_ = register_module("norm", std::make_shared<LayerNorm>(cfg.d_model, cfg.layer_norm_eps));
}

Tensor Decoder::forward(const Tensor& y, const Tensor& memory, const Tensor& src_lengths) const {
  Tensor h = y;
  for (const auto& layer : *layers_) h = layer->forward(h, memory, src_lengths);
  return norm_ ? norm_->forward(h) : h;
}

Tensor Decoder::forward_step(const Tensor& y, std::vector<DecoderLayerCache>& caches,
                             const Tensor& src_lengths) const {
  ATTN_CHECK(static_cast<int64_t>(caches.size()) == layers_->size(),
             "Decoder::forward_step: ", caches.size(), " layer caches for ", layers_->size(),
             " layers");
  Tensor h = y;
  for (int64_t i = 0; i < layers_->size(); ++i)
    h = (*layers_)[i].forward_step(h, caches[static_cast<size_t>(i)], src_lengths);
  return norm_ ? norm_->forward(h) : h;
}

std::vector<DecoderLayerCache> Decoder::init_caches(const Tensor& memory) const {
  std::vector<DecoderLayerCache> caches;
  for (const auto& layer : *layers_) caches.push_back(layer->init_cache(memory));
  return caches;
}

}  // namespace attn::nn
