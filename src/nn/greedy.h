// Greedy decoding with the incremental decoder: the reference search (beam search lives in
// src/decode) and a quick check of what a model has learned.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "nn/transformer.h"

namespace attn::nn {

// Translates each row of src (i32 [B, S], lengths i32 [B]) by taking the most probable token
// at every step, starting from bos, for at most max_len tokens; a row stops at eos. Returns
// the tokens of each row without bos and eos. Runs without recording a graph and in eval
// mode (the model's training flag is restored afterwards).
std::vector<std::vector<int32_t>> greedy_decode(Transformer& model, const Tensor& src,
                                                const Tensor& src_lengths, int32_t bos, int32_t eos,
                                                int64_t max_len);

}  // namespace attn::nn
