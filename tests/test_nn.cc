// src/nn: module bookkeeping (names, counts, loading), the Transformer's forward and backward,
// incremental decoding against full decoding, padding invariance, decoding-state reordering,
// greedy search, and a tiny model overfitting one batch.
#include <algorithm>
#include <catch2/catch.hpp>

#include "test_util.h"
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "core/grad_mode.h"
#include "nn/greedy.h"
#include "nn/module.h"
#include "nn/transformer.h"
#include "ops/elementwise.h"
#include "ops/index.h"

using namespace attn;
using namespace attn::nn;
using Catch::Contains;

namespace {

TransformerConfig tiny_config(bool pre_norm = false, bool share = true) {
  return testing::tiny_transformer_config(13, share ? 13 : 11, pre_norm, share);
}

Tensor ints(const std::vector<int32_t>& v, const Shape& shape) {
  return Tensor::from_ints(v, shape);
}

// Random ids in [lo, vocab), drawn from gen.
Tensor random_ids(const Shape& shape, int64_t lo, int64_t vocab, Generator& gen) {
  const std::vector<double> u = Tensor::uniform(shape, 0.0, 1.0, gen).to_double_vector();
  std::vector<int32_t> ids(u.size());
  for (size_t i = 0; i < u.size(); ++i)
    ids[i] = static_cast<int32_t>(
        lo + std::min<int64_t>(vocab - lo - 1, static_cast<int64_t>(u[i] * (vocab - lo))));
  return ints(ids, shape);
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

bool has_name(const Module& m, const std::string& name) {
  for (auto& [n, p] : m.named_parameters())
    if (n == name) return true;
  return false;
}

// Per-layer parameter counts of the paper's layers, written out from their shapes.
int64_t linear_count(int64_t in, int64_t out, bool bias) {
  return in * out + (bias ? out : 0);
}
int64_t attention_count(int64_t d) {
  return 4 * linear_count(d, d, true);
}
int64_t ffn_count(int64_t d, int64_t d_ff) {
  return linear_count(d, d_ff, true) + linear_count(d_ff, d, true);
}
int64_t norm_count(int64_t d) {
  return 2 * d;
}

}  // namespace

TEST_CASE("Transformer base: parameter names and count", "[nn]") {
  TransformerConfig cfg;
  cfg.src_vocab = cfg.tgt_vocab = 37000;
  const int64_t d = 512, d_ff = 2048, V = 37000;
  const int64_t enc_layer = attention_count(d) + ffn_count(d, d_ff) + 2 * norm_count(d);
  const int64_t dec_layer = 2 * attention_count(d) + ffn_count(d, d_ff) + 3 * norm_count(d);
  REQUIRE(enc_layer == 4 * (512 * 512 + 512) + 2 * 512 * 2048 + 2048 + 512 + 2 * 2 * 512);

  SECTION("shared embeddings") {
    Generator gen(1);
    Transformer model(cfg, gen);
    const int64_t expected = V * d + 6 * enc_layer + 6 * dec_layer;
    CHECK(model.parameter_count() == expected);
    CHECK(expected == 63082496);  // the paper's "65M" base model counts a 37000 shared vocab
    auto named = model.named_parameters();
    CHECK(named.front().first == "src_embed.weight");
    CHECK(named.size() == 1 + 6 * 16 + 6 * 26);
    CHECK(has_name(model, "encoder.layers.3.self_attn.q_proj.weight"));
    CHECK(has_name(model, "encoder.layers.5.ffn.fc2.bias"));
    CHECK(has_name(model, "encoder.layers.0.ffn_norm.weight"));
    CHECK(has_name(model, "decoder.layers.5.cross_attn.out_proj.bias"));
    CHECK(has_name(model, "decoder.layers.2.cross_attn_norm.bias"));
    CHECK_FALSE(has_name(model, "tgt_embed.weight"));
    CHECK_FALSE(has_name(model, "out_proj.weight"));
    CHECK_FALSE(has_name(model, "encoder.norm.weight"));
    for (auto& [name, p] : named) CHECK(p.requires_grad());
    CHECK(model.parameters().size() == named.size());
  }

  SECTION("separate embeddings and pre-norm add their tensors") {
    // Smaller and unequal vocabularies keep this fast and show which table has which size.
    cfg.src_vocab = 1000;
    cfg.tgt_vocab = 800;
    cfg.share_embeddings = false;
    cfg.pre_norm = true;
    cfg.encoder_layers = cfg.decoder_layers = 1;
    Generator gen(1);
    Transformer model(cfg, gen);
    CHECK(model.parameter_count() ==
          1000 * d + 800 * d + 800 * d + enc_layer + dec_layer + 2 * norm_count(d));
    CHECK(has_name(model, "tgt_embed.weight"));
    CHECK(has_name(model, "out_proj.weight"));
    CHECK(has_name(model, "encoder.norm.weight"));
    CHECK(has_name(model, "decoder.norm.bias"));
    CHECK_FALSE(has_name(model, "out_proj.bias"));
    for (auto& [name, p] : model.named_parameters()) {
      if (name == "out_proj.weight" || name == "tgt_embed.weight")
        CHECK(p.shape() == Shape{800, d});
      if (name == "src_embed.weight") CHECK(p.shape() == Shape{1000, d});
    }
  }
}

TEST_CASE("Module: a shared tensor is listed once; train/eval and zero_grad recurse", "[nn]") {
  struct Leaf : Module {
    explicit Leaf(Tensor w) { w_ = register_parameter("w", w); }
    Tensor w_;
  };
  struct Root : Module {
    Root() {
      Tensor shared = Tensor::ones({2, 3});
      a_ = register_module("a", std::make_shared<Leaf>(shared));
      bias_ = register_parameter("bias", Tensor::zeros({3}));
      b_ = register_module("b", std::make_shared<Leaf>(shared));
    }
    std::shared_ptr<Leaf> a_, b_;
    Tensor bias_;
  };
  Root root;
  auto named = root.named_parameters();
  REQUIRE(named.size() == 2);
  CHECK(named[0].first == "a.w");
  CHECK(named[1].first == "bias");
  CHECK(root.parameter_count() == 9);

  CHECK(root.is_training());
  root.eval();
  CHECK_FALSE(root.b_->is_training());
  root.train();
  CHECK(root.a_->is_training());

  sum(mul(root.a_->w_, root.b_->w_)).backward();
  REQUIRE(root.a_->w_.grad().defined());
  root.zero_grad();
  CHECK_FALSE(root.b_->w_.grad().defined());
}

TEST_CASE("Transformer: incremental decoding equals full decoding", "[nn]") {
  for (bool pre_norm : {false, true}) {
    for (bool share : {true, false}) {
      DYNAMIC_SECTION("pre_norm " << pre_norm << " share " << share) {
        Generator gen(7);
        const TransformerConfig cfg = tiny_config(pre_norm, share);
        Transformer model(cfg, gen);
        model.eval();
        NoGradGuard no_grad;
        const int64_t B = 3, S = 5, T = 6;
        Tensor src = random_ids({B, S}, 1, cfg.src_vocab, gen);
        Tensor src_len = ints({5, 3, 1}, {B});
        Tensor tgt = random_ids({B, T}, 1, cfg.tgt_vocab, gen);
        Tensor memory = model.encode(src, src_len);
        const std::vector<double> full = model.decode(tgt, memory, src_len).to_double_vector();

        Transformer::DecodeState state = model.start_decoding(memory, src_len);
        const std::vector<int32_t> tv = tgt.to_int_vector();
        const int64_t V = cfg.tgt_vocab;
        double worst = 0;
        for (int64_t t = 0; t < T; ++t) {
          std::vector<int32_t> col(B);
          for (int64_t b = 0; b < B; ++b) col[b] = tv[b * T + t];
          Tensor logits = model.decode_step(ints(col, {B}), state);
          REQUIRE(logits.shape() == Shape{B, V});
          const std::vector<double> step = logits.to_double_vector();
          for (int64_t b = 0; b < B; ++b)
            for (int64_t v = 0; v < V; ++v)
              worst = std::max(worst, std::abs(step[b * V + v] - full[(b * T + t) * V + v]));
        }
        CHECK(state.step == T);
        CHECK(state.layers[0].self_attn.length() == T);
        CHECK(worst < 1e-4);
      }
    }
  }
}

TEST_CASE("Transformer: post-norm and pre-norm train end to end; every parameter gets a gradient",
          "[nn]") {
  for (bool pre_norm : {false, true}) {
    for (bool share : {true, false}) {
      DYNAMIC_SECTION("pre_norm " << pre_norm << " share " << share) {
        Generator init(11), drop(12);
        const TransformerConfig cfg = tiny_config(pre_norm, share);
        Transformer model(cfg, init);
        model.set_dropout_generator(&drop);
        Tensor src = random_ids({2, 5}, 1, cfg.src_vocab, init);
        Tensor src_len = ints({5, 4}, {2});
        Tensor tgt_in = random_ids({2, 4}, 1, cfg.tgt_vocab, init);
        Tensor tgt_out = ints({3, 4, 5, 6, 7, 2, -1, -1}, {2, 4});
        Tensor logits = model.forward(src, src_len, tgt_in);
        REQUIRE(logits.shape() == Shape{2, 4, cfg.tgt_vocab});
        CHECK(drop.offset() > 0);  // training-mode dropout drew from the given generator
        CrossEntropyResult ce = cross_entropy(logits, tgt_out, 0.1, -1);
        ce.loss.backward();
        for (auto& [name, p] : model.named_parameters()) {
          INFO(name);
          Tensor g = p.grad();
          REQUIRE(g.defined());
          REQUIRE(g.shape() == p.shape());
          const std::vector<double> gv = g.to_double_vector();
          CHECK(std::all_of(gv.begin(), gv.end(), [](double x) { return std::isfinite(x); }));
          CHECK(std::any_of(gv.begin(), gv.end(), [](double x) { return x != 0.0; }));
        }
      }
    }
  }
}

TEST_CASE("Transformer: dropout is reproducible from its generator and off in eval", "[nn]") {
  Generator init(3);
  const TransformerConfig cfg = tiny_config();
  Transformer model(cfg, init);
  Tensor src = random_ids({2, 4}, 1, cfg.src_vocab, init);
  Tensor len = ints({4, 2}, {2});
  Tensor tgt = random_ids({2, 3}, 1, cfg.tgt_vocab, init);
  NoGradGuard no_grad;
  Generator a(99), b(99);
  model.set_dropout_generator(&a);
  const auto first = model.forward(src, len, tgt).to_double_vector();
  model.set_dropout_generator(&b);
  const auto second = model.forward(src, len, tgt).to_double_vector();
  CHECK(max_abs_diff(first, second) == 0.0);
  const auto third = model.forward(src, len, tgt).to_double_vector();  // b has moved on
  CHECK(max_abs_diff(first, third) > 0.0);

  model.eval();
  const uint64_t before = b.offset();
  const auto e1 = model.forward(src, len, tgt).to_double_vector();
  const auto e2 = model.forward(src, len, tgt).to_double_vector();
  CHECK(b.offset() == before);
  CHECK(max_abs_diff(e1, e2) == 0.0);
  model.set_dropout_generator(nullptr);
}

TEST_CASE("Transformer: encoder output is unchanged by extra right padding", "[nn]") {
  for (bool pre_norm : {false, true}) {
    Generator gen(5);
    const TransformerConfig cfg = tiny_config(pre_norm);
    Transformer model(cfg, gen);
    model.eval();
    NoGradGuard no_grad;
    const std::vector<int32_t> sentence = {4, 9, 2, 7};
    Tensor short_src = ints(sentence, {1, 4});
    // Whatever sits in the padding must not matter either (11 is not the pad id).
    Tensor long_src = ints({4, 9, 2, 7, 0, 11, 0}, {1, 7});
    const auto a = model.encode(short_src, ints({4}, {1})).to_double_vector();
    const auto b = model.encode(long_src, ints({4}, {1})).to_double_vector();
    std::vector<double> b_prefix(b.begin(), b.begin() + 4 * cfg.d_model);
    CHECK(max_abs_diff(a, b_prefix) < 1e-5);

    // And decoding against the padded memory gives the same logits.
    Tensor tgt = ints({1, 5, 6}, {1, 3});
    const auto la = model.decode(tgt, model.encode(short_src, ints({4}, {1})), ints({4}, {1}))
                        .to_double_vector();
    const auto lb = model.decode(tgt, model.encode(long_src, ints({4}, {1})), ints({4}, {1}))
                        .to_double_vector();
    CHECK(max_abs_diff(la, lb) < 1e-5);
  }
}

TEST_CASE("Transformer: reorder keeps the selected rows of the decoding state", "[nn]") {
  Generator gen(21);
  const TransformerConfig cfg = tiny_config();
  Transformer model(cfg, gen);
  model.eval();
  NoGradGuard no_grad;
  const int64_t B = 3, S = 4;
  Tensor src = random_ids({B, S}, 1, cfg.src_vocab, gen);
  Tensor len = ints({4, 2, 3}, {B});
  Tensor memory = model.encode(src, len);
  const std::vector<std::vector<int32_t>> steps = {{1, 1, 1}, {5, 6, 7}, {8, 9, 10}};

  Transformer::DecodeState state = model.start_decoding(memory, len);
  model.decode_step(ints(steps[0], {B}), state);
  model.decode_step(ints(steps[1], {B}), state);
  const auto cache_before = state.layers[1].self_attn.k.to_double_vector();
  // Beam-style: row 2 twice, then row 0; row 1 dropped.
  const std::vector<int32_t> pick = {2, 2, 0};
  model.reorder(state, ints(pick, {3}));
  REQUIRE(state.batch_size() == 3);
  CHECK(state.src_lengths.to_int_vector() == std::vector<int32_t>{3, 3, 4});
  CHECK(state.step == 2);
  const auto cache_after = state.layers[1].self_attn.k.to_double_vector();
  const size_t row = cache_before.size() / B;
  for (size_t i = 0; i < pick.size(); ++i)
    CHECK(std::equal(cache_after.begin() + i * row, cache_after.begin() + (i + 1) * row,
                     cache_before.begin() + pick[i] * row));
  Tensor reordered = model.decode_step(ints({steps[2][2], steps[2][2], steps[2][0]}, {3}), state);

  // The same rows decoded from scratch.
  std::vector<int32_t> src_v = src.to_int_vector(), sub_src;
  for (int32_t r : pick)
    sub_src.insert(sub_src.end(), src_v.begin() + r * S, src_v.begin() + (r + 1) * S);
  Tensor sub_len = ints({3, 3, 4}, {3});
  Transformer::DecodeState fresh =
      model.start_decoding(model.encode(ints(sub_src, {3, S}), sub_len), sub_len);
  Tensor expected;
  for (const auto& s : steps) expected = model.decode_step(ints({s[2], s[2], s[0]}, {3}), fresh);
  CHECK(max_abs_diff(reordered.to_double_vector(), expected.to_double_vector()) < 1e-5);

  CHECK_THROWS_WITH(model.reorder(state, ints({3}, {1})), Contains("index[0] = 3"));
}

TEST_CASE("index_select0 gathers rows of any dtype", "[nn]") {
  Tensor x = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {3, 2});
  Tensor out = ops::index_select0(x, ints({2, 0, 2}, {3}));
  CHECK(out.shape() == Shape{3, 2});
  CHECK(out.to_double_vector() == std::vector<double>{4, 5, 0, 1, 4, 5});
  Tensor i = ops::index_select0(ints({7, 8, 9}, {3}), ints({1}, {1}));
  CHECK(i.to_int_vector() == std::vector<int32_t>{8});
  CHECK(ops::index_select0(x, ints({}, {0})).shape() == Shape{0, 2});
  CHECK_THROWS_WITH(ops::index_select0(x, ints({-1}, {1})), Contains("outside [0, 3)"));
  CHECK_THROWS_WITH(ops::index_select0(x, Tensor::zeros({1})), Contains("index must be i32"));
}

TEST_CASE("load_parameters copies values and names the offending key", "[nn][errors]") {
  Generator g1(1), g2(2);
  const TransformerConfig cfg = tiny_config();
  Transformer a(cfg, g1), b(cfg, g2);
  a.eval();
  b.eval();
  Tensor src = ints({3, 4, 5}, {1, 3}), len = ints({3}, {1}), tgt = ints({1, 2}, {1, 2});
  NoGradGuard no_grad;

  std::map<std::string, Tensor> values;
  for (auto& [name, p] : a.named_parameters()) values[name] = p.clone();
  b.load_parameters(values);
  CHECK(max_abs_diff(a.forward(src, len, tgt).to_double_vector(),
                     b.forward(src, len, tgt).to_double_vector()) == 0.0);

  SECTION("missing key") {
    values.erase("decoder.layers.1.ffn.fc1.weight");
    CHECK_THROWS_WITH(b.load_parameters(values), Contains("'decoder.layers.1.ffn.fc1.weight'"));
    CHECK_NOTHROW(b.load_parameters(values, /*strict=*/false));
  }
  SECTION("unexpected key") {
    values["decoder.layers.7.ffn.fc1.weight"] = Tensor::zeros({2});
    CHECK_THROWS_WITH(b.load_parameters(values),
                      Contains("'decoder.layers.7.ffn.fc1.weight'") && Contains("not a parameter"));
    CHECK_NOTHROW(b.load_parameters(values, /*strict=*/false));
  }
  SECTION("shape mismatch, and nothing is copied") {
    values["encoder.layers.0.self_attn_norm.bias"] = Tensor::ones({17});
    values["src_embed.weight"] = Tensor::zeros({13, 16});
    CHECK_THROWS_WITH(b.load_parameters(values),
                      Contains("checkpoint parameter 'encoder.layers.0.self_attn_norm.bias' has "
                               "shape [17] but the model expects [16]"));
    CHECK_THROWS(b.load_parameters(values, /*strict=*/false));
    const auto emb = b.named_parameters().front().second.to_double_vector();
    CHECK(std::any_of(emb.begin(), emb.end(), [](double x) { return x != 0.0; }));
  }
}

TEST_CASE("TransformerConfig::validate names the field", "[nn][errors]") {
  TransformerConfig c = tiny_config();
  CHECK_NOTHROW(c.validate());
  SECTION("heads") {
    c.d_model = 512;
    c.heads = 7;
    CHECK_THROWS_WITH(c.validate(),
                      "model.d_model must be divisible by model.heads (512 % 7 != 0)");
  }
  SECTION("vocab") {
    c.src_vocab = 0;
    CHECK_THROWS_WITH(c.validate(), Contains("model.src_vocab"));
  }
  SECTION("shared embeddings need one vocabulary") {
    c.tgt_vocab = 12;
    CHECK_THROWS_WITH(c.validate(), Contains("model.share_embeddings"));
  }
  SECTION("dropout") {
    c.attention_dropout = 1.0;
    CHECK_THROWS_WITH(c.validate(), Contains("model.attention_dropout must be in [0, 1)"));
  }
  SECTION("layers") {
    c.decoder_layers = 0;
    CHECK_THROWS_WITH(c.validate(), Contains("model.decoder_layers"));
  }
  SECTION("the constructor validates") {
    c.d_ff = -1;
    Generator g;
    CHECK_THROWS_WITH(Transformer(c, g), Contains("model.d_ff"));
  }
}

TEST_CASE("Transformer: bad inputs are reported with shapes", "[nn][errors]") {
  Generator g(1);
  Transformer model(tiny_config(), g);
  Tensor src = ints({1, 2, 3}, {1, 3});
  CHECK_THROWS_WITH(model.encode(src, ints({3, 3}, {2})), Contains("src_lengths has shape [2]"));
  CHECK_THROWS_WITH(model.encode(Tensor::zeros({1, 3}), ints({3}, {1})),
                    Contains("src must be i32"));
  NoGradGuard no_grad;
  Tensor memory = model.encode(src, ints({3}, {1}));
  auto state = model.start_decoding(memory, ints({3}, {1}));
  CHECK_THROWS_WITH(model.decode_step(ints({1, 1}, {2}), state), Contains("holds 1 rows"));
}

TEST_CASE("greedy_decode matches a search with full decoding and stops at eos", "[nn]") {
  Generator gen(8);
  const TransformerConfig cfg = tiny_config(/*pre_norm=*/true);
  Transformer model(cfg, gen);
  const int32_t bos = 1;
  const int64_t max_len = 6, B = 3;
  Tensor src = random_ids({B, 5}, 3, cfg.src_vocab, gen);
  Tensor len = ints({5, 2, 4}, {B});

  // Reference: per row, re-run the full decoder on the growing prefix.
  auto reference = [&](int32_t eos) {
    NoGradGuard no_grad;
    model.eval();
    std::vector<std::vector<int32_t>> out(B);
    const std::vector<int32_t> src_v = src.to_int_vector(), len_v = len.to_int_vector();
    for (int64_t b = 0; b < B; ++b) {
      Tensor s =
          ints(std::vector<int32_t>(src_v.begin() + b * 5, src_v.begin() + (b + 1) * 5), {1, 5});
      Tensor l = ints({len_v[b]}, {1});
      Tensor memory = model.encode(s, l);
      std::vector<int32_t> prefix = {bos};
      for (int64_t t = 0; t < max_len; ++t) {
        Tensor logits = model.decode(ints(prefix, {1, t + 1}), memory, l);
        const auto v = logits.to_double_vector();
        const int64_t V = cfg.tgt_vocab;
        const auto last = v.begin() + t * V;
        const int32_t best = static_cast<int32_t>(std::max_element(last, last + V) - last);
        if (best == eos) break;
        out[b].push_back(best);
        prefix.push_back(best);
      }
    }
    model.train();
    return out;
  };

  // First with an eos that never wins, then with row 0's first choice as eos, so row 0 stops
  // at once and the others continue in a shrunken state.
  const auto no_stop = reference(/*eos=*/0);
  REQUIRE(!no_stop[0].empty());
  for (int32_t eos : {int32_t{0}, no_stop[0][0]}) {
    INFO("eos " << eos);
    const auto expected = reference(eos);
    if (eos != 0) {  // the interesting case: row 0 done at once, some other row still going
      REQUIRE(expected[0].empty());
      REQUIRE((!expected[1].empty() || !expected[2].empty()));
    }
    CHECK(greedy_decode(model, src, len, bos, eos, max_len) == expected);
    CHECK(model.is_training());  // restored
  }
  CHECK(greedy_decode(model, src, len, bos, 0, 0) == std::vector<std::vector<int32_t>>(B));
}

TEST_CASE("a tiny Transformer overfits one batch with plain SGD", "[nn]") {
  Generator gen(31);
  TransformerConfig cfg = tiny_config();
  cfg.dropout = cfg.attention_dropout = cfg.relu_dropout = 0.0;
  cfg.d_model = 32;
  cfg.d_ff = 64;
  Transformer model(cfg, gen);
  // Copy task: target = source, teacher-forced with bos = 1, eos = 2, padding ignored (-1).
  Tensor src = ints({3, 4, 5, 6, 7,   //
                     8, 9, 10, 0, 0,  //
                     11, 12, 3, 4, 0},
                    {3, 5});
  Tensor len = ints({5, 3, 4}, {3});
  Tensor tgt_in = ints({1, 3, 4, 5, 6, 7,   //
                        1, 8, 9, 10, 0, 0,  //
                        1, 11, 12, 3, 4, 0},
                       {3, 6});
  Tensor tgt_out = ints({3, 4, 5, 6, 7, 2,     //
                         8, 9, 10, 2, -1, -1,  //
                         11, 12, 3, 4, 2, -1},
                        {3, 6});
  const double lr = 0.1;
  double first = 0, last = 0;
  for (int step = 0; step < 50; ++step) {
    model.zero_grad();
    CrossEntropyResult ce = cross_entropy(model.forward(src, len, tgt_in), tgt_out, 0.0, -1);
    Tensor loss = scale(ce.loss, 1.0 / ce.ntokens.item());
    loss.backward();
    last = loss.item();
    if (step == 0) first = last;
    NoGradGuard no_grad;
    for (Tensor p : model.parameters()) ops::axpy_(p, -lr, p.grad());
  }
  INFO("loss " << first << " -> " << last);
  CHECK(first > 2.0);
  CHECK(last < 0.1 * first);
  CHECK(greedy_decode(model, src, len, 1, 2, 8) ==
        std::vector<std::vector<int32_t>>{{3, 4, 5, 6, 7}, {8, 9, 10}, {11, 12, 3, 4}});
}
