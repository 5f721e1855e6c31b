// CUDA backend: device discovery, one non-blocking stream per device, the per-device
// context (cuBLASLt handle and workspace), the allocators (caching by default, plain
// cudaMalloc/cudaFree on request) and copies between host and devices.
//
// Ordering convention: all of attn's work on device i goes to stream(i). Copies enqueue on
// that stream and then wait for it, so a copy sees every kernel launched before it and the
// host sees the copied bytes when copy() returns. stream(i) also makes i the calling
// thread's current device, so a kernel launched on the returned stream runs on device i.
// The caching allocator relies on the same order (see cuda_backend.h).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "core/cuda_backend.h"
#include "base/cuda_check.h"
#include "base/error.h"

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

// The OutOfMemoryError text: what was asked, what the device has, what attn holds, and
// the usual remedy.
std::string oom_message(int index, size_t bytes, const AllocatorStats& s) {
  DeviceGuard guard(index, /*may_throw=*/false);  // cudaMemGetInfo reports the current device
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
  return detail::str_cat("CUDA out of memory on cuda:", index, ": tried to allocate ",
                         format_bytes(static_cast<double>(bytes)), " (", bytes,
                         " bytes); device has ", device_mem, "; attn holds ",
                         format_bytes(s.current_bytes), " (peak ", format_bytes(s.peak_bytes),
                         ", reserved ", format_bytes(s.reserved_bytes),
                         "); try a smaller data.max_tokens");
}

// cudaFree that never throws (it runs while tensors are destroyed, possibly at teardown).
// cudaFree waits for pending work on the device, so no stream sync is needed.
void free_device_memory(int index, void* ptr) {
  DeviceGuard guard(index, /*may_throw=*/false);
  const cudaError_t err = cudaFree(ptr);
  if (err == cudaSuccess) return;
  cudaGetLastError();  // ignored below: clear it so a later launch check does not report it
  // During process teardown the runtime may already be gone; the memory goes with it.
  if (err != cudaErrorCudartUnloading) {
    static std::atomic<bool> reported{false};
    if (!reported.exchange(true)) {
      std::fprintf(stderr, "attn: cudaFree on cuda:%d failed: %s: %s\n", index,
                   cudaGetErrorName(err), cudaGetErrorString(err));
    }
  }
}

// cudaMalloc on device `index`; nullptr when the device is out of memory.
void* malloc_device_memory(int index, size_t bytes) {
  DeviceGuard guard(index);
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // not sticky, but the next launch check would still report it
    return nullptr;
  }
  CUDA_CHECK(err);
  return p;
}

class SimpleCudaAllocator final : public Allocator {
 public:
  explicit SimpleCudaAllocator(int index) : index_(index) {}

  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    void* p = malloc_device_memory(index_, bytes);
    if (!p) throw OutOfMemoryError(oom_message(index_, bytes, stats()));
    tracker_.on_allocate(bytes);
    return p;
  }

  void deallocate(void* ptr, size_t bytes) override {
    if (!ptr) return;
    free_device_memory(index_, ptr);
    tracker_.on_deallocate(bytes);
  }

  AllocatorStats stats() const override { return tracker_.snapshot(); }
  void reset_peak() override { tracker_.reset_peak(); }

 private:
  const int index_;
  StatsTracker tracker_;
};

// The system memory under the caching allocator.
class CudaRawMemory final : public RawMemory {
 public:
  explicit CudaRawMemory(int index) : index_(index) {}
  void* allocate(size_t bytes) override { return malloc_device_memory(index_, bytes); }
  void release(void* ptr, size_t) override { free_device_memory(index_, ptr); }
  std::string out_of_memory_message(size_t bytes, const AllocatorStats& s) const override {
    return oom_message(index_, bytes, s);
  }

 private:
  const int index_;
};

std::atomic<bool> g_allow_tf32{false};

std::once_flag g_context_once[kMaxDevices];
DeviceContext g_contexts[kMaxDevices];

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

void wait_for_stream(int index, cudaStream_t other) {
  cudaStream_t s = stream(index);
  if (other == s) return;
  cudaEvent_t ev = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  cudaError_t err = cudaEventRecord(ev, other);
  if (err == cudaSuccess) err = cudaStreamWaitEvent(s, ev, 0);
  const cudaError_t destroyed = cudaEventDestroy(ev);  // released once the wait is done
  CUDA_CHECK(err);
  CUDA_CHECK(destroyed);
}

const DeviceContext& context(int index) {
  cudaStream_t s = stream(index);  // checks the index; makes the device current
  std::call_once(g_context_once[index], [index, s] {
    cublasLtHandle_t handle = nullptr;
    CUBLAS_CHECK(cublasLtCreate(&handle));
    void* workspace = nullptr;
    const cudaError_t err = cudaMalloc(&workspace, kBlasWorkspaceBytes);
    if (err != cudaSuccess) {
      cudaGetLastError();
      (void)cublasLtDestroy(handle);  // cleanup before reporting err; its status is moot
      if (err == cudaErrorMemoryAllocation) {
        AllocatorStats none;
        throw OutOfMemoryError(oom_message(index, kBlasWorkspaceBytes, none));
      }
      detail::throw_cuda_error(err, "cudaMalloc (cuBLASLt workspace)", __FILE__, __LINE__);
    }
    DeviceContext& c = g_contexts[index];
    c.index = index;
    c.stream = s;
    c.blaslt = handle;
    c.workspace = workspace;
    c.workspace_bytes = kBlasWorkspaceBytes;
  });
  return g_contexts[index];
}

void set_allow_tf32(bool allow) { g_allow_tf32.store(allow, std::memory_order_relaxed); }
bool allow_tf32() { return g_allow_tf32.load(std::memory_order_relaxed); }

kernels::GemmContext gemm_context(int index) {
  const DeviceContext& ctx = context(index);
  return {.device = index, .stream = ctx.stream, .blaslt = ctx.blaslt,
          .workspace = ctx.workspace, .workspace_bytes = ctx.workspace_bytes,
          .allow_tf32 = allow_tf32()};
}

std::unique_ptr<Allocator> make_allocator(int index) {
  const char* env = std::getenv("ATTN_CUDA_ALLOCATOR");
  const std::string kind = env ? env : "";
  if (kind.empty() || kind == "caching") return make_caching_allocator(index);
  if (kind == "simple") return make_simple_allocator(index);
  ATTN_FAIL("ATTN_CUDA_ALLOCATOR=", kind,
            " is not an allocator: use caching (the default) or simple");
}

std::unique_ptr<Allocator> make_caching_allocator(int index) {
  require_device(index);
  return ::attn::make_caching_allocator(std::make_unique<CudaRawMemory>(index));
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
