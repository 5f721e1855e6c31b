// CUDA optimizer step (kernels/adam_cuda.cu): the multi-tensor fused Adam/AdamW against
// adam_step_cpu, the multi-tensor gradient norm against the CPU's double sum, and clipping
// (factor computed and applied on the device) against the CPU's clip_grad_norm + Adam.
// f32 Adam is designed to be bit-identical to adam_step_cpu<float>; it is checked with a tight
// tolerance over several steps on many tensors of odd sizes (1, 3, 1023, 65542, chunk
// boundaries, empty), with aligned and misaligned storage. bf16/f16 parameters are checked
// against an f64 reference on the same rounded values with the dtype's tolerance.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/cuda_backend.h"
#include "cuda/cuda_test_util.h"
#include "kernels/adam.h"
#include "ops/optim.h"
#include "optim/adam.h"
#include "optim/clip.h"

namespace attn {
namespace {

using namespace cuda_test;

const int64_t kSizes[] = {1, 3, 1023, 65537 + 5, 65536, 7, 0, 131073, 4096, 5, 2 * 65536 - 1};
const Tolerance kAdamF32{1e-7, 1e-6};  // "tight": the kernel is meant to be exact

struct State {
  std::vector<Tensor> p, g, m, v;
};

// params uniform in [-1, 1), zero moments, on `device`; `misaligned` stores every tensor at
// element offset 1 of a larger buffer (the kernel's scalar path).
State make_state(const std::vector<int64_t>& sizes, const std::vector<DType>& types, Device device,
                 bool misaligned, uint64_t seed) {
  State s;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int64_t n = sizes[i];
    const Tensor p = random_tensor({n}, types[i], Device::cpu(), seed + i);
    auto place = [&](const Tensor& t) {
      return misaligned ? misaligned_copy(t.to(device)) : t.to(device);
    };
    s.p.push_back(place(p));
    s.m.push_back(place(Tensor::zeros({n}, types[i])));
    s.v.push_back(place(Tensor::zeros({n}, types[i])));
    s.g.push_back(place(Tensor::zeros({n}, types[i])));
  }
  return s;
}

State to_f64_cpu(const State& s) {
  State r;
  for (size_t i = 0; i < s.p.size(); ++i) {
    r.p.push_back(as_f64_cpu(s.p[i]));
    r.g.push_back(as_f64_cpu(s.g[i]));
    r.m.push_back(as_f64_cpu(s.m[i]));
    r.v.push_back(as_f64_cpu(s.v[i]));
  }
  return r;
}

State to_cpu(const State& s) {
  State r;
  for (size_t i = 0; i < s.p.size(); ++i) {
    r.p.push_back(s.p[i].to(Device::cpu()));
    r.g.push_back(s.g[i].to(Device::cpu()));
    r.m.push_back(s.m[i].to(Device::cpu()));
    r.v.push_back(s.v[i].to(Device::cpu()));
  }
  return r;
}

// Fresh gradients in [-scale, scale) written into both states' gradient tensors.
void new_grads(State& gpu, State& cpu, uint64_t seed, double scale = 1.0) {
  for (size_t i = 0; i < gpu.g.size(); ++i) {
    const Tensor g = random_tensor(gpu.g[i].shape(), gpu.g[i].dtype(), Device::cpu(), seed + i,
                                   -scale, scale);
    gpu.g[i].copy_(g);
    cpu.g[i].copy_(cpu.g[i].dtype() == kF64 ? g.to(kF64) : g);
  }
}

ops::AdamStepArgs args_for(int step, double lr, double wd) {
  ops::AdamStepArgs a;
  a.lr = lr;
  a.beta1 = 0.9;
  a.beta2 = 0.98;
  a.eps = 1e-9;
  a.weight_decay = wd;
  a.bias_correction1 = 1.0 - std::pow(a.beta1, step);
  a.bias_correction2 = 1.0 - std::pow(a.beta2, step);
  return a;
}

void cpu_adam(State& s, const ops::AdamStepArgs& a) {
  for (size_t i = 0; i < s.p.size(); ++i) ops::adam_step_(s.p[i], s.g[i], s.m[i], s.v[i], a);
}

void require_state_close(const State& got, const State& want, const Tolerance& f32_tol,
                         const std::string& what) {
  for (size_t i = 0; i < got.p.size(); ++i) {
    const Tolerance tol = got.p[i].dtype() == kF32 ? f32_tol : tolerance_for(got.p[i].dtype());
    const std::string w = what + " tensor " + std::to_string(i) + " (" +
                          std::to_string(got.p[i].numel()) + " " + dtype_name(got.p[i].dtype()) + ")";
    require_close(got.p[i], want.p[i], tol, w + " param");
    require_close(got.m[i], want.m[i], tol, w + " exp_avg");
    require_close(got.v[i], want.v[i], tol, w + " exp_avg_sq");
  }
}

std::vector<double> host_state(const Tensor& state) { return state.to_double_vector(); }

// The CPU's clip: norm = sqrt(sum of squared_norm) / loss_scale, factor as StepEngine and
// clip_grad_norm compute it, gradients scaled in place with clip_scale_.
double cpu_clip(State& s, double max_norm, double loss_scale) {
  double total = 0.0;
  for (const Tensor& g : s.g) total += ops::squared_norm(g);
  const double norm = std::sqrt(total) / loss_scale;
  double factor = 1.0 / loss_scale;
  if (max_norm > 0 && norm > max_norm) factor *= max_norm / (norm + 1e-6);
  if (factor != 1.0)
    for (Tensor& g : s.g) ops::clip_scale_(g, factor);
  return norm;
}

void set_grad(const Tensor& p, const Tensor& g) { p.impl()->grad = g.impl_ptr(); }

}  // namespace

TEST_CASE("cuda adam: multi-tensor f32 Adam equals adam_step_cpu over several steps", "[cuda]") {
  const std::vector<int64_t> sizes(std::begin(kSizes), std::end(kSizes));
  const std::vector<DType> types(sizes.size(), kF32);
  for (bool misaligned : {false, true}) {
    for (double wd : {0.0, 0.01}) {
      const std::string what = std::string(misaligned ? "misaligned" : "aligned") +
                               " weight_decay " + std::to_string(wd);
      State gpu = make_state(sizes, types, kGpu, misaligned, 10);
      State cpu = to_cpu(gpu);
      const double lrs[] = {1e-3, 5e-3, 2e-2, 7e-4};
      for (int step = 1; step <= 4; ++step) {
        new_grads(gpu, cpu, 100 * step, step == 3 ? 1e-4 : 1.0);
        const ops::AdamStepArgs a = args_for(step, lrs[step - 1], wd);
        ops::adam_step_multi_(gpu.p, gpu.g, gpu.m, gpu.v, a);
        cpu_adam(cpu, a);
        require_state_close(gpu, cpu, kAdamF32, what + " step " + std::to_string(step));
      }
    }
  }
}

TEST_CASE("cuda adam: mixed f32/bf16/f16 parameters in one launch match an f64 reference",
          "[cuda]") {
  const std::vector<int64_t> sizes = {3, 1023, 65537 + 5, 1, 4096, 70000, 5, 0, 9};
  const std::vector<DType> types = {kBF16, kF16, kF32, kBF16, kF16, kBF16, kF32, kF16, kF32};
  State gpu = make_state(sizes, types, kGpu, false, 20);
  for (int step = 1; step <= 2; ++step) {
    State ref = to_f64_cpu(gpu);  // the reference starts from the GPU's rounded state
    for (size_t i = 0; i < sizes.size(); ++i) {
      const Tensor g = random_tensor({sizes[i]}, types[i], Device::cpu(), 300 + step * 17 + i);
      gpu.g[i].copy_(g);
      ref.g[i] = as_f64_cpu(g);
    }
    const ops::AdamStepArgs a = args_for(step, 2e-2, 0.01);
    ops::adam_step_multi_(gpu.p, gpu.g, gpu.m, gpu.v, a);
    cpu_adam(ref, a);
    // f32 entries against f64 here, so the f32 rounding of each operation is allowed for.
    require_state_close(gpu, ref, tolerance_for(kF32), "mixed types step " + std::to_string(step));
  }
}

TEST_CASE("cuda adam: the multi-tensor gradient norm matches the CPU and is deterministic",
          "[cuda]") {
  std::vector<Tensor> grads;
  double want = 0.0;
  uint64_t seed = 40;
  for (int64_t n : kSizes) {
    for (DType dt : kGpuFloatTypes) {
      const Tensor g = random_tensor({n}, dt, kGpu, seed++, -3.0, 3.0);
      grads.push_back(g);
      for (double x : g.to_double_vector()) want += x * x;
    }
  }
  grads.push_back(Tensor());  // undefined gradients are skipped
  grads.push_back(random_tensor({100}, kF32, kGpu, seed++).narrow0(1, 100));  // misaligned
  for (double x : grads.back().to_double_vector()) want += x * x;

  Tensor state = ops::make_clip_state(kGpu);
  ops::grad_norm_state_(grads, 0.0, 1.0, state);
  const std::vector<double> s1 = host_state(state);
  CHECK(s1[kernels::kClipSumSquares] == Approx(want).epsilon(1e-12));
  CHECK(s1[kernels::kClipNorm] == Approx(std::sqrt(want)).epsilon(1e-12));
  CHECK(s1[kernels::kClipFactor] == 1.0);
  CHECK(s1[kernels::kClipSteps] == 1.0);
  CHECK(s1[kernels::kClipNonfinite] == 0.0);

  // Same inputs, same bits; the window statistics accumulate.
  const double max_norm = 0.25 * std::sqrt(want), loss_scale = 8.0;
  ops::grad_norm_state_(grads, max_norm, loss_scale, state);
  const std::vector<double> s2 = host_state(state);
  CHECK(std::memcmp(&s2[kernels::kClipSumSquares], &s1[kernels::kClipSumSquares], 8) == 0);
  const double norm = s2[kernels::kClipNorm];
  CHECK(norm == std::sqrt(s1[kernels::kClipSumSquares]) / loss_scale);
  // sqrt(want) / 8 < max_norm: no clipping, only the loss scale is undone.
  CHECK(s2[kernels::kClipFactor] == 1.0 / loss_scale);
  CHECK(s2[kernels::kClipSteps] == 2.0);
  CHECK(s2[kernels::kClipNormSum] == Approx(s1[kernels::kClipNorm] + norm).epsilon(1e-15));

  ops::grad_norm_state_(grads, max_norm / 10, loss_scale, state);
  const std::vector<double> s3 = host_state(state);
  CHECK(s3[kernels::kClipFactor] == (1.0 / loss_scale) * ((max_norm / 10) / (norm + 1e-6)));

  // No gradients at all: norm 0, factor 1.
  Tensor empty_state = ops::make_clip_state(kGpu);
  ops::grad_norm_state_({}, 1.0, 1.0, empty_state);
  const std::vector<double> s4 = host_state(empty_state);
  CHECK(s4[kernels::kClipNorm] == 0.0);
  CHECK(s4[kernels::kClipFactor] == 1.0);
  CHECK(s4[kernels::kClipSteps] == 1.0);
}

TEST_CASE("cuda adam: clipping inside the step equals clip_scale_ + Adam on the CPU", "[cuda]") {
  const std::vector<int64_t> sizes = {1, 3, 1023, 65537 + 5, 7, 131073, 0, 512};
  const std::vector<DType> types(sizes.size(), kF32);
  struct Setting {
    double max_norm, loss_scale;
  };
  // Clipping active, inactive, and with a loss scale to undo (StepEngine's fp16 path).
  for (const Setting st : {Setting{1.0, 1.0}, Setting{1e9, 1.0}, Setting{2.0, 256.0}, Setting{0.0, 1.0}}) {
    const std::string what = "max_norm " + std::to_string(st.max_norm) + " loss_scale " +
                             std::to_string(st.loss_scale);
    State gpu = make_state(sizes, types, kGpu, false, 50);
    State cpu = to_cpu(gpu);
    Tensor state = ops::make_clip_state(kGpu);
    double norm_sum = 0.0;
    for (int step = 1; step <= 3; ++step) {
      new_grads(gpu, cpu, 700 + step, st.loss_scale);
      const std::vector<unsigned char> grad0 = bytes_of(gpu.g[3]);
      const ops::AdamStepArgs a = args_for(step, 1e-2, 0.0);
      ops::grad_norm_state_(gpu.g, st.max_norm, st.loss_scale, state);
      ops::adam_step_multi_(gpu.p, gpu.g, gpu.m, gpu.v, a, state);
      const double cpu_norm = cpu_clip(cpu, st.max_norm, st.loss_scale);
      cpu_adam(cpu, a);
      norm_sum += cpu_norm;
      const std::vector<double> s = host_state(state);
      INFO(what << " step " << step);
      CHECK(s[kernels::kClipNorm] == Approx(cpu_norm).epsilon(1e-12));
      CHECK(bytes_of(gpu.g[3]) == grad0);  // the GPU never rescales the gradients themselves
      require_state_close(gpu, cpu, kAdamF32, what + " step " + std::to_string(step));
    }
    const std::vector<double> s = host_state(state);
    CHECK(s[kernels::kClipSteps] == 3.0);
    CHECK(s[kernels::kClipNormSum] == Approx(norm_sum).epsilon(1e-12));
  }
}

TEST_CASE("cuda adam: a non-finite gradient norm leaves every parameter untouched", "[cuda]") {
  const std::vector<int64_t> sizes = {5, 65537 + 5, 3};
  const std::vector<DType> types = {kF32, kF32, kBF16};
  for (double bad : {std::numeric_limits<double>::infinity(), std::nan("")}) {
    State gpu = make_state(sizes, types, kGpu, false, 60);
    State cpu = to_cpu(gpu);
    Tensor state = ops::make_clip_state(kGpu);
    // A clean step first, then one whose gradient holds `bad`.
    new_grads(gpu, cpu, 61);
    ops::grad_norm_state_(gpu.g, 1.0, 1.0, state);
    ops::adam_step_multi_(gpu.p, gpu.g, gpu.m, gpu.v, args_for(1, 1e-2, 0.1), state);
    std::vector<std::vector<unsigned char>> before;
    for (size_t i = 0; i < sizes.size(); ++i) {
      before.push_back(bytes_of(gpu.p[i]));
      before.push_back(bytes_of(gpu.m[i]));
      before.push_back(bytes_of(gpu.v[i]));
    }
    new_grads(gpu, cpu, 62);
    Tensor g1 = gpu.g[1].to(Device::cpu());
    g1.data<float>()[12345] = static_cast<float>(bad);
    gpu.g[1].copy_(g1);
    ops::grad_norm_state_(gpu.g, 1.0, 1.0, state);
    ops::adam_step_multi_(gpu.p, gpu.g, gpu.m, gpu.v, args_for(2, 1e-2, 0.1), state);
    const std::vector<double> s = host_state(state);
    INFO("bad value " << bad);
    CHECK(!std::isfinite(s[kernels::kClipNorm]));
    CHECK(s[kernels::kClipSteps] == 2.0);
    CHECK(s[kernels::kClipNonfinite] == 1.0);
    CHECK(s[kernels::kClipFirstNonfinite] == 2.0);
    for (size_t i = 0; i < sizes.size(); ++i) {
      CHECK(bytes_of(gpu.p[i]) == before[3 * i]);
      CHECK(bytes_of(gpu.m[i]) == before[3 * i + 1]);
      CHECK(bytes_of(gpu.v[i]) == before[3 * i + 2]);
    }
  }
}

TEST_CASE("cuda adam: Adam, GradClipper and the single-tensor ops on CUDA match the CPU",
          "[cuda]") {
  const std::vector<int64_t> sizes = {17, 65537 + 5, 1, 3000};
  std::vector<std::pair<std::string, Tensor>> cpu_params, gpu_params, gpu_params2;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const Tensor p = random_tensor({sizes[i]}, kF32, Device::cpu(), 80 + i);
    Tensor pc = p.clone(), pg = p.to(kGpu), pg2 = p.to(kGpu);
    pc.set_requires_grad(true);
    pg.set_requires_grad(true);
    pg2.set_requires_grad(true);
    cpu_params.emplace_back("p" + std::to_string(i), pc);
    gpu_params.emplace_back("p" + std::to_string(i), pg);
    gpu_params2.emplace_back("p" + std::to_string(i), pg2);
  }
  auto tensors = [](const std::vector<std::pair<std::string, Tensor>>& named) {
    std::vector<Tensor> v;
    for (const auto& [name, t] : named) v.push_back(t);
    return v;
  };
  const std::vector<Tensor> pc = tensors(cpu_params), pg = tensors(gpu_params),
                            pg2 = tensors(gpu_params2);
  optim::AdamOptions opt;
  opt.weight_decay = 0.01;
  optim::Adam adam_cpu(cpu_params, opt), adam_gpu(gpu_params, opt), adam_gpu2(gpu_params2, opt);
  optim::GradClipper clipper(1.5);
  double norm_sum = 0.0;
  for (int step = 1; step <= 3; ++step) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      const Tensor g = random_tensor({sizes[i]}, kF32, Device::cpu(), 900 + 10 * step + i);
      set_grad(pc[i], g.clone());
      set_grad(pg[i], g.to(kGpu));
      set_grad(pg2[i], g.to(kGpu));
    }
    INFO("step " << step);
    // The old API on CUDA (one read-back for the norm) and the synchronisation-free one.
    CHECK(optim::grad_norm(pg) == Approx(optim::grad_norm(pc)).epsilon(1e-12));
    const double norm_cpu = optim::clip_grad_norm(pc, 1.5);
    const double norm_gpu = optim::clip_grad_norm(pg, 1.5);
    CHECK(norm_gpu == Approx(norm_cpu).epsilon(1e-12));
    norm_sum += norm_cpu;
    adam_cpu.step(1e-2);
    adam_gpu.step(1e-2);
    clipper.compute(pg2);
    adam_gpu2.step(1e-2, clipper.state());
    for (size_t i = 0; i < sizes.size(); ++i) {
      require_close(pg[i].detach(), pc[i].detach(), kAdamF32, "Adam::step after clip_grad_norm");
      require_close(pg2[i].detach(), pc[i].detach(), kAdamF32, "Adam::step with GradClipper");
    }
  }
  const optim::GradClipper::Window w = clipper.take_window();
  CHECK(w.steps == 3);
  CHECK(w.nonfinite == 0);
  CHECK(w.first_nonfinite == 0);
  CHECK(w.norm_sum == Approx(norm_sum).epsilon(1e-12));
  CHECK(clipper.take_window().steps == 0);  // a new window

  // The single-tensor ops.
  const Tensor x = random_tensor({65537 + 5}, kF32, kGpu, 5, -2, 2);
  CHECK(ops::squared_norm(x) == Approx(ops::squared_norm(x.to(Device::cpu()))).epsilon(1e-12));
  for (DType dt : kGpuFloatTypes) {
    const Tensor y = random_tensor({1023}, dt, kGpu, 6);
    CHECK(ops::squared_norm(y) == Approx(ops::squared_norm(as_f64_cpu(y))).epsilon(1e-12));
    Tensor z = y.clone();
    ops::clip_scale_(z, 0.37);
    Tensor z64 = as_f64_cpu(y);
    ops::clip_scale_(z64, 0.37);
    require_close(z, z64, tolerance_for(dt), std::string("clip_scale_ ") + dtype_name(dt));
  }
  State gpu = make_state({5, 70001}, {kF32, kF32}, kGpu, false, 7);
  State cpu = to_cpu(gpu);
  new_grads(gpu, cpu, 8);
  const ops::AdamStepArgs a = args_for(1, 1e-3, 0.0);
  for (size_t i = 0; i < 2; ++i) ops::adam_step_(gpu.p[i], gpu.g[i], gpu.m[i], gpu.v[i], a);
  cpu_adam(cpu, a);
  require_state_close(gpu, cpu, kAdamF32, "ops::adam_step_");
}

}  // namespace attn
