// Hyper-parameters of the encoder-decoder Transformer. Field names are the config keys
// (model.d_model, ...), so validation errors point at what to edit.
#pragma once

#include <cstdint>

#include "ops/attention.h"

namespace attn::nn {

struct TransformerConfig {
  int64_t src_vocab = 0, tgt_vocab = 0;
  int64_t d_model = 512, heads = 8, d_ff = 2048, encoder_layers = 6, decoder_layers = 6;
  double dropout = 0.1;            // residual + embedding dropout (P_drop)
  double attention_dropout = 0.0;  // on attention probabilities
  double relu_dropout = 0.0;       // inside the feed-forward
  bool pre_norm = false;           // x + Sublayer(LN(x)) with a final LN, instead of the paper's
                                   // LN(x + Sublayer(x))
  bool share_embeddings = true;    // source, target and output embeddings tied (needs
                                   // src_vocab == tgt_vocab)
  // Which attention kernels run on CUDA (ops/attention.h); not part of the architecture.
  ops::AttentionBackend attention = ops::AttentionBackend::fused;
  double layer_norm_eps = 1e-5;

  // Throws attn::Error naming the offending field ("model.d_model must be divisible by
  // model.heads (512 % 7 != 0)"). Sizes are also bounded (kMax*), far above any real model,
  // so that size arithmetic cannot overflow.
  void validate() const;

  // Parameters the model has (the sum of every weight's element count).
  int64_t parameter_count() const;

  static constexpr int64_t kMaxVocab = int64_t{1} << 24;
  static constexpr int64_t kMaxDModel = int64_t{1} << 16;
  static constexpr int64_t kMaxDFF = int64_t{1} << 20;
  static constexpr int64_t kMaxLayers = 1024;
};

}  // namespace attn::nn
