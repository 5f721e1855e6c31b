#include "nn/transformer.h"

#include <cmath>

#include "autograd/functions.h"
#include "core/allocator.h"
#include "ops/index.h"

namespace attn::nn {

namespace {

const TransformerConfig& validated(const TransformerConfig& cfg) {
  cfg.validate();
  return cfg;
}

void check_ids(const char* where, const char* name, const Tensor& ids, int64_t dims) {
  ATTN_CHECK(ids.defined() && ids.dtype() == kI32 && ids.dim() == dims, where, ": ", name,
             " must be i32 with ", dims, " dimensions, got ",
             ids.defined() ? dtype_name(ids.dtype()) : "undefined", " of shape ",
             ids.defined() ? ids.shape() : Shape{});
}

void check_lengths(const char* where, const Tensor& lengths, int64_t batch) {
  check_ids(where, "src_lengths", lengths, 1);
  ATTN_CHECK(lengths.size(0) == batch, where, ": src_lengths has shape ", lengths.shape(),
             " but the batch has ", batch, " rows");
}

void check_memory(const char* where, const Tensor& memory, int64_t d_model) {
  ATTN_CHECK(memory.defined() && memory.dim() == 3 && memory.size(2) == d_model, where,
             ": memory must be [B, S, ", d_model, "], got ",
             memory.defined() ? memory.shape() : Shape{});
}

}  // namespace

Transformer::Transformer(const TransformerConfig& cfg, Generator& init_gen) try
    : config_(validated(cfg)), embed_scale_(std::sqrt(static_cast<double>(cfg.d_model))) {
  src_embed_ = register_module("src_embed",
                               std::make_shared<Embedding>(cfg.src_vocab, cfg.d_model, init_gen));
  if (cfg.share_embeddings) {
    tgt_embed_ = src_embed_;
  } else {
    tgt_embed_ = register_module("tgt_embed",
                                 std::make_shared<Embedding>(cfg.tgt_vocab, cfg.d_model, init_gen));
  }
  encoder_ = register_module("encoder", std::make_shared<Encoder>(cfg, init_gen));
  decoder_ = register_module("decoder", std::make_shared<Decoder>(cfg, init_gen));
  if (!cfg.share_embeddings) {
    out_proj_ = register_module(
        "out_proj", std::make_shared<Linear>(cfg.d_model, cfg.tgt_vocab, false, init_gen));
  }
} catch (const OutOfMemoryError& e) {
  // Name the settings that decide the size, and the whole amount.
  const int64_t n = cfg.parameter_count();
  throw OutOfMemoryError(detail::str_cat(
      "the model does not fit in memory: model.d_model = ", cfg.d_model, ", model.d_ff = ",
      cfg.d_ff, ", ", cfg.encoder_layers, "+", cfg.decoder_layers, " layers and a vocabulary of ",
      cfg.src_vocab, " make ", n, " parameters (", format_bytes(4.0 * static_cast<double>(n)),
      " in f32); ", e.what()));
}

Tensor Transformer::encode(const Tensor& src, const Tensor& src_lengths) {
  check_ids("Transformer::encode", "src", src, 2);
  check_lengths("Transformer::encode", src_lengths, src.size(0));
  Tensor x = src_embed_->forward(src, embed_scale_, /*add_positions=*/true, 0);
  x = dropout(x, config_.dropout, is_training(), dropout_generator());
  return encoder_->forward(x, src_lengths);
}

Tensor Transformer::embed_target(const Tensor& ids, int64_t position_offset) {
  Tensor y = tgt_embed_->forward(ids, embed_scale_, /*add_positions=*/true, position_offset);
  return dropout(y, config_.dropout, is_training(), dropout_generator());
}

Tensor Transformer::project_output(const Tensor& h) const {
  if (out_proj_) return out_proj_->forward(h);
  // Tied: logits = h E^T with the shared [V, d] table (no bias).
  return matmul(h, compute(tgt_embed_->weight()), false, true);
}

Tensor Transformer::decode_hidden(const Tensor& tgt_in, const Tensor& memory,
                                  const Tensor& src_lengths) {
  check_ids("Transformer::decode", "tgt_in", tgt_in, 2);
  check_memory("Transformer::decode", memory, config_.d_model);
  ATTN_CHECK(memory.size(0) == tgt_in.size(0), "Transformer::decode: tgt_in has shape ",
             tgt_in.shape(), " but memory has shape ", memory.shape(), " (batch sizes differ)");
  check_lengths("Transformer::decode", src_lengths, memory.size(0));
  return decoder_->forward(embed_target(tgt_in, 0), memory, src_lengths);
}

Tensor Transformer::decode(const Tensor& tgt_in, const Tensor& memory, const Tensor& src_lengths) {
  return project_output(decode_hidden(tgt_in, memory, src_lengths));
}

Tensor Transformer::forward(const Tensor& src, const Tensor& src_lengths, const Tensor& tgt_in) {
  return decode(tgt_in, encode(src, src_lengths), src_lengths);
}

Tensor Transformer::forward_hidden(const Tensor& src, const Tensor& src_lengths,
                                   const Tensor& tgt_in) {
  return decode_hidden(tgt_in, encode(src, src_lengths), src_lengths);
}

Transformer::DecodeState Transformer::start_decoding(const Tensor& memory,
                                                     const Tensor& src_lengths) {
  check_memory("Transformer::start_decoding", memory, config_.d_model);
  check_lengths("Transformer::start_decoding", src_lengths, memory.size(0));
  DecodeState state;
  state.layers = decoder_->init_caches(memory);
  state.memory = memory;
  state.src_lengths = src_lengths;
  return state;
}

Tensor Transformer::decode_step(const Tensor& tokens, DecodeState& state) {
  check_ids("Transformer::decode_step", "tokens", tokens, 1);
  ATTN_CHECK(tokens.size(0) == state.batch_size(), "Transformer::decode_step: tokens has shape ",
             tokens.shape(), " but the decoding state holds ", state.batch_size(), " rows");
  const int64_t batch = tokens.size(0);
  Tensor y = embed_target(tokens.detach().view({batch, 1}), state.step);
  Tensor h = decoder_->forward_step(y, state.layers, state.src_lengths);
  ++state.step;
  return reshape(project_output(h), {batch, config_.tgt_vocab});
}

void Transformer::reorder(DecodeState& state, const Tensor& batch_indices) {
  ATTN_CHECK(batch_indices.defined() && batch_indices.dtype() == kI32 && batch_indices.dim() == 1,
             "Transformer::reorder: batch_indices must be i32 [B'], got ",
             batch_indices.defined() ? batch_indices.shape() : Shape{});
  auto pick = [&](Tensor& t) {
    if (t.defined()) t = ops::index_select0(t.detach(), batch_indices);
  };
  for (DecoderLayerCache& c : state.layers) {
    pick(c.self_attn.k);
    pick(c.self_attn.v);
    pick(c.cross_attn.k);
    pick(c.cross_attn.v);
  }
  pick(state.memory);
  pick(state.src_lengths);
}

}  // namespace attn::nn
