// Batched beam search with the incremental decoder (Transformer::decode_step / reorder).
//
// Conventions (those of fairseq's SequenceGenerator, so scores compare with it):
//   - A hypothesis's log-probability is the sum of log p(token) over its tokens *including*
//     the final eos; its length |Y| for the penalty counts the eos too.
//   - score = logprob / lp(|Y|) with GNMT's lp(|Y|) = ((5 + |Y|) / 6)^alpha; alpha = 0 ranks
//     by raw log-probability.
//   - The maximum output length of sentence b is L_b = floor(max_len_a * src_lengths[b] +
//     max_len_b) tokens *excluding* eos, where src_lengths[b] is the length the model sees
//     (the batcher's lengths, source eos included). At step L_b only eos may follow, and its
//     real log-probability is added (fairseq's forced eos), so every hypothesis ends in eos
//     and has at most L_b tokens before it.
//   - No token is forbidden (pad, unk and bos may be emitted), so that beam 1 is exactly
//     nn::greedy_decode with max_len = L_b; unless max_repeats > 0: then a token that would
//     make a block of 1 to kRepeatBlock tokens occur more than max(max_repeats, the source's
//     own longest such run) times in a row is not a candidate (the degenerate "die die die
//     die" of an undertrained model; the source's own runs stay allowed).
//
// One step: every live hypothesis of a sentence is extended by every token; the candidates
// are ranked by log-probability (ties: lower hypothesis row, then higher raw logit, then lower
// token id) and the best 2 * beam are kept. An eos candidate ranked within the first `beam`
// ends a hypothesis (at most `beam` finished ones are kept per sentence, in rank order); the
// first `beam` non-eos candidates are the next live hypotheses. Later eos candidates are
// dropped (fairseq). The memory is encoded once; decoding starts from one row per sentence,
// and Transformer::reorder (repeated indices) fans each out to at most `beam` rows.
//
// Stopping rule, per sentence: it is finished when
//   (a) `beam` hypotheses have ended (fairseq's early stopping; with beam 1 this is greedy), or
//   (b) no live hypothesis can still beat the nbest-th best finished one: a live hypothesis
//       with log-probability l <= 0 after n tokens ends with log-probability <= l and length
//       in [n + 1, L_b + 1], so its score is at most l / max(lp(n + 1), lp(L_b + 1)); or
//   (c) it reached L_b (every live hypothesis is closed with eos) or has no live hypothesis.
// Rule (b) only stops a sentence whose returned n-best can no longer change, so results are
// those of rules (a) and (c) alone, computed sooner. Finished sentences leave the decoding
// state (their rows are dropped with Transformer::reorder); decoding stops when none is left.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "nn/transformer.h"

namespace attn::decode {

struct BeamOptions {
  int64_t beam = 4;    // hypotheses kept per sentence; 1 = greedy
  double alpha = 0.6;  // length-penalty exponent; 0 = rank by raw log-probability
  // Maximum output length: floor(max_len_a * src_length + max_len_b) tokens, eos excluded,
  // src_length as given to the model (with the source eos when the batcher added one).
  double max_len_a = 1.0;
  int64_t max_len_b = 50;
  int64_t nbest = 1;  // hypotheses returned per sentence, 1 <= nbest <= beam
  int32_t bos = 2, eos = 3, pad = 0;
  // Fill Hypothesis::attention for every returned hypothesis (for --attention-svg).
  bool return_attention = false;
  // > 0: no block of 1 to kRepeatBlock tokens repeated back to back more often than this (or
  // than the source repeats one); 0 = no limit.
  int64_t max_repeats = 0;
  static constexpr int64_t kRepeatBlock = 4;

  // Throws attn::Error naming the offending option; tgt_vocab bounds the token ids.
  void validate(int64_t tgt_vocab) const;
  // Bounds far above use that keep the length limit a * src_len + b an exact integer.
  static constexpr int64_t kMaxBeam = int64_t{1} << 16;
  static constexpr double kMaxLenA = 1024;
  static constexpr int64_t kMaxLenB = int64_t{1} << 20;
};

// The most times a block of 1 to BeamOptions::kRepeatBlock tokens occurs back to back at the
// end of tokens + [next] (1 when nothing repeats). "a b a b a b" + "a"... : block "a b" ends at
// "b", so tokens {a, b, a, b, a}, next b gives 3.
int64_t trailing_repeats(const std::vector<int32_t>& tokens, int32_t next);
// The most times such a block occurs back to back anywhere in tokens.
int64_t longest_repeats(const std::vector<int32_t>& tokens);

struct Hypothesis {
  std::vector<int32_t> tokens;  // without bos and eos
  double score = 0.0;           // logprob / lp(|tokens| + 1)
  double logprob = 0.0;         // sum of token log-probabilities, eos included
  // With return_attention: f32 [heads, |tokens| + 1, src_length] on the CPU, the last decoder
  // layer's cross-attention probabilities; row i is the query that predicted token i (row
  // |tokens|: the one that predicted eos), columns are the non-pad source positions.
  Tensor attention;
};

// Translates each row of src (i32 [B, S], right-padded; src_lengths i32 [B]): for each sentence
// up to nbest hypotheses, best first (by score; equal scores: the one that ended first). Fewer
// than nbest come back only when fewer distinct hypotheses exist within the length limit. Runs
// without recording a graph and in eval mode (the model's training flag is restored).
std::vector<std::vector<Hypothesis>> beam_search(nn::Transformer& model, const Tensor& src,
                                                 const Tensor& src_lengths, const BeamOptions& opt);

// GNMT's length penalty ((5 + length) / 6)^alpha.
double length_penalty(int64_t length, double alpha);

}  // namespace attn::decode
