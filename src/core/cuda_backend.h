// The host-side face of the CUDA backend (implemented in src/core/cuda_backend.cu). Only
// compiled in with ATTN_WITH_CUDA; callers guard with #ifdef. No CUDA headers here.
#pragma once

#include <cstddef>
#include <memory>

#include "core/allocator.h"
#include "kernels/types.h"

namespace attn::cuda {

// Devices the driver reports; 0 when there is no GPU or no driver (never throws).
int device_count();
// Throws with a clear message when device `index` cannot be used.
void require_device(int index);
// The stream attn's work on `index` is ordered on; also makes `index` the current device.
cudaStream_t stream(int index);
void synchronize(int index);

// A plain cudaMalloc/cudaFree allocator with statistics; the caching allocator replaces
// it through set_cuda_allocator_factory.
std::unique_ptr<Allocator> make_simple_allocator(int index);

void copy(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes);

}  // namespace attn::cuda
