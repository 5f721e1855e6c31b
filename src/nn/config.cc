#include "nn/config.h"

#include <cmath>

#include "base/error.h"

namespace attn::nn {

namespace {
void check_probability(const char* field, double p) {
  ATTN_CHECK(std::isfinite(p) && p >= 0.0 && p < 1.0, "model.", field, " must be in [0, 1), got ",
             p);
}

void check_max(const char* field, int64_t value, int64_t max) {
  ATTN_CHECK(value <= max, "model.", field, " = ", value, " is too large (at most ", max, ")");
}
}  // namespace

void TransformerConfig::validate() const {
  ATTN_CHECK(src_vocab > 0, "model.src_vocab must be positive, got ", src_vocab);
  ATTN_CHECK(tgt_vocab > 0, "model.tgt_vocab must be positive, got ", tgt_vocab);
  check_max("src_vocab", src_vocab, kMaxVocab);
  check_max("tgt_vocab", tgt_vocab, kMaxVocab);
  ATTN_CHECK(d_model > 0, "model.d_model must be positive, got ", d_model);
  check_max("d_model", d_model, kMaxDModel);
  ATTN_CHECK(heads > 0, "model.heads must be positive, got ", heads);
  ATTN_CHECK(d_model % heads == 0, "model.d_model must be divisible by model.heads (", d_model,
             " % ", heads, " != 0)");
  // The sinusoidal table pairs sin and cos per frequency.
  ATTN_CHECK(d_model % 2 == 0, "model.d_model must be even for sinusoidal positions, got ",
             d_model);
  ATTN_CHECK(d_ff > 0, "model.d_ff must be positive, got ", d_ff);
  check_max("d_ff", d_ff, kMaxDFF);
  ATTN_CHECK(encoder_layers > 0, "model.encoder_layers must be positive, got ", encoder_layers);
  ATTN_CHECK(decoder_layers > 0, "model.decoder_layers must be positive, got ", decoder_layers);
  check_max("encoder_layers", encoder_layers, kMaxLayers);
  check_max("decoder_layers", decoder_layers, kMaxLayers);
  check_probability("dropout", dropout);
  check_probability("attention_dropout", attention_dropout);
  check_probability("relu_dropout", relu_dropout);
  ATTN_CHECK(std::isfinite(layer_norm_eps) && layer_norm_eps > 0.0,
             "model.layer_norm_eps must be positive, got ", layer_norm_eps);
  ATTN_CHECK(!share_embeddings || src_vocab == tgt_vocab,
             "model.share_embeddings needs model.src_vocab == model.tgt_vocab (got ", src_vocab,
             " and ", tgt_vocab, "); use a joint vocabulary or set share_embeddings: false");
}

int64_t TransformerConfig::parameter_count() const {
  const int64_t d = d_model;
  const int64_t attention = 4 * (d * d + d);             // q, k, v, out projections
  const int64_t ffn = d * d_ff + d_ff + d_ff * d + d;  // two linears with biases
  const int64_t norm = 2 * d;
  const int64_t encoder = encoder_layers * (attention + ffn + 2 * norm) + (pre_norm ? norm : 0);
  const int64_t decoder =
      decoder_layers * (2 * attention + ffn + 3 * norm) + (pre_norm ? norm : 0);
  const int64_t embeddings = share_embeddings ? src_vocab * d : (src_vocab + 2 * tgt_vocab) * d;
  return embeddings + encoder + decoder;
}

}  // namespace attn::nn
