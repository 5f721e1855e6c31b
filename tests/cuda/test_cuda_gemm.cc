// cuBLASLt GEMMs against the CPU reference (gemm_cpu<double> on the same rounded inputs):
// every transpose, batches with separate, shared and padded operands, beta 0 and 1, odd
// sizes, operands at odd addresses, k = 0; f32 with and without TF32, bf16, f16. Then the
// fused epilogues (bias, relu, bias + relu, bias gradient) and the ops on CUDA against the
// same ops on the CPU: matmul, linear and linear_relu, forward and backward. Every output is
// NaN-poisoned first, so an element the GPU forgets to write fails.
//
// Tolerances (inputs uniform in [-1, 1], k products per output element):
//   f32          atol 1e-6 (k + 16), rtol 1e-5   fp32 accumulation, far above its ~sqrt(k) 6e-8
//   f32 + TF32   atol 3e-3 sqrt(k) + 1e-3, rtol 3e-3   products of 10-bit mantissas: ~5e-4
//                per product, a random walk over k (5 sigma and more)
//   bf16         atol 1e-5 (k + 16), rtol 1e-2   the output's rounding (2^-9) dominates
//   f16          atol 1e-5 (k + 16), rtol 2e-3   the output's rounding (2^-12)
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "core/cuda_backend.h"
#include "core/dispatch.h"
#include "cuda/cuda_test_util.h"
#include "kernels/gemm.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/reduce.h"

namespace attn {
namespace {

using cuda_test::as_f64_cpu;
using cuda_test::kGpu;
using cuda_test::kGpuFloatTypes;
using cuda_test::poisoned;
using cuda_test::random_tensor;
using cuda_test::require_close;
using cuda_test::Tolerance;
using cuda_test::with_gpu_type;
using kernels::GemmShape;

// Sets the TF32 switch for a scope and restores it.
class Tf32Scope {
 public:
  explicit Tf32Scope(bool on) : prev_(cuda::allow_tf32()) { cuda::set_allow_tf32(on); }
  ~Tf32Scope() { cuda::set_allow_tf32(prev_); }

 private:
  bool prev_;
};

Tolerance gemm_tolerance(DType dt, bool tf32, int64_t k) {
  const double kk = static_cast<double>(std::max<int64_t>(k, 1));
  switch (dt) {
    case DType::kF32:
      return tf32 ? Tolerance{3e-3 * std::sqrt(kk) + 1e-3, 3e-3} : Tolerance{1e-6 * (kk + 16), 1e-5};
    case DType::kBF16: return {1e-5 * (kk + 16), 1e-2};
    case DType::kF16: return {1e-5 * (kk + 16), 2e-3};
    default: FAIL("no GPU tolerance for this dtype"); return {0, 0};
  }
}

std::string describe(const GemmShape& s, DType dt, bool tf32, double alpha, double beta,
                     int64_t offset) {
  return std::string(dtype_name(dt)) + (tf32 ? " (TF32)" : "") + " m " + std::to_string(s.m) +
         " n " + std::to_string(s.n) + " k " + std::to_string(s.k) + " trans_a " +
         std::to_string(s.trans_a) + " trans_b " + std::to_string(s.trans_b) + " batch " +
         std::to_string(s.batch) + " strides " + std::to_string(s.stride_a) + "/" +
         std::to_string(s.stride_b) + "/" + std::to_string(s.stride_c) + " alpha " +
         std::to_string(alpha) + " beta " + std::to_string(beta) + " offset " +
         std::to_string(offset);
}

// Elements a buffer needs for `batch` matrices of `size` elements `stride` apart.
int64_t span(int64_t batch, int64_t stride, int64_t size) {
  return batch == 0 ? 0 : (batch - 1) * stride + size;
}

// Runs kernels::gemm_cuda on fresh random operands laid out for `s`, each starting `offset`
// elements into its buffer, and compares the whole C buffer (gaps and the offset included:
// they must be untouched) with gemm_cpu<double> on the same values.
void check_gemm(const GemmShape& s, DType dt, bool tf32, double alpha, double beta, uint64_t seed,
                int64_t offset = 0) {
  const Tf32Scope scope(tf32);
  const int64_t a_elems = span(s.batch, s.stride_a, s.m * s.k);
  const int64_t b_elems = span(s.batch, s.stride_b, s.k * s.n);
  const int64_t c_elems = span(s.batch, s.stride_c, s.m * s.n);
  const Tensor a = random_tensor({offset + a_elems}, dt, kGpu, seed);
  const Tensor b = random_tensor({offset + b_elems}, dt, kGpu, seed + 1);
  Tensor c = beta == 0 ? poisoned({offset + c_elems}, dt)
                       : random_tensor({offset + c_elems}, dt, kGpu, seed + 2);
  const Tensor a64 = as_f64_cpu(a), b64 = as_f64_cpu(b);
  Tensor want = as_f64_cpu(c);  // NaN where poisoned: gaps must stay NaN
  if (beta == 0) {
    // The product regions are written without reading C; the reference BLAS gets zeros there.
    double* w = want.data<double>() + offset;
    for (int64_t i = 0; i < s.batch; ++i)
      std::fill(w + i * s.stride_c, w + i * s.stride_c + s.m * s.n, 0.0);
  }
  kernels::gemm_cpu<double>(s, alpha, a64.data<double>() + offset, b64.data<double>() + offset,
                            beta, want.data<double>() + offset);
  with_gpu_type(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::gemm_cuda<T>(s, alpha, a.data<T>() + offset, b.data<T>() + offset, beta,
                          c.data<T>() + offset, cuda::gemm_context(0));
  });
  require_close(c, want, gemm_tolerance(dt, tf32, s.k), describe(s, dt, tf32, alpha, beta, offset));
}

GemmShape shape(int64_t m, int64_t n, int64_t k, bool ta, bool tb) {
  GemmShape s;
  s.m = m;
  s.n = n;
  s.k = k;
  s.trans_a = ta;
  s.trans_b = tb;
  return s;
}

struct Config {
  DType dtype;
  bool tf32;
};
const Config kConfigs[] = {{kF32, false}, {kF32, true}, {kBF16, false}, {kF16, false}};

}  // namespace

TEST_CASE("cuBLASLt GEMM matches the CPU for every transpose, size and dtype", "[cuda][gemm]") {
  const int64_t sizes[][3] = {{1, 1, 1}, {3, 5, 7}, {257, 129, 65}, {1024, 512, 2048}};
  uint64_t seed = 100;
  for (const Config& cfg : kConfigs) {
    for (const auto& sz : sizes) {
      for (int t = 0; t < 4; ++t) {
        const GemmShape s = shape(sz[0], sz[1], sz[2], t & 1, t & 2);
        check_gemm(s, cfg.dtype, cfg.tf32, 1.0, 0.0, seed += 3);
        check_gemm(s, cfg.dtype, cfg.tf32, -0.75, 1.0, seed += 3);
      }
    }
  }
}

TEST_CASE("batched cuBLASLt GEMM: separate, shared and padded operands", "[cuda][gemm]") {
  const int64_t sizes[][3] = {{1, 1, 1}, {5, 7, 9}, {33, 17, 65}, {64, 64, 64}};
  uint64_t seed = 5000;
  for (const Config& cfg : kConfigs) {
    for (const auto& sz : sizes) {
      for (int t = 0; t < 4; ++t) {
        const int64_t m = sz[0], n = sz[1], k = sz[2];
        GemmShape s = shape(m, n, k, t & 1, t & 2);
        s.batch = 3;
        // Separate operands, packed.
        s.stride_a = m * k;
        s.stride_b = k * n;
        s.stride_c = m * n;
        check_gemm(s, cfg.dtype, cfg.tf32, 1.0, 0.0, seed += 3);
        check_gemm(s, cfg.dtype, cfg.tf32, 0.5, 1.0, seed += 3);
        // One B shared by the batch (stride 0), then one A.
        GemmShape shared_b = s;
        shared_b.stride_b = 0;
        check_gemm(shared_b, cfg.dtype, cfg.tf32, 1.0, 0.0, seed += 3);
        check_gemm(shared_b, cfg.dtype, cfg.tf32, 1.0, 1.0, seed += 3);
        GemmShape shared_a = s;
        shared_a.stride_a = 0;
        check_gemm(shared_a, cfg.dtype, cfg.tf32, 1.0, 0.0, seed += 3);
        // Gaps between the entries (odd ones: per-entry addresses lose their alignment);
        // the gaps of C must stay untouched.
        GemmShape padded = s;
        padded.stride_a = m * k + 3;
        padded.stride_b = k * n + 5;
        padded.stride_c = m * n + 7;
        check_gemm(padded, cfg.dtype, cfg.tf32, 1.0, 0.0, seed += 3);
        check_gemm(padded, cfg.dtype, cfg.tf32, 1.0, 1.0, seed += 3);
      }
    }
  }
}

TEST_CASE("cuBLASLt GEMM on operands at odd addresses", "[cuda][gemm]") {
  const int64_t sizes[][3] = {{3, 5, 7}, {64, 48, 40}, {128, 256, 96}};
  uint64_t seed = 9000;
  for (const Config& cfg : kConfigs) {
    for (const auto& sz : sizes) {
      for (int64_t offset : {int64_t{1}, int64_t{3}, int64_t{8}}) {
        for (int t = 0; t < 4; ++t) {
          const GemmShape s = shape(sz[0], sz[1], sz[2], t & 1, t & 2);
          check_gemm(s, cfg.dtype, cfg.tf32, 1.0, 0.0, seed += 3, offset);
          check_gemm(s, cfg.dtype, cfg.tf32, 1.0, 1.0, seed += 3, offset);
        }
      }
      // The same shape again, aligned: a plan chosen for one alignment is not reused for
      // another.
      check_gemm(shape(sz[0], sz[1], sz[2], false, true), cfg.dtype, cfg.tf32, 1.0, 0.0,
                 seed += 3);
    }
  }
}

TEST_CASE("cuBLASLt GEMM with k = 0 gives beta * C; empty shapes do nothing", "[cuda][gemm]") {
  for (DType dt : kGpuFloatTypes) {
    GemmShape s = shape(7, 5, 0, false, false);
    check_gemm(s, dt, false, 1.0, 0.0, 1);  // zeros
    check_gemm(s, dt, false, 1.0, 1.0, 2);  // unchanged
    s.batch = 3;
    s.stride_c = 7 * 5 + 2;
    check_gemm(s, dt, false, 1.0, 0.0, 3);  // zeros in the matrices, the gaps untouched
    for (const GemmShape& e : {shape(0, 5, 3, false, false), shape(4, 0, 3, true, false)}) {
      check_gemm(e, dt, false, 1.0, 0.0, 4);
    }
    GemmShape none = shape(3, 4, 5, false, false);
    none.batch = 0;
    with_gpu_type(dt, [&](auto tag) {
      using T = typename decltype(tag)::type;
      CHECK_NOTHROW(kernels::gemm_cuda<T>(none, 1.0, static_cast<const T*>(nullptr),
                                          static_cast<const T*>(nullptr), 0.0,
                                          static_cast<T*>(nullptr), cuda::gemm_context(0)));
    });
  }
}

TEST_CASE("a repeated GEMM shape reuses its cached plan", "[cuda][gemm]") {
  const GemmShape s = shape(37, 41, 43, false, true);
  check_gemm(s, kF32, false, 1.0, 0.0, 11);
  const int64_t plans = kernels::gemm_cuda_plan_count();
  for (int i = 0; i < 3; ++i) check_gemm(s, kF32, false, 1.0, i % 2, 12 + i);  // new buffers
  CHECK(kernels::gemm_cuda_plan_count() == plans);
  check_gemm(shape(37, 41, 44, false, true), kF32, false, 1.0, 0.0, 20);  // a new shape
  CHECK(kernels::gemm_cuda_plan_count() == plans + 1);
}

TEST_CASE("the TF32 switch changes f32 GEMMs and is off by default", "[cuda][gemm]") {
  CHECK_FALSE(cuda::allow_tf32());
  // v = 1 + 2^-12 needs 12 mantissa bits, TF32 keeps 10: with TF32 every product is 1. In
  // f32 every partial sum j * v (j <= 256) is exact.
  const int64_t n = 256;
  const double v = 1.0 + std::ldexp(1.0, -12);
  const Tensor a = Tensor::full({n, n}, v, kF32, kGpu);
  const Tensor b = Tensor::full({n, n}, 1.0, kF32, kGpu);
  double off = 0, on = 0;
  {
    const Tf32Scope scope(false);
    off = ops::matmul(a, b).to_double_vector()[0];
  }
  {
    const Tf32Scope scope(true);
    on = ops::matmul(a, b).to_double_vector()[0];
  }
  CHECK(off == static_cast<double>(n) * v);  // 256.0625
  CHECK(on == static_cast<double>(n));
  CHECK_FALSE(cuda::allow_tf32());
}

TEST_CASE("cuBLASLt bias, relu and bias+relu epilogues match the CPU", "[cuda][gemm][linear]") {
  // rows x out x in, as a Linear layer: C [rows, out] = X [rows, in] @ W [out, in]^T + b.
  const int64_t sizes[][3] = {{1, 1, 1},     {3, 5, 7},      {1, 512, 2048},
                              {257, 129, 65}, {1000, 2048, 512}, {4, 6, 0}};
  uint64_t seed = 20000;
  for (DType dt : kGpuFloatTypes) {
    for (const auto& sz : sizes) {
      for (int variant = 0; variant < 4; ++variant) {
        const bool with_bias = variant & 1, relu = variant & 2;
        const int64_t rows = sz[0], out_f = sz[1], in = sz[2];
        const GemmShape s = shape(rows, out_f, in, false, true);
        const Tensor x = random_tensor({rows, in}, dt, kGpu, seed += 3);
        const Tensor w = random_tensor({out_f, in}, dt, kGpu, seed + 1);
        const Tensor bias = random_tensor({out_f}, dt, kGpu, seed + 2);
        Tensor c = poisoned({rows, out_f}, dt);
        bool fused = false;
        with_gpu_type(dt, [&](auto tag) {
          using T = typename decltype(tag)::type;
          fused = kernels::gemm_bias_cuda<T>(s, x.data<T>(), w.data<T>(),
                                             with_bias ? bias.data<T>() : nullptr, relu,
                                             c.data<T>(), cuda::gemm_context(0));
        });
        const std::string what = std::string(dtype_name(dt)) + " rows " + std::to_string(rows) +
                                 " out " + std::to_string(out_f) + " in " + std::to_string(in) +
                                 (with_bias ? " bias" : "") + (relu ? " relu" : "");
        INFO(what);
        REQUIRE(fused);
        Tensor want = Tensor::zeros({rows, out_f}, kF64);
        const Tensor x64 = as_f64_cpu(x), w64 = as_f64_cpu(w), b64 = as_f64_cpu(bias);
        kernels::gemm_cpu<double>(s, 1.0, x64.data<double>(), w64.data<double>(), 0.0,
                                  want.data<double>());
        double* wp = want.data<double>();
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t j = 0; j < out_f; ++j) {
            double v = wp[r * out_f + j] + (with_bias ? b64.data<double>()[j] : 0.0);
            wp[r * out_f + j] = relu ? std::max(v, 0.0) : v;
          }
        }
        require_close(c, want, gemm_tolerance(dt, false, in), what);
      }
    }
  }
}

TEST_CASE("cuBLASLt bias-gradient epilogue: dW and db in one GEMM", "[cuda][gemm][linear]") {
  // rows x out x in: dW [out, in] = G [rows, out]^T @ X [rows, in], db = column sums of G.
  const int64_t sizes[][3] = {{1, 1, 1}, {3, 5, 7}, {257, 129, 65}, {2048, 512, 1024}, {0, 4, 6}};
  uint64_t seed = 30000;
  for (DType dt : kGpuFloatTypes) {
    for (const auto& sz : sizes) {
      const int64_t rows = sz[0], out_f = sz[1], in = sz[2];
      const GemmShape s = shape(out_f, in, rows, true, false);
      const Tensor g = random_tensor({rows, out_f}, dt, kGpu, seed += 3);
      const Tensor x = random_tensor({rows, in}, dt, kGpu, seed + 1);
      Tensor dw = poisoned({out_f, in}, dt);
      Tensor db = poisoned({out_f}, dt);
      bool fused = false;
      with_gpu_type(dt, [&](auto tag) {
        using T = typename decltype(tag)::type;
        fused = kernels::gemm_bias_grad_cuda<T>(s, g.data<T>(), x.data<T>(), dw.data<T>(),
                                                db.data<T>(), cuda::gemm_context(0));
      });
      const std::string what = std::string(dtype_name(dt)) + " rows " + std::to_string(rows) +
                               " out " + std::to_string(out_f) + " in " + std::to_string(in);
      INFO(what);
      CHECK(fused);
      if (!fused) continue;  // failed above; the op-level test covers the unfused path
      const Tensor g64 = as_f64_cpu(g), x64 = as_f64_cpu(x);
      Tensor want_dw = Tensor::zeros({out_f, in}, kF64);
      kernels::gemm_cpu<double>(s, 1.0, g64.data<double>(), x64.data<double>(), 0.0,
                                want_dw.data<double>());
      Tensor want_db = Tensor::zeros({out_f}, kF64);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < out_f; ++j) want_db.data<double>()[j] += g64.data<double>()[r * out_f + j];
      require_close(dw, want_dw, gemm_tolerance(dt, false, rows), what + " dW");
      require_close(db, want_db, gemm_tolerance(dt, false, rows), what + " db");
    }
  }
}

TEST_CASE("ops::matmul on CUDA matches the CPU, batched and with a shared operand",
          "[cuda][gemm]") {
  uint64_t seed = 40000;
  struct MatmulCase {
    Shape a, b;
    bool ta, tb;
  };
  const MatmulCase cases[] = {
      {{2, 3, 5, 7}, {7, 4}, false, false},     // shared 2-D b: one flattened GEMM
      {{2, 3, 7, 5}, {7, 4}, true, false},      // shared b, transposed a: batched, stride 0
      {{6, 5, 7}, {4, 7}, false, true},         // shared b transposed
      {{2, 3, 5, 7}, {2, 3, 7, 4}, false, false},
      {{4, 9, 8}, {4, 9, 8}, false, true},      // q k^T
      {{4, 9, 8}, {4, 9, 6}, true, false},
      {{33, 65}, {65, 17}, false, false},
  };
  for (DType dt : kGpuFloatTypes) {
    for (const MatmulCase& mc : cases) {
      const Tensor a = random_tensor(mc.a, dt, kGpu, seed += 3);
      const Tensor b = random_tensor(mc.b, dt, kGpu, seed + 1);
      const Tensor got = ops::matmul(a, b, mc.ta, mc.tb);
      const Tensor want = ops::matmul(as_f64_cpu(a), as_f64_cpu(b), mc.ta, mc.tb);
      const int64_t k = mc.ta ? mc.a[mc.a.size() - 2] : mc.a.back();
      require_close(got, want, gemm_tolerance(dt, false, k),
                    std::string(dtype_name(dt)) + " matmul " + shape_str(mc.a) + " @ " +
                        shape_str(mc.b));
      // Accumulating form: out += 0.5 * a @ b.
      Tensor acc = random_tensor(want.shape(), dt, kGpu, seed + 2);
      Tensor acc_want = as_f64_cpu(acc);
      ops::matmul_acc(a, b, mc.ta, mc.tb, acc, 0.5);
      ops::matmul_acc(as_f64_cpu(a), as_f64_cpu(b), mc.ta, mc.tb, acc_want, 0.5);
      require_close(acc, acc_want, gemm_tolerance(dt, false, k),
                    std::string(dtype_name(dt)) + " matmul_acc " + shape_str(mc.a));
    }
  }
}

TEST_CASE("linear and linear_relu on CUDA match the CPU, forward and backward",
          "[cuda][gemm][linear]") {
  uint64_t seed = 50000;
  struct LinearCase {
    Shape x;
    int64_t out;
    bool bias, x_grad, w_grad, b_grad;
  };
  const LinearCase cases[] = {
      {{2, 5, 7}, 9, true, true, true, true},
      {{1, 1}, 1, true, true, true, true},
      {{3, 33, 65}, 130, true, true, true, true},
      {{6, 16}, 24, false, true, true, false},
      {{4, 8}, 12, true, false, false, true},  // frozen weight: bias gradient alone
      {{4, 8}, 12, true, false, true, false},  // frozen bias
  };
  for (DType dt : kGpuFloatTypes) {
    for (const LinearCase& lc : cases) {
      for (bool relu : {false, true}) {
        const int64_t in = lc.x.back();
        Tensor x = random_tensor(lc.x, dt, kGpu, seed += 5);
        Tensor w = random_tensor({lc.out, in}, dt, kGpu, seed + 1);
        Tensor b = lc.bias ? random_tensor({lc.out}, dt, kGpu, seed + 2) : Tensor();
        Shape y_shape = lc.x;
        y_shape.back() = lc.out;
        const Tensor r = random_tensor(y_shape, dt, kGpu, seed + 3);  // upstream gradient
        x.set_requires_grad(lc.x_grad);
        w.set_requires_grad(lc.w_grad);
        if (lc.bias) b.set_requires_grad(lc.b_grad);
        const std::string what = std::string(dtype_name(dt)) + (relu ? " linear_relu " : " linear ") +
                                 shape_str(lc.x) + " -> " + std::to_string(lc.out) +
                                 (lc.bias ? " bias" : "");
        INFO(what);

        const Tensor y = relu ? linear_relu(x, w, b) : linear(x, w, b);
        const Tensor x64 = as_f64_cpu(x.detach()), w64 = as_f64_cpu(w.detach());
        const Tensor b64 = lc.bias ? as_f64_cpu(b.detach()) : Tensor();
        const Tensor y_want = relu ? ops::linear_relu(x64, w64, b64) : ops::linear(x64, w64, b64);
        require_close(y, y_want, gemm_tolerance(dt, false, in), what + ": forward");

        y.backward(r);
        // The reference backward uses the GPU's own relu mask (y > 0): a pre-activation that
        // rounds to the other side of 0 on the GPU is not an error.
        const Tensor y64 = as_f64_cpu(y.detach());
        const Tensor r64 = as_f64_cpu(r);
        const Tensor g = relu ? ops::relu_backward(r64, y64) : r64;
        const int64_t rows = x.numel() / in;
        if (lc.x_grad) {
          require_close(x.grad(), ops::matmul(g, w64), gemm_tolerance(dt, false, lc.out),
                        what + ": dx");
        }
        Tensor db_want;
        if (lc.w_grad) {
          const Tensor dw_want = ops::linear_weight_grad(g, x64, &db_want);
          require_close(w.grad(), dw_want, gemm_tolerance(dt, false, rows), what + ": dW");
        } else {
          db_want = ops::sum_to_last(g);
        }
        if (lc.bias && lc.b_grad) {
          require_close(b.grad(), db_want, gemm_tolerance(dt, false, rows), what + ": db");
        }
      }
    }
  }
}

TEST_CASE("ops::linear_weight_grad on CUDA matches the CPU with and without the bias",
          "[cuda][gemm][linear]") {
  uint64_t seed = 60000;
  for (DType dt : kGpuFloatTypes) {
    for (const Shape& xs : {Shape{2, 3, 7}, Shape{1, 5}, Shape{300, 64}}) {
      const int64_t rows = shape_numel(xs) / xs.back();
      Shape gs = xs;
      gs.back() = 11;
      const Tensor x = random_tensor(xs, dt, kGpu, seed += 3);
      const Tensor g = random_tensor(gs, dt, kGpu, seed + 1);
      Tensor db;
      const Tensor dw = ops::linear_weight_grad(g, x, &db);
      const Tensor dw_only = ops::linear_weight_grad(g, x);
      Tensor db_want;
      const Tensor dw_want = ops::linear_weight_grad(as_f64_cpu(g), as_f64_cpu(x), &db_want);
      const std::string what = std::string(dtype_name(dt)) + " " + shape_str(xs);
      require_close(dw, dw_want, gemm_tolerance(dt, false, rows), what + " dW");
      require_close(dw_only, dw_want, gemm_tolerance(dt, false, rows), what + " dW alone");
      require_close(db, db_want, gemm_tolerance(dt, false, rows), what + " db");
    }
  }
}

}  // namespace attn
