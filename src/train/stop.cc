#include "train/stop.h"

#include <atomic>
#include <csignal>

#include "train/trainer.h"

namespace attn::train {
namespace {

std::atomic<int> g_stop_signal{0};

extern "C" void on_stop_signal(int sig) {
  g_stop_signal.store(sig);
}

}  // namespace

StopControl::StopControl(double max_time_s, double elapsed_before_s)
    : max_time_s_(max_time_s), elapsed_before_(elapsed_before_s) {}

double StopControl::run_seconds() const {
  return std::chrono::duration<double>(Clock::now() - run_start_).count();
}

int StopControl::agree_after_step(dist::Communicator& comm) {
  int sig = g_stop_signal.exchange(0);
  double now = elapsed();
  bool up = max_time_s_ > 0 && now >= max_time_s_;
  if (comm.world_size() > 1) {
    const bool root = comm.rank() == 0;
    const auto r = comm.all_reduce_host({static_cast<double>(sig), sig ? 1.0 : 0.0,
                                         root && up ? 1.0 : 0.0, root ? now : 0.0});
    if (r[1] > 0 && sig == 0) sig = static_cast<int>(r[0] / r[1]);
    up = r[2] > 0;
    now = r[3];
  }
  time_up_ = up;
  agreed_elapsed_ = now;
  return sig;
}

void install_stop_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

void request_stop(int signal_number) {
  g_stop_signal.store(signal_number);
}

}  // namespace attn::train
