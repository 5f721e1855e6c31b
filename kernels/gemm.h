// Strided batched GEMM on row-major matrices: for each batch index i,
//   C_i = alpha * op(A_i) @ op(B_i) + beta * C_i
// with op(X) = X or X^T, A_i = A + i * stride_a (stride 0 shares one matrix across the
// batch). beta = 1 accumulates (parameter gradients), beta = 0 overwrites.
#pragma once

#include <cstdint>

#include "kernels/types.h"

namespace attn::kernels {

struct GemmShape {
  int64_t m, n, k;      // op(A) is m x k, op(B) is k x n, C is m x n
  bool trans_a = false;  // A stored k x m
  bool trans_b = false;  // B stored n x k
  int64_t batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;  // elements between batch entries
};

// CPU through OpenBLAS (cblas_sgemm / cblas_dgemm).
template <class T>
void gemm_cpu(const GemmShape& s, double alpha, const T* a, const T* b, double beta, T* c);

}  // namespace attn::kernels
