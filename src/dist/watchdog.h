// Deadlines for waits on other ranks, shared by the MPI and NCCL backends: the timeout read
// from an environment variable (ATTN_MPI_TIMEOUT, ATTN_NCCL_TIMEOUT) and one polling loop.
// No MPI or CUDA in here, so the loop is tested on its own (tests/test_dist.cc).
#pragma once

#include <chrono>
#include <thread>

namespace attn::dist {

// Seconds from environment variable `name` (a number >= 0; 0 = no deadline), or `default_s`
// when it is unset or empty. Anything else throws attn::Error naming the variable.
double timeout_from_env(const char* name, double default_s);

// Calls `done()` until it returns true (returns true) or until `timeout_s` seconds have
// passed since the call (returns false; timeout_s <= 0 waits forever). `done` may throw (an
// error reported while waiting). Yields the CPU between the first polls and then sleeps
// 100 µs: the answer is usually quick, and a long wait must not burn a core.
template <class Done>
bool poll_until(Done&& done, double timeout_s) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  for (int spins = 0;; ++spins) {
    if (done()) return true;
    if (timeout_s > 0 && std::chrono::duration<double>(Clock::now() - start).count() > timeout_s) {
      return false;
    }
    if (spins < 1000) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
}

}  // namespace attn::dist
