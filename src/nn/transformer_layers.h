// Encoder and decoder layers and stacks. Post-norm (the paper): x = LN(x + Dropout(F(x))),
// with the residual add fused into layer_norm. Pre-norm: x = x + Dropout(F(LN(x))) and a final
// LN after the stack, which trains without warm-up tricks at depth.
#pragma once

#include <memory>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"
#include "nn/attention.h"
#include "nn/config.h"
#include "nn/layers.h"
#include "nn/module.h"

namespace attn::nn {

class EncoderLayer : public Module {
 public:
  EncoderLayer(const TransformerConfig& cfg, Generator& init_gen);
  // x [B, S, d]; src_lengths i32 [B] masks padded keys.
  Tensor forward(const Tensor& x, const Tensor& src_lengths) const;

 private:
  std::shared_ptr<MultiHeadAttention> self_attn_;
  std::shared_ptr<LayerNorm> self_attn_norm_;
  std::shared_ptr<FeedForward> ffn_;
  std::shared_ptr<LayerNorm> ffn_norm_;
  double dropout_;
  bool pre_norm_;
};

// A decoder layer's state in incremental decoding.
struct DecoderLayerCache {
  KVCache self_attn;   // grows by one position per step
  KVCache cross_attn;  // projected encoder memory, computed once
};

class DecoderLayer : public Module {
 public:
  DecoderLayer(const TransformerConfig& cfg, Generator& init_gen);
  // y [B, T, d] with causal self-attention; memory [B, S, d] with padded keys masked by
  // src_lengths.
  Tensor forward(const Tensor& y, const Tensor& memory, const Tensor& src_lengths) const;
  // The next positions y [B, t, d] (usually t = 1) given the cache of the earlier ones;
  // cache.cross_attn must be filled (init_cache).
  Tensor forward_step(const Tensor& y, DecoderLayerCache& cache, const Tensor& src_lengths) const;
  DecoderLayerCache init_cache(const Tensor& memory) const;

 private:
  std::shared_ptr<MultiHeadAttention> self_attn_;
  std::shared_ptr<LayerNorm> self_attn_norm_;
  std::shared_ptr<MultiHeadAttention> cross_attn_;
  std::shared_ptr<LayerNorm> cross_attn_norm_;
  std::shared_ptr<FeedForward> ffn_;
  std::shared_ptr<LayerNorm> ffn_norm_;
  double dropout_;
  bool pre_norm_;
};

// The stacks: "layers.<i>" and, with pre-norm only, the final "norm".
class Encoder : public Module {
 public:
  Encoder(const TransformerConfig& cfg, Generator& init_gen);
  Tensor forward(const Tensor& x, const Tensor& src_lengths) const;
  const ModuleList<EncoderLayer>& layers() const { return *layers_; }

 private:
  std::shared_ptr<ModuleList<EncoderLayer>> layers_;
  std::shared_ptr<LayerNorm> norm_;  // null in post-norm
};

class Decoder : public Module {
 public:
  Decoder(const TransformerConfig& cfg, Generator& init_gen);
  Tensor forward(const Tensor& y, const Tensor& memory, const Tensor& src_lengths) const;
  // caches has one entry per layer.
  Tensor forward_step(const Tensor& y, std::vector<DecoderLayerCache>& caches,
                      const Tensor& src_lengths) const;
  std::vector<DecoderLayerCache> init_caches(const Tensor& memory) const;
  const ModuleList<DecoderLayer>& layers() const { return *layers_; }

 private:
  std::shared_ptr<ModuleList<DecoderLayer>> layers_;
  std::shared_ptr<LayerNorm> norm_;  // null in post-norm
};

}  // namespace attn::nn
