// Token-id datasets. A Dataset is a read-only handle on flat id arrays plus per-example
// offsets, either owned in memory or memory-mapped from a binarized cache file (written once,
// like fairseq-preprocess, so later runs skip reading and encoding the corpus). Copies share
// the arrays.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "data/corpus.h"
#include "data/vocab.h"

namespace attn::data {

// One sentence pair as subword ids, without bos/eos.
struct Example {
  std::vector<int32_t> src, tgt;
  bool operator==(const Example&) const = default;
};

// What building (or loading) a dataset kept and dropped; the trainer logs it.
struct DatasetStats {
  int64_t lines = 0;             // sentence pairs read
  int64_t kept = 0;              // examples in the dataset
  int64_t skipped_empty = 0;     // either side encodes to no tokens
  int64_t skipped_too_long = 0;  // either side has more than max_len - 1 tokens (+1 for eos)
  int64_t src_tokens = 0, tgt_tokens = 0;  // kept ids, without eos
  bool from_cache = false;                 // mapped from an existing, valid cache file
};

class Dataset {
 public:
  Dataset() = default;  // empty
  static Dataset from_examples(const std::vector<Example>& examples);

  int64_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const int32_t> src(int64_t i) const;
  std::span<const int32_t> tgt(int64_t i) const;
  int64_t src_length(int64_t i) const { return static_cast<int64_t>(src(i).size()); }
  int64_t tgt_length(int64_t i) const { return static_cast<int64_t>(tgt(i).size()); }
  Example example(int64_t i) const;
  int64_t src_tokens() const { return size_ ? src_offsets_[size_] : 0; }
  int64_t tgt_tokens() const { return size_ ? tgt_offsets_[size_] : 0; }
  bool memory_mapped() const { return mapped_; }

 private:
  friend class DatasetBuilder;
  friend class DatasetAccess;

  std::shared_ptr<const void> owner_;  // keeps the arrays (vectors or a mapping) alive
  int64_t size_ = 0;
  const int64_t* src_offsets_ = nullptr;  // size_ + 1 entries, src_offsets_[0] == 0
  const int64_t* tgt_offsets_ = nullptr;
  const int32_t* src_ids_ = nullptr;
  const int32_t* tgt_ids_ = nullptr;
  bool mapped_ = false;
};

// Appends examples into owned arrays; finish() hands them to a Dataset.
class DatasetBuilder {
 public:
  DatasetBuilder();
  void add(std::span<const int32_t> src, std::span<const int32_t> tgt);
  int64_t size() const;
  Dataset finish();

 private:
  struct Arrays;
  std::shared_ptr<Arrays> arrays_;
};

// Encodes every pair (in parallel, order preserved) and keeps those whose sides are both
// non-empty and at most max_len - 1 tokens long (max_len counts the eos each side gets).
Dataset build(const ParallelText& text, const Vocab& vocab, int64_t max_len,
              DatasetStats* stats = nullptr);

// Source sentences only, for translation: every line is kept (empty ones too, so that
// output lines match input lines), targets are empty.
Dataset build_source_only(const std::vector<std::string>& lines, const Vocab& vocab);

// The dataset of (src_path, tgt_path) encoded with `vocab` and filtered by max_len, from the
// cache file at cache_path when that file matches the corpus bytes, the vocabulary and
// max_len; otherwise the corpus is read and encoded, and the cache (re)written (to a
// temporary file, then renamed) and mapped. A truncated or corrupt cache is rebuilt with a
// warning, never used. stats->from_cache tells which happened. The cache is only ever
// replaced by rename, which leaves existing mappings intact; editing the file in place
// while a process maps it would change (or, truncated, fault) that process's data.
Dataset load_or_build_cached(const std::string& src_path, const std::string& tgt_path,
                             const Vocab& vocab, int64_t max_len, const std::string& cache_path,
                             DatasetStats* stats = nullptr);

}  // namespace attn::data
