// When a training run stops besides its step and epoch limits: a SIGINT/SIGTERM (the CLI
// installs the handlers; the run saves a checkpoint and returns) and train.max_time, a
// wall-clock bound that counts the time of the runs before a resume. Under data parallelism
// the ranks agree after every step, in one host all-reduce, so that all stop at the same step.
#pragma once

#include <chrono>

#include "dist/communicator.h"

namespace attn::train {

class StopControl {
 public:
  // max_time_s: 0 = no bound. elapsed_before_s: training time of earlier runs (a resume).
  explicit StopControl(double max_time_s, double elapsed_before_s = 0);

  void set_elapsed_before(double seconds) { elapsed_before_ = seconds; }
  // Starts this run's clock (after set-up, so that loading is not training time).
  void start_clock() {
    run_start_ = Clock::now();
    agreed_elapsed_ = elapsed_before_;
  }

  // After a step: takes a pending stop signal (a handler's or request_stop's, trainer.h) and decides whether the time is up (rank 0's
  // clock decides), agreed by all ranks. Returns the signal (0 if none).
  int agree_after_step(dist::Communicator& comm);
  bool time_up() const { return time_up_; }
  // The whole run's training time at the last agree_after_step, rank 0's clock: the same on
  // every rank, so that what depends on it (train.cooldown's rate) does too.
  double agreed_elapsed() const { return agreed_elapsed_; }

  double run_seconds() const;     // this run's training time
  double elapsed() const { return elapsed_before_ + run_seconds(); }  // the whole run's
  double max_time() const { return max_time_s_; }

 private:
  using Clock = std::chrono::steady_clock;
  double max_time_s_;
  double elapsed_before_;
  Clock::time_point run_start_ = Clock::now();
  bool time_up_ = false;
  double agreed_elapsed_ = 0;
};

}  // namespace attn::train
