// CUDA sum over the middle axis (kernels/reduce_cuda.cu) against sum_axis_cpu in f64 on the
// same rounded inputs, for shapes that exercise every path of the plan: short rows (one warp a
// row), long rows split into segments (sum_all), column sums with one segment and with many
// (bias gradients), odd sizes, empty axes, accumulate = true. Outputs start as NaN (or, with
// accumulate, as known values). The result must also be the same bit for bit when run twice.
// Tolerance: the dtype's, plus the fp32 accumulation error, which grows like sqrt(n).
#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "core/cuda_backend.h"
#include "cuda/cuda_test_util.h"
#include "kernels/reduce.h"
#include "ops/reduce.h"

namespace attn {
namespace {

using namespace cuda_test;

struct Case {
  int64_t outer, n, inner;
};

Tolerance sum_tolerance(DType dt, int64_t n) {
  Tolerance t = tolerance_for(dt);
  t.atol += 2e-6 * std::sqrt(static_cast<double>(n));
  return t;
}

// Runs sum_axis_cuda<T> with a workspace of the size it asks for.
void run_cuda(const Tensor& x, Tensor& out, const Case& c, bool accumulate) {
  const int64_t ws = kernels::sum_axis_cuda_workspace(c.outer, c.n, c.inner);
  Tensor workspace = ws > 0 ? poisoned({ws}, kF32) : Tensor();
  with_gpu_type(x.dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::sum_axis_cuda<T>(x.data<T>(), out.data<T>(), c.outer, c.n, c.inner, accumulate,
                              ws > 0 ? workspace.data<float>() : nullptr, stream());
  });
  cuda::synchronize(0);  // the workspace is freed when this returns
}

const Case kCases[] = {
    {1, 0, 1},        {3, 0, 5},      {0, 7, 3},         {1, 1, 1},        {1, 3, 1},
    {5, 1023, 1},     {1, 1024, 1},   {1, 1025, 1},      {2, 65537 + 5, 1}, {1, 300001, 1},
    {1000, 3, 1},     {7, 2, 1},      {1, 1, 3},         {1, 3, 1023},     {1, 25000, 512},
    {1, 4097, 2048},  {1, 65537 + 5, 3}, {3, 1000, 33},  {4, 7, 5},        {2, 1, 65537 + 5},
    {65537 + 5, 2, 2}, {1, 63, 40},    {1, 64, 1},       {17, 129, 31},
};

}  // namespace

TEST_CASE("cuda reduce: sum_axis matches the CPU for every plan", "[cuda]") {
  uint64_t seed = 1;
  for (DType dt : kGpuFloatTypes) {
    for (const Case& c : kCases) {
      for (bool accumulate : {false, true}) {
        const std::string what = std::string("sum_axis ") + dtype_name(dt) + " [" +
                                 std::to_string(c.outer) + ", " + std::to_string(c.n) + ", " +
                                 std::to_string(c.inner) + "]" +
                                 (accumulate ? " accumulate" : "");
        const Tensor x = random_tensor({c.outer, c.n, c.inner}, dt, kGpu, seed++);
        const Tensor start = random_tensor({c.outer, c.inner}, dt, kGpu, seed++);
        Tensor out = accumulate ? start.clone() : poisoned({c.outer, c.inner}, dt);
        run_cuda(x, out, c, accumulate);
        const Tensor x64 = as_f64_cpu(x);
        Tensor want = as_f64_cpu(start).clone();
        kernels::sum_axis_cpu<double>(x64.data<double>(), want.data<double>(), c.outer, c.n,
                                      c.inner, accumulate);
        require_close(out, want, sum_tolerance(dt, c.n), what);
        // Deterministic: the same bits again.
        Tensor again = accumulate ? start.clone() : poisoned({c.outer, c.inner}, dt);
        run_cuda(x, again, c, accumulate);
        INFO(what << ": a second run must give the same bits");
        CHECK(bytes_of(again) == bytes_of(out));
      }
    }
  }
}

TEST_CASE("cuda reduce: the ops sum_all, sum_dim, sum_to_last and expand_dim", "[cuda]") {
  uint64_t seed = 500;
  for (DType dt : kGpuFloatTypes) {
    const std::string d = dtype_name(dt);
    for (const Shape& shape : {Shape{4, 33, 70}, Shape{1, 1, 1}, Shape{2, 0, 3}, Shape{9000, 1, 3}}) {
      const Tensor x = random_tensor(shape, dt, kGpu, seed++);
      const Tensor x64 = as_f64_cpu(x);
      const int64_t n = x.numel();
      require_close(ops::sum_all(x), ops::sum_all(x64), sum_tolerance(dt, n), "sum_all " + d);
      require_close(ops::sum_to_last(x), ops::sum_to_last(x64), sum_tolerance(dt, n),
                    "sum_to_last " + d);
      for (int64_t dim = 0; dim < 3; ++dim) {
        for (bool keepdim : {false, true}) {
          require_close(ops::sum_dim(x, dim, keepdim), ops::sum_dim(x64, dim, keepdim),
                        sum_tolerance(dt, shape[dim]),
                        "sum_dim " + d + " dim " + std::to_string(dim));
        }
      }
    }
    // expand_dim: pure copies, so exact.
    const Tensor bias = random_tensor({1, 515}, dt, kGpu, seed++);
    require_close(ops::expand_dim(bias, {300, 515}, 0), ops::expand_dim(as_f64_cpu(bias), {300, 515}, 0),
                  Tolerance{0, 0}, "expand_dim rows " + d);
    const Tensor mid = random_tensor({6, 1, 7}, dt, kGpu, seed++);
    require_close(ops::expand_dim(mid, {6, 5, 7}, 1), ops::expand_dim(as_f64_cpu(mid), {6, 5, 7}, 1),
                  Tolerance{0, 0}, "expand_dim middle " + d);
    const Tensor scalar = random_tensor({1}, dt, kGpu, seed++);
    require_close(ops::expand_dim(scalar, {1001}, 0), ops::expand_dim(as_f64_cpu(scalar), {1001}, 0),
                  Tolerance{0, 0}, "expand_dim scalar " + d);
  }
}

}  // namespace attn
