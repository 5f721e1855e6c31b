// Cross-attention probabilities of the last decoder layer for given target sequences (the
// weights behind `attn translate --attention-svg`).
//
// nn exposes no attention hook, so they are recomputed by a teacher-forced pass over
// [bos] + tokens: the decoder layers below the last run as they are, and the last layer's
// masked self-attention sublayer and cross-attention query are rebuilt from its registered
// sub-modules (self_attn, self_attn_norm, cross_attn.{q_proj,k_proj}, cross_attn_norm: the
// checkpoint names), following DecoderLayer's post-/pre-norm residual wiring. The test
// (tests/test_decode.cc) checks that these probabilities reproduce the model's logits, so a
// change of that wiring in nn shows up there.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "nn/transformer.h"

namespace attn::decode {

// Row b of src (i32 [B, S], lengths i32 [B]) paired with targets[b] (ids without bos/eos).
// Returns per row f32 [heads, |targets[b]| + 1, src_lengths[b]] on the CPU: query i is the
// position that predicts targets[b][i] (the last one predicts eos); padded source positions
// are left out (their probability is 0). Eval mode, no graph; the training flag is restored.
std::vector<Tensor> cross_attention_weights(nn::Transformer& model, const Tensor& src,
                                            const Tensor& src_lengths,
                                            const std::vector<std::vector<int32_t>>& targets,
                                            int32_t bos, int32_t pad = 0);

// The same from an already encoded memory [B, S, d_model] (model.encode(src, src_lengths)).
std::vector<Tensor> cross_attention_weights_from_memory(
    nn::Transformer& model, const Tensor& memory, const Tensor& src_lengths,
    const std::vector<std::vector<int32_t>>& targets, int32_t bos, int32_t pad = 0);

}  // namespace attn::decode
