#include "bench/bench_kernels.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>

#include "bench/common.h"
#include "base/error.h"
#include "core/file.h"
#include "ops/attention.h"
#include "ops/cross_entropy.h"
#include "ops/layer_norm.h"
#include "ops/matmul.h"
#include "train/step_config.h"

namespace attn::bench {

namespace {

using json = nlohmann::json;

// The CPU kernels are f32/f64 only: 16-bit rows run in f32 there.
DType runnable_dtype(DType requested, Device device) {
  if (device.is_cpu() && (requested == kBF16 || requested == kF16)) return kF32;
  return requested;
}

double total_bytes(std::initializer_list<const Tensor*> tensors) {
  double b = 0;
  for (const Tensor* t : tensors)
    if (t->defined()) b += static_cast<double>(t->nbytes());
  return b;
}

class Runner {
 public:
  Runner(const KernelBenchOptions& opt, KernelBenchReport& report) : opt_(opt), report_(report) {}

  // Appends row `r` (name, shape and dtypes already set): `setup` builds the inputs and
  // returns the call to time with its byte and flop counts. A failing setup or call records
  // the error in the row and the bench goes on with the next one.
  struct Timed {
    std::function<void()> call;
    double bytes = 0;
    double flops = 0;
  };
  void row(KernelResult r, const std::function<Timed()>& setup) {
    try {
      Timed t = setup();
      const std::vector<double> ms = time_calls(opt_.device, opt_.warmup, opt_.reps, t.call);
      r.ms = median(ms);
      r.ms_min = *std::min_element(ms.begin(), ms.end());
      r.bytes = t.bytes;
      r.flops = t.flops;
      if (r.ms > 0) {
        r.gbps = r.bytes / (r.ms * 1e-3) / 1e9;
        r.tflops = r.flops / (r.ms * 1e-3) / 1e12;
      }
      if (report_.copy_gbps > 0) r.copy_ratio = r.gbps / report_.copy_gbps;
    } catch (const Error& e) {
      r.error = e.what();
      std::fprintf(stderr, "attn bench kernels: %s %s failed: %s\n", r.name.c_str(),
                   shape_str(r.shape).c_str(), e.what());
    }
    report_.rows.push_back(std::move(r));
  }

  KernelResult make(const std::string& name, const Shape& shape, DType requested) const {
    KernelResult r;
    r.name = name;
    r.shape = shape;
    r.requested_dtype = dtype_name(requested);
    r.dtype = dtype_name(runnable_dtype(requested, opt_.device));
    return r;
  }

  Tensor input(const Shape& shape, DType dtype, uint64_t stream) const {
    return hashed_uniform(shape, -1.0, 1.0, hash_u64({opt_.seed, stream}), dtype, opt_.device);
  }

 private:
  const KernelBenchOptions& opt_;
  KernelBenchReport& report_;
};

void bench_copy(const KernelBenchOptions& opt, Runner& run, KernelBenchReport& report) {
  const int64_t n = std::max<int64_t>(opt.copy_bytes / 4, 1);
  run.row(run.make("copy", {n}, kF32), [&] {
    auto src = std::make_shared<Tensor>(Tensor::zeros({n}, kF32, opt.device));
    auto dst = std::make_shared<Tensor>(Tensor::empty({n}, kF32, opt.device));
    return Runner::Timed{[src, dst] { dst->copy_(*src); }, 2.0 * static_cast<double>(src->nbytes()),
                         0.0};
  });
  const KernelResult& r = report.rows.back();
  if (r.error.empty()) {
    report.copy_gbps = r.gbps;
    report.rows.back().copy_ratio = 1.0;
  }
}

void bench_matmul(const KernelBenchOptions& opt, Runner& run, KernelBenchReport& report) {
  const int64_t n = opt.matmul_n;
  const DType dt = runnable_dtype(kBF16, opt.device);
  run.row(run.make("matmul", {n, n, n}, kBF16), [&] {
    auto a = std::make_shared<Tensor>(run.input({n, n}, dt, 1));
    auto b = std::make_shared<Tensor>(run.input({n, n}, dt, 2));
    const double nn = static_cast<double>(n) * static_cast<double>(n);
    return Runner::Timed{[a, b] { (void)ops::matmul(*a, *b); },
                         3.0 * nn * static_cast<double>(dtype_size(dt)),
                         2.0 * nn * static_cast<double>(n)};
  });
  const KernelResult& r = report.rows.back();
  if (r.error.empty()) report.matmul_tflops = r.tflops;
}

void bench_attention(const KernelBenchOptions& opt, Runner& run) {
  const DType dt = runnable_dtype(kBF16, opt.device);
  for (const int64_t T : opt.seq_lens) {
    const int64_t B = std::max<int64_t>(opt.tokens / T, 1);
    const Shape shape = {B, opt.heads, T, opt.head_dim};
    const std::vector<int32_t> lengths = padded_lengths(B, T, opt.seed);
    const double dense_fwd = 4.0 * static_cast<double>(B * opt.heads) * static_cast<double>(T) *
                             static_cast<double>(T) * static_cast<double>(opt.head_dim);
    // fused always; cudnn beside it on a GPU when this build has it (a machine without
    // libcudnn.so.9 gets rows that carry the error).
    std::vector<std::pair<ops::AttentionBackend, bool>> variants;  // (backend, causal)
    for (const ops::AttentionBackend b : {ops::AttentionBackend::fused, ops::AttentionBackend::cudnn}) {
      if (b == ops::AttentionBackend::cudnn &&
          !(opt.device.is_cuda() && ops::attention_backend_built(b)))
        continue;
      variants.emplace_back(b, false);
      variants.emplace_back(b, true);
    }
    for (const auto& variant : variants) {
      // Plain variables, not structured bindings: lambdas capture them (clang 14, the fuzz
      // build's compiler, cannot capture a binding).
      const ops::AttentionBackend backend = variant.first;
      const bool causal = variant.second;
      const std::string base = std::string(causal ? "attention.dec_causal" : "attention.enc_self") +
                               (backend == ops::AttentionBackend::fused ? "" : ".cudnn");
      const double fwd_flops = causal ? dense_fwd / 2 : dense_fwd;
      // Inputs shared by the forward and backward rows of this variant.
      struct State {
        Tensor q, k, v, dout, out, lse;
        ops::AttentionOptions opt;
      };
      auto st = std::make_shared<State>();
      auto prepare = [&, st] {
        if (st->q.defined()) return;
        st->q = run.input(shape, dt, 10 + T);
        st->k = run.input(shape, dt, 20 + T);
        st->v = run.input(shape, dt, 30 + T);
        st->opt.causal = causal;
        st->opt.backend = backend;
        if (!causal) st->opt.key_lengths = Tensor::from_ints(lengths, {B}, opt.device);
      };
      // A cudnn row must time cuDNN, not the fused fallback.
      auto require_ran = [backend](const ops::AttentionResult& r) {
        ATTN_CHECK(r.backend == backend, "the ", ops::attention_backend_name(backend),
                   " backend fell back to ", ops::attention_backend_name(r.backend),
                   " (the log says why)");
      };
      KernelResult fwd = run.make(base + ".fwd", shape, kBF16);
      fwd.causal = causal;
      if (!causal) fwd.lengths = lengths;
      run.row(fwd, [&] {
        prepare();
        ops::AttentionResult r0 = ops::attention_forward(st->q, st->k, st->v, st->opt);
        require_ran(r0);
        const double bytes =
            total_bytes({&st->q, &st->k, &st->v, &st->opt.key_lengths, &r0.out, &r0.lse});
        return Runner::Timed{[st] { (void)ops::attention_forward(st->q, st->k, st->v, st->opt); },
                             bytes, fwd_flops};
      });
      KernelResult bwd = run.make(base + ".bwd", shape, kBF16);
      bwd.causal = causal;
      if (!causal) bwd.lengths = lengths;
      run.row(bwd, [&] {
        prepare();
        ops::AttentionResult r0 = ops::attention_forward(st->q, st->k, st->v, st->opt);
        require_ran(r0);
        st->out = r0.out;
        st->lse = r0.lse;
        st->dout = run.input(shape, dt, 40 + T);
        ops::AttentionGrads g =
            ops::attention_backward(st->dout, st->q, st->k, st->v, st->out, st->lse, st->opt);
        const double bytes = total_bytes({&st->dout, &st->q, &st->k, &st->v, &st->out, &st->lse,
                                          &st->opt.key_lengths, &g.q, &g.k, &g.v});
        return Runner::Timed{[st] {
                               (void)ops::attention_backward(st->dout, st->q, st->k, st->v, st->out,
                                                             st->lse, st->opt);
                             },
                             bytes, 2.5 * fwd_flops};
      });
    }
  }
}

void bench_layer_norm(const KernelBenchOptions& opt, Runner& run) {
  const Shape shape = {opt.ln_rows, opt.ln_cols};
  for (const DType requested : {kBF16, kF32}) {
    const DType dt = runnable_dtype(requested, opt.device);
    struct State {
      Tensor x, gamma, beta, dy;
      ops::LayerNormOutput out;
    };
    auto st = std::make_shared<State>();
    auto prepare = [&, st] {
      if (st->x.defined()) return;
      st->x = run.input(shape, dt, 50);
      st->gamma = run.input({opt.ln_cols}, dt, 51);
      st->beta = run.input({opt.ln_cols}, dt, 52);
    };
    run.row(run.make("layer_norm.fwd", shape, requested), [&] {
      prepare();
      ops::LayerNormOutput o = ops::layer_norm_forward(st->x, st->gamma, st->beta, 1e-5);
      const double bytes = total_bytes({&st->x, &st->gamma, &st->beta, &o.y, &o.mean, &o.rstd});
      return Runner::Timed{
          [st] { (void)ops::layer_norm_forward(st->x, st->gamma, st->beta, 1e-5); }, bytes, 0.0};
    });
    run.row(run.make("layer_norm.bwd", shape, requested), [&] {
      prepare();
      st->out = ops::layer_norm_forward(st->x, st->gamma, st->beta, 1e-5);
      st->dy = run.input(shape, dt, 53);
      ops::LayerNormGrads g =
          ops::layer_norm_backward(st->dy, st->x, Tensor(), st->gamma, st->out.mean, st->out.rstd);
      const double bytes = total_bytes(
          {&st->dy, &st->x, &st->gamma, &st->out.mean, &st->out.rstd, &g.dx, &g.dgamma, &g.dbeta});
      return Runner::Timed{[st] {
                             (void)ops::layer_norm_backward(st->dy, st->x, Tensor(), st->gamma,
                                                            st->out.mean, st->out.rstd);
                           },
                           bytes, 0.0};
    });
  }
}

void bench_cross_entropy(const KernelBenchOptions& opt, Runner& run) {
  const Shape shape = {opt.ce_rows, opt.vocab};
  const DType dt = runnable_dtype(kBF16, opt.device);
  const double eps = opt.label_smoothing;
  struct State {
    Tensor logits, targets, lse, grad_loss;
  };
  auto st = std::make_shared<State>();
  auto prepare = [&, st] {
    if (st->logits.defined()) return;
    // Logits of a trained model span a few units; [-4, 4) keeps exp() honest in bf16.
    st->logits = hashed_uniform(shape, -4.0, 4.0, hash_u64({opt.seed, 60}), dt, opt.device);
    std::vector<int32_t> t(static_cast<size_t>(opt.ce_rows));
    for (size_t i = 0; i < t.size(); ++i)
      t[i] = 4 + static_cast<int32_t>(hash_u64({opt.seed, 61, i}) %
                                      static_cast<uint64_t>(opt.vocab - 4));
    st->targets = Tensor::from_ints(t, {opt.ce_rows}, opt.device);
  };
  run.row(run.make("cross_entropy.fwd", shape, kBF16), [&] {
    prepare();
    ops::CrossEntropyForward f = ops::cross_entropy_forward(st->logits, st->targets, eps, 0);
    const double bytes = total_bytes({&st->logits, &st->targets, &f.lse});
    return Runner::Timed{
        [st, eps] { (void)ops::cross_entropy_forward(st->logits, st->targets, eps, 0); }, bytes,
        0.0};
  });
  run.row(run.make("cross_entropy.bwd", shape, kBF16), [&] {
    prepare();
    st->lse = ops::cross_entropy_forward(st->logits, st->targets, eps, 0).lse;
    st->grad_loss = Tensor::full({}, 1.0, dt, opt.device);
    Tensor d = ops::cross_entropy_backward(st->grad_loss, st->logits, st->targets, st->lse, eps, 0);
    const double bytes = total_bytes({&st->logits, &st->targets, &st->lse, &d});
    return Runner::Timed{[st, eps] {
                           (void)ops::cross_entropy_backward(st->grad_loss, st->logits, st->targets,
                                                             st->lse, eps, 0);
                         },
                         bytes, 0.0};
  });
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

}  // namespace

bool KernelBenchReport::ok() const {
  for (const auto& r : rows)
    if (!r.error.empty()) return false;
  return true;
}

KernelBenchOptions kernel_bench_options(Device device, bool quick) {
  KernelBenchOptions o;
  o.device = device;
  o.quick = quick;
  if (!quick) return o;
  o.warmup = 1;
  o.reps = 3;
  o.tokens = 32;
  o.seq_lens = {4, 8};
  o.heads = 2;
  o.head_dim = 8;
  o.ln_rows = 16;
  o.ln_cols = 32;
  o.ce_rows = 16;
  o.vocab = 50;
  o.copy_bytes = 1 << 20;
  o.matmul_n = 64;
  return o;
}

std::vector<int32_t> padded_lengths(int64_t batch, int64_t T, uint64_t seed) {
  ATTN_CHECK(T >= 1 && batch >= 0, "padded_lengths: T ", T, ", batch ", batch);
  const int64_t lo = (T + 1) / 2;
  const uint64_t span = static_cast<uint64_t>(T - lo + 1);
  std::vector<int32_t> out(static_cast<size_t>(batch));
  for (int64_t i = 0; i < batch; ++i)
    out[i] = static_cast<int32_t>(
        lo + static_cast<int64_t>(
                 hash_u64({seed, static_cast<uint64_t>(T), static_cast<uint64_t>(i)}) % span));
  return out;
}

KernelBenchReport run_kernel_bench(const KernelBenchOptions& opt) {
  ATTN_CHECK(opt.vocab > 4, "bench kernels: vocab must be > 4, got ", opt.vocab);
  ATTN_CHECK(opt.tokens > 0 && opt.heads > 0 && opt.head_dim > 0 && opt.ln_rows > 0 &&
                 opt.ln_cols > 0 && opt.ce_rows > 0 && opt.matmul_n > 0,
             "bench kernels: sizes must be positive");
  for (int64_t T : opt.seq_lens) ATTN_CHECK(T > 0, "bench kernels: sequence length ", T);
  KernelBenchReport report;
  report.device = opt.device.str();
  report.quick = opt.quick;
  report.warmup = opt.warmup;
  report.reps = opt.reps;
  report.seed = opt.seed;
  Runner run(opt, report);
  bench_copy(opt, run, report);
  bench_matmul(opt, run, report);
  bench_attention(opt, run);
  bench_layer_norm(opt, run);
  bench_cross_entropy(opt, run);
  return report;
}

std::string format_kernel_table(const KernelBenchReport& rep) {
  std::ostringstream os;
  os << "device " << rep.device << (rep.quick ? " (quick shapes)" : "") << ", median of "
     << rep.reps << " after " << rep.warmup << " warm-up\n";
  os << "copy bandwidth " << fmt("%.1f", rep.copy_gbps) << " GB/s, matmul "
     << fmt("%.3g", rep.matmul_tflops) << " TFLOP/s\n";
  char line[256];
  std::snprintf(line, sizeof(line), "%-28s %-20s %-5s %10s %10s %7s %9s\n", "kernel", "shape",
                "dtype", "ms", "GB/s", "%copy", "TFLOP/s");
  os << line;
  bool any_substituted = false;
  for (const auto& r : rep.rows) {
    if (!r.error.empty()) {
      std::snprintf(line, sizeof(line), "%-28s %-20s %-5s ", r.name.c_str(),
                    shape_str(r.shape).c_str(), r.dtype.c_str());
      os << line << "error: " << r.error << "\n";
      continue;
    }
    const bool substituted = r.dtype != r.requested_dtype;
    any_substituted |= substituted;
    const std::string dtype = r.dtype + (substituted ? "*" : "");
    std::snprintf(line, sizeof(line), "%-28s %-20s %-5s %10.4f %10.1f %6.1f%% %9s\n",
                  r.name.c_str(), shape_str(r.shape).c_str(), dtype.c_str(), r.ms, r.gbps,
                  100.0 * r.copy_ratio, r.flops > 0 ? fmt("%.3g", r.tflops).c_str() : "-");
    os << line;
  }
  if (any_substituted) os << "* asked for bf16; the CPU kernels run f32\n";
  return os.str();
}

json to_json(const KernelBenchReport& rep) {
  json rows = json::array();
  for (const auto& r : rep.rows) {
    json j = {{"name", r.name},
              {"shape", r.shape},
              {"dtype", r.dtype},
              {"requested_dtype", r.requested_dtype},
              {"ms", r.ms},
              {"ms_min", r.ms_min},
              {"bytes", r.bytes},
              {"gbps", r.gbps},
              {"copy_ratio", r.copy_ratio},
              {"flops", r.flops},
              {"tflops", r.tflops},
              {"causal", r.causal}};
    if (!r.lengths.empty()) j["lengths"] = r.lengths;
    if (!r.error.empty()) j["error"] = r.error;
    rows.push_back(std::move(j));
  }
  return {{"tool", "attn bench kernels"},
          {"date", utc_timestamp()},
          {"device", rep.device},
          {"quick", rep.quick},
          {"warmup", rep.warmup},
          {"reps", rep.reps},
          {"seed", rep.seed},
          {"copy_gbps", rep.copy_gbps},
          {"matmul_tflops", rep.matmul_tflops},
          {"results", rows}};
}

KernelBenchReport kernel_report_from_json(const json& j) {
  KernelBenchReport rep;
  try {
    rep.device = j.at("device").get<std::string>();
    rep.quick = j.at("quick").get<bool>();
    rep.warmup = j.at("warmup").get<int>();
    rep.reps = j.at("reps").get<int>();
    rep.seed = j.at("seed").get<uint64_t>();
    rep.copy_gbps = j.at("copy_gbps").get<double>();
    rep.matmul_tflops = j.at("matmul_tflops").get<double>();
    for (const json& r : j.at("results")) {
      KernelResult k;
      k.name = r.at("name").get<std::string>();
      k.shape = r.at("shape").get<Shape>();
      k.dtype = r.at("dtype").get<std::string>();
      k.requested_dtype = r.at("requested_dtype").get<std::string>();
      k.ms = r.at("ms").get<double>();
      k.ms_min = r.at("ms_min").get<double>();
      k.bytes = r.at("bytes").get<double>();
      k.gbps = r.at("gbps").get<double>();
      k.copy_ratio = r.at("copy_ratio").get<double>();
      k.flops = r.at("flops").get<double>();
      k.tflops = r.at("tflops").get<double>();
      k.causal = r.at("causal").get<bool>();
      if (r.contains("lengths")) k.lengths = r.at("lengths").get<std::vector<int32_t>>();
      if (r.contains("error")) k.error = r.at("error").get<std::string>();
      rep.rows.push_back(std::move(k));
    }
  } catch (const json::exception& e) {
    ATTN_FAIL("bench kernels JSON: ", e.what());
  }
  return rep;
}

std::string dump_kernel_json(const json& j) {
  // One key per line and one result per line: readable, and diffs stay small.
  std::ostringstream os;
  os << "{\n";
  bool first = true;
  for (auto it = j.begin(); it != j.end(); ++it) {
    os << (first ? "" : ",\n") << json(it.key()).dump() << ": ";
    first = false;
    if (it.key() == "results" && it->is_array()) {
      os << "[";
      for (size_t i = 0; i < it->size(); ++i) os << (i ? ",\n  " : "\n  ") << (*it)[i].dump();
      os << "\n]";
    } else {
      os << it->dump();
    }
  }
  os << "\n}\n";
  return os.str();
}

int run_bench_kernels_command(const std::string& device, const std::string& json_path, bool quick,
                              int warmup, int reps) {
  KernelBenchOptions opt = kernel_bench_options(train::resolve_device(device, 0, "--device"), quick);
  if (warmup >= 0) opt.warmup = warmup;
  if (reps > 0) opt.reps = reps;
  const KernelBenchReport rep = run_kernel_bench(opt);
  std::cout << format_kernel_table(rep) << std::flush;
  if (!json_path.empty()) {
    write_file(json_path, dump_kernel_json(to_json(rep)), "bench kernels JSON report");
  }
  return rep.ok() ? 0 : 1;
}

}  // namespace attn::bench
