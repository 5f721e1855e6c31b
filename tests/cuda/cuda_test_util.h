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
#include <sstream>
#include <string>

#include "core/random.h"
#include "core/tensor.h"

namespace attn::cuda_test {

inline const Device kGpu = Device::cuda(0);
inline const DType kGpuFloatTypes[] = {kF32, kBF16, kF16};

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

// Uniform values in [lo, hi), rounded to `dtype`, on `device`.
inline Tensor random_tensor(const Shape& shape, DType dtype, Device device, uint64_t seed,
                            double lo = -1.0, double hi = 1.0) {
  Generator gen(seed);
  Tensor t = Tensor::uniform(shape, lo, hi, gen, kF32, Device::cpu());
  return t.to(dtype).to(device);
}

// The same values as `t` (any dtype, any device) as an f64 CPU tensor: the reference input.
inline Tensor as_f64_cpu(const Tensor& t) { return t.to(Device::cpu()).to(kF64); }

// An output buffer full of NaN, so unwritten elements cannot pass.
inline Tensor poisoned(const Shape& shape, DType dtype, Device device = kGpu) {
  Tensor t = Tensor::empty(shape, dtype, device);
  t.fill_(std::nan(""));
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
