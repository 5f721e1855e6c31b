// sacreBLEU's default BLEU tokenizer, "13a" (the tokenization of WMT's mteval-v13a.pl), as
// sacreBLEU 2.x implements it (tokenizers/tokenizer_13a.py and tokenizer_re.py).
#pragma once

#include <string>
#include <string_view>

namespace attn::eval {

// The tokens of `line` joined by single spaces, exactly as sacreBLEU's Tokenizer13a returns
// them: '<skipped>' removed, '-\n' joins lines, the entities &quot; &amp; &lt; &gt; unescaped
// (one pass each, in that order), ASCII punctuation other than ' - . , split off, '.' and
// ',' split off unless between digits, '-' split off after a digit, and Python whitespace
// (Unicode, not only ASCII) separating tokens. `line` must be valid UTF-8.
std::string tokenize_13a(std::string_view line);

}  // namespace attn::eval
