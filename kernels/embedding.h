// Token embedding lookup with an optional sinusoidal position encoding, its backward, and the
// position table itself.
//
// Forward: out[r, :] = weight[ids[r], :] * scale (+ pe[r % seq_len, :]) for the rows r of the
// flattened ids; the op passes a table pe whose row t already includes the position offset.
// Sums are formed in double and rounded once.
// Backward: grad_weight[ids[r], :] += scale * grad_out[r, :]. It is a parameter gradient, so it
// accumulates (+=) into what the caller passes (zeros for a fresh gradient). Threads own
// disjoint column blocks of grad_weight and each walks the rows in order, so there are no
// races and the summation order (hence the result) does not depend on the thread count.
// Kernels assume ids are valid: the op checks them first (embedding_first_invalid_cpu).
#pragma once

#include <cstdint>

#include "kernels/types.h"

namespace attn::kernels {

// The paper's encoding (Vaswani et al. 2017, section 3.5), in double:
// pe[pos, 2i] = sin(pos / 10000^(2i/dim)), pe[pos, 2i+1] = cos(pos / 10000^(2i/dim)).
// An odd dim ends with a sin column.
ATTN_HD inline double sinusoidal_position_value(int64_t pos, int64_t col, int64_t dim) {
  const double angle = static_cast<double>(pos) /
                       pow(10000.0, static_cast<double>(col - col % 2) / static_cast<double>(dim));
  return col % 2 == 0 ? sin(angle) : cos(angle);
}

// Index of the first id outside [0, vocab), or -1 when all are valid.
int64_t embedding_first_invalid_cpu(const int32_t* ids, int64_t n, int64_t vocab);

// pe may be null (no positions); otherwise it is [seq_len, dim].
template <class T>
void embedding_forward_cpu(const int32_t* ids, const T* weight, T* out, int64_t rows, int64_t dim,
                           double scale, const T* pe, int64_t seq_len);

template <class T>
void embedding_backward_cpu(const int32_t* ids, const T* grad_out, T* grad_weight, int64_t rows,
                            int64_t dim, double scale);

// out[p, c] = sinusoidal_position_value(offset + p, c, dim) for p < length.
template <class T>
void sinusoidal_positions_cpu(T* out, int64_t length, int64_t dim, int64_t offset);

// ---- CUDA (kernels/embedding_cuda.cu), T in {float, bf16, f16}, device pointers ----

// embedding_first_invalid_cpu on the device: one kernel, then one 8-byte device-to-host copy
// (synchronous). scratch: 8 bytes of device memory, 8-byte aligned.
int64_t embedding_first_invalid_cuda(const int32_t* ids, int64_t n, int64_t vocab, int64_t* scratch,
                                     cudaStream_t stream);

// out[r, :] = weight[ids[r], :] * scale, plus, when add_positions, the encoding of position
// position_offset + r % seq_len computed in the kernel (no table): the angle
// pos / 10000^((c - c % 2) / dim) in double, reduced to [-pi, pi], then sin/cos in float.
template <class T>
void embedding_forward_cuda(const int32_t* ids, const T* weight, T* out, int64_t rows, int64_t dim,
                            double scale, bool add_positions, int64_t seq_len,
                            int64_t position_offset, cudaStream_t stream);

// Bytes of device scratch embedding_backward_cuda needs (256-byte aligned base).
template <class T>
size_t embedding_backward_cuda_workspace(int64_t rows, int64_t dim, int64_t vocab,
                                         bool deterministic);

// grad_weight[ids[r], :] += scale * grad_out[r, :] (a parameter gradient: +=), fp32 sums.
// deterministic: ids are sorted on the device (stable radix sort) and each id's rows are
// summed in row order in fixed chunks, so the result has the same bits on every run.
// Otherwise float atomicAdd (bf16/f16: into fp32 scratch, then added to grad_weight once).
template <class T>
void embedding_backward_cuda(const int32_t* ids, const T* grad_out, T* grad_weight, int64_t rows,
                             int64_t dim, int64_t vocab, double scale, bool deterministic,
                             void* workspace, cudaStream_t stream);

}  // namespace attn::kernels
