// Writing results so that they are either complete or reported as failed: every output of
// attn (checkpoint files, vocabularies, translations, JSON reports, pictures) goes through
// write_file, and main() ends with check_standard_output(), so a full disk or a closed pipe
// is an error naming what was lost, never a silent truncation.
#pragma once

#include <string>
#include <string_view>

namespace attn {

struct WriteFileOptions {
  // Write `<path>.tmp.<pid>` and rename it over `path`: readers see the old file or the whole
  // new one, never a prefix. An existing path that is not a regular file (a device, a pipe)
  // is written in place.
  bool atomic = true;
  // fsync the file (and, when atomic, its directory after the rename) before returning.
  bool sync = false;
};

// Writes `bytes` to `path` (created or replaced). `what` names the file in errors ("the
// translations", "checkpoint state"); errors carry the path and the system's reason.
void write_file(const std::string& path, std::string_view bytes, std::string_view what,
                WriteFileOptions options = {});

// fsyncs a file or directory; errors name the path.
void sync_path(const std::string& path, bool directory);

// Flushes std::cout and stdout and throws if anything written to standard output was lost
// (`attn bleu ... > /dev/full`). Called once, at the end of main.
void check_standard_output();

}  // namespace attn
