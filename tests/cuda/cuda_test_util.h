// Shared helpers for the CUDA parity tests: random inputs made on the CPU (so both sides see
// the same values), outputs poisoned with NaN before a kernel runs (an element the kernel
// forgets to write then fails the comparison), and one comparison with stated tolerances.
//
// Convention for reduced precision: inputs are rounded to the GPU dtype first and the CPU
// reference runs in f64 on the rounded values, so the tolerance only has to cover the
// kernel's own rounding (f32 accumulation, the output rounded to bf16/f16).
#pragma once

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/cuda_backend.h"
#include "core/dispatch.h"
#include "core/random.h"
#include "core/tensor.h"

namespace attn::cuda_test {

inline const Device kGpu = Device::cuda(0);
inline const DType kGpuFloatTypes[] = {kF32, kBF16, kF16};
// Every dtype, for the pure data-movement kernels (bit-exact copies).
inline const DType kAllTypes[] = {kF32, kF64, kBF16, kF16, kI32};

// The stream the kernels under test are launched on.
inline cudaStream_t stream() { return cuda::stream(0); }

// Calls f(TypeTag<T>{}) for the GPU float type of dt (f32, bf16, f16: the types the CUDA
// kernels are instantiated for); any other dtype fails the test.
template <class F>
void with_gpu_type(DType dt, F&& f) {
  switch (dt) {
    case DType::kF32: f(TypeTag<float>{}); return;
    case DType::kBF16: f(TypeTag<bf16>{}); return;
    case DType::kF16: f(TypeTag<f16>{}); return;
    default: FAIL("not a GPU float type");
  }
}

struct Tolerance {
  double atol, rtol;
};

// Per dtype, for one rounding of the output plus f32 accumulation over a few hundred terms.
inline Tolerance tolerance_for(DType dt) {
  switch (dt) {
    case DType::kF32: return {2e-5, 2e-5};
    case DType::kBF16: return {2e-2, 2e-2};
    case DType::kF16: return {3e-3, 3e-3};
    default: return {1e-12, 1e-12};
  }
}

// For parameter gradients summed over up to a few hundred rows: f32 1e-4 abs + 1e-5 rel,
// else tolerance_for(dt).
inline Tolerance row_sum_tolerance(DType dt) {
  return dt == kF32 ? Tolerance{1e-4, 1e-5} : tolerance_for(dt);
}

// Uniform values in [lo, hi), rounded to `dtype`, on `device`.
inline Tensor random_tensor(const Shape& shape, DType dtype, Device device, uint64_t seed,
                            double lo = -1.0, double hi = 1.0) {
  Generator gen(seed);
  Tensor t = Tensor::uniform(shape, lo, hi, gen, kF32, Device::cpu());
  return t.to(dtype).to(device);
}

// Random values of any dtype on the CPU: random_tensor's for the float types, integers in
// [-1000, 1000) for i32.
inline Tensor random_any(const Shape& shape, DType dt, uint64_t seed) {
  return dt == kI32 ? random_tensor(shape, kF32, Device::cpu(), seed, -1000, 1000).to(kI32)
                    : random_tensor(shape, dt, Device::cpu(), seed);
}

// n ids uniform in [0, bound) (mt19937_64 seeded with `seed`, one draw per id, in order).
inline std::vector<int32_t> random_ids(int64_t n, int64_t bound, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& id : v) id = static_cast<int32_t>(rng() % static_cast<uint64_t>(bound));
  return v;
}

// A copy of `t` (same dtype, device and shape) seen through a view that starts one element
// into its storage, so it is not 16-byte aligned (the kernels' scalar paths).
inline Tensor misaligned_copy(const Tensor& t) {
  const int64_t n = t.numel();
  Tensor flat = Tensor::zeros({n + 1}, t.dtype(), t.device());
  Tensor shifted = flat.narrow0(1, n + 1).view(t.shape());
  shifted.copy_(t);
  return shifted;
}

// Elements [off, off + n) of a 1-D tensor.
inline Tensor view(const Tensor& t, int64_t off, int64_t n) { return t.narrow0(off, off + n); }

// The same values as `t` (any dtype, any device) as an f64 CPU tensor: the reference input.
inline Tensor as_f64_cpu(const Tensor& t) { return t.to(Device::cpu()).to(kF64); }

// a + b elementwise on the host (tensors of one shape, any dtype and device), rounded to
// `round_to`, returned as f64 on the CPU.
inline Tensor host_sum(const Tensor& a, const Tensor& b, DType round_to = kF64) {
  std::vector<double> va = a.to_double_vector();
  const std::vector<double> vb = b.to_double_vector();
  REQUIRE(va.size() == vb.size());
  for (size_t i = 0; i < va.size(); ++i) va[i] += vb[i];
  return Tensor::from_vector(va, a.shape(), round_to).to(kF64);
}

// The bytes of `t` (any device), for bit-exact comparisons.
inline std::vector<unsigned char> bytes_of(const Tensor& t) {
  const Tensor h = t.to(Device::cpu());
  std::vector<unsigned char> b(h.nbytes());
  if (!b.empty()) std::memcpy(b.data(), h.raw_data(), b.size());
  return b;
}

// "<dtype> [rows, cols]", the start of a case's description.
inline std::string describe_rows(DType dt, int64_t rows, int64_t cols) {
  return std::string(dtype_name(dt)) + " [" + std::to_string(rows) + ", " + std::to_string(cols) +
         "]";
}

// An output buffer full of NaN, so unwritten elements cannot pass.
inline Tensor poisoned(const Shape& shape, DType dtype, Device device = kGpu) {
  Tensor t = Tensor::empty(shape, dtype, device);
  t.fill_(std::nan(""));
  return t;
}

// A CPU tensor of n elements whose bytes are a fixed pattern no kernel would produce by
// accident: byte i is x0 ^ (i * step). For copies that must leave some bytes untouched.
inline Tensor poison_cpu(int64_t n, DType dt, unsigned char x0, size_t step) {
  Tensor t = Tensor::empty({n}, dt, Device::cpu());
  auto* b = static_cast<unsigned char*>(t.raw_data());
  for (size_t i = 0; i < t.nbytes(); ++i) b[i] = static_cast<unsigned char>(x0 ^ (i * step));
  return t;
}

// Fails (with the first few bad positions) unless |got - want| <= atol + rtol * |want| for
// every element; NaN or inf in `got` where `want` is finite fails.
inline void require_close(const Tensor& got, const Tensor& want, Tolerance tol,
                          const std::string& what) {
  INFO(what);
  REQUIRE(got.shape() == want.shape());
  const Tensor g = as_f64_cpu(got);
  const Tensor w = as_f64_cpu(want);
  const double* gp = g.data<double>();
  const double* wp = w.data<double>();
  int64_t bad = 0;
  double worst = 0;
  std::ostringstream first;
  for (int64_t i = 0; i < g.numel(); ++i) {
    const double err = std::fabs(gp[i] - wp[i]);
    const double limit = tol.atol + tol.rtol * std::fabs(wp[i]);
    const bool same_special = (std::isinf(wp[i]) && gp[i] == wp[i]) ||
                              (std::isnan(wp[i]) && std::isnan(gp[i]));
    if (!same_special && !(err <= limit)) {
      if (bad < 5) first << " [" << i << "] got " << gp[i] << " want " << wp[i] << ";";
      ++bad;
      if (!(err <= worst)) worst = err;
    }
  }
  INFO(bad << " of " << g.numel() << " elements outside atol " << tol.atol << " rtol "
            << tol.rtol << " (worst abs error " << worst << "):" << first.str());
  REQUIRE(bad == 0);
}

}  // namespace attn::cuda_test
