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

}  // namespace attn::kernels
