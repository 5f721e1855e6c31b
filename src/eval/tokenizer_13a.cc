#include "eval/tokenizer_13a.h"

#include <utility>

#include "eval/unicode.h"

namespace attn::eval {
namespace {

// Python's str.replace: non-overlapping, left to right, replacements are not rescanned.
void replace_all(std::string& s, std::string_view from, std::string_view to) {
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out.append(to);
  }
  if (pos == 0) return;
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

inline bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
inline bool is_period_or_comma(char c) {
  return c == '.' || c == ',';
}

// The character class [\{-\~\[-\` -\&\(-\+\:-\@\/]: ASCII punctuation and space, except
// the apostrophe, '-', '.' and ',', which the later rules treat by context.
inline bool is_split_punct(char c) {
  return (c >= '{' && c <= '~') || (c >= '[' && c <= '`') || (c >= ' ' && c <= '&') ||
         (c >= '(' && c <= '+') || (c >= ':' && c <= '@') || c == '/';
}

}  // namespace

// The four regular expressions of sacreBLEU's TokenizerRegexp run one after the other, each
// as a left-to-right scan of non-overlapping matches (re.sub). They only ever look at ASCII
// bytes: a multi-byte UTF-8 character is a non-digit either way, and its bytes cannot be
// mistaken for ASCII, so scanning bytes gives the same result as Python scanning code points.
std::string tokenize_13a(std::string_view line) {
  std::string s(line);
  replace_all(s, "<skipped>", "");
  replace_all(s, "-\n", "");
  replace_all(s, "\n", " ");
  if (s.find('&') != std::string::npos) {
    replace_all(s, "&quot;", "\"");
    replace_all(s, "&amp;", "&");
    replace_all(s, "&lt;", "<");
    replace_all(s, "&gt;", ">");
  }

  // ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> ' \1 ', on ' ' + s + ' '.
  std::string a;
  a.reserve(3 * s.size() + 6);
  for (char c : " " + s + " ") {
    if (is_split_punct(c)) {
      a += ' ';
      a += c;
      a += ' ';
    } else {
      a += c;
    }
  }

  // ([^0-9])([\.,]) -> '\1 \2 '
  std::string b;
  b.reserve(a.size() * 2);
  for (size_t i = 0; i < a.size();) {
    if (i + 1 < a.size() && !is_digit(a[i]) && is_period_or_comma(a[i + 1])) {
      b += a[i];
      b += ' ';
      b += a[i + 1];
      b += ' ';
      i += 2;
    } else {
      b += a[i++];
    }
  }

  // ([\.,])([^0-9]) -> ' \1 \2'
  std::string c;
  c.reserve(b.size() * 2);
  for (size_t i = 0; i < b.size();) {
    if (i + 1 < b.size() && is_period_or_comma(b[i]) && !is_digit(b[i + 1])) {
      c += ' ';
      c += b[i];
      c += ' ';
      c += b[i + 1];
      i += 2;
    } else {
      c += b[i++];
    }
  }

  // ([0-9])(-) -> '\1 \2 '
  std::string d;
  d.reserve(c.size() * 2);
  for (size_t i = 0; i < c.size();) {
    if (i + 1 < c.size() && is_digit(c[i]) && c[i + 1] == '-') {
      d += c[i];
      d += " - ";
      i += 2;
    } else {
      d += c[i++];
    }
  }

  std::string out;
  out.reserve(d.size());
  for (std::string_view w : py_split(d)) {
    if (!out.empty()) out += ' ';
    out.append(w);
  }
  return out;
}

}  // namespace attn::eval
