// Gradient all-reduce overlapped with backward (what PyTorch's DDP does): the parameters are
// split into buckets of about bucket_bytes in reverse order (backward produces the last
// layers' gradients first); a bucket starts reducing (Communicator::all_reduce_start: MPI's
// non-blocking all-reduce, or NCCL on its own CUDA stream) as soon as the autograd engine
// reports every gradient in it complete, while backward computes the earlier layers.
//
// Buckets start strictly in index order, so every rank issues the same collectives in the
// same order even if its gradients became ready in another order. A parameter that received
// no gradient by finish() takes part with zeros and then holds the reduced result as its
// gradient (every rank steps the same). With gradient accumulation, only the last
// micro-batch's backward runs under begin()/finish(): earlier ones just accumulate locally.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "autograd/engine.h"
#include "dist/communicator.h"

namespace attn::dist {

class GradReducer {
 public:
  // `params` in the same order on every rank, each listed once, all on one device.
  GradReducer(Communicator& comm, std::vector<Tensor> params, int64_t bucket_bytes = 25 << 20,
              ReduceOp op = ReduceOp::kAverage);
  ~GradReducer();

  // Starts watching gradients (on this thread) for the next backward.
  void begin();
  // Starts the buckets not started yet, waits for all of them and writes the reduced values
  // into every parameter's .grad. Ends the watch.
  void finish();

  int64_t bucket_count() const { return static_cast<int64_t>(buckets_.size()); }
  // Buckets started while backward was still running, in the last begin()/finish() window.
  int64_t started_during_backward() const { return early_; }

 private:
  struct Bucket {
    std::vector<size_t> members;  // indices into params_
    std::vector<int64_t> offsets;
    int64_t numel = 0;
    size_t ready = 0;
    Tensor flat;  // allocated once, reused every step
    std::unique_ptr<PendingCollective> pending;
  };
  void on_ready(const TensorImpl* leaf);
  void start(Bucket& b);
  void start_ready_in_order();

  Communicator& comm_;
  std::vector<Tensor> params_;
  ReduceOp op_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;                     // param index -> bucket
  std::unordered_map<const TensorImpl*, size_t> index_;  // leaf -> param index
  std::vector<char> seen_;                             // param reported ready this window
  size_t next_ = 0;                                    // first bucket not started
  int64_t early_ = 0;
  std::optional<autograd::GradReadyHookGuard> hook_;
};

}  // namespace attn::dist
