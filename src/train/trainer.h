// The training loop behind `attn train`: data, model, Adam with a schedule, teacher-forced
// label-smoothed cross-entropy, logging (stderr, train.log, metrics.jsonl), validation, and
// checkpoints that resume exactly (same batches, same dropout masks, same optimizer state).
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "train/config.h"

namespace attn::train {

struct TrainFlags {
  bool fresh = false;            // ignore (and move aside) existing checkpoints
  bool reset_optimizer = false;  // resume weights and data position, restart Adam and schedule
  // JSON lines, one per step this run trains: {"step": N, "lr": ..., "batches": [{"src",
  // "src_lengths", "tgt_in", "tgt_out"}, ...]} with the padded i32 tensors as nested lists,
  // exactly what the step consumed (rank 0's batches under data parallelism). "" = off.
  // For parity checks against another implementation (scripts/bench/parity.py).
  std::string dump_batches;
};

struct TrainResult {
  int64_t step = 0;                 // last completed step
  bool finished = false;            // reached train.max_steps / max_epochs
  int stop_signal = 0;              // SIGINT/SIGTERM that ended the run, 0 if none
  double last_valid_loss = 0.0;
  double last_valid_accuracy = 0.0;
  double last_valid_bleu = 0.0;
  std::string last_checkpoint;
  std::string averaged_checkpoint;  // when train.average_last > 0
};

// Runs (or resumes) training for `config`. Throws attn::Error on bad input.
TrainResult train(const Config& config, const TrainFlags& flags = {});

// Installs SIGINT/SIGTERM handlers that make a running train() save a checkpoint and return.
void install_stop_signal_handlers();
// For tests and embedding applications: ask a running train() to stop after this step.
void request_stop(int signal_number);

}  // namespace attn::train
