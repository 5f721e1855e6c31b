#include "data/synthetic.h"

#include <algorithm>
#include <vector>

#include "base/error.h"
#include "core/random.h"
#include "data/vocab.h"
#include "kernels/philox.h"

namespace attn::data {

namespace {

// Uniform in [0, range) from 32 random bits (multiply-shift; the bias is below 2^-32 * range).
inline uint64_t below(uint32_t bits, uint64_t range) {
  return (static_cast<uint64_t>(bits) * range) >> 32;
}

}  // namespace

Dataset make_synthetic(const std::string& task, int64_t n, int32_t vocab_size, int64_t min_len,
                       int64_t max_len, uint64_t seed) {
  ATTN_CHECK(task == "copy" || task == "reverse", "synthetic data: task must be 'copy' or ",
             "'reverse', got '", task, "'");
  ATTN_CHECK(n >= 0, "synthetic data: n must be >= 0, got ", n);
  ATTN_CHECK(vocab_size > kEosId + 1, "synthetic data: vocab_size must be > ", kEosId + 1,
             " (ids 0..3 are special), got ", vocab_size);
  ATTN_CHECK(min_len >= 1 && max_len >= min_len, "synthetic data: need 1 <= min_len <= max_len,",
             " got min_len=", min_len, " max_len=", max_len);
  constexpr int32_t kFirst = kEosId + 1;
  const auto len_range = static_cast<uint64_t>(max_len - min_len + 1);
  const auto id_range = static_cast<uint64_t>(vocab_size - kFirst);

  Generator gen(seed);
  DatasetBuilder builder;
  std::vector<int32_t> src, tgt;
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t len_off = gen.reserve(1);
    const auto len =
        min_len + static_cast<int64_t>(below(philox_bits(gen.seed(), len_off, 0), len_range));
    const uint64_t off = gen.reserve(static_cast<uint64_t>(len));
    src.resize(static_cast<size_t>(len));
    for (int64_t k = 0; k < len; ++k) {
      src[static_cast<size_t>(k)] =
          kFirst + static_cast<int32_t>(below(philox_bits(gen.seed(), off, k), id_range));
    }
    tgt = src;
    if (task == "reverse") std::reverse(tgt.begin(), tgt.end());
    builder.add(src, tgt);
  }
  return builder.finish();
}

}  // namespace attn::data
