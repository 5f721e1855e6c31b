#include "decode/beam_search.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <utility>

#include "core/grad_mode.h"
#include "decode/cross_attention.h"
#include "nn/module.h"
#include "ops/index.h"

namespace attn::decode {

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// A hypothesis still being extended; rows of the decoding state in the same order.
struct Live {
  int64_t sentence;
  std::vector<int32_t> tokens;
  double logprob;
};

// One extension (row, token) of a live hypothesis.
struct Candidate {
  int64_t row;
  int32_t token;
  double logit;    // raw, for ordering within a row exactly as greedy's argmax
  double logprob;  // of the extended hypothesis
};

// The search order: log-probability, then lower row, then (same row) larger raw logit, then
// lower token id. Within one row, log-probability and logit agree except for rounding ties,
// which the logit breaks, so beam 1 picks greedy's argmax (first of equal maxima).
bool ranks_before(const Candidate& a, const Candidate& b) {
  if (a.logprob != b.logprob) return a.logprob > b.logprob;
  if (a.row != b.row) return a.row < b.row;
  if (a.logit != b.logit) return a.logit > b.logit;
  return a.token < b.token;
}

struct Sentence {
  int64_t max_len = 0;               // tokens before eos
  int64_t max_repeats = 0;           // with BeamOptions::max_repeats: the limit for this source
  std::vector<Hypothesis> finished;  // in the order they ended
};

// The nbest-th best finished score (equal scores rank by ending order, so a later equal one
// never displaces it).
double nth_best_score(const std::vector<Hypothesis>& finished, int64_t n) {
  std::vector<double> s;
  s.reserve(finished.size());
  for (const Hypothesis& h : finished) s.push_back(h.score);
  std::nth_element(s.begin(), s.begin() + (n - 1), s.end(), std::greater<double>());
  return s[static_cast<size_t>(n - 1)];
}

}  // namespace

int64_t trailing_repeats(const std::vector<int32_t>& tokens, int32_t next) {
  const int64_t n = static_cast<int64_t>(tokens.size()) + 1;  // with next at position n - 1
  auto at = [&](int64_t i) { return i == n - 1 ? next : tokens[static_cast<size_t>(i)]; };
  int64_t best = 1;
  for (int64_t p = 1; p <= BeamOptions::kRepeatBlock && 2 * p <= n; ++p) {
    int64_t reps = 1;
    for (; (reps + 1) * p <= n; ++reps) {
      bool same = true;
      for (int64_t i = 0; i < p && same; ++i) same = at(n - 1 - i) == at(n - 1 - reps * p - i);
      if (!same) break;
    }
    best = std::max(best, reps);
  }
  return best;
}

int64_t longest_repeats(const std::vector<int32_t>& tokens) {
  int64_t best = tokens.empty() ? 0 : 1;
  std::vector<int32_t> prefix;
  for (int32_t t : tokens) {
    best = std::max(best, trailing_repeats(prefix, t));
    prefix.push_back(t);
  }
  return best;
}

double length_penalty(int64_t length, double alpha) {
  if (alpha == 0.0) return 1.0;
  return std::pow((5.0 + static_cast<double>(length)) / 6.0, alpha);
}

void BeamOptions::validate(int64_t tgt_vocab) const {
  ATTN_CHECK(beam >= 1, "beam_search: beam must be >= 1, got ", beam);
  ATTN_CHECK(beam <= kMaxBeam, "beam_search: beam must be at most ", kMaxBeam, ", got ", beam);
  ATTN_CHECK(nbest >= 1 && nbest <= beam, "beam_search: nbest must be in [1, beam = ", beam,
             "], got ", nbest);
  ATTN_CHECK(std::isfinite(alpha), "beam_search: alpha must be finite, got ", alpha);
  ATTN_CHECK(std::isfinite(max_len_a) && max_len_a >= 0,
             "beam_search: max_len_a must be >= 0, got ", max_len_a);
  ATTN_CHECK(max_len_a <= kMaxLenA, "beam_search: max_len_a must be at most ", kMaxLenA, ", got ",
             max_len_a);
  ATTN_CHECK(max_len_b >= 0, "beam_search: max_len_b must be >= 0, got ", max_len_b);
  ATTN_CHECK(max_repeats >= 0, "beam_search: max_repeats must be >= 0, got ", max_repeats);
  ATTN_CHECK(max_len_b <= kMaxLenB, "beam_search: max_len_b must be at most ", kMaxLenB, ", got ",
             max_len_b);
  for (auto [name, id] : {std::pair{"bos", bos}, std::pair{"eos", eos}, std::pair{"pad", pad}}) {
    ATTN_CHECK(id >= 0 && id < tgt_vocab, "beam_search: ", name, " = ", id,
               " is not a token id of the target vocabulary [0, ", tgt_vocab, ")");
  }
}

std::vector<std::vector<Hypothesis>> beam_search(nn::Transformer& model, const Tensor& src,
                                                 const Tensor& src_lengths,
                                                 const BeamOptions& opt) {
  const int64_t vocab = model.config().tgt_vocab;
  opt.validate(vocab);
  NoGradGuard no_grad;
  nn::EvalModeGuard eval(model);

  Tensor memory = model.encode(src, src_lengths);
  const int64_t batch = memory.size(0);
  std::vector<std::vector<Hypothesis>> results(static_cast<size_t>(batch));
  if (batch == 0) return results;
  const Device device = memory.device();
  const std::vector<int32_t> src_len = src_lengths.to_int_vector();

  std::vector<Sentence> sentences(static_cast<size_t>(batch));
  std::vector<Live> rows;  // grouped by sentence, ascending
  std::vector<int32_t> src_ids;
  if (opt.max_repeats > 0) src_ids = src.to_int_vector();
  for (int64_t b = 0; b < batch; ++b) {
    sentences[b].max_len = static_cast<int64_t>(
        std::floor(opt.max_len_a * src_len[b] + static_cast<double>(opt.max_len_b)));
    if (opt.max_repeats > 0) {
      const auto row = src_ids.begin() + b * src.size(1);
      sentences[b].max_repeats =
          std::max(opt.max_repeats, longest_repeats(std::vector<int32_t>(row, row + src_len[b])));
    }
    rows.push_back(Live{b, {}, 0.0});
  }
  nn::Transformer::DecodeState state = model.start_decoding(memory, src_lengths);
  std::vector<int32_t> inputs(static_cast<size_t>(batch), opt.bos);

  const int64_t keep = 2 * opt.beam;  // candidates ranked per sentence (fairseq's 2 * beam)
  std::vector<double> logits, lse;
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::vector<Candidate> cands;
  std::vector<int32_t> forbidden;

  for (int64_t t = 0; !rows.empty(); ++t) {
    const int64_t n_rows = static_cast<int64_t>(rows.size());
    logits =
        model.decode_step(Tensor::from_ints(inputs, {n_rows}, device), state).to_double_vector();
    // log_softmax normaliser per row; NaN or +inf logits mean a broken model, not a search
    // problem, and would silently corrupt the ranking.
    lse.assign(static_cast<size_t>(n_rows), kNegInf);
    for (int64_t r = 0; r < n_rows; ++r) {
      const double* x = logits.data() + r * vocab;
      double m = kNegInf;
      for (int64_t v = 0; v < vocab; ++v) {
        ATTN_CHECK(!std::isnan(x[v]) && x[v] != std::numeric_limits<double>::infinity(),
                   "beam_search: the model produced a non-finite logit (", x[v], ") at step ", t,
                   " for token ", v);
        m = std::max(m, x[v]);
      }
      if (m == kNegInf) continue;
      double z = 0;
      for (int64_t v = 0; v < vocab; ++v) z += std::exp(x[v] - m);
      lse[r] = m + std::log(z);
    }

    std::vector<Live> next_rows;
    std::vector<int32_t> parents, next_inputs;
    for (int64_t begin = 0; begin < n_rows;) {
      const int64_t s = rows[begin].sentence;
      int64_t end = begin;
      while (end < n_rows && rows[end].sentence == s) ++end;
      Sentence& sent = sentences[s];
      const bool forced = t >= sent.max_len;

      // Each row's best `keep` extensions hold the sentence's best `keep` (same order).
      cands.clear();
      for (int64_t r = begin; r < end; ++r) {
        if (lse[r] == kNegInf) continue;
        const double* x = logits.data() + r * vocab;
        auto push = [&](int32_t v) {
          const double lp = rows[r].logprob + (x[v] - lse[r]);
          if (lp != kNegInf) cands.push_back(Candidate{r, v, x[v], lp});
        };
        if (forced) {
          push(opt.eos);
          continue;
        }
        // With max_repeats, the tokens that would continue a block one time too many: for each
        // block length p, only the token p back can continue it.
        forbidden.clear();
        if (opt.max_repeats > 0) {
          const std::vector<int32_t>& toks = rows[r].tokens;
          for (int64_t p = 1; p <= BeamOptions::kRepeatBlock &&
                              p <= static_cast<int64_t>(toks.size());
               ++p) {
            const int32_t v = toks[toks.size() - static_cast<size_t>(p)];
            if (trailing_repeats(toks, v) > sent.max_repeats) forbidden.push_back(v);
          }
        }
        auto allowed = [&](int32_t v) {
          return std::find(forbidden.begin(), forbidden.end(), v) == forbidden.end();
        };
        const int64_t k = std::min(keep, vocab);
        const int64_t sorted = std::min(vocab, k + static_cast<int64_t>(forbidden.size()));
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + sorted, order.end(),
                          [x](int32_t a, int32_t b) {
                            return x[a] > x[b] || (x[a] == x[b] && a < b);
                          });
        for (int64_t i = 0, pushed = 0; i < sorted && pushed < k; ++i) {
          if (!allowed(order[i])) continue;
          push(order[i]);
          ++pushed;
        }
      }
      const int64_t k = std::min<int64_t>(keep, static_cast<int64_t>(cands.size()));
      std::partial_sort(cands.begin(), cands.begin() + k, cands.end(), ranks_before);

      const size_t first_new = next_rows.size();
      int64_t live = 0;
      for (int64_t i = 0; i < k; ++i) {
        const Candidate& c = cands[i];
        const Live& parent = rows[c.row];
        if (c.token == opt.eos) {
          // fairseq: only an eos within the best `beam` candidates ends a hypothesis.
          if (i < opt.beam && static_cast<int64_t>(sent.finished.size()) < opt.beam) {
            const int64_t length = static_cast<int64_t>(parent.tokens.size()) + 1;
            sent.finished.push_back(Hypothesis{
                parent.tokens, c.logprob / length_penalty(length, opt.alpha), c.logprob, Tensor()});
          }
        } else if (live < opt.beam) {
          Live next{s, parent.tokens, c.logprob};
          next.tokens.push_back(c.token);
          next_rows.push_back(std::move(next));
          parents.push_back(static_cast<int32_t>(c.row));
          next_inputs.push_back(c.token);
          ++live;
        }
      }

      bool done = forced || live == 0 || static_cast<int64_t>(sent.finished.size()) >= opt.beam;
      if (!done && static_cast<int64_t>(sent.finished.size()) >= opt.nbest) {
        // A live hypothesis has t + 1 tokens, so it ends with length in [t + 2, max_len + 1];
        // its log-probability only falls, so with l <= 0 its score is at most l / max(lp).
        const double best_lp =
            std::max(length_penalty(t + 2, opt.alpha), length_penalty(sent.max_len + 1, opt.alpha));
        double bound = kNegInf;
        for (size_t i = first_new; i < next_rows.size(); ++i)
          bound = std::max(bound, next_rows[i].logprob / best_lp);
        done = bound <= nth_best_score(sent.finished, opt.nbest);
      }
      if (done) {
        next_rows.resize(first_new);
        parents.resize(first_new);
        next_inputs.resize(first_new);
      }
      begin = end;
    }

    if (next_rows.empty()) break;
    bool identity = static_cast<int64_t>(parents.size()) == n_rows;
    for (size_t i = 0; identity && i < parents.size(); ++i) identity = parents[i] == int32_t(i);
    if (!identity) {
      model.reorder(state,
                    Tensor::from_ints(parents, {static_cast<int64_t>(parents.size())}, device));
    }
    rows = std::move(next_rows);
    inputs = std::move(next_inputs);
  }

  std::vector<int32_t> attn_rows;
  std::vector<std::vector<int32_t>> attn_targets;
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<Hypothesis>& fin = sentences[b].finished;
    std::stable_sort(fin.begin(), fin.end(),
                     [](const Hypothesis& a, const Hypothesis& c) { return a.score > c.score; });
    if (static_cast<int64_t>(fin.size()) > opt.nbest) fin.resize(static_cast<size_t>(opt.nbest));
    results[b] = std::move(fin);
    for (const Hypothesis& h : results[b]) {
      attn_rows.push_back(static_cast<int32_t>(b));
      attn_targets.push_back(h.tokens);
    }
  }
  if (opt.return_attention && !attn_rows.empty()) {
    Tensor index = Tensor::from_ints(attn_rows, {static_cast<int64_t>(attn_rows.size())}, device);
    std::vector<Tensor> weights = cross_attention_weights_from_memory(
        model, ops::index_select0(memory, index), ops::index_select0(src_lengths, index),
        attn_targets, opt.bos, opt.pad);
    size_t i = 0;
    for (auto& hyps : results)
      for (Hypothesis& h : hyps) h.attention = std::move(weights[i++]);
  }
  return results;
}

}  // namespace attn::decode
