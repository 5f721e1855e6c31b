// Label-smoothed cross-entropy fused with log-softmax, PyTorch's
// cross_entropy(label_smoothing=eps, ignore_index=ii, reduction='sum') on [rows, vocab]
// logits and i32 targets. With lse = logsumexp(row), -logp[j] = lse - x[j], so per counted
// row
//   nll  = lse - x[y]
//   loss = (1 - eps) * nll + (eps / V) * sum_j (lse - x[j])
//        = (1 - eps) * nll + eps * (lse - mean_j x[j])
// and the row is correct when its first maximum is at y. Rows whose target is ignore_index
// contribute nothing (ignore_index may lie inside [0, V), e.g. a padding id).
//
// One task per row computes loss, nll and correctness together (a pass for the maximum,
// argmax and sum of the logits, one for the exponentials) and keeps only the row's
// logsumexp; probabilities are never stored. The backward recomputes them
// from the logits and lse: dlogits = g * (softmax - q), q = (1 - eps) * onehot(y) + eps / V,
// zero on ignored rows, written with = (an activation gradient). Totals are summed in row
// order in double, so they do not depend on the number of threads.
#pragma once

#include <cstdint>

#include "kernels/types.h"

namespace attn::kernels {

struct CrossEntropyTotals {
  double loss = 0;
  double nll = 0;
  int64_t ntokens = 0;
  int64_t ncorrect = 0;
  // First row whose target is neither ignore_index nor in [0, vocab), or -1. Such rows are
  // skipped; the caller reports them.
  int64_t bad_row = -1;
  int32_t bad_target = 0;
};

// lse: per-row logsumexp (out; 0 on ignored and bad rows).
template <class T>
CrossEntropyTotals cross_entropy_forward_cpu(const T* logits, const int32_t* targets, int64_t rows,
                                             int64_t vocab, double label_smoothing,
                                             int32_t ignore_index, T* lse);

// grad_loss: the upstream gradient of the summed loss (one element).
template <class T>
void cross_entropy_backward_cpu(const T* grad_loss, const T* logits, const int32_t* targets,
                                const T* lse, int64_t rows, int64_t vocab, double label_smoothing,
                                int32_t ignore_index, T* dlogits);

// CUDA launchers (kernels/cross_entropy_cuda.cu), T in {float, bf16, f16}; device pointers.
// The same split as on the CPU (the forward keeps the per-row logsumexp, the backward makes
// one pass over the logits), with fp32 arithmetic and the totals summed in a fixed order in
// double. Outputs: loss and nll (one float each: a 16-bit sum over a batch would lose its
// digits or, in f16, overflow), ntokens and ncorrect (one int32 each), lse (float [rows], 0 on
// ignored and bad rows) and status ([2] int64: the first bad row or -1, and its target), all
// written on the device; the caller copies status to the host to report bad targets.
// workspace: cross_entropy_forward_cuda_workspace(rows) floats.
int64_t cross_entropy_forward_cuda_workspace(int64_t rows);

template <class T>
void cross_entropy_forward_cuda(const T* logits, const int32_t* targets, int64_t rows,
                                int64_t vocab, double label_smoothing, int32_t ignore_index,
                                float* lse, float* loss, float* nll, int32_t* ntokens,
                                int32_t* ncorrect, int64_t* status, float* workspace,
                                cudaStream_t stream);

// dlogits written with = (zeros on ignored and bad rows); grad_loss is one float on the device
// (the gradient of the float loss).
template <class T>
void cross_entropy_backward_cuda(const float* grad_loss, const T* logits, const int32_t* targets,
                                 const float* lse, int64_t rows, int64_t vocab,
                                 double label_smoothing, int32_t ignore_index, T* dlogits,
                                 cudaStream_t stream);

}  // namespace attn::kernels
