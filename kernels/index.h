// Row gather: out[i, :] = x[index[i], :] for x viewed as [rows, row_size]. Used to keep or
// reorder batch rows of decoder state (beam search); not differentiable. Indices are checked
// by the caller (src/ops/index.cc); the kernel trusts them.
#pragma once

#include <cstdint>

#include "kernels/types.h"

namespace attn::kernels {

template <class T>
void gather_rows_cpu(const T* x, const int32_t* index, T* out, int64_t n_index, int64_t row_size);

// CUDA (kernels/index_cuda.cu), T in {float, double, bf16, f16, int32_t}: byte copies,
// bit-identical to the CPU. `index` is a device array of n_index checked indices.
template <class T>
void gather_rows_cuda(const T* x, const int32_t* index, T* out, int64_t n_index,
                      int64_t row_size, cudaStream_t stream);

}  // namespace attn::kernels
