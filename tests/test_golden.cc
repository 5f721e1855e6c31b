// Golden tests: attn's Transformer against PyTorch. scripts/golden/make_golden.py runs a tiny
// encoder-decoder (scripts/bench/reference_model.py, the same model in plain PyTorch) in
// float64 on a padded batch and stores its weights, inputs, logits, loss, nll and every
// parameter gradient in tests/data/golden/<name>.safetensors. Here the same weights go into
// nn::Transformer, which runs forward, cross_entropy and backward on the CPU in f64 and f32.
//
// Error measure per tensor: max |attn - torch| / max |torch| (a relative error against the
// tensor's scale, so that near-zero elements do not dominate). Limits: 1e-10 in f64 (the two
// implementations differ only in summation order), 1e-4 in f32 (f32 rounding through 2+2
// layers and the backward; typical values are ~1e-6). The gradients of k_proj.bias are zero
// in exact arithmetic (see below) and are checked to be zero at the same limits, relative to
// the largest gradient of the model.
// Set ATTN_GOLDEN_VERBOSE=1 to print the measured errors.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"
#include "autograd/functions.h"
#include "core/random.h"
#include "io/safetensors.h"
#include "nn/config.h"
#include "nn/transformer.h"

using namespace attn;

namespace {

std::string fixture_path(const std::string& name) {
  return std::string(ATTN_SOURCE_DIR) + "/tests/data/golden/" + name + ".safetensors";
}

struct Fixture {
  io::SafetensorsFile file;
  nn::TransformerConfig cfg;
  double label_smoothing = 0;
  int32_t pad = 0;

  const Tensor& at(const std::string& key) const {
    auto it = file.tensors.find(key);
    if (it == file.tensors.end()) FAIL("the fixture has no tensor '" << key << "'");
    return it->second;
  }
};

Fixture load_fixture(const std::string& name) {
  Fixture f;
  f.file = io::load_safetensors(fixture_path(name));
  auto meta = f.file.metadata.find("config");
  REQUIRE(meta != f.file.metadata.end());
  const auto j = nlohmann::json::parse(meta->second);
  f.cfg.src_vocab = j.at("src_vocab").get<int64_t>();
  f.cfg.tgt_vocab = j.at("tgt_vocab").get<int64_t>();
  f.cfg.d_model = j.at("d_model").get<int64_t>();
  f.cfg.heads = j.at("heads").get<int64_t>();
  f.cfg.d_ff = j.at("d_ff").get<int64_t>();
  f.cfg.encoder_layers = j.at("encoder_layers").get<int64_t>();
  f.cfg.decoder_layers = j.at("decoder_layers").get<int64_t>();
  f.cfg.dropout = j.at("dropout").get<double>();
  f.cfg.attention_dropout = j.at("attention_dropout").get<double>();
  f.cfg.relu_dropout = j.at("relu_dropout").get<double>();
  f.cfg.pre_norm = j.at("pre_norm").get<bool>();
  f.cfg.share_embeddings = j.at("share_embeddings").get<bool>();
  f.cfg.layer_norm_eps = j.at("layer_norm_eps").get<double>();
  f.label_smoothing = j.at("label_smoothing").get<double>();
  f.pad = j.at("pad").get<int32_t>();
  return f;
}

// max |a - b| / max |b| (b the PyTorch value); shapes must match.
double relative_error(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  const std::vector<double> x = a.to_double_vector(), y = b.to_double_vector();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    diff = std::max(diff, std::abs(x[i] - y[i]));
    scale = std::max(scale, std::abs(y[i]));
  }
  if (std::isnan(diff)) return diff;
  return diff / std::max(scale, 1e-300);
}

struct Worst {
  double value = 0;
  std::string name;
  void add(const std::string& n, double e) {
    if (!(e <= value)) value = e, name = n;  // NaN sticks
  }
};

void run_golden(const std::string& fixture_name, DType dtype, double tol) {
  const Fixture fx = load_fixture(fixture_name);
  Generator init(0);
  nn::Transformer model(fx.cfg, init);
  if (dtype != kF32) testing::convert_parameters(model, dtype);

  // Every parameter has a value and a gradient in the fixture, and the fixture has no
  // gradient for a parameter attn does not have.
  std::map<std::string, Tensor> values;
  std::set<std::string> param_names;
  for (auto& [name, p] : model.named_parameters()) {
    param_names.insert(name);
    INFO("parameter " << name);
    REQUIRE(fx.file.tensors.count(name) == 1);
    REQUIRE(fx.file.tensors.count("grad." + name) == 1);
    values[name] = fx.at(name).to(p.dtype());  // the fixture is f64; loading is strict
  }
  for (const auto& [key, t] : fx.file.tensors) {
    if (key.rfind("grad.", 0) == 0) {
      INFO("fixture gradient " << key);
      CHECK(param_names.count(key.substr(5)) == 1);
    }
  }
  model.load_parameters(values);
  model.train();  // every dropout is 0 in the fixtures: training mode must be exact too

  const Tensor src = fx.at("src"), src_lengths = fx.at("src_lengths");
  const Tensor tgt_in = fx.at("tgt_in"), tgt_out = fx.at("tgt_out");
  Tensor logits = model.forward(src, src_lengths, tgt_in);
  REQUIRE(logits.dtype() == dtype);
  CrossEntropyResult ce = cross_entropy(logits, tgt_out, fx.label_smoothing, fx.pad);
  ce.loss.backward();

  CHECK(ce.ntokens.item() == fx.at("ntokens").item());
  Worst worst_out, worst_grad;
  std::ostringstream report;
  auto compare = [&](const std::string& name, const Tensor& mine, const Tensor& ref, Worst& worst) {
    const double e = relative_error(mine, ref);
    worst.add(name, e);
    INFO(fixture_name << " " << dtype_name(dtype) << ": " << name << " relative error " << e
                      << " (limit " << tol << ")");
    CHECK(e <= tol);
  };
  compare("logits", logits, fx.at("logits"), worst_out);
  compare("loss", ce.loss, fx.at("loss"), worst_out);
  compare("nll", ce.nll, fx.at("nll"), worst_out);
  // The key projection's bias has a zero gradient in exact arithmetic: it adds q . b_k to
  // every score of a query row, and softmax ignores a shift shared by the row. Both sides hold
  // rounding noise there, so those tensors are checked to be zero against the scale of all
  // gradients instead of against their own.
  double grad_scale = 0;
  for (auto& [name, p] : model.named_parameters())
    for (double v : fx.at("grad." + name).to_double_vector())
      grad_scale = std::max(grad_scale, std::abs(v));
  Worst worst_zero;
  auto ends_with = [](const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
  };
  for (auto& [name, p] : model.named_parameters()) {
    INFO("gradient of " << name);
    REQUIRE(p.grad().defined());
    const Tensor& ref = fx.at("grad." + name);
    if (ends_with(name, ".k_proj.bias")) {
      for (const Tensor& t : {p.grad(), ref}) {
        double m = 0;
        for (double v : t.to_double_vector()) m = std::max(m, std::abs(v));
        worst_zero.add(name, m / grad_scale);
        INFO(fixture_name << " " << dtype_name(dtype) << ": " << name << " max |gradient| " << m
                          << " = " << m / grad_scale << " of the largest gradient (limit " << tol
                          << ")");
        CHECK(m <= tol * grad_scale);
      }
      continue;
    }
    compare("grad." + name, p.grad(), ref, worst_grad);
  }
  if (const char* v = std::getenv("ATTN_GOLDEN_VERBOSE"); v && *v && std::string(v) != "0") {
    WARN(fixture_name << " " << dtype_name(dtype) << ": loss " << ce.loss.item() << " (torch "
                      << fx.at("loss").item() << "); worst output error " << worst_out.value << " ("
                      << worst_out.name << "), worst gradient error " << worst_grad.value << " ("
                      << worst_grad.name << "), k_proj.bias gradients " << worst_zero.value
                      << " of the largest gradient");
  }
}

}  // namespace

TEST_CASE("Golden: post-norm Transformer with shared embeddings equals PyTorch", "[golden]") {
  SECTION("f64") {
    run_golden("post_norm_shared", kF64, 1e-10);
  }
  SECTION("f32") {
    run_golden("post_norm_shared", kF32, 1e-4);
  }
}

TEST_CASE("Golden: pre-norm Transformer with separate embeddings equals PyTorch", "[golden]") {
  SECTION("f64") {
    run_golden("pre_norm_unshared", kF64, 1e-10);
  }
  SECTION("f32") {
    run_golden("pre_norm_unshared", kF32, 1e-4);
  }
}

TEST_CASE("Golden: the fixtures cover padding and a one-token row", "[golden]") {
  for (const char* name : {"post_norm_shared", "pre_norm_unshared"}) {
    const Fixture fx = load_fixture(name);
    const std::vector<int32_t> src_len = fx.at("src_lengths").to_int_vector();
    const std::vector<int32_t> tgt_out = fx.at("tgt_out").to_int_vector();
    const int64_t T = fx.at("tgt_out").size(1);
    INFO(name);
    CHECK(std::count(src_len.begin(), src_len.end(), 1) >= 1);
    CHECK(*std::min_element(src_len.begin(), src_len.end()) <
          *std::max_element(src_len.begin(), src_len.end()));
    // Some target row is padded and some has a single token (its eos).
    bool padded = false, single = false;
    for (size_t r = 0; r < tgt_out.size() / T; ++r) {
      const auto begin = tgt_out.begin() + static_cast<int64_t>(r) * T;
      const auto n = std::count_if(begin, begin + T, [&](int32_t v) { return v != fx.pad; });
      padded |= n < T;
      single |= n == 1;
    }
    CHECK(padded);
    CHECK(single);
  }
}
