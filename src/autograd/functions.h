// The differentiable API: each function computes its result through src/ops and, when an
// input requires grad and grad mode is on, records a Node whose backward also uses src/ops.
// All of them run on any device the underlying ops support; CPU kernels exist for f32/f64.
#pragma once

#include <cstdint>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"
#include "ops/attention.h"  // AttentionBackend

namespace attn {

// a [..., M, K] @ b [..., K, N] (trans_a: a is [..., K, M]; trans_b: b is [..., N, K]).
// Batch dimensions of a and b are equal, or b is 2-D and shared across a's batch.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// x [..., in] @ weight[out, in]^T + bias[out] (bias optional).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = {});
// relu(linear(x, weight, bias)); on CUDA the bias and relu run in the GEMM's epilogue.
Tensor linear_relu(const Tensor& x, const Tensor& weight, const Tensor& bias = {});

// Element-wise on equal shapes.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, double factor);
Tensor relu(const Tensor& x);

// Inverted dropout: each element is zeroed with probability p and the rest scaled by
// 1/(1-p). The mask is a function of (gen.seed(), an offset reserved from gen, index) and is
// regenerated in backward, never stored. Identity when !training or p == 0.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen = default_generator());

// Token embedding: out[..., :] = weight[ids[...], :] * scale, plus, when add_positions, the
// sinusoidal position encoding of (position_offset + index along the last dimension of ids).
// ids: i32 of any shape with values in [0, vocab). Backward scatter-adds into weight.
Tensor embedding(const Tensor& ids, const Tensor& weight, double scale = 1.0,
                 bool add_positions = false, int64_t position_offset = 0);
// The paper's table: pe[p, 2i] = sin(p / 10000^(2i/d)), pe[p, 2i+1] = cos(same), rows
// offset .. offset+length-1. Not differentiable.
Tensor sinusoidal_positions(int64_t length, int64_t dim, int64_t offset = 0, DType dtype = kF32,
                            Device device = Device::cpu());

// Layer norm over the last dimension of (x + residual) (residual optional, same shape as x),
// with gamma/beta of that dimension's size; statistics in fp32 or better.
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps = 1e-5,
                  const Tensor& residual = {});

// Softmax over the last dimension.
Tensor softmax(const Tensor& x);

// Scaled dot-product attention, softmax(q k^T / sqrt(d) + mask) v, for q [B, H, Tq, D] and
// k, v [B, H, Tk, D]. key_lengths (i32 [B], optional): keys j >= key_lengths[b] are masked.
// causal: query i may see keys j <= i + (Tk - Tq) (queries aligned to the end of the keys, as
// in incremental decoding). A query row with no visible key outputs zeros (and gets no
// gradient). dropout_p > 0 drops attention probabilities (mask from gen, regenerated in
// backward); pass dropout_p = 0 in evaluation. backend: ops/attention.h (cudnn falls back to
// fused where cuDNN cannot run a call; the backward uses whichever ran).
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_lengths = {},
                 bool causal = false, double dropout_p = 0.0, Generator* gen = nullptr,
                 ops::AttentionBackend backend = ops::AttentionBackend::fused);

// Label-smoothed cross-entropy fused with log-softmax, as PyTorch's
// cross_entropy(label_smoothing=eps, reduction='sum'): the target distribution is
// (1 - eps) on the target plus eps/V spread uniformly over all V classes. Rows whose target is
// ignore_index contribute nothing. logits [N, V] (or [..., V]), targets i32 [N] (or [...]).
struct CrossEntropyResult {
  Tensor loss;      // scalar, differentiable: summed smoothed loss over counted tokens
  Tensor nll;       // scalar, not differentiable: summed -log p(target)
  Tensor ntokens;   // scalar: number of counted (non-ignored) tokens
  Tensor ncorrect;  // scalar: counted tokens whose argmax equals the target
};
CrossEntropyResult cross_entropy(const Tensor& logits, const Tensor& targets,
                                 double label_smoothing = 0.0, int32_t ignore_index = -1);

// Reductions.
Tensor sum(const Tensor& x);                                   // all elements -> scalar
Tensor sum(const Tensor& x, int64_t dim, bool keepdim = false);  // one dimension
Tensor mean(const Tensor& x);                                  // all elements -> scalar

// Layout. reshape returns a view; the others copy.
Tensor reshape(const Tensor& x, const Shape& shape);
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);
Tensor split_heads(const Tensor& x, int64_t heads);  // [B, T, H*D] -> [B, H, T, D]
Tensor merge_heads(const Tensor& x);                 // [B, H, T, D] -> [B, T, H*D]
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end);  // [start, end)
Tensor cast(const Tensor& x, DType dtype);

}  // namespace attn
