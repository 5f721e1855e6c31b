// Multi-head attention (the paper's section 3.2.2) with a key/value cache for incremental
// decoding.
#pragma once

#include <cstdint>
#include <memory>

#include "core/random.h"
#include "core/tensor.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "ops/attention.h"

namespace attn::nn {

// Projected keys and values, per head: k, v [B, H, T, Dh]. Empty until the first step.
struct KVCache {
  Tensor k, v;
  bool empty() const { return !k.defined(); }
  int64_t length() const { return empty() ? 0 : k.size(2); }
};

class MultiHeadAttention : public Module {
 public:
  // d_model must be divisible by heads; attention_dropout drops attention probabilities in
  // training mode. backend (model.attention): refused here, naming the key, where it cannot
  // run at all (cudnn in a build without cuDNN or without libcudnn.so.9).
  MultiHeadAttention(int64_t d_model, int64_t heads, double attention_dropout, Generator& init_gen,
                     ops::AttentionBackend backend = ops::AttentionBackend::fused);

  // query [B, Tq, d], key_value [B, Tk, d] -> [B, Tq, d]. key_lengths (i32 [B], optional)
  // masks keys at or past each row's length; causal lets query i see keys j <= i + Tk - Tq.
  Tensor forward(const Tensor& query, const Tensor& key_value, const Tensor& key_lengths,
                 bool causal) const;

  // k_proj / v_proj of key_value split into heads: computed once from the encoder memory for
  // cross-attention in decoding.
  KVCache project_kv(const Tensor& key_value) const;
  // Attention of query [B, Tq, d] over already projected keys and values.
  Tensor attend(const Tensor& query, const KVCache& kv, const Tensor& key_lengths,
                bool causal) const;
  // Incremental self-attention: appends x's [B, Tq, d] keys and values to `cache` (along T)
  // and lets each new position attend to every cached key up to itself.
  Tensor forward_incremental(const Tensor& x, KVCache& cache) const;

  int64_t heads() const { return heads_; }

 private:
  std::shared_ptr<Linear> q_proj_, k_proj_, v_proj_, out_proj_;
  int64_t heads_;
  double attention_dropout_;
  ops::AttentionBackend backend_;
};

}  // namespace attn::nn
