// Shared by the libFuzzer targets in this folder. A target defines attn::fuzz::fuzz_one();
// driver.cc calls it for every input and treats attn::Error, the library's way of refusing
// bad input, as a normal return. Anything else is a finding: a crash, a sanitizer report, an
// exception of another type, or a failed require() (a property the reader promises, such as
// "what is accepted round-trips").
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace attn::fuzz {

void fuzz_one(std::string_view data);

// Aborts (a finding) with the message when `ok` is false.
template <class... Args>
void require(bool ok, const Args&... message) {
  if (ok) return;
  const std::string text = attn::detail::str_cat(message...);
  std::fprintf(stderr, "fuzz: property violated: %s\n", text.c_str());
  std::abort();
}

// A file holding the current input, for readers that take a path. One per process and
// name, reused across inputs, removed at exit.
class ScratchFile {
 public:
  explicit ScratchFile(const std::string& name);
  ~ScratchFile();
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;
  // Replaces the file's contents with `bytes`; returns its path.
  const std::string& write(std::string_view bytes);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// `data` cut at every `sep`: "a\0b" -> {"a", "b"}; an empty input is one empty piece.
std::vector<std::string> split(std::string_view data, char sep);

}  // namespace attn::fuzz
