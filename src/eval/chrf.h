// Corpus chrF with the semantics of sacreBLEU 2.6.0's defaults (sacrebleu.metrics.CHRF():
// character n-grams up to 6, no word n-grams, beta 2, whitespace removed, sacreBLEU's
// effective-order averaging rather than eps smoothing). Per segment the reference with the
// best chrF is chosen; the chosen statistics are summed over the corpus before scoring.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace attn::eval {

inline constexpr int kChrfCharOrder = 6;
inline constexpr int kChrfBeta = 2;

struct ChrfOptions {
  bool lowercase = false;  // Python's str.lower() on both sides
};

// Per character n-gram order (1..6): n-grams in the hypothesis (0 when the reference has
// none of that order, as in sacreBLEU), in the reference, and matched (clipped).
struct ChrfStats {
  std::array<int64_t, kChrfCharOrder> hyp{};
  std::array<int64_t, kChrfCharOrder> ref{};
  std::array<int64_t, kChrfCharOrder> match{};

  ChrfStats& operator+=(const ChrfStats& other);
};

struct ChrfScore {
  double score = 0.0;  // 0..100
  ChrfStats stats;     // summed over the corpus
};

// Statistics of one segment against the best of its references (at least one).
ChrfStats segment_chrf_stats(const std::string& hyp, const std::vector<std::string>& refs,
                             const ChrfOptions& options = {});

// chrF (0..100) from statistics.
double chrf_from_stats(const ChrfStats& stats);

// Corpus chrF; refs[k][i] is the k-th reference of hypothesis i. Same errors as corpus_bleu.
ChrfScore corpus_chrf(const std::vector<std::string>& hyps,
                      const std::vector<std::vector<std::string>>& refs,
                      const ChrfOptions& options = {});

// "chrF2 = 56.78".
std::string format(const ChrfScore& score);

// "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0".
std::string signature(const ChrfOptions& options, int nrefs);

}  // namespace attn::eval
