// Input layout shared by fuzz_bleu and fuzz_chrf: the first byte's low bit asks for
// lowercasing and its next two bits give the number of reference streams (1..4); the rest
// is lines, cut at '\n': hypotheses first, then each reference stream, as many lines each
// as fit evenly (at least one segment).
#pragma once

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz.h"

namespace attn::fuzz {

struct EvalInput {
  bool lowercase = false;
  std::vector<std::string> hyps;
  std::vector<std::vector<std::string>> refs;
  std::vector<std::string> lines;  // all of them, for the tokenizer
};

inline EvalInput eval_input(std::string_view data) {
  EvalInput in;
  if (data.empty()) return in;
  const auto flags = static_cast<unsigned char>(data[0]);
  in.lowercase = flags & 1;
  const size_t streams = 1 + ((flags >> 1) & 3);
  in.lines = split(data.substr(1), '\n');
  const size_t segments = std::max<size_t>(1, in.lines.size() / (1 + streams));
  in.lines.resize(std::max(in.lines.size(), segments * (1 + streams)));
  in.hyps.assign(in.lines.begin(), in.lines.begin() + segments);
  for (size_t k = 0; k < streams; ++k) {
    const auto first = in.lines.begin() + segments * (1 + k);
    in.refs.emplace_back(first, first + segments);
  }
  return in;
}

}  // namespace attn::fuzz
