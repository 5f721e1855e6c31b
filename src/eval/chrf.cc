#include "eval/chrf.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string_view>
#include <unordered_map>

#include "base/error.h"
#include "eval/bleu.h"
#include "eval/corpus_check.h"
#include "eval/unicode.h"

namespace attn::eval {
namespace {

using CharNgrams = std::array<std::unordered_map<std::string_view, int64_t>, kChrfCharOrder>;

// A segment without whitespace and its character n-gram counts; the maps' keys view `text`,
// so a Segment must not be copied or moved once counted.
struct Segment {
  std::string text;
  CharNgrams ngrams;

  Segment(const std::string& raw, const ChrfOptions& options)
      : text(remove_py_space(options.lowercase ? py_lower(raw) : raw)) {
    // Byte offset of every code point, and one past the end.
    std::vector<size_t> starts;
    for (size_t i = 0; i < text.size(); ++i) {
      if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) starts.push_back(i);
    }
    starts.push_back(text.size());
    const size_t length = starts.size() - 1;
    const std::string_view view(text);
    for (size_t n = 1; n <= kChrfCharOrder; ++n) {
      for (size_t i = 0; i + n <= length; ++i) {
        ++ngrams[n - 1][view.substr(starts[i], starts[i + n] - starts[i])];
      }
    }
  }
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
};

ChrfStats match_stats(const Segment& hyp, const Segment& ref) {
  ChrfStats s;
  for (int n = 0; n < kChrfCharOrder; ++n) {
    int64_t hyp_count = 0, match = 0, ref_count = 0;
    const auto& ref_ngrams = ref.ngrams[n];
    for (const auto& [g, c] : hyp.ngrams[n]) {
      hyp_count += c;
      auto it = ref_ngrams.find(g);
      if (it != ref_ngrams.end()) match += std::min(c, it->second);
    }
    for (const auto& [g, c] : ref_ngrams) ref_count += c;
    s.hyp[n] = ref_ngrams.empty() ? 0 : hyp_count;
    s.ref[n] = ref_count;
    s.match[n] = match;
  }
  return s;
}

ChrfStats best_stats(const Segment& hyp, const std::vector<std::unique_ptr<Segment>>& refs) {
  ChrfStats best;
  double best_f = -1.0;
  for (const auto& ref : refs) {
    ChrfStats s = match_stats(hyp, *ref);
    const double f = chrf_from_stats(s);
    if (f > best_f) {  // the first of equally good references wins
      best_f = f;
      best = s;
    }
  }
  return best;
}

}  // namespace

ChrfStats& ChrfStats::operator+=(const ChrfStats& other) {
  for (int n = 0; n < kChrfCharOrder; ++n) {
    hyp[n] += other.hyp[n];
    ref[n] += other.ref[n];
    match[n] += other.match[n];
  }
  return *this;
}

// sacreBLEU's CHRF._compute_f_score without eps smoothing: precision and recall averaged
// over the orders where both sides have n-grams, then F-beta. The operations follow its
// order exactly; the choice of the best reference depends on these doubles comparing equal.
double chrf_from_stats(const ChrfStats& stats) {
  const double factor = kChrfBeta * kChrfBeta;
  double avg_prec = 0.0, avg_rec = 0.0;
  int effective_order = 0;
  for (int n = 0; n < kChrfCharOrder; ++n) {
    if (stats.hyp[n] > 0 && stats.ref[n] > 0) {
      avg_prec += static_cast<double>(stats.match[n]) / static_cast<double>(stats.hyp[n]);
      avg_rec += static_cast<double>(stats.match[n]) / static_cast<double>(stats.ref[n]);
      ++effective_order;
    }
  }
  if (effective_order == 0) return 0.0;
  avg_prec /= effective_order;
  avg_rec /= effective_order;
  if (avg_prec + avg_rec == 0.0) return 0.0;
  double score = (1.0 + factor) * avg_prec * avg_rec;
  score /= factor * avg_prec + avg_rec;
  return 100.0 * score;
}

ChrfStats segment_chrf_stats(const std::string& hyp, const std::vector<std::string>& refs,
                             const ChrfOptions& options) {
  ATTN_CHECK(!refs.empty(), "segment_chrf_stats: no reference given");
  std::vector<std::unique_ptr<Segment>> ref_segments;
  for (const std::string& r : refs) ref_segments.push_back(std::make_unique<Segment>(r, options));
  return best_stats(Segment(hyp, options), ref_segments);
}

ChrfScore corpus_chrf(const std::vector<std::string>& hyps,
                      const std::vector<std::vector<std::string>>& refs,
                      const ChrfOptions& options) {
  detail::check_corpus("corpus_chrf", hyps, refs);
  ChrfScore r;
  std::vector<std::unique_ptr<Segment>> ref_segments(refs.size());
  for (size_t i = 0; i < hyps.size(); ++i) {
    for (size_t k = 0; k < refs.size(); ++k) {
      ref_segments[k] = std::make_unique<Segment>(refs[k][i], options);
    }
    r.stats += best_stats(Segment(hyps[i], options), ref_segments);
  }
  r.score = chrf_from_stats(r.stats);
  return r;
}

std::string format(const ChrfScore& score) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "chrF%d = %.2f", kChrfBeta, score.score);
  return buf;
}

std::string signature(const ChrfOptions& options, int nrefs) {
  return "nrefs:" + std::to_string(nrefs) + "|case:" + (options.lowercase ? "lc" : "mixed") +
         "|eff:yes|nc:" + std::to_string(kChrfCharOrder) +
         "|nw:0|space:no|version:" + kSacrebleuVersion;
}

}  // namespace attn::eval
