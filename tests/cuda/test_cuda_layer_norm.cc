// CUDA layer norm (kernels/layer_norm_cuda.cu) against the CPU reference run in f64 on the same
// rounded inputs, for f32/bf16/f16, rows 1/3/257 and widths that reach every kernel variant:
// 1 and 7 (warp per row, scalar), 512 (warp per row, 16-byte vectors), 1000 (block per row,
// vectors), 4099 (block per row, scalar), 10007 (the looping kernel); with and without the
// fused residual. Outputs and the backward's scratch start as NaN; dgamma/dbeta start from
// random values and must come back with the gradient added (+=).
//
// The reference normalises s = x + residual rounded to the dtype, which is what the kernel
// normalises (a separate add would round the same way), so the tolerance only covers the
// kernel's fp32 arithmetic and the rounding of its outputs:
//   y, dx:           tolerance_for(dtype) (f32 2e-5, bf16 2e-2, f16 3e-3; abs and rel)
//   mean, rstd:      float for every dtype, 1e-5 abs + 1e-5 rel
//   dgamma, dbeta:   sums over up to 257 rows: f32 1e-4 abs + 1e-5 rel, else tolerance_for
#include <catch2/catch.hpp>
#include <cmath>
#include <string>

#include "core/cuda_backend.h"
#include "cuda/cuda_test_util.h"
#include "kernels/layer_norm.h"
#include "ops/layer_norm.h"

namespace attn {
namespace {

using namespace cuda_test;

const int64_t kRows[] = {1, 3, 257};
const int64_t kCols[] = {1, 7, 512, 1000, 4099, 10007};
constexpr double kEps = 1e-5;
const Tolerance kStatTol{1e-5, 1e-5};

struct Inputs {
  Tensor x, res, gamma, beta;   // on the GPU, in the dtype under test
  Tensor s64, gamma64, beta64;  // the reference's inputs: f64 on the CPU
};

Inputs make_inputs(DType dt, int64_t rows, int64_t cols, bool with_res, uint64_t seed) {
  Inputs in;
  in.x = random_tensor({rows, cols}, dt, kGpu, seed, -1.0, 3.0);  // a mean away from 0
  if (with_res) in.res = random_tensor({rows, cols}, dt, kGpu, seed + 1);
  in.gamma = random_tensor({cols}, dt, kGpu, seed + 2, 0.5, 1.5);
  in.beta = random_tensor({cols}, dt, kGpu, seed + 3, -0.5, 0.5);
  in.s64 = with_res ? host_sum(in.x, in.res, dt) : as_f64_cpu(in.x);
  in.gamma64 = as_f64_cpu(in.gamma);
  in.beta64 = as_f64_cpu(in.beta);
  return in;
}

std::string describe(DType dt, int64_t rows, int64_t cols, bool with_res) {
  return describe_rows(dt, rows, cols) + (with_res ? " with residual" : "");
}

}  // namespace

TEST_CASE("cuda layer_norm forward: y, mean, rstd against the f64 reference", "[cuda][small]") {
  uint64_t seed = 100;
  for (DType dt : kGpuFloatTypes) {
    for (int64_t rows : kRows) {
      for (int64_t cols : kCols) {
        for (bool with_res : {false, true}) {
          const std::string what = describe(dt, rows, cols, with_res);
          const Inputs in = make_inputs(dt, rows, cols, with_res, seed += 10);
          Tensor y = poisoned({rows, cols}, dt);
          Tensor mean = poisoned({rows}, kF32), rstd = poisoned({rows}, kF32);
          with_gpu_type(dt, [&](auto tag) {
            using T = typename decltype(tag)::type;
            kernels::layer_norm_forward_cuda<T>(
                in.x.data<T>(), with_res ? in.res.data<T>() : nullptr, in.gamma.data<T>(),
                in.beta.data<T>(), kEps, rows, cols, y.data<T>(), mean.data<float>(),
                rstd.data<float>(), stream());
          });
          const ops::LayerNormOutput ref =
              ops::layer_norm_forward(in.s64, in.gamma64, in.beta64, kEps);
          require_close(y, ref.y, tolerance_for(dt), what + ": y");
          require_close(mean, ref.mean, kStatTol, what + ": mean");
          require_close(rstd, ref.rstd, kStatTol, what + ": rstd");
        }
      }
    }
  }
}

TEST_CASE("cuda layer_norm backward: dx written, dgamma/dbeta accumulated", "[cuda][small]") {
  uint64_t seed = 5000;
  for (DType dt : kGpuFloatTypes) {
    for (int64_t rows : kRows) {
      for (int64_t cols : kCols) {
        for (bool with_res : {false, true}) {
          const std::string what = describe(dt, rows, cols, with_res);
          const Inputs in = make_inputs(dt, rows, cols, with_res, seed += 10);
          const Tensor dy = random_tensor({rows, cols}, dt, kGpu, seed + 4);
          // Statistics from the reference, rounded to float as the forward stores them.
          const ops::LayerNormOutput fwd =
              ops::layer_norm_forward(in.s64, in.gamma64, in.beta64, kEps);
          const Tensor mean = fwd.mean.to(kF32).to(kGpu), rstd = fwd.rstd.to(kF32).to(kGpu);
          Tensor dx = poisoned({rows, cols}, dt);
          Tensor dgamma = random_tensor({cols}, dt, kGpu, seed + 5);  // += onto these
          Tensor dbeta = random_tensor({cols}, dt, kGpu, seed + 6);
          const Tensor dgamma0 = as_f64_cpu(dgamma), dbeta0 = as_f64_cpu(dbeta);
          Tensor workspace = poisoned({kernels::layer_norm_backward_cuda_workspace(rows, cols)},
                                      kF32);  // all rewritten
          with_gpu_type(dt, [&](auto tag) {
            using T = typename decltype(tag)::type;
            kernels::layer_norm_backward_cuda<T>(
                dy.data<T>(), in.x.data<T>(), with_res ? in.res.data<T>() : nullptr,
                in.gamma.data<T>(), mean.data<float>(), rstd.data<float>(), rows, cols,
                dx.data<T>(), dgamma.data<T>(), dbeta.data<T>(), workspace.data<float>(), stream());
          });
          const ops::LayerNormGrads ref = ops::layer_norm_backward(as_f64_cpu(dy), in.s64, Tensor(),
                                                                   in.gamma64, fwd.mean, fwd.rstd);
          require_close(dx, ref.dx, tolerance_for(dt), what + ": dx");
          require_close(dgamma, host_sum(dgamma0, ref.dgamma), row_sum_tolerance(dt),
                        what + ": dgamma (+=)");
          require_close(dbeta, host_sum(dbeta0, ref.dbeta), row_sum_tolerance(dt),
                        what + ": dbeta (+=)");
        }
      }
    }
  }
}

TEST_CASE("cuda layer_norm ops: f32 statistics, deterministic backward, empty input", "[cuda]") {
  uint64_t seed = 9000;
  for (DType dt : kGpuFloatTypes) {
    for (int64_t cols : {int64_t{512}, int64_t{1000}, int64_t{10007}}) {
      const int64_t rows = 257;
      const std::string what = describe(dt, rows, cols, true) + " (ops)";
      const Inputs in = make_inputs(dt, rows, cols, true, seed += 10);
      const Tensor dy = random_tensor({rows, cols}, dt, kGpu, seed + 4);
      const ops::LayerNormOutput out =
          ops::layer_norm_forward(in.x, in.gamma, in.beta, kEps, in.res);
      CHECK(out.y.dtype() == dt);
      CHECK(out.mean.dtype() == kF32);
      CHECK(out.rstd.dtype() == kF32);
      CHECK(out.mean.device() == kGpu);
      const ops::LayerNormOutput ref = ops::layer_norm_forward(in.s64, in.gamma64, in.beta64, kEps);
      require_close(out.y, ref.y, tolerance_for(dt), what + ": y");
      require_close(out.rstd, ref.rstd, kStatTol, what + ": rstd");

      const ops::LayerNormGrads g1 =
          ops::layer_norm_backward(dy, in.x, in.res, in.gamma, out.mean, out.rstd);
      const ops::LayerNormGrads g2 =
          ops::layer_norm_backward(dy, in.x, in.res, in.gamma, out.mean, out.rstd);
      const ops::LayerNormGrads want = ops::layer_norm_backward(as_f64_cpu(dy), in.s64, Tensor(),
                                                                in.gamma64, ref.mean, ref.rstd);
      require_close(g1.dx, want.dx, tolerance_for(dt), what + ": dx");
      require_close(g1.dgamma, want.dgamma, row_sum_tolerance(dt), what + ": dgamma");
      require_close(g1.dbeta, want.dbeta, row_sum_tolerance(dt), what + ": dbeta");
      INFO(what << ": two runs give the same bits");
      CHECK(g1.dx.to_double_vector() == g2.dx.to_double_vector());
      CHECK(g1.dgamma.to_double_vector() == g2.dgamma.to_double_vector());
      CHECK(g1.dbeta.to_double_vector() == g2.dbeta.to_double_vector());
    }

    // No rows: nothing to normalise, parameter gradients stay zero.
    const Tensor x = Tensor::empty({0, 16}, dt, kGpu);
    const Tensor gamma = random_tensor({16}, dt, kGpu, 1), beta = random_tensor({16}, dt, kGpu, 2);
    const ops::LayerNormOutput out = ops::layer_norm_forward(x, gamma, beta, kEps);
    CHECK(out.y.shape() == Shape{0, 16});
    CHECK(out.mean.shape() == Shape{0});
    const ops::LayerNormGrads g =
        ops::layer_norm_backward(x, x, Tensor(), gamma, out.mean, out.rstd);
    CHECK(g.dx.shape() == Shape{0, 16});
    for (double v : g.dgamma.to_double_vector()) CHECK(v == 0.0);
    for (double v : g.dbeta.to_double_vector()) CHECK(v == 0.0);
  }
}

}  // namespace attn
