#include "eval/unicode.h"

#include <algorithm>

#include "eval/unicode_tables.h"

namespace attn::eval {
namespace {

namespace ut = unicode_tables;

// Length of the UTF-8 sequence that starts with `lead` (valid input assumed).
inline size_t utf8_length(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

// Decodes the code point at text[i] and advances i past it.
inline char32_t next_code_point(std::string_view text, size_t& i) {
  const auto b0 = static_cast<unsigned char>(text[i]);
  const size_t n = utf8_length(b0);
  if (n == 1) {
    ++i;
    return b0;
  }
  char32_t c = b0 & (0x7F >> n);
  for (size_t k = 1; k < n && i + k < text.size(); ++k) {
    c = (c << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
  }
  i += n;
  return c;
}

bool in_ranges(const ut::Range* ranges, size_t size, char32_t c) {
  const ut::Range* end = ranges + size;
  const ut::Range* it =
      std::upper_bound(ranges, end, c, [](char32_t v, const ut::Range& r) { return v < r.lo; });
  return it != ranges && c <= (it - 1)->hi;
}

bool is_case_ignorable(char32_t c) {
  return in_ranges(ut::kCaseIgnorable, ut::kCaseIgnorableSize, c);
}
bool is_cased(char32_t c) {
  return in_ranges(ut::kCased, ut::kCasedSize, c);
}

// CPython's rule for capital sigma at position i: final form when a cased letter precedes
// it and none follows, skipping case-ignorable characters on both sides.
bool is_final_sigma(const std::u32string& text, size_t i) {
  size_t j = i;
  while (j > 0 && is_case_ignorable(text[j - 1])) --j;
  if (j == 0 || !is_cased(text[j - 1])) return false;
  size_t k = i + 1;
  while (k < text.size() && is_case_ignorable(text[k])) ++k;
  return k == text.size() || !is_cased(text[k]);
}

}  // namespace

bool is_py_space(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1C && c <= 0x1F);
  return std::binary_search(ut::kSpace, ut::kSpace + ut::kSpaceSize, c);
}

std::u32string decode_utf8(std::string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) out.push_back(next_code_point(text, i));
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string py_lower(std::string_view text) {
  const bool ascii = std::all_of(text.begin(), text.end(),
                                 [](char ch) { return static_cast<unsigned char>(ch) < 0x80; });
  std::string out;
  out.reserve(text.size());
  if (ascii) {
    for (char ch : text) out.push_back(ch >= 'A' && ch <= 'Z' ? static_cast<char>(ch + 32) : ch);
    return out;
  }
  const std::u32string cps = decode_utf8(text);
  for (size_t i = 0; i < cps.size(); ++i) {
    const char32_t c = cps[i];
    if (c == 0x3A3) {
      append_utf8(out, is_final_sigma(cps, i) ? 0x3C2 : 0x3C3);
      continue;
    }
    const ut::LowerEntry* end = ut::kLower + ut::kLowerSize;
    const ut::LowerEntry* it = std::lower_bound(
        ut::kLower, end, c, [](const ut::LowerEntry& e, char32_t v) { return e.from < v; });
    if (it == end || it->from != c) {
      append_utf8(out, c);
    } else {
      append_utf8(out, it->to[0]);
      if (it->to[1] != 0) append_utf8(out, it->to[1]);
    }
  }
  return out;
}

std::string_view py_rstrip(std::string_view text) {
  // Walk code points forwards (UTF-8 cannot be decoded backwards without care) and remember
  // where the last non-space one ended.
  size_t keep = 0;
  for (size_t i = 0; i < text.size();) {
    const char32_t c = next_code_point(text, i);
    if (!is_py_space(c)) keep = i;
  }
  return text.substr(0, keep);
}

std::vector<std::string_view> py_split(std::string_view text) {
  std::vector<std::string_view> words;
  size_t start = std::string_view::npos;
  for (size_t i = 0; i < text.size();) {
    const size_t at = i;
    const char32_t c = next_code_point(text, i);
    if (is_py_space(c)) {
      if (start != std::string_view::npos) words.push_back(text.substr(start, at - start));
      start = std::string_view::npos;
    } else if (start == std::string_view::npos) {
      start = at;
    }
  }
  if (start != std::string_view::npos) words.push_back(text.substr(start));
  return words;
}

std::string remove_py_space(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::string_view w : py_split(text)) out.append(w);
  return out;
}

}  // namespace attn::eval
