// Memory for tensor storage. One interface; the CPU allocator (64-byte aligned, so SIMD
// loads never straddle) lives here and the CUDA backend registers its own per device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

#include "core/device.h"

namespace attn {

struct AllocatorStats {
  int64_t current_bytes = 0;   // held by live tensors
  int64_t peak_bytes = 0;      // maximum of current_bytes
  int64_t reserved_bytes = 0;  // obtained from the system (>= current for caching allocators)
  int64_t num_allocs = 0;      // calls to allocate()
};

// Thread-safe bookkeeping for allocators that hand out exactly what they obtain.
class StatsTracker {
 public:
  void on_allocate(size_t bytes);
  void on_deallocate(size_t bytes);
  AllocatorStats snapshot() const;
  void reset_peak();

 private:
  mutable std::mutex mu_;
  AllocatorStats stats_;
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  // Returns memory for `bytes` (nullptr for 0). Throws OutOfMemoryError when it cannot.
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr, size_t bytes) = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void reset_peak() = 0;
};

// The allocator for a device. CUDA devices get the allocator installed with
// set_cuda_allocator_factory, or the CUDA backend's default when built with CUDA.
Allocator& allocator_for(Device device);

using CudaAllocatorFactory = std::unique_ptr<Allocator> (*)(int device_index);
void set_cuda_allocator_factory(CudaAllocatorFactory factory);

// Copies bytes between any two devices (host<->device, device<->device, host<->host).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);

}  // namespace attn
