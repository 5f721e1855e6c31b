// Element type conversion and fill on the GPU, bit-identical to kernels/cast_cpu.cc except
// for NaN payloads. The CPU converts src -> double -> dst, and narrows to bf16/f16 through
// float (double -> float -> half, two roundings); this file rounds the same way. Where the
// double step is exact (float/bf16/f16 sources into float/bf16/f16/int32) it works in float.
// Out-of-range or NaN -> int32 is undefined on the CPU and saturates here; do not rely on it.
// Memory: dst[i] is written with `=` for i < n; nothing beyond n is touched. Grid-stride
// loops, 256 threads per block.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "base/cuda_check.h"
#include "kernels/cast.h"
#include "kernels/cuda_common.cuh"

namespace attn::kernels {
namespace {

constexpr int kThreads = 256;
// Enough blocks to fill any current GPU; the grid-stride loop covers the rest.
constexpr int64_t kMaxBlocks = 1 << 16;

int num_blocks(int64_t n) {
  return cuda_common::grid_blocks(n, kThreads, kMaxBlocks);
}

// Widest type the CPU passes through exactly for this source: float for the float family
// (their double value is a float), double for double and int32.
template <class T>
using Wide =
    std::conditional_t<std::is_same_v<T, double> || std::is_same_v<T, int32_t>, double, float>;

template <class T>
__host__ __device__ __forceinline__ Wide<T> load_wide(T v) {
  if constexpr (std::is_same_v<T, bf16>) {
    return __bfloat162float(__ushort_as_bfloat16(v.bits));
  } else if constexpr (std::is_same_v<T, f16>) {
    return __half2float(__ushort_as_half(v.bits));
  } else {
    return static_cast<Wide<T>>(v);
  }
}

// W is float or double; bf16/f16 round through float like the CPU's from_float.
template <class D, class W>
__host__ __device__ __forceinline__ D store_narrow(W v) {
  if constexpr (std::is_same_v<D, bf16>) {
    return bf16{__bfloat16_as_ushort(__float2bfloat16_rn(static_cast<float>(v)))};
  } else if constexpr (std::is_same_v<D, f16>) {
    return f16{__half_as_ushort(__float2half_rn(static_cast<float>(v)))};
  } else {
    return static_cast<D>(v);  // int32: truncates toward zero
  }
}

template <class S, class D>
__host__ __device__ __forceinline__ D convert(S v) {
  // A double destination needs the source's exact value; float -> double is exact.
  using W = std::conditional_t<std::is_same_v<D, double>, double, Wide<S>>;
  return store_narrow<D>(static_cast<W>(load_wide(v)));
}

template <class S, class D>
__global__ void cast_kernel(const S* __restrict__ src, D* __restrict__ dst, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    dst[i] = convert<S, D>(src[i]);
  }
}

template <class T>
__global__ void fill_kernel(T* __restrict__ dst, T value, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    dst[i] = value;
  }
}

}  // namespace

template <class Src, class Dst>
void cast_cuda(const Src* src, Dst* dst, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  if constexpr (std::is_same_v<Src, Dst>) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(n) * sizeof(Src),
                               cudaMemcpyDeviceToDevice, stream));
  } else {
    cast_kernel<Src, Dst><<<num_blocks(n), kThreads, 0, stream>>>(src, dst, n);
    ATTN_CUDA_LAUNCH_CHECK();
  }
}

template <class T>
void fill_cuda(T* dst, double value, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  const T v = from_float<T>(value);  // the CPU's rounding, done once on the host
  fill_kernel<T><<<num_blocks(n), kThreads, 0, stream>>>(dst, v, n);
  ATTN_CUDA_LAUNCH_CHECK();
}

#define ATTN_CAST_PAIR(S, D) template void cast_cuda<S, D>(const S*, D*, int64_t, cudaStream_t);
#define ATTN_CAST_FROM(S)   \
  ATTN_CAST_PAIR(S, float)  \
  ATTN_CAST_PAIR(S, double) \
  ATTN_CAST_PAIR(S, bf16) ATTN_CAST_PAIR(S, f16) ATTN_CAST_PAIR(S, int32_t)
ATTN_FOR_EACH_DTYPE(ATTN_CAST_FROM)
#undef ATTN_CAST_FROM
#undef ATTN_CAST_PAIR

#define ATTN_FILL(T) template void fill_cuda<T>(T*, double, int64_t, cudaStream_t);
ATTN_FOR_EACH_DTYPE(ATTN_FILL)
#undef ATTN_FILL

}  // namespace attn::kernels
