// CUDA softmax (kernels/softmax_cuda.cu) against the CPU reference run in f64 on the same
// rounded inputs, for f32/bf16/f16, rows 1/3/257 and widths that reach every kernel variant:
// 1 and 7 (warp per row, scalar), 512 (warp per row, 16-byte vectors), 1000 (block per row,
// vectors), 4099 (block per row, scalar), 10007 (the looping kernel). Rows carry -inf entries
// (masked positions) and large values (so the max subtraction matters). Outputs start as NaN.
// Tolerance: tolerance_for(dtype) (f32 2e-5, bf16 2e-2, f16 3e-3; abs and rel): the values
// are in [0, 1] and the kernels work in fp32.
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/cuda_backend.h"
#include "cuda/cuda_test_util.h"
#include "kernels/softmax.h"
#include "ops/softmax.h"

namespace attn {
namespace {

using namespace cuda_test;

const int64_t kRows[] = {1, 3, 257};
const int64_t kCols[] = {1, 7, 512, 1000, 4099, 10007};

// Logits in [-8, 8] shifted by 40 per row (softmax is shift-invariant, exp(x) alone would
// overflow), with about one entry in five set to -inf, never the whole row.
Tensor softmax_input(int64_t rows, int64_t cols, DType dt, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-8.0, 8.0);
  std::vector<double> v(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const bool masked = c > 0 && rng() % 5 == 0;
      v[r * cols + c] = masked ? -INFINITY : 40.0 + u(rng);
    }
  }
  return Tensor::from_vector(v, {rows, cols}, dt, kGpu);
}

}  // namespace

TEST_CASE("cuda softmax forward against the f64 reference", "[cuda]") {
  uint64_t seed = 1;
  for (DType dt : kGpuFloatTypes) {
    for (int64_t rows : kRows) {
      for (int64_t cols : kCols) {
        const std::string what = describe_rows(dt, rows, cols);
        const Tensor x = softmax_input(rows, cols, dt, seed++);
        Tensor y = poisoned({rows, cols}, dt);
        with_gpu_type(dt, [&](auto tag) {
          using T = typename decltype(tag)::type;
          kernels::softmax_forward_cuda<T>(x.data<T>(), y.data<T>(), rows, cols, stream());
        });
        require_close(y, ops::softmax_forward(as_f64_cpu(x)), tolerance_for(dt), what);
      }
    }
  }
}

TEST_CASE("cuda softmax backward against the f64 reference", "[cuda]") {
  uint64_t seed = 1000;
  for (DType dt : kGpuFloatTypes) {
    for (int64_t rows : kRows) {
      for (int64_t cols : kCols) {
        const std::string what = describe_rows(dt, rows, cols);
        // y: a softmax output rounded to the dtype (zeros where the input was -inf).
        const Tensor y =
            ops::softmax_forward(as_f64_cpu(softmax_input(rows, cols, dt, seed++))).to(dt).to(kGpu);
        const Tensor dy = random_tensor({rows, cols}, dt, kGpu, seed++, -2.0, 2.0);
        Tensor dx = poisoned({rows, cols}, dt);
        with_gpu_type(dt, [&](auto tag) {
          using T = typename decltype(tag)::type;
          kernels::softmax_backward_cuda<T>(y.data<T>(), dy.data<T>(), dx.data<T>(), rows, cols,
                                            stream());
        });
        require_close(dx, ops::softmax_backward(as_f64_cpu(y), as_f64_cpu(dy)), tolerance_for(dt),
                      what);
      }
    }
  }
}

TEST_CASE("cuda softmax ops: 3-D input, misaligned view, empty input", "[cuda]") {
  for (DType dt : kGpuFloatTypes) {
    // [2, 3, 512] through the op, and the same values seen through a view that starts one
    // element into its storage (the 16-byte vector path must step aside).
    const Tensor x = softmax_input(6, 512, dt, 77).view({2, 3, 512});
    const Tensor want = ops::softmax_forward(as_f64_cpu(x));
    require_close(ops::softmax_forward(x), want, tolerance_for(dt),
                  std::string(dtype_name(dt)) + " 3-D op");
    const Tensor shifted = misaligned_copy(x);
    require_close(ops::softmax_forward(shifted), want, tolerance_for(dt),
                  std::string(dtype_name(dt)) + " misaligned view");
    const Tensor dy = random_tensor({2, 3, 512}, dt, kGpu, 78);
    const Tensor y = ops::softmax_forward(shifted);
    require_close(ops::softmax_backward(y, dy),
                  ops::softmax_backward(as_f64_cpu(y), as_f64_cpu(dy)), tolerance_for(dt),
                  std::string(dtype_name(dt)) + " backward op");

    const Tensor empty = Tensor::empty({0, 9}, dt, kGpu);
    CHECK(ops::softmax_forward(empty).shape() == Shape{0, 9});
    CHECK(ops::softmax_backward(empty, empty).shape() == Shape{0, 9});
  }
}

}  // namespace attn
