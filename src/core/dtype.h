// Element types. f64 exists for gradient checks on the CPU; bf16/f16 for mixed precision.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>

#include "kernels/types.h"

namespace attn {

enum class DType { kF32, kF64, kBF16, kF16, kI32 };

inline constexpr DType kF32 = DType::kF32;
inline constexpr DType kF64 = DType::kF64;
inline constexpr DType kBF16 = DType::kBF16;
inline constexpr DType kF16 = DType::kF16;
inline constexpr DType kI32 = DType::kI32;

size_t dtype_size(DType t);
const char* dtype_name(DType t);
DType parse_dtype(const std::string& name);
inline bool is_floating(DType t) { return t != DType::kI32; }
inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

template <class T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::kF32; }
template <> constexpr DType dtype_of<double>() { return DType::kF64; }
template <> constexpr DType dtype_of<bf16>() { return DType::kBF16; }
template <> constexpr DType dtype_of<f16>() { return DType::kF16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::kI32; }

}  // namespace attn
