#include "core/random.h"

#include "kernels/philox.h"

namespace attn {

uint64_t Generator::reserve(uint64_t n) {
  const uint64_t start = offset_;
  offset_ += philox_counters(n);
  return start;
}

Generator& default_generator() {
  static Generator gen;
  return gen;
}

}  // namespace attn
