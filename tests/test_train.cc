// The trainer end to end on the CPU: learning the copy task, exact resume, crash safety of
// checkpoints, signals, and one test per class of bad input.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "data/batcher.h"
#include "data/synthetic.h"
#include "io/safetensors.h"
#include "nn/greedy.h"
#include "nn/transformer.h"
#include "optim/schedule.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/model_config.h"
#include "train/trainer.h"

using namespace attn;
using namespace attn::train;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) { return attn::testing::scratch_path("train", name); }

Config copy_config(const fs::path& out, std::vector<std::string> extra = {}) {
  return attn::testing::copy_task_config(out, extra);
}

// One field of every train record of a run's metrics.jsonl, in order.
std::vector<double> train_field(const fs::path& out, const std::string& key) {
  std::ifstream in(out / "metrics.jsonl");
  std::vector<double> v;
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j["type"] == "train") v.push_back(j[key].get<double>());
  }
  return v;
}

std::vector<double> train_losses(const fs::path& out) { return train_field(out, "loss"); }

// Runs the attn binary (stdout and stderr discarded) with extra environment entries; returns
// the wait status, or 0 and the pid in *pid_out without waiting.
int run_attn(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
             pid_t* pid_out = nullptr) {
  const pid_t pid = attn::testing::spawn_attn(args, env, "/dev/null", "/dev/null", "/dev/null");
  if (pid_out) {
    *pid_out = pid;
    return 0;
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

TrainResult do_train(const Config& c, const TrainFlags& f = {}) {
  return attn::train::train(c, f);
}

// The latest checkpoints of two runs hold bitwise the same parameters (f32).
void check_same_weights(const fs::path& one, const fs::path& other) {
  auto a = io::load_safetensors((one / "checkpoints/latest/model.safetensors").string());
  auto b = io::load_safetensors((other / "checkpoints/latest/model.safetensors").string());
  REQUIRE(a.tensors.size() == b.tensors.size());
  for (auto& [name, t] : a.tensors) {
    INFO(name);
    REQUIRE(b.tensors.count(name));
    CHECK(t.to_double_vector() == b.tensors.at(name).to_double_vector());
  }
}

std::string config_path() {
  return std::string(ATTN_SOURCE_DIR) + "/configs/copy.yaml";
}

}  // namespace

TEST_CASE("the copy task is learned on the CPU and greedy decoding reproduces inputs",
          "[train][slow]") {
  const fs::path out = scratch("learn");
  TrainResult r = do_train(copy_config(out));
  CHECK(r.finished);
  CHECK(r.last_valid_accuracy >= 0.99);

  // Held-out sequences (a seed the training data never used), decoded greedily.
  LoadedCheckpoint ck = load_checkpoint((out / "checkpoints" / "best").string());
  Config cfg = copy_config(out);
  nn::TransformerConfig mc = transformer_config(cfg, cfg.data.synthetic_vocab);
  Generator g(1);
  nn::Transformer model(mc, g);
  model.load_parameters(ck.model);
  data::Dataset held_out = data::make_synthetic("copy", 100, 16, 2, 8, 424242);
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < held_out.size(); ++i) idx.push_back(i);
  data::BatcherOptions bo;
  data::Batch b = data::collate(held_out, idx, bo);
  auto hyp = nn::greedy_decode(model, b.src, b.src_lengths, 2, 3, 20);
  int exact = 0;
  for (size_t i = 0; i < hyp.size(); ++i) {
    auto src = held_out.src(b.indices[i]);
    exact += std::vector<int32_t>(src.begin(), src.end()) == hyp[i];
  }
  INFO("exact copies: " << exact << " of " << hyp.size());
  CHECK(exact >= 97);
}

TEST_CASE("resume is exact: N steps equal N/2 + resume + N/2", "[train]") {
  // Dropout on so that the dropout RNG state must be restored too.
  const std::vector<std::string> common = {"model.dropout=0.1", "train.log_every=10",
                                           "train.save_every=20", "train.valid_every=20",
                                           "data.synthetic_train_size=600"};
  auto with = [&](std::vector<std::string> v, const std::string& steps) {
    v.insert(v.end(), common.begin(), common.end());
    v.push_back("train.max_steps=" + steps);
    return v;
  };
  const fs::path straight = scratch("straight"), resumed = scratch("resumed");
  do_train(copy_config(straight, with({}, "60")));
  TrainResult half = do_train(copy_config(resumed, with({}, "30")));
  CHECK(half.step == 30);
  TrainResult rest = do_train(copy_config(resumed, with({}, "60")));
  CHECK(rest.step == 60);

  check_same_weights(straight, resumed);
  CHECK(train_losses(straight) == train_losses(resumed));
  CHECK(train_losses(straight).size() == 6);
}

TEST_CASE("resume is exact under train.cooldown: a crash at step 31 and a rerun equal one run",
          "[train]") {
  // The cooldown's rate depends on the step and max_steps, so the run is resumed with the same
  // config (extending max_steps, as the test above does, would move the cooldown).
  const std::vector<std::string> cfg = {"model.dropout=0.1", "train.cooldown=0.5",
                                        "train.max_steps=60", "train.log_every=10",
                                        "train.save_every=20", "train.valid_every=20",
                                        "data.synthetic_train_size=600"};
  const fs::path straight = scratch("cooldown_straight"), resumed = scratch("cooldown_resumed");
  do_train(copy_config(straight, cfg));
  {
    attn::testing::EnvGuard fault{{"ATTN_FAULT_INJECT", "throw@step:31@rank:0"}};
    CHECK_THROWS_WITH(do_train(copy_config(resumed, cfg)), Contains("throw at step 31"));
  }
  CHECK(load_checkpoint((resumed / "checkpoints/latest").string()).state.step == 20);
  CHECK(do_train(copy_config(resumed, cfg)).step == 60);
  check_same_weights(straight, resumed);
}

TEST_CASE("a run killed during a checkpoint write leaves latest loadable", "[train]") {
  const fs::path out = scratch("killed");
  const std::vector<std::string> args = {"train",
                                         "-c",
                                         config_path(),
                                         "--set",
                                         "train.output_dir=" + out.string(),
                                         "--set",
                                         "train.max_steps=20",
                                         "--set",
                                         "train.save_every=10",
                                         "--set",
                                         "train.valid_every=10"};
  int st = run_attn(args);
  REQUIRE(WIFEXITED(st));
  REQUIRE(WEXITSTATUS(st) == 0);
  auto more = args;
  more[6] = "train.max_steps=40";
  for (const char* point : {"checkpoint_mid_write", "checkpoint_before_link"}) {
    INFO(point);
    st = run_attn(more, {std::string("ATTN_CRASH_POINT=") + point});
    REQUIRE(WIFSIGNALED(st));
    CHECK(WTERMSIG(st) == SIGKILL);
    LoadedCheckpoint ck = load_checkpoint((out / "checkpoints" / "latest").string());
    CHECK(ck.state.step >= 20);
  }
  // Killed at random moments while checkpoints are written every step.
  auto every = more;
  every[8] = "train.save_every=1";
  every[6] = "train.max_steps=100000";
  for (int delay_ms : {150, 400, 700}) {
    pid_t pid;
    run_attn(every, {}, &pid);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ::kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    REQUIRE_NOTHROW(load_checkpoint((out / "checkpoints" / "latest").string()));
  }
  // And the run resumes and finishes.
  auto finish = more;
  finish[6] =
      "train.max_steps=" +
      std::to_string(load_checkpoint((out / "checkpoints" / "latest").string()).state.step + 5);
  st = run_attn(finish);
  REQUIRE(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  for (auto& e : fs::directory_iterator(out / "checkpoints")) CHECK(e.path().extension() != ".tmp");
}

TEST_CASE("SIGTERM saves a checkpoint and exits with 128+15; rerun resumes", "[train]") {
  const fs::path out = scratch("sigterm");
  const std::vector<std::string> args = {"train",
                                         "-c",
                                         config_path(),
                                         "--set",
                                         "train.output_dir=" + out.string(),
                                         "--set",
                                         "train.max_steps=1000000",
                                         "--set",
                                         "train.save_every=100000"};
  pid_t pid;
  run_attn(args, {}, &pid);
  // Wait until training has started (the resolved config is written before the first step).
  for (int i = 0; i < 200 && !fs::exists(out / "config.yaml"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ::kill(pid, SIGTERM);
  int status;
  waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 128 + SIGTERM);
  LoadedCheckpoint ck = load_checkpoint((out / "checkpoints" / "latest").string());
  const int64_t step = ck.state.step;
  CHECK(step > 0);
  TrainResult r = do_train(copy_config(out, {"train.max_steps=" + std::to_string(step + 3)}));
  CHECK(r.step == step + 3);
}

TEST_CASE("bad input gets a one-line error naming what and where", "[train][errors]") {
  SECTION("missing corpus file") {
    const fs::path out = scratch("missing");
    Config c =
        copy_config(out, {"data.synthetic=", "data.train_src=/nonexistent/train.en",
                          "data.train_tgt=/nonexistent/train.de",
                          "data.valid_src=/nonexistent/v.en", "data.valid_tgt=/nonexistent/v.de"});
    REQUIRE_THROWS_WITH(do_train(c), Contains("/nonexistent/train.en"));
  }
  SECTION("corpora of unequal length") {
    const fs::path out = scratch("unequal");
    fs::create_directories(out);
    std::ofstream(out / "a.en") << "one\ntwo\nthree\n";
    std::ofstream(out / "a.de") << "eins\nzwei\n";
    Config c =
        copy_config(out, {"data.synthetic=", "data.train_src=" + (out / "a.en").string(),
                          "data.train_tgt=" + (out / "a.de").string(),
                          "data.valid_src=" + (out / "a.en").string(),
                          "data.valid_tgt=" + (out / "a.de").string(), "data.vocab_size=16"});
    REQUIRE_THROWS_WITH(do_train(c),
                        Contains("differ in length") && Contains("a.en") && Contains("a.de"));
  }
  SECTION("invalid UTF-8") {
    const fs::path out = scratch("utf8");
    fs::create_directories(out);
    std::ofstream(out / "b.en") << "fine\nbad \xC3\x28 byte\n";
    std::ofstream(out / "b.de") << "gut\nschlecht\n";
    Config c = copy_config(out, {"data.synthetic=", "data.train_src=" + (out / "b.en").string(),
                                 "data.train_tgt=" + (out / "b.de").string(),
                                 "data.valid_src=" + (out / "b.en").string(),
                                 "data.valid_tgt=" + (out / "b.de").string()});
    REQUIRE_THROWS_WITH(do_train(c),
                        Contains("invalid UTF-8") && Contains("b.en") && Contains("line 2"));
  }
  SECTION("checkpoint of another architecture") {
    const fs::path out = scratch("arch");
    do_train(copy_config(out, {"train.max_steps=2", "train.valid_every=1"}));
    REQUIRE_THROWS_WITH(
        do_train(copy_config(out, {"train.max_steps=4", "model.d_model=64"})),
        Contains("another architecture") && Contains("model.d_model is 32 in the checkpoint"));
  }
  SECTION("truncated checkpoint") {
    const fs::path out = scratch("trunc");
    do_train(copy_config(out, {"train.max_steps=2", "train.valid_every=1"}));
    // Every checkpoint is damaged (with an intact older one the run would resume from that).
    for (const std::string& ck : step_checkpoints((out / "checkpoints").string())) {
      const fs::path model = fs::path(ck) / "model.safetensors";
      fs::resize_file(model, fs::file_size(model) / 2);
    }
    REQUIRE_THROWS_WITH(
        do_train(copy_config(out, {"train.max_steps=4"})),
        Contains("cannot resume") && Contains("model.safetensors") && Contains("--fresh"));
    // --fresh keeps the damaged checkpoints aside and starts over.
    TrainFlags fresh;
    fresh.fresh = true;
    CHECK(do_train(copy_config(out, {"train.max_steps=2", "train.valid_every=1"}), fresh).step ==
          2);
    bool kept = false;
    for (auto& e : fs::directory_iterator(out))
      kept |= e.path().filename().string().rfind("checkpoints.old-", 0) == 0;
    CHECK(kept);
  }
  SECTION("cuda requested without a usable GPU") {
    const fs::path out = scratch("cuda");
    REQUIRE_THROWS_WITH(do_train(copy_config(out, {"train.device=cuda"})),
                        Contains("train.device is cuda"));
  }
}

TEST_CASE("validation BLEU, early stopping, max_time and checkpoint averaging", "[train]") {
  SECTION("early stopping on a metric that stops improving") {
    // A learning rate too small to change anything: BLEU stays where it is, so after
    // `patience` validations without improvement the run stops.
    const fs::path out = scratch("patience");
    TrainResult r = do_train(
        copy_config(out, {"train.lr=1e-12", "train.valid_metrics=[loss, bleu]",
                          "train.best_metric=bleu", "train.patience=2", "train.valid_every=2",
                          "train.save_every=100", "data.synthetic_valid_size=20"}));
    CHECK(r.finished);
    CHECK(r.step == 6);
    LoadedCheckpoint ck = load_checkpoint((out / "checkpoints" / "latest").string());
    CHECK(ck.state.bad_validations == 2);
    CHECK(ck.state.best_metric == "bleu");
  }
  SECTION("validation BLEU of a learned copy task") {
    const fs::path out = scratch("bleu");
    TrainResult r = do_train(
        copy_config(out, {"train.valid_metrics=[loss, bleu]", "train.best_metric=bleu",
                          "train.max_steps=600", "train.valid_every=600", "train.save_every=600"}));
    CHECK(r.last_valid_bleu > 90.0);
  }
  SECTION("max_time bounds the run") {
    const fs::path out = scratch("maxtime");
    TrainResult r =
        do_train(copy_config(out, {"train.max_steps=100000000", "train.max_time=2s",
                                   "train.valid_every=100000", "train.save_every=100000"}));
    CHECK(r.finished);
    CHECK(r.step < 100000000);
    // Rerunning does not train further: the bound covers the whole run, across resumes.
    TrainResult again =
        do_train(copy_config(out, {"train.max_steps=100000000", "train.max_time=2s",
                                   "train.valid_every=100000", "train.save_every=100000"}));
    CHECK(again.step == r.step);
  }
  SECTION("cooldown: the rate falls linearly to 0 at max_steps, or at max_time") {
    // metrics.jsonl's train records carry each step's rate (log_every 1).
    auto rates = [](const fs::path& out) {
      const std::vector<double> steps = train_field(out, "step"), lrs = train_field(out, "lr");
      std::vector<std::pair<int64_t, double>> v;
      for (size_t i = 0; i < steps.size(); ++i)
        v.emplace_back(static_cast<int64_t>(steps[i]), lrs.at(i));
      return v;
    };
    optim::ScheduleOptions sched;  // configs/copy.yaml's
    sched.kind = "inverse_sqrt";
    sched.peak_lr = 3e-3;
    sched.warmup = 50;
    const fs::path by_steps = scratch("cooldown_steps");
    do_train(copy_config(by_steps, {"train.max_steps=40", "train.cooldown=0.25",
                                    "train.log_every=1", "train.valid_every=40",
                                    "train.save_every=40"}));
    const auto r = rates(by_steps);
    REQUIRE(r.size() == 40);
    for (const auto& [step, lr] : r) {
      INFO("step " << step);
      // Step s is taken with (s - 1) of 40 steps done: full rate to step 31, then 9/10 ... 1/10.
      const double factor = step <= 31 ? 1.0 : (40.0 - static_cast<double>(step - 1)) / 10.0;
      CHECK(lr == Approx(optim::learning_rate(sched, step) * factor).epsilon(1e-9));
    }

    const fs::path by_time = scratch("cooldown_time");
    do_train(copy_config(by_time, {"train.max_steps=100000000", "train.max_time=2s",
                                   "train.cooldown=0.5", "train.log_every=1",
                                   "train.valid_every=100000", "train.save_every=100000"}));
    const auto t = rates(by_time);
    REQUIRE(t.size() >= 10);
    std::vector<double> factors;
    for (const auto& [step, lr] : t) factors.push_back(lr / optim::learning_rate(sched, step));
    CHECK(factors.front() == Approx(1.0));
    for (size_t i = 1; i < factors.size(); ++i) CHECK(factors[i] <= factors[i - 1] + 1e-12);
    // The last step starts less than a step's time before the 2 s: its factor is about
    // (2 s - elapsed) / 1 s, far below 1 and above 0.
    CHECK(factors.back() < 0.5);
    CHECK(factors.back() > 0.0);
  }
  SECTION("average_last writes an averaged checkpoint") {
    const fs::path out = scratch("average");
    TrainResult r = do_train(copy_config(out, {"train.max_steps=30", "train.save_every=10",
                                               "train.keep_last=3", "train.average_last=3"}));
    REQUIRE(!r.averaged_checkpoint.empty());
    LoadedCheckpoint avg = load_checkpoint(r.averaged_checkpoint);
    CHECK(avg.state.averaged_from.size() == 3);
  }
}
