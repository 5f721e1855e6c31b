// CUDA dropout (kernels/dropout_cuda.cu) against the CPU: the keep decisions must be the
// CPU's bit for bit for the same (seed, offset, index), for every dtype, size, alignment and
// counter range (offsets whose counters cross 2^32, seeds using both key words). On an input
// of ones the output is exactly 0 or the rounded scale, so the mask is read off directly. On
// random inputs f32 must equal the CPU's f32 kernel exactly, and every dtype must be close to
// the f64 reference on the same rounded inputs. Outputs start as NaN.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/cuda_backend.h"
#include "cuda/cuda_test_util.h"
#include "kernels/dropout.h"
#include "ops/dropout.h"

namespace attn {
namespace {

using namespace cuda_test;

const int64_t kSizes[] = {0, 1, 3, 4, 5, 1023, 65537 + 5};
const int64_t kOffsets[] = {0, 1};  // 1: misaligned for the 4-element vector path
const float kProbs[] = {0.0f, 0.1f, 0.5f, 0.9f};
const uint64_t kSeeds[] = {0ull, 42ull, 0x9e3779b97f4a7c15ull};
// Counter offsets; the last makes counters cross 2^32 inside the draw.
const uint64_t kCounterOffsets[] = {0ull, 7ull, (1ull << 32) - 3, 0xfffffffffff00000ull};

template <class T>
void run_cuda(bool backward, const Tensor& x, Tensor& y, int64_t off, int64_t n, float p,
              uint64_t seed, uint64_t offset) {
  if (backward) {
    kernels::dropout_backward_cuda<T>(x.data<T>() + off, y.data<T>() + off, n, p, seed, offset,
                                      stream());
  } else {
    kernels::dropout_forward_cuda<T>(x.data<T>() + off, y.data<T>() + off, n, p, seed, offset,
                                     stream());
  }
}

// Calls run_cuda<T> for the GPU float type of dt.
void dispatch(DType dt, bool backward, const Tensor& x, Tensor& y, int64_t off, int64_t n,
              float p, uint64_t seed, uint64_t offset) {
  with_gpu_type(dt, [&](auto tag) {
    run_cuda<typename decltype(tag)::type>(backward, x, y, off, n, p, seed, offset);
  });
}

}  // namespace

TEST_CASE("cuda dropout: keep decisions equal the CPU's bit for bit", "[cuda]") {
  for (DType dt : kGpuFloatTypes) {
    for (int64_t n : kSizes) {
      for (int64_t off : kOffsets) {
        for (float p : kProbs) {
          for (uint64_t seed : kSeeds) {
            for (uint64_t offset : kCounterOffsets) {
              for (bool backward : {false, true}) {
                INFO((backward ? "backward " : "forward ")
                     << dtype_name(dt) << " n=" << n << " view offset=" << off << " p=" << p
                     << " seed=" << seed << " counter offset=" << offset);
                const Tensor x = Tensor::ones({n + off}, dt, kGpu);
                Tensor y = poisoned({n + off}, dt);
                dispatch(dt, backward, x, y, off, n, p, seed, offset);
                const std::vector<double> got = y.to_double_vector();
                // A kept 1 becomes float(1 / (1 - p)) rounded to the dtype.
                const float scale = static_cast<float>(1.0 / (1.0 - static_cast<double>(p)));
                const double kept = Tensor::full({1}, scale, dt).to_double_vector()[0];
                int64_t wrong = 0, kept_count = 0;
                for (int64_t i = 0; i < n; ++i) {
                  const bool keep = kernels::dropout_keep(seed, offset, static_cast<uint64_t>(i), p);
                  kept_count += keep;
                  const double want = keep ? kept : 0.0;
                  if (!(got[off + i] == want)) ++wrong;
                }
                CHECK(wrong == 0);
                if (off) CHECK(std::isnan(got[0]));
                if (p == 0.0f) CHECK(kept_count == n);
              }
            }
          }
        }
      }
    }
  }
}

TEST_CASE("cuda dropout: values on random inputs match the CPU", "[cuda]") {
  uint64_t data_seed = 1;
  for (DType dt : kGpuFloatTypes) {
    for (int64_t n : kSizes) {
      for (int64_t off : kOffsets) {
        for (float p : {0.1f, 0.3f}) {
          for (bool backward : {false, true}) {
            const uint64_t seed = 1234567 + data_seed, offset = 99 * data_seed;
            const std::string what = std::string(backward ? "backward " : "forward ") +
                                     dtype_name(dt) + " n=" + std::to_string(n) +
                                     " offset=" + std::to_string(off);
            const Tensor x = random_tensor({n + off}, dt, kGpu, data_seed++);
            Tensor y = poisoned({n + off}, dt);
            dispatch(dt, backward, x, y, off, n, p, seed, offset);
            const Tensor x64 = view(as_f64_cpu(x), off, n);
            Tensor want = Tensor::empty({n}, kF64);
            kernels::dropout_forward_cpu<double>(x64.data<double>(), want.data<double>(), n, p,
                                                 seed, offset);
            require_close(view(y, off, n), want, tolerance_for(dt), what);
            if (dt == kF32) {  // bit-identical to the CPU's f32 kernel
              const Tensor x32 = view(x.to(Device::cpu()), off, n);
              Tensor want32 = Tensor::empty({n}, kF32);
              kernels::dropout_forward_cpu<float>(x32.data<float>(), want32.data<float>(), n, p,
                                                  seed, offset);
              const Tensor got32 = view(y.to(Device::cpu()), off, n);
              INFO(what << ": f32 must equal the CPU bit for bit");
              CHECK((n == 0 ||
                     std::memcmp(got32.data<float>(), want32.data<float>(), n * sizeof(float)) == 0));
            }
          }
        }
      }
    }
  }
}

TEST_CASE("cuda dropout: in place (y aliases x)", "[cuda]") {
  for (DType dt : kGpuFloatTypes) {
    const int64_t n = 65537 + 5;
    const Tensor x = random_tensor({n}, dt, kGpu, 77);
    Tensor inout = x.clone();
    dispatch(dt, false, inout, inout, 0, n, 0.25f, 5, 11);
    Tensor want = Tensor::empty({n}, kF64);
    const Tensor x64 = as_f64_cpu(x);
    kernels::dropout_forward_cpu<double>(x64.data<double>(), want.data<double>(), n, 0.25f, 5, 11);
    require_close(inout, want, tolerance_for(dt), std::string("in place ") + dtype_name(dt));
  }
}

TEST_CASE("cuda dropout: ops::dropout_forward / dropout_backward on CUDA tensors", "[cuda]") {
  for (DType dt : kGpuFloatTypes) {
    const Tensor x = random_tensor({3, 5, 77}, dt, kGpu, 5);
    const Tensor x64 = as_f64_cpu(x);
    for (double p : {0.0, 0.1, 0.6}) {
      const std::string what = std::string(dtype_name(dt)) + " p=" + std::to_string(p);
      require_close(ops::dropout_forward(x, p, 17, 1000), ops::dropout_forward(x64, p, 17, 1000),
                    tolerance_for(dt), "ops::dropout_forward " + what);
      require_close(ops::dropout_backward(x, p, 17, 1000),
                    ops::dropout_backward(x64, p, 17, 1000), tolerance_for(dt),
                    "ops::dropout_backward " + what);
    }
  }
}

}  // namespace attn
