// Scalar types and portability macros shared by CPU and CUDA kernels. Compiles without nvcc.
// bf16 and f16 are plain 16-bit storage types on the host; CUDA kernels reinterpret them as
// __nv_bfloat16 / __half. Conversions round to nearest even, like the hardware.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

// Same declaration as cuda_runtime_api.h, so headers can name streams without CUDA.
typedef struct CUstream_st* cudaStream_t;

#if defined(__CUDACC__)
#define ATTN_HD __host__ __device__
#else
#define ATTN_HD
#endif

// X-macros over the element types kernels are instantiated for: X(T) for each T.
#define ATTN_FOR_EACH_FLOAT_TYPE(X) X(float) X(bf16) X(f16)  // the CUDA compute types
#define ATTN_FOR_EACH_DTYPE(X) X(float) X(double) X(bf16) X(f16) X(int32_t)  // every dtype

namespace attn {

struct bf16 {
  uint16_t bits;
};
struct f16 {
  uint16_t bits;
};

inline float bf16_to_float(bf16 h) {
  uint32_t x = static_cast<uint32_t>(h.bits) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

inline bf16 float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((x >> 16) | 0x40u)};
  x += 0x7fffu + ((x >> 16) & 1u);
  return bf16{static_cast<uint16_t>(x >> 16)};
}

inline float f16_to_float(f16 h) {
  const uint32_t sign = static_cast<uint32_t>(h.bits & 0x8000u) << 16;
  const uint32_t exp = (h.bits >> 10) & 0x1fu;
  const uint32_t mant = h.bits & 0x3ffu;
  uint32_t x;
  if (exp == 0) {
    float v = static_cast<float>(mant) * 5.9604644775390625e-8f;  // subnormal: mant * 2^-24
    return sign ? -v : v;
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (mant << 13);
  } else {
    x = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

inline f16 float_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  uint32_t a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) return f16{static_cast<uint16_t>(sign | (a > 0x7f800000u ? 0x7e00u : 0x7c00u))};
  if (a >= 0x477ff000u) return f16{static_cast<uint16_t>(sign | 0x7c00u)};  // rounds to inf
  if (a < 0x38800000u) {  // below the smallest normal half: subnormal, units of 2^-24
    float af;
    std::memcpy(&af, &a, 4);
    return f16{static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(af * 16777216.0f)))};
  }
  a += 0xc8000fffu + ((a >> 13) & 1u);  // rebias exponent 127 -> 15 and round to nearest even
  return f16{static_cast<uint16_t>(sign | (a >> 13))};
}

// Uniform conversions used by kernels that are templated on the storage type.
inline float to_float(float v) { return v; }
inline double to_float(double v) { return v; }
inline float to_float(bf16 v) { return bf16_to_float(v); }
inline float to_float(f16 v) { return f16_to_float(v); }
inline double to_float(int32_t v) { return v; }

template <class T>
inline T from_float(double v) {
  if constexpr (std::is_same_v<T, bf16>) {
    return float_to_bf16(static_cast<float>(v));
  } else if constexpr (std::is_same_v<T, f16>) {
    return float_to_f16(static_cast<float>(v));
  } else {
    return static_cast<T>(v);
  }
}

}  // namespace attn
