// Checkpoint directories: <run>/checkpoints/step-<N>/ holding model.safetensors,
// optimizer.safetensors, trainer_state.json, config.yaml and spm.model (when there is one).
//
// Writing never leaves the run without a loadable checkpoint: files go to step-<N>.tmp/,
// each is fsynced, the directory is renamed into place and the parent fsynced, and only then
// are the `latest` (and `best`) symlinks replaced, atomically (symlink to a temporary name,
// rename over). A crash at any point leaves the previous `latest` intact; stale *.tmp
// directories are removed on the next write. Pruning keeps the newest keep_last checkpoints
// plus whatever `latest` and `best` point at.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace attn::train {

struct CheckpointData {
  std::vector<std::pair<std::string, Tensor>> model;      // named parameters
  std::vector<std::pair<std::string, Tensor>> optimizer;  // named optimizer state
  nlohmann::json trainer_state;                            // step, data position, RNG, ...
  std::string config_yaml;                                 // the resolved config
  std::string spm_model;                                   // serialized vocabulary ("" if none)
};

struct LoadedCheckpoint {
  std::string path;
  std::map<std::string, Tensor> model;
  std::map<std::string, Tensor> optimizer;
  nlohmann::json trainer_state;
  std::string config_yaml;
  std::string spm_model;
};

class CheckpointManager {
 public:
  // dir: the checkpoints directory (created when missing).
  CheckpointManager(std::string dir, int64_t keep_last);

  // Writes step-<step>, moves `latest` to it (and `best` when is_best), prunes.
  std::string save(int64_t step, const CheckpointData& data, bool is_best);
  // The checkpoint `latest` points at, if any.
  std::optional<std::string> latest() const;
  std::optional<std::string> best() const;
  const std::string& dir() const { return dir_; }

 private:
  void prune();
  std::string dir_;
  int64_t keep_last_;
};

// Loads and verifies a checkpoint directory (or a `latest`/`best` link). Missing files,
// truncated or corrupt safetensors (checksum) and malformed state are errors naming the file.
LoadedCheckpoint load_checkpoint(const std::string& path);

// Writes `content` to `path` and fsyncs it; errors name the path.
void write_file_synced(const std::string& path, const std::string& content);

// Writes `content` to `path` so that no reader ever sees a half-written file: a regular file
// (or a new name) is written to "<path>.tmp.<pid>", synced and renamed over `path`; anything
// else that exists under that name (a device such as /dev/stdout or /dev/full, a pipe) is
// written in place. Every write error (disk full, no such directory) throws naming `path`.
void write_file_atomic(const std::string& path, const std::string& content);

}  // namespace attn::train
