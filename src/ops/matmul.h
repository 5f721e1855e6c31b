// Matrix products (no autograd).
#pragma once

#include "core/tensor.h"

namespace attn::ops {

// a [..., M, K] @ b [..., K, N] with optional transposes (see attn::matmul). Batch dims equal,
// or b 2-D (shared). When `out` is given (right shape) the product is accumulated into it
// scaled by alpha (beta = 1); otherwise a new tensor is returned.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false,
              double alpha = 1.0);
void matmul_acc(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, Tensor& out,
                double alpha = 1.0);

// x [..., in] @ w[out, in]^T (+ bias[out]). On CUDA the bias is added by the GEMM's epilogue.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = {});
// relu(linear(x, w, bias)), fused into the GEMM on CUDA.
Tensor linear_relu(const Tensor& x, const Tensor& w, const Tensor& bias = {});

// linear's weight gradient g^T x ([out, in]) from g [..., out] and x [..., in]; when
// `bias_grad` is given, also its bias gradient, the sum of g over all rows ([out]), which
// on CUDA comes out of the same GEMM.
Tensor linear_weight_grad(const Tensor& g, const Tensor& x, Tensor* bias_grad = nullptr);

}  // namespace attn::ops
