// Element type conversion and fill. Conversions go through double on the CPU (exact for
// every pair of supported types except narrowing, which rounds to nearest even).
#pragma once

#include <cstdint>

#include "kernels/types.h"

namespace attn::kernels {

template <class Src, class Dst>
void cast_cpu(const Src* src, Dst* dst, int64_t n);

template <class T>
void fill_cpu(T* dst, double value, int64_t n);

// CUDA launchers (kernels/cast_cuda.cu). Types: float, double, bf16, f16, int32_t.
template <class Src, class Dst>
void cast_cuda(const Src* src, Dst* dst, int64_t n, cudaStream_t stream);

template <class T>
void fill_cuda(T* dst, double value, int64_t n, cudaStream_t stream);

}  // namespace attn::kernels
