// Strict UTF-8 validation (Unicode 15, table 3-7): rejects overlong forms, surrogates
// (U+D800..U+DFFF), code points above U+10FFFF, truncated sequences and stray continuation
// bytes. Corpus lines are checked before they reach SentencePiece, whose own handling of bad
// bytes is silent replacement, so a broken file would otherwise train and translate garbage.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace attn::data {

struct Utf8Error {
  size_t offset = 0;        // 0-based byte offset of the first byte of the bad sequence
  const char* reason = "";  // e.g. "overlong encoding"
};

// The first invalid sequence in `text`, or nothing if all of it is valid UTF-8.
std::optional<Utf8Error> find_invalid_utf8(std::string_view text);

inline bool is_valid_utf8(std::string_view text) {
  return !find_invalid_utf8(text).has_value();
}

}  // namespace attn::data
