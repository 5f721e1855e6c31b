// CUDA element-wise kernels (kernels/elementwise_cuda.cu) against the CPU reference: the CPU
// runs in f64 on the same rounded inputs; for f32 the GPU must also equal the CPU's f32 kernels
// bit for bit (both round each operation once, without FMA). Sizes cover the scalar tail of the
// 16-byte vector path (1, 3, 1023, 65542) and zero; offset 1 makes every pointer misaligned, so
// the scalar path runs too. Outputs start as NaN, and the element before the view must stay NaN.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/cuda_backend.h"
#include "cuda/cuda_test_util.h"
#include "kernels/elementwise.h"
#include "ops/elementwise.h"

namespace attn {
namespace {

using namespace cuda_test;
using kernels::BinaryOp;

const int64_t kSizes[] = {0, 1, 3, 1023, 65537 + 5};
const int64_t kOffsets[] = {0, 1};

std::string case_name(const char* op, DType dt, int64_t n, int64_t off) {
  return std::string(op) + " " + dtype_name(dt) + " n=" + std::to_string(n) +
         " offset=" + std::to_string(off);
}

void require_nan_before(const Tensor& out, int64_t off) {
  if (off == 0) return;
  const std::vector<double> v = out.to_double_vector();
  INFO("the element before the output view was written");
  REQUIRE(std::isnan(v[0]));
}

// Exact equality of two f32 tensors (NaN equal to NaN).
void require_same_f32(const Tensor& got, const Tensor& want, const std::string& what) {
  INFO(what << ": must equal the CPU's f32 kernel bit for bit");
  const Tensor g = got.to(Device::cpu()), w = want.to(Device::cpu());
  REQUIRE(g.numel() == w.numel());
  int64_t bad = 0;
  for (int64_t i = 0; i < g.numel(); ++i) {
    const float a = g.data<float>()[i], b = w.data<float>()[i];
    if (std::memcmp(&a, &b, 4) != 0 && !(std::isnan(a) && std::isnan(b))) ++bad;
  }
  REQUIRE(bad == 0);
}

template <class Fn>
void for_each_case(Fn&& fn) {
  for (DType dt : kGpuFloatTypes)
    for (int64_t n : kSizes)
      for (int64_t off : kOffsets) fn(dt, n, off);
}

}  // namespace

TEST_CASE("cuda elementwise: add, sub, mul match the CPU", "[cuda]") {
  uint64_t seed = 1;
  for (BinaryOp op : {BinaryOp::kAdd, BinaryOp::kSub, BinaryOp::kMul}) {
    const char* name = op == BinaryOp::kAdd ? "add" : op == BinaryOp::kSub ? "sub" : "mul";
    for_each_case([&](DType dt, int64_t n, int64_t off) {
      const std::string what = case_name(name, dt, n, off);
      const Tensor a = random_tensor({n + off}, dt, kGpu, seed++);
      const Tensor b = random_tensor({n + off}, dt, kGpu, seed++);
      Tensor out = poisoned({n + off}, dt);
      with_gpu_type(dt, [&](auto tag) {
        using T = typename decltype(tag)::type;
        kernels::binary_cuda<T>(op, a.data<T>() + off, b.data<T>() + off, out.data<T>() + off, n,
                                stream());
      });
      const Tensor a64 = view(as_f64_cpu(a), off, n), b64 = view(as_f64_cpu(b), off, n);
      Tensor want = Tensor::empty({n}, kF64);
      kernels::binary_cpu<double>(op, a64.data<double>(), b64.data<double>(),
                                  want.data<double>(), n);
      require_close(view(out, off, n), want, tolerance_for(dt), what);
      require_nan_before(out, off);
      if (dt == kF32) {
        const Tensor a32 = view(a.to(Device::cpu()), off, n), b32 = view(b.to(Device::cpu()), off, n);
        Tensor want32 = Tensor::empty({n}, kF32);
        kernels::binary_cpu<float>(op, a32.data<float>(), b32.data<float>(), want32.data<float>(),
                                   n);
        require_same_f32(view(out, off, n), want32, what);
      }
    });
  }
}

TEST_CASE("cuda elementwise: scale, axpy, relu and relu_backward match the CPU", "[cuda]") {
  uint64_t seed = 100;
  const double alpha = -0.7351;
  for_each_case([&](DType dt, int64_t n, int64_t off) {
    const Tensor x = random_tensor({n + off}, dt, kGpu, seed++);
    const Tensor y = random_tensor({n + off}, dt, kGpu, seed++);
    const Tensor x64 = view(as_f64_cpu(x), off, n), y64 = view(as_f64_cpu(y), off, n);
    const Tolerance tol = tolerance_for(dt);
    with_gpu_type(dt, [&](auto tag) {
      using T = typename decltype(tag)::type;
      {  // scale
        Tensor out = poisoned({n + off}, dt);
        kernels::scale_cuda<T>(x.data<T>() + off, alpha, out.data<T>() + off, n, stream());
        Tensor want = Tensor::empty({n}, kF64);
        kernels::scale_cpu<double>(x64.data<double>(), alpha, want.data<double>(), n);
        require_close(view(out, off, n), want, tol, case_name("scale", dt, n, off));
        require_nan_before(out, off);
      }
      {  // scale in place
        Tensor inout = x.clone();
        kernels::scale_cuda<T>(inout.data<T>() + off, alpha, inout.data<T>() + off, n,
                               stream());
        Tensor want = Tensor::empty({n}, kF64);
        kernels::scale_cpu<double>(x64.data<double>(), alpha, want.data<double>(), n);
        require_close(view(inout, off, n), want, tol, case_name("scale in place", dt, n, off));
      }
      {  // axpy: dst (= y) += alpha * x
        Tensor dst = y.clone();
        kernels::axpy_cuda<T>(dst.data<T>() + off, alpha, x.data<T>() + off, n, stream());
        Tensor want = y64.clone();
        kernels::axpy_cpu<double>(want.data<double>(), alpha, x64.data<double>(), n);
        require_close(view(dst, off, n), want, tol, case_name("axpy", dt, n, off));
        if (dt == kF32) {
          Tensor want32 = view(y.to(Device::cpu()), off, n).clone();
          const Tensor x32 = view(x.to(Device::cpu()), off, n);
          kernels::axpy_cpu<float>(want32.data<float>(), alpha, x32.data<float>(), n);
          require_same_f32(view(dst, off, n), want32, case_name("axpy", dt, n, off));
        }
      }
      {  // relu
        Tensor out = poisoned({n + off}, dt);
        kernels::relu_forward_cuda<T>(x.data<T>() + off, out.data<T>() + off, n, stream());
        Tensor want = Tensor::empty({n}, kF64);
        kernels::relu_forward_cpu<double>(x64.data<double>(), want.data<double>(), n);
        require_close(view(out, off, n), want, Tolerance{0, 0}, case_name("relu", dt, n, off));
        require_nan_before(out, off);
      }
      {  // relu backward: dx = dy where y > 0 (x plays dy, y plays the relu output)
        Tensor out = poisoned({n + off}, dt);
        kernels::relu_backward_cuda<T>(x.data<T>() + off, y.data<T>() + off,
                                       out.data<T>() + off, n, stream());
        Tensor want = Tensor::empty({n}, kF64);
        kernels::relu_backward_cpu<double>(x64.data<double>(), y64.data<double>(),
                                           want.data<double>(), n);
        require_close(view(out, off, n), want, Tolerance{0, 0},
                      case_name("relu_backward", dt, n, off));
        require_nan_before(out, off);
      }
    });
  });
}

TEST_CASE("cuda elementwise: relu maps NaN and -0 like the CPU", "[cuda]") {
  const double nan = std::nan("");
  const std::vector<double> v = {nan, -0.0, 0.0, -1.0, 2.0, -nan, 1e-30, -1e-30, 3.0};
  for (DType dt : kGpuFloatTypes) {
    const Tensor x = Tensor::from_vector(v, {static_cast<int64_t>(v.size())}, dt, kGpu);
    const Tensor want = ops::relu(Tensor::from_vector(v, {static_cast<int64_t>(v.size())}, kF64));
    require_close(ops::relu(x), want, Tolerance{0, 0}, std::string("relu specials ") + dtype_name(dt));
  }
}

TEST_CASE("cuda elementwise: bias_add and bias+relu match the CPU", "[cuda]") {
  struct Shape2 {
    int64_t rows, cols;
  };
  const Shape2 shapes[] = {{0, 5}, {4, 0}, {1, 1}, {7, 3}, {3, 8}, {33, 1024}, {5, 4100},
                           {1000, 17}, {2, 65537 + 5}};
  uint64_t seed = 200;
  for (DType dt : kGpuFloatTypes) {
    for (const Shape2 s : shapes) {
      for (int64_t off : kOffsets) {
        for (bool relu : {false, true}) {
          const int64_t n = s.rows * s.cols;
          const std::string what = std::string(relu ? "bias_relu " : "bias_add ") +
                                   dtype_name(dt) + " rows=" + std::to_string(s.rows) +
                                   " cols=" + std::to_string(s.cols) +
                                   " offset=" + std::to_string(off);
          const Tensor x = random_tensor({n + off}, dt, kGpu, seed++);
          const Tensor bias = random_tensor({s.cols + off}, dt, kGpu, seed++);
          Tensor out = poisoned({n + off}, dt);
          with_gpu_type(dt, [&](auto tag) {
            using T = typename decltype(tag)::type;
            kernels::bias_add_cuda<T>(x.data<T>() + off, bias.data<T>() + off, out.data<T>() + off,
                                      s.rows, s.cols, relu, stream());
          });
          const Tensor x64 = view(as_f64_cpu(x), off, n);
          const Tensor b64 = view(as_f64_cpu(bias), off, s.cols);
          Tensor want = Tensor::empty({n}, kF64);
          kernels::bias_add_cpu<double>(x64.data<double>(), b64.data<double>(),
                                        want.data<double>(), s.rows, s.cols, relu);
          require_close(view(out, off, n), want, tolerance_for(dt), what);
          require_nan_before(out, off);
        }
      }
    }
  }
}

TEST_CASE("cuda elementwise: the ops dispatch to the CUDA kernels", "[cuda]") {
  uint64_t seed = 300;
  for (DType dt : kGpuFloatTypes) {
    const Tolerance tol = tolerance_for(dt);
    const std::string d = dtype_name(dt);
    const Tensor a = random_tensor({37, 129}, dt, kGpu, seed++);
    const Tensor b = random_tensor({37, 129}, dt, kGpu, seed++);
    const Tensor bias = random_tensor({129}, dt, kGpu, seed++);
    const Tensor a64 = as_f64_cpu(a), b64 = as_f64_cpu(b), bias64 = as_f64_cpu(bias);
    require_close(ops::add(a, b), ops::add(a64, b64), tol, "ops::add " + d);
    require_close(ops::sub(a, b), ops::sub(a64, b64), tol, "ops::sub " + d);
    require_close(ops::mul(a, b), ops::mul(a64, b64), tol, "ops::mul " + d);
    require_close(ops::scale(a, 3.25), ops::scale(a64, 3.25), tol, "ops::scale " + d);
    require_close(ops::relu(a), ops::relu(a64), tol, "ops::relu " + d);
    require_close(ops::relu_backward(a, b), ops::relu_backward(a64, b64), tol,
                  "ops::relu_backward " + d);
    require_close(ops::bias_add(a, bias), ops::bias_add(a64, bias64), tol, "ops::bias_add " + d);
    require_close(ops::bias_add(a, bias, true), ops::bias_add(a64, bias64, true), tol,
                  "ops::bias_add relu " + d);
    Tensor acc = a.clone();
    Tensor acc64 = a64.clone();
    ops::axpy_(acc, -2.5, b);
    ops::axpy_(acc64, -2.5, b64);
    require_close(acc, acc64, tol, "ops::axpy_ " + d);
    ops::add_(acc, b);
    ops::add_(acc64, b64);
    require_close(acc, acc64, tol, "ops::add_ " + d);
  }
}

}  // namespace attn
