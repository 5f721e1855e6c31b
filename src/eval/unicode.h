// The pieces of Python's str that sacreBLEU's BLEU and chrF rely on, on UTF-8 bytes:
// whitespace as str.split()/str.rstrip() see it (29 code points, among them NBSP, U+2003 and
// U+3000, not only ASCII blanks) and str.lower() (full Unicode mapping, 'İ' becoming two
// characters, final sigma). Matching Python here is what makes scores equal sacreBLEU's on
// arbitrary text; the tables come from unicode_tables.cc, generated from Python.
//
// All functions take valid UTF-8 (callers check with data::find_invalid_utf8).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace attn::eval {

// str.isspace() for one code point.
bool is_py_space(char32_t c);

// The code points of valid UTF-8 text.
std::u32string decode_utf8(std::string_view text);
void append_utf8(std::string& out, char32_t c);

// str.lower().
std::string py_lower(std::string_view text);

// str.rstrip() with no argument.
std::string_view py_rstrip(std::string_view text);

// str.split() with no argument: the runs of non-whitespace, as views into `text`.
std::vector<std::string_view> py_split(std::string_view text);

// ''.join(text.split()): `text` without any whitespace.
std::string remove_py_space(std::string_view text);

}  // namespace attn::eval
