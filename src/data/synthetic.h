// Synthetic tasks for smoke tests and the end-to-end "learns in seconds" check: random
// token sequences whose target is the source (copy) or the source reversed (reverse). Ids are
// drawn from [4, vocab_size), so the special ids 0..3 (pad, unk, bos, eos) mean what they
// mean for a SentencePiece vocabulary and the same batching applies.
#pragma once

#include <cstdint>
#include <string>

#include "data/dataset.h"

namespace attn::data {

// n examples with lengths uniform in [min_len, max_len]; a pure function of its arguments.
Dataset make_synthetic(const std::string& task, int64_t n, int32_t vocab_size, int64_t min_len,
                       int64_t max_len, uint64_t seed);

}  // namespace attn::data
