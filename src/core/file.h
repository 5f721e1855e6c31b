// Writing results so that they are either complete or reported as failed: the small outputs
// of attn (checkpoint state and config, vocabularies, translations, JSON reports, pictures)
// go through write_file, directories of files through replace_directory, and main() ends
// with check_standard_output(), so a full disk or a closed pipe is an error naming what was
// lost, never a silent truncation. (Large or streamed outputs check their own writes: the
// safetensors writer, the dataset cache, metrics.jsonl and train.log.)
#pragma once

#include <filesystem>
#include <functional>
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

// Puts the finished directory `tmp` at `dest` by renames. An existing `dest` is first renamed
// to `old` and `after_aside` (if any) is called, then `tmp` becomes `dest`; returns `old`
// when it was used (empty otherwise), for the caller to delete once nothing refers to it.
// If the last rename fails, `old` goes back to `dest` and `tmp` is removed; errors say
// `what` and the paths, with the system's reason.
std::filesystem::path replace_directory(const std::filesystem::path& tmp,
                                        const std::filesystem::path& dest,
                                        const std::filesystem::path& old, std::string_view what,
                                        const std::function<void()>& after_aside = {});

// fsyncs a file or directory; errors name the path.
void sync_path(const std::string& path, bool directory);

// Flushes std::cout and stdout and throws if anything written to standard output was lost
// (`attn bleu ... > /dev/full`). Called once, at the end of main.
void check_standard_output();

}  // namespace attn
