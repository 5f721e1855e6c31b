// The encoder-decoder Transformer of "Attention Is All You Need". Parameter names:
//   src_embed.weight                      token table; with share_embeddings also the target
//                                         table and the output projection
//   tgt_embed.weight, out_proj.weight     only without share_embeddings
//   encoder.layers.<i>.{self_attn,self_attn_norm,ffn,ffn_norm}.*
//   decoder.layers.<i>.{self_attn,self_attn_norm,cross_attn,cross_attn_norm,ffn,ffn_norm}.*
//   encoder.norm.*, decoder.norm.*        only with pre_norm
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"
#include "nn/config.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "nn/transformer_layers.h"

namespace attn::nn {

class Transformer : public Module {
 public:
  // Validates cfg; every initial value is drawn from init_gen, so a seed reproduces a model.
  Transformer(const TransformerConfig& cfg, Generator& init_gen);

  // Dropout masks draw from the generator given to Module::set_dropout_generator (owned by
  // the trainer, whose checkpoint holds its state so that a resumed run draws the same masks);
  // default_generator() until one is set. Dropout is active only in training mode.

  // src i32 [B, S] (rows padded on the right), src_lengths i32 [B] -> memory [B, S, d_model].
  Tensor encode(const Tensor& src, const Tensor& src_lengths);
  // tgt_in i32 [B, T] (BOS-shifted targets) -> logits [B, T, tgt_vocab], causal
  // self-attention; padded target positions need no mask (the loss ignores them).
  Tensor decode(const Tensor& tgt_in, const Tensor& memory, const Tensor& src_lengths);
  // decode(tgt_in, encode(src, src_lengths), src_lengths).
  Tensor forward(const Tensor& src, const Tensor& src_lengths, const Tensor& tgt_in);
  // forward before the output projection: the decoder's final states [B, T, d_model];
  // project_output(h) = forward. Training projects only the rows that have a target
  // (train::StepEngine), so padded positions cost no logits and no loss.
  Tensor forward_hidden(const Tensor& src, const Tensor& src_lengths, const Tensor& tgt_in);
  // [..., d_model] -> logits [..., tgt_vocab] (the tied embedding table, or the output layer).
  Tensor project_output(const Tensor& h) const;

  // Incremental decoding (greedy and beam search), one target position per step.
  struct DecodeState {
    std::vector<DecoderLayerCache> layers;  // per decoder layer: self- and cross-attention k, v
    Tensor memory;                          // [B, S, d_model]
    Tensor src_lengths;                     // i32 [B]
    int64_t step = 0;                       // position of the next token
    int64_t batch_size() const { return src_lengths.defined() ? src_lengths.size(0) : 0; }
  };
  // Projects the memory into each layer's cross-attention keys and values once.
  DecodeState start_decoding(const Tensor& memory, const Tensor& src_lengths);
  // tokens i32 [B] at position state.step -> logits [B, tgt_vocab] for the next position;
  // appends to the self-attention caches and advances state.step. Equal to
  // decode(tokens so far)[:, step] (up to rounding).
  Tensor decode_step(const Tensor& tokens, DecodeState& state);
  // Keeps rows batch_indices (i32 [B'], values in [0, B), repeats allowed) of every cached
  // tensor, in that order: drops finished sentences or reorders beams.
  void reorder(DecodeState& state, const Tensor& batch_indices);

  const TransformerConfig& config() const { return config_; }

 private:
  Tensor embed_target(const Tensor& ids, int64_t position_offset);
  Tensor decode_hidden(const Tensor& tgt_in, const Tensor& memory, const Tensor& src_lengths);

  TransformerConfig config_;
  double embed_scale_;
  std::shared_ptr<Embedding> src_embed_, tgt_embed_;  // the same object when shared
  std::shared_ptr<Encoder> encoder_;
  std::shared_ptr<Decoder> decoder_;
  std::shared_ptr<Linear> out_proj_;  // null when shared
};

}  // namespace attn::nn
