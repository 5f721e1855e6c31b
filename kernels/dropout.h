// Inverted dropout: y = x * keep / (1 - p), keep = philox_uniform(seed, offset, i) >= p.
// The mask is never stored: it is a pure function of (seed, offset, element index), so
// backward (and the CUDA kernels) regenerate it bit for bit. The comparison is done in float
// (the uniform has 24 bits), so CPU and GPU agree on every element.
// Memory convention: x and y (grad_y and grad_x) may alias; outputs are written with =.
#pragma once

#include <cstdint>

#include "kernels/philox.h"
#include "kernels/types.h"

namespace attn::kernels {

// The keep rule on 32 random bits: philox_uniform's 24-bit uniform (exact in float) >= p.
// Kernels that draw a whole Philox4 block (4 elements) at once apply it to each lane.
ATTN_HD inline bool dropout_keep_bits(uint32_t bits, float p) {
  return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f) >= p;
}

// Whether element `index` of a draw at (seed, offset) survives dropout with probability p.
// Shared with attention, which drops probabilities with the same rule.
ATTN_HD inline bool dropout_keep(uint64_t seed, uint64_t offset, uint64_t index, float p) {
  return dropout_keep_bits(philox_bits(seed, offset, index), p);
}

template <class T>
void dropout_forward_cpu(const T* x, T* y, int64_t n, float p, uint64_t seed, uint64_t offset);

// grad_x = grad_y * keep / (1 - p), the same mask as the forward with these (seed, offset).
template <class T>
void dropout_backward_cpu(const T* grad_y, T* grad_x, int64_t n, float p, uint64_t seed,
                          uint64_t offset);

// CUDA launchers (kernels/dropout_cuda.cu), T in {float, bf16, f16}: the same keep decisions
// as the CPU bit for bit; kept values are x * float(1 / (1 - p)) in fp32, rounded once to T
// (for float: bit-identical to the CPU). x and y may alias.
template <class T>
void dropout_forward_cuda(const T* x, T* y, int64_t n, float p, uint64_t seed, uint64_t offset,
                          cudaStream_t stream);
template <class T>
void dropout_backward_cuda(const T* grad_y, T* grad_x, int64_t n, float p, uint64_t seed,
                           uint64_t offset, cudaStream_t stream);

}  // namespace attn::kernels
