#include "eval/corpus_check.h"

#include "base/error.h"
#include "data/utf8.h"

namespace attn::eval::detail {
namespace {

void check_utf8(const char* what, const std::string& text, const std::string& name) {
  if (auto bad = data::find_invalid_utf8(text)) {
    ATTN_FAIL(what, ": ", name, " is not valid UTF-8 (byte ", bad->offset + 1, ": ", bad->reason,
              ")");
  }
}

}  // namespace

void check_corpus(const char* what, const std::vector<std::string>& hyps,
                  const std::vector<std::vector<std::string>>& refs) {
  ATTN_CHECK(!refs.empty(), what, ": no reference stream given");
  for (size_t k = 0; k < refs.size(); ++k) {
    ATTN_CHECK(refs[k].size() == hyps.size(), what, ": reference stream ", k + 1, " has ",
               refs[k].size(), " lines but the hypotheses have ", hyps.size());
  }
  for (size_t i = 0; i < hyps.size(); ++i) {
    check_utf8(what, hyps[i], "hypothesis " + std::to_string(i + 1));
    for (size_t k = 0; k < refs.size(); ++k) {
      check_utf8(what, refs[k][i],
                 "line " + std::to_string(i + 1) + " of reference stream " + std::to_string(k + 1));
    }
  }
}

}  // namespace attn::eval::detail
