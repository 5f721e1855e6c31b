// CUDA backend: device discovery, one non-blocking stream per device, a plain
// cudaMalloc/cudaFree allocator with statistics, and copies between host and devices.
//
// Ordering convention: all of attn's work on device i goes to stream(i). Copies enqueue on
// that stream and then wait for it, so a copy sees every kernel launched before it and the
// host sees the copied bytes when copy() returns. stream(i) also makes i the calling
// thread's current device, so a kernel launched on the returned stream runs on device i.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>

#include "core/cuda_backend.h"
#include "core/cuda_check.h"
#include "core/error.h"

namespace attn::cuda {
namespace {

constexpr int kMaxDevices = 64;

std::once_flag g_stream_once[kMaxDevices];
cudaStream_t g_streams[kMaxDevices] = {};

// Makes `index` current for the guard's lifetime. The non-throwing form is for destructors,
// which may run during process teardown; restoring never throws.
class DeviceGuard {
 public:
  explicit DeviceGuard(int index, bool may_throw = true) {
    cudaError_t err = cudaGetDevice(&prev_);
    if (err == cudaSuccess && prev_ != index) {
      err = cudaSetDevice(index);
      changed_ = err == cudaSuccess;
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      if (may_throw)
        detail::throw_cuda_error(err, "cudaGetDevice/cudaSetDevice", __FILE__, __LINE__);
    }
  }
  ~DeviceGuard() {
    if (changed_ && cudaSetDevice(prev_) != cudaSuccess) cudaGetLastError();
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
  bool changed_ = false;
};

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

class SimpleCudaAllocator final : public Allocator {
 public:
  explicit SimpleCudaAllocator(int index) : index_(index) {}

  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    DeviceGuard guard(index_);
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      throw OutOfMemoryError(oom_message(bytes));
    }
    CUDA_CHECK(err);
    tracker_.on_allocate(bytes);
    return p;
  }

  // Runs inside Storage's destructor, where a throw would std::terminate: a failure is
  // reported on stderr (once) instead. cudaFree waits for pending work, so no stream sync.
  void deallocate(void* ptr, size_t bytes) override {
    if (!ptr) return;
    {
      DeviceGuard guard(index_, /*may_throw=*/false);
      const cudaError_t err = cudaFree(ptr);
      // During process teardown the runtime may already be gone; the memory goes with it.
      if (err != cudaSuccess && err != cudaErrorCudartUnloading) {
        cudaGetLastError();
        static std::atomic<bool> reported{false};
        if (!reported.exchange(true)) {
          std::fprintf(stderr, "attn: cudaFree on cuda:%d failed: %s: %s\n", index_,
                       cudaGetErrorName(err), cudaGetErrorString(err));
        }
      }
    }
    tracker_.on_deallocate(bytes);
  }

  AllocatorStats stats() const override { return tracker_.snapshot(); }
  void reset_peak() override { tracker_.reset_peak(); }

 private:
  std::string oom_message(size_t bytes) const {
    size_t free_b = 0, total_b = 0;
    std::string device_mem;
    const cudaError_t info = cudaMemGetInfo(&free_b, &total_b);
    if (info == cudaSuccess) {
      device_mem =
          detail::str_cat(format_bytes(free_b), " free of ", format_bytes(total_b), " total");
    } else {
      cudaGetLastError();
      device_mem = detail::str_cat("free/total unknown (", cudaGetErrorString(info), ")");
    }
    const AllocatorStats s = stats();
    return detail::str_cat("CUDA out of memory on cuda:", index_, ": tried to allocate ",
                           format_bytes(static_cast<double>(bytes)), " (", bytes,
                           " bytes); device has ", device_mem, "; attn holds ",
                           format_bytes(s.current_bytes), " (peak ", format_bytes(s.peak_bytes),
                           "); try a smaller data.max_tokens");
  }

  const int index_;
  StatsTracker tracker_;
};

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

void require_device(int index) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    ATTN_FAIL("no CUDA device available (cudaGetDeviceCount: ", cudaGetErrorString(err),
              "); use device cpu");
  }
  ATTN_CHECK(n > 0, "no CUDA device available (cudaGetDeviceCount: 0 devices); use device cpu");
  ATTN_CHECK(index >= 0 && index < n, "CUDA device cuda:", index, " requested but ", n,
             " device(s) available (cuda:0 to cuda:", n - 1, ")");
  ATTN_CHECK(index < kMaxDevices, "CUDA device cuda:", index, ": attn supports at most ",
             kMaxDevices, " devices per process");
}

cudaStream_t stream(int index) {
  ATTN_CHECK(index >= 0 && index < kMaxDevices, "CUDA device cuda:", index, " out of range");
  std::call_once(g_stream_once[index], [index] {
    require_device(index);
    CUDA_CHECK(cudaSetDevice(index));
    CUDA_CHECK(cudaStreamCreateWithFlags(&g_streams[index], cudaStreamNonBlocking));
  });
  int current = -1;
  CUDA_CHECK(cudaGetDevice(&current));
  if (current != index) CUDA_CHECK(cudaSetDevice(index));
  return g_streams[index];
}

void synchronize(int index) {
  CUDA_CHECK(cudaStreamSynchronize(stream(index)));
}

std::unique_ptr<Allocator> make_simple_allocator(int index) {
  require_device(index);
  return std::make_unique<SimpleCudaAllocator>(index);
}

void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
  if (src_device.is_cpu()) {
    cudaStream_t s = stream(dst_device.index);
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    return;
  }
  if (dst_device.is_cpu()) {
    cudaStream_t s = stream(src_device.index);
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    return;
  }
  if (dst_device.index == src_device.index) {
    cudaStream_t s = stream(dst_device.index);
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    return;
  }
  // The destination's stream does not see work queued on the source's: drain that first.
  synchronize(src_device.index);
  cudaStream_t s = stream(dst_device.index);
  CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device.index, src, src_device.index, bytes, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace attn::cuda
