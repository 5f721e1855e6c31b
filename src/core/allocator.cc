#include "core/allocator.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "core/cuda_backend.h"
#include "core/error.h"

namespace attn {
namespace {

constexpr size_t kCpuAlignment = 64;

class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    const size_t rounded = (bytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
    void* p = std::aligned_alloc(kCpuAlignment, rounded);
    if (!p) {
      throw OutOfMemoryError(detail::str_cat("out of host memory: asked for ", bytes,
                                             " bytes with ", stats().current_bytes,
                                             " bytes in use (peak ", stats().peak_bytes, ")"));
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

#ifdef ATTN_WITH_CUDA
CudaAllocatorFactory g_cuda_factory = &cuda::make_simple_allocator;
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
}

void StatsTracker::on_deallocate(size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.current_bytes -= static_cast<int64_t>(bytes);
  stats_.reserved_bytes = stats_.current_bytes;
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
    static auto* cpu = new CpuAllocator();
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

}  // namespace attn
