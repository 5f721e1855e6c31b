#include "train/trainer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/device.h"
#include "core/file.h"
#include "dist/communicator.h"
#include "dist/launch.h"
#include "io/safetensors.h"
#include "nn/transformer.h"
#include "optim/adam.h"
#include "optim/schedule.h"
#include "train/average.h"
#include "train/fault_injection.h"
#include "train/model_config.h"
#include "train/resume.h"
#include "train/run_log.h"
#include "train/step.h"
#include "train/step_config.h"
#include "train/stop.h"
#include "train/training_data.h"
#include "train/validation.h"

namespace attn::train {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// The training loop, assembled from its parts: RunLog (logging, metrics.jsonl), RunCheckpoints
// (checkpoints, where to resume), TrainingData (vocabulary, data, batches), StepEngine (one
// update, step_config.h), validate_model + EarlyStopping (validation, the best checkpoint) and
// StopControl (signals, train.max_time). The Trainer wires them together, moves the state
// between them and a checkpoint (TrainerState), and runs the loop.
class Trainer {
 public:
  Trainer(const Config& config, const TrainFlags& flags)
      : cfg_(config),
        flags_(flags),
        launch_(dist::detect_launch()),
        main_(launch_.rank == 0),
        log_(cfg_.train.output_dir, main_, launch_.rank),
        stop_(parse_duration(cfg_.train.max_time, "train.max_time")),
        early_(cfg_.train.best_metric, cfg_.train.patience) {}

  TrainResult run() {
    set_up();
    return loop();
  }

 private:
  // ---- set-up ----
  void set_up() {
    device_ = resolve_device(cfg_.train.device, launch_.local_rank, "train.device");
    if (cfg_.train.device == "auto" && device_.is_cpu())
      log_->info("train.device auto: {}; training on the CPU",
                 cuda_built() ? "no CUDA device is visible" : "attn was built without CUDA");
    comm_ = dist::make_communicator(device_, launch_);
    if (comm_->world_size() > 1) {
      log_->info(
          "data parallel: {} ranks ({} backend, launched by {}); data.max_tokens {} per "
          "rank, {} per step",
          comm_->world_size(), comm_->backend(), launch_.launcher, cfg_.data.max_tokens,
          cfg_.data.max_tokens * comm_->world_size());
    }
    checkpoints_ = std::make_unique<RunCheckpoints>(cfg_, flags_.fresh, *comm_, main_, log_.log());
    std::optional<LoadedCheckpoint> ck = checkpoints_->find_resumable();
    const std::string& init = cfg_.train.init_weights;
    std::optional<io::SafetensorsFile> init_file;  // read before the data: fail early
    if (!ck && !init.empty()) init_file = read_init_weights(init);
    data_ = load_training_data(cfg_, ck ? &ck->spm_model : nullptr, comm_->rank(),
                               comm_->world_size(), log_.log());
    set_up_model();
    if (ck) {
      restore(*ck);
      if (!init.empty()) log_->info("train.init_weights ignored: resuming from {}", ck->path);
    } else if (init_file) {
      try {
        model_->load_parameters(init_file->tensors);
      } catch (const Error& e) {
        ATTN_FAIL("train.init_weights: ", init, ": ", e.what());
      }
      log_->info("initial weights from {} (train.init_weights)", init);
    }
    if (main_ && !flags_.dump_batches.empty()) {
      dump_.open(flags_.dump_batches, std::ios::trunc);
      ATTN_CHECK(dump_.good(), "--dump-batches: cannot write '", flags_.dump_batches, "'");
    }
    if (comm_->world_size() > 1) {
      // Identical by construction (same seed, same checkpoint); the broadcast makes it so.
      for (Tensor p : model_->parameters()) comm_->broadcast(p, 0);
    }
    write_file((fs::path(cfg_.train.output_dir) / "config.yaml").string(), to_yaml(cfg_),
               "resolved config", {.atomic = true, .sync = true});
    log_->info(
        "model: {} parameters ({} encoder + {} decoder layers, d_model {}, {} heads, "
        "d_ff {}, vocabulary {}{})",
        model_->parameter_count(), cfg_.model.encoder_layers, cfg_.model.decoder_layers,
        cfg_.model.d_model, cfg_.model.heads, cfg_.model.d_ff, data_.vocab_size,
        cfg_.model.share_embeddings ? ", shared embeddings" : "");
    log_->info(
        "data: {} training pairs in {} batches of <= {} tokens per epoch, {} validation "
        "pairs",
        data_.train.size(), data_.batcher->batches_per_epoch(), cfg_.data.max_tokens,
        data_.valid.size());
  }

  void set_up_model() {
    nn::TransformerConfig mc = transformer_config(cfg_, data_.vocab_size);
    mc.validate();
    check_attention_device(cfg_, device_);
    Generator init_gen(cfg_.train.seed);
    model_ = std::make_unique<nn::Transformer>(mc, init_gen);
    model_->set_dropout_generator(&dropout_gen_);
    model_->to_device(device_);
    adam_ = std::make_unique<optim::Adam>(model_->named_parameters(), adam_options(cfg_));
    const StepOptions so = step_options(cfg_, device_);
    loss_scaling_ = so.loss_scale.enabled;
    engine_ = std::make_unique<StepEngine>(*model_, *adam_, *comm_, so);
    if (mc.attention != ops::AttentionBackend::fused)
      log_->info("attention: {}", ops::attention_backend_description(mc.attention));
    log_->info("precision: {} compute on {}, fp32 master weights{}", dtype_name(so.compute_dtype),
               device_.str(), loss_scaling_ ? fmt::format(", dynamic loss scaling from {}",
                                                          so.loss_scale.init)
                                            : std::string());
    sched_.kind = cfg_.train.lr_schedule;
    sched_.factor = cfg_.train.lr_factor;
    sched_.warmup = cfg_.train.warmup_steps;
    sched_.peak_lr = cfg_.train.lr;
    sched_.d_model = cfg_.model.d_model;
    optim::validate(sched_);
  }

  static io::SafetensorsFile read_init_weights(const std::string& path) {
    try {
      return io::load_safetensors(path);
    } catch (const Error& e) {
      ATTN_FAIL("train.init_weights: ", e.what());
    }
  }

  // ---- the state a checkpoint carries ----
  void restore(const LoadedCheckpoint& ck) {
    try {
      model_->load_parameters(ck.model);
      const TrainerState& s = ck.state;
      step_ = s.step;
      data_.batcher->restore({s.batcher_epoch, s.batcher_position});
      if (s.best_metric == cfg_.train.best_metric && s.best_value) {
        early_.restore(s.best_value, s.bad_validations);
      } else if (s.best_value) {
        log_->info("train.best_metric changed from {} to {}: the best score starts afresh",
                   s.best_metric, cfg_.train.best_metric);
      }
      stop_.set_elapsed_before(s.elapsed_seconds);
      if (flags_.reset_optimizer) {
        sched_offset_ = step_;
        log_->info(
            "--reset-optimizer: Adam state and the learning-rate schedule restart at "
            "step {}",
            step_);
      } else {
        adam_->load_state(ck.optimizer, s.adam_step);
        if (loss_scaling_ && s.loss_scale)
          engine_->set_loss_scale(s.loss_scale->scale, s.loss_scale->clean_steps);
        sched_offset_ = s.schedule_offset;
      }
    } catch (const Error& e) {
      ATTN_FAIL("cannot resume from ", ck.path, ": ", e.what());
    }
    last_saved_step_ = step_;
  }

  TrainerState state() const {
    TrainerState s;
    const data::Batcher::State bs = data_.batcher->state();
    s.step = step_;
    s.batcher_epoch = bs.epoch;
    s.batcher_position = bs.position;
    s.adam_step = adam_->step_count();
    s.schedule_offset = sched_offset_;
    s.lr = lr_;
    s.best_metric = early_.metric();
    s.best_value = early_.best();
    s.bad_validations = early_.bad_validations();
    if (loss_scaling_) s.loss_scale = {engine_->loss_scale(), engine_->clean_steps()};
    s.elapsed_seconds = stop_.elapsed();
    s.finished = done();
    return s;
  }

  void save(bool is_best, TrainResult& result) {
    last_saved_step_ = step_;
    if (!main_) return;  // rank 0 writes; every rank holds the same state
    CheckpointData d;
    d.model = model_->named_parameters();
    d.optimizer = adam_->state_tensors();
    d.state = state();
    d.config_yaml = to_yaml(cfg_);
    if (data_.vocab.loaded()) d.spm_model = data_.vocab.serialized();
    result.last_checkpoint = checkpoints_->manager().save(step_, d, is_best);
    log_->info("saved checkpoint {}{}", result.last_checkpoint, is_best ? " (best)" : "");
  }

  // ---- the loop ----
  TrainResult loop() {
    TrainResult result;
    const auto& t = cfg_.train;
    // A resumed run may already have used its train.max_time; a signal received during set-up
    // stays pending for the first step.
    if (const int sig = stop_.agree_after_step(*comm_)) request_stop(sig);
    if (done()) {
      log_->info("already trained to step {} (train.max_steps = {}{}); nothing to do", step_,
                 t.max_steps, stop_.time_up() ? ", train.max_time reached"
                              : early_.stop() ? ", stopped early"
                                              : "");
      result.step = step_;
      result.finished = true;
      result.last_checkpoint = checkpoints_->manager().latest().value_or("");
      return result;
    }
    stop_.start_clock();
    const int64_t first_step = step_;
    TrainWindow w;
    while (!done()) {
      w.add(train_step());
      ++step_;
      const int stop_signal = stop_.agree_after_step(*comm_);
      log_.progress(step_, t.max_steps, w.tokens > 0 ? w.loss / w.tokens : 0.0);
      if (t.check_replicas_every > 0 && step_ % t.check_replicas_every == 0)
        dist::check_replicas_identical(*comm_, model_->named_parameters());
      if (step_ % t.log_every == 0) log_window(w, first_step);
      bool is_best = false;
      bool end = done();
      if (step_ % t.valid_every == 0 || end) {
        is_best = validate(result);
        end = done();  // early stopping is decided by the validation
      }
      if (step_ % t.save_every == 0 || end || is_best) save(is_best, result);
      if (stop_signal != 0 && !end) {
        if (last_saved_step_ != step_) save(false, result);
        log_->info("stopped by signal {} at step {}; checkpoint saved; run the same command "
                   "to resume", stop_signal, step_);
        result.stop_signal = stop_signal;
        break;
      }
    }
    result.step = step_;
    result.finished = done();
    if (result.finished) finish(result);
    return result;
  }

  // How much of the run is done before the next update: by steps, or by train.max_time when
  // that is set and further along (rank 0's clock, agreed after every step).
  double progress() const {
    const auto& t = cfg_.train;
    double p = static_cast<double>(step_) / static_cast<double>(t.max_steps);
    if (stop_.max_time() > 0) p = std::max(p, stop_.agreed_elapsed() / stop_.max_time());
    return p;
  }

  bool done() const {
    if (step_ >= cfg_.train.max_steps || early_.stop() || stop_.time_up()) return true;
    return cfg_.train.max_epochs > 0 && data_.batcher->epoch() >= cfg_.train.max_epochs;
  }

  void finish(TrainResult& result) {
    const auto& t = cfg_.train;
    if (early_.stop()) {
      log_->info("stopped early at step {}: valid {} did not improve in {} validations", step_,
                 t.best_metric, t.patience);
    } else if (stop_.time_up()) {
      log_->info("stopped at step {}: train.max_time ({}) reached", step_, t.max_time);
    } else {
      log_->info("finished at step {}", step_);
    }
    if (t.average_last > 0 && main_) {
      const auto& ckdir = checkpoints_->manager().dir();
      const auto paths = last_checkpoints(ckdir, t.average_last);
      const std::string out = (fs::path(ckdir) / "averaged").string();
      average_checkpoints(paths, out);
      log_->info("averaged the last {} checkpoints into {}", paths.size(), out);
      result.averaged_checkpoint = out;
    }
  }

  StepResult train_step() {
    inject_fault(fault_, step_ + 1, comm_->rank());  // test only (ATTN_FAULT_INJECT)
    model_->train();
    // Dropout masks are a function of (seed, rank, step): nothing to checkpoint, and every
    // rank draws different masks.
    dropout_gen_.set_state(
        cfg_.train.seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull * (comm_->rank() + 1),
        static_cast<uint64_t>(step_) << 32);
    std::vector<data::Batch> batches;
    for (int64_t k = 0; k < cfg_.train.update_freq; ++k) batches.push_back(data_.batcher->next());
    lr_ = optim::learning_rate(sched_, step_ + 1 - sched_offset_) *
          optim::cooldown_factor(cfg_.train.cooldown, progress());
    if (dump_.is_open()) dump_step(batches);
    StepResult r;
    try {
      r = engine_->step(batches, lr_);
    } catch (const LossScaleError& e) {
      throw LossScaleError(detail::str_cat("training stopped at step ", step_ + 1, ": ", e.what(),
                                           "; the last good checkpoint is ",
                                           checkpoints_->latest_or_none()));
    }
    if (r.skipped && !loss_scaling_) {
      ATTN_FAIL("training diverged at step ", step_ + 1, ": the gradient norm is ", r.grad_norm,
                "; the last good checkpoint is ", checkpoints_->latest_or_none(),
                " (try a lower learning rate or train.clip_norm)");
    }
    if (r.skipped) {
      log_.clear_progress();
      log_->warn("step {}: gradient overflow at loss scale {}; step skipped, loss scale now {}",
                 step_ + 1, r.loss_scale, engine_->loss_scale());
    }
    return r;
  }

  // One --dump-batches line: the step's padded batches as nested lists, and its lr.
  void dump_step(const std::vector<data::Batch>& batches) {
    auto rows = [](const Tensor& t) {
      const std::vector<int32_t> v = t.to_int_vector();
      json out = json::array();
      const int64_t width = t.dim() == 2 ? t.size(1) : 1;
      for (size_t i = 0; i < v.size(); i += static_cast<size_t>(width))
        out.push_back(std::vector<int32_t>(v.begin() + static_cast<int64_t>(i),
                                           v.begin() + static_cast<int64_t>(i) + width));
      return out;
    };
    json bs = json::array();
    for (const data::Batch& b : batches) {
      bs.push_back({{"src", rows(b.src)},
                    {"src_lengths", b.src_lengths.to_int_vector()},
                    {"tgt_in", rows(b.tgt_in)},
                    {"tgt_out", rows(b.tgt_out)}});
    }
    append_json_line(dump_, json{{"step", step_ + 1}, {"lr", lr_}, {"batches", std::move(bs)}},
                     flags_.dump_batches);
  }

  void log_window(TrainWindow& w, int64_t first_step) {
    if (comm_->world_size() > 1) {
      const auto r = comm_->all_reduce_host({w.loss, w.nll, w.correct, w.tokens});
      w.loss = r[0];
      w.nll = r[1];
      w.correct = r[2];
      w.tokens = r[3];
    }
    const auto& t = cfg_.train;
    const double per_step = stop_.run_seconds() / static_cast<double>(step_ - first_step);
    double eta = per_step * static_cast<double>(t.max_steps - step_);
    if (stop_.max_time() > 0) eta = std::min(eta, stop_.max_time() - stop_.elapsed());
    log_.train_line(w, {.step = step_,
                        .max_steps = t.max_steps,
                        .lr = lr_,
                        .epoch = data_.batcher->epoch(),
                        .elapsed_s = stop_.elapsed(),
                        .eta_s = eta});
    w = TrainWindow();
  }

  // Returns true when this validation is the best so far.
  bool validate(TrainResult& result) {
    log_.clear_progress();
    const ValidationSet set{&data_.valid_batches, &data_.valid, &data_.vocab, data_.vocab_size};
    const ValidScores v = validate_model(*model_, device_, set, cfg_);
    if (v.tokens == 0) return false;
    const bool best = early_.update(cfg_.train.best_metric == "bleu" ? *v.bleu : v.loss);
    json record = {{"type", "valid"}, {"step", step_},           {"loss", v.loss},
                   {"nll", v.nll},    {"ppl", std::exp(v.nll)},  {"accuracy", v.accuracy}};
    if (v.bleu) record["bleu"] = *v.bleu;
    record["best"] = best;
    log_->info("valid at step {} | loss {:.4f} | nll {:.4f} | ppl {:.2f} | acc {:.2f}%{}{}", step_,
               v.loss, v.nll, std::exp(v.nll), 100 * v.accuracy,
               v.bleu ? fmt::format(" | bleu {:.2f}", *v.bleu) : std::string(),
               best ? " | best" : "");
    log_.record(record);
    result.last_valid_loss = v.loss;
    result.last_valid_accuracy = v.accuracy;
    if (v.bleu) result.last_valid_bleu = *v.bleu;
    return best;
  }

  // Set in the constructor, in this order.
  const Config cfg_;
  const TrainFlags flags_;
  const dist::LaunchInfo launch_;
  const bool main_;  // rank 0: logs, metrics, checkpoints
  RunLog log_;
  StopControl stop_;
  EarlyStopping early_;
  const FaultInjection fault_ = fault_injection_from_env();
  // Set up by set_up().
  Device device_;
  std::unique_ptr<dist::Communicator> comm_;
  std::unique_ptr<RunCheckpoints> checkpoints_;
  TrainingData data_;
  std::unique_ptr<nn::Transformer> model_;
  Generator dropout_gen_;
  std::unique_ptr<optim::Adam> adam_;
  std::unique_ptr<StepEngine> engine_;
  bool loss_scaling_ = false;
  optim::ScheduleOptions sched_;
  std::ofstream dump_;  // --dump-batches
  // The loop's position.
  int64_t sched_offset_ = 0;
  int64_t step_ = 0;
  int64_t last_saved_step_ = -1;
  double lr_ = 0;
};

}  // namespace

TrainResult train(const Config& config, const TrainFlags& flags) {
  validate(config);
  Trainer trainer(config, flags);
  return trainer.run();
}

}  // namespace attn::train
