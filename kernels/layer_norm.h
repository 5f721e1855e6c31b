// Layer normalisation over the last dimension, optionally fused with the residual add that
// precedes it in a post-norm Transformer block: s = x + residual, y = (s - mean) * rstd *
// gamma + beta with rstd = 1 / sqrt(var + eps) and the biased variance (as PyTorch).
//
// Tensors are contiguous [rows, cols]. The forward also writes the per-row mean and rstd
// (CPU: in T, f32 statistics for f32 data, f64 for f64; CUDA: float for every data type,
// so bf16/f16 activations keep fp32 statistics) so that the backward needs no second
// reduction; the CPU kernel accumulates in T (float for f32, as the CUDA kernels; double for
// f64, the gradient checks' reference).
// The backward recomputes s from x and residual instead of keeping it, so the fused add
// costs no memory. s is rounded to T before it is normalised, as a separate add would.
//
// Memory convention of the backward: dx (an activation gradient) is written with =;
// dgamma and dbeta (parameter gradients) accumulate with +=, so the caller zeroes them.
#pragma once

#include <cstdint>

#include "kernels/types.h"

namespace attn::kernels {

// residual may be null.
template <class T>
void layer_norm_forward_cpu(const T* x, const T* residual, const T* gamma, const T* beta,
                            double eps, int64_t rows, int64_t cols, T* y, T* mean, T* rstd);

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma and
// xhat = (s - mean) * rstd; dgamma += sum over rows of dy * xhat; dbeta += sum of dy.
// residual may be null (then s = x). The gradient for residual equals dx.
template <class T>
void layer_norm_backward_cpu(const T* dy, const T* x, const T* residual, const T* gamma,
                             const T* mean, const T* rstd, int64_t rows, int64_t cols, T* dx,
                             T* dgamma, T* dbeta);

// CUDA launchers (kernels/layer_norm_cuda.cu), T in {float, bf16, f16}; gamma and beta have
// x's type. Pointers are device pointers; rows == 0 launches nothing.
template <class T>
void layer_norm_forward_cuda(const T* x, const T* residual, const T* gamma, const T* beta,
                             double eps, int64_t rows, int64_t cols, T* y, float* mean, float* rstd,
                             cudaStream_t stream);

// Floats of device scratch layer_norm_backward_cuda needs for these sizes (per-block partial
// sums of dgamma/dbeta); depends only on rows and cols.
int64_t layer_norm_backward_cuda_workspace(int64_t rows, int64_t cols);

// dx written with =, dgamma/dbeta accumulate with += (deterministic: fixed-order two-stage
// reduction through `workspace`, no atomics). residual may be null.
template <class T>
void layer_norm_backward_cuda(const T* dy, const T* x, const T* residual, const T* gamma,
                              const float* mean, const float* rstd, int64_t rows, int64_t cols,
                              T* dx, T* dgamma, T* dbeta, float* workspace, cudaStream_t stream);

}  // namespace attn::kernels
