// The tensor of a collective that runs in place on a side stream (the NCCL backend's
// all_reduce_start), and the rule for letting go of it. Until the main stream (attn's stream
// of the device) is ordered after the collective, later work on the main stream may overwrite
// the buffer while it is being reduced, and a buffer freed on the host goes back to the
// stream-ordered caching allocator (core/cuda_backend.h) and is handed to the next tensor at
// once. So: order first, then release. wait() orders through order(); a collective that is
// abandoned (an exception between start and wait) is ordered by the destructor. If ordering
// fails (a CUDA error), the tensor is deliberately never released: a small leak in a process
// that is failing anyway (keep_until_exit), instead of memory that NCCL may still write.
//
// The stream operation comes in as a function, so the rule is tested without a GPU
// (tests/test_dist.cc). The events the function uses must outlive this object (the NCCL
// backend declares them before it).
#pragma once

#include <functional>

#include "core/tensor.h"

namespace attn::dist {

// Keeps `t`'s memory until the process exits: for a buffer a collective may still use (the
// device or MPI owns it) and that can therefore never be freed. Held in a registry that is
// never destroyed, so leak checkers see it as reachable, not lost. Thread-safe.
void keep_until_exit(Tensor t);

class InFlightBuffer {
 public:
  // `order_main` queues on the main stream a wait for the collective (cudaStreamWaitEvent;
  // it must not block the host).
  InFlightBuffer(Tensor tensor, std::function<void()> order_main);
  ~InFlightBuffer();
  InFlightBuffer(const InFlightBuffer&) = delete;
  InFlightBuffer& operator=(const InFlightBuffer&) = delete;

  // Orders the main stream after the collective (once; later calls do nothing). Errors
  // propagate.
  void order();
  bool ordered() const { return ordered_; }

 private:
  Tensor tensor_;
  std::function<void()> order_main_;
  bool ordered_ = false;
};

}  // namespace attn::dist
