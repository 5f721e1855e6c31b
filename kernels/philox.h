// Philox4x32-10 counter-based RNG (Salmon et al., SC'11): value = f(key, counter), no state.
// Used identically on CPU and GPU so that a dropout mask is a pure function of
// (seed, offset, element index) and can be regenerated in backward instead of stored.
// Convention: element i of a tensor drawn at offset `o` uses counter (o + i / 4) and lane i % 4.
#pragma once

#include <cstdint>

#include "kernels/types.h"

namespace attn {

struct Philox4 {
  uint32_t v[4];
};

// One Philox4x32 round on a counter (c0..c3) under the round key (k0, k1), in place.
ATTN_HD inline void philox_round(uint32_t& c0, uint32_t& c1, uint32_t& c2, uint32_t& c3,
                                 uint32_t k0, uint32_t k1) {
  const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
  const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
  c0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
  c1 = static_cast<uint32_t>(p1);
  c2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
  c3 = static_cast<uint32_t>(p0);
}

// The key of round r (0-based): the seed's halves plus r Weyl increments.
ATTN_HD inline uint32_t philox_key0(uint32_t k0, int r) {
  return k0 + static_cast<uint32_t>(r) * 0x9E3779B9u;
}
ATTN_HD inline uint32_t philox_key1(uint32_t k1, int r) {
  return k1 + static_cast<uint32_t>(r) * 0xBB67AE85u;
}

ATTN_HD inline Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                     uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) philox_round(c0, c1, c2, c3, philox_key0(k0, r), philox_key1(k1, r));
  return Philox4{{c0, c1, c2, c3}};
}

// The block at counter `ctr` under key `seed`: lanes 0..3 are elements 4c..4c+3 of a draw.
ATTN_HD inline Philox4 philox_block(uint64_t seed, uint64_t ctr) {
  return philox4x32_10(static_cast<uint32_t>(ctr), static_cast<uint32_t>(ctr >> 32), 0u, 0u,
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// 32 random bits for element `index` of a draw that starts at counter `offset`.
ATTN_HD inline uint32_t philox_bits(uint64_t seed, uint64_t offset, uint64_t index) {
  return philox_block(seed, offset + index / 4).v[index % 4];
}

// Uniform in [0, 1) with 24 bits, exactly representable in float.
ATTN_HD inline float philox_uniform(uint64_t seed, uint64_t offset, uint64_t index) {
  return static_cast<float>(philox_bits(seed, offset, index) >> 8) * (1.0f / 16777216.0f);
}

// Number of counter values a draw of n elements consumes.
ATTN_HD inline uint64_t philox_counters(uint64_t n) { return (n + 3) / 4; }

}  // namespace attn
