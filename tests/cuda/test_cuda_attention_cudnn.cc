// The cudnn attention backend (kernels/attention_cudnn.cc through ops::attention_*) against
// the CPU reference (f64 on the same rounded inputs) and against the fused backend on the same
// inputs: forward out and lse, backward dq/dk/dv, bf16 and f16, head dims 32/64/128, padded key
// lengths, causal and not, Tq != Tk both ways. Every parity case also requires that cuDNN ran
// (the result's backend is cudnn): a silent fallback to fused would otherwise pass.
//
// Dropout: cuDNN draws its own Philox bits, so its keep mask cannot equal fused's for the same
// seed and offset. The dropout case reads cuDNN's mask back from the forward (q = 0 makes every
// probability 1/Tk, and v = the identity puts keep_ij / (Tk (1 - p)) in out[i][j]), checks the
// keep rate and the 1/(1-p) scaling statistically, and checks the backward against gradients
// computed on the host from that same mask (so the backward must regenerate the forward's mask).
// The parity cases run with dropout 0.
//
// Calls cuDNN cannot run (f32, one query row, a key length of 0, causal with Tq > Tk) must run
// on fused and say so in the result; they are compared bit for bit with the fused op.
//
// Tolerances (|got - want| <= atol + rtol * |want|), as in test_cuda_attention.cc:
//  - out: tolerance_for(dtype) (bf16 2e-2, f16 3e-3); lse (cuDNN's Stats): 1e-4 abs and rel.
//  - dq, dk, dv: atol scaled by max(1, max |reference|): bf16 4e-2, f16 5e-3 (rtol 2e-2, 3e-3).
//  - cudnn vs fused: the sum of the two tolerances against the reference (atol and rtol doubled).
//  - keep rate: within 5 binomial standard deviations of 1 - p.
#include <array>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "core/cuda_backend.h"
#include "core/tensor.h"
#include "cuda/cuda_test_util.h"
#include "kernels/attention.h"
#include "ops/attention.h"

namespace attn {
namespace {

using cuda_test::as_f64_cpu;
using cuda_test::bytes_of;
using cuda_test::kGpu;
using cuda_test::random_tensor;
using cuda_test::require_close;
using cuda_test::Tolerance;
using cuda_test::tolerance_for;
using ops::AttentionBackend;

const int64_t kHeadDims[] = {32, 64, 128};
const DType kHalfTypes[] = {kBF16, kF16};

struct Case {
  int64_t batch, heads, q_len, k_len;
  std::vector<int32_t> lengths;  // empty: no key_lengths
  bool causal = false;
};

std::string describe(const Case& c, int64_t d, DType dt) {
  std::ostringstream os;
  os << "dtype " << dt << ", B " << c.batch << ", H " << c.heads << ", Tq " << c.q_len << ", Tk "
     << c.k_len << ", D " << d << ", causal " << c.causal << ", key_lengths {";
  for (size_t i = 0; i < c.lengths.size(); ++i) os << (i ? ", " : "") << c.lengths[i];
  return os.str() + "}";
}

ops::AttentionOptions options(const Case& c, Device device, AttentionBackend backend,
                              double dropout = 0.0) {
  ops::AttentionOptions opt;
  if (!c.lengths.empty())
    opt.key_lengths =
        Tensor::from_ints(c.lengths, {static_cast<int64_t>(c.lengths.size())}).to(device);
  opt.causal = c.causal;
  opt.dropout_p = dropout;
  opt.seed = 0x243f6a8885a308d3ull;
  opt.offset = 4096;
  opt.backend = backend;
  return opt;
}

Tolerance lse_tolerance() { return {1e-4, 1e-4}; }

Tolerance grad_tolerance(DType dt, const Tensor& ref) {
  double scale = 1.0;
  for (double x : ref.to_double_vector()) scale = std::max(scale, std::fabs(x));
  return dt == kBF16 ? Tolerance{4e-2 * scale, 2e-2} : Tolerance{5e-3 * scale, 3e-3};
}

Tolerance doubled(Tolerance t) { return {2 * t.atol, 2 * t.rtol}; }

// cudnn, fused and the CPU reference on the same inputs.
void check_parity(const Case& c, int64_t d, DType dt, uint64_t seed) {
  INFO(describe(c, d, dt));
  const Tensor q = random_tensor({c.batch, c.heads, c.q_len, d}, dt, kGpu, seed, -2.0, 2.0);
  const Tensor k = random_tensor({c.batch, c.heads, c.k_len, d}, dt, kGpu, seed + 1, -2.0, 2.0);
  const Tensor v = random_tensor({c.batch, c.heads, c.k_len, d}, dt, kGpu, seed + 2);
  const Tensor dout = random_tensor(q.shape(), dt, kGpu, seed + 3);
  const ops::AttentionOptions cu = options(c, kGpu, AttentionBackend::cudnn);
  const ops::AttentionOptions fu = options(c, kGpu, AttentionBackend::fused);
  const ops::AttentionOptions cpu = options(c, Device::cpu(), AttentionBackend::fused);

  const Tensor q64 = as_f64_cpu(q), k64 = as_f64_cpu(k), v64 = as_f64_cpu(v);
  const ops::AttentionResult ref = ops::attention_forward(q64, k64, v64, cpu);
  const ops::AttentionResult rc = ops::attention_forward(q, k, v, cu);
  const ops::AttentionResult rf = ops::attention_forward(q, k, v, fu);
  REQUIRE(rc.backend == AttentionBackend::cudnn);
  REQUIRE(rf.backend == AttentionBackend::fused);
  require_close(rc.out, ref.out, tolerance_for(dt), "cudnn out vs reference");
  require_close(rc.lse, ref.lse, lse_tolerance(), "cudnn lse (Stats) vs reference");
  require_close(rf.out, ref.out, tolerance_for(dt), "fused out vs reference");
  require_close(rc.out, rf.out, doubled(tolerance_for(dt)), "cudnn out vs fused");

  ops::AttentionOptions cu_bwd = cu;
  cu_bwd.backend = rc.backend;
  const ops::AttentionGrads gref =
      ops::attention_backward(as_f64_cpu(dout), q64, k64, v64, ref.out, ref.lse, cpu);
  const ops::AttentionGrads gc = ops::attention_backward(dout, q, k, v, rc.out, rc.lse, cu_bwd);
  const ops::AttentionGrads gf = ops::attention_backward(dout, q, k, v, rf.out, rf.lse, fu);
  const std::pair<const char*, std::array<const Tensor*, 3>> grads[] = {
      {"dq", {&gc.q, &gf.q, &gref.q}}, {"dk", {&gc.k, &gf.k, &gref.k}},
      {"dv", {&gc.v, &gf.v, &gref.v}}};
  for (const auto& [name, t] : grads) {
    const Tolerance tol = grad_tolerance(dt, *t[2]);
    require_close(*t[0], *t[2], tol, std::string("cudnn ") + name + " vs reference");
    require_close(*t[1], *t[2], tol, std::string("fused ") + name + " vs reference");
    require_close(*t[0], *t[1], doubled(tol), std::string("cudnn ") + name + " vs fused");
  }
}

}  // namespace

TEST_CASE("cudnn attention: forward and backward match fused and the CPU reference",
          "[cuda][cudnn]") {
  // Self-attention with and without padding and causal masks, cross-attention both ways
  // (Tq < Tk and Tq > Tk), a causal band shifted by Tk - Tq, single-key rows (length 1).
  const std::vector<Case> cases = {
      {2, 2, 64, 64, {}},
      {3, 2, 17, 17, {17, 1, 9}},
      {2, 2, 64, 64, {}, true},
      {2, 2, 70, 70, {70, 33}, true},
      {2, 2, 33, 200, {200, 150}},
      {2, 2, 130, 77, {77, 3}},
      {1, 2, 77, 130, {}, true},
      {2, 1, 40, 96, {96, 50}, true},
      {1, 1, 512, 512, {300}, true},
  };
  uint64_t seed = 20000;
  for (const DType dt : kHalfTypes) {
    for (const int64_t d : kHeadDims) {
      for (const Case& c : cases) check_parity(c, d, dt, seed += 10);
    }
  }
}

TEST_CASE("cudnn attention: calls cuDNN cannot run use fused and say so", "[cuda][cudnn]") {
  struct Fallback {
    Case c;
    DType dt;
    const char* why;
  };
  const std::vector<Fallback> cases = {
      {{2, 2, 19, 23, {23, 4}, true}, kF32, "f32"},
      {{3, 2, 1, 23, {23, 7, 4}}, kBF16, "one query row"},
      {{3, 2, 16, 16, {16, 0, 4}}, kF16, "a key length of 0"},
      {{2, 2, 40, 24, {}, true}, kBF16, "causal with Tq > Tk"},
      {{1, 2, 3, 0, {}}, kBF16, "no keys"},
      {{1, 2, 0, 5, {}}, kF16, "no queries"},
  };
  for (const Fallback& f : cases) {
    const int64_t d = 64;
    INFO(f.why << ": " << describe(f.c, d, f.dt));
    const Tensor q = random_tensor({f.c.batch, f.c.heads, f.c.q_len, d}, f.dt, kGpu, 31, -2, 2);
    const Tensor k = random_tensor({f.c.batch, f.c.heads, f.c.k_len, d}, f.dt, kGpu, 32, -2, 2);
    const Tensor v = random_tensor(k.shape(), f.dt, kGpu, 33);
    const Tensor dout = random_tensor(q.shape(), f.dt, kGpu, 34);
    const ops::AttentionOptions cu = options(f.c, kGpu, AttentionBackend::cudnn);
    const ops::AttentionOptions fu = options(f.c, kGpu, AttentionBackend::fused);
    const ops::AttentionResult rc = ops::attention_forward(q, k, v, cu);
    const ops::AttentionResult rf = ops::attention_forward(q, k, v, fu);
    REQUIRE(rc.backend == AttentionBackend::fused);
    CHECK(bytes_of(rc.out) == bytes_of(rf.out));
    CHECK(bytes_of(rc.lse) == bytes_of(rf.lse));
    // The backward, asked for cudnn, follows the same rule.
    const ops::AttentionGrads gc = ops::attention_backward(dout, q, k, v, rc.out, rc.lse, cu);
    const ops::AttentionGrads gf = ops::attention_backward(dout, q, k, v, rf.out, rf.lse, fu);
    CHECK(bytes_of(gc.q) == bytes_of(gf.q));
    CHECK(bytes_of(gc.k) == bytes_of(gf.k));
    CHECK(bytes_of(gc.v) == bytes_of(gf.v));
  }
}

TEST_CASE("cudnn attention: built graphs are cached per shape", "[cuda][cudnn]") {
  const Case c{2, 2, 48, 48, {48, 20}, true};
  const int64_t d = 64;
  const Tensor q = random_tensor({2, 2, 48, d}, kBF16, kGpu, 41, -2, 2);
  const Tensor k = random_tensor(q.shape(), kBF16, kGpu, 42, -2, 2);
  const Tensor v = random_tensor(q.shape(), kBF16, kGpu, 43);
  const ops::AttentionOptions cu = options(c, kGpu, AttentionBackend::cudnn);
  const ops::AttentionResult r1 = ops::attention_forward(q, k, v, cu);
  REQUIRE(r1.backend == AttentionBackend::cudnn);
  const int64_t graphs = kernels::attention_cudnn_cached_graphs();
  const ops::AttentionResult r2 = ops::attention_forward(q, k, v, cu);
  CHECK(kernels::attention_cudnn_cached_graphs() == graphs);  // reused
  CHECK(bytes_of(r1.out) == bytes_of(r2.out));
  CHECK(bytes_of(r1.lse) == bytes_of(r2.lse));
  // Another length (same B, H, T, D) is the same graph: lengths are data, not shape.
  ops::AttentionOptions other = cu;
  other.key_lengths = Tensor::from_ints({5, 48}, {2}).to(kGpu);
  (void)ops::attention_forward(q, k, v, other);
  CHECK(kernels::attention_cudnn_cached_graphs() == graphs);
  // A new shape adds one.
  const Tensor q2 = random_tensor({2, 2, 32, d}, kBF16, kGpu, 44, -2, 2);
  ops::AttentionOptions shorter = cu;
  shorter.key_lengths = Tensor::from_ints({32, 20}, {2}).to(kGpu);
  (void)ops::attention_forward(q2, q2, q2, shorter);
  CHECK(kernels::attention_cudnn_cached_graphs() == graphs + 1);
}

TEST_CASE("cudnn attention: dropout keeps 1 - p of the probabilities, scaled by 1/(1-p), and "
          "the backward uses the forward's mask",
          "[cuda][cudnn]") {
  const int64_t B = 2, H = 2, Tq = 96, Tk = 32;
  const double p = 0.25;
  for (const DType dt : kHalfTypes) {
    for (const int64_t d : kHeadDims) {
      INFO("dtype " << dt << ", D " << d);
      const Tensor q = Tensor::zeros({B, H, Tq, d}, dt, kGpu);
      const Tensor k = random_tensor({B, H, Tk, d}, dt, kGpu, 51);
      std::vector<double> eye(static_cast<size_t>(B * H * Tk * d), 0.0);
      for (int64_t bh = 0; bh < B * H; ++bh)
        for (int64_t j = 0; j < Tk; ++j) eye[static_cast<size_t>((bh * Tk + j) * d + j)] = 1.0;
      const Tensor v = Tensor::from_vector(eye, {B, H, Tk, d}).to(dt).to(kGpu);
      const Tensor dout = random_tensor({B, H, Tq, d}, dt, kGpu, 52);
      const ops::AttentionOptions cu =
          options(Case{B, H, Tq, Tk, {}}, kGpu, AttentionBackend::cudnn, p);
      const ops::AttentionResult r = ops::attention_forward(q, k, v, cu);
      REQUIRE(r.backend == AttentionBackend::cudnn);

      // The mask from the output: out[i][j] = keep_ij / (Tk (1 - p)) for j < Tk, 0 beyond.
      const std::vector<double> o = r.out.to_double_vector();
      const double kept_value = 1.0 / (Tk * (1.0 - p));
      std::vector<char> keep(static_cast<size_t>(B * H * Tq * Tk));
      int64_t kept = 0, odd = 0;
      for (int64_t row = 0; row < B * H * Tq; ++row) {
        for (int64_t j = 0; j < d; ++j) {
          const double x = o[static_cast<size_t>(row * d + j)];
          if (j >= Tk) {
            odd += x != 0.0;
            continue;
          }
          const bool kp = x != 0.0;
          keep[static_cast<size_t>(row * Tk + j)] = kp;
          kept += kp;
          // Kept values are scaled by 1/(1-p) (inverted dropout: the mean is unchanged).
          if (kp && !(std::fabs(x - kept_value) <= tolerance_for(dt).rtol * kept_value)) ++odd;
        }
      }
      const double n = static_cast<double>(B * H * Tq * Tk);
      const double rate = static_cast<double>(kept) / n;
      INFO("keep rate " << rate << " over " << n << " draws");
      REQUIRE(odd == 0);
      REQUIRE(std::fabs(rate - (1.0 - p)) <= 5.0 * std::sqrt(p * (1.0 - p) / n));

      // The backward on the host from that mask (every key visible, P = 1/Tk, q = 0 so dk = 0):
      // dv_j = sum_i drop_ij P dO_i; dP_ij = drop_ij dO_i[j]; D_i = sum_j dO_i[j] O_i[j];
      // dq_i = scale * sum_j P (dP_ij - D_i) k_j.
      ops::AttentionOptions cu_bwd = cu;
      cu_bwd.backend = r.backend;
      const ops::AttentionGrads g = ops::attention_backward(dout, q, k, v, r.out, r.lse, cu_bwd);
      const std::vector<double> dov = dout.to_double_vector(), kv = k.to_double_vector();
      std::vector<double> dq(static_cast<size_t>(B * H * Tq * d), 0.0);
      std::vector<double> dv(static_cast<size_t>(B * H * Tk * d), 0.0);
      const double P = 1.0 / Tk, scale = 1.0 / std::sqrt(static_cast<double>(d));
      for (int64_t bh = 0; bh < B * H; ++bh) {
        for (int64_t i = 0; i < Tq; ++i) {
          const int64_t row = bh * Tq + i;
          const double* dO = &dov[static_cast<size_t>(row * d)];
          auto drop = [&](int64_t j) {
            return keep[static_cast<size_t>(row * Tk + j)] ? 1.0 / (1.0 - p) : 0.0;
          };
          double Di = 0;
          for (int64_t j = 0; j < Tk; ++j) Di += dO[j] * drop(j) * P;
          for (int64_t j = 0; j < Tk; ++j) {
            const double dS = P * (drop(j) * dO[j] - Di);
            for (int64_t e = 0; e < d; ++e) {
              dq[static_cast<size_t>(row * d + e)] +=
                  scale * dS * kv[static_cast<size_t>((bh * Tk + j) * d + e)];
              dv[static_cast<size_t>((bh * Tk + j) * d + e)] += drop(j) * P * dO[e];
            }
          }
        }
      }
      const Tensor dq_ref = Tensor::from_vector(dq, q.shape(), kF64);
      const Tensor dv_ref = Tensor::from_vector(dv, v.shape(), kF64);
      require_close(g.q, dq_ref, grad_tolerance(dt, dq_ref), "dq from the forward's mask");
      require_close(g.v, dv_ref, grad_tolerance(dt, dv_ref), "dv from the forward's mask");
      require_close(g.k, Tensor::zeros(k.shape(), kF64), {1e-6, 0}, "dk (q = 0)");
    }
  }
}

TEST_CASE("cudnn attention: the differentiable attention() records the backend that ran",
          "[cuda][cudnn]") {
  const int64_t B = 2, H = 2, T = 40, d = 64;
  const Tensor lengths = Tensor::from_ints({40, 17}, {2}).to(kGpu);
  Tensor grads[2][3];
  Tensor outs[2];
  for (int which = 0; which < 2; ++which) {
    Tensor q = random_tensor({B, H, T, d}, kBF16, kGpu, 61, -2, 2).set_requires_grad(true);
    Tensor k = random_tensor({B, H, T, d}, kBF16, kGpu, 62, -2, 2).set_requires_grad(true);
    Tensor v = random_tensor({B, H, T, d}, kBF16, kGpu, 63).set_requires_grad(true);
    const AttentionBackend b = which == 0 ? AttentionBackend::cudnn : AttentionBackend::fused;
    outs[which] = attention(q, k, v, lengths, /*causal=*/true, 0.0, nullptr, b);
    outs[which].backward(random_tensor(q.shape(), kBF16, kGpu, 64));
    grads[which][0] = q.grad();
    grads[which][1] = k.grad();
    grads[which][2] = v.grad();
  }
  require_close(outs[0], outs[1], doubled(tolerance_for(kBF16)), "out cudnn vs fused");
  const char* names[] = {"dq", "dk", "dv"};
  for (int i = 0; i < 3; ++i)
    require_close(grads[0][i], grads[1][i], doubled(grad_tolerance(kBF16, grads[1][i])),
                  std::string(names[i]) + " cudnn vs fused");
}

}  // namespace attn
