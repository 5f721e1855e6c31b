#include "eval/bleu.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <unordered_map>

#include "base/error.h"
#include "eval/corpus_check.h"
#include "eval/tokenizer_13a.h"
#include "eval/unicode.h"

namespace attn::eval {
namespace {

// An n-gram of token ids (n <= 4); unused slots hold kNoToken, so n-grams of different
// orders never compare equal.
constexpr uint32_t kNoToken = 0xFFFFFFFFu;
using Ngram = std::array<uint32_t, kBleuMaxOrder>;

struct NgramHash {
  size_t operator()(const Ngram& g) const {
    uint64_t h = 0x9E3779B97F4A7C15ull;
    for (uint32_t id : g) h = (h ^ id) * 0x100000001B3ull + (h >> 29);
    return static_cast<size_t>(h);
  }
};

using NgramCounts = std::unordered_map<Ngram, int64_t, NgramHash>;

// sacreBLEU's BLEU._preprocess_segment: lowercase (optional), rstrip, 13a.
std::string preprocess(const std::string& text, const BleuOptions& options) {
  if (options.lowercase) return tokenize_13a(py_rstrip(py_lower(text)));
  return tokenize_13a(py_rstrip(text));
}

// Token ids of a tokenized segment; ids are only compared within one segment.
std::vector<uint32_t> to_ids(const std::string& tokenized,
                             std::unordered_map<std::string_view, uint32_t>& vocab) {
  std::vector<uint32_t> ids;
  for (std::string_view w : py_split(tokenized)) {
    auto [it, added] = vocab.try_emplace(w, static_cast<uint32_t>(vocab.size()));
    ids.push_back(it->second);
  }
  return ids;
}

NgramCounts count_ngrams(const std::vector<uint32_t>& ids) {
  NgramCounts counts;
  for (size_t n = 1; n <= kBleuMaxOrder; ++n) {
    for (size_t i = 0; i + n <= ids.size(); ++i) {
      Ngram g;
      g.fill(kNoToken);
      for (size_t k = 0; k < n; ++k) g[k] = ids[i + k];
      ++counts[g];
    }
  }
  return counts;
}

int order_of(const Ngram& g) {
  int n = 0;
  while (n < kBleuMaxOrder && g[n] != kNoToken) ++n;
  return n;
}

// The reference length closest to the hypothesis length; the shorter one on ties.
int64_t closest_ref_len(int64_t hyp_len, const std::vector<int64_t>& ref_lens) {
  int64_t best_diff = -1, best_len = -1;
  for (int64_t len : ref_lens) {
    const int64_t diff = std::llabs(hyp_len - len);
    if (best_diff == -1 || diff < best_diff) {
      best_diff = diff;
      best_len = len;
    } else if (diff == best_diff && len < best_len) {
      best_len = len;
    }
  }
  return best_len;
}

BleuStats stats_of_preprocessed(const std::string& hyp, const std::vector<std::string>& refs) {
  std::unordered_map<std::string_view, uint32_t> vocab;
  // Clipping counts: for each n-gram, its largest count in any single reference.
  NgramCounts ref_max;
  std::vector<int64_t> ref_lens;
  for (const std::string& ref : refs) {
    const std::vector<uint32_t> ids = to_ids(ref, vocab);
    ref_lens.push_back(static_cast<int64_t>(ids.size()));
    for (const auto& [g, c] : count_ngrams(ids)) {
      int64_t& m = ref_max[g];
      if (c > m) m = c;
    }
  }
  const std::vector<uint32_t> hyp_ids = to_ids(hyp, vocab);
  BleuStats s;
  s.sys_len = static_cast<int64_t>(hyp_ids.size());
  s.ref_len = closest_ref_len(s.sys_len, ref_lens);
  for (const auto& [g, c] : count_ngrams(hyp_ids)) {
    const int n = order_of(g) - 1;
    s.totals[n] += c;
    auto it = ref_max.find(g);
    if (it != ref_max.end()) s.counts[n] += std::min(c, it->second);
  }
  return s;
}

std::string printf_string(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

}  // namespace

BleuStats& BleuStats::operator+=(const BleuStats& other) {
  for (int n = 0; n < kBleuMaxOrder; ++n) {
    counts[n] += other.counts[n];
    totals[n] += other.totals[n];
  }
  sys_len += other.sys_len;
  ref_len += other.ref_len;
  return *this;
}

BleuStats segment_bleu_stats(const std::string& hyp, const std::vector<std::string>& refs,
                             const BleuOptions& options) {
  ATTN_CHECK(!refs.empty(), "segment_bleu_stats: no reference given");
  std::vector<std::string> prepared;
  prepared.reserve(refs.size());
  for (const std::string& r : refs) prepared.push_back(preprocess(r, options));
  return stats_of_preprocessed(preprocess(hyp, options), prepared);
}

// Follows sacreBLEU's arithmetic operation by operation (same order, same doubles), so that
// scores agree to the last bit rather than merely to the printed digits.
BleuScore compute_bleu(const BleuStats& stats) {
  BleuScore r;
  r.sys_len = stats.sys_len;
  r.ref_len = stats.ref_len;
  r.counts = stats.counts;
  r.totals = stats.totals;
  r.ratio = stats.ref_len != 0
                ? static_cast<double>(stats.sys_len) / static_cast<double>(stats.ref_len)
                : 0.0;
  r.bp = 1.0;
  if (stats.sys_len < stats.ref_len) {
    r.bp = stats.sys_len > 0 ? std::exp(1.0 - static_cast<double>(stats.ref_len) /
                                                  static_cast<double>(stats.sys_len))
                             : 0.0;
  }
  bool any_match = false;
  for (int64_t c : stats.counts) any_match = any_match || c != 0;
  if (!any_match) return r;  // score 0, all precisions 0 (sacreBLEU's early exit)

  // exp smoothing (mteval-v13a): the k-th order without a match counts 1/2^k matches.
  double smooth = 1.0;
  for (int n = 0; n < kBleuMaxOrder; ++n) {
    if (stats.totals[n] == 0) break;  // this and higher orders keep precision 0 => score 0
    const double total = static_cast<double>(stats.totals[n]);
    if (stats.counts[n] == 0) {
      smooth *= 2.0;
      r.precisions[n] = 100.0 / (smooth * total);
    } else {
      r.precisions[n] = 100.0 * static_cast<double>(stats.counts[n]) / total;
    }
  }
  double log_sum = 0.0;
  for (double p : r.precisions) log_sum += p == 0.0 ? -9999999999.0 : std::log(p);
  r.score = r.bp * std::exp(log_sum / kBleuMaxOrder);
  return r;
}

BleuScore corpus_bleu(const std::vector<std::string>& hyps,
                      const std::vector<std::vector<std::string>>& refs,
                      const BleuOptions& options) {
  detail::check_corpus("corpus_bleu", hyps, refs);
  BleuStats total;
  std::vector<std::string> seg_refs(refs.size());
  for (size_t i = 0; i < hyps.size(); ++i) {
    for (size_t k = 0; k < refs.size(); ++k) seg_refs[k] = preprocess(refs[k][i], options);
    total += stats_of_preprocessed(preprocess(hyps[i], options), seg_refs);
  }
  return compute_bleu(total);
}

std::string format(const BleuScore& s) {
  std::string out = "BLEU = " + printf_string("%.2f", s.score) + " ";
  for (int n = 0; n < kBleuMaxOrder; ++n) {
    if (n > 0) out += '/';
    out += printf_string("%.1f", s.precisions[n]);
  }
  out += " (BP = " + printf_string("%.3f", s.bp) + " ratio = " + printf_string("%.3f", s.ratio) +
         " hyp_len = " + std::to_string(s.sys_len) + " ref_len = " + std::to_string(s.ref_len) +
         ")";
  return out;
}

std::string signature(const BleuOptions& options, int nrefs) {
  return "nrefs:" + std::to_string(nrefs) + "|case:" + (options.lowercase ? "lc" : "mixed") +
         "|eff:no|tok:13a|smooth:exp|version:" + kSacrebleuVersion;
}

}  // namespace attn::eval
