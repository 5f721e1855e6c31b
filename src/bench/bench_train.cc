#include "bench/bench_train.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <sstream>

#include "bench/common.h"
#include "core/allocator.h"
#include "base/error.h"
#include "core/file.h"
#include "dist/communicator.h"
#include "nn/transformer.h"
#include "train/model_config.h"
#include "train/step.h"
#include "train/step_config.h"

namespace attn::bench {

using json = nlohmann::json;

double model_flops(const nn::TransformerConfig& m, const BatchLengths& b, bool useful) {
  const double d = static_cast<double>(m.d_model), f = static_cast<double>(m.d_ff);
  const double V = static_cast<double>(m.tgt_vocab);
  const double Le = static_cast<double>(m.encoder_layers);
  const double Ld = static_cast<double>(m.decoder_layers);
  double ns = 0, nt = 0, ss = 0, tt = 0, ts = 0;  // tokens and attention pair counts
  if (useful) {
    for (size_t r = 0; r < b.src_lengths.size(); ++r) {
      const double s = b.src_lengths[r], t = b.tgt_lengths[r];
      ns += s;
      nt += t;
      ss += s * s;
      tt += t * t;
      ts += t * s;
    }
  } else {
    const double B = static_cast<double>(b.src_lengths.size());
    const double S = static_cast<double>(max_length(b.src_lengths));
    const double T = static_cast<double>(max_length(b.tgt_lengths));
    ns = B * S;
    nt = B * T;
    ss = B * S * S;
    tt = B * T * T;
    ts = B * T * S;
  }
  const double weights = Le * ns * (4 * d * d + 2 * d * f) +
                         Ld * (nt * (4 * d * d + 2 * d * f) + nt * 2 * d * d + ns * 2 * d * d) +
                         nt * d * V;
  const double attn = Le * 4 * ss * d + Ld * (2 * tt * d + 4 * ts * d);
  return 6 * weights + 3 * attn;
}

TrainBenchResult run_train_bench(const TrainBenchOptions& o) {
  ATTN_CHECK(o.steps >= 1, "bench train: --steps must be >= 1, got ", o.steps);
  ATTN_CHECK(o.warmup >= 0, "bench train: --warmup must be >= 0, got ", o.warmup);
  ATTN_CHECK(o.update_freq >= 1, "bench train: update_freq must be >= 1, got ", o.update_freq);
  ATTN_CHECK(!o.batches.batches.empty(), "bench train: no batches");
  ATTN_CHECK(!o.profile || o.device.is_cpu(), "bench train: --profile times CPU kernels only "
             "(a CUDA kernel returns before it has run); training runs on ", o.device);
  const DType compute = o.step.compute_dtype;
  ATTN_CHECK(compute == kF32 || o.device.is_cuda(), "bench train: precision ",
             train::precision_name(compute), " needs a CUDA device (training runs on ", o.device,
             "); use fp32");

  nn::TransformerConfig mc = o.model;
  mc.src_vocab = mc.tgt_vocab = o.batches.vocab;
  mc.validate();
  Generator init_gen(o.seed);
  nn::Transformer model(mc, init_gen);
  Generator dropout_gen(o.seed);
  model.set_dropout_generator(&dropout_gen);
  model.to_device(o.device);
  model.train();
  optim::Adam adam(model.named_parameters(), o.adam);
  dist::SingleCommunicator comm;
  train::StepEngine engine(model, adam, comm, o.step);

  // Host batches, as the trainer's batcher makes them; the step copies them to the device.
  const int64_t count = static_cast<int64_t>(o.batches.batches.size());
  std::vector<data::Batch> host;
  host.reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) host.push_back(make_batch(o.batches, i, Device::cpu()));

  TrainBenchResult res;
  res.device = o.device.str();
  res.precision = train::precision_name(compute);
  res.model = mc;
  res.max_tokens = o.batches.max_tokens;
  res.params = model.parameter_count();
  res.steps = o.steps;
  res.warmup = o.warmup;
  res.update_freq = o.update_freq;

  Allocator& alloc = allocator_for(o.device);
  synchronize(o.device);
  alloc.reset_peak();
  double total_ms = 0, tokens = 0, flops = 0, useful = 0;
  using Clock = std::chrono::steady_clock;
  for (int64_t step = 0; step < o.warmup + o.steps; ++step) {
    std::vector<data::Batch> micro;
    double step_flops = 0, step_useful = 0;
    for (int64_t k = 0; k < o.update_freq; ++k) {
      const int64_t i = (step * o.update_freq + k) % count;
      micro.push_back(host[static_cast<size_t>(i)]);
      step_flops += model_flops(mc, o.batches.batches[static_cast<size_t>(i)], false);
      step_useful += model_flops(mc, o.batches.batches[static_cast<size_t>(i)], true);
    }
    // As the trainer: dropout masks from (seed, step).
    dropout_gen.set_state(o.seed, static_cast<uint64_t>(step) << 32);
    synchronize(o.device);
    if (o.profile && step == o.warmup) {
      profile::reset();
      profile::enable(true);
    }
    const auto t0 = Clock::now();
    const train::StepResult r = engine.step(micro, o.lr);
    synchronize(o.device);
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (step < o.warmup) continue;
    res.step_ms.push_back(ms);
    total_ms += ms;
    tokens += r.tokens;
    flops += step_flops;
    useful += step_useful;
    res.last_loss = r.tokens > 0 ? r.loss / r.tokens : 0;
    if (r.skipped) ++res.skipped_steps;
  }
  if (o.profile) {
    profile::enable(false);
    res.profile = profile::entries();
  }
  const AllocatorStats stats = alloc.stats();
  res.peak_mem_bytes = stats.peak_bytes;
  res.reserved_bytes = stats.reserved_bytes;
  res.step_ms_median = median(res.step_ms);
  const double n = static_cast<double>(o.steps);
  res.tgt_tokens_per_step = tokens / n;
  res.flops_per_step = flops / n;
  res.useful_flops_per_step = useful / n;
  if (total_ms > 0) {
    res.tokens_per_s = tokens / (total_ms * 1e-3);
    res.achieved_tflops = flops / (total_ms * 1e-3) / 1e12;
  }
  return res;
}

namespace {
json profile_json(const TrainBenchResult& r) {
  json ops = json::array();
  for (const profile::Entry& e : r.profile)
    ops.push_back({{"op", e.name}, {"calls", e.calls}, {"seconds", e.seconds}});
  return ops;
}

// The profile as a table: per op, its kernel calls per step, time per step and share of the
// steps' total; the last row is the time outside every kernel.
std::string format_profile(const TrainBenchResult& r) {
  if (r.profile.empty()) return "";
  double total_ms = 0;
  for (double ms : r.step_ms) total_ms += ms;
  const double steps = static_cast<double>(r.step_ms.size());
  std::string out = "profile over the timed steps (wall time per op's kernel calls):\n";
  char line[160];
  std::snprintf(line, sizeof(line), "  %-28s %10s %12s %8s\n", "op", "calls/step", "ms/step",
                "share");
  out += line;
  double kernels_ms = 0;
  for (const profile::Entry& e : r.profile) {
    const double ms = e.seconds * 1e3;
    kernels_ms += ms;
    std::snprintf(line, sizeof(line), "  %-28s %10.1f %12.2f %7.1f%%\n", e.name.c_str(),
                  static_cast<double>(e.calls) / steps, ms / steps, 100 * ms / total_ms);
    out += line;
  }
  std::snprintf(line, sizeof(line), "  %-28s %10s %12.2f %7.1f%%\n",
                "(outside kernels)", "", (total_ms - kernels_ms) / steps,
                100 * (total_ms - kernels_ms) / total_ms);
  out += line;
  return out;
}
}  // namespace

json to_json(const TrainBenchResult& r) {
  return {{"tool", "attn bench train"},
          {"date", utc_timestamp()},
          {"device", r.device},
          {"precision", r.precision},
          {"params", r.params},
          {"model",
           {{"d_model", r.model.d_model},
            {"heads", r.model.heads},
            {"d_ff", r.model.d_ff},
            {"encoder_layers", r.model.encoder_layers},
            {"decoder_layers", r.model.decoder_layers},
            {"vocab", r.model.tgt_vocab},
            {"share_embeddings", r.model.share_embeddings},
            {"pre_norm", r.model.pre_norm},
            {"dropout", r.model.dropout}}},
          {"max_tokens", r.max_tokens},
          {"steps", r.steps},
          {"warmup", r.warmup},
          {"update_freq", r.update_freq},
          {"tokens_per_s", r.tokens_per_s},
          {"step_ms_median", r.step_ms_median},
          {"step_ms", r.step_ms},
          {"tgt_tokens_per_step", r.tgt_tokens_per_step},
          {"flops_per_step", r.flops_per_step},
          {"useful_flops_per_step", r.useful_flops_per_step},
          {"achieved_tflops", r.achieved_tflops},
          {"peak_mem_bytes", r.peak_mem_bytes},
          {"reserved_bytes", r.reserved_bytes},
          {"last_loss", r.last_loss},
          {"skipped_steps", r.skipped_steps},
          {"profile", profile_json(r)}};
}

std::string format_train_result(const TrainBenchResult& r) {
  char buf[512];
  std::snprintf(buf, sizeof(buf),
                "device %s, precision %s, %lld parameters, %lld timed steps after %lld warm-up\n"
                "step %.2f ms (median), %.0f target tokens/s, %.0f target tokens/step\n"
                "model %.3f TFLOP/step (padded; %.3f on real tokens), %.2f TFLOP/s achieved\n"
                "peak memory %s (reserved %s), last loss %.4f per token, %lld skipped\n",
                r.device.c_str(), r.precision.c_str(), static_cast<long long>(r.params),
                static_cast<long long>(r.steps), static_cast<long long>(r.warmup), r.step_ms_median,
                r.tokens_per_s, r.tgt_tokens_per_step, r.flops_per_step / 1e12,
                r.useful_flops_per_step / 1e12, r.achieved_tflops,
                format_bytes(static_cast<double>(r.peak_mem_bytes)).c_str(),
                format_bytes(static_cast<double>(r.reserved_bytes)).c_str(), r.last_loss,
                static_cast<long long>(r.skipped_steps));
  return buf + format_profile(r);
}

TrainBenchOptions train_bench_options(const train::Config& c, const TrainBenchFlags& flags) {
  train::Config config = c;
  if (!flags.device.empty()) config.train.device = flags.device;
  if (!flags.precision.empty()) config.train.precision = flags.precision;
  train::validate(config);  // --device and --precision by the keys' own rules
  TrainBenchOptions o;
  o.device = train::resolve_device(config.train.device, 0,
                                   flags.device.empty() ? "train.device" : "--device");
  o.step = train::step_options(config, o.device);
  o.adam = train::adam_options(config);
  o.lr = c.train.lr;
  o.update_freq = c.train.update_freq;
  o.seed = c.train.seed;
  o.steps = flags.steps;
  o.warmup = flags.warmup;
  o.profile = flags.profile;
  if (!flags.batches_path.empty()) {
    o.batches = read_batch_file(flags.batches_path);
  } else {
    BatchGenOptions g;
    g.max_tokens = c.data.max_tokens;
    g.seed = c.train.seed;
    g.count = flags.count;
    g.vocab = flags.vocab;
    g.max_len = c.data.max_len;
    o.batches = generate_batches(g);
  }
  o.model = train::transformer_config(c, o.batches.vocab);
  return o;
}

int run_bench_train_command(const std::string& config_path,
                            const std::vector<std::string>& overrides,
                            const TrainBenchFlags& flags) {
  const train::Config config = train::load_config(config_path, overrides);
  const TrainBenchOptions o = train_bench_options(config, flags);
  const TrainBenchResult r = run_train_bench(o);
  std::cout << format_train_result(r) << std::flush;
  if (!flags.json_path.empty()) {
    write_file(flags.json_path, to_json(r).dump(1) + "\n", "bench train JSON report");
  }
  return 0;
}

}  // namespace attn::bench
