// Vectorisable float math for the CPU kernels' hot loops (CPU only; the CUDA kernels use the
// device's __expf and friends).
//
// exp_f32 exists because the C library's expf/exp are scalar calls that the compiler cannot
// vectorise: over an 8,000-word vocabulary the label-smoothed cross-entropy evaluates two
// exponentials per logit per step, and a profile of CPU training (docs/PERFORMANCE.md) had 27%
// of a step in libm's exp. exp_f32 is branch-free, so a loop over it vectorises.
// Accuracy: within 2 ulp of the correctly rounded exp for x in [-87.3, 88.7] (checked against
// double exp over that range in tests/test_norm_loss.cc); below, subnormal results; exp(-inf) =
// 0; NaN in gives NaN out; x above 88.72 gives +inf.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace attn::kernels {

// Four floats as one GCC/Clang vector (an SSE register, the x86-64 baseline): element-wise
// arithmetic, comparisons and ?: on it are lane by lane.
using f32x4 = float __attribute__((vector_size(16)));
using i32x4 = int32_t __attribute__((vector_size(16)));

namespace detail {
// The one exp, for F = float (with I = int32_t) or F = f32x4 (with I = i32x4).
template <class F, class I>
inline F exp_impl(F x) {
  // Clamp to where 2^n below stays representable; comparisons keep NaN (false both ways).
  x = x < -104.0f ? F{} - 104.0f : x;
  x = x > 88.8f ? F{} + 88.8f : x;
  // n = round(x / ln 2) by the 1.5 * 2^23 trick: the sum's low mantissa bits are n itself.
  constexpr float kMagic = 12582912.0f;
  const F t = x * 1.44269504088896341f + kMagic;
  const I n = std::bit_cast<I>(t) - std::bit_cast<int32_t>(kMagic);
  const F nf = t - kMagic;
  // r = x - n ln 2 in two parts (Cody-Waite), |r| <= ln 2 / 2.
  F r = x - nf * 0.693359375f;
  r = r + nf * 2.12194440e-4f;
  // e^r by Cephes expf's minimax polynomial.
  F p = F{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n as 2^h * 2^(n - h), h = floor(n / 2): both factors are normal floats for every n the
  // clamp allows ([-150, 128]), so results near float's maximum stay finite and results below
  // its normal range round to subnormals (or 0) as the last multiplication rounds them.
  const I h = n >> 1;
  return p * std::bit_cast<F>((h + 127) << 23) * std::bit_cast<F>((n - h + 127) << 23);
}
}  // namespace detail

inline float exp_f32(float x) { return detail::exp_impl<float, int32_t>(x); }
inline f32x4 exp_f32(f32x4 x) { return detail::exp_impl<f32x4, i32x4>(x); }

// exp for a kernel templated on float and double: exp_f32 for f32 data, std::exp for f64 (the
// gradient checks' reference). Always inlined, so a kernel built for a wider ISA (attention)
// compiles it for that ISA.
__attribute__((always_inline)) inline float exp_t(float x) { return exp_f32(x); }
__attribute__((always_inline)) inline double exp_t(double x) { return std::exp(x); }

inline f32x4 load4(const float* p) {
  f32x4 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void store4(float* p, f32x4 v) { __builtin_memcpy(p, &v, sizeof(v)); }

}  // namespace attn::kernels
