#include "nn/attention.h"

#include "autograd/functions.h"

namespace attn::nn {

MultiHeadAttention::MultiHeadAttention(int64_t d_model, int64_t heads, double attention_dropout,
                                       Generator& init_gen, ops::AttentionBackend backend)
    : heads_(heads), attention_dropout_(attention_dropout), backend_(backend) {
  ATTN_CHECK(heads > 0 && d_model > 0 && d_model % heads == 0, "MultiHeadAttention: d_model ",
             d_model, " is not divisible by ", heads, " heads");
  ops::require_attention_backend(backend, "model.attention");
  q_proj_ = register_module("q_proj", std::make_shared<Linear>(d_model, d_model, true, init_gen));
  k_proj_ = register_module("k_proj", std::make_shared<Linear>(d_model, d_model, true, init_gen));
  v_proj_ = register_module("v_proj", std::make_shared<Linear>(d_model, d_model, true, init_gen));
  out_proj_ =
      register_module("out_proj", std::make_shared<Linear>(d_model, d_model, true, init_gen));
}

Tensor MultiHeadAttention::forward(const Tensor& query, const Tensor& key_value,
                                   const Tensor& key_lengths, bool causal) const {
  return attend(query, project_kv(key_value), key_lengths, causal);
}

KVCache MultiHeadAttention::project_kv(const Tensor& key_value) const {
  ATTN_CHECK(
      key_value.defined() && key_value.dim() == 3 && key_value.size(2) == k_proj_->in_features(),
      "MultiHeadAttention: key_value must be [B, T, ", k_proj_->in_features(), "], got ",
      key_value.defined() ? key_value.shape() : Shape{});
  return KVCache{split_heads(k_proj_->forward(key_value), heads_),
                 split_heads(v_proj_->forward(key_value), heads_)};
}

Tensor MultiHeadAttention::attend(const Tensor& query, const KVCache& kv, const Tensor& key_lengths,
                                  bool causal) const {
  ATTN_CHECK(query.defined() && query.dim() == 3 && query.size(2) == q_proj_->in_features(),
             "MultiHeadAttention: query must be [B, T, ", q_proj_->in_features(), "], got ",
             query.defined() ? query.shape() : Shape{});
  ATTN_CHECK(!kv.empty(), "MultiHeadAttention: attend needs projected keys and values");
  Tensor q = split_heads(q_proj_->forward(query), heads_);
  const double p = is_training() ? attention_dropout_ : 0.0;
  Tensor ctx = attention(q, kv.k, kv.v, key_lengths, causal, p, &dropout_generator(), backend_);
  return out_proj_->forward(merge_heads(ctx));
}

Tensor MultiHeadAttention::forward_incremental(const Tensor& x, KVCache& cache) const {
  KVCache step = project_kv(x);
  if (cache.empty()) {
    cache = step;
  } else {
    ATTN_CHECK(cache.k.size(0) == step.k.size(0), "MultiHeadAttention: the cache holds ",
               cache.k.size(0), " rows but the step has ", step.k.size(0),
               " (reorder the cache when the batch changes)");
    cache.k = concat({cache.k, step.k}, 2);
    cache.v = concat({cache.v, step.v}, 2);
  }
  // Causal, aligned to the end of the keys: new position i sees all earlier steps and itself.
  return attend(x, cache, Tensor(), /*causal=*/true);
}

}  // namespace attn::nn
