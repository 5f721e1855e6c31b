// Memory for tensor storage. One interface; the CPU allocator (64-byte aligned, so SIMD
// loads never straddle) and the device-independent caching allocator live here, and the
// CUDA backend registers its own per device (the caching allocator over cudaMalloc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "core/device.h"

namespace attn {

// "1.23 GiB" (binary units), for memory statistics and out-of-memory messages.
std::string format_bytes(double bytes);

struct AllocatorStats {
  int64_t current_bytes = 0;      // asked for by live tensors
  int64_t peak_bytes = 0;         // maximum of current_bytes
  int64_t reserved_bytes = 0;     // obtained from the system (>= current for caching allocators)
  int64_t num_allocs = 0;         // calls to allocate()
  int64_t num_system_allocs = 0;  // calls to the system allocator (cudaMalloc, aligned_alloc)
  int64_t num_system_frees = 0;   // memory given back to the system (cudaFree, free)
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
  // Never throws (runs in Storage's destructor).
  virtual void deallocate(void* ptr, size_t bytes) = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void reset_peak() = 0;
  // Gives cached memory that no tensor uses back to the system (allocators without a cache:
  // nothing to do).
  virtual void empty_cache() {}
};

// The allocator for a device. CUDA devices get the allocator installed with
// set_cuda_allocator_factory, or the CUDA backend's default when built with CUDA.
Allocator& allocator_for(Device device);

using CudaAllocatorFactory = std::unique_ptr<Allocator> (*)(int device_index);
void set_cuda_allocator_factory(CudaAllocatorFactory factory);

// Copies bytes between any two devices (host<->device, device<->device, host<->host).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);

// ---- caching allocator ---------------------------------------------------------------
//
// PyTorch's design, without streams: memory comes from the system in segments and is cut
// into blocks; a freed block goes back to a free list (merged with free neighbours of its
// segment) and is reused by later requests, so a training loop that repeats its allocation
// pattern stops calling the system allocator after its first steps.
//  - Requests are rounded up to multiples of 512 bytes.
//  - Small pool (rounded request <= 1 MiB): blocks cut from 2 MiB segments.
//  - Large pool: 20 MiB segments for requests below 10 MiB, otherwise a segment of the
//    request rounded up to 2 MiB. A free block larger than the request is split when the
//    rest is worth keeping (>= 512 B in the small pool, > 1 MiB in the large pool).
//  - Best fit: the smallest free block that holds the request (ties: lowest address).
//  - When the system is out of memory, every cached segment without a live block is given
//    back and the request retried once; then OutOfMemoryError.
// The caller decides when reuse is safe; for the CUDA backend that is stream order (see
// cuda_backend.h). Thread-safe (one mutex).
namespace caching {
inline constexpr size_t kMinBlockSize = 512;         // every request is rounded to this
inline constexpr size_t kSmallSize = 1 << 20;        // largest request of the small pool
inline constexpr size_t kSmallBuffer = 2 << 20;      // small-pool segment
inline constexpr size_t kMinLargeAlloc = 10 << 20;   // below this, large requests share...
inline constexpr size_t kLargeBuffer = 20 << 20;     // ...20 MiB segments
inline constexpr size_t kRoundLarge = 2 << 20;       // larger segments round up to this

// The rounded size of a request, and the segment the system is asked for when no cached
// block fits it.
size_t round_size(size_t bytes);
size_t segment_size(size_t rounded);
}  // namespace caching

// The system memory beneath a caching allocator (cudaMalloc/cudaFree for a GPU).
class RawMemory {
 public:
  virtual ~RawMemory() = default;
  // nullptr when the system is out of memory; throws on any other failure.
  virtual void* allocate(size_t bytes) = 0;
  // Never throws; reports failures itself.
  virtual void release(void* ptr, size_t bytes) = 0;
  // The whole OutOfMemoryError message for a request of `bytes` (the amounts involved and
  // what to do about it), given the allocator's statistics at the time.
  virtual std::string out_of_memory_message(size_t bytes, const AllocatorStats& stats) const = 0;
};

std::unique_ptr<Allocator> make_caching_allocator(std::unique_ptr<RawMemory> raw);

}  // namespace attn
