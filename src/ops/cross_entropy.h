// Label-smoothed cross-entropy fused with log-softmax (no autograd; see
// kernels/cross_entropy.h and attn::cross_entropy for the semantics).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace attn::ops {

struct CrossEntropyForward {
  Tensor loss;      // scalar: summed smoothed loss over counted rows; f64 for f64 logits,
                    // else f32 (bf16/f16 logits included)
  Tensor nll;       // scalar, loss's dtype: summed -log p(target)
  Tensor ntokens;   // i32 scalar: rows whose target is not ignore_index
  Tensor ncorrect;  // i32 scalar: counted rows whose first argmax is the target
  Tensor lse;       // per-row logsumexp, targets' shape (what the backward needs); f64 for
                    // f64 logits, else f32
};

// logits [..., V] (CPU: f32/f64; CUDA: f32/bf16/f16), targets i32 of logits' shape without
// its last dimension, each in [0, V) or equal to ignore_index; label_smoothing in [0, 1].
CrossEntropyForward cross_entropy_forward(const Tensor& logits, const Tensor& targets,
                                          double label_smoothing, int32_t ignore_index);

// dlogits = grad_loss * (softmax(logits) - q) on counted rows, 0 on ignored ones, in the
// logits' dtype; grad_loss is the one-element gradient of the summed loss (the loss's dtype),
// lse the forward's.
Tensor cross_entropy_backward(const Tensor& grad_loss, const Tensor& logits, const Tensor& targets,
                              const Tensor& lse, double label_smoothing, int32_t ignore_index);

}  // namespace attn::ops
