// CUDA attention (kernels/attention_cuda.cu) against the CPU reference run in f64 on the same
// rounded inputs: forward output and lse, backward dq/dk/dv, the decode kernel (q_len 1), the
// dropout keep decisions bit for bit, the op-level wiring (decode routing, workspace) and the
// unsupported head dim error. Every kernel output (and the backward workspace) is poisoned with
// NaN first, so an element a kernel forgets to write fails.
//
// Tolerances (|got - want| <= atol + rtol * |want|):
//  - out (forward and decode): tolerance_for(dtype): f32 2e-5, bf16 2e-2, f16 3e-3 (outputs are
//    O(1) here); the bf16/f16 kernels round P to the input type before P V, as FlashAttention does.
//  - lse: f32 2e-5, bf16/f16 1e-4 (fp32 in every case; only the score dot products differ).
//  - dq, dk, dv: atol scaled by max(1, max |reference|) of that tensor, since gradients can cancel
//    to ~0 while their terms are O(1): f32 2e-5, bf16 4e-2, f16 5e-3 (rtol 2e-5, 2e-2, 3e-3). The
//    bf16/f16 backward uses the output rounded to the input type for D_i = rowsum(dO * O) and rounds
//    P and dS before the products; the worst case is a row with a single visible key, where dS is
//    a cancellation of two O(1) terms (about a third of these bounds in a CPU model of the kernels).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "core/cuda_backend.h"
#include "core/dispatch.h"
#include "core/tensor.h"
#include "cuda/cuda_test_util.h"
#include "kernels/attention.h"
#include "kernels/dropout.h"
#include "ops/attention.h"

namespace attn {
namespace {

using cuda_test::as_f64_cpu;
using cuda_test::kGpu;
using cuda_test::kGpuFloatTypes;
using cuda_test::misaligned_copy;
using cuda_test::poisoned;
using cuda_test::random_tensor;
using cuda_test::require_close;
using cuda_test::Tolerance;
using cuda_test::tolerance_for;
using cuda_test::with_gpu_type;
using Catch::Matchers::Contains;

const int64_t kHeadDims[] = {32, 64, 128};

struct Case {
  int64_t batch, heads, q_len, k_len;
  std::vector<int32_t> lengths;  // empty: no key_lengths
  bool causal = false;
  double dropout = 0.0;
};

std::string describe(const Case& c, int64_t head_dim, DType dt, bool misaligned = false) {
  std::ostringstream os;
  os << "dtype " << dt << ", B " << c.batch << ", H " << c.heads << ", Tq " << c.q_len << ", Tk "
     << c.k_len << ", D " << head_dim << ", causal " << c.causal << ", dropout " << c.dropout
     << ", key_lengths {";
  for (size_t i = 0; i < c.lengths.size(); ++i) os << (i ? ", " : "") << c.lengths[i];
  os << "}" << (misaligned ? ", misaligned rows" : "");
  return os.str();
}

Tolerance lse_tolerance(DType dt) {
  return dt == kF32 ? Tolerance{2e-5, 2e-5} : Tolerance{1e-4, 1e-4};
}

// atol scaled by the size of the reference gradient (at least 1).
Tolerance grad_tolerance(DType dt, const Tensor& ref) {
  double scale = 1.0;
  for (double x : ref.to_double_vector()) scale = std::max(scale, std::fabs(x));
  switch (dt) {
    case DType::kF32: return {2e-5 * scale, 2e-5};
    case DType::kBF16: return {4e-2 * scale, 2e-2};
    default: return {5e-3 * scale, 3e-3};
  }
}

// Random values in [lo, hi) rounded to dt, on the GPU. With `misaligned` the tensor is a view
// starting one element into its storage, so rows are not 16-byte aligned (the kernels' scalar
// load path).
Tensor gpu_input(const Shape& shape, DType dt, uint64_t seed, double lo, double hi,
                 bool misaligned) {
  const Tensor t = random_tensor(shape, dt, kGpu, seed, lo, hi);
  return misaligned ? misaligned_copy(t) : t;
}

// A poisoned output, misaligned like the inputs when asked.
Tensor gpu_output(const Shape& shape, DType dt, bool misaligned) {
  if (!misaligned) return poisoned(shape, dt);
  const int64_t n = shape_numel(shape);
  return poisoned({n + 1}, dt).narrow0(1, n + 1).view(shape);
}

ops::AttentionOptions options(const Case& c, Device device) {
  ops::AttentionOptions opt;
  if (!c.lengths.empty()) {
    opt.key_lengths =
        Tensor::from_ints(c.lengths, {static_cast<int64_t>(c.lengths.size())}).to(device);
  }
  opt.causal = c.causal;
  opt.dropout_p = c.dropout;
  opt.seed = 0x9e3779b97f4a7c15ull;
  opt.offset = (uint64_t(1) << 32) + 12345;  // a counter above 2^32: both counter words matter
  return opt;
}

kernels::AttentionArgs kernel_args(const Case& c, int64_t head_dim,
                                   const ops::AttentionOptions& gpu_opt) {
  kernels::AttentionArgs a;
  a.batch = c.batch;
  a.heads = c.heads;
  a.q_len = c.q_len;
  a.k_len = c.k_len;
  a.head_dim = head_dim;
  a.scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  a.key_lengths = gpu_opt.key_lengths.defined() ? gpu_opt.key_lengths.data<int32_t>() : nullptr;
  a.causal = c.causal;
  a.dropout_p = static_cast<float>(c.dropout);
  a.seed = gpu_opt.seed;
  a.offset = gpu_opt.offset;
  return a;
}

// Forward (or decode) and backward kernels on fresh random inputs against the f64 CPU op.
void check_case(const Case& c, int64_t head_dim, DType dt, uint64_t seed, bool backward = true,
                bool decode = false, bool misaligned = false) {
  INFO(describe(c, head_dim, dt, misaligned) << (decode ? ", decode kernel" : ""));
  const Shape q_shape{c.batch, c.heads, c.q_len, head_dim};
  const Shape kv_shape{c.batch, c.heads, c.k_len, head_dim};
  const Shape lse_shape{c.batch, c.heads, c.q_len};
  const Tensor q = gpu_input(q_shape, dt, seed, -2.0, 2.0, misaligned);
  const Tensor k = gpu_input(kv_shape, dt, seed + 1, -2.0, 2.0, misaligned);
  const Tensor v = gpu_input(kv_shape, dt, seed + 2, -1.0, 1.0, misaligned);
  const Tensor dout = gpu_input(q_shape, dt, seed + 3, -1.0, 1.0, misaligned);
  const ops::AttentionOptions gpu_opt = options(c, kGpu);
  const ops::AttentionOptions cpu_opt = options(c, Device::cpu());
  const kernels::AttentionArgs a = kernel_args(c, head_dim, gpu_opt);

  const Tensor q64 = as_f64_cpu(q), k64 = as_f64_cpu(k), v64 = as_f64_cpu(v);
  const ops::AttentionResult ref = ops::attention_forward(q64, k64, v64, cpu_opt);

  Tensor out = gpu_output(q_shape, dt, misaligned);
  Tensor lse = poisoned(lse_shape, kF32);
  with_gpu_type(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (decode) {
      kernels::attention_decode_cuda<T>(a, q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(),
                                        lse.data<float>(), cuda::stream(0));
    } else {
      kernels::attention_forward_cuda<T>(a, q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(),
                                         lse.data<float>(), cuda::stream(0));
    }
  });
  cuda::synchronize(0);
  require_close(out, ref.out, tolerance_for(dt), "out");
  require_close(lse, ref.lse, lse_tolerance(dt), "lse");
  if (!backward) return;

  const ops::AttentionGrads gref =
      ops::attention_backward(as_f64_cpu(dout), q64, k64, v64, ref.out, ref.lse, cpu_opt);
  Tensor dq = gpu_output(q_shape, dt, misaligned);
  Tensor dk = gpu_output(kv_shape, dt, misaligned);
  Tensor dv = gpu_output(kv_shape, dt, misaligned);
  Tensor workspace = poisoned({kernels::attention_backward_cuda_workspace(a) + 1}, kF32);
  with_gpu_type(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    // The GPU forward's own out and lse, as training uses them.
    kernels::attention_backward_cuda<T>(a, q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(),
                                        lse.data<float>(), dout.data<T>(), dq.data<T>(),
                                        dk.data<T>(), dv.data<T>(), workspace.data<float>(),
                                        cuda::stream(0));
  });
  cuda::synchronize(0);
  require_close(dq, gref.q, grad_tolerance(dt, gref.q), "dq");
  require_close(dk, gref.k, grad_tolerance(dt, gref.k), "dk");
  require_close(dv, gref.v, grad_tolerance(dt, gref.v), "dv");
}

}  // namespace

TEST_CASE("cuda attention: forward and backward match the CPU reference", "[cuda]") {
  // (Tq, Tk) pairs from a single key to 512 x 512, cross attention both ways, key lengths with
  // a fully padded entry (0), a single key (1) and full length, causal and not, dropout 0 and 0.1.
  const std::vector<Case> cases = {
      {1, 1, 1, 1, {}},
      {2, 2, 1, 37, {37, 5}},
      {2, 2, 1, 37, {}, true},
      {2, 2, 17, 17, {}, true},
      {3, 2, 17, 17, {17, 0, 1}},
      {2, 2, 64, 64, {64, 40}, true, 0.1},
      {2, 2, 64, 64, {}},
      {2, 2, 130, 77, {77, 3}},
      {2, 1, 130, 77, {}, true, 0.1},
      {1, 2, 77, 130, {}, true},
      {3, 1, 70, 70, {0, 1, 70}, true, 0.1},
      {2, 1, 33, 200, {200, 150}, true, 0.1},
      {1, 1, 512, 512, {}, true, 0.1},
      {1, 1, 512, 512, {300}},
  };
  uint64_t seed = 100;
  for (const DType dt : kGpuFloatTypes) {
    for (const int64_t d : kHeadDims) {
      for (const Case& c : cases) check_case(c, d, dt, seed += 10);
    }
  }
}

TEST_CASE("cuda attention: rows that are not 16-byte aligned take the scalar path",
          "[cuda][small]") {
  uint64_t seed = 5000;
  for (const DType dt : kGpuFloatTypes) {
    for (const int64_t d : kHeadDims) {
      check_case({2, 2, 70, 45, {45, 9}, true, 0.1}, d, dt, seed += 10, true, false, true);
      check_case({2, 2, 1, 45, {45, 9}}, d, dt, seed += 10, false, true, true);
    }
  }
}

TEST_CASE("cuda attention: empty query or key ranges", "[cuda][small]") {
  uint64_t seed = 7000;
  for (const DType dt : kGpuFloatTypes) {
    for (const int64_t d : kHeadDims) {
      check_case({1, 2, 0, 5, {}}, d, dt, seed += 10);         // nothing to compute; dk = dv = 0
      check_case({1, 2, 3, 0, {}}, d, dt, seed += 10);         // no keys: out 0, lse -inf, dq 0
      check_case({2, 2, 40, 40, {0, 0}, true}, d, dt, seed += 10);  // every row fully masked
    }
  }
}

TEST_CASE("cuda attention: the decode kernel (one query row) matches the CPU forward",
          "[cuda][small]") {
  const std::vector<Case> cases = {
      {1, 1, 1, 1, {}},
      {2, 2, 1, 37, {37, 5}},
      {4, 2, 1, 37, {0, 1, 36, 37}, true},
      {2, 3, 1, 300, {300, 123}},
      {1, 2, 1, 0, {}},
  };
  uint64_t seed = 9000;
  for (const DType dt : kGpuFloatTypes) {
    for (const int64_t d : kHeadDims) {
      for (const Case& c : cases) check_case(c, d, dt, seed += 10, false, true);
    }
  }
}

TEST_CASE("cuda attention: dropout keeps exactly the elements the CPU keeps", "[cuda][small]") {
  // With q = 0 every visible key gets P = 1/n, and with v = the identity (Tk <= D) output
  // element (i, j) is keep_ij / (n (1 - p)): nonzero exactly where dropout_keep says so.
  const int64_t B = 2, H = 2, Tq = 70, Tk = 32;
  const double p = 0.3;
  for (const DType dt : kGpuFloatTypes) {
    for (const int64_t d : kHeadDims) {
      INFO("dtype " << dt << ", D " << d);
      Tensor q = Tensor::zeros({B, H, Tq, d}, dt, kGpu);
      Tensor k = random_tensor({B, H, Tk, d}, dt, kGpu, 77);
      std::vector<double> eye(static_cast<size_t>(B * H * Tk * d), 0.0);
      for (int64_t bh = 0; bh < B * H; ++bh) {
        for (int64_t j = 0; j < Tk; ++j) eye[static_cast<size_t>((bh * Tk + j) * d + j)] = 1.0;
      }
      Tensor v = Tensor::from_vector(eye, {B, H, Tk, d}).to(dt).to(kGpu);
      Case c{B, H, Tq, Tk, {}, false, p};
      const ops::AttentionOptions opt = options(c, kGpu);
      const kernels::AttentionArgs a = kernel_args(c, d, opt);
      Tensor out = poisoned({B, H, Tq, d}, dt);
      Tensor lse = poisoned({B, H, Tq}, kF32);
      with_gpu_type(dt, [&](auto tag) {
        using T = typename decltype(tag)::type;
        kernels::attention_forward_cuda<T>(a, q.data<T>(), k.data<T>(), v.data<T>(),
                                           out.data<T>(), lse.data<float>(), cuda::stream(0));
      });
      cuda::synchronize(0);
      const std::vector<double> o = out.to_double_vector();
      int64_t wrong = 0, kept = 0;
      for (int64_t r = 0; r < B * H * Tq; ++r) {
        for (int64_t j = 0; j < Tk; ++j) {
          const uint64_t idx = static_cast<uint64_t>(r * Tk + j);
          const bool keep = kernels::dropout_keep(opt.seed, opt.offset, idx, static_cast<float>(p));
          const double x = o[static_cast<size_t>(r * d + j)];
          kept += keep;
          if (std::isnan(x) || (x != 0.0) != keep) ++wrong;
        }
      }
      INFO(kept << " of " << B * H * Tq * Tk << " kept");
      REQUIRE(wrong == 0);
      REQUIRE(kept > 0);
    }
  }
}

TEST_CASE("cuda attention: ops route to the CUDA kernels, decode included", "[cuda][small]") {
  for (const DType dt : kGpuFloatTypes) {
    for (const Case& c : {Case{2, 2, 19, 23, {23, 4}, true, 0.1}, Case{3, 2, 1, 23, {23, 0, 4}}}) {
      const int64_t d = 64;
      INFO(describe(c, d, dt));
      const Tensor q = random_tensor({c.batch, c.heads, c.q_len, d}, dt, kGpu, 11, -2.0, 2.0);
      const Tensor k = random_tensor({c.batch, c.heads, c.k_len, d}, dt, kGpu, 12, -2.0, 2.0);
      const Tensor v = random_tensor({c.batch, c.heads, c.k_len, d}, dt, kGpu, 13);
      const Tensor dout = random_tensor(q.shape(), dt, kGpu, 14);
      const ops::AttentionOptions gpu_opt = options(c, kGpu), cpu_opt = options(c, Device::cpu());
      const ops::AttentionResult r = ops::attention_forward(q, k, v, gpu_opt);
      REQUIRE(r.out.device() == kGpu);
      REQUIRE(r.lse.dtype() == kF32);
      const Tensor q64 = as_f64_cpu(q), k64 = as_f64_cpu(k), v64 = as_f64_cpu(v);
      const ops::AttentionResult ref = ops::attention_forward(q64, k64, v64, cpu_opt);
      require_close(r.out, ref.out, tolerance_for(dt), "out");
      require_close(r.lse, ref.lse, lse_tolerance(dt), "lse");
      const ops::AttentionGrads g = ops::attention_backward(dout, q, k, v, r.out, r.lse, gpu_opt);
      const ops::AttentionGrads gref =
          ops::attention_backward(as_f64_cpu(dout), q64, k64, v64, ref.out, ref.lse, cpu_opt);
      require_close(g.q, gref.q, grad_tolerance(dt, gref.q), "dq");
      require_close(g.k, gref.k, grad_tolerance(dt, gref.k), "dk");
      require_close(g.v, gref.v, grad_tolerance(dt, gref.v), "dv");
    }
  }
}

TEST_CASE("cuda attention: unsupported head dims fail with a clear error", "[cuda]") {
  const Tensor q = random_tensor({1, 2, 5, 48}, kF32, kGpu, 1);
  const Tensor k = random_tensor({1, 2, 7, 48}, kF32, kGpu, 2);
  REQUIRE_THROWS_WITH(ops::attention_forward(q, k, k, {}),
                      Contains("attention") && Contains("head dim 48") &&
                          Contains("32, 64, 128"));
  kernels::AttentionArgs a;
  a.batch = 1;
  a.heads = 2;
  a.q_len = 5;
  a.k_len = 7;
  a.head_dim = 48;
  a.scale = 1.0 / std::sqrt(48.0);
  Tensor out = poisoned(q.shape(), kF32);
  Tensor lse = poisoned({1, 2, 5}, kF32);
  REQUIRE_THROWS_WITH(kernels::attention_forward_cuda<float>(a, q.data<float>(), k.data<float>(),
                                                             k.data<float>(), out.data<float>(),
                                                             lse.data<float>(), cuda::stream(0)),
                      Contains("head dim 48") && Contains("32, 64, 128"));
}

}  // namespace attn
