#include "ops/cross_entropy.h"

#include "kernels/cross_entropy.h"
#include "ops/check.h"
#include "ops/dispatch.h"

namespace attn::ops {

namespace {

// Validates logits/targets and returns V.
int64_t check_inputs(const char* op, const Tensor& logits, const Tensor& targets,
                     double label_smoothing) {
  check_float(op, "logits", logits);
  check_dtype(op, "targets", targets, kI32);
  ATTN_CHECK(logits.dim() >= 1 && logits.size(-1) > 0, op,
             ": logits need a non-empty class dimension, got shape ", logits.shape());
  const Shape rows_shape(logits.shape().begin(), logits.shape().end() - 1);
  ATTN_CHECK(targets.shape() == rows_shape, op, ": targets have shape ", targets.shape(),
             " but logits have shape ", logits.shape(), " (expected targets of shape ", rows_shape,
             ")");
  ATTN_CHECK(targets.device() == logits.device(), op, ": targets are on ", targets.device(),
             " but logits are on ", logits.device());
  ATTN_CHECK(label_smoothing >= 0.0 && label_smoothing <= 1.0, op,
             ": label_smoothing must be in [0, 1], got ", label_smoothing);
  return logits.size(-1);
}

}  // namespace

CrossEntropyForward cross_entropy_forward(const Tensor& logits, const Tensor& targets,
                                          double label_smoothing, int32_t ignore_index) {
  const char* op = "cross_entropy";
  const int64_t vocab = check_inputs(op, logits, targets, label_smoothing);
  const int64_t rows = targets.numel();
  CrossEntropyForward out;
  out.lse = Tensor::empty(targets.shape(), logits.dtype(), logits.device());
  kernels::CrossEntropyTotals totals;
  dispatch_float(
      op, logits,
      [&](auto t) {
        using T = typename decltype(t)::type;
        totals = kernels::cross_entropy_forward_cpu<T>(logits.data<T>(), targets.data<int32_t>(),
                                                       rows, vocab, label_smoothing, ignore_index,
                                                       out.lse.data<T>());
      },
      kNoCuda);
  ATTN_CHECK(totals.bad_row < 0, op, ": target ", totals.bad_target, " at row ", totals.bad_row,
             " is out of range for ", vocab, " classes (logits shape ", logits.shape(),
             ", ignore_index ", ignore_index, ")");
  // Counts fit i32 for any batch that fits in memory as logits (rows * V elements).
  out.loss = Tensor::from_vector({totals.loss}, {}, logits.dtype(), logits.device());
  out.nll = Tensor::from_vector({totals.nll}, {}, logits.dtype(), logits.device());
  out.ntokens = Tensor::from_ints({static_cast<int32_t>(totals.ntokens)}, {}, logits.device());
  out.ncorrect = Tensor::from_ints({static_cast<int32_t>(totals.ncorrect)}, {}, logits.device());
  return out;
}

Tensor cross_entropy_backward(const Tensor& grad_loss, const Tensor& logits, const Tensor& targets,
                              const Tensor& lse, double label_smoothing, int32_t ignore_index) {
  const char* op = "cross_entropy_backward";
  const int64_t vocab = check_inputs(op, logits, targets, label_smoothing);
  const int64_t rows = targets.numel();
  check_defined(op, "grad_loss", grad_loss);
  ATTN_CHECK(grad_loss.numel() == 1, op, ": grad_loss must have one element, got shape ",
             grad_loss.shape());
  check_like(op, "logits", logits, "grad_loss", grad_loss);
  check_same_shape(op, "targets", targets, "lse", lse);
  check_like(op, "logits", logits, "lse", lse);
  Tensor dlogits = Tensor::empty_like(logits);
  dispatch_float(
      op, logits,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::cross_entropy_backward_cpu<T>(grad_loss.data<T>(), logits.data<T>(),
                                               targets.data<int32_t>(), lse.data<T>(), rows, vocab,
                                               label_smoothing, ignore_index, dlogits.data<T>());
      },
      kNoCuda);
  return dlogits;
}

}  // namespace attn::ops
