// Checkpoint averaging (the paper averages the last 5 checkpoints of base models): the
// element-wise mean of every model parameter over several checkpoints of one architecture,
// accumulated in double, written as a checkpoint directory that `attn translate` accepts
// (model.safetensors, config.yaml, spm.model, trainer_state.json naming the sources).
#pragma once

#include <string>
#include <vector>

namespace attn::train {

// Averages `checkpoints` (directories or latest/best links) into `out_dir` (written under a
// temporary name, then renamed). Errors name the checkpoint that does not match the first.
void average_checkpoints(const std::vector<std::string>& checkpoints, const std::string& out_dir);

// The newest `n` step-* checkpoints in a checkpoints directory, oldest first.
std::vector<std::string> last_checkpoints(const std::string& checkpoints_dir, int64_t n);

}  // namespace attn::train
