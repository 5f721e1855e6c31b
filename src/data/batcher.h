// Token-bucketed batching. Examples are sorted by length so that a batch wastes little on
// padding, and cut so that its padded size stays under max_tokens; what varies per epoch
// (seeded) is which of the equally long examples go together and the order of the batches.
// The training stream is endless and resumable from a two-number State.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"
#include "data/dataset.h"
#include "data/vocab.h"

namespace attn::data {

struct Batch {
  Tensor src;              // i32 [B, S]: x1 .. xm eos (eos if src_eos), padded with pad_id
  Tensor src_lengths;      // i32 [B]: m (+ 1 for eos)
  Tensor tgt_in;           // i32 [B, T]: bos y1 .. yn, padded (teacher forcing input)
  Tensor tgt_out;          // i32 [B, T]: y1 .. yn eos, padded with pad_id (the loss ignores pad)
  int64_t size = 0;        // B
  int64_t src_tokens = 0;  // non-pad source tokens
  int64_t tgt_tokens = 0;  // non-pad targets, n + 1 per sentence
  std::vector<int64_t> indices;  // dataset index of each row
};

// The largest max_tokens accepted anywhere (data.max_tokens, --max-tokens): far above what
// any device holds, low enough that token arithmetic cannot overflow.
constexpr int64_t kMaxBatchTokens = int64_t{1} << 24;

struct BatcherOptions {
  // Upper bound on max(B * S, B * T), padding included; at most kMaxBatchTokens.
  int64_t max_tokens = 4096;
  int64_t max_sentences = 0;  // upper bound on B; 0 = none
  bool shuffle = true;        // seeded tie-breaking among equal lengths and batch order
  uint64_t seed = 1;
  int32_t pad_id = kPadId, bos_id = kBosId, eos_id = kEosId;
  bool src_eos = true;  // end every source sentence with eos (counted by max_len)
  // Data parallelism: every rank plans the same batches; rank r takes batches r, r + world,
  // ... of each epoch's sequence (the remainder of an epoch is dropped so ranks stay equal).
  int64_t rank = 0, world = 1;
};

// The padded batch of examples `indices` of `data`, rows in that order.
Batch collate(const Dataset& data, std::span<const int64_t> indices, const BatcherOptions& opt);

class Batcher {
 public:
  // Where the stream is: `position` batches of epoch `epoch` have been returned.
  struct State {
    int64_t epoch = 0;
    int64_t position = 0;
    bool operator==(const State&) const = default;
  };

  // Keeps a handle on `data` (shared arrays). Throws if the dataset is empty or an example
  // alone needs more than max_tokens (the error names both).
  Batcher(const Dataset& data, BatcherOptions opt);

  // The next batch of an endless stream; after the last batch of an epoch comes the first of
  // the next, whose order is planned from (seed, epoch).
  Batch next();

  int64_t epoch() const { return state_.epoch; }  // epoch of the last batch returned
  State state() const { return state_; }
  // Continues exactly as the batcher did after it was in `state` (same options and data).
  void restore(const State& state);
  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  const BatcherOptions& options() const { return opt_; }
  const Dataset& dataset() const { return data_; }

 private:
  void plan_epoch(int64_t epoch);

  Dataset data_;
  BatcherOptions opt_;
  std::vector<int64_t> base_order_;    // by (target, source length, index)
  std::vector<int64_t> group_starts_;  // runs of equal lengths in base_order_, plus the end
  std::vector<int64_t> bounds_;        // batch b holds order_[bounds_[b], bounds_[b + 1])
  int64_t batches_per_epoch_ = 0;      // per rank
  int64_t planned_epoch_ = -1;
  std::vector<int64_t> order_;        // planned epoch's example order
  std::vector<int64_t> batch_order_;  // planned epoch's batch sequence
  State state_;
};

// All examples once, in batches within opt.max_tokens (shuffle, seed, rank and world are
// ignored). With sort_by_length the examples are ordered by (source length, target length,
// index) to limit padding, and Batch::indices gives each row's place in the input (to put
// translations back in order); without it batches follow the dataset order.
std::vector<Batch> make_eval_batches(const Dataset& data, const BatcherOptions& opt,
                                     bool sort_by_length = true);
std::vector<Batch> make_eval_batches(const Dataset& data, int64_t max_tokens,
                                     int32_t pad_id = kPadId, int32_t bos_id = kBosId,
                                     int32_t eos_id = kEosId);

}  // namespace attn::data
