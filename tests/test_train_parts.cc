// The parts of the training loop, each on its own: early stopping, the stop conditions, the
// run log, the training data and the choice of the checkpoint to resume from.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "autograd/functions.h"
#include "data/batcher.h"
#include "data/synthetic.h"
#include "dist/communicator.h"
#include "test_util.h"
#include "train/resume.h"
#include "train/run_log.h"
#include "train/step.h"
#include "train/stop.h"
#include "train/trainer.h"
#include "train/training_data.h"
#include "train/validation.h"

using namespace attn;
using namespace attn::train;
using Catch::Contains;
namespace fs = std::filesystem;

TEST_CASE("EarlyStopping follows the metric's direction and the patience", "[train][parts]") {
  EarlyStopping loss("loss", 2);
  CHECK(loss.update(5.0));
  CHECK_FALSE(loss.update(5.0));  // equal is no improvement
  CHECK_FALSE(loss.stop());
  CHECK(loss.update(4.0));        // an improvement resets the count
  CHECK(loss.bad_validations() == 0);
  CHECK_FALSE(loss.update(4.5));
  CHECK_FALSE(loss.update(4.1));
  CHECK(loss.stop());
  CHECK(*loss.best() == 4.0);

  EarlyStopping bleu("bleu", 0);  // patience 0: never stops
  CHECK(bleu.update(10.0));
  CHECK(bleu.update(12.0));
  for (int i = 0; i < 5; ++i) CHECK_FALSE(bleu.update(11.0));
  CHECK_FALSE(bleu.stop());
  bleu.restore(20.0, 3);
  CHECK_FALSE(bleu.update(19.0));
  CHECK(bleu.bad_validations() == 4);
  CHECK_THROWS_WITH(EarlyStopping("ter", 1), Contains("loss or bleu"));
}

TEST_CASE("StopControl: max_time counts earlier runs, a stop request waits for the step", "[train][parts]") {
  dist::SingleCommunicator comm;
  StopControl none(0);
  CHECK(none.agree_after_step(comm) == 0);
  CHECK_FALSE(none.time_up());
  StopControl resumed(60, 59.99);  // a resume with 10 ms left
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  resumed.agree_after_step(comm);
  CHECK(resumed.time_up());
  CHECK(resumed.elapsed() >= 60);
  StopControl fresh(60);
  fresh.start_clock();
  CHECK(fresh.agree_after_step(comm) == 0);
  CHECK_FALSE(fresh.time_up());
  request_stop(SIGTERM);
  CHECK(fresh.agree_after_step(comm) == SIGTERM);
  CHECK(fresh.agree_after_step(comm) == 0);  // taken once
}

TEST_CASE("RunLog writes train and valid records to metrics.jsonl, rank 0 only", "[train][parts]") {
  const fs::path dir = testing::scratch_path("parts", "runlog");
  fs::remove_all(dir);
  {
    RunLog log(dir.string(), true, 0);
    TrainWindow w;
    StepResult r;
    r.loss = 20;
    r.nll = 10;
    r.correct = 5;
    r.tokens = 10;
    r.grad_norm = 3;
    w.add(r);
    r.skipped = true;
    w.add(r);
    CHECK(w.steps == 1);
    CHECK(w.skipped == 1);
    log.train_line(w, {.step = 2, .max_steps = 9, .lr = 0.5, .epoch = 0, .elapsed_s = 1, .eta_s = 3});
    log.record({{"type", "valid"}, {"step", 2}});
  }
  std::ifstream in(dir / "metrics.jsonl");
  std::string line;
  REQUIRE(std::getline(in, line));
  const auto train = nlohmann::json::parse(line);
  CHECK(train["type"] == "train");
  CHECK(train["loss"] == 2.0);  // 40 / 20 tokens
  CHECK(train["accuracy"] == 0.5);
  CHECK(train["gnorm"] == 3.0);  // over applied steps only
  CHECK(train["lr"] == 0.5);
  REQUIRE(std::getline(in, line));
  CHECK(nlohmann::json::parse(line)["type"] == "valid");
  CHECK(testing::read_text(dir / "train.log").find("step 2/9") != std::string::npos);

  const fs::path other = testing::scratch_path("parts", "runlog_rank1");
  fs::remove_all(other);
  RunLog(other.string(), false, 1).record({{"type", "valid"}});
  CHECK_FALSE(fs::exists(other / "metrics.jsonl"));

  std::ofstream full("/dev/full");
  CHECK_THAT(testing::error_of([&] { append_json_line(full, {{"a", 1}}, "/dev/full"); }),
             Contains("cannot write '/dev/full'"));
  CHECK(format_duration(3723) == "1:02:03");
  CHECK(format_duration(-1) == "?");
}

TEST_CASE("load_training_data builds the batcher and validation batches", "[train][parts]") {
  const fs::path out = testing::scratch_path("parts", "data");
  Config c = testing::copy_task_config(out, {"data.synthetic_train_size=50",
                                             "data.synthetic_valid_size=7"});
  auto log = spdlog::default_logger();
  TrainingData d = load_training_data(c, nullptr, 0, 1, *log);
  CHECK(d.train.size() == 50);
  CHECK(d.valid.size() == 7);
  CHECK(d.vocab_size == c.data.synthetic_vocab);
  CHECK_FALSE(d.vocab.loaded());
  int64_t rows = 0;
  for (const data::Batch& b : d.valid_batches) rows += b.src.size(0);
  CHECK(rows == 7);
  CHECK(d.batcher->batches_per_epoch() > 0);
}

TEST_CASE("RunCheckpoints resumes from the newest intact checkpoint and refuses another architecture", "[train][parts]") {
  const fs::path out = testing::scratch_path("parts", "resume");
  fs::remove_all(out);
  Config c = testing::copy_task_config(out, {"train.max_steps=4", "train.save_every=2"});
  train::train(c);
  dist::SingleCommunicator comm;
  auto log = spdlog::default_logger();
  {
    RunCheckpoints ck(c, false, comm, true, *log);
    const auto found = ck.find_resumable();
    REQUIRE(found);
    CHECK(found->state.step == 4);
  }
  Config wider = c;
  wider.model.d_ff *= 2;
  RunCheckpoints ck(wider, false, comm, true, *log);
  CHECK_THAT(testing::error_of([&] { ck.find_resumable(); }),
             Contains("another architecture") && Contains("model.d_ff"));
  RunCheckpoints fresh(c, true, comm, true, *log);  // --fresh moves them aside
  CHECK_FALSE(fresh.find_resumable());
}

TEST_CASE("StepEngine scores only the target rows: the same loss and gradients as all rows",
          "[parts]") {
  // Sentences of different lengths, so the batch has padded target positions.
  data::Dataset d = data::make_synthetic("copy", 8, 16, 2, 9, 3);
  std::vector<int64_t> idx = {0, 1, 2, 3, 4, 5, 6, 7};
  const data::Batch b = data::collate(d, idx, data::BatcherOptions{});
  const TargetRows rows = target_rows(b.tgt_out, data::kPadId);
  REQUIRE(static_cast<int64_t>(rows.index.size()) == b.tgt_tokens);
  REQUIRE(b.tgt_tokens < b.tgt_out.numel());  // some padding
  const std::vector<int32_t> flat = b.tgt_out.to_int_vector();
  for (size_t i = 0; i < rows.index.size(); ++i)
    CHECK(rows.targets[i] == flat[static_cast<size_t>(rows.index[i])]);

  // Two copies of one model (same seed), without dropout.
  Generator gen_ref(7), gen_m(7);
  nn::Transformer ref(attn::testing::tiny_transformer_config(16, 16), gen_ref);
  nn::Transformer m(attn::testing::tiny_transformer_config(16, 16), gen_m);
  ref.eval();
  m.eval();
  // Reference: logits for every position, the loss ignoring the padded ones.
  CrossEntropyResult ce = cross_entropy(
      reshape(ref.forward(b.src, b.src_lengths, b.tgt_in), {-1, 16}), b.tgt_out.view({-1}), 0.1,
      data::kPadId);
  ce.loss.backward();

  optim::AdamOptions ao;
  optim::Adam adam(m.named_parameters(), ao);
  dist::SingleCommunicator comm;
  StepOptions so;
  so.label_smoothing = 0.1;
  StepEngine engine(m, adam, comm, so);
  const StepResult r = engine.step({b}, 1e-3);
  CHECK(r.loss == Approx(ce.loss.item()).epsilon(1e-5));
  CHECK(r.tokens == static_cast<double>(b.tgt_tokens));
  // The step's gradient is the summed loss's over the tokens (the per-token mean it optimises);
  // the engine reports its global norm (the Adam step then clears the gradients).
  double sq = 0;
  for (const Tensor& p : ref.parameters())
    for (double g : p.grad().to_double_vector()) sq += g * g;
  const double ref_norm = std::sqrt(sq) / static_cast<double>(b.tgt_tokens);
  CHECK(r.grad_norm == Approx(ref_norm).epsilon(1e-5));
}
