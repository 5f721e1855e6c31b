#include "train/trainer.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <new>
#include <nlohmann/json.hpp>
#include <optional>

#include "autograd/functions.h"
#include "core/allocator.h"
#include "core/device.h"
#include "core/file.h"
#include "core/grad_mode.h"
#include "data/batcher.h"
#include "data/corpus.h"
#include "data/dataset.h"
#include "data/synthetic.h"
#include "data/vocab.h"
#include "decode/beam_search.h"
#include "dist/communicator.h"
#include "dist/launch.h"
#include "eval/bleu.h"
#include "io/safetensors.h"
#include "nn/transformer.h"
#include "optim/adam.h"
#include "optim/clip.h"
#include "optim/schedule.h"
#include "train/average.h"
#include "train/checkpoint.h"
#include "train/fault_injection.h"
#include "train/model_config.h"
#include "train/step.h"

namespace attn::train {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::atomic<int> g_stop_signal{0};

extern "C" void on_stop_signal(int sig) {
  g_stop_signal.store(sig);
}

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", static_cast<long long>(t / 3600),
                static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  return buf;
}

// `local_rank`: under mpirun/srun each process on a machine takes its own GPU (cuda and auto;
// an explicit cuda:N is taken as given, for launchers that set CUDA_VISIBLE_DEVICES per rank).
Device resolve_device(const std::string& setting, int local_rank, spdlog::logger& log) {
  if (setting == "cpu") return Device::cpu();
  if (setting == "auto") {
    const int n = cuda_device_count();  // 0 in a build without CUDA
    if (n > 0) return Device::cuda(local_rank % n);
    log.info("train.device auto: {}; training on the CPU",
             cuda_built() ? "no CUDA device is visible" : "attn was built without CUDA");
    return Device::cpu();
  }
  Device d = Device::parse(setting);
  if (setting == "cuda" && cuda_device_count() > 0)
    d = Device::cuda(local_rank % cuda_device_count());
  ATTN_CHECK(cuda_built(), "train.device is ", setting,
             " but attn was built without CUDA; use train.device: cpu or auto");
  ATTN_CHECK(cuda_device_count() > d.index, "train.device is ", setting, " but ",
             cuda_device_count(), " CUDA device(s) are visible; use train.device: cpu or auto");
  return d;
}

// train.precision -> the dtype the model computes in (master weights stay f32).
DType resolve_precision(const std::string& setting, Device device) {
  if (setting == "auto") return device.is_cuda() ? kBF16 : kF32;  // attn builds for sm_80+
  if (setting == "fp32") return kF32;
  ATTN_CHECK(device.is_cuda(), "train.precision is ", setting, " but training runs on ",
             device.str(), "; 16-bit training needs a CUDA device (use train.precision: fp32 or "
             "auto)");
  return setting == "bf16" ? kBF16 : kF16;
}

// Model-section keys whose values differ between two configs ("model.d_model: 64 vs 32").
std::string architecture_difference(const Config& a, const Config& b) {
  const auto va = config_values(a), vb = config_values(b);
  for (size_t i = 0; i < va.size(); ++i) {
    if (va[i].first.rfind("model.", 0) != 0) continue;
    // Dropout rates and the attention backend do not change the architecture; everything
    // else in `model` does.
    if (va[i].first.find("dropout") != std::string::npos) continue;
    if (va[i].first == "model.attention") continue;
    if (va[i].second != vb[i].second)
      return va[i].first + " is " + va[i].second + " in the checkpoint but " + vb[i].second +
             " in the config";
  }
  return "";
}

struct Window {  // training statistics since the last log line
  double loss = 0, nll = 0, tokens = 0, correct = 0, gnorm = 0;
  int64_t steps = 0;    // applied updates (gnorm is averaged over these)
  int64_t skipped = 0;  // fp16 overflows
  Clock::time_point start = Clock::now();
};

class Trainer {
 public:
  Trainer(const Config& config, const TrainFlags& flags) : cfg_(config), flags_(flags) {}

  TrainResult run() {
    launch_ = dist::detect_launch();
    main_ = launch_.rank == 0;
    setup_run_dir();
    device_ = resolve_device(cfg_.train.device, launch_.local_rank, *log_);
    comm_ = dist::make_communicator(device_, launch_);
    if (comm_->world_size() > 1) {
      log_->info(
          "data parallel: {} ranks ({} backend, launched by {}); data.max_tokens {} per "
          "rank, {} per step",
          comm_->world_size(), comm_->backend(), launch_.launcher, cfg_.data.max_tokens,
          cfg_.data.max_tokens * comm_->world_size());
    }
    setup_checkpoints();
    std::optional<LoadedCheckpoint> ck = find_checkpoint();
    const std::string& init = cfg_.train.init_weights;
    std::optional<io::SafetensorsFile> init_file;  // read before the data: fail early
    if (!ck && !init.empty()) init_file = read_init_weights(init);
    setup_data(ck ? &ck->spm_model : nullptr);
    setup_model();
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
    write_resolved_config();
    log_->info(
        "model: {} parameters ({} encoder + {} decoder layers, d_model {}, {} heads, "
        "d_ff {}, vocabulary {}{})",
        model_->parameter_count(), cfg_.model.encoder_layers, cfg_.model.decoder_layers,
        cfg_.model.d_model, cfg_.model.heads, cfg_.model.d_ff, vocab_size_,
        cfg_.model.share_embeddings ? ", shared embeddings" : "");
    log_->info(
        "data: {} training pairs in {} batches of <= {} tokens per epoch, {} validation "
        "pairs",
        train_data_.size(), batcher_->batches_per_epoch(), cfg_.data.max_tokens,
        valid_data_.size());
    return loop();
  }

 private:
  // ---- set-up ----
  void setup_run_dir() {
    const fs::path out = cfg_.train.output_dir;
    std::error_code ec;
    fs::create_directories(out, ec);
    ATTN_CHECK(!ec, "cannot create train.output_dir '", out.string(), "': ", ec.message());
    auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    if (main_) {
      auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>((out / "train.log").string());
      log_ = std::make_shared<spdlog::logger>("train", spdlog::sinks_init_list{console, file});
      metrics_.open(out / "metrics.jsonl", std::ios::app);
      ATTN_CHECK(metrics_.good(), "cannot write '", (out / "metrics.jsonl").string(), "'");
    } else {
      // Other ranks compute the same numbers; only their warnings and errors are shown.
      log_ = std::make_shared<spdlog::logger>("train", console);
      log_->set_level(spdlog::level::warn);
    }
    log_->set_pattern(main_ ? "[%Y-%m-%d %H:%M:%S] %v"
                            : "[%Y-%m-%d %H:%M:%S] [rank " + std::to_string(launch_.rank) + "] %v");
    log_->flush_on(spdlog::level::info);
  }

  void setup_checkpoints() {
    const fs::path out = cfg_.train.output_dir;
    std::error_code ec;
    const fs::path ckdir = out / "checkpoints";
    if (main_ && flags_.fresh && fs::exists(ckdir) && !fs::is_empty(ckdir)) {
      char stamp[32];
      const std::time_t now = std::time(nullptr);
      std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", std::localtime(&now));
      const fs::path aside = out / (std::string("checkpoints.old-") + stamp);
      fs::rename(ckdir, aside, ec);
      ATTN_CHECK(!ec, "--fresh: cannot move '", ckdir.string(), "' aside: ", ec.message());
      log_->info("--fresh: previous checkpoints moved to {}", aside.string());
    }
    comm_->barrier();  // every rank sees the directory after --fresh
    checkpoints_ = std::make_unique<CheckpointManager>(ckdir.string(), cfg_.train.keep_last);
  }

  // The checkpoint to resume from: the newest step directory that loads, whatever `latest`
  // says (a run killed between renaming a checkpoint into place and moving the link leaves a
  // complete checkpoint newer than `latest`). Damaged newer ones are moved aside, never
  // overwritten; with no intact checkpoint at all the run refuses to start over by itself.
  std::optional<LoadedCheckpoint> find_checkpoint() {
    const fs::path ckdir = checkpoints_->dir();
    const fs::path link = ckdir / "latest";
    std::error_code ec;
    const bool has_link = fs::is_symlink(link, ec);
    const auto latest = checkpoints_->latest();
    const std::vector<std::string> steps = step_checkpoints(ckdir.string());
    const std::string how_to_start_over =
        "pass --fresh to start over (the checkpoints are moved aside, not deleted)";
    if (steps.empty()) {
      ATTN_CHECK(!has_link, "cannot resume: ", link.string(), " points at '",
                 fs::read_symlink(link, ec).string(), "', which ",
                 latest ? "is not a step-<N> checkpoint directory" : "does not exist",
                 ", and there is no other checkpoint in ", ckdir.string(), "; ",
                 how_to_start_over);
      return std::nullopt;
    }
    std::vector<std::pair<std::string, std::string>> damaged;  // path, why
    std::optional<LoadedCheckpoint> found;
    Config saved;
    for (auto it = steps.rbegin(); it != steps.rend() && !found; ++it) {
      try {
        LoadedCheckpoint ck = load_checkpoint(*it);
        saved = parse_config(ck.config_yaml, ck.path + "/config.yaml");
        found = std::move(ck);
      } catch (const Error& e) {
        damaged.emplace_back(*it, e.what());
      }
    }
    if (!found) {
      std::string what;
      for (const auto& [path, why] : damaged) what += (what.empty() ? "" : "; ") + why;
      ATTN_FAIL("cannot resume from ", ckdir.string(), ": no intact checkpoint (", what, "); ",
                how_to_start_over);
    }
    const LoadedCheckpoint& ck = *found;
    const std::string diff = architecture_difference(saved, cfg_);
    ATTN_CHECK(diff.empty(), "cannot resume from ", ck.path,
               ": the checkpoint is of another "
               "architecture (",
               diff, "); use another train.output_dir or pass --fresh");
    comm_->barrier();  // every rank has chosen before rank 0 renames anything
    if (main_) {
      for (const auto& [path, why] : damaged) {
        const std::string aside = checkpoints_->set_aside(path);
        log_->warn("checkpoint {} is damaged ({}); moved to {} and not used", path, why, aside);
      }
      const bool linked = latest && fs::equivalent(*latest, ck.path, ec);
      if (!linked) {
        const std::string link_state =
            !has_link ? "is missing"
            : latest  ? "points at the older " + *latest
                      : "points at '" + fs::read_symlink(link, ec).string() +
                            "', which does not exist";
        log_->warn("{} {}; resuming from the newest intact checkpoint {}", link.string(),
                   link_state, ck.path);
        checkpoints_->set_latest(ck.path);
      }
    }
    comm_->barrier();
    log_->info("resuming from {}", ck.path);
    return found;
  }

  void setup_data(const std::string* checkpoint_spm) {
    const auto& d = cfg_.data;
    const uint64_t seed = cfg_.train.seed;
    if (!d.synthetic.empty()) {
      auto make = [&](const char* key, int64_t n, uint64_t task_seed) {
        try {
          return data::make_synthetic(d.synthetic, n, static_cast<int32_t>(d.synthetic_vocab),
                                      d.synthetic_min_len, d.synthetic_max_len, task_seed);
        } catch (const std::bad_alloc&) {
          ATTN_FAIL("out of memory generating ", key, " = ", n, " synthetic pairs of up to ",
                    d.synthetic_max_len, " tokens (data.synthetic_max_len): up to ",
                    format_bytes(8.0 * static_cast<double>(n) *
                                 static_cast<double>(d.synthetic_max_len + 3)),
                    " of token ids; lower ", key);
        }
      };
      train_data_ = make("data.synthetic_train_size", d.synthetic_train_size, seed);
      valid_data_ = make("data.synthetic_valid_size", d.synthetic_valid_size, seed + 7919);
      vocab_size_ = d.synthetic_vocab;
      log_->info("data: synthetic {} task, vocabulary {}", d.synthetic, vocab_size_);
    } else {
      const fs::path out = cfg_.train.output_dir;
      const std::string spm_path = d.spm_model.empty() ? (out / "spm.model").string() : d.spm_model;
      if (checkpoint_spm && !checkpoint_spm->empty()) {
        vocab_ = data::Vocab::from_serialized(*checkpoint_spm);  // the vocabulary trained with
      } else {
        if (!fs::exists(spm_path)) {
          // Check the corpora (existence, equal length, UTF-8) before spending minutes on a
          // vocabulary that could not be used.
          data::read_parallel(d.train_src, d.train_tgt);
          log_->info("training a {} SentencePiece model of {} pieces on {} + {}", d.spm_type,
                     d.vocab_size, d.train_src, d.train_tgt);
        }
        vocab_ = data::Vocab::train_or_load({d.train_src, d.train_tgt}, spm_path,
                                            static_cast<int>(d.vocab_size), d.spm_type, seed);
      }
      vocab_size_ = vocab_.size();
      data::DatasetStats ts, vs;
      train_data_ = data::load_or_build_cached(d.train_src, d.train_tgt, vocab_, d.max_len,
                                               (out / "cache" / "train.bin").string(), &ts);
      valid_data_ = data::load_or_build_cached(d.valid_src, d.valid_tgt, vocab_, d.max_len,
                                               (out / "cache" / "valid.bin").string(), &vs);
      for (auto [name, s] : {std::pair{"train", &ts}, {"valid", &vs}}) {
        log_->info("data {}: {} lines, {} kept, {} skipped (empty), {} skipped (> {} tokens){}",
                   name, s->lines, s->kept, s->skipped_empty, s->skipped_too_long, d.max_len,
                   s->from_cache ? " [cache]" : "");
      }
      ATTN_CHECK(!train_data_.empty(), "no training pairs left in ", d.train_src, " / ",
                 d.train_tgt,
                 " after skipping empty and over-long lines (data.max_len = ", d.max_len, ")");
    }
    data::BatcherOptions bo;
    bo.max_tokens = d.max_tokens;
    bo.shuffle = true;
    bo.seed = seed;
    bo.rank = comm_->rank();
    bo.world = comm_->world_size();
    batcher_ = std::make_unique<data::Batcher>(train_data_, bo);
    valid_batches_ = data::make_eval_batches(valid_data_, d.max_tokens);
  }

  void setup_model() {
    nn::TransformerConfig mc = transformer_config(cfg_, vocab_size_);
    mc.validate();
    check_attention_device(cfg_, device_);
    Generator init_gen(cfg_.train.seed);
    model_ = std::make_unique<nn::Transformer>(mc, init_gen);
    model_->set_dropout_generator(&dropout_gen_);
    model_->to_device(device_);
    optim::AdamOptions ao;
    ao.beta1 = cfg_.train.adam_beta1;
    ao.beta2 = cfg_.train.adam_beta2;
    ao.eps = cfg_.train.adam_eps;
    ao.weight_decay = cfg_.train.weight_decay;
    adam_ = std::make_unique<optim::Adam>(model_->named_parameters(), ao);
    StepOptions so;
    so.compute_dtype = resolve_precision(cfg_.train.precision, device_);
    so.label_smoothing = cfg_.train.label_smoothing;
    so.clip_norm = cfg_.train.clip_norm;
    so.overlap_allreduce = cfg_.train.overlap_allreduce;
    so.bucket_bytes = static_cast<int64_t>(cfg_.train.bucket_mb * (1 << 20));
    const std::string& ls = cfg_.train.loss_scale;
    loss_scaling_ = ls == "dynamic" || (ls == "auto" && so.compute_dtype == kF16);
    so.loss_scale.enabled = loss_scaling_;
    so.loss_scale.init = cfg_.train.loss_scale_init;
    so.loss_scale.growth_interval = cfg_.train.loss_scale_window;
    so.loss_scale.min_scale = cfg_.train.loss_scale_min;
    engine_ = std::make_unique<StepEngine>(*model_, *adam_, *comm_, so);
    if (device_.is_cuda()) set_allow_tf32(cfg_.train.allow_tf32);
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

  // One line of an append-only JSON-lines file (metrics.jsonl, --dump-batches), flushed so that
  // `attn plot` and a crash see every record; a failed write (full disk) is an error naming
  // the file, not a hole in the record.
  static void append_line(std::ofstream& f, const json& record, const std::string& path) {
    f << record.dump() << "\n";
    f.flush();
    ATTN_CHECK(f.good(), "cannot write '", path, "': ", std::strerror(errno));
  }

  void append_metrics(const json& record) {
    append_line(metrics_, record, (fs::path(cfg_.train.output_dir) / "metrics.jsonl").string());
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
    append_line(dump_, json{{"step", step_ + 1}, {"lr", lr_}, {"batches", std::move(bs)}},
                flags_.dump_batches);
  }

  void restore(const LoadedCheckpoint& ck) {
    try {
      model_->load_parameters(ck.model);
      const TrainerState& s = ck.state;
      step_ = s.step;
      batcher_->restore({s.batcher_epoch, s.batcher_position});
      if (s.best_metric == cfg_.train.best_metric && s.best_value) {
        best_value_ = s.best_value;
        bad_validations_ = s.bad_validations;
      } else if (s.best_value) {
        log_->info("train.best_metric changed from {} to {}: the best score starts afresh",
                   s.best_metric, cfg_.train.best_metric);
      }
      elapsed_before_ = s.elapsed_seconds;
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

  void write_resolved_config() {
    write_file((fs::path(cfg_.train.output_dir) / "config.yaml").string(), to_yaml(cfg_),
               "resolved config", {.atomic = true, .sync = true});
  }

  // ---- the loop ----
  TrainResult loop() {
    TrainResult result;
    const auto& t = cfg_.train;
    // A resumed run may already have used its train.max_time; a signal received during
    // set-up stays pending for the first step.
    if (const int sig = agree_after_step()) g_stop_signal.store(sig);
    if (done()) {
      log_->info("already trained to step {} (train.max_steps = {}{}); nothing to do", step_,
                 t.max_steps, time_up() ? ", train.max_time reached" : "");
      result.step = step_;
      result.finished = true;
      result.last_checkpoint = checkpoints_->latest().value_or("");
      return result;
    }
    run_start_ = Clock::now();
    const int64_t first_step = step_;
    Window w;
    while (!done()) {
      train_step(w);
      ++step_;
      const int stop_signal = agree_after_step();
      if (progress_) {
        // A one-line live display between log lines, erased before anything is logged.
        std::fprintf(stderr, "\r\033[Kstep %lld/%lld | loss %.4f", static_cast<long long>(step_),
                     static_cast<long long>(t.max_steps), w.tokens > 0 ? w.loss / w.tokens : 0.0);
        std::fflush(stderr);
      }
      if (t.check_replicas_every > 0 && step_ % t.check_replicas_every == 0)
        dist::check_replicas_identical(*comm_, model_->named_parameters());
      if (step_ % t.log_every == 0) {
        clear_progress();
        log_window(w, first_step);
      }
      bool is_best = false;
      bool end = done();
      if (step_ % t.valid_every == 0 || end) {
        clear_progress();
        is_best = validate(result);
        end = done();  // early stopping is decided by the validation
      }
      if (step_ % t.save_every == 0 || end || is_best) save(is_best, result);
      if (const int sig = stop_signal; sig != 0 && !end) {
        if (last_saved_step_ != step_) save(false, result);
        log_->info(
            "stopped by signal {} at step {}; checkpoint saved; run the same command "
            "to resume",
            sig, step_);
        result.stop_signal = sig;
        break;
      }
    }
    result.step = step_;
    result.finished = done();
    if (result.finished) {
      if (early_stopped_) {
        log_->info("stopped early at step {}: valid {} did not improve in {} validations", step_,
                   t.best_metric, t.patience);
      } else if (time_up()) {
        log_->info("stopped at step {}: train.max_time ({}) reached", step_, t.max_time);
      } else {
        log_->info("finished at step {}", step_);
      }
      if (t.average_last > 0 && main_) average_last(result);
    }
    return result;
  }

  void average_last(TrainResult& result) {
    const auto paths = last_checkpoints(checkpoints_->dir(), cfg_.train.average_last);
    const std::string out = (fs::path(checkpoints_->dir()) / "averaged").string();
    average_checkpoints(paths, out);
    log_->info("averaged the last {} checkpoints into {}", paths.size(), out);
    result.averaged_checkpoint = out;
  }

  double elapsed_total() const { return elapsed_before_ + seconds_since(run_start_); }
  bool time_up() const { return time_up_; }

  // After each step, in one host all-reduce, the ranks agree on whether train.max_time is up
  // (rank 0's clock decides) and on a stop signal any of them received, so that all stop at
  // the same step. Returns the signal (0 if none).
  int agree_after_step() {
    int sig = g_stop_signal.exchange(0);
    bool up = max_time_s_ > 0 && elapsed_total() >= max_time_s_;
    if (comm_->world_size() > 1) {
      const auto r = comm_->all_reduce_host(
          {static_cast<double>(sig), sig ? 1.0 : 0.0, comm_->rank() == 0 && up ? 1.0 : 0.0});
      if (r[1] > 0 && sig == 0) sig = static_cast<int>(r[0] / r[1]);
      up = r[2] > 0;
    }
    time_up_ = up;
    return sig;
  }

  void clear_progress() {
    if (progress_) std::fprintf(stderr, "\r\033[K");
  }

  bool done() const {
    if (step_ >= cfg_.train.max_steps || early_stopped_ || time_up()) return true;
    return cfg_.train.max_epochs > 0 && batcher_->epoch() >= cfg_.train.max_epochs;
  }

  void train_step(Window& w) {
    inject_fault(fault_, step_ + 1, comm_->rank());  // test only (ATTN_FAULT_INJECT)
    model_->train();
    // Dropout masks are a function of (seed, rank, step): nothing to checkpoint, and every
    // rank draws different masks.
    dropout_gen_.set_state(
        cfg_.train.seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull * (comm_->rank() + 1),
        static_cast<uint64_t>(step_) << 32);
    std::vector<data::Batch> batches;
    for (int64_t k = 0; k < cfg_.train.update_freq; ++k) batches.push_back(batcher_->next());
    lr_ = optim::learning_rate(sched_, step_ + 1 - sched_offset_);
    if (dump_.is_open()) dump_step(batches);
    StepResult r;
    try {
      r = engine_->step(batches, lr_);
    } catch (const LossScaleError& e) {
      throw LossScaleError(detail::str_cat("training stopped at step ", step_ + 1, ": ", e.what(),
                                           "; the last good checkpoint is ",
                                           checkpoints_->latest().value_or("(none)")));
    }
    if (r.skipped && !loss_scaling_) {
      ATTN_FAIL("training diverged at step ", step_ + 1, ": the gradient norm is ", r.grad_norm,
                "; the last good checkpoint is ", checkpoints_->latest().value_or("(none)"),
                " (try a lower learning rate or train.clip_norm)");
    }
    if (r.skipped) {
      clear_progress();
      log_->warn("step {}: gradient overflow at loss scale {}; step skipped, loss scale now {}",
                 step_ + 1, r.loss_scale, engine_->loss_scale());
      w.skipped++;
    } else {
      w.gnorm += r.grad_norm;
      w.steps++;
    }
    w.loss += r.loss;
    w.nll += r.nll;
    w.correct += r.correct;
    w.tokens += r.tokens;
  }

  void log_window(Window& w, int64_t first_step) {
    const auto& t = cfg_.train;
    if (comm_->world_size() > 1) {
      const auto r = comm_->all_reduce_host({w.loss, w.nll, w.correct, w.tokens});
      w.loss = r[0];
      w.nll = r[1];
      w.correct = r[2];
      w.tokens = r[3];
    }
    const double secs = seconds_since(w.start);
    const double run_secs = seconds_since(run_start_);
    const double per_step = run_secs / static_cast<double>(step_ - first_step);
    double eta = per_step * static_cast<double>(t.max_steps - step_);
    if (max_time_s_ > 0) eta = std::min(eta, max_time_s_ - elapsed_total());
    const double loss = w.loss / w.tokens, nll = w.nll / w.tokens;
    const double ppl = std::exp(nll), acc = w.correct / w.tokens;
    const double gnorm = w.steps > 0 ? w.gnorm / static_cast<double>(w.steps) : 0.0;
    const double tok_s = w.tokens / secs;
    log_->info(
        "step {}/{} | loss {:.4f} | nll {:.4f} | ppl {:.2f} | acc {:.2f}% | lr {:.3e} | "
        "gnorm {:.3f} | {:.0f} tgt tok/s | epoch {} | elapsed {} | ETA {}",
        step_, t.max_steps, loss, nll, ppl, 100 * acc, lr_, gnorm, tok_s, batcher_->epoch() + 1,
        format_duration(elapsed_before_ + run_secs), format_duration(eta));
    if (main_)
      append_metrics(json{{"type", "train"},
                          {"step", step_},
                          {"loss", loss},
                          {"nll", nll},
                          {"ppl", ppl},
                          {"accuracy", acc},
                          {"lr", lr_},
                          {"gnorm", gnorm},
                          {"tgt_tokens_per_s", tok_s},
                          {"epoch", batcher_->epoch()},
                          {"elapsed_s", elapsed_before_ + run_secs}});
    w = Window();
  }

  // Returns true when this validation is the best so far.
  bool validate(TrainResult& result) {
    double loss = 0, nll = 0, tokens = 0, correct = 0;
    {
      NoGradGuard no_grad;
      nn::EvalModeGuard eval(*model_);
      for (const data::Batch& b : valid_batches_) {
        Tensor logits =
            model_->forward(b.src.to(device_), b.src_lengths.to(device_), b.tgt_in.to(device_));
        CrossEntropyResult ce =
            cross_entropy(reshape(logits, {-1, vocab_size_}), b.tgt_out.to(device_).view({-1}),
                          cfg_.train.label_smoothing, data::kPadId);
        loss += ce.loss.item();
        nll += ce.nll.item();
        correct += ce.ncorrect.item();
        tokens += static_cast<double>(b.tgt_tokens);
      }
    }
    if (tokens == 0) return false;
    const double vl = loss / tokens, vnll = nll / tokens, acc = correct / tokens;
    json record = {{"type", "valid"}, {"step", step_},         {"loss", vl},
                   {"nll", vnll},     {"ppl", std::exp(vnll)}, {"accuracy", acc}};
    std::string extra;
    std::optional<double> bleu;
    const auto& metrics = cfg_.train.valid_metrics;
    if (std::find(metrics.begin(), metrics.end(), "bleu") != metrics.end()) {
      bleu = valid_bleu();
      record["bleu"] = *bleu;
      extra = fmt::format(" | bleu {:.2f}", *bleu);
    }
    const bool by_bleu = cfg_.train.best_metric == "bleu";
    const double value = by_bleu ? *bleu : vl;
    const bool best = !best_value_ || (by_bleu ? value > *best_value_ : value < *best_value_);
    if (best) {
      best_value_ = value;
      bad_validations_ = 0;
    } else if (++bad_validations_ >= cfg_.train.patience && cfg_.train.patience > 0) {
      early_stopped_ = true;
    }
    record["best"] = best;
    log_->info("valid at step {} | loss {:.4f} | nll {:.4f} | ppl {:.2f} | acc {:.2f}%{}{}", step_,
               vl, vnll, std::exp(vnll), 100 * acc, extra, best ? " | best" : "");
    if (main_) append_metrics(record);
    result.last_valid_loss = vl;
    result.last_valid_accuracy = acc;
    if (bleu) result.last_valid_bleu = *bleu;
    return best;
  }

  // BLEU (sacreBLEU-identical) of beam search with train.valid_beam over the validation set.
  // Both sides are detokenized from ids (SentencePiece decoding is lossless for ordinary
  // text); synthetic tasks score space-joined ids.
  double valid_bleu() {
    NoGradGuard no_grad;
    decode::BeamOptions bo;
    bo.beam = cfg_.train.valid_beam;
    bo.alpha = cfg_.decode.alpha;
    bo.max_len_a = cfg_.decode.max_len_a;
    bo.max_len_b = cfg_.decode.max_len_b;
    auto text = [&](std::span<const int32_t> ids) { return data::detokenize(vocab_, ids); };
    std::vector<std::string> hyps, refs;
    for (const data::Batch& b : valid_batches_) {
      const auto results = decode::beam_search(*model_, b.src.to(device_), b.src_lengths.to(device_), bo);
      for (size_t i = 0; i < results.size(); ++i) {
        hyps.push_back(text(results[i][0].tokens));
        refs.push_back(text(valid_data_.tgt(b.indices[i])));
      }
    }
    return eval::corpus_bleu(hyps, {refs}).score;
  }

  void save(bool is_best, TrainResult& result) {
    last_saved_step_ = step_;
    if (!main_) return;  // rank 0 writes; every rank holds the same state
    CheckpointData d;
    d.model = model_->named_parameters();
    d.optimizer = adam_->state_tensors();
    const data::Batcher::State bs = batcher_->state();
    TrainerState& s = d.state;
    s.step = step_;
    s.batcher_epoch = bs.epoch;
    s.batcher_position = bs.position;
    s.adam_step = adam_->step_count();
    s.schedule_offset = sched_offset_;
    s.lr = lr_;
    s.best_metric = cfg_.train.best_metric;
    s.best_value = best_value_;
    s.bad_validations = bad_validations_;
    if (loss_scaling_) s.loss_scale = {engine_->loss_scale(), engine_->clean_steps()};
    s.elapsed_seconds = elapsed_before_ + seconds_since(run_start_);
    s.finished = done();
    d.config_yaml = to_yaml(cfg_);
    if (vocab_.loaded()) d.spm_model = vocab_.serialized();
    result.last_checkpoint = checkpoints_->save(step_, d, is_best);
    log_->info("saved checkpoint {}{}", result.last_checkpoint, is_best ? " (best)" : "");
  }

  Config cfg_;
  TrainFlags flags_;
  dist::LaunchInfo launch_;
  bool main_ = true;  // rank 0: logs, metrics, checkpoints
  std::unique_ptr<dist::Communicator> comm_;
  bool time_up_ = false;
  const bool progress_ = ::isatty(STDERR_FILENO) == 1;
  std::shared_ptr<spdlog::logger> log_;
  std::ofstream metrics_;
  std::ofstream dump_;  // --dump-batches
  std::unique_ptr<CheckpointManager> checkpoints_;
  Device device_;
  data::Vocab vocab_;
  int64_t vocab_size_ = 0;
  data::Dataset train_data_, valid_data_;
  std::unique_ptr<data::Batcher> batcher_;
  std::vector<data::Batch> valid_batches_;
  std::unique_ptr<nn::Transformer> model_;
  Generator dropout_gen_;
  std::unique_ptr<optim::Adam> adam_;
  std::unique_ptr<StepEngine> engine_;
  bool loss_scaling_ = false;
  optim::ScheduleOptions sched_;
  int64_t sched_offset_ = 0;
  int64_t step_ = 0;
  int64_t last_saved_step_ = -1;
  double lr_ = 0;
  std::optional<double> best_value_;  // of train.best_metric
  int64_t bad_validations_ = 0;       // validations since the best one
  bool early_stopped_ = false;
  double max_time_s_ = parse_duration(cfg_.train.max_time, "train.max_time");
  const FaultInjection fault_ = fault_injection_from_env();
  double elapsed_before_ = 0;
  Clock::time_point run_start_ = Clock::now();
};

}  // namespace

TrainResult train(const Config& config, const TrainFlags& flags) {
  validate(config);
  Trainer trainer(config, flags);
  return trainer.run();
}

void install_stop_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

void request_stop(int signal_number) {
  g_stop_signal.store(signal_number);
}

}  // namespace attn::train
