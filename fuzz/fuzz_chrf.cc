// chrF's character n-grams with Python's whitespace and lowercasing (eval::corpus_chrf) on
// arbitrary bytes; invalid UTF-8 must be refused with an error, never read past. Property:
// the score is a number in [0, 100].
#include <cmath>

#include "data/utf8.h"
#include "eval/chrf.h"
#include "eval_input.h"

namespace attn::fuzz {

void fuzz_one(std::string_view data) {
  const EvalInput in = eval_input(data);
  const eval::ChrfOptions options{.lowercase = in.lowercase};
  const eval::ChrfScore score = eval::corpus_chrf(in.hyps, in.refs, options);
  require(std::isfinite(score.score) && score.score >= 0 && score.score <= 100.0 + 1e-9,
          "chrF = ", score.score);
  require(!eval::format(score).empty(), "empty chrF line");
}

}  // namespace attn::fuzz
