// Character tables measured from Python's str (see gen_unicode_tables.py, which writes
// unicode_tables.cc). Internal to src/eval: use eval/unicode.h instead.
#pragma once

#include <cstddef>

namespace attn::eval::unicode_tables {

struct LowerEntry {
  char32_t from;
  char32_t to[2];  // to[1] == 0 for a one-character lowercase
};

struct Range {
  char32_t lo, hi;  // inclusive
};

// The Unicode version of the Python that generated the tables.
extern const char kUnicodeVersion[];
// str.isspace(), sorted.
extern const char32_t kSpace[];
extern const size_t kSpaceSize;
// Every code point whose str.lower() differs from itself, sorted by `from`. Capital sigma
// maps to U+03C3 here; its final form depends on context (eval/unicode.cc).
extern const LowerEntry kLower[];
extern const size_t kLowerSize;
// Case-ignorable code points, and cased ones that are not case-ignorable (the only cased
// ones that matter: the sigma rule skips case-ignorable characters before testing "cased").
extern const Range kCaseIgnorable[];
extern const size_t kCaseIgnorableSize;
extern const Range kCased[];
extern const size_t kCasedSize;

}  // namespace attn::eval::unicode_tables
