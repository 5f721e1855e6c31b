#include "data/batcher.h"

#include <algorithm>
#include <numeric>

#include "base/error.h"
#include "core/random.h"
#include "data/hash.h"
#include "kernels/philox.h"

namespace attn::data {

namespace {

int64_t src_cost(const Dataset& d, int64_t i, const BatcherOptions& opt) {
  return d.src_length(i) + (opt.src_eos ? 1 : 0);
}

int64_t tgt_cost(const Dataset& d, int64_t i) {
  return d.tgt_length(i) + 1;
}

void check_options(const BatcherOptions& opt) {
  ATTN_CHECK(opt.max_tokens > 0 && opt.max_tokens <= kMaxBatchTokens,
             "batcher: max_tokens must be in [1, ", kMaxBatchTokens, "], got ", opt.max_tokens);
  ATTN_CHECK(opt.max_sentences >= 0, "batcher: max_sentences must be >= 0, got ",
             opt.max_sentences);
  ATTN_CHECK(opt.world >= 1 && opt.rank >= 0 && opt.rank < opt.world, "batcher: rank ", opt.rank,
             " is not in [0, world = ", opt.world, ")");
}

void check_fits(const Dataset& d, const BatcherOptions& opt) {
  for (int64_t i = 0; i < d.size(); ++i) {
    const int64_t s = src_cost(d, i, opt), t = tgt_cost(d, i);
    ATTN_CHECK(std::max(s, t) <= opt.max_tokens, "batcher: example ", i, " needs ", std::max(s, t),
               " tokens (source ", s, ", target ", t, ", with eos) but max_tokens is ",
               opt.max_tokens);
  }
}

// Greedy cut of `order` into batches whose padded size stays within the limits.
std::vector<int64_t> cut(const Dataset& d, const std::vector<int64_t>& order,
                         const BatcherOptions& opt) {
  std::vector<int64_t> bounds{0};
  int64_t rows = 0, s_max = 0, t_max = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    const int64_t s = std::max(s_max, src_cost(d, order[k], opt));
    const int64_t t = std::max(t_max, tgt_cost(d, order[k]));
    const bool fits = (rows + 1) * std::max(s, t) <= opt.max_tokens &&
                      (opt.max_sentences == 0 || rows + 1 <= opt.max_sentences);
    if (rows > 0 && !fits) {
      bounds.push_back(static_cast<int64_t>(k));
      rows = 0;
      s_max = src_cost(d, order[k], opt);
      t_max = tgt_cost(d, order[k]);
    } else {
      s_max = s;
      t_max = t;
    }
    ++rows;
  }
  if (rows > 0) bounds.push_back(static_cast<int64_t>(order.size()));
  return bounds;
}

// Uniform in [0, range) from 32 random bits (multiply-shift).
inline int64_t below(uint32_t bits, int64_t range) {
  return static_cast<int64_t>((static_cast<uint64_t>(bits) * static_cast<uint64_t>(range)) >> 32);
}

// Fisher-Yates over v[begin, end) with the Philox values (seed, offset, begin..end).
void shuffle_range(std::vector<int64_t>& v, int64_t begin, int64_t end, uint64_t seed,
                   uint64_t offset) {
  for (int64_t i = end - 1; i > begin; --i) {
    const int64_t j =
        begin + below(philox_bits(seed, offset, static_cast<uint64_t>(i)), i - begin + 1);
    std::swap(v[static_cast<size_t>(i)], v[static_cast<size_t>(j)]);
  }
}

}  // namespace

Batch collate(const Dataset& data, std::span<const int64_t> indices, const BatcherOptions& opt) {
  Batch b;
  b.size = static_cast<int64_t>(indices.size());
  ATTN_CHECK(b.size > 0, "collate: no examples");
  b.indices.assign(indices.begin(), indices.end());
  const int64_t eos_src = opt.src_eos ? 1 : 0;
  int64_t S = 0, T = 0;
  for (int64_t i : indices) {
    S = std::max(S, data.src_length(i) + eos_src);
    T = std::max(T, data.tgt_length(i) + 1);
  }
  S = std::max<int64_t>(S, 1);  // an empty source without eos still gets a (padding) column
  b.src = Tensor::full({b.size, S}, opt.pad_id, kI32);
  b.src_lengths = Tensor::empty({b.size}, kI32);
  b.tgt_in = Tensor::full({b.size, T}, opt.pad_id, kI32);
  b.tgt_out = Tensor::full({b.size, T}, opt.pad_id, kI32);
  int32_t* src = b.src.data<int32_t>();
  int32_t* lengths = b.src_lengths.data<int32_t>();
  int32_t* tin = b.tgt_in.data<int32_t>();
  int32_t* tout = b.tgt_out.data<int32_t>();
  for (int64_t r = 0; r < b.size; ++r) {
    const auto x = data.src(indices[static_cast<size_t>(r)]);
    const auto y = data.tgt(indices[static_cast<size_t>(r)]);
    const auto m = static_cast<int64_t>(x.size()), n = static_cast<int64_t>(y.size());
    int32_t* srow = src + r * S;
    std::copy(x.begin(), x.end(), srow);
    if (opt.src_eos) srow[m] = opt.eos_id;
    lengths[r] = static_cast<int32_t>(m + eos_src);
    int32_t* in_row = tin + r * T;
    int32_t* out_row = tout + r * T;
    in_row[0] = opt.bos_id;
    std::copy(y.begin(), y.end(), in_row + 1);
    std::copy(y.begin(), y.end(), out_row);
    out_row[n] = opt.eos_id;
    b.src_tokens += m + eos_src;
    b.tgt_tokens += n + 1;
  }
  return b;
}

Batcher::Batcher(const Dataset& data, BatcherOptions opt) : data_(data), opt_(opt) {
  check_options(opt_);
  ATTN_CHECK(!data_.empty(), "batcher: the dataset is empty");
  check_fits(data_, opt_);
  const int64_t n = data_.size();
  base_order_.resize(static_cast<size_t>(n));
  std::iota(base_order_.begin(), base_order_.end(), 0);
  // Sorting by lengths alone fixes the sequence of lengths, so the batch boundaries are the
  // same every epoch; only which equal-length examples fill them is shuffled.
  auto key = [&](int64_t i) { return std::pair(data_.tgt_length(i), data_.src_length(i)); };
  std::sort(base_order_.begin(), base_order_.end(), [&](int64_t a, int64_t b) {
    const auto ka = key(a), kb = key(b);
    return ka != kb ? ka < kb : a < b;
  });
  for (int64_t k = 0; k < n; ++k) {
    if (k == 0 || key(base_order_[k]) != key(base_order_[k - 1])) group_starts_.push_back(k);
  }
  group_starts_.push_back(n);
  bounds_ = cut(data_, base_order_, opt_);
  const int64_t total = static_cast<int64_t>(bounds_.size()) - 1;
  ATTN_CHECK(total >= opt_.world, "batcher: an epoch has ", total, " batches, fewer than the ",
             opt_.world, " ranks");
  batches_per_epoch_ = total / opt_.world;
}

void Batcher::plan_epoch(int64_t epoch) {
  order_ = base_order_;
  const int64_t total = static_cast<int64_t>(bounds_.size()) - 1;
  batch_order_.resize(static_cast<size_t>(total));
  std::iota(batch_order_.begin(), batch_order_.end(), 0);
  if (opt_.shuffle) {
    // One Philox stream per (seed, epoch): any epoch can be planned without the others.
    Generator gen(mix64(opt_.seed ^ mix64(static_cast<uint64_t>(epoch))));
    const uint64_t example_offset = gen.reserve(order_.size());
    for (size_t g = 0; g + 1 < group_starts_.size(); ++g) {
      shuffle_range(order_, group_starts_[g], group_starts_[g + 1], gen.seed(), example_offset);
    }
    const uint64_t batch_offset = gen.reserve(batch_order_.size());
    shuffle_range(batch_order_, 0, total, gen.seed(), batch_offset);
  }
  planned_epoch_ = epoch;
}

Batch Batcher::next() {
  if (state_.position >= batches_per_epoch_) {
    ++state_.epoch;
    state_.position = 0;
  }
  if (planned_epoch_ != state_.epoch) plan_epoch(state_.epoch);
  const int64_t b = batch_order_[static_cast<size_t>(state_.position * opt_.world + opt_.rank)];
  ++state_.position;
  const auto begin = static_cast<size_t>(bounds_[b]), end = static_cast<size_t>(bounds_[b + 1]);
  return collate(data_, std::span<const int64_t>(order_.data() + begin, end - begin), opt_);
}

void Batcher::restore(const State& state) {
  ATTN_CHECK(state.epoch >= 0 && state.position >= 0 && state.position <= batches_per_epoch_,
             "batcher: cannot restore epoch ", state.epoch, " position ", state.position,
             ": an epoch has ", batches_per_epoch_, " batches (different data or options?)");
  state_ = state;
}

std::vector<Batch> make_eval_batches(const Dataset& data, const BatcherOptions& opt,
                                     bool sort_by_length) {
  BatcherOptions o = opt;
  o.rank = 0;
  o.world = 1;
  check_options(o);
  check_fits(data, o);
  std::vector<int64_t> order(static_cast<size_t>(data.size()));
  std::iota(order.begin(), order.end(), 0);
  if (sort_by_length) {
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return std::pair(data.src_length(a), data.tgt_length(a)) <
             std::pair(data.src_length(b), data.tgt_length(b));
    });
  }
  const std::vector<int64_t> bounds = cut(data, order, o);
  std::vector<Batch> batches;
  batches.reserve(bounds.size() - 1);
  for (size_t b = 0; b + 1 < bounds.size(); ++b) {
    const auto begin = static_cast<size_t>(bounds[b]), end = static_cast<size_t>(bounds[b + 1]);
    batches.push_back(
        collate(data, std::span<const int64_t>(order.data() + begin, end - begin), o));
  }
  return batches;
}

std::vector<Batch> make_eval_batches(const Dataset& data, int64_t max_tokens, int32_t pad_id,
                                     int32_t bos_id, int32_t eos_id) {
  BatcherOptions o;
  o.max_tokens = max_tokens;
  o.pad_id = pad_id;
  o.bos_id = bos_id;
  o.eos_id = eos_id;
  return make_eval_batches(data, o, /*sort_by_length=*/true);
}

}  // namespace attn::data
