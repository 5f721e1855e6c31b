// `attn bench train`: times train::StepEngine::step, the exact update `attn train` runs (forward,
// label-smoothed loss, backward, clipping, Adam), on synthetic batches (bench/batches.h) at a
// constant learning rate, and reports target tokens/s, the median step time, peak device
// memory and the model FLOPs per step (for MFU against `attn bench kernels`' matmul rate).
//
// Model FLOPs of one step (forward + backward = 3 x forward; the same formula as
// scripts/bench/reference_model.py training_flops), per micro-batch of B rows padded to S
// source and T target positions, d = d_model, f = d_ff, V = vocabulary, Le/Ld = layers:
//   weights = Le * B*S * (4 d^2 + 2 d f)
//           + Ld * (B*T * (4 d^2 + 2 d f) + B*T * 2 d^2 + B*S * 2 d^2)   (cross q,o / k,v)
//           + B*T * d * V                                                   (output layer)
//   attn    = Le * 4 B S^2 d + Ld * (2 B T^2 d + 4 B T S d)               (causal: half)
//   flops   = 6 * weights + 3 * attn
// `flops_per_step` counts the padded shapes (what a GPU computes; attn's training step
// computes the output layer on the real target rows only, so this overstates attn's own work
// by that layer's padded share, the same convention for attn and PyTorch); `useful_flops_per_step`
// the same formula over real tokens only (B*S -> sum of source lengths, B S^2 -> sum of squared
// source lengths, B T S -> sum over rows of t*s, ...). Embedding gathers, norms, softmax and
// element-wise work are not counted.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/batches.h"
#include "core/device.h"
#include "core/profile.h"
#include "nn/config.h"
#include "optim/adam.h"
#include "train/config.h"
#include "train/step.h"

namespace attn::bench {

struct TrainBenchOptions {
  nn::TransformerConfig model;  // src_vocab/tgt_vocab are set from the batches' vocab
  // What the config decides of the step (train::step_options: precision, loss scaling, label
  // smoothing, clipping, TF32) and of Adam (train::adam_options).
  train::StepOptions step;
  optim::AdamOptions adam;
  double lr = 5e-4;  // constant
  int64_t update_freq = 1;  // micro-batches per step
  Device device = Device::cpu();
  int64_t steps = 20;
  int64_t warmup = 3;
  uint64_t seed = 1;  // model initialisation and dropout
  BatchFile batches;  // step i uses batches (i * update_freq + k) mod count
  bool profile = false;  // time every kernel call of the timed steps (CPU only; core/profile.h)
};

struct TrainBenchResult {
  std::string device, precision;
  nn::TransformerConfig model;  // as built (vocabulary from the batches)
  int64_t max_tokens = 0;       // of the batches
  int64_t params = 0;
  int64_t steps = 0, warmup = 0, update_freq = 1;
  std::vector<double> step_ms;  // every timed step
  double step_ms_median = 0;
  double tokens_per_s = 0;           // non-pad target tokens / time, over the timed steps
  double tgt_tokens_per_step = 0;    // mean over the timed steps
  double flops_per_step = 0;         // mean, padded shapes (see above)
  double useful_flops_per_step = 0;  // mean, real tokens only
  double achieved_tflops = 0;        // flops of the timed steps / their total time
  int64_t peak_mem_bytes = 0;        // the device allocator's peak over warm-up and timed steps
  int64_t reserved_bytes = 0;        // held from the system at the end (caching allocators)
  double last_loss = 0;              // per target token, last timed step (a sanity check)
  int64_t skipped_steps = 0;         // fp16 overflows among the timed steps
  // With profile: wall time per op's kernel over the timed steps, largest first; the rest of
  // the steps' time (autograd, allocation, glue) is total - their sum.
  std::vector<profile::Entry> profile;
};

// The FLOPs formula above for one micro-batch; `useful` counts real tokens only.
double model_flops(const nn::TransformerConfig& model, const BatchLengths& batch, bool useful);

TrainBenchResult run_train_bench(const TrainBenchOptions& options);
nlohmann::json to_json(const TrainBenchResult& result);
std::string format_train_result(const TrainBenchResult& result);

struct TrainBenchFlags {
  std::string batches_path;  // empty: generate in memory (data.max_tokens, seed, vocab)
  int64_t steps = 20, warmup = 3;
  std::string device;     // empty: the config's train.device ("auto": cuda:0 when present)
  std::string precision;  // empty: the config's train.precision ("auto": bf16 on CUDA)
  std::string json_path;
  int64_t vocab = 32000;  // in-memory batches only
  int64_t count = 16;     // in-memory batches only
  bool profile = false;
};

// The options for `config` (model; the step and Adam as attn train builds them, with
// --device and --precision in place of train.device and train.precision; update_freq,
// lr = train.lr, seed).
TrainBenchOptions train_bench_options(const train::Config& config, const TrainBenchFlags& flags);

// `attn bench train`.
int run_bench_train_command(const std::string& config_path,
                            const std::vector<std::string>& overrides,
                            const TrainBenchFlags& flags);

}  // namespace attn::bench
