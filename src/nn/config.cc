#include "nn/config.h"

#include <cmath>

#include "core/error.h"

namespace attn::nn {

namespace {
void check_probability(const char* field, double p) {
  ATTN_CHECK(std::isfinite(p) && p >= 0.0 && p < 1.0, "model.", field, " must be in [0, 1), got ",
             p);
}
}  // namespace

void TransformerConfig::validate() const {
  ATTN_CHECK(src_vocab > 0, "model.src_vocab must be positive, got ", src_vocab);
  ATTN_CHECK(tgt_vocab > 0, "model.tgt_vocab must be positive, got ", tgt_vocab);
  ATTN_CHECK(d_model > 0, "model.d_model must be positive, got ", d_model);
  ATTN_CHECK(heads > 0, "model.heads must be positive, got ", heads);
  ATTN_CHECK(d_model % heads == 0, "model.d_model must be divisible by model.heads (", d_model,
             " % ", heads, " != 0)");
  // The sinusoidal table pairs sin and cos per frequency.
  ATTN_CHECK(d_model % 2 == 0, "model.d_model must be even for sinusoidal positions, got ",
             d_model);
  ATTN_CHECK(d_ff > 0, "model.d_ff must be positive, got ", d_ff);
  ATTN_CHECK(encoder_layers > 0, "model.encoder_layers must be positive, got ", encoder_layers);
  ATTN_CHECK(decoder_layers > 0, "model.decoder_layers must be positive, got ", decoder_layers);
  check_probability("dropout", dropout);
  check_probability("attention_dropout", attention_dropout);
  check_probability("relu_dropout", relu_dropout);
  ATTN_CHECK(std::isfinite(layer_norm_eps) && layer_norm_eps > 0.0,
             "model.layer_norm_eps must be positive, got ", layer_norm_eps);
  ATTN_CHECK(!share_embeddings || src_vocab == tgt_vocab,
             "model.share_embeddings needs model.src_vocab == model.tgt_vocab (got ", src_vocab,
             " and ", tgt_vocab, "); use a joint vocabulary or set share_embeddings: false");
}

}  // namespace attn::nn
