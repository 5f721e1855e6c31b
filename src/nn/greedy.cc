#include "nn/greedy.h"

#include "core/grad_mode.h"

namespace attn::nn {

std::vector<std::vector<int32_t>> greedy_decode(Transformer& model, const Tensor& src,
                                                const Tensor& src_lengths, int32_t bos, int32_t eos,
                                                int64_t max_len) {
  ATTN_CHECK(max_len >= 0, "greedy_decode: max_len must be >= 0, got ", max_len);
  const int64_t vocab = model.config().tgt_vocab;
  ATTN_CHECK(bos >= 0 && bos < vocab && eos >= 0 && eos < vocab, "greedy_decode: bos ", bos,
             " and eos ", eos, " must be in [0, ", vocab, ")");
  NoGradGuard no_grad;
  EvalModeGuard eval(model);

  Tensor memory = model.encode(src, src_lengths);
  const int64_t batch = memory.size(0);
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(batch));
  if (batch == 0 || max_len == 0) return out;
  Transformer::DecodeState state = model.start_decoding(memory, src_lengths);

  // active[i]: the output row decoded by state row i. Finished rows leave the state so later
  // steps cost only what is still being decoded.
  std::vector<int32_t> active(static_cast<size_t>(batch));
  for (int64_t i = 0; i < batch; ++i) active[i] = static_cast<int32_t>(i);
  std::vector<int32_t> tokens(static_cast<size_t>(batch), bos);
  const Device device = memory.device();

  for (int64_t t = 0; t < max_len && !active.empty(); ++t) {
    const int64_t n = static_cast<int64_t>(active.size());
    Tensor logits = model.decode_step(Tensor::from_ints(tokens, {n}, device), state);
    const std::vector<double> scores = logits.to_double_vector();
    std::vector<int32_t> keep, next_active, next_tokens;
    for (int64_t i = 0; i < n; ++i) {
      const double* row = scores.data() + i * vocab;
      int64_t best = 0;
      for (int64_t v = 1; v < vocab; ++v)
        if (row[v] > row[best]) best = v;
      if (best == eos) continue;
      out[active[i]].push_back(static_cast<int32_t>(best));
      keep.push_back(static_cast<int32_t>(i));
      next_active.push_back(active[i]);
      next_tokens.push_back(static_cast<int32_t>(best));
    }
    if (!next_active.empty() && static_cast<int64_t>(keep.size()) < n && t + 1 < max_len) {
      model.reorder(state, Tensor::from_ints(keep, {static_cast<int64_t>(keep.size())}, device));
    }
    active = std::move(next_active);
    tokens = std::move(next_tokens);
  }
  return out;
}

}  // namespace attn::nn
