// Synthetic machine-translation batches for the training benchmark (`attn bench batches`,
// `attn bench train`, scripts/bench/bench_train.py). A file holds only lengths; token ids are a
// documented hash, so attn and PyTorch build identical tensors from it.
//
// File (JSON): {"max_tokens": int, "vocab": int, "seed": int,
//               "batches": [{"src_lengths": [int...], "tgt_lengths": [int...]}, ...]}
// Lengths count every position of the padded row that is not padding:
//   source row r of length Ls: x_0 .. x_{Ls-2} eos           (Ls >= 1)
//   target row r of length Lt: tgt_in  = bos y_0 .. y_{Lt-2}  (teacher forcing input)
//                              tgt_out = y_0 .. y_{Lt-2} eos  (Lt >= 1)
// padded with 0 to S = max(src_lengths) and T = max(tgt_lengths); every batch has
// B * max(S, T) <= max_tokens. Token ids (pad 0, unk 1, bos 2, eos 3):
//   x_p of row r in batch b = 4 + hash_u64({0, b, r, p}) % (vocab - 4)
//   y_p of row r in batch b = 4 + hash_u64({1, b, r, p}) % (vocab - 4)
// with hash_u64 from bench/common.h (chained SplitMix64).
//
// Length distribution (generate_batches): sentence i of the pool draws
//   u1, u2, u3 = unit_double(hash_u64({seed, i, k})) for k = 1, 2, 3
//   target length = round(exp(mu + sigma * z)), z = sqrt(-2 ln(1 - u1)) cos(2 pi u2),
//                   mu = ln(24), sigma = 0.6 (median 24, mean ~29: WMT-like subword
//                   lengths), clipped to [1, max_len]
//   source length = round(target length * (0.8 + 0.4 * u3)), clipped to [1, max_len]
// The pool is sorted by (target, source length, index) and cut greedily into batches whose
// padded size max(B*S, B*T) stays <= max_tokens (as data::Batcher does); the last, possibly
// partial, batch is dropped, the rest are shuffled (seeded) and the first `count` kept. The
// pool starts at enough sentences for `count` full batches and doubles until it has them.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/device.h"
#include "data/batcher.h"

namespace attn::bench {

struct BatchLengths {
  std::vector<int32_t> src_lengths, tgt_lengths;
  bool operator==(const BatchLengths&) const = default;
};

struct BatchFile {
  int64_t max_tokens = 25000;
  int64_t vocab = 32000;
  uint64_t seed = 1;
  std::vector<BatchLengths> batches;
  bool operator==(const BatchFile&) const = default;
};

struct BatchGenOptions {
  int64_t max_tokens = 25000;
  uint64_t seed = 1;
  int64_t count = 16;
  int64_t vocab = 32000;
  int64_t max_len = 256;  // clipped to max_tokens when larger
};

BatchFile generate_batches(const BatchGenOptions& options);

// Token id of position p of row r of batch b; side 0 = source, 1 = target (formula above).
int32_t synthetic_token(int64_t vocab, int side, int64_t batch, int64_t row, int64_t pos);

// Padded widths and token counts of one batch.
int64_t max_length(const std::vector<int32_t>& lengths);
int64_t sum_lengths(const std::vector<int32_t>& lengths);

nlohmann::json to_json(const BatchFile& file);
// Checks the schema and every invariant (lengths >= 1, equal row counts, the token bound,
// vocab > 4); errors name the batch and field.
BatchFile batch_file_from_json(const nlohmann::json& j);
void write_batch_file(const std::string& path, const BatchFile& file);
BatchFile read_batch_file(const std::string& path);

// Batch `index` of the file as attn's training batch (tensors on `device`).
data::Batch make_batch(const BatchFile& file, int64_t index, Device device);

// `attn bench batches`.
int run_bench_batches_command(const std::string& out, const BatchGenOptions& options);

}  // namespace attn::bench
