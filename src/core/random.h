// Seeded source of Philox counters. A draw of n values reserves ceil(n/4) counters and
// returns the starting offset; the values themselves are pure functions of
// (seed, offset, index) (kernels/philox.h), so they can be recomputed on any device.
#pragma once

#include <cstdint>

namespace attn {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0x5eed) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) {
    seed_ = seed;
    offset_ = offset;
  }
  // Reserves the counters for n values; returns the offset of the first.
  uint64_t reserve(uint64_t n);

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

// Process-wide generator used when an op is not given one.
Generator& default_generator();

}  // namespace attn
