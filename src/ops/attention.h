// Scaled dot-product attention on tensors (no autograd); algorithm in kernels/attention.h.
// The forward returns the output and the per-row log-sum-exp; the backward recomputes the
// probabilities from q, k and lse (nothing of size Tq x Tk is kept between the two).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace attn::ops {

struct AttentionOptions {
  Tensor key_lengths;             // i32 [B] with values in [0, Tk], or undefined (all keys)
  bool causal = false;            // query i sees keys j <= i + (Tk - Tq)
  double dropout_p = 0.0;         // in [0, 1): probability of dropping an attention probability
  uint64_t seed = 0, offset = 0;  // Philox stream of the dropout mask
};

struct AttentionResult {
  Tensor out;  // [B, H, Tq, D], q's dtype
  Tensor lse;  // [B, H, Tq], f64 for f64 inputs else f32; -inf for rows with no visible key
};

struct AttentionGrads {
  Tensor q, k, v;
};

// Shape, dtype and device checks of q [B, H, Tq, D], k and v [B, H, Tk, D], key_lengths and
// dropout_p (not the key length values, which may live on a device).
void check_attention_args(const Tensor& q, const Tensor& k, const Tensor& v,
                          const AttentionOptions& opt);

AttentionResult attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const AttentionOptions& opt);
// `out` and `lse` are the forward's results for the same inputs and options.
AttentionGrads attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const Tensor& out, const Tensor& lse,
                                  const AttentionOptions& opt);

}  // namespace attn::ops
