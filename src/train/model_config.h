// The model a run config describes, for training, translation and tests alike.
#pragma once

#include "nn/transformer.h"
#include "train/config.h"

namespace attn::train {

inline nn::TransformerConfig transformer_config(const Config& c, int64_t vocab_size) {
  nn::TransformerConfig mc;
  mc.src_vocab = mc.tgt_vocab = vocab_size;
  mc.d_model = c.model.d_model;
  mc.heads = c.model.heads;
  mc.d_ff = c.model.d_ff;
  mc.encoder_layers = c.model.encoder_layers;
  mc.decoder_layers = c.model.decoder_layers;
  mc.dropout = c.model.dropout;
  mc.attention_dropout = c.model.attention_dropout;
  mc.relu_dropout = c.model.relu_dropout;
  mc.pre_norm = c.model.pre_norm;
  mc.share_embeddings = c.model.share_embeddings;
  mc.attention = ops::parse_attention_backend(c.model.attention, "config: model.attention");
  return mc;
}

// model.attention against the device training resolved to (train.device: auto may pick the
// CPU): cudnn needs CUDA. One line naming the key and the device.
inline void check_attention_device(const Config& c, Device device) {
  ATTN_CHECK(c.model.attention != "cudnn" || device.is_cuda(), "model.attention is cudnn but "
             "training runs on ", device.str(), "; cuDNN attention needs a CUDA device (use "
             "model.attention: fused)");
}

}  // namespace attn::train
