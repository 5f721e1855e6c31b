// The benchmark tooling's logic on the CPU: the documented hash, length and token rules (the
// Python side reproduces them), the batch generator and its file format, the FLOPs formula,
// and `bench kernels --quick` / `bench train` running end to end with tiny shapes.
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "bench/batches.h"
#include "bench/bench_kernels.h"
#include "bench/bench_train.h"
#include "bench/common.h"
#include "data/vocab.h"
#include "nn/transformer.h"
#include "test_util.h"
#include "train/config.h"
#include "train/step_config.h"

using namespace attn;
using namespace attn::bench;
using Catch::Contains;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

fs::path bench_tmp(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("attn_test_bench_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

}  // namespace

TEST_CASE("bench hash is SplitMix64, chained", "[bench]") {
  // SplitMix64 seeded with 0: its first two outputs (the published reference values).
  CHECK(mix64(0) == 0xE220A8397B1DCDAFull);
  CHECK(mix64(0x9E3779B97F4A7C15ull) == 0x6E789E6AA1B965F4ull);
  CHECK(hash_u64({}) == 0);
  CHECK(hash_u64({5}) == mix64(5));
  CHECK(hash_u64({5, 7}) == mix64(mix64(5) ^ 7));
  CHECK(unit_double(0) == 0.0);
  CHECK(unit_double(~0ull) < 1.0);
  CHECK(median({3, 1, 2}) == 2.0);
  CHECK(median({4, 1, 3, 2}) == 2.5);
}

TEST_CASE("padded lengths are uniform in [ceil(T/2), T] and seeded", "[bench]") {
  for (int64_t T : {1, 7, 16, 256}) {
    const auto a = padded_lengths(500, T, 1234);
    REQUIRE(a.size() == 500);
    std::set<int32_t> seen(a.begin(), a.end());
    CHECK(*seen.begin() >= (T + 1) / 2);
    CHECK(*seen.rbegin() <= T);
    if (T == 16) CHECK(seen.size() == 9);  // all of 8..16 appear among 500 draws
    CHECK(a == padded_lengths(500, T, 1234));
    for (int64_t i = 0; i < 500; ++i)
      CHECK(a[i] == (T + 1) / 2 + static_cast<int64_t>(hash_u64({1234, static_cast<uint64_t>(T),
                                                                 static_cast<uint64_t>(i)}) %
                                                       static_cast<uint64_t>(T - (T + 1) / 2 + 1)));
  }
  CHECK(padded_lengths(500, 256, 1234) != padded_lengths(500, 256, 1235));
}

TEST_CASE("the batch generator is deterministic and respects max_tokens", "[bench]") {
  BatchGenOptions o;
  o.max_tokens = 25000;
  o.seed = 3;
  o.count = 12;
  const BatchFile a = generate_batches(o);
  CHECK(a == generate_batches(o));
  REQUIRE(a.batches.size() == 12);
  CHECK(a.max_tokens == 25000);
  CHECK(a.vocab == 32000);
  int64_t real = 0, slots = 0;
  for (const auto& b : a.batches) {
    REQUIRE(!b.src_lengths.empty());
    REQUIRE(b.src_lengths.size() == b.tgt_lengths.size());
    const int64_t B = static_cast<int64_t>(b.src_lengths.size());
    CHECK(B * std::max(max_length(b.src_lengths), max_length(b.tgt_lengths)) <= 25000);
    for (size_t r = 0; r < b.src_lengths.size(); ++r) {
      CHECK(b.src_lengths[r] >= 1);
      CHECK(b.src_lengths[r] <= 256);
      CHECK(b.tgt_lengths[r] >= 1);
      CHECK(b.tgt_lengths[r] <= 256);
    }
    real += sum_lengths(b.tgt_lengths);
    slots += B * max_length(b.tgt_lengths);
  }
  // Bucketed by length: most target slots hold real tokens, and the mean sentence is WMT-like.
  CHECK(static_cast<double>(real) / static_cast<double>(slots) > 0.8);
  int64_t rows = 0;
  for (const auto& b : a.batches) rows += static_cast<int64_t>(b.tgt_lengths.size());
  const double mean = static_cast<double>(real) / static_cast<double>(rows);
  CHECK(mean > 20);
  CHECK(mean < 40);

  BatchGenOptions other = o;
  other.seed = 4;
  CHECK(!(generate_batches(other) == a));

  BatchGenOptions small;
  small.max_tokens = 40;  // smaller than max_len: sentences are clipped to 40 tokens
  small.count = 5;
  const BatchFile s = generate_batches(small);
  REQUIRE(s.batches.size() == 5);
  for (const auto& b : s.batches)
    CHECK(static_cast<int64_t>(b.src_lengths.size()) *
              std::max(max_length(b.src_lengths), max_length(b.tgt_lengths)) <=
          40);
}

TEST_CASE("batch files round-trip through JSON and bad files are refused", "[bench]") {
  BatchGenOptions o;
  o.max_tokens = 300;
  o.count = 4;
  o.vocab = 100;
  o.seed = 9;
  const BatchFile f = generate_batches(o);
  const json j = to_json(f);
  CHECK(j.at("max_tokens") == 300);
  CHECK(j.at("vocab") == 100);
  CHECK(j.at("batches").size() == 4);
  CHECK(j.at("batches")[0].contains("src_lengths"));
  CHECK(j.at("batches")[0].contains("tgt_lengths"));
  CHECK(batch_file_from_json(json::parse(j.dump())) == f);
  const fs::path path = bench_tmp("batches.json");
  write_batch_file(path.string(), f);
  CHECK(read_batch_file(path.string()) == f);

  auto bad = [&](const std::function<void(json&)>& edit) {
    json k = j;
    edit(k);
    return testing::error_of([&] { batch_file_from_json(k); });
  };
  CHECK_THAT(bad([](json& k) { k.erase("vocab"); }), Contains("vocab"));
  CHECK_THAT(bad([](json& k) { k["vocab"] = 4; }), Contains("vocab must be > 4"));
  CHECK_THAT(bad([](json& k) { k["batches"][1]["tgt_lengths"].push_back(3); }),
             Contains("batches[1]"));
  CHECK_THAT(bad([](json& k) { k["batches"][2]["src_lengths"][0] = 0; }), Contains("batches[2]"));
  CHECK_THAT(bad([](json& k) { k["max_tokens"] = 10; }), Contains("more than max_tokens 10"));
  CHECK_THAT(bad([](json& k) { k["batches"] = json::array(); }), Contains("no batches"));
  std::ofstream(bench_tmp("broken.json")) << "{\"max_tokens\": ";
  CHECK_THAT(testing::error_of([&] { read_batch_file(bench_tmp("broken.json").string()); }),
             Contains("not valid JSON"));
}

TEST_CASE("batches from a file follow the documented token layout", "[bench]") {
  BatchFile f;
  f.vocab = 50;
  f.max_tokens = 12;
  f.batches = {{{3, 1}, {2, 4}}};
  const data::Batch b = make_batch(f, 0, Device::cpu());
  REQUIRE(b.src.shape() == Shape({2, 3}));
  REQUIRE(b.tgt_in.shape() == Shape({2, 4}));
  CHECK(b.size == 2);
  CHECK(b.src_tokens == 4);
  CHECK(b.tgt_tokens == 6);
  CHECK(b.src_lengths.to_int_vector() == std::vector<int32_t>{3, 1});
  auto tok = [&](int side, int64_t r, int64_t p) { return synthetic_token(50, side, 0, r, p); };
  CHECK(b.src.to_int_vector() ==
        std::vector<int32_t>{tok(0, 0, 0), tok(0, 0, 1), data::kEosId, data::kEosId, 0, 0});
  CHECK(b.tgt_in.to_int_vector() == std::vector<int32_t>{data::kBosId, tok(1, 0, 0), 0, 0,
                                                         data::kBosId, tok(1, 1, 0), tok(1, 1, 1),
                                                         tok(1, 1, 2)});
  CHECK(b.tgt_out.to_int_vector() == std::vector<int32_t>{tok(1, 0, 0), data::kEosId, 0, 0,
                                                          tok(1, 1, 0), tok(1, 1, 1), tok(1, 1, 2),
                                                          data::kEosId});
  CHECK(tok(1, 1, 2) == 4 + static_cast<int32_t>(hash_u64({1, 0, 1, 2}) % 46));
  for (int side : {0, 1})
    for (int64_t p = 0; p < 200; ++p) {
      const int32_t t = synthetic_token(50, side, 3, 7, p);
      CHECK(t >= 4);
      CHECK(t < 50);
    }
}

TEST_CASE("model FLOPs follow the documented formula", "[bench]") {
  nn::TransformerConfig m = testing::tiny_transformer_config(24, 24);  // d 16, f 24, 2 + 2
  const BatchLengths b{{3, 1}, {2, 2}};
  // Worked by hand from the formula in bench_train.h (B 2, S 3, T 2).
  CHECK(model_flops(m, b, false) == 298752.0);
  CHECK(model_flops(m, b, true) == 238848.0);
  const BatchLengths full{{3, 3}, {2, 2}};  // no padding: both counts agree
  CHECK(model_flops(m, full, false) == model_flops(m, full, true));
}

TEST_CASE("bench kernels --quick runs every row on the CPU", "[bench]") {
  const KernelBenchReport rep = run_kernel_bench(kernel_bench_options(Device::cpu(), true));
  CHECK(rep.ok());
  CHECK(rep.copy_gbps > 0);
  CHECK(rep.matmul_tflops > 0);
  std::vector<std::string> names;
  for (const auto& r : rep.rows) {
    INFO(r.name << " " << r.error);
    CHECK(r.error.empty());
    CHECK(r.ms > 0);
    CHECK(r.ms_min > 0);
    CHECK(r.ms_min <= r.ms);
    CHECK(r.bytes > 0);
    CHECK(r.gbps > 0);
    CHECK(r.dtype == "f32");  // bf16 rows run in f32 on the CPU
    names.push_back(r.name);
  }
  // copy, matmul, 2 x 4 attention rows, 2 x 2 layer norm rows, 2 cross-entropy rows.
  REQUIRE(rep.rows.size() == 16);
  CHECK(names[0] == "copy");
  CHECK(names[1] == "matmul");
  CHECK(std::count(names.begin(), names.end(), "attention.enc_self.fwd") == 2);
  CHECK(std::count(names.begin(), names.end(), "attention.dec_causal.bwd") == 2);
  CHECK(std::count(names.begin(), names.end(), "layer_norm.bwd") == 2);
  CHECK(std::count(names.begin(), names.end(), "cross_entropy.fwd") == 1);
  CHECK(std::count(names.begin(), names.end(), "cross_entropy.bwd") == 1);
  for (const auto& r : rep.rows) {
    if (r.name.rfind("attention.enc_self", 0) == 0) {
      CHECK(r.lengths == padded_lengths(r.shape[0], r.shape[2], rep.seed));
      CHECK(r.flops == 4.0 * r.shape[0] * r.shape[1] * r.shape[2] * r.shape[2] * r.shape[3] *
                           (r.name.find(".bwd") != std::string::npos ? 2.5 : 1.0));
    }
    if (r.name.rfind("attention.dec_causal", 0) == 0) {
      CHECK(r.causal);
      CHECK(r.lengths.empty());
    }
  }
  const std::string table = format_kernel_table(rep);
  for (const auto& n : names) CHECK_THAT(table, Contains(n));
  CHECK_THAT(table, Contains("copy bandwidth"));

  const json j = to_json(rep);
  CHECK(j.at("results").size() == 16);
  const KernelBenchReport back = kernel_report_from_json(json::parse(j.dump()));
  REQUIRE(back.rows.size() == rep.rows.size());
  CHECK(back.copy_gbps == rep.copy_gbps);
  for (size_t i = 0; i < rep.rows.size(); ++i) {
    CHECK(back.rows[i].name == rep.rows[i].name);
    CHECK(back.rows[i].shape == rep.rows[i].shape);
    CHECK(back.rows[i].ms == rep.rows[i].ms);
    CHECK(back.rows[i].lengths == rep.rows[i].lengths);
  }
}

TEST_CASE("attn bench kernels and batches run from the command line", "[bench]") {
  const fs::path kj = bench_tmp("kernels.json");
  const auto r = testing::run_attn_capture(
      {"bench", "kernels", "--device", "cpu", "--quick", "--json", kj.string()});
  INFO(r.err);
  REQUIRE(r.exit_code() == 0);
  CHECK_THAT(r.out, Contains("attention.dec_causal.bwd"));
  std::ifstream kf(kj);
  const json k = json::parse(kf);
  CHECK(k.at("device") == "cpu");
  CHECK(k.at("results").size() == 16);

  const fs::path bj = bench_tmp("cli_batches.json");
  const auto b =
      testing::run_attn_capture({"bench", "batches", "--out", bj.string(), "--tokens", "2000",
                                 "--seed", "5", "--count", "3", "--src-vocab", "77"});
  INFO(b.err);
  REQUIRE(b.exit_code() == 0);
  const BatchFile f = read_batch_file(bj.string());
  CHECK(f.vocab == 77);
  CHECK(f.max_tokens == 2000);
  CHECK(f.batches.size() == 3);
  BatchGenOptions o;
  o.max_tokens = 2000;
  o.seed = 5;
  o.count = 3;
  o.vocab = 77;
  CHECK(f == generate_batches(o));

  const auto bad = testing::run_attn_capture({"bench", "kernels", "--device", "cuda:7"});
  CHECK(bad.exit_code() == 1);
  CHECK_THAT(bad.err, Contains("cuda:7"));
}

namespace {
// bench train of a tiny model on `count` in-memory batches of <= 64 tokens: 2 timed steps
// after 1.
TrainBenchOptions tiny_bench(int64_t count) {
  TrainBenchOptions o;
  o.model = testing::tiny_transformer_config(24, 24);
  BatchGenOptions g;
  g.max_tokens = 64;
  g.count = count;
  g.vocab = 24;
  o.batches = generate_batches(g);
  o.steps = 2;
  o.warmup = 1;
  return o;
}
}  // namespace

TEST_CASE("bench train runs StepEngine steps of a tiny model on the CPU", "[bench]") {
  TrainBenchOptions o = tiny_bench(3);
  o.lr = 1e-3;
  const TrainBenchResult r = run_train_bench(o);
  CHECK(r.steps == 2);
  REQUIRE(r.step_ms.size() == 2);
  for (double ms : r.step_ms) CHECK(ms > 0);
  CHECK(r.step_ms_median > 0);
  CHECK(r.tokens_per_s > 0);
  CHECK(r.tgt_tokens_per_step > 0);
  CHECK(r.peak_mem_bytes > 0);
  CHECK(r.flops_per_step >= r.useful_flops_per_step);
  CHECK(r.useful_flops_per_step > 0);
  CHECK(std::isfinite(r.last_loss));
  CHECK(r.last_loss > 0);
  CHECK(r.skipped_steps == 0);
  CHECK(r.precision == "fp32");
  CHECK(r.device == "cpu");
  Generator gen(1);
  nn::TransformerConfig mc = o.model;
  CHECK(r.params == nn::Transformer(mc, gen).parameter_count());
  const json j = to_json(r);
  for (const char* key : {"tokens_per_s", "step_ms_median", "peak_mem_bytes", "steps", "precision",
                          "device", "params", "flops_per_step"})
    CHECK(j.contains(key));

  CHECK(r.profile.empty());  // only with --profile

  o.step.compute_dtype = kBF16;
  CHECK_THAT(testing::error_of([&] { run_train_bench(o); }), Contains("needs a CUDA device"));
}

TEST_CASE("bench train --profile times every op's kernels over the timed steps", "[bench]") {
  TrainBenchOptions o = tiny_bench(2);
  o.profile = true;
  const TrainBenchResult r = run_train_bench(o);
  CHECK_FALSE(profile::enabled());  // off again after the run
  std::map<std::string, profile::Entry> by_op;
  double kernels_s = 0;
  for (const profile::Entry& e : r.profile) {
    by_op[e.name] = e;
    kernels_s += e.seconds;
  }
  // The step's kernels are there, counted per timed step (not the warm-up).
  for (const char* op : {"linear", "attention", "attention_backward", "layer_norm",
                         "layer_norm_backward", "cross_entropy", "cross_entropy_backward",
                         "adam_step", "embedding"})
    CHECK(by_op.count(op) == 1);
  REQUIRE(by_op.count("cross_entropy") == 1);
  CHECK(by_op["cross_entropy"].calls == 2);
  double total_ms = 0;
  for (double ms : r.step_ms) total_ms += ms;
  CHECK(kernels_s * 1e3 <= total_ms);
  const std::string text = format_train_result(r);
  CHECK_THAT(text, Contains("attention_backward") && Contains("(outside kernels)"));
  CHECK(to_json(r)["profile"].size() == r.profile.size());

  o.device = Device::cuda(0);
  CHECK_THAT(testing::error_of([&] { run_train_bench(o); }), Contains("CPU kernels only"));
}

TEST_CASE("attn bench train reads a config and a batch file", "[bench]") {
  const fs::path cfg = bench_tmp("tiny.yaml");
  std::ofstream(cfg)
      << "model:\n  d_model: 16\n  heads: 2\n  d_ff: 32\n  encoder_layers: 1\n"
         "  decoder_layers: 1\ndata:\n  synthetic: copy\n  max_tokens: 64\n  max_len: 32\n"
         "train:\n  device: cpu\n";
  const fs::path bj = bench_tmp("train_batches.json");
  BatchGenOptions g;
  g.max_tokens = 64;
  g.count = 2;
  g.vocab = 30;
  write_batch_file(bj.string(), generate_batches(g));
  const fs::path out = bench_tmp("train.json");
  const auto r =
      testing::run_attn_capture({"bench", "train", "-c", cfg.string(), "--batches", bj.string(),
                                 "--steps", "2", "--warmup", "0", "--json", out.string()});
  INFO(r.err);
  REQUIRE(r.exit_code() == 0);
  CHECK_THAT(r.out, Contains("target tokens/s"));
  std::ifstream f(out);
  const json j = json::parse(f);
  CHECK(j.at("steps") == 2);
  CHECK(j.at("precision") == "fp32");
  CHECK(j.at("model").at("vocab") == 30);
  CHECK(j.at("tokens_per_s").get<double>() > 0);
}

TEST_CASE("bench train builds its step from the config as attn train does", "[bench][config]") {
  train::Config c = train::parse_config(
      "data:\n  synthetic: copy\ntrain:\n  device: cpu\n  label_smoothing: 0.2\n"
      "  clip_norm: 0.5\n  loss_scale: dynamic\n  loss_scale_init: 512\n  loss_scale_window: 7\n"
      "  loss_scale_min: 2\n  adam_beta2: 0.99\n  weight_decay: 0.01\n  bucket_mb: 2\n"
      "  overlap_allreduce: false\n  allow_tf32: true\n",
      "cfg.yaml");
  TrainBenchFlags flags;
  flags.count = 1;
  flags.vocab = 16;
  const TrainBenchOptions o = train_bench_options(c, flags);
  const train::StepOptions so = train::step_options(c, Device::cpu());
  CHECK(o.step.compute_dtype == kF32);
  CHECK(o.step.compute_dtype == so.compute_dtype);
  CHECK(o.step.label_smoothing == 0.2);
  CHECK(o.step.clip_norm == 0.5);
  CHECK(o.step.loss_scale.enabled);
  CHECK(o.step.loss_scale.init == 512);
  CHECK(o.step.loss_scale.growth_interval == 7);
  CHECK(o.step.loss_scale.min_scale == 2);
  CHECK(o.step.bucket_bytes == 2 << 20);
  CHECK_FALSE(o.step.overlap_allreduce);
  CHECK(o.step.allow_tf32);
  CHECK(o.adam.beta2 == 0.99);
  CHECK(o.adam.weight_decay == 0.01);
  // --precision replaces train.precision and is checked by the same rule.
  flags.precision = "bf16";
  CHECK_THAT(testing::error_of([&] { train_bench_options(c, flags); }),
             Contains("train.precision is bf16") && Contains("needs a CUDA device"));
  flags.precision = "fp8";
  CHECK_THAT(testing::error_of([&] { train_bench_options(c, flags); }),
             Contains("train.precision must be auto, fp32, bf16 or fp16"));
}
