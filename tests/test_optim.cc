// Adam against hand-computed values and a plain-double reference, checkpointing of its state,
// the learning-rate schedules and gradient clipping.
#include <unistd.h>

#include <catch2/catch.hpp>

#include "test_util.h"
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>

#include "autograd/functions.h"
#include "io/safetensors.h"
#include "optim/adam.h"
#include "optim/clip.h"
#include "optim/schedule.h"

using namespace attn;
using attn::testing::error_of;
using attn::testing::same_bytes;
using namespace attn::optim;

namespace {

Tensor param(const std::vector<double>& values, DType dtype = kF64) {
  Tensor p = Tensor::from_vector(values, {static_cast<int64_t>(values.size())}, dtype);
  p.set_requires_grad(true);
  return p;
}

// What backward would leave behind, without building a graph.
void set_grad(const Tensor& p, const std::vector<double>& g) {
  p.impl()->grad = Tensor::from_vector(g, p.shape(), p.dtype()).impl_ptr();
}

// Adam written out from Kingma & Ba's Algorithm 1 (bias-corrected moments), plus decoupled
// weight decay applied before the update (AdamW), in plain double arithmetic.
struct ReferenceAdam {
  double beta1, beta2, eps, weight_decay;
  std::vector<double> m, v;
  int t = 0;

  void step(std::vector<double>& p, const std::vector<double>& g, double lr) {
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] = p[i] - lr * weight_decay * p[i];
      m[i] = beta1 * m[i] + (1 - beta1) * g[i];
      v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
      const double m_hat = m[i] / (1 - std::pow(beta1, t));
      const double v_hat = v[i] / (1 - std::pow(beta2, t));
      p[i] = p[i] - lr * m_hat / (std::sqrt(v_hat) + eps);
    }
  }
};

}  // namespace

TEST_CASE("Adam: the first step moves each parameter by about lr * sign(g)", "[optim]") {
  for (DType dtype : {kF32, kF64}) {
    INFO(dtype);
    const std::vector<double> p0 = {0.5, -1.0, 2.0, 0.0, 3.0};
    const std::vector<double> g = {0.1, -3.0, 1e-4, 2.0, 0.0};
    Tensor p = param(p0, dtype);
    set_grad(p, g);
    Adam adam({{"p", p}}, AdamOptions{});
    const double lr = 1e-3;
    adam.step(lr);
    CHECK(adam.step_count() == 1);
    // m_hat = g and v_hat = g^2 after one step, so the update is lr * g / (|g| + eps).
    const auto got = p.to_double_vector();
    const double tol = dtype == kF32 ? 1e-7 : 1e-15;
    for (size_t i = 0; i < p0.size(); ++i) {
      INFO("element " << i);
      const double expect = p0[i] - lr * g[i] / (std::abs(g[i]) + 1e-9);
      CHECK(got[i] == Approx(expect).margin(tol));
    }
    CHECK(got[4] == 3.0);  // a zero gradient moves nothing
  }
}

TEST_CASE("Adam: three steps match a plain double reference", "[optim]") {
  const std::vector<std::vector<double>> grads = {
      {0.3, -1.2, 0.05, 2.0}, {-0.1, -0.8, 0.2, 1.5}, {0.4, 0.3, -0.6, -2.5}};
  const std::vector<double> lrs = {1e-2, 5e-2, 2e-2};
  for (double wd : {0.0, 0.1}) {
    INFO("weight_decay " << wd);
    AdamOptions opt;
    opt.beta1 = 0.9, opt.beta2 = 0.98, opt.eps = 1e-9, opt.weight_decay = wd;
    std::vector<double> ref = {1.0, -2.0, 0.5, 0.0};
    Tensor p = param(ref);
    Adam adam({{"p", p}}, opt);
    ReferenceAdam reference{opt.beta1, opt.beta2, opt.eps, wd};
    for (int s = 0; s < 3; ++s) {
      set_grad(p, grads[s]);
      adam.step(lrs[s]);
      reference.step(ref, grads[s], lrs[s]);
      const auto got = p.to_double_vector();
      for (size_t i = 0; i < ref.size(); ++i) CHECK(got[i] == Approx(ref[i]).epsilon(1e-13));
    }
    // The moments are what the reference has, too.
    const auto state = adam.state_tensors();
    REQUIRE(state.size() == 2);
    CHECK(state[0].first == "p.exp_avg");
    CHECK(state[1].first == "p.exp_avg_sq");
    const auto m = state[0].second.to_double_vector();
    const auto v = state[1].second.to_double_vector();
    for (size_t i = 0; i < ref.size(); ++i) {
      CHECK(m[i] == Approx(reference.m[i]).epsilon(1e-14));
      CHECK(v[i] == Approx(reference.v[i]).epsilon(1e-14));
    }
  }
}

TEST_CASE("Adam: weight decay is decoupled from the gradient", "[optim]") {
  // With a zero gradient the Adam term is 0 / (0 + eps) = 0, leaving only p *= 1 - lr * wd.
  AdamOptions opt;
  opt.weight_decay = 0.5;
  Tensor p = param({2.0, -4.0});
  Adam adam({{"p", p}}, opt);
  set_grad(p, {0.0, 0.0});
  adam.step(0.1);
  CHECK(p.to_double_vector() == std::vector<double>{2.0 * 0.95, -4.0 * 0.95});
}

TEST_CASE("Adam: updates land in the model's storage; params without grads stay", "[optim]") {
  Tensor a = param({1.0, 2.0}, kF32);
  Tensor b = param({3.0}, kF32);
  Tensor alias = a.detach();  // e.g. the handle a module keeps
  Adam adam({{"a", a}, {"b", b}}, AdamOptions{});
  set_grad(a, {1.0, -1.0});
  adam.step(0.5);
  CHECK(alias.to_double_vector()[0] == Approx(0.5));
  CHECK(alias.to_double_vector()[1] == Approx(2.5));
  CHECK(b.to_double_vector() == std::vector<double>{3.0});
  adam.zero_grad();
  CHECK_FALSE(a.grad().defined());
  adam.step(0.5);  // nothing has a gradient: nothing moves, the count still advances
  CHECK(adam.step_count() == 2);
  CHECK(alias.to_double_vector()[0] == Approx(0.5));
}

TEST_CASE("Adam: state saved and loaded gives bitwise identical updates", "[optim]") {
  Generator gen(3);
  Tensor w = Tensor::normal({4, 3}, 0.0, 1.0, gen, kF32).set_requires_grad(true);
  Tensor b = Tensor::normal({3}, 0.0, 1.0, gen, kF32).set_requires_grad(true);
  std::vector<Tensor> grads;
  for (int i = 0; i < 3; ++i) {
    grads.push_back(Tensor::normal({4, 3}, 0.0, 1.0, gen, kF32));
    grads.push_back(Tensor::normal({3}, 0.0, 1.0, gen, kF32));
  }
  const auto give_grads = [&](const Tensor& pw, const Tensor& pb, int step) {
    pw.impl()->grad = grads[2 * step].clone().impl_ptr();
    pb.impl()->grad = grads[2 * step + 1].clone().impl_ptr();
  };
  ScheduleOptions sched;
  sched.warmup = 2;
  AdamOptions opt;
  opt.weight_decay = 0.01;
  Adam adam({{"w", w}, {"b", b}}, opt);
  for (int s = 0; s < 2; ++s) {
    give_grads(w, b, s);
    adam.step(learning_rate(sched, adam.step_count() + 1));
  }

  // A checkpoint through safetensors files, as the trainer writes it.
  const auto dir =
      std::filesystem::temp_directory_path() / ("attn_test_optim_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string model_file = (dir / "model.safetensors").string();
  const std::string optim_file = (dir / "optimizer.safetensors").string();
  io::save_safetensors(model_file, {{"w", w}, {"b", b}});
  io::save_safetensors(optim_file, adam.state_tensors(),
                       {{"step", std::to_string(adam.step_count())}});
  const auto model = io::load_safetensors(model_file);
  const auto state = io::load_safetensors(optim_file);
  std::filesystem::remove_all(dir);

  Tensor w2 = model.tensors.at("w").clone().set_requires_grad(true);
  Tensor b2 = model.tensors.at("b").clone().set_requires_grad(true);
  Adam resumed({{"w", w2}, {"b", b2}}, opt);
  resumed.load_state(state.tensors, std::stoll(state.metadata.at("step")));
  CHECK(resumed.step_count() == 2);

  Tensor w3 = model.tensors.at("w").clone().set_requires_grad(true);
  Tensor b3 = model.tensors.at("b").clone().set_requires_grad(true);
  Adam fresh({{"w", w3}, {"b", b3}}, opt);  // control: without the state the step differs

  give_grads(w, b, 2);
  give_grads(w2, b2, 2);
  give_grads(w3, b3, 2);
  const double lr = learning_rate(sched, 3);
  adam.step(lr);
  resumed.step(lr);
  fresh.step(lr);
  CHECK(same_bytes(w, w2));
  CHECK(same_bytes(b, b2));
  CHECK_FALSE(same_bytes(w, w3));
  const auto s1 = adam.state_tensors(), s2 = resumed.state_tensors();
  for (size_t i = 0; i < s1.size(); ++i) CHECK(same_bytes(s1[i].second, s2[i].second));
}

TEST_CASE("Adam: bad state and bad parameters are named", "[optim]") {
  Tensor w = param({1.0, 2.0});
  Adam adam({{"w", w}}, AdamOptions{});
  const Tensor two = Tensor::zeros({2}, kF64);
  CHECK_THAT(error_of([&] {
               adam.load_state({{"w.exp_avg", two}}, 1);
             }),
             Catch::Contains("no 'w.exp_avg_sq'"));
  CHECK_THAT(error_of([&] {
               adam.load_state({{"w.exp_avg", two}, {"w.exp_avg_sq", Tensor::zeros({3})}}, 1);
             }),
             Catch::Contains("'w.exp_avg_sq' has shape [3] but parameter 'w' has shape [2]"));
  CHECK_THAT(error_of([&] {
               adam.load_state({{"w.exp_avg", two}, {"w.exp_avg_sq", two}, {"v.exp_avg", two}}, 1);
             }),
             Catch::Contains("'v.exp_avg', which matches no parameter"));
  CHECK(adam.step_count() == 0);  // failed loads change nothing

  CHECK_THAT(error_of([&] {
               Adam({{"w", w}, {"w", param({1.0})}}, AdamOptions{});
             }),
             Catch::Contains("'w' appears twice"));
  CHECK_THAT(error_of([&] {
               Adam({{"emb", w}, {"proj", w}}, AdamOptions{});
             }),
             Catch::Contains("'emb' and 'proj' are the same tensor"));
  AdamOptions bad;
  bad.beta2 = 1.0;
  CHECK_THAT(error_of([&] { Adam({{"w", w}}, bad); }), Catch::Contains("beta2 must be in [0, 1)"));
  Tensor f = param({1.0, 2.0}, kF32);
  Adam adam_f({{"f", f}}, AdamOptions{});
  set_grad(f, {1.0, 2.0});
  f.impl()->grad = Tensor::zeros({3}, kF32).impl_ptr();
  CHECK_THAT(error_of([&] { adam_f.step(1e-3); }), Catch::Contains("gradient of 'f'"));
}

TEST_CASE("Adam converges on a quadratic through autograd", "[optim]") {
  const std::vector<double> target = {1.0, 2.0, -1.0, 0.0};
  const Tensor c = Tensor::from_vector(target, {4}, kF64);
  const Tensor weights = Tensor::from_vector({1.0, 10.0, 0.1, 3.0}, {4}, kF64);
  Tensor x = param({5.0, -3.0, 2.0, 0.5});
  Adam adam({{"x", x}}, AdamOptions{});
  ScheduleOptions sched;
  sched.kind = "inverse_sqrt";
  sched.peak_lr = 0.1;
  sched.warmup = 10;
  double first_loss = 0, loss_value = 0;
  for (int s = 1; s <= 600; ++s) {
    adam.zero_grad();
    const Tensor d = sub(x, c);
    const Tensor loss = sum(mul(weights, mul(d, d)));
    loss_value = loss.item();
    if (s == 1) first_loss = loss_value;
    loss.backward();
    adam.step(learning_rate(sched, s));
  }
  CHECK(loss_value < 1e-4 * first_loss);
  const auto got = x.to_double_vector();
  for (size_t i = 0; i < target.size(); ++i) CHECK(got[i] == Approx(target[i]).margin(1e-2));
}

TEST_CASE("Learning-rate schedules", "[optim]") {
  SECTION("noam (Vaswani et al. 5.3), d_model 512, warmup 4000") {
    ScheduleOptions o;  // noam, factor 1, warmup 4000, d_model 512
    const auto noam = [](double step) {
      return std::pow(512.0, -0.5) * std::min(std::pow(step, -0.5), step * std::pow(4000.0, -1.5));
    };
    CHECK(learning_rate(o, 1) == Approx(noam(1)).epsilon(1e-12));
    CHECK(learning_rate(o, 1) == Approx(1.746928107421711e-07).epsilon(1e-12));
    CHECK(learning_rate(o, 4000) == Approx(6.987712429686843e-04).epsilon(1e-12));
    CHECK(learning_rate(o, 16000) == Approx(3.4938562148434214e-04).epsilon(1e-12));
    CHECK(learning_rate(o, 3999) < learning_rate(o, 4000));
    CHECK(learning_rate(o, 4001) < learning_rate(o, 4000));
    o.factor = 2.0;
    CHECK(learning_rate(o, 16000) == Approx(2 * noam(16000)).epsilon(1e-12));
  }
  SECTION("inverse_sqrt (fairseq): linear warmup to the peak, then 1/sqrt decay") {
    ScheduleOptions o;
    o.kind = "inverse_sqrt";
    o.peak_lr = 5e-4;
    o.warmup = 4000;
    CHECK(learning_rate(o, 1) == Approx(5e-4 / 4000).epsilon(1e-12));
    CHECK(learning_rate(o, 2000) == Approx(2.5e-4).epsilon(1e-12));
    CHECK(learning_rate(o, 4000) == Approx(5e-4).epsilon(1e-12));
    CHECK(learning_rate(o, 4001) == Approx(5e-4 * std::sqrt(4000.0 / 4001.0)).epsilon(1e-12));
    CHECK(learning_rate(o, 4001) < learning_rate(o, 4000));
    CHECK(learning_rate(o, 16000) == Approx(2.5e-4).epsilon(1e-12));
  }
  SECTION("constant") {
    ScheduleOptions o;
    o.kind = "constant";
    o.peak_lr = 3e-4;
    CHECK(learning_rate(o, 1) == 3e-4);
    CHECK(learning_rate(o, 1000000) == 3e-4);
  }
  SECTION("validation names the field") {
    ScheduleOptions o;
    o.kind = "cosine";
    CHECK_THAT(error_of([&] { validate(o); }),
               Catch::Equals("train.lr_schedule must be one of noam, inverse_sqrt, constant, got "
                             "'cosine'"));
    o.kind = "noam";
    o.warmup = 0;
    CHECK_THAT(error_of([&] { validate(o); }), Catch::Contains("train.warmup_steps must be >= 1"));
    o.warmup = 10;
    CHECK_THAT(error_of([&] { learning_rate(o, 0); }), Catch::Contains("steps count from 1"));
    o.kind = "constant";
    o.peak_lr = -1;
    CHECK_THAT(error_of([&] { validate(o); }), Catch::Contains("train.lr must be > 0"));
  }
}

TEST_CASE("cooldown_factor: 1, then linear to 0 over the last fraction of the run", "[optim]") {
  CHECK(cooldown_factor(0.0, 0.0) == 1.0);
  CHECK(cooldown_factor(0.0, 0.999) == 1.0);
  CHECK(cooldown_factor(0.2, 0.0) == 1.0);
  CHECK(cooldown_factor(0.2, 0.8) == Approx(1.0).epsilon(1e-12));
  CHECK(cooldown_factor(0.2, 0.9) == Approx(0.5).epsilon(1e-12));
  CHECK(cooldown_factor(0.2, 0.95) == Approx(0.25).epsilon(1e-12));
  CHECK(cooldown_factor(0.2, 1.0) == 0.0);
  CHECK(cooldown_factor(0.2, 1.5) == 0.0);  // past the end (a resumed run past max_time)
  CHECK(cooldown_factor(1.0, 0.25) == Approx(0.75).epsilon(1e-12));
  CHECK(cooldown_factor(0.5, 0.6) > cooldown_factor(0.5, 0.7));
  CHECK_THAT(error_of([] { cooldown_factor(1.5, 0.5); }),
             Catch::Contains("train.cooldown must be in [0, 1], got 1.5"));
  CHECK_THAT(error_of([] { cooldown_factor(-0.1, 0.5); }),
             Catch::Contains("train.cooldown must be in [0, 1]"));
  CHECK_THAT(error_of([] { cooldown_factor(0.5, std::nan("")); }),
             Catch::Contains("progress must be finite"));
}

TEST_CASE("clip_grad_norm scales to max_norm and returns the norm before", "[optim]") {
  Tensor a = param({0.0, 0.0}, kF32);
  Tensor b = param({0.0}, kF64);
  Tensor none = param({0.0});  // no gradient: ignored
  const std::vector<Tensor> params = {a, b, none};
  set_grad(a, {3.0, 4.0});
  set_grad(b, {12.0});
  CHECK(grad_norm(params) == Approx(13.0).epsilon(1e-15));

  CHECK(clip_grad_norm(params, 20.0) == Approx(13.0));  // under the limit: untouched
  CHECK(clip_grad_norm(params, 0.0) == Approx(13.0));   // 0 means no clipping
  CHECK(b.grad().item() == 12.0);

  CHECK(clip_grad_norm(params, 6.5) == Approx(13.0).epsilon(1e-15));
  const double f = 6.5 / (13.0 + 1e-6);
  CHECK(a.grad().to_double_vector()[0] == Approx(3.0 * f).epsilon(1e-7));
  CHECK(a.grad().to_double_vector()[1] == Approx(4.0 * f).epsilon(1e-7));
  CHECK(b.grad().item() == Approx(12.0 * f).epsilon(1e-15));
  CHECK(grad_norm(params) == Approx(6.5).epsilon(1e-6));

  SECTION("non-finite norms are returned and the gradients left alone") {
    set_grad(b, {std::numeric_limits<double>::infinity()});
    CHECK(std::isinf(clip_grad_norm(params, 1.0)));
    set_grad(b, {std::nan("")});
    CHECK(std::isnan(clip_grad_norm(params, 1.0)));
    CHECK(a.grad().to_double_vector()[0] == Approx(3.0 * f).epsilon(1e-7));
  }
  SECTION("large tensors: accumulated in double") {
    Tensor big = Tensor::zeros({300000}, kF32).set_requires_grad(true);
    big.impl()->grad = Tensor::full({300000}, 1e-3, kF32).impl_ptr();
    const double e = static_cast<double>(1e-3f);
    CHECK(grad_norm({big}) == Approx(std::sqrt(300000 * e * e)).epsilon(1e-12));
  }
}
