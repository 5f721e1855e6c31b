// Inverted dropout on the GPU (kernels/dropout.h), the same masks as kernels/dropout_cpu.cc.
//
// Algorithm: element i is kept when dropout_keep_bits(philox(seed, offset + i / 4)[i % 4], p),
// exactly the CPU's rule. One thread handles a group of 4 consecutive elements (4k .. 4k+3), so
// one Philox4x32-10 evaluation serves the whole group; groups go round a grid-stride loop.
// When x and y are aligned to a group (16 bytes for float, 8 for bf16/f16) a group is one
// vector load and store; otherwise (and for the last, partial group) element by element.
// Kept values are x * scale with scale = float(1 / (1 - p)) computed in double on the host, as
// the CPU does: for float the outputs are bit-identical to the CPU; bf16/f16 round once.
// Launch: 256 threads per block, at most 65536 blocks.
// Memory: y (grad_x) written with `=`; it may alias x (grad_y): each thread reads its group
// before writing it.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "base/cuda_check.h"
#include "kernels/cuda_common.cuh"
#include "kernels/dropout.h"

namespace attn::kernels {
namespace {

using namespace cuda_common;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;

// The 4 elements that share one Philox counter, as one vector access.
template <class T>
using Group = Pack<T, 4>;

template <class T>
__device__ __forceinline__ T masked(T x, bool keep, float scale) {
  return keep ? from_f<T>(__fmul_rn(to_f(x), scale)) : from_f<T>(0.0f);
}

template <class T, bool kVec>
__global__ void dropout_kernel(const T* x, T* y, int64_t n, float p, float scale, uint64_t seed,
                               uint64_t offset) {
  const int64_t groups = (n + 3) / 4;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < groups;
       g += stride) {
    const uint64_t ctr = offset + static_cast<uint64_t>(g);
    const Philox4 r =
        philox4x32_10(static_cast<uint32_t>(ctr), static_cast<uint32_t>(ctr >> 32), 0u, 0u, k0, k1);
    const int64_t base = g * 4;
    if (kVec && base + 4 <= n) {
      const Group<T> in = reinterpret_cast<const Group<T>*>(x)[g];
      Group<T> out;
#pragma unroll
      for (int j = 0; j < 4; ++j) out.v[j] = masked(in.v[j], dropout_keep_bits(r.v[j], p), scale);
      reinterpret_cast<Group<T>*>(y)[g] = out;
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (base + j < n) y[base + j] = masked(x[base + j], dropout_keep_bits(r.v[j], p), scale);
      }
    }
  }
}

template <class T>
void launch(const T* x, T* y, int64_t n, float p, uint64_t seed, uint64_t offset,
            cudaStream_t stream) {
  if (n <= 0) return;
  // As the CPU: 1/(1-p) in double, rounded once (to float here, the compute type).
  const float scale = static_cast<float>(1.0 / (1.0 - static_cast<double>(p)));
  const int64_t groups = (n + 3) / 4;
  const unsigned blocks = static_cast<unsigned>(grid_blocks(groups, kThreads, kMaxBlocks));
  const bool vec = aligned(x, sizeof(Group<T>)) && aligned(y, sizeof(Group<T>));
  if (vec) {
    dropout_kernel<T, true><<<blocks, kThreads, 0, stream>>>(x, y, n, p, scale, seed, offset);
  } else {
    dropout_kernel<T, false><<<blocks, kThreads, 0, stream>>>(x, y, n, p, scale, seed, offset);
  }
  ATTN_CUDA_LAUNCH_CHECK();
}

}  // namespace

template <class T>
void dropout_forward_cuda(const T* x, T* y, int64_t n, float p, uint64_t seed, uint64_t offset,
                          cudaStream_t stream) {
  launch(x, y, n, p, seed, offset, stream);
}

template <class T>
void dropout_backward_cuda(const T* grad_y, T* grad_x, int64_t n, float p, uint64_t seed,
                           uint64_t offset, cudaStream_t stream) {
  launch(grad_y, grad_x, n, p, seed, offset, stream);
}

#define ATTN_INSTANTIATE(T)                                                                  \
  template void dropout_forward_cuda<T>(const T*, T*, int64_t, float, uint64_t, uint64_t,    \
                                        cudaStream_t);                                       \
  template void dropout_backward_cuda<T>(const T*, T*, int64_t, float, uint64_t, uint64_t,   \
                                         cudaStream_t);
ATTN_FOR_EACH_FLOAT_TYPE(ATTN_INSTANTIATE)
#undef ATTN_INSTANTIATE

}  // namespace attn::kernels
