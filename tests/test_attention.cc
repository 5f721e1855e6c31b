// Dropout, embedding (+ sinusoidal positions) and scaled dot-product attention: gradient
// checks, forward values worked out by hand or from the paper's formulas, and error messages.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <vector>

#include "autograd/functions.h"
#include "gradcheck.h"
#include "kernels/dropout.h"
#include "ops/attention.h"
#include "ops/dropout.h"

using namespace attn;
using autograd::OpId;
using Catch::Contains;
using testing::randn;

namespace {

Tensor ints(const std::vector<int32_t>& v, const Shape& shape) {
  return Tensor::from_ints(v, shape);
}

// An attention gradient-check case: q [B, H, Tq, D], k and v [B, H, Tk, D], optional lengths.
testing::GradCheckCase attention_case(const std::string& name, Shape q_shape, Shape kv_shape,
                                      std::vector<int32_t> lengths = {}, bool causal = false,
                                      double dropout_p = 0.0) {
  testing::GradCheckCase c;
  c.name = "attention/" + name;
  c.op = OpId::attention;
  c.inputs = [=](Generator& gen) {
    Tensor len = lengths.empty() ? Tensor() : ints(lengths, {static_cast<int64_t>(lengths.size())});
    return std::vector<Tensor>{randn(q_shape, gen), randn(kv_shape, gen), randn(kv_shape, gen),
                               len};
  };
  c.fn = [=](const std::vector<Tensor>& in) {
    // A fresh generator per call: every finite-difference evaluation sees the same mask.
    Generator gen(424242);
    return attention(in[0], in[1], in[2], in[3], causal, dropout_p, &gen);
  };
  return c;
}

// Plain reference of the documented semantics (no dropout), in double.
std::vector<double> reference_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                        const std::vector<int32_t>& lengths, bool causal) {
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), D = q.size(3);
  const auto qv = q.to_double_vector(), kv = k.to_double_vector(), vv = v.to_double_vector();
  std::vector<double> out(static_cast<size_t>(B * H * Tq * D), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        std::vector<double> s;
        std::vector<int64_t> keys;
        for (int64_t j = 0; j < Tk; ++j) {
          if (!lengths.empty() && j >= lengths[b]) continue;
          if (causal && j > i + (Tk - Tq)) continue;
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += qv[((b * H + h) * Tq + i) * D + d] * kv[((b * H + h) * Tk + j) * D + d];
          s.push_back(dot / std::sqrt(static_cast<double>(D)));
          keys.push_back(j);
        }
        if (keys.empty()) continue;
        double m = s[0], z = 0;
        for (double x : s) m = std::max(m, x);
        for (double x : s) z += std::exp(x - m);
        for (size_t n = 0; n < keys.size(); ++n) {
          const double p = std::exp(s[n] - m) / z;
          for (int64_t d = 0; d < D; ++d)
            out[((b * H + h) * Tq + i) * D + d] += p * vv[((b * H + h) * Tk + keys[n]) * D + d];
        }
      }
  return out;
}

}  // namespace

// ---- gradient checks ---------------------------------------------------------------------

ATTN_GRADCHECK_CASES({
    {"dropout/p=0.3 training", OpId::dropout,
     [](Generator& gen) {
       return std::vector<Tensor>{randn({4, 7}, gen)};
     },
     [](const std::vector<Tensor>& in) {
       Generator gen(1234);
       return dropout(in[0], 0.3, true, gen);
     }},
    {"embedding/tied ids, scale sqrt(d), positions with offset", OpId::embedding,
     [](Generator& gen) {
       return std::vector<Tensor>{ints({1, 3, 1, 0, 3, 3, 2, 1}, {2, 4}), randn({5, 6}, gen)};
     },
     [](const std::vector<Tensor>& in) {
       return embedding(in[0], in[1], std::sqrt(6.0), true, 3);
     }},
    {"embedding/plain, odd width", OpId::embedding,
     [](Generator& gen) {
       return std::vector<Tensor>{ints({4, 0, 4, 2, 4}, {5}), randn({6, 5}, gen)};
     },
     [](const std::vector<Tensor>& in) { return embedding(in[0], in[1]); }},
});

ATTN_GRADCHECK_CASES({
    attention_case("self, no mask", {2, 2, 3, 4}, {2, 2, 3, 4}),
    attention_case("key padding with lengths 4, 1, 0", {3, 1, 3, 3}, {3, 1, 4, 3}, {4, 1, 0}),
    attention_case("causal Tq == Tk", {1, 2, 4, 3}, {1, 2, 4, 3}, {}, true),
    attention_case("causal with key padding", {2, 1, 3, 4}, {2, 1, 3, 4}, {3, 2}, true),
    attention_case("cross Tq != Tk", {2, 1, 2, 3}, {2, 1, 5, 3}),
    attention_case("causal Tq < Tk, odd D = 5", {1, 2, 2, 5}, {1, 2, 4, 5}, {}, true),
    attention_case("causal Tq > Tk (first rows see no key)", {1, 1, 4, 3}, {1, 1, 2, 3}, {}, true),
    attention_case("Tq = 1 with key padding", {2, 2, 1, 4}, {2, 2, 3, 4}, {3, 2}),
    attention_case("dropout 0.2", {1, 2, 3, 4}, {1, 2, 4, 4}, {}, false, 0.2),
    attention_case("dropout 0.2, causal with padding", {2, 1, 3, 3}, {2, 1, 3, 3}, {2, 3}, true,
                   0.2),
});

// ---- attention forward -------------------------------------------------------------------

TEST_CASE("attention: key padding, D = 1, weights by hand", "[attention]") {
  // scale = 1; scores q*k = [1, 2] over the two visible keys; the third key would dominate.
  Tensor q = Tensor::from_vector({1.0}, {1, 1, 1, 1}, kF64);
  Tensor k = Tensor::from_vector({1.0, 2.0, 50.0}, {1, 1, 3, 1}, kF64);
  Tensor v = Tensor::from_vector({10.0, 20.0, 1000.0}, {1, 1, 3, 1}, kF64);
  Tensor out = attention(q, k, v, ints({2}, {1}));
  const double e = std::exp(1.0);
  CHECK(out.item() == Approx((10.0 + 20.0 * e) / (1.0 + e)).epsilon(1e-14));
}

TEST_CASE("attention: key padding, D = 2, weights 1/3 and 2/3", "[attention]") {
  // With scale 1/sqrt(2), q = [sqrt(2) ln 2, 0] gives scores [0, ln 2] against k0 = [0, 0] and
  // k1 = [1, 0]: weights 1/3 and 2/3. Key 2 is padding (length 2) in batch entry 0; batch
  // entry 1 sees all three keys.
  const double a = std::sqrt(2.0) * std::log(2.0);
  Tensor q = Tensor::from_vector({a, 0.0, a, 0.0}, {2, 1, 1, 2}, kF64);
  // k for entry 1, key 2: dot q.k / sqrt(2) = ln 3.
  const double c = std::log(3.0) / std::log(2.0);
  Tensor k = Tensor::from_vector({0, 0, 1, 0, 100, 0, 0, 0, 1, 0, c, 0}, {2, 1, 3, 2}, kF64);
  Tensor v = Tensor::from_vector({3, 0, 0, 6, 1000, 1000, 3, 0, 0, 6, 7, 7}, {2, 1, 3, 2}, kF64);
  const auto out = attention(q, k, v, ints({2, 3}, {2})).to_double_vector();
  CHECK(out[0] == Approx(1.0).epsilon(1e-12));
  CHECK(out[1] == Approx(4.0).epsilon(1e-12));
  // Entry 1: scores [0, ln 2, ln 3] -> weights [1, 2, 3] / 6.
  CHECK(out[2] == Approx((3.0 + 3 * 7.0) / 6.0).epsilon(1e-12));
  CHECK(out[3] == Approx((2 * 6.0 + 3 * 7.0) / 6.0).epsilon(1e-12));
}

TEST_CASE("attention: causal query 0 sees only key 0", "[attention]") {
  Generator gen(3);
  Tensor q = Tensor::normal({2, 2, 4, 3}, 0, 1, gen);
  Tensor k = Tensor::normal({2, 2, 4, 3}, 0, 1, gen);
  Tensor v = Tensor::normal({2, 2, 4, 3}, 0, 1, gen);
  const auto out = attention(q, k, v, {}, true).to_double_vector();
  const auto vv = v.to_double_vector();
  for (int64_t bh = 0; bh < 4; ++bh)
    for (int64_t d = 0; d < 3; ++d) REQUIRE(out[bh * 12 + d] == vv[bh * 12 + d]);
}

TEST_CASE("attention: fully padded row is zeros, lse -inf", "[attention]") {
  Generator gen(4);
  Tensor q = Tensor::normal({2, 2, 3, 4}, 0, 1, gen);
  Tensor k = Tensor::normal({2, 2, 5, 4}, 0, 1, gen);
  Tensor v = Tensor::normal({2, 2, 5, 4}, 0, 1, gen);
  ops::AttentionOptions opt;
  opt.key_lengths = ints({3, 0}, {2});
  ops::AttentionResult r = ops::attention_forward(q, k, v, opt);
  const auto out = r.out.to_double_vector();
  const auto lse = r.lse.to_double_vector();
  for (int64_t e = 0; e < 24; ++e) CHECK(out[e] != 0.0);
  for (int64_t e = 24; e < 48; ++e) CHECK(out[e] == 0.0);
  for (int64_t e = 6; e < 12; ++e) CHECK(lse[e] == -std::numeric_limits<double>::infinity());
}

TEST_CASE("attention: matches a plain reference (padding, causal, cross)", "[attention]") {
  Generator gen(5);
  for (bool causal : {false, true}) {
    for (DType dt : {kF64, kF32}) {
      Tensor q = Tensor::normal({2, 3, 4, 5}, 0, 1, gen, dt);
      Tensor k = Tensor::normal({2, 3, 6, 5}, 0, 1, gen, dt);
      Tensor v = Tensor::normal({2, 3, 6, 5}, 0, 1, gen, dt);
      const std::vector<int32_t> lengths = {6, 2};
      const auto out = attention(q, k, v, ints(lengths, {2}), causal).to_double_vector();
      const auto ref = reference_attention(q, k, v, lengths, causal);
      const double tol = dt == kF64 ? 1e-12 : 1e-5;
      for (size_t e = 0; e < ref.size(); ++e) REQUIRE(out[e] == Approx(ref[e]).margin(tol));
    }
  }
}

TEST_CASE("attention: dropout mask follows the documented Philox indexing", "[attention]") {
  Generator data(6);
  const int64_t B = 1, H = 2, Tq = 3, Tk = 4, D = 2;
  Tensor q = Tensor::normal({B, H, Tq, D}, 0, 1, data, kF64);
  Tensor k = Tensor::normal({B, H, Tk, D}, 0, 1, data, kF64);
  Tensor v = Tensor::normal({B, H, Tk, D}, 0, 1, data, kF64);
  const double p = 0.4;
  Generator gen(99);
  gen.reserve(10);  // a nonzero offset
  const uint64_t offset = gen.offset();
  const auto out = attention(q, k, v, {}, false, p, &gen).to_double_vector();
  CHECK(gen.offset() == offset + philox_counters(B * H * Tq * Tk));

  // Expected: P from the no-dropout softmax, kept entries scaled by 1/(1-p).
  const auto qv = q.to_double_vector(), kv = k.to_double_vector(), vv = v.to_double_vector();
  for (int64_t bh = 0; bh < B * H; ++bh)
    for (int64_t i = 0; i < Tq; ++i) {
      std::vector<double> s(Tk);
      double z = 0;
      for (int64_t j = 0; j < Tk; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d)
          dot += qv[(bh * Tq + i) * D + d] * kv[(bh * Tk + j) * D + d];
        s[j] = std::exp(dot / std::sqrt(2.0));
        z += s[j];
      }
      for (int64_t d = 0; d < D; ++d) {
        double expect = 0;
        for (int64_t j = 0; j < Tk; ++j) {
          const uint64_t idx = static_cast<uint64_t>((bh * Tq + i) * Tk + j);
          if (kernels::dropout_keep(99, offset, idx, static_cast<float>(p)))
            expect += s[j] / z / (1 - p) * vv[(bh * Tk + j) * D + d];
        }
        REQUIRE(out[(bh * Tq + i) * D + d] == Approx(expect).margin(1e-12));
      }
    }
}

TEST_CASE("attention: f32 and f64 gradients agree", "[attention]") {
  Generator data(8);
  Tensor q64 = Tensor::normal({2, 2, 5, 8}, 0, 1, data, kF64);
  Tensor k64 = Tensor::normal({2, 2, 7, 8}, 0, 1, data, kF64);
  Tensor v64 = Tensor::normal({2, 2, 7, 8}, 0, 1, data, kF64);
  Tensor g64 = Tensor::normal({2, 2, 5, 8}, 0, 1, data, kF64);
  std::vector<std::vector<double>> results[2];
  for (int r = 0; r < 2; ++r) {
    const DType dt = r == 0 ? kF64 : kF32;
    Tensor q = q64.detach().to(dt).set_requires_grad(true);
    Tensor k = k64.detach().to(dt).set_requires_grad(true);
    Tensor v = v64.detach().to(dt).set_requires_grad(true);
    Generator gen(17);
    Tensor out = attention(q, k, v, ints({7, 3}, {2}), true, 0.25, &gen);
    out.backward(g64.to(dt));
    results[r] = {out.to_double_vector(), q.grad().to_double_vector(), k.grad().to_double_vector(),
                  v.grad().to_double_vector()};
  }
  for (size_t t = 0; t < 4; ++t)
    for (size_t e = 0; e < results[0][t].size(); ++e)
      REQUIRE(results[1][t][e] == Approx(results[0][t][e]).margin(1e-4));
}

TEST_CASE("attention: records a node only when an input requires grad", "[attention]") {
  Generator gen(9);
  Tensor q = Tensor::normal({1, 1, 2, 2}, 0, 1, gen);
  Tensor k = Tensor::normal({1, 1, 2, 2}, 0, 1, gen);
  CHECK_FALSE(attention(q, k, k).requires_grad());
  k.set_requires_grad(true);
  Tensor out = attention(q, k, k);
  REQUIRE(out.requires_grad());
  CHECK(std::string(out.impl()->grad_fn->name()) == "attention");
  NoGradGuard no_grad;
  CHECK_FALSE(attention(q, k, k).requires_grad());
}

TEST_CASE("attention: errors name the op and the shapes", "[attention]") {
  Tensor q = Tensor::zeros({2, 1, 3, 4});
  Tensor k = Tensor::zeros({2, 1, 5, 4});
  REQUIRE_THROWS_WITH(attention(q, Tensor::zeros({2, 1, 5, 3}), Tensor::zeros({2, 1, 5, 3})),
                      Contains("attention") && Contains("head dims differ") &&
                          Contains("[2, 1, 3, 4]") && Contains("[2, 1, 5, 3]"));
  REQUIRE_THROWS_WITH(attention(q, k, Tensor::zeros({2, 1, 4, 4})),
                      Contains("attention") && Contains("v has shape [2, 1, 4, 4]"));
  REQUIRE_THROWS_WITH(attention(Tensor::zeros({3, 4}), k, k),
                      Contains("attention") && Contains("[B, H, T, D]"));
  REQUIRE_THROWS_WITH(attention(q, k, k, ints({5, 5, 5}, {3})),
                      Contains("attention") && Contains("key_lengths") && Contains("[3]"));
  REQUIRE_THROWS_WITH(attention(q, k, k, ints({5, 6}, {2})), Contains("attention") &&
                                                                 Contains("key_lengths[1] = 6") &&
                                                                 Contains("[0, 5]"));
  REQUIRE_THROWS_WITH(attention(q, k, k, ints({-1, 2}, {2})),
                      Contains("attention") && Contains("key_lengths[0] = -1"));
  REQUIRE_THROWS_WITH(attention(q, k, k, Tensor::zeros({2})),
                      Contains("attention") && Contains("key_lengths") && Contains("i32"));
  REQUIRE_THROWS_WITH(attention(q, Tensor::zeros({2, 1, 5, 4}, kF64), k),
                      Contains("attention") && Contains("f64"));
  REQUIRE_THROWS_WITH(attention(q, k, k, {}, false, 1.0),
                      Contains("attention") && Contains("[0, 1)"));
}

// ---- embedding and positions --------------------------------------------------------------

TEST_CASE("sinusoidal_positions: the paper's formula", "[embedding]") {
  const int64_t d = 7;  // odd: the last column is a sin
  Tensor pe = sinusoidal_positions(60, d, 0, kF64);
  REQUIRE(pe.shape() == Shape{60, d});
  const auto t = pe.to_double_vector();
  for (int64_t p : {0, 1, 5, 59}) {
    for (int64_t i = 0; 2 * i < d; ++i) {
      const double angle = p / std::pow(10000.0, 2.0 * i / d);
      CHECK(t[p * d + 2 * i] == Approx(std::sin(angle)).margin(1e-15));
      if (2 * i + 1 < d) CHECK(t[p * d + 2 * i + 1] == Approx(std::cos(angle)).margin(1e-15));
    }
  }
  // Offsets continue the same table; f32 rounds the same values.
  const auto shifted = sinusoidal_positions(4, d, 56, kF64).to_double_vector();
  for (int64_t e = 0; e < 4 * d; ++e) CHECK(shifted[e] == t[56 * d + e]);
  const auto f32 = sinusoidal_positions(60, d).to_double_vector();
  for (size_t e = 0; e < t.size(); ++e)
    CHECK(f32[e] == static_cast<double>(static_cast<float>(t[e])));
  REQUIRE_THROWS_WITH(sinusoidal_positions(3, 0), Contains("sinusoidal_positions"));
}

TEST_CASE("embedding: rows are weight rows times scale, plus positions", "[embedding]") {
  Generator gen(10);
  for (DType dt : {kF32, kF64}) {
    Tensor w = Tensor::normal({4, 6}, 0, 1, gen, dt);
    Tensor ids = ints({2, 0, 2, 3, 1, 1}, {2, 3});
    const double scale = std::sqrt(6.0);
    const auto wv = w.to_double_vector();
    const std::vector<int32_t> idv = ids.to_int_vector();

    Tensor out = embedding(ids, w, scale);
    REQUIRE(out.shape() == Shape{2, 3, 6});
    auto ov = out.to_double_vector();
    for (int64_t r = 0; r < 6; ++r)
      for (int64_t c = 0; c < 6; ++c)
        CHECK(ov[r * 6 + c] == Approx(wv[idv[r] * 6 + c] * scale).epsilon(1e-6));

    // Positions restart for each sequence (last dimension of ids) and start at the offset.
    out = embedding(ids, w, scale, true, 5);
    ov = out.to_double_vector();
    const auto pe = sinusoidal_positions(8, 6, 0, kF64).to_double_vector();
    for (int64_t r = 0; r < 6; ++r)
      for (int64_t c = 0; c < 6; ++c)
        CHECK(ov[r * 6 + c] == Approx(wv[idv[r] * 6 + c] * scale + pe[(5 + r % 3) * 6 + c])
                                   .epsilon(1e-6)
                                   .margin(1e-6));
  }
}

TEST_CASE("embedding: backward scatter-adds repeated ids and accumulates", "[embedding]") {
  Tensor w = Tensor::zeros({4, 3}, kF64).set_requires_grad(true);
  Tensor ids = ints({1, 1, 3, 1}, {4});
  Tensor out = embedding(ids, w, 2.0, true);
  out.backward(Tensor::ones({4, 3}, kF64));
  auto g = w.grad().to_double_vector();
  const std::vector<double> expect = {0, 0, 0, 6, 6, 6, 0, 0, 0, 2, 2, 2};
  CHECK(g == expect);
  // A second use (e.g. tied weights) adds to the same gradient.
  embedding(ids, w, 2.0).backward(Tensor::ones({4, 3}, kF64));
  g = w.grad().to_double_vector();
  for (size_t e = 0; e < g.size(); ++e) CHECK(g[e] == 2 * expect[e]);
}

TEST_CASE("embedding: large backward is deterministic and exact", "[embedding]") {
  // Many rows hitting few ids, wide enough for several column blocks and threads.
  const int64_t n = 5000, d = 300, vocab = 7;
  std::vector<int32_t> idv(n);
  for (int64_t r = 0; r < n; ++r) idv[r] = static_cast<int32_t>((r * 3) % vocab);
  Tensor ids = ints(idv, {n});
  Tensor w = Tensor::zeros({vocab, d}).set_requires_grad(true);
  embedding(ids, w).backward(Tensor::ones({n, d}));
  const auto g = w.grad().to_double_vector();
  for (int64_t v = 0; v < vocab; ++v) {
    int64_t count = 0;
    for (int32_t id : idv) count += id == v;
    for (int64_t c = 0; c < d; ++c) REQUIRE(g[v * d + c] == static_cast<double>(count));
  }
}

TEST_CASE("embedding: errors", "[embedding]") {
  Tensor w = Tensor::zeros({5, 4});
  REQUIRE_THROWS_WITH(
      embedding(ints({0, 1, 2, 7}, {2, 2}), w),
      Contains("embedding") && Contains("id 7") && Contains("[1, 1]") && Contains("[0, 5)"));
  REQUIRE_THROWS_WITH(embedding(ints({-1}, {1}), w),
                      Contains("embedding") && Contains("id -1") && Contains("[0]"));
  REQUIRE_THROWS_WITH(embedding(Tensor::zeros({2}), w),
                      Contains("embedding") && Contains("ids") && Contains("i32"));
  REQUIRE_THROWS_WITH(embedding(ints({0}, {1}), Tensor::zeros({5})),
                      Contains("embedding") && Contains("weight"));
}

// ---- dropout -----------------------------------------------------------------------------

TEST_CASE("dropout: kept fraction, scaling, reproducibility", "[dropout]") {
  const int64_t n = 100000;
  const double p = 0.3;
  Tensor x = Tensor::ones({n});
  Generator gen(2024);
  Tensor y = dropout(x, p, true, gen);
  const auto yv = y.to_double_vector();
  const double kept_value = static_cast<float>(1.0 / (1.0 - p));
  int64_t kept = 0;
  for (double e : yv) {
    if (e != 0.0) {
      ++kept;
      REQUIRE(e == kept_value);
    }
  }
  // Binomial standard deviation is ~0.0015; 0.01 is ~7 of them.
  CHECK(static_cast<double>(kept) / n == Approx(1.0 - p).margin(0.01));

  // Same seed and offset: same mask. The next draw from the same generator: a new mask.
  Generator again(2024);
  CHECK(dropout(x, p, true, again).to_double_vector() == yv);
  const auto next = dropout(x, p, true, gen).to_double_vector();
  int64_t differ = 0;
  for (int64_t e = 0; e < n; ++e) differ += (next[e] != 0.0) != (yv[e] != 0.0);
  CHECK(differ > n / 10);
  CHECK(gen.offset() == 2 * philox_counters(n));
}

TEST_CASE("dropout: the mask is the documented Philox rule, element by element", "[dropout]") {
  // The CPU kernel draws 16 Philox blocks (64 elements) at a time; the CUDA kernels and
  // attention's dropout use the per-element rule kernels::dropout_keep. Sizes that are not
  // multiples of 4 (nor of the CPU kernel's 64-element chunks), above and below the parallel
  // threshold, an offset that is not 0 and one whose counters cross 2^32 (its second word).
  for (const uint64_t offset : {uint64_t{12345}, uint64_t{0xFFFFFFF8u}}) {
    for (int64_t n : {1, 7, 63, 65, 4001, 70001}) {
      INFO("n = " << n << ", offset = " << offset);
      const uint64_t seed = 0x123456789abcdefull;
      const float p = 0.25f;
      const std::vector<double> y =
          ops::dropout_forward(Tensor::ones({n}), p, seed, offset).to_double_vector();
      int64_t wrong = 0;
      for (int64_t i = 0; i < n; ++i)
        wrong += (y[i] != 0.0) != kernels::dropout_keep(seed, offset, static_cast<uint64_t>(i), p);
      CHECK(wrong == 0);
    }
  }
}

TEST_CASE("dropout: backward reuses the forward mask", "[dropout]") {
  Generator data(11);
  Tensor x = Tensor::normal({1000}, 0, 1, data, kF64).set_requires_grad(true);
  Generator gen(5);
  Tensor y = dropout(x, 0.5, true, gen);
  y.backward(Tensor::ones({1000}, kF64));
  const auto xv = x.to_double_vector(), yv = y.to_double_vector();
  const auto g = x.grad().to_double_vector();
  for (int64_t e = 0; e < 1000; ++e) REQUIRE(g[e] == (yv[e] != 0.0 ? 2.0 : 0.0));
  for (int64_t e = 0; e < 1000; ++e) REQUIRE((yv[e] == 0.0 || yv[e] == 2.0 * xv[e]));
}

TEST_CASE("dropout: identity in evaluation or with p = 0", "[dropout]") {
  Tensor x = Tensor::ones({10});
  Generator gen(1);
  CHECK(dropout(x, 0.5, false, gen).same(x));
  CHECK(dropout(x, 0.0, true, gen).same(x));
  CHECK(gen.offset() == 0);  // no random numbers consumed
}

TEST_CASE("dropout: errors", "[dropout]") {
  Tensor x = Tensor::ones({10});
  Generator gen(1);
  REQUIRE_THROWS_WITH(dropout(x, 1.0, true, gen), Contains("dropout") && Contains("[0, 1)"));
  REQUIRE_THROWS_WITH(dropout(x, -0.1, true, gen), Contains("dropout") && Contains("-0.1"));
  REQUIRE_THROWS_WITH(dropout(Tensor::from_ints({1}, {1}), 0.1, true, gen),
                      Contains("dropout") && Contains("floating"));
}
