// Checkpoint directories: <run>/checkpoints/step-<N>/ holding model.safetensors,
// optimizer.safetensors, trainer_state.json, config.yaml and spm.model (when there is one).
//
// Writing never leaves the run without a loadable checkpoint: files go to step-<N>.tmp/,
// each is fsynced, the directory is renamed into place and the parent fsynced, and only then
// are the `latest` (and `best`) symlinks replaced, atomically (symlink to a temporary name,
// rename over). A crash at any point leaves the previous `latest` intact; stale *.tmp
// directories are removed on the next write. Pruning keeps the newest keep_last checkpoints
// plus whatever `latest` and `best` point at. A directory this manager did not write is never
// replaced: saving over one is an error.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "train/trainer_state.h"

namespace attn::train {

struct CheckpointData {
  std::vector<std::pair<std::string, Tensor>> model;      // named parameters
  std::vector<std::pair<std::string, Tensor>> optimizer;  // named optimizer state
  TrainerState state;                                      // step, data position, ...
  std::string config_yaml;                                 // the resolved config
  std::string spm_model;                                   // serialized vocabulary ("" if none)
};

struct LoadedCheckpoint {
  std::string path;
  std::map<std::string, Tensor> model;
  std::map<std::string, Tensor> optimizer;
  TrainerState state;
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
  // Points `latest` at `checkpoint` (a step directory in dir()): repairs a missing or dangling
  // link after a resume from the newest intact checkpoint.
  void set_latest(const std::string& checkpoint);
  // Renames a damaged step directory to `<name>.damaged[-N]` so that it is neither resumed
  // from nor overwritten nor pruned; returns the new path.
  std::string set_aside(const std::string& checkpoint);

 private:
  void prune();
  std::string dir_;
  int64_t keep_last_;
  std::vector<int64_t> written_;  // steps saved by this manager (may be re-saved)
};

// The step-<N> directories of a checkpoints directory (no links, no .tmp/.damaged
// leftovers), oldest first.
std::vector<std::string> step_checkpoints(const std::string& checkpoints_dir);

// Writes the files of a checkpoint into the existing, empty directory `dir` and fsyncs each
// file and the directory. Callers write into a temporary directory and rename it.
void write_checkpoint_files(const std::string& dir, const CheckpointData& data);

// Loads and verifies a checkpoint directory (or a `latest`/`best` link). Missing files,
// truncated or corrupt safetensors (checksum) and malformed state are errors naming the file.
LoadedCheckpoint load_checkpoint(const std::string& path);

}  // namespace attn::train
