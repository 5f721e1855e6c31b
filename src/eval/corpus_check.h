// Argument checks shared by corpus_bleu and corpus_chrf (internal to src/eval).
#pragma once

#include <string>
#include <vector>

namespace attn::eval::detail {

// Throws unless there is at least one reference stream, every stream has one line per
// hypothesis, and all text is valid UTF-8. `what` names the caller in messages.
void check_corpus(const char* what, const std::vector<std::string>& hyps,
                  const std::vector<std::vector<std::string>>& refs);

}  // namespace attn::eval::detail
