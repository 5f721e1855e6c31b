// Mixed-precision plumbing that runs on the CPU: the precision setting, dynamic loss scaling
// (overflow skips the step and lowers the scale, clean steps raise it, the scale is part of
// the checkpoint, overflowing at the minimum stops the run with its last good checkpoint) and
// the module compute dtype. The 16-bit kernels themselves are covered by the cuda tests.
//
// Real overflows on the CPU: with fp32 and a loss scale beyond FLT_MAX times the token count
// the scaled gradients become inf, exactly what fp16 does past 65504.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/functions.h"
#include "data/batcher.h"
#include "data/synthetic.h"
#include "dist/communicator.h"
#include "core/grad_mode.h"
#include "nn/layers.h"
#include "nn/transformer.h"
#include "optim/adam.h"
#include "test_util.h"
#include "train/config.h"
#include "train/step.h"
#include "train/trainer.h"

using namespace attn;
using namespace attn::train;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) {
  return attn::testing::scratch_path("precision", name);
}

Config copy_config(const fs::path& out, std::vector<std::string> extra) {
  std::vector<std::string> o = {"train.log_every=1", "train.valid_every=1000",
                                "train.save_every=1000", "data.synthetic_train_size=200"};
  o.insert(o.end(), extra.begin(), extra.end());
  return attn::testing::copy_task_config(out, o);
}

struct Fixture {
  Generator gen{7};
  nn::Transformer model{attn::testing::tiny_transformer_config(16, 16), gen};
  optim::Adam adam{model.named_parameters(), optim::AdamOptions{}};
  dist::SingleCommunicator comm;
  std::vector<data::Batch> batches;
  Fixture() {
    model.eval();  // no dropout: two fixtures must compute the same thing
    data::Dataset d = data::make_synthetic("copy", 8, 16, 2, 6, 3);
    std::vector<int64_t> idx = {0, 1, 2, 3, 4, 5, 6, 7};
    batches.push_back(data::collate(d, idx, data::BatcherOptions{}));
  }
  std::vector<std::vector<double>> weights() const {
    std::vector<std::vector<double>> w;
    for (const Tensor& p : model.parameters()) w.push_back(p.to_double_vector());
    return w;
  }
};

}  // namespace

TEST_CASE("train.precision: auto is fp32 on the CPU, 16-bit types need CUDA", "[precision]") {
  const fs::path out = scratch("cpu16");
  const std::string err = attn::testing::error_of([&] {
    train::train(copy_config(out, {"train.device=cpu", "train.precision=bf16", "train.max_steps=1"}));
  });
  CHECK_THAT(err, Contains("train.precision is bf16") && Contains("CUDA device"));
  CHECK_THAT(attn::testing::error_of([&] {
               load_config(std::string(ATTN_SOURCE_DIR) + "/configs/copy.yaml",
                           {"train.precision=fp8"});
             }),
             Contains("train.precision must be auto, fp32, bf16 or fp16"));
  CHECK_THAT(attn::testing::error_of([&] {
               load_config(std::string(ATTN_SOURCE_DIR) + "/configs/copy.yaml",
                           {"train.loss_scale_min=10", "train.loss_scale_init=1"});
             }),
             Contains("train.loss_scale_min"));
  TrainResult r = train::train(copy_config(out, {"train.device=cpu", "train.max_steps=2"}));
  CHECK(r.step == 2);
  std::ifstream log(out / "train.log");
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  CHECK_THAT(text, Contains("precision: f32 compute on cpu"));
}

TEST_CASE("dynamic loss scaling: overflow skips the step and halves the scale", "[precision]") {
  Fixture f;
  StepOptions o;
  o.loss_scale.enabled = true;
  o.loss_scale.init = 0x1p140;  // / tokens still beyond FLT_MAX: the gradients overflow f32
  o.loss_scale.growth_interval = 3;
  o.loss_scale.min_scale = 1.0;
  StepEngine engine(f.model, f.adam, f.comm, o);
  const auto before = f.weights();
  StepResult r = engine.step(f.batches, 1e-3);
  CHECK(r.skipped);
  CHECK(r.loss_scale == 0x1p140);
  CHECK(engine.loss_scale() == 0x1p139);
  CHECK(f.weights() == before);           // nothing changed
  CHECK(f.adam.step_count() == 0);        // Adam did not count the step
  for (const Tensor& p : f.model.parameters()) CHECK_FALSE(p.grad().defined());
  int skipped = 1;
  while (engine.step(f.batches, 1e-3).skipped) ++skipped;
  CHECK(skipped < 40);
  CHECK(f.weights() != before);
  CHECK(f.adam.step_count() == 1);
  // Growth: after growth_interval clean steps in a row the scale doubles.
  const double s = engine.loss_scale();
  REQUIRE(engine.clean_steps() == 1);
  bool overflowed = false;
  for (int i = 0; i < 2; ++i) overflowed |= engine.step(f.batches, 1e-3).skipped;
  // Two more clean steps complete the interval of 3 and double the scale; an overflow instead
  // halves it and restarts the count.
  CHECK((overflowed ? engine.loss_scale() <= s / 2 : engine.loss_scale() == 2 * s));
}

TEST_CASE("a loss-scaled step equals the unscaled step", "[precision]") {
  // Scales are powers of two, so scaling and unscaling are exact in binary floating point.
  Fixture a, b;
  StepOptions plain;
  StepOptions scaled;
  scaled.loss_scale.enabled = true;
  scaled.loss_scale.init = 1024;
  StepEngine ea(a.model, a.adam, a.comm, plain), eb(b.model, b.adam, b.comm, scaled);
  for (int i = 0; i < 3; ++i) {
    StepResult ra = ea.step(a.batches, 1e-3), rb = eb.step(b.batches, 1e-3);
    CHECK(ra.loss == rb.loss);
    CHECK(ra.grad_norm == Approx(rb.grad_norm).epsilon(1e-6));
  }
  const auto wa = a.weights(), wb = b.weights();
  REQUIRE(wa.size() == wb.size());
  for (size_t i = 0; i < wa.size(); ++i)
    for (size_t j = 0; j < wa[i].size(); ++j) REQUIRE(wa[i][j] == Approx(wb[i][j]).margin(1e-6));
}

TEST_CASE("overflowing at the minimum loss scale stops the run; its checkpoint stays",
          "[precision]") {
  Fixture f;
  StepOptions o;
  o.loss_scale.enabled = true;
  o.loss_scale.init = 0x1p140;
  o.loss_scale.min_scale = 0x1p139;
  StepEngine engine(f.model, f.adam, f.comm, o);
  CHECK(engine.step(f.batches, 1e-3).skipped);
  CHECK_THROWS_AS(engine.step(f.batches, 1e-3), LossScaleError);

  // Through the trainer: a good run leaves a checkpoint, the overflowing resume names it.
  const fs::path out = scratch("minscale");
  train::train(copy_config(out, {"train.max_steps=2", "train.save_every=2"}));
  const std::string err = attn::testing::error_of([&] {
    train::train(copy_config(out, {"train.max_steps=20", "train.loss_scale=dynamic",
                                   "train.loss_scale_init=1e45", "train.loss_scale_min=1e44"}));
  });
  CHECK_THAT(err, Contains("minimum loss scale") && Contains("step-00000002"));
  CHECK(fs::exists(out / "checkpoints" / "latest" / "model.safetensors"));
}

TEST_CASE("the loss scale is saved in the checkpoint and restored", "[precision]") {
  const fs::path out = scratch("resume");
  const std::vector<std::string> o = {"train.loss_scale=dynamic", "train.loss_scale_init=2e41",
                                      "train.save_every=3"};
  auto with_steps = [&](const char* n) {
    auto v = o;
    v.push_back(std::string("train.max_steps=") + n);
    return v;
  };
  train::train(copy_config(out, with_steps("3")));
  std::ifstream in(out / "checkpoints" / "latest" / "trainer_state.json");
  const auto state = nlohmann::json::parse(in);
  const double saved = state.at("loss_scale").at("scale").get<double>();
  CHECK(saved < 2e41);  // overflows lowered it
  // Resuming continues from the saved scale, not from loss_scale_init: one more step leaves
  // it as it was (clean step) or halves it (overflow); a restart from 2e41 would not.
  train::train(copy_config(out, with_steps("4")));
  std::ifstream in2(out / "checkpoints" / "latest" / "trainer_state.json");
  const auto state2 = nlohmann::json::parse(in2);
  const double after = state2.at("loss_scale").at("scale").get<double>();
  CHECK((after == saved || after == saved / 2));
}

TEST_CASE("16-bit parameter casts are reused in eval mode without grad, never in training",
          "[precision]") {
  Generator gen(3);
  nn::Linear lin(4, 3, true, gen);
  lin.set_compute_dtype(kBF16);
  const Tensor w = lin.weight();
  {
    NoGradGuard no_grad;
    lin.eval();
    const Tensor a = lin.compute(w), b = lin.compute(w);
    CHECK(a.dtype() == kBF16);
    CHECK(a.raw_data() == b.raw_data());  // one cast for the whole eval scope
    CHECK(a.to(kF32).to_double_vector() == w.to(kBF16).to(kF32).to_double_vector());
    lin.train();
    lin.eval();  // a mode change (an optimizer step may have happened) drops the cache
    CHECK(lin.compute(w).raw_data() != a.raw_data());
  }
  lin.train();
  const Tensor t1 = lin.compute(w), t2 = lin.compute(w);
  CHECK(t1.raw_data() != t2.raw_data());  // training: a recorded cast per use
  CHECK(t1.requires_grad());
}
