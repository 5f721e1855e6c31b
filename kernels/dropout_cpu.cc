// CPU reference for kernels/dropout.h. Forward and backward are the same masked scaling, so
// both call one routine; element i depends only on i, so any split across threads gives the
// same result.
#include <algorithm>
#include <type_traits>

#include "kernels/cpu_isa.h"
#include "kernels/dropout.h"

namespace attn::kernels {

namespace {
// kBlocks consecutive Philox blocks side by side (one array per counter word), so that the
// ten rounds of all of them run in vector registers rather than as one dependent chain per
// block: bits[4 * j + lane] is philox_block(seed, ctr + j).v[lane], bit for bit.
constexpr int kBlocks = 16;
constexpr int64_t kChunk = 4 * kBlocks;  // elements per chunk

__attribute__((always_inline)) inline void philox_blocks(uint64_t seed, uint64_t ctr,
                                                         uint32_t* bits) {
  uint32_t c0[kBlocks], c1[kBlocks], c2[kBlocks], c3[kBlocks];
  for (int j = 0; j < kBlocks; ++j) {
    const uint64_t c = ctr + static_cast<uint64_t>(j);
    c0[j] = static_cast<uint32_t>(c);
    c1[j] = static_cast<uint32_t>(c >> 32);
    c2[j] = 0;
    c3[j] = 0;
  }
  const auto k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    const uint32_t rk0 = philox_key0(k0, r), rk1 = philox_key1(k1, r);
#pragma omp simd
    for (int j = 0; j < kBlocks; ++j) philox_round(c0[j], c1[j], c2[j], c3[j], rk0, rk1);
  }
  for (int j = 0; j < kBlocks; ++j) {
    bits[4 * j] = c0[j];
    bits[4 * j + 1] = c1[j];
    bits[4 * j + 2] = c2[j];
    bits[4 * j + 3] = c3[j];
  }
}

// Chunk c of the draw: elements [c * kChunk, min(n, (c + 1) * kChunk)). Element i uses lane
// i % 4 of the block at counter offset + i / 4 (philox.h's convention).
template <class T>
__attribute__((always_inline)) inline void masked_scale_chunk(const T* in, T* out, int64_t n,
                                                              float p, T keep_scale,
                                                              uint64_t seed, uint64_t offset,
                                                              int64_t c) {
  uint32_t bits[kChunk];
  philox_blocks(seed, offset + static_cast<uint64_t>(c) * kBlocks, bits);
  const int64_t begin = c * kChunk, len = std::min<int64_t>(kChunk, n - begin);
  const T* x = in + begin;
  T* y = out + begin;
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) y[i] = dropout_keep_bits(bits[i], p) ? x[i] * keep_scale : T(0);
}

// The loop over chunks, in a function of its own per ISA (the OpenMP body is outlined into it).
#define ATTN_MASKED_SCALE_LOOP                                                  \
  const int64_t chunks = (n + kChunk - 1) / kChunk;                             \
  _Pragma("omp parallel for schedule(static) if (n > (1 << 15))")               \
  for (int64_t c = 0; c < chunks; ++c)                                          \
      masked_scale_chunk(in, out, n, p, keep_scale, seed, offset, c);

template <class T>
void masked_scale_baseline(const T* in, T* out, int64_t n, float p, T keep_scale, uint64_t seed,
                           uint64_t offset) {
  ATTN_MASKED_SCALE_LOOP
}

#if ATTN_CPU_ISA_BUILDS
// Philox's 32x32 -> 64-bit products are what the wider builds speed up (8 per AVX-512 vpmuludq).
__attribute__((target("avx2"))) void masked_scale_avx2(const float* in, float* out, int64_t n,
                                                       float p, float keep_scale, uint64_t seed,
                                                       uint64_t offset) {
  ATTN_MASKED_SCALE_LOOP
}
__attribute__((target("avx512f"))) void masked_scale_avx512(const float* in, float* out,
                                                            int64_t n, float p, float keep_scale,
                                                            uint64_t seed, uint64_t offset) {
  ATTN_MASKED_SCALE_LOOP
}
#endif
#undef ATTN_MASKED_SCALE_LOOP

template <class T>
void masked_scale(const T* in, T* out, int64_t n, float p, uint64_t seed, uint64_t offset) {
  // 1/(1-p) in double, rounded once to T: the kept values are exactly x * T(1/(1-p)).
  const T keep_scale = static_cast<T>(1.0 / (1.0 - static_cast<double>(p)));
#if ATTN_CPU_ISA_BUILDS
  if constexpr (std::is_same_v<T, float>) {
    if (cpu_isa() == CpuIsa::kAvx512)
      return masked_scale_avx512(in, out, n, p, keep_scale, seed, offset);
    if (cpu_isa() == CpuIsa::kAvx2)
      return masked_scale_avx2(in, out, n, p, keep_scale, seed, offset);
  }
#endif
  masked_scale_baseline(in, out, n, p, keep_scale, seed, offset);
}
}  // namespace

template <class T>
void dropout_forward_cpu(const T* x, T* y, int64_t n, float p, uint64_t seed, uint64_t offset) {
  masked_scale(x, y, n, p, seed, offset);
}

template <class T>
void dropout_backward_cpu(const T* grad_y, T* grad_x, int64_t n, float p, uint64_t seed,
                          uint64_t offset) {
  masked_scale(grad_y, grad_x, n, p, seed, offset);
}

template void dropout_forward_cpu<float>(const float*, float*, int64_t, float, uint64_t, uint64_t);
template void dropout_forward_cpu<double>(const double*, double*, int64_t, float, uint64_t,
                                          uint64_t);
template void dropout_backward_cpu<float>(const float*, float*, int64_t, float, uint64_t, uint64_t);
template void dropout_backward_cpu<double>(const double*, double*, int64_t, float, uint64_t,
                                           uint64_t);

}  // namespace attn::kernels
