#include "decode/cross_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "autograd/functions.h"
#include "core/grad_mode.h"
#include "nn/module.h"
#include "nn/attention.h"
#include "nn/layers.h"
#include "nn/transformer_layers.h"

namespace attn::decode {

namespace {

constexpr const char* kWhere = "cross_attention_weights";

// The direct child `name` of m as an M; the error names the path so that a renamed sub-module
// in nn is found at once.
template <class M>
std::shared_ptr<M> child(const nn::Module& m, const std::string& path, const std::string& name) {
  for (const auto& [n, c] : m.children()) {
    if (n != name) continue;
    auto typed = std::dynamic_pointer_cast<M>(c);
    ATTN_CHECK(typed, kWhere, ": module '", path, name, "' does not have the expected type");
    return typed;
  }
  ATTN_FAIL(kWhere, ": the model has no module '", path, name, "'");
}

}  // namespace

std::vector<Tensor> cross_attention_weights_from_memory(
    nn::Transformer& model, const Tensor& memory, const Tensor& src_lengths,
    const std::vector<std::vector<int32_t>>& targets, int32_t bos, int32_t pad) {
  const nn::TransformerConfig& cfg = model.config();
  ATTN_CHECK(memory.defined() && memory.dim() == 3 && memory.size(2) == cfg.d_model, kWhere,
             ": memory must be [B, S, ", cfg.d_model, "], got ",
             memory.defined() ? memory.shape() : Shape{});
  const int64_t batch = memory.size(0), src_len = memory.size(1);
  ATTN_CHECK(static_cast<int64_t>(targets.size()) == batch, kWhere, ": ", targets.size(),
             " targets for a batch of ", batch, " rows");
  ATTN_CHECK(src_lengths.defined() && src_lengths.dim() == 1 && src_lengths.size(0) == batch,
             kWhere, ": src_lengths must be i32 [", batch, "], got ",
             src_lengths.defined() ? src_lengths.shape() : Shape{});
  std::vector<Tensor> out;
  if (batch == 0) return out;
  NoGradGuard no_grad;
  nn::EvalModeGuard eval(model);

  auto decoder = child<nn::Decoder>(model, "", "decoder");
  const auto& layers = decoder->layers();
  ATTN_CHECK(layers.size() > 0, kWhere, ": the model has no decoder layer");
  auto embed = child<nn::Embedding>(model, "", cfg.share_embeddings ? "src_embed" : "tgt_embed");

  // Teacher-forced input [bos, y1 .. yn], right-padded: causal self-attention keeps padding
  // from reaching the real positions.
  int64_t steps = 0;
  for (const auto& t : targets)
    steps = std::max<int64_t>(steps, static_cast<int64_t>(t.size()) + 1);
  std::vector<int32_t> ids(static_cast<size_t>(batch * steps), pad);
  for (int64_t b = 0; b < batch; ++b) {
    ids[b * steps] = bos;
    std::copy(targets[b].begin(), targets[b].end(), ids.begin() + b * steps + 1);
  }
  const Device device = memory.device();
  Tensor tgt_in = Tensor::from_ints(ids, {batch, steps}, device);
  // As Transformer::embed_target (dropout is off in eval mode).
  Tensor h = embed->forward(tgt_in, std::sqrt(static_cast<double>(cfg.d_model)),
                            /*add_positions=*/true, 0);
  const int64_t last = layers.size() - 1;
  for (int64_t i = 0; i < last; ++i) h = layers[i].forward(h, memory, src_lengths);

  // The last layer up to its cross-attention query, as DecoderLayer::forward computes it.
  const nn::DecoderLayer& layer = layers[last];
  const std::string path = "decoder.layers." + std::to_string(last) + ".";
  auto self_attn = child<nn::MultiHeadAttention>(layer, path, "self_attn");
  auto self_attn_norm = child<nn::LayerNorm>(layer, path, "self_attn_norm");
  auto cross_attn = child<nn::MultiHeadAttention>(layer, path, "cross_attn");
  auto cross_attn_norm = child<nn::LayerNorm>(layer, path, "cross_attn_norm");
  auto q_proj = child<nn::Linear>(*cross_attn, path + "cross_attn.", "q_proj");
  auto k_proj = child<nn::Linear>(*cross_attn, path + "cross_attn.", "k_proj");
  Tensor query;
  if (cfg.pre_norm) {
    Tensor n = self_attn_norm->forward(h);
    query = cross_attn_norm->forward(add(h, self_attn->forward(n, n, Tensor(), true)));
  } else {
    query = self_attn_norm->forward(self_attn->forward(h, h, Tensor(), true), h);
  }
  const int64_t heads = cross_attn->heads(), head_dim = cfg.d_model / heads;
  Tensor q = split_heads(q_proj->forward(query), heads);   // [B, H, T, Dh]
  Tensor k = split_heads(k_proj->forward(memory), heads);  // [B, H, S, Dh]
  const std::vector<double> logits = matmul(q, k, false, true).to_double_vector();
  const std::vector<int32_t> lengths = src_lengths.to_int_vector();

  // softmax(q k^T / sqrt(Dh)) over the unpadded keys, in double on the host.
  const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(head_dim));
  out.reserve(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t len = lengths[b];
    ATTN_CHECK(len >= 1 && len <= src_len, kWhere, ": src_lengths[", b, "] = ", len,
               " must be in [1, ", src_len, "]");
    const int64_t rows = static_cast<int64_t>(targets[b].size()) + 1;
    std::vector<double> probs(static_cast<size_t>(heads * rows * len));
    for (int64_t hd = 0; hd < heads; ++hd) {
      for (int64_t t = 0; t < rows; ++t) {
        const double* s = logits.data() + ((b * heads + hd) * steps + t) * src_len;
        double* p = probs.data() + (hd * rows + t) * len;
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < len; ++j) m = std::max(m, s[j] * inv_sqrt_d);
        double z = 0;
        for (int64_t j = 0; j < len; ++j) z += p[j] = std::exp(s[j] * inv_sqrt_d - m);
        for (int64_t j = 0; j < len; ++j) p[j] /= z;
      }
    }
    out.push_back(Tensor::from_vector(probs, {heads, rows, len}, kF32));
  }
  return out;
}

std::vector<Tensor> cross_attention_weights(nn::Transformer& model, const Tensor& src,
                                            const Tensor& src_lengths,
                                            const std::vector<std::vector<int32_t>>& targets,
                                            int32_t bos, int32_t pad) {
  NoGradGuard no_grad;
  nn::EvalModeGuard eval(model);
  return cross_attention_weights_from_memory(model, model.encode(src, src_lengths), src_lengths,
                                             targets, bos, pad);
}

}  // namespace attn::decode
