// The host-side face of the CUDA backend (implemented in src/core/cuda_backend.cu). Only
// compiled in with ATTN_WITH_CUDA; callers guard with #ifdef (or call from generic lambdas
// that a build without CUDA never instantiates). No CUDA headers here.
//
// Memory and stream order. All of attn's work on device i is queued on stream(i), and the
// caching allocator (the default; see make_allocator) hands a block freed on the host to
// the next request at once, without waiting for the GPU: that is safe because every later
// use of the block is queued on the same stream, after the kernels that used it before.
// Work on any other stream breaks that: before the last tensor it touches is released, make
// stream(i) wait for it with wait_for_stream(i, other). (NCCL's blocking collectives run on
// stream(i); its started all-reduces run on a second stream and keep their tensor until
// stream(i) waits for them: dist/in_flight.h.) ATTN_CUDA_ALLOCATOR=simple selects a plain cudaMalloc/cudaFree allocator instead,
// for compute-sanitizer runs.
#pragma once

#include <cstddef>
#include <memory>

#include "core/allocator.h"
#include "kernels/gemm.h"  // GemmContext; declares struct cublasLtContext (= *cublasLtHandle_t)
#include "kernels/types.h"

namespace attn::cuda {

// Devices the driver reports; 0 when there is no GPU or no driver (never throws).
int device_count();
// Throws with a clear message when device `index` cannot be used.
void require_device(int index);
// The stream attn's work on `index` is ordered on; also makes `index` the current device.
cudaStream_t stream(int index);
void synchronize(int index);
// Makes stream(index) wait (on the GPU, the host does not block) for everything queued on
// `other` so far.
void wait_for_stream(int index, cudaStream_t other);

// What a device's work needs besides its stream, made on first use and kept until the
// process exits (never destroyed: destructors at exit would race the CUDA runtime's own
// teardown).
struct DeviceContext {
  int index = 0;
  cudaStream_t stream = nullptr;      // == stream(index)
  cublasLtContext* blaslt = nullptr;  // cuBLASLt handle
  void* workspace = nullptr;          // cuBLASLt workspace; use only on `stream`
  size_t workspace_bytes = 0;
};
inline constexpr size_t kBlasWorkspaceBytes = size_t{32} << 20;
// Also makes `index` the current device (like stream()).
const DeviceContext& context(int index);

// Whether f32 GEMMs may use TF32 tensor cores (10-bit mantissa products, f32 accumulation):
// about 8x the f32 rate, with ~1e-3 relative error per product. Off by default; the
// training config turns it on. Read at every GEMM, so it takes effect immediately.
void set_allow_tf32(bool allow);
bool allow_tf32();

// What kernels::gemm_cuda runs with on device `index`: its stream, the context's cuBLASLt
// handle and workspace, and allow_tf32(). Makes `index` the current device.
kernels::GemmContext gemm_context(int index);

// The default CUDA allocator (installed in allocator_for): the caching allocator, or the
// plain one when the environment has ATTN_CUDA_ALLOCATOR=simple. Any other value is an error.
std::unique_ptr<Allocator> make_allocator(int index);
// The caching allocator (allocator.h) over cudaMalloc/cudaFree on device `index`.
std::unique_ptr<Allocator> make_caching_allocator(int index);
// A plain cudaMalloc/cudaFree allocator with statistics.
std::unique_ptr<Allocator> make_simple_allocator(int index);

void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);

}  // namespace attn::cuda
