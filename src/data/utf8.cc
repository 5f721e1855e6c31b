#include "data/utf8.h"

#include <cstdint>
#include <cstring>

namespace attn::data {

namespace {

bool is_continuation(unsigned char c) {
  return (c & 0xC0) == 0x80;
}

}  // namespace

std::optional<Utf8Error> find_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // Corpora are mostly ASCII: skip 8 bytes at a time while no high bit is set.
    if (i + 8 <= n) {
      uint64_t word;
      std::memcpy(&word, s + i, 8);
      if ((word & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    if (is_continuation(c)) return Utf8Error{i, "unexpected continuation byte"};
    if (c == 0xC0 || c == 0xC1) return Utf8Error{i, "overlong encoding"};
    if (c > 0xF4) return Utf8Error{i, c >= 0xF8 ? "invalid byte" : "code point above U+10FFFF"};

    const size_t len = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    // The second byte's range depends on the lead byte; this is where overlongs,
    // surrogates and values above U+10FFFF are caught.
    unsigned char lo = 0x80, hi = 0xBF;
    const char* range_reason = "truncated sequence";
    if (c == 0xE0) {
      lo = 0xA0;
      range_reason = "overlong encoding";
    } else if (c == 0xED) {
      hi = 0x9F;
      range_reason = "surrogate code point";
    } else if (c == 0xF0) {
      lo = 0x90;
      range_reason = "overlong encoding";
    } else if (c == 0xF4) {
      hi = 0x8F;
      range_reason = "code point above U+10FFFF";
    }
    if (i + 1 >= n || !is_continuation(s[i + 1])) return Utf8Error{i, "truncated sequence"};
    if (s[i + 1] < lo || s[i + 1] > hi) return Utf8Error{i, range_reason};
    for (size_t k = 2; k < len; ++k) {
      if (i + k >= n || !is_continuation(s[i + k])) return Utf8Error{i, "truncated sequence"};
    }
    i += len;
  }
  return std::nullopt;
}

}  // namespace attn::data
