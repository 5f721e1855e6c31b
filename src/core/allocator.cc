#include "core/allocator.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include "core/cuda_backend.h"
#include "base/error.h"

namespace attn {

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 5) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return buf;
}

namespace {

constexpr size_t kCpuAlignment = 64;

// aligned_alloc of `bytes` rounded up to the alignment; nullptr when the rounding overflows or
// the system has no memory.
void* cpu_aligned_alloc(size_t bytes) {
  const size_t rounded = (bytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
  return rounded >= bytes ? std::aligned_alloc(kCpuAlignment, rounded) : nullptr;
}

class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    void* p = cpu_aligned_alloc(bytes);
    if (!p) {
      throw OutOfMemoryError(detail::str_cat(
          "out of host memory: asked for ", format_bytes(static_cast<double>(bytes)), " with ",
          format_bytes(static_cast<double>(stats().current_bytes)), " in use"));
    }
    tracker_.on_allocate(bytes);
    return p;
  }
  void deallocate(void* ptr, size_t bytes) override {
    if (!ptr) return;
    std::free(ptr);
    tracker_.on_deallocate(bytes);
  }
  AllocatorStats stats() const override { return tracker_.snapshot(); }
  void reset_peak() override { tracker_.reset_peak(); }

 private:
  StatsTracker tracker_;
};

// Host memory under the caching allocator: training repeats its allocation pattern every
// step, and large buffers (logits over the vocabulary: ~100 MiB for 3,000 tokens x 8,000
// words) would otherwise be mmap'ed, page-faulted in and zeroed by the kernel on each use
// (15% of a CPU training step before this cache; docs/PERFORMANCE.md).
class CpuRawMemory final : public RawMemory {
 public:
  void* allocate(size_t bytes) override { return cpu_aligned_alloc(bytes); }
  void release(void* ptr, size_t) override { std::free(ptr); }
  std::string out_of_memory_message(size_t bytes, const AllocatorStats& s) const override {
    return detail::str_cat("out of host memory: asked for ", format_bytes(double(bytes)), " with ",
                           format_bytes(double(s.current_bytes)), " in use (peak ",
                           format_bytes(double(s.peak_bytes)), ")");
  }
};

// ATTN_CPU_ALLOCATOR=simple: aligned_alloc/free per tensor, no cache (to compare, or to
// see a tensor's memory go back to the system at once).
Allocator* make_cpu_allocator() {
  const char* env = std::getenv("ATTN_CPU_ALLOCATOR");
  const std::string kind = env ? env : "";
  if (kind.empty() || kind == "caching")
    return make_caching_allocator(std::make_unique<CpuRawMemory>()).release();
  if (kind == "simple") return new CpuAllocator();
  ATTN_FAIL("ATTN_CPU_ALLOCATOR=", kind,
            " is not an allocator: use caching (the default) or simple");
}

#ifdef ATTN_WITH_CUDA
CudaAllocatorFactory g_cuda_factory = &cuda::make_allocator;
#else
CudaAllocatorFactory g_cuda_factory = nullptr;
#endif

std::mutex g_cuda_mu;
std::map<int, std::unique_ptr<Allocator>>& cuda_allocators() {
  static auto* m = new std::map<int, std::unique_ptr<Allocator>>();  // outlives static tensors
  return *m;
}

}  // namespace

void StatsTracker::on_allocate(size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.current_bytes += static_cast<int64_t>(bytes);
  stats_.reserved_bytes = stats_.current_bytes;
  stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.current_bytes);
  stats_.num_allocs++;
  stats_.num_system_allocs++;
}

void StatsTracker::on_deallocate(size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.current_bytes -= static_cast<int64_t>(bytes);
  stats_.reserved_bytes = stats_.current_bytes;
  stats_.num_system_frees++;
}

AllocatorStats StatsTracker::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void StatsTracker::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_bytes = stats_.current_bytes;
}

Allocator& allocator_for(Device device) {
  if (device.is_cpu()) {
    static Allocator* cpu = make_cpu_allocator();  // never destroyed: outlives static tensors
    return *cpu;
  }
  std::lock_guard<std::mutex> lock(g_cuda_mu);
  auto& m = cuda_allocators();
  auto it = m.find(device.index);
  if (it != m.end()) return *it->second;
  ATTN_CHECK(g_cuda_factory != nullptr, "cannot allocate on ", device,
             ": attn was built without CUDA (configure with -DATTN_CUDA=ON)");
#ifdef ATTN_WITH_CUDA
  cuda::require_device(device.index);
#endif
  auto [pos, inserted] = m.emplace(device.index, g_cuda_factory(device.index));
  return *pos->second;
}

void set_cuda_allocator_factory(CudaAllocatorFactory factory) {
  std::lock_guard<std::mutex> lock(g_cuda_mu);
  ATTN_CHECK(cuda_allocators().empty(),
             "set_cuda_allocator_factory: must be called before the first CUDA allocation");
  g_cuda_factory = factory;
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
#ifdef ATTN_WITH_CUDA
  cuda::copy(dst, dst_device, src, src_device, bytes);
#else
  ATTN_FAIL("cannot copy between ", src_device, " and ", dst_device,
            ": attn was built without CUDA");
#endif
}

// ---- caching allocator ---------------------------------------------------------------

namespace caching {

size_t round_size(size_t bytes) {
  if (bytes < kMinBlockSize) return kMinBlockSize;
  return (bytes + kMinBlockSize - 1) / kMinBlockSize * kMinBlockSize;
}

size_t segment_size(size_t rounded) {
  if (rounded <= kSmallSize) return kSmallBuffer;
  if (rounded < kMinLargeAlloc) return kLargeBuffer;
  return (rounded + kRoundLarge - 1) / kRoundLarge * kRoundLarge;
}

}  // namespace caching

namespace {

class CachingAllocator final : public Allocator {
 public:
  explicit CachingAllocator(std::unique_ptr<RawMemory> raw) : raw_(std::move(raw)) {}

  // The per-device allocators live for the whole process (the system reclaims their memory
  // at exit); one destroyed earlier gives back its unused segments and leaves any segment a
  // live tensor still points into alone.
  ~CachingAllocator() override {
    release_cached();
    for (auto& [ptr, block] : live_) delete block;
    for (Block* b : small_) delete b;
    for (Block* b : large_) delete b;
  }

  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    std::lock_guard<std::mutex> lock(mu_);
    // Beyond this, rounding would overflow; no device has that much memory anyway.
    if (bytes > (SIZE_MAX >> 2)) throw OutOfMemoryError(raw_->out_of_memory_message(bytes, stats_));
    const size_t size = caching::round_size(bytes);
    const bool small = size <= caching::kSmallSize;
    Pool& pool = small ? small_ : large_;

    Block* block = take_best_fit(pool, size);
    if (!block) block = new_segment(bytes, size, small);

    if (should_split(*block, size)) {
      auto* rest = new Block{block->size - size, block->ptr + size, small};
      rest->prev = block;
      rest->next = block->next;
      if (rest->next) rest->next->prev = rest;
      block->next = rest;
      block->size = size;
      pool.insert(rest);
    }
    block->allocated = true;
    block->requested = bytes;
    live_.emplace(block->ptr, block);

    stats_.current_bytes += static_cast<int64_t>(bytes);
    stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.current_bytes);
    stats_.num_allocs++;
    return block->ptr;
  }

  void deallocate(void* ptr, size_t bytes) override {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(static_cast<char*>(ptr));
    if (it == live_.end()) {
      // A pointer this allocator never handed out: a bug elsewhere. Throwing would
      // terminate (destructor), so say it once and leave the memory alone.
      static std::atomic<bool> reported{false};
      if (!reported.exchange(true)) {
        std::fprintf(stderr, "attn: caching allocator asked to free unknown pointer %p (%zu bytes)\n",
                     ptr, bytes);
      }
      return;
    }
    Block* block = it->second;
    live_.erase(it);
    stats_.current_bytes -= static_cast<int64_t>(block->requested);
    block->allocated = false;
    block->requested = 0;

    Pool& pool = block->small ? small_ : large_;
    if (Block* prev = block->prev; prev && !prev->allocated) {
      pool.erase(prev);  // before its size (the pool's key) changes
      prev->size += block->size;
      prev->next = block->next;
      if (prev->next) prev->next->prev = prev;
      delete block;
      block = prev;
    }
    if (Block* next = block->next; next && !next->allocated) {
      pool.erase(next);
      block->size += next->size;
      block->next = next->next;
      if (block->next) block->next->prev = block;
      delete next;
    }
    pool.insert(block);
  }

  AllocatorStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  void reset_peak() override {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_bytes = stats_.current_bytes;
  }

  void empty_cache() override {
    std::lock_guard<std::mutex> lock(mu_);
    release_cached();
  }

 private:
  struct Block {
    size_t size;          // bytes of this block (a multiple of kMinBlockSize)
    char* ptr;
    bool small;           // pool
    bool allocated = false;
    size_t requested = 0;  // bytes the live tensor asked for (statistics)
    Block* prev = nullptr;  // neighbours within the same segment, by address
    Block* next = nullptr;
  };
  struct BySizeThenAddress {
    bool operator()(const Block* a, const Block* b) const {
      if (a->size != b->size) return a->size < b->size;
      return reinterpret_cast<uintptr_t>(a->ptr) < reinterpret_cast<uintptr_t>(b->ptr);
    }
  };
  using Pool = std::set<Block*, BySizeThenAddress>;

  Block* take_best_fit(Pool& pool, size_t size) {
    Block key{size, nullptr, false};
    auto it = pool.lower_bound(&key);
    if (it == pool.end()) return nullptr;
    Block* b = *it;
    pool.erase(it);
    return b;
  }

  static bool should_split(const Block& b, size_t size) {
    const size_t rest = b.size - size;
    return b.small ? rest >= caching::kMinBlockSize : rest > caching::kSmallSize;
  }

  Block* new_segment(size_t bytes, size_t size, bool small) {
    const size_t seg = caching::segment_size(size);
    void* p = raw_->allocate(seg);
    if (!p) {
      // Cached but unused segments may be what stands in the way: give them back, retry once.
      release_cached();
      p = raw_->allocate(seg);
    }
    if (!p) throw OutOfMemoryError(raw_->out_of_memory_message(bytes, stats_));
    stats_.reserved_bytes += static_cast<int64_t>(seg);
    stats_.num_system_allocs++;
    return new Block{seg, static_cast<char*>(p), small};
  }

  // Frees every segment that is one free block (no live tensor in it).
  void release_cached() {
    for (Pool* pool : {&small_, &large_}) {
      for (auto it = pool->begin(); it != pool->end();) {
        Block* b = *it;
        if (b->prev || b->next) {
          ++it;
          continue;
        }
        raw_->release(b->ptr, b->size);
        stats_.reserved_bytes -= static_cast<int64_t>(b->size);
        stats_.num_system_frees++;
        it = pool->erase(it);
        delete b;
      }
    }
  }

  const std::unique_ptr<RawMemory> raw_;
  mutable std::mutex mu_;
  Pool small_, large_;                        // free blocks
  std::unordered_map<char*, Block*> live_;  // allocated blocks by address
  AllocatorStats stats_;
};

}  // namespace

std::unique_ptr<Allocator> make_caching_allocator(std::unique_ptr<RawMemory> raw) {
  ATTN_CHECK(raw != nullptr, "make_caching_allocator: no raw memory");
  return std::make_unique<CachingAllocator>(std::move(raw));
}

}  // namespace attn
