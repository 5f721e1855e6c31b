// BLEU's 13a tokenizer and corpus BLEU (eval::tokenize_13a, eval::corpus_bleu) on arbitrary
// bytes; invalid UTF-8 must be refused with an error, never read past. Properties: 13a output
// is valid UTF-8 with single spaces between tokens, and the score is a number in [0, 100].
#include <cmath>

#include "data/utf8.h"
#include "eval/bleu.h"
#include "eval/tokenizer_13a.h"
#include "eval_input.h"

namespace attn::fuzz {

void fuzz_one(std::string_view data) {
  const EvalInput in = eval_input(data);
  for (const std::string& line : in.lines) {
    if (!data::is_valid_utf8(line)) continue;
    const std::string tokens = eval::tokenize_13a(line);
    require(data::is_valid_utf8(tokens), "13a output is invalid UTF-8");
    require(tokens.empty() || (tokens.front() != ' ' && tokens.back() != ' '),
            "13a output starts or ends with a space: '", tokens, "'");
    require(tokens.find("  ") == std::string::npos, "13a output has two spaces: '", tokens, "'");
  }
  const eval::BleuScore score = eval::corpus_bleu(in.hyps, in.refs, {.lowercase = in.lowercase});
  require(std::isfinite(score.score) && score.score >= 0 && score.score <= 100.0 + 1e-9,
          "BLEU = ", score.score);
  require(!eval::format(score).empty(), "empty BLEU line");
}

}  // namespace attn::fuzz
