#include "data/corpus.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "base/error.h"
#include "data/utf8.h"

namespace attn::data {

void check_utf8_line(const std::string& line, const std::string& path, int64_t line_no) {
  if (auto bad = find_invalid_utf8(line)) {
    ATTN_FAIL("invalid UTF-8 in '", path, "' line ", line_no, ", byte ", bad->offset + 1, " (",
              bad->reason, ")");
  }
}

std::string read_file_bytes(const std::string& path, const std::string& role) {
  // "-" is standard input, read the same way (and checked the same way) as a file.
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(
      path == "-" ? stdin : std::fopen(path.c_str(), "rb"),
      path == "-" ? +[](std::FILE*) { return 0; } : &std::fclose);
  if (!f) ATTN_FAIL("cannot open ", role, " '", path, "': ", std::strerror(errno));
  std::string text;
  std::string chunk(1 << 20, '\0');
  while (true) {
    const size_t got = std::fread(chunk.data(), 1, chunk.size(), f.get());
    text.append(chunk.data(), got);
    if (got < chunk.size()) break;
  }
  if (std::ferror(f.get()))
    ATTN_FAIL("cannot read ", role, " '", path, "': ", std::strerror(errno));
  return text;
}

std::vector<std::string> split_lines(std::string_view text, const std::string& name) {
  std::vector<std::string> lines;
  size_t pos = 0;
  // Editors on Windows put a byte-order mark in front of UTF-8 files; it is not text.
  if (text.substr(0, 3) == "\xEF\xBB\xBF") pos = 3;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    const size_t end = nl == std::string_view::npos ? text.size() : nl;
    size_t stop = end;
    if (stop > pos && text[stop - 1] == '\r') --stop;
    lines.emplace_back(text.substr(pos, stop - pos));
    check_utf8_line(lines.back(), name, static_cast<int64_t>(lines.size()));
    pos = end + 1;
  }
  return lines;
}

std::vector<std::string> read_lines(const std::string& path, const std::string& role) {
  return split_lines(read_file_bytes(path, role), path == "-" ? "<stdin>" : path);
}

ParallelText read_parallel(const std::string& src_path, const std::string& tgt_path) {
  ParallelText text;
  text.src = read_lines(src_path, "source corpus");
  text.tgt = read_lines(tgt_path, "target corpus");
  if (text.src.size() != text.tgt.size()) {
    ATTN_FAIL("corpora differ in length: '", src_path, "' has ", text.src.size(), " lines, '",
              tgt_path, "' has ", text.tgt.size());
  }
  return text;
}

}  // namespace attn::data
