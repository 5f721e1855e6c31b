#include "bench/batches.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <numeric>
#include <sstream>

#include "bench/common.h"
#include "base/error.h"
#include "core/file.h"
#include "data/batcher.h"
#include "data/vocab.h"
#include "io/json_message.h"
#include "nn/config.h"

namespace attn::bench {

namespace {

using json = nlohmann::json;

struct Pair {
  int32_t src, tgt;
};

int32_t clip_len(double v, int64_t max_len) {
  const double r = std::round(v);
  return static_cast<int32_t>(std::clamp(r, 1.0, static_cast<double>(max_len)));
}

std::vector<Pair> sample_pool(int64_t n, uint64_t seed, int64_t max_len) {
  constexpr double kMu = 3.1780538303479458;  // ln(24)
  constexpr double kSigma = 0.6;
  std::vector<Pair> pool(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t ui = static_cast<uint64_t>(i);
    const double u1 = unit_double(hash_u64({seed, ui, 1}));
    const double u2 = unit_double(hash_u64({seed, ui, 2}));
    const double u3 = unit_double(hash_u64({seed, ui, 3}));
    const double z = std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(2.0 * M_PI * u2);
    const int32_t t = clip_len(std::exp(kMu + kSigma * z), max_len);
    const int32_t s = clip_len(t * (0.8 + 0.4 * u3), max_len);
    pool[i] = {s, t};
  }
  return pool;
}

// Greedy cut of the length-sorted pool; the last batch is left out (it may be partial).
std::vector<BatchLengths> cut(const std::vector<Pair>& pool, int64_t max_tokens) {
  std::vector<int64_t> order(pool.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (pool[a].tgt != pool[b].tgt) return pool[a].tgt < pool[b].tgt;
    if (pool[a].src != pool[b].src) return pool[a].src < pool[b].src;
    return a < b;
  });
  std::vector<BatchLengths> out;
  BatchLengths cur;
  int64_t S = 0, T = 0;
  for (int64_t i : order) {
    const int64_t s2 = std::max<int64_t>(S, pool[i].src), t2 = std::max<int64_t>(T, pool[i].tgt);
    const int64_t rows = static_cast<int64_t>(cur.src_lengths.size()) + 1;
    if (!cur.src_lengths.empty() && rows * std::max(s2, t2) > max_tokens) {
      out.push_back(std::move(cur));
      cur = BatchLengths();
      S = T = 0;
    }
    cur.src_lengths.push_back(pool[i].src);
    cur.tgt_lengths.push_back(pool[i].tgt);
    S = std::max<int64_t>(S, pool[i].src);
    T = std::max<int64_t>(T, pool[i].tgt);
  }
  return out;  // `cur` (the last batch) is dropped
}

std::vector<int32_t> int_array(const json& j, const char* key, size_t b) {
  ATTN_CHECK(j.contains(key) && j.at(key).is_array(), "batch file: batches[", b,
             "] needs an array ", key);
  std::vector<int32_t> v;
  for (const json& x : j.at(key)) {
    ATTN_CHECK(x.is_number_integer(), "batch file: batches[", b, "].", key,
               " must hold integers, got ", io::json_excerpt(x));
    v.push_back(x.get<int32_t>());
  }
  return v;
}

}  // namespace

int64_t max_length(const std::vector<int32_t>& lengths) {
  int64_t m = 0;
  for (int32_t l : lengths) m = std::max<int64_t>(m, l);
  return m;
}

int64_t sum_lengths(const std::vector<int32_t>& lengths) {
  int64_t s = 0;
  for (int32_t l : lengths) s += l;
  return s;
}

BatchFile generate_batches(const BatchGenOptions& opt) {
  ATTN_CHECK(opt.count >= 1, "bench batches: --count must be >= 1, got ", opt.count);
  ATTN_CHECK(opt.vocab > 4,
             "bench batches: the vocabulary must be > 4 (ids 0..3 are special), got ", opt.vocab);
  ATTN_CHECK(opt.max_len >= 1, "bench batches: max_len must be >= 1, got ", opt.max_len);
  ATTN_CHECK(opt.max_tokens >= 1 && opt.max_tokens <= data::kMaxBatchTokens,
             "bench batches: --tokens must be between 1 and ", data::kMaxBatchTokens, ", got ",
             opt.max_tokens);
  ATTN_CHECK(opt.vocab <= nn::TransformerConfig::kMaxVocab, "bench batches: --vocab must be at most ",
             nn::TransformerConfig::kMaxVocab, ", got ", opt.vocab);
  // The lengths of every sentence are held (and written) at once.
  ATTN_CHECK(opt.count <= (int64_t{1} << 30) / opt.max_tokens, "bench batches: --count ",
             opt.count, " x --tokens ", opt.max_tokens, " is more than 2^30 tokens");
  const int64_t max_len = std::min(opt.max_len, opt.max_tokens);
  BatchFile f;
  f.max_tokens = opt.max_tokens;
  f.vocab = opt.vocab;
  f.seed = opt.seed;
  // About 32 padded tokens per sentence; doubled until the cut yields `count` full batches.
  int64_t n = opt.count * std::max<int64_t>(opt.max_tokens / 32, 1) + 16;
  std::vector<BatchLengths> all;
  for (;;) {
    all = cut(sample_pool(n, opt.seed, max_len), opt.max_tokens);
    if (static_cast<int64_t>(all.size()) >= opt.count) break;
    ATTN_CHECK(n < (int64_t{1} << 40), "bench batches: cannot make ", opt.count, " batches");
    n *= 2;
  }
  for (size_t i = all.size() - 1; i > 0; --i) {
    const size_t j = hash_u64({opt.seed, 0xba7c4u, i}) % (i + 1);
    std::swap(all[i], all[j]);
  }
  all.resize(static_cast<size_t>(opt.count));
  f.batches = std::move(all);
  return f;
}

int32_t synthetic_token(int64_t vocab, int side, int64_t batch, int64_t row, int64_t pos) {
  const uint64_t h = hash_u64({static_cast<uint64_t>(side), static_cast<uint64_t>(batch),
                               static_cast<uint64_t>(row), static_cast<uint64_t>(pos)});
  return 4 + static_cast<int32_t>(h % static_cast<uint64_t>(vocab - 4));
}

json to_json(const BatchFile& f) {
  json batches = json::array();
  for (const auto& b : f.batches)
    batches.push_back({{"src_lengths", b.src_lengths}, {"tgt_lengths", b.tgt_lengths}});
  return {{"max_tokens", f.max_tokens}, {"vocab", f.vocab}, {"seed", f.seed}, {"batches", batches}};
}

BatchFile batch_file_from_json(const json& j) {
  ATTN_CHECK(j.is_object(), "batch file: expected a JSON object");
  for (const char* key : {"max_tokens", "vocab"})
    ATTN_CHECK(j.contains(key) && j.at(key).is_number_integer(), "batch file: needs an integer ",
               key);
  ATTN_CHECK(j.contains("batches") && j.at("batches").is_array(),
             "batch file: needs an array batches");
  BatchFile f;
  f.max_tokens = j.at("max_tokens").get<int64_t>();
  f.vocab = j.at("vocab").get<int64_t>();
  if (j.contains("seed")) f.seed = j.at("seed").get<uint64_t>();
  ATTN_CHECK(f.vocab > 4, "batch file: vocab must be > 4 (ids 0..3 are special), got ", f.vocab);
  ATTN_CHECK(f.max_tokens >= 1, "batch file: max_tokens must be >= 1, got ", f.max_tokens);
  size_t b = 0;
  for (const json& bj : j.at("batches")) {
    ATTN_CHECK(bj.is_object(), "batch file: batches[", b, "] must be an object");
    BatchLengths bl{int_array(bj, "src_lengths", b), int_array(bj, "tgt_lengths", b)};
    ATTN_CHECK(!bl.src_lengths.empty() && bl.src_lengths.size() == bl.tgt_lengths.size(),
               "batch file: batches[", b, "] has ", bl.src_lengths.size(), " source and ",
               bl.tgt_lengths.size(), " target lengths (need the same number, at least one)");
    for (const auto* v : {&bl.src_lengths, &bl.tgt_lengths})
      for (int32_t l : *v)
        ATTN_CHECK(l >= 1, "batch file: batches[", b, "] has a length ", l, " (must be >= 1)");
    const int64_t rows = static_cast<int64_t>(bl.src_lengths.size());
    const int64_t padded = rows * std::max(max_length(bl.src_lengths), max_length(bl.tgt_lengths));
    ATTN_CHECK(padded <= f.max_tokens, "batch file: batches[", b, "] has ", padded,
               " padded tokens, more than max_tokens ", f.max_tokens);
    f.batches.push_back(std::move(bl));
    ++b;
  }
  ATTN_CHECK(!f.batches.empty(), "batch file: no batches");
  return f;
}

void write_batch_file(const std::string& path, const BatchFile& f) {
  write_file(path, to_json(f).dump() + "\n", "batch file");
}

BatchFile read_batch_file(const std::string& path) {
  std::ifstream in(path);
  ATTN_CHECK(in, "cannot read the batch file ", path);
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    ATTN_FAIL(path, ": not valid JSON (", io::json_error_text(e), ")");
  }
  try {
    return batch_file_from_json(j);
  } catch (const Error& e) {
    ATTN_FAIL(path, ": ", e.what());
  }
}

data::Batch make_batch(const BatchFile& f, int64_t index, Device device) {
  ATTN_CHECK(index >= 0 && index < static_cast<int64_t>(f.batches.size()), "make_batch: batch ",
             index, " of ", f.batches.size());
  const BatchLengths& bl = f.batches[static_cast<size_t>(index)];
  const int64_t B = static_cast<int64_t>(bl.src_lengths.size());
  const int64_t S = max_length(bl.src_lengths), T = max_length(bl.tgt_lengths);
  std::vector<int32_t> src(static_cast<size_t>(B * S), data::kPadId);
  std::vector<int32_t> tin(static_cast<size_t>(B * T), data::kPadId);
  std::vector<int32_t> tout(static_cast<size_t>(B * T), data::kPadId);
  for (int64_t r = 0; r < B; ++r) {
    const int64_t ls = bl.src_lengths[r], lt = bl.tgt_lengths[r];
    for (int64_t p = 0; p + 1 < ls; ++p) src[r * S + p] = synthetic_token(f.vocab, 0, index, r, p);
    src[r * S + ls - 1] = data::kEosId;
    tin[r * T] = data::kBosId;
    for (int64_t p = 0; p + 1 < lt; ++p) {
      const int32_t y = synthetic_token(f.vocab, 1, index, r, p);
      tout[r * T + p] = y;
      tin[r * T + p + 1] = y;
    }
    tout[r * T + lt - 1] = data::kEosId;
  }
  data::Batch b;
  b.src = Tensor::from_ints(src, {B, S}, device);
  b.src_lengths = Tensor::from_ints(bl.src_lengths, {B}, device);
  b.tgt_in = Tensor::from_ints(tin, {B, T}, device);
  b.tgt_out = Tensor::from_ints(tout, {B, T}, device);
  b.size = B;
  b.src_tokens = sum_lengths(bl.src_lengths);
  b.tgt_tokens = sum_lengths(bl.tgt_lengths);
  b.indices.resize(static_cast<size_t>(B));
  std::iota(b.indices.begin(), b.indices.end(), 0);
  return b;
}

int run_bench_batches_command(const std::string& out, const BatchGenOptions& opt) {
  const BatchFile f = generate_batches(opt);
  write_batch_file(out, f);
  int64_t rows = 0, tgt = 0, src = 0, padded = 0;  // padded: B * T summed
  for (const auto& b : f.batches) {
    const int64_t n = static_cast<int64_t>(b.tgt_lengths.size());
    rows += n;
    tgt += sum_lengths(b.tgt_lengths);
    src += sum_lengths(b.src_lengths);
    padded += n * max_length(b.tgt_lengths);
  }
  std::cout << "wrote " << f.batches.size() << " batches (" << rows << " sentences, " << src
            << " source and " << tgt << " target tokens, "
            << (padded > 0 ? 100.0 * static_cast<double>(tgt) / static_cast<double>(padded) : 0.0)
            << "% of the padded target slots are real tokens) to " << out << "\n";
  return 0;
}

}  // namespace attn::bench
