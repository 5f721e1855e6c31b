// Scope guard shared by the searches in src/decode: eval mode (no dropout) while decoding,
// the caller's training flag restored however decoding ends.
#pragma once

#include "nn/module.h"

namespace attn::decode {

class EvalModeGuard {
 public:
  explicit EvalModeGuard(nn::Module& m) : module_(m), was_training_(m.is_training()) { m.eval(); }
  ~EvalModeGuard() { module_.train(was_training_); }
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;

 private:
  nn::Module& module_;
  bool was_training_;
};

}  // namespace attn::decode
