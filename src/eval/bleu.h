// Corpus BLEU with the semantics of sacreBLEU 2.6.0's defaults (sacrebleu.metrics.BLEU():
// 13a tokenization, exp smoothing, no effective order, n-grams up to 4), so that a score
// printed by attn can be compared with published sacreBLEU scores. Statistics are summed
// over segments before the score is computed (corpus BLEU, not an average of sentence BLEU).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace attn::eval {

// The sacreBLEU release whose semantics (and signature strings) are reproduced.
inline constexpr char kSacrebleuVersion[] = "2.6.0";
inline constexpr int kBleuMaxOrder = 4;

struct BleuOptions {
  bool lowercase = false;  // sacreBLEU -lc: Python's str.lower() before tokenizing
};

// Sufficient statistics: matched and total n-grams per order (1..4), hypothesis length and
// closest reference length, in 13a tokens. Corpus statistics are sums over segments.
struct BleuStats {
  std::array<int64_t, kBleuMaxOrder> counts{};
  std::array<int64_t, kBleuMaxOrder> totals{};
  int64_t sys_len = 0;
  int64_t ref_len = 0;

  BleuStats& operator+=(const BleuStats& other);
};

struct BleuScore {
  double score = 0.0;                              // 0..100
  std::array<double, kBleuMaxOrder> precisions{};  // percent; smoothed as sacreBLEU does
  double bp = 1.0;                                 // brevity penalty
  double ratio = 0.0;                              // sys_len / ref_len (0 without reference)
  int64_t sys_len = 0;
  int64_t ref_len = 0;
  std::array<int64_t, kBleuMaxOrder> counts{};
  std::array<int64_t, kBleuMaxOrder> totals{};
};

// Statistics of one segment against its references (at least one). Text is used as given
// (trailing whitespace is removed, as sacreBLEU does); it must be valid UTF-8.
BleuStats segment_bleu_stats(const std::string& hyp, const std::vector<std::string>& refs,
                             const BleuOptions& options = {});

// BLEU from (summed) statistics: sacreBLEU's compute_bleu with smooth_method='exp'.
BleuScore compute_bleu(const BleuStats& stats);

// Corpus BLEU of `hyps` against one or more reference streams: refs[k][i] is the k-th
// reference of hypothesis i. Errors when there is no stream, when a stream's length differs
// from the hypotheses', or on invalid UTF-8.
BleuScore corpus_bleu(const std::vector<std::string>& hyps,
                      const std::vector<std::vector<std::string>>& refs,
                      const BleuOptions& options = {});

// sacreBLEU's one-line rendering (str(score)):
// "BLEU = 12.34 45.6/20.1/10.2/5.1 (BP = 1.000 ratio = 1.023 hyp_len = 1234 ref_len = 1206)".
std::string format(const BleuScore& score);

// "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0".
std::string signature(const BleuOptions& options, int nrefs);

}  // namespace attn::eval
