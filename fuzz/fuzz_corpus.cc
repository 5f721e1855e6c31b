// The corpus reader (data::split_lines, the part of read_lines after the file is read): line
// splitting, "\r\n", the byte-order mark, strict UTF-8. Properties: accepted text is valid
// UTF-8 by an independent decoder (below, written from the code point values rather than
// table 3-7's byte ranges), lines hold no '\n', and rejected text is invalid by that decoder
// too; find_invalid_utf8 agrees with it on the whole input.
#include <cstdint>
#include <cstring>

#include "data/corpus.h"
#include "data/utf8.h"
#include "fuzz.h"

namespace attn::fuzz {
namespace {

// Decodes each sequence to its code point and then checks the value: shortest form,
// not a surrogate, at most U+10FFFF.
bool oracle_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto lead = static_cast<unsigned char>(s[i]);
    int len = 0;
    uint32_t cp = 0;
    if (lead < 0x80) {
      len = 1, cp = lead;
    } else if ((lead >> 5) == 0x6) {
      len = 2, cp = lead & 0x1F;
    } else if ((lead >> 4) == 0xE) {
      len = 3, cp = lead & 0x0F;
    } else if ((lead >> 3) == 0x1E) {
      len = 4, cp = lead & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (int k = 1; k < len; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c >> 6) != 0x2) return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    const uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[len] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return false;
    i += len;
  }
  return true;
}

}  // namespace

void fuzz_one(std::string_view data) {
  const bool valid = oracle_valid_utf8(data);
  const auto bad = data::find_invalid_utf8(data);
  require(valid == !bad.has_value(), "find_invalid_utf8 says ", bad ? "invalid" : "valid",
          ", the reference decoder says ", valid ? "valid" : "invalid");
  if (bad) {
    require(bad->offset < data.size(), "error offset ", bad->offset, " beyond ", data.size());
    require(oracle_valid_utf8(data.substr(0, bad->offset)),
            "the text before the reported error at byte ", bad->offset, " is invalid");
  }

  std::vector<std::string> lines;
  try {
    lines = data::split_lines(data, "corpus");
  } catch (const Error& e) {
    require(!valid, "valid UTF-8 refused: ", e.what());
    require(std::strstr(e.what(), "invalid UTF-8 in '") != nullptr, "unexpected error: ", e.what());
    return;
  }
  require(valid, "invalid UTF-8 accepted");
  size_t bytes = 0;
  for (const std::string& line : lines) {
    require(line.find('\n') == std::string::npos, "a line holds a newline");
    require(data::is_valid_utf8(line), "a line is invalid UTF-8");
    bytes += line.size() + 1;
  }
  require(bytes <= data.size() + 1, "lines hold more bytes than the file");
}

}  // namespace attn::fuzz
