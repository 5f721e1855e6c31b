// The checkpoints of a training run and where a run resumes from. --fresh moves existing
// checkpoints aside (never deletes them). A resume takes the newest step directory that loads,
// whatever `latest` says (a run killed between renaming a checkpoint into place and moving
// the link leaves a complete checkpoint newer than `latest`); damaged newer ones are moved
// aside, never overwritten; with no intact checkpoint at all the run refuses to start over by
// itself; a checkpoint of another architecture (config_key_info's role) is refused.
// Every rank makes the same choice; rank 0 alone renames and relinks.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <optional>

#include "dist/communicator.h"
#include "train/checkpoint.h"
#include "train/config.h"

namespace attn::train {

class RunCheckpoints {
 public:
  // <train.output_dir>/checkpoints; with `fresh`, existing checkpoints are moved to
  // checkpoints.old-<time> first.
  RunCheckpoints(const Config& config, bool fresh, dist::Communicator& comm, bool main,
                 spdlog::logger& log);

  // The checkpoint to resume from, or none for a fresh start (see above).
  std::optional<LoadedCheckpoint> find_resumable();

  CheckpointManager& manager() { return *manager_; }
  // The checkpoint `latest` points at, for messages ("the last good checkpoint is ...").
  std::string latest_or_none() const;

 private:
  const Config& config_;
  dist::Communicator& comm_;
  bool main_;
  spdlog::logger& log_;
  std::unique_ptr<CheckpointManager> manager_;
};

}  // namespace attn::train
