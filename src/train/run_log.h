// Logging and metrics of a training run: the console (stderr) and <run>/train.log, the
// append-only <run>/metrics.jsonl that `attn plot` reads, the live one-line progress display
// between log lines, and the training statistics of the steps since the last log line.
// Rank 0 writes the files; the other ranks show only their warnings and errors.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "train/step.h"

namespace attn::train {

// Appends one JSON record as a line and flushes it, so that `attn plot` and a crash see every
// record; a failed write (full disk) is an error naming `path`, not a hole in the record.
void append_json_line(std::ofstream& file, const nlohmann::json& record, const std::string& path);

// "1:02:03"; "?" for a negative or non-finite number of seconds.
std::string format_duration(double seconds);

// The training statistics of the steps since the last log line.
struct TrainWindow {
  double loss = 0, nll = 0, tokens = 0, correct = 0, gnorm = 0;  // sums
  int64_t steps = 0;    // applied updates (gnorm is averaged over these)
  int64_t skipped = 0;  // fp16 overflows
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();

  void add(const StepResult& r);
  double seconds() const;
};

// What a training log line says besides the window's statistics.
struct TrainLine {
  int64_t step = 0, max_steps = 0;
  double lr = 0;
  int64_t epoch = 0;        // 0-based (printed 1-based)
  double elapsed_s = 0;     // of the whole run, resumes included
  double eta_s = 0;
};

class RunLog {
 public:
  // Creates `output_dir` when missing. `main`: this process writes train.log and metrics.jsonl.
  RunLog(const std::string& output_dir, bool main, int rank);

  spdlog::logger& log() { return *log_; }
  spdlog::logger* operator->() { return log_.get(); }

  // A record of metrics.jsonl (rank 0 only; a no-op elsewhere).
  void record(const nlohmann::json& record);
  // The log line and the "train" record of a window (its sums already over all ranks).
  void train_line(const TrainWindow& window, const TrainLine& line);

  // The live one-line display (only when stderr is a terminal), erased before anything is
  // logged.
  void progress(int64_t step, int64_t max_steps, double loss);
  void clear_progress();

 private:
  std::string metrics_path_;
  bool main_;
  bool tty_;
  std::shared_ptr<spdlog::logger> log_;
  std::ofstream metrics_;
};

}  // namespace attn::train
