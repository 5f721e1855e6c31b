// Wall time per named scope, for `attn bench train --profile`: where a CPU training step's time
// goes, op by op. Off unless enable(true); a disabled Scope costs one branch.
//
// The ops' device dispatch (ops/dispatch.h) opens a scope per kernel call named after the op
// ("linear", "attention_backward", ...), so the table covers every kernel; the time outside
// them is the autograd engine, allocation and glue. CPU only: a CUDA kernel returns before it
// has run, so its scope would time the launch.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace attn::profile {

struct Entry {
  std::string name;
  int64_t calls = 0;
  double seconds = 0;
};

void enable(bool on);
bool enabled();
void reset();
void add(const char* name, double seconds);
// Every scope seen since reset(), largest total time first.
std::vector<Entry> entries();

class Scope {
 public:
  explicit Scope(const char* name) : name_(enabled() ? name : nullptr) {
    if (name_) t0_ = std::chrono::steady_clock::now();
  }
  ~Scope() {
    if (name_)
      add(name_, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count());
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  const char* name_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace attn::profile
