// src/decode: beam search against greedy decoding and against exhaustive enumeration, batching
// invariance, n-best lists, a trained copy model, option errors, and the recomputed
// cross-attention weights (checked by rebuilding the model's logits from them).
#include <algorithm>
#include <catch2/catch.hpp>

#include "test_util.h"
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "core/grad_mode.h"
#include "data/batcher.h"
#include "data/synthetic.h"
#include "decode/beam_search.h"
#include "decode/cross_attention.h"
#include "nn/attention.h"
#include "nn/greedy.h"
#include "nn/layers.h"
#include "nn/transformer.h"
#include "nn/transformer_layers.h"
#include "ops/index.h"
#include "optim/adam.h"
#include "optim/schedule.h"

using namespace attn;
using namespace attn::decode;
using Catch::Contains;

namespace {

nn::TransformerConfig small_config(int64_t vocab, bool pre_norm = false, bool share = true) {
  return testing::tiny_transformer_config(vocab, vocab, pre_norm, share);
}

Tensor ints(const std::vector<int32_t>& v, const Shape& shape) {
  return Tensor::from_ints(v, shape);
}

// B rows of random ids in [4, vocab) (specials excluded, as real sources), right-padded with 0
// to the longest of `lengths`.
std::pair<Tensor, Tensor> random_batch(const std::vector<int32_t>& lengths, int64_t vocab,
                                       Generator& gen) {
  const int64_t batch = static_cast<int64_t>(lengths.size());
  const int64_t width = *std::max_element(lengths.begin(), lengths.end());
  const std::vector<double> u = Tensor::uniform({batch, width}, 0.0, 1.0, gen).to_double_vector();
  std::vector<int32_t> ids(u.size(), 0);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t j = 0; j < lengths[b]; ++j)
      ids[b * width + j] =
          4 + std::min<int32_t>(static_cast<int32_t>(vocab - 5),
                                static_cast<int32_t>(u[b * width + j] * (vocab - 4)));
  return {ints(ids, {batch, width}), ints(lengths, {batch})};
}

// Row b of a padded batch alone, without padding.
std::pair<Tensor, Tensor> row_alone(const Tensor& src, const Tensor& lengths, int64_t b) {
  const int32_t len = lengths.to_int_vector()[b];
  const std::vector<int32_t> v = src.to_int_vector();
  const int64_t width = src.size(1);
  return {ints(std::vector<int32_t>(v.begin() + b * width, v.begin() + b * width + len), {1, len}),
          ints({len}, {1})};
}

std::vector<std::vector<int32_t>> tokens_of(const std::vector<std::vector<Hypothesis>>& r) {
  std::vector<std::vector<int32_t>> out;
  for (const auto& hyps : r) out.push_back(hyps.at(0).tokens);
  return out;
}

// log-softmax in double of one logits row.
std::vector<double> log_softmax(const double* x, int64_t n) {
  const double m = *std::max_element(x, x + n);
  double z = 0;
  for (int64_t i = 0; i < n; ++i) z += std::exp(x[i] - m);
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] - m - std::log(z);
  return out;
}

// How far a log-probability of `tokens` tokens may differ between two ways of computing it
// (beam search's incremental decoding of a batch of hypotheses with a KV cache, and one
// teacher-forced pass over the whole output): the two run different GEMM shapes, so OpenBLAS
// may pick other kernels and blockings and the last bits differ, more so from one CPU to the
// next (AVX2 vs AVX-512 kernels). Each token's log-probability is a logit minus a log-sum-exp
// at the end of 2 layers x 3 sublayers of dot products of length <= 24 (d_ff) and layer
// norms over 16, so its forward rounding error is bounded by about
// (6 sublayers x 24 terms + layer norms) ~ 2^8 unit roundoffs times the logits' magnitude;
// 2^9 leaves a factor 2, and a sequence's errors add over its tokens. In f64 this is ~1e-11:
// far below any difference a wrong search (a lost hypothesis, a wrong length or penalty) makes.
double logprob_tolerance(DType dtype, int64_t tokens, double max_abs_logit) {
  const double unit_roundoff = dtype == kF64 ? 0x1p-53 : 0x1p-24;
  return 0x1p9 * unit_roundoff * static_cast<double>(tokens) * std::max(1.0, max_abs_logit);
}

// Teacher-forced log-probabilities of `seqs` + eos (each without bos/eos) for row b of a
// batch, by full decoding.
// `max_abs_logit` (optional) receives the largest |logit| met, the scale of the rounding.
std::vector<double> sequence_logprobs(nn::Transformer& model, const Tensor& src,
                                      const Tensor& lengths, int64_t b,
                                      const std::vector<std::vector<int32_t>>& seqs, int32_t bos,
                                      int32_t eos, double* max_abs_logit = nullptr) {
  NoGradGuard no_grad;
  model.eval();
  const int64_t n = static_cast<int64_t>(seqs.size());
  int64_t width = 0;
  for (const auto& s : seqs) width = std::max<int64_t>(width, static_cast<int64_t>(s.size()) + 1);
  std::vector<int32_t> ids(static_cast<size_t>(n * width), 0);
  for (int64_t i = 0; i < n; ++i) {
    ids[i * width] = bos;
    std::copy(seqs[i].begin(), seqs[i].end(), ids.begin() + i * width + 1);
  }
  auto [s, l] = row_alone(src, lengths, b);
  Tensor memory = model.encode(s, l);
  Tensor rep = Tensor::from_ints(std::vector<int32_t>(static_cast<size_t>(n), 0), {n});
  const std::vector<double> logits =
      model
          .decode(ints(ids, {n, width}), ops::index_select0(memory, rep),
                  ops::index_select0(l, rep))
          .to_double_vector();
  const int64_t V = model.config().tgt_vocab;
  std::vector<double> out(static_cast<size_t>(n));
  if (max_abs_logit) {
    *max_abs_logit = 0;
    for (double x : logits) *max_abs_logit = std::max(*max_abs_logit, std::abs(x));
  }
  for (int64_t i = 0; i < n; ++i) {
    double lp = 0;
    const int64_t len = static_cast<int64_t>(seqs[i].size());
    for (int64_t t = 0; t <= len; ++t) {
      const std::vector<double> ls = log_softmax(logits.data() + (i * width + t) * V, V);
      lp += ls[t < len ? seqs[i][t] : eos];
    }
    out[i] = lp;
  }
  model.train();
  return out;
}

template <class M>
std::shared_ptr<M> child(const nn::Module& m, const std::string& name) {
  for (const auto& [n, c] : m.children())
    if (n == name) return std::dynamic_pointer_cast<M>(c);
  FAIL("no child " << name);
  return nullptr;
}

}  // namespace

TEST_CASE("beam search with beam 1 is greedy decoding", "[decode]") {
  for (bool pre_norm : {false, true}) {
    for (uint64_t seed : {3, 4, 5}) {
      INFO("pre_norm " << pre_norm << " seed " << seed);
      Generator gen(seed);
      const nn::TransformerConfig cfg = small_config(13, pre_norm, /*share=*/seed != 4);
      nn::Transformer model(cfg, gen);
      auto [src, len] = random_batch({5, 2, 7, 4, 1}, cfg.src_vocab, gen);
      const int32_t bos = 2;
      const int64_t max_len = 9;
      // eos 3, then eos = tokens greedy emits early in some rows, so that rows stop at
      // different steps and the batch shrinks.
      const auto free_run = nn::greedy_decode(model, src, len, bos, 3, max_len);
      std::vector<int32_t> eos_ids = {3};
      for (size_t r = 0; r < free_run.size() && eos_ids.size() < 4; ++r)
        if (free_run[r].size() > r % 3) eos_ids.push_back(free_run[r][r % 3]);
      for (int32_t eos : eos_ids) {
        INFO("eos " << eos);
        const auto expected = nn::greedy_decode(model, src, len, bos, eos, max_len);
        BeamOptions opt;
        opt.beam = 1;
        opt.bos = bos;
        opt.eos = eos;
        opt.max_len_a = 0;
        opt.max_len_b = max_len;
        for (double alpha : {0.0, 0.6, 1.5}) {
          opt.alpha = alpha;
          CHECK(tokens_of(beam_search(model, src, len, opt)) == expected);
        }
        CHECK(model.is_training());  // restored
      }
    }
  }
}

TEST_CASE("wide beam search equals exhaustive search over all short outputs", "[decode]") {
  // Target vocabulary 5: pad 0, unk 1, bos 2, eos 3, one real token 4. Nothing is forbidden, so
  // the outputs are all sequences over {0, 1, 2, 4} of up to max_len tokens, closed by eos.
  // Sharpened models (output projection scaled up) have peaked distributions like trained ones,
  // so that finished hypotheses often beat every live one and the early stop is exercised.
  //
  // The search and the enumeration compute each score along different paths, so scores are
  // compared within logprob_tolerance, and the ranking is checked up to ties within it: the
  // k-th returned hypothesis must be a distinct output whose exact score equals the k-th best
  // exact score within the tolerance (two outputs closer than that may come in either order).
  // The model runs in f64, where the tolerance is ~1e-11 and any search error shows, and in
  // f32, the dtype users decode in.
  struct Model {
    uint64_t seed;
    bool share;
    double sharpen;  // factor on out_proj.weight (untied models only)
  };
  struct Limits {
    double a;
    int64_t b;
  };
  struct Case {
    Model model;
    std::vector<Limits> limits;
    std::vector<double> alphas;
    std::vector<int64_t> nbests;
    int64_t beam;  // more than all outputs (341 of length <= 4): nothing is ever pruned
  };
  const int32_t bos = 2, eos = 3;
  const std::vector<int32_t> symbols = {0, 1, 2, 4};
  // Limits: the same for every row, then one per row (floor(0.5 * len + 2) = 3, 4, 3).
  const std::vector<Limits> short_limits = {{0.0, 4}, {0.5, 2}};
  const std::vector<double> alphas = {0.0, 0.6, 2.0, 4.0, -0.5};
  std::vector<Case> cases;
  for (Model m : {Model{11, true, 1.0}, Model{12, false, 4.0}, Model{13, false, 10.0}})
    cases.push_back(Case{m, short_limits, alphas, {1, 8}, 400});
  // Up to 6 tokens (5461 outputs) with a strong length reward: here stopping as soon as a live
  // hypothesis could no longer win *if it ended at the next step* would miss the best output,
  // so this checks that the early stop's bound allows for growing to the maximum length.
  for (Model m : {Model{12, false, 10.0}, Model{18, false, 2.0}})
    cases.push_back(Case{m, {{0.0, 6}}, {4.0}, {1}, 6000});
  for (DType dtype : {kF64, kF32}) {
    for (const Case& c : cases) {
      const Model& m = c.model;
      INFO(dtype_name(dtype) << " model seed " << m.seed << ", output projection x" << m.sharpen);
      Generator gen(m.seed);
      nn::TransformerConfig cfg = small_config(5, /*pre_norm=*/false, m.share);
      if (!m.share) cfg.src_vocab = 9;
      cfg.heads = 2;
      nn::Transformer model(cfg, gen);
      for (auto& [name, p] : model.named_parameters()) {
        if (name != "out_proj.weight") continue;
        std::vector<double> w = p.to_double_vector();
        for (double& x : w) x *= m.sharpen;
        model.load_parameters({{name, Tensor::from_vector(w, p.shape())}}, /*strict=*/false);
      }
      testing::convert_parameters(model, dtype);
      auto [src, len] = random_batch({2, 5, 3}, cfg.src_vocab, gen);
      const std::vector<int32_t> len_v = len.to_int_vector();

      for (Limits lim : c.limits) {
        // Every output of each row, its teacher-forced log-probability and its index.
        std::vector<std::vector<std::vector<int32_t>>> all(3);
        std::vector<std::vector<double>> logprob(3);
        std::vector<std::map<std::vector<int32_t>, size_t>> index_of(3);
        std::vector<double> max_abs_logit(3);
        int64_t max_tokens = 0;
        for (int64_t b = 0; b < 3; ++b) {
          const int64_t max_len = static_cast<int64_t>(std::floor(lim.a * len_v[b] + lim.b));
          max_tokens = std::max(max_tokens, max_len + 1);
          all[b] = {{}};
          for (size_t i = 0; i < all[b].size(); ++i) {
            if (static_cast<int64_t>(all[b][i].size()) == max_len) continue;
            for (int32_t s : symbols) {
              auto next = all[b][i];
              next.push_back(s);
              all[b].push_back(next);
            }
          }
          for (size_t i = 0; i < all[b].size(); ++i) index_of[b][all[b][i]] = i;
          logprob[b] = sequence_logprobs(model, src, len, b, all[b], bos, eos, &max_abs_logit[b]);
        }
        for (double alpha : c.alphas) {
          for (int64_t nbest : c.nbests) {
            INFO("max_len = " << lim.a << " * src_len + " << lim.b << ", alpha " << alpha
                              << ", nbest " << nbest);
            BeamOptions opt;
            opt.beam = c.beam;
            opt.nbest = nbest;
            opt.alpha = alpha;
            opt.max_len_a = lim.a;
            opt.max_len_b = lim.b;
            opt.bos = bos;
            opt.eos = eos;
            const auto result = beam_search(model, src, len, opt);
            REQUIRE(result.size() == 3);
            for (int64_t b = 0; b < 3; ++b) {
              const double tol = logprob_tolerance(dtype, max_tokens, max_abs_logit[b]);
              // A score is a log-probability divided by the penalty, which alpha < 0 makes < 1.
              double min_penalty = 1.0;
              for (int64_t l = 1; l <= max_tokens; ++l)
                min_penalty = std::min(min_penalty, length_penalty(l, alpha));
              const double score_tol = tol / min_penalty;
              INFO("row " << b << ", " << all[b].size() << " outputs, log-probability tolerance "
                          << tol);
              std::vector<double> exact(all[b].size());
              for (size_t i = 0; i < all[b].size(); ++i) {
                const int64_t length = static_cast<int64_t>(all[b][i].size()) + 1;
                exact[i] = logprob[b][i] / std::pow((5.0 + length) / 6.0, alpha);
              }
              std::vector<double> ranked = exact;
              std::sort(ranked.begin(), ranked.end(), std::greater<>());
              REQUIRE(result[b].size() == static_cast<size_t>(nbest));
              std::set<std::vector<int32_t>> seen;
              for (int64_t k = 0; k < nbest; ++k) {
                INFO("rank " << k);
                const Hypothesis& h = result[b][k];
                CHECK(seen.insert(h.tokens).second);
                const auto it = index_of[b].find(h.tokens);
                REQUIRE(it != index_of[b].end());  // a well-formed output within the limit
                const size_t i = it->second;
                CHECK(std::abs(h.logprob - logprob[b][i]) <= tol);
                CHECK(std::abs(h.score - exact[i]) <= score_tol);
                // Holds rank k: as good as the k-th best output, up to the tolerance.
                CHECK(std::abs(exact[i] - ranked[k]) <= 2 * score_tol);
              }
            }
          }
        }
      }
    }
  }
}

TEST_CASE("beam search: a sentence decodes the same alone and in a padded batch", "[decode]") {
  Generator gen(21);
  const nn::TransformerConfig cfg = small_config(17, /*pre_norm=*/true);
  nn::Transformer model(cfg, gen);
  auto [src, len] = random_batch({6, 3, 8, 1, 5}, cfg.src_vocab, gen);
  BeamOptions opt;
  opt.beam = 5;
  opt.nbest = 3;
  opt.max_len_a = 1.0;
  opt.max_len_b = 3;
  const auto together = beam_search(model, src, len, opt);
  REQUIRE(together.size() == 5);
  for (int64_t b = 0; b < 5; ++b) {
    INFO("row " << b);
    auto [s, l] = row_alone(src, len, b);
    const auto alone = beam_search(model, s, l, opt);
    REQUIRE(alone.size() == 1);
    const auto& a = alone[0];
    const auto& t = together[b];
    REQUIRE(a.size() == t.size());
    // Alone, the GEMMs have other shapes and round differently (logprob_tolerance): the scores
    // agree within it, and the tokens too except between hypotheses that close (either order).
    std::vector<std::vector<int32_t>> outputs;
    for (const Hypothesis& h : t) outputs.push_back(h.tokens);
    double max_abs_logit = 0;
    sequence_logprobs(model, src, len, b, outputs, opt.bos, opt.eos, &max_abs_logit);
    const int64_t max_len =
        static_cast<int64_t>(std::floor(opt.max_len_a * l.to_int_vector()[0])) + opt.max_len_b;
    const double tol = logprob_tolerance(kF32, max_len + 1, max_abs_logit);
    for (size_t k = 0; k < a.size(); ++k) {
      INFO("rank " << k);
      CHECK(std::abs(a[k].score - t[k].score) <= tol);
      const bool tie_above = k > 0 && t[k - 1].score - t[k].score <= 2 * tol;
      const bool tie_below = k + 1 < t.size() && t[k].score - t[k + 1].score <= 2 * tol;
      CHECK((a[k].tokens == t[k].tokens || tie_above || tie_below));
    }
  }
}

TEST_CASE("beam search: n-best lists are sorted, distinct and scored as documented", "[decode]") {
  Generator gen(5);
  const nn::TransformerConfig cfg = small_config(9);
  nn::Transformer model(cfg, gen);
  auto [src, len] = random_batch({4, 6, 2}, cfg.src_vocab, gen);
  BeamOptions opt;
  opt.beam = 6;
  opt.nbest = 6;
  opt.max_len_a = 0.5;
  opt.max_len_b = 4;
  const auto nbest = beam_search(model, src, len, opt);
  opt.nbest = 1;
  const auto best = beam_search(model, src, len, opt);
  const std::vector<int32_t> len_v = len.to_int_vector();
  for (size_t b = 0; b < nbest.size(); ++b) {
    INFO("row " << b);
    const auto& hyps = nbest[b];
    REQUIRE(hyps.size() == 6);
    const int64_t max_len = static_cast<int64_t>(std::floor(0.5 * len_v[b] + 4));
    std::vector<std::vector<int32_t>> seen;
    for (size_t k = 0; k < hyps.size(); ++k) {
      if (k > 0) CHECK(hyps[k - 1].score >= hyps[k].score);
      CHECK(std::find(seen.begin(), seen.end(), hyps[k].tokens) == seen.end());
      seen.push_back(hyps[k].tokens);
      CHECK(static_cast<int64_t>(hyps[k].tokens.size()) <= max_len);
      CHECK(hyps[k].logprob <= 0.0);
      const int64_t length = static_cast<int64_t>(hyps[k].tokens.size()) + 1;
      CHECK(hyps[k].score == Approx(hyps[k].logprob / length_penalty(length, opt.alpha)));
      CHECK(!hyps[k].attention.defined());
    }
    // Teacher-forced log-probabilities agree with the search's.
    double max_abs_logit = 0;
    const std::vector<double> lp = sequence_logprobs(model, src, len, static_cast<int64_t>(b),
                                                     seen, opt.bos, opt.eos, &max_abs_logit);
    const double tol = logprob_tolerance(kF32, max_len + 1, max_abs_logit);
    for (size_t k = 0; k < hyps.size(); ++k) CHECK(std::abs(lp[k] - hyps[k].logprob) <= tol);
    // The single best is the head of the list. With nbest 1 the search may stop earlier, so
    // the batch shrinks at other steps and GEMMs of other shapes round differently: the scores
    // agree within the tolerance, and the tokens too unless the runner-up is that close.
    REQUIRE(best[b].size() == 1);
    const double score_tol = tol / length_penalty(1, opt.alpha);
    CHECK(std::abs(best[b][0].score - hyps[0].score) <= score_tol);
    bool head_or_tie = false;
    for (const Hypothesis& h : hyps)
      if (h.tokens == best[b][0].tokens) head_or_tie = hyps[0].score - h.score <= 2 * score_tol;
    CHECK(head_or_tie);
  }
}

TEST_CASE("beam search: bad options are named", "[decode][errors]") {
  Generator gen(1);
  nn::Transformer model(small_config(9), gen);
  Tensor src = ints({4, 5, 6}, {1, 3});
  Tensor len = ints({3}, {1});
  auto run = [&](auto edit) {
    BeamOptions opt;
    edit(opt);
    beam_search(model, src, len, opt);
  };
  CHECK_THROWS_WITH(run([](BeamOptions& o) { o.beam = 0; }), Contains("beam must be >= 1, got 0"));
  CHECK_THROWS_WITH(run([](BeamOptions& o) { o.nbest = 5; }),
                    Contains("nbest must be in [1, beam = 4], got 5"));
  CHECK_THROWS_WITH(run([](BeamOptions& o) { o.nbest = 0; }), Contains("nbest"));
  CHECK_THROWS_WITH(run([](BeamOptions& o) { o.max_len_b = -1; }),
                    Contains("max_len_b must be >= 0, got -1"));
  CHECK_THROWS_WITH(run([](BeamOptions& o) { o.max_len_a = -0.5; }),
                    Contains("max_len_a must be >= 0"));
  CHECK_THROWS_WITH(run([](BeamOptions& o) { o.eos = 9; }),
                    Contains("eos = 9 is not a token id of the target vocabulary [0, 9)"));
  CHECK_THROWS_WITH(run([](BeamOptions& o) { o.alpha = NAN; }), Contains("alpha must be finite"));
  CHECK_THROWS_WITH(run([](BeamOptions& o) { o.max_repeats = -1; }),
                    Contains("max_repeats must be >= 0, got -1"));
  CHECK(model.is_training());
}

TEST_CASE("repeated blocks of tokens are counted at the end and anywhere", "[decode]") {
  using V = std::vector<int32_t>;
  CHECK(trailing_repeats({}, 5) == 1);
  CHECK(trailing_repeats({5}, 5) == 2);
  CHECK(trailing_repeats({7, 5, 5}, 5) == 3);
  CHECK(trailing_repeats({5, 5, 7}, 5) == 1);
  CHECK(trailing_repeats({1, 2, 1, 2, 1}, 2) == 3);        // block [1, 2]
  CHECK(trailing_repeats({9, 1, 2, 3, 1, 2}, 3) == 2);     // block [1, 2, 3]
  CHECK(trailing_repeats({1, 2, 3, 4, 1, 2, 3}, 4) == 2);  // block of kRepeatBlock = 4
  CHECK(trailing_repeats({1, 2, 3, 4, 5, 1, 2, 3, 4}, 5) == 1);  // a block of 5 is not counted
  CHECK(longest_repeats(V{}) == 0);
  CHECK(longest_repeats(V{4, 4, 4, 6, 6}) == 3);
  CHECK(longest_repeats(V{1, 2, 1, 2, 1, 2, 1, 2, 8}) == 4);
}

TEST_CASE("beam search with max_repeats: no block repeats more often than allowed", "[decode]") {
  // An untrained model repeats itself; with max_repeats it may not, beyond the source's own runs.
  Generator gen(3);
  const nn::TransformerConfig cfg = small_config(30);
  nn::Transformer model(cfg, gen);
  auto [src, len] = random_batch({5, 2, 7, 4, 1, 6}, cfg.src_vocab, gen);
  BeamOptions opt;
  opt.max_len_a = 0;
  opt.max_len_b = 16;
  for (int64_t beam : {1, 4}) {
    INFO("beam " << beam);
    opt.beam = beam;
    opt.max_repeats = 0;
    const auto free = tokens_of(beam_search(model, src, len, opt));
    int64_t most = 0;
    for (const auto& t : free) most = std::max(most, longest_repeats(t));
    REQUIRE(most > 2);  // the unconstrained outputs do repeat
    const std::vector<int32_t> s = src.to_int_vector();
    const std::vector<int32_t> l = len.to_int_vector();
    for (int64_t cap : {1, 2}) {
      INFO("max_repeats " << cap);
      opt.max_repeats = cap;
      const auto capped = tokens_of(beam_search(model, src, len, opt));
      REQUIRE(capped.size() == free.size());
      for (size_t b = 0; b < capped.size(); ++b) {
        const auto row = s.begin() + static_cast<int64_t>(b) * src.size(1);
        const int64_t source_runs = longest_repeats(std::vector<int32_t>(row, row + l[b]));
        CHECK(longest_repeats(capped[b]) <= std::max(cap, source_runs));
      }
    }
    // A limit no output reaches changes nothing.
    opt.max_repeats = 1000;
    CHECK(tokens_of(beam_search(model, src, len, opt)) == free);
  }
}

TEST_CASE("recomputed cross-attention weights reproduce the model's logits", "[decode]") {
  for (bool pre_norm : {false, true}) {
    for (bool share : {true, false}) {
      INFO("pre_norm " << pre_norm << " share " << share);
      Generator gen(pre_norm ? 41 : 42);
      const nn::TransformerConfig cfg = small_config(11, pre_norm, share);
      nn::Transformer model(cfg, gen);
      auto [src, len] = random_batch({4, 6, 2}, cfg.src_vocab, gen);
      const std::vector<int32_t> len_v = len.to_int_vector();
      const std::vector<std::vector<int32_t>> targets = {{5, 6, 7}, {}, {8, 4, 9, 10, 4}};
      const int32_t bos = 2;
      const auto weights = cross_attention_weights(model, src, len, targets, bos);
      CHECK(model.is_training());
      REQUIRE(weights.size() == 3);

      NoGradGuard no_grad;
      model.eval();
      Tensor memory = model.encode(src, len);
      const int64_t width = 6, H = cfg.heads;
      std::vector<int32_t> ids(3 * width, 0);
      for (int64_t b = 0; b < 3; ++b) {
        ids[b * width] = bos;
        std::copy(targets[b].begin(), targets[b].end(), ids.begin() + b * width + 1);
      }
      Tensor tgt_in = ints(ids, {3, width});
      const std::vector<double> expected = model.decode(tgt_in, memory, len).to_double_vector();

      // Rebuild the logits from the captured probabilities P: context P V, then the rest of the
      // last layer, the final norm and the output projection. A wrong P (a wrong query, scale
      // or mask) changes them.
      auto decoder = child<nn::Decoder>(model, "decoder");
      auto embed = child<nn::Embedding>(model, share ? "src_embed" : "tgt_embed");
      Tensor h = embed->forward(tgt_in, std::sqrt(double(cfg.d_model)), true, 0);
      const auto& layers = decoder->layers();
      h = layers[0].forward(h, memory, len);
      const nn::DecoderLayer& last = layers[1];
      auto sa = child<nn::MultiHeadAttention>(last, "self_attn");
      auto sa_norm = child<nn::LayerNorm>(last, "self_attn_norm");
      auto ca = child<nn::MultiHeadAttention>(last, "cross_attn");
      auto ca_norm = child<nn::LayerNorm>(last, "cross_attn_norm");
      auto ffn = child<nn::FeedForward>(last, "ffn");
      auto ffn_norm = child<nn::LayerNorm>(last, "ffn_norm");
      Tensor x1;
      if (pre_norm) {
        Tensor n = sa_norm->forward(h);
        x1 = add(h, sa->forward(n, n, Tensor(), true));
      } else {
        x1 = sa_norm->forward(sa->forward(h, h, Tensor(), true), h);
      }
      Tensor v = split_heads(child<nn::Linear>(*ca, "v_proj")->forward(memory), H);  // [B,H,S,D]
      for (int64_t b = 0; b < 3; ++b) {
        INFO("row " << b);
        const int64_t rows = static_cast<int64_t>(targets[b].size()) + 1, l = len_v[b];
        const Tensor& p = weights[b];
        REQUIRE(p.shape() == Shape{H, rows, l});
        const std::vector<double> pv = p.to_double_vector();
        for (int64_t r = 0; r < H * rows; ++r) {
          double sum = 0;
          for (int64_t j = 0; j < l; ++j) sum += pv[r * l + j];
          CHECK(sum == Approx(1.0).epsilon(1e-6));
        }
        Tensor v_b = slice(slice(v, 0, b, b + 1), 2, 0, l);  // [1, H, l, D]
        Tensor ctx = merge_heads(matmul(p.view({1, H, rows, l}), v_b));
        Tensor o = child<nn::Linear>(*ca, "out_proj")->forward(ctx);
        Tensor x1_b = slice(slice(x1, 0, b, b + 1), 1, 0, rows);
        Tensor out;
        if (pre_norm) {
          Tensor h2 = add(x1_b, o);
          out = add(h2, ffn->forward(ffn_norm->forward(h2)));
          out = child<nn::LayerNorm>(*decoder, "norm")->forward(out);
        } else {
          Tensor h2 = ca_norm->forward(o, x1_b);
          out = ffn_norm->forward(ffn->forward(h2), h2);
        }
        Tensor logits = share ? matmul(out, embed->weight(), false, true)
                              : child<nn::Linear>(model, "out_proj")->forward(out);
        const std::vector<double> got = logits.to_double_vector();
        const int64_t V = cfg.tgt_vocab;
        double worst = 0;
        for (int64_t t = 0; t < rows; ++t)
          for (int64_t k = 0; k < V; ++k)
            worst = std::max(worst, std::abs(got[t * V + k] - expected[(b * width + t) * V + k]));
        CHECK(worst < 1e-4);
      }
      model.train();
    }
  }
}

TEST_CASE("beam search on a trained copy model reproduces held-out inputs", "[decode]") {
  // configs/copy.yaml's model and optimiser, trained briefly in memory.
  nn::TransformerConfig cfg;
  cfg.src_vocab = cfg.tgt_vocab = 16;
  cfg.d_model = 32;
  cfg.heads = 2;
  cfg.d_ff = 64;
  cfg.encoder_layers = cfg.decoder_layers = 1;
  cfg.dropout = 0.0;
  Generator gen(1);
  nn::Transformer model(cfg, gen);
  data::Dataset train = data::make_synthetic("copy", 4000, 16, 2, 8, 1);
  data::BatcherOptions bo;
  bo.max_tokens = 512;
  data::Batcher batcher(train, bo);
  optim::Adam adam(model.named_parameters(), optim::AdamOptions{});
  optim::ScheduleOptions sched;
  sched.kind = "inverse_sqrt";
  sched.warmup = 50;
  sched.peak_lr = 3e-3;
  const int64_t steps = 700;  // ~99% exact copies; 500 gives ~96%
  for (int64_t step = 1; step <= steps; ++step) {
    const data::Batch b = batcher.next();
    Tensor logits = model.forward(b.src, b.src_lengths, b.tgt_in);
    CrossEntropyResult ce = cross_entropy(reshape(logits, {-1, cfg.tgt_vocab}),
                                          b.tgt_out.view({-1}), 0.0, data::kPadId);
    scale(ce.loss, 1.0 / static_cast<double>(b.tgt_tokens)).backward();
    adam.step(optim::learning_rate(sched, step));
    adam.zero_grad();
  }

  data::Dataset held_out = data::make_synthetic("copy", 100, 16, 2, 8, 424242);
  const std::vector<data::Batch> batches = data::make_eval_batches(held_out, 4096);
  BeamOptions opt;
  opt.beam = 4;
  opt.nbest = 2;
  opt.return_attention = true;
  int64_t exact = 0, total = 0, diagonal = 0, positions = 0;
  for (const data::Batch& b : batches) {
    const auto result = beam_search(model, b.src, b.src_lengths, opt);
    REQUIRE(result.size() == static_cast<size_t>(b.size));
    for (int64_t i = 0; i < b.size; ++i) {
      const auto src = held_out.src(b.indices[i]);
      const std::vector<int32_t> want(src.begin(), src.end());
      REQUIRE(result[i].size() == 2);
      const Hypothesis& h = result[i][0];
      exact += h.tokens == want;
      ++total;
      // Copying attends to the position being copied: averaged over heads, the most attended
      // source position of output i is usually i.
      const int64_t rows = static_cast<int64_t>(h.tokens.size()) + 1;
      const int64_t l = b.src_lengths.to_int_vector()[i];
      REQUIRE(h.attention.shape() == Shape{cfg.heads, rows, l});
      REQUIRE(result[i][1].attention.defined());
      const std::vector<double> a = h.attention.to_double_vector();
      for (int64_t t = 0; t < rows; ++t) {
        std::vector<double> avg(static_cast<size_t>(l), 0.0);
        for (int64_t hd = 0; hd < cfg.heads; ++hd)
          for (int64_t j = 0; j < l; ++j) avg[j] += a[(hd * rows + t) * l + j];
        diagonal += std::max_element(avg.begin(), avg.end()) - avg.begin() == t;
        ++positions;
      }
    }
  }
  INFO("exact copies " << exact << " of " << total << "; diagonal attention " << diagonal << " of "
                       << positions);
  CHECK(total == 100);
  CHECK(exact >= 95);
  CHECK(diagonal >= 0.8 * positions);
}
