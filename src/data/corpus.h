// Reading plain-text corpora: UTF-8, one sentence per line. Every line is validated, so a
// broken file fails at startup with the file, line and byte instead of training on garbage.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace attn::data {

struct ParallelText {
  std::vector<std::string> src, tgt;
};

// All lines of a UTF-8 text file, without their '\n' or "\r\n" terminators (a final line
// without '\n' counts; a leading byte-order mark is dropped). `role` names the file in
// errors: "cannot open source corpus 'x': No such file or directory",
// "invalid UTF-8 in 'x' line 17, byte 5 (overlong encoding)" (line and byte are 1-based).
// The whole file as bytes ("-" = standard input); errors name the role ("source corpus")
// and the path.
std::string read_file_bytes(const std::string& path, const std::string& role = "file");

std::vector<std::string> read_lines(const std::string& path, const std::string& role = "file");

// The lines of `text` by read_lines' rules; `name` stands for the file in errors.
std::vector<std::string> split_lines(std::string_view text, const std::string& name);

// Both sides of a parallel corpus; errors when either is unreadable, invalid UTF-8, or when
// the line counts differ ("corpora differ in length: 'a' has 10 lines, 'b' has 9").
ParallelText read_parallel(const std::string& src_path, const std::string& tgt_path);

// Throws the invalid-UTF-8 error above when `line` (line number `line_no`, 1-based, of
// `path`) is not valid UTF-8.
void check_utf8_line(const std::string& line, const std::string& path, int64_t line_no);

}  // namespace attn::data
