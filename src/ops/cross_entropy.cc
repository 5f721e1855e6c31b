#include "ops/cross_entropy.h"

#include <cstring>

#include "core/cuda_backend.h"
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

// The per-row logsumexp and the summed loss/nll are f32 at least: in bf16/f16 the lse would
// lose the gradient's precision and a batch's loss its digits (or overflow f16).
DType stat_dtype(const Tensor& logits) {
  return logits.dtype() == kF64 ? kF64 : kF32;
}

}  // namespace

CrossEntropyForward cross_entropy_forward(const Tensor& logits, const Tensor& targets,
                                          double label_smoothing, int32_t ignore_index) {
  const char* op = "cross_entropy";
  const int64_t vocab = check_inputs(op, logits, targets, label_smoothing);
  const int64_t rows = targets.numel();
  CrossEntropyForward out;
  out.lse = Tensor::empty(targets.shape(), stat_dtype(logits), logits.device());
  kernels::CrossEntropyTotals totals;
  dispatch_float(
      op, logits,
      [&](auto t) {
        using T = typename decltype(t)::type;
        totals = kernels::cross_entropy_forward_cpu<T>(logits.data<T>(), targets.data<int32_t>(),
                                                       rows, vocab, label_smoothing, ignore_index,
                                                       out.lse.data<T>());
        // Counts fit i32 for any batch that fits in memory as logits (rows * V elements).
        out.loss = Tensor::from_vector({totals.loss}, {}, stat_dtype(logits), logits.device());
        out.nll = Tensor::from_vector({totals.nll}, {}, stat_dtype(logits), logits.device());
        out.ntokens =
            Tensor::from_ints({static_cast<int32_t>(totals.ntokens)}, {}, logits.device());
        out.ncorrect =
            Tensor::from_ints({static_cast<int32_t>(totals.ncorrect)}, {}, logits.device());
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        const Device dev = logits.device();
        out.loss = Tensor::empty({}, kF32, dev);
        out.nll = Tensor::empty({}, kF32, dev);
        out.ntokens = Tensor::empty({}, kI32, dev);
        out.ncorrect = Tensor::empty({}, kI32, dev);
        // Per-row loss/nll/state for the fixed-order totals; status = (first bad row or -1,
        // its target) as two int64 in four i32 slots.
        Tensor workspace =
            Tensor::empty({kernels::cross_entropy_forward_cuda_workspace(rows)}, kF32, dev);
        Tensor status = Tensor::empty({4}, kI32, dev);
        kernels::cross_entropy_forward_cuda<T>(
            logits.data<T>(), targets.data<int32_t>(), rows, vocab, label_smoothing, ignore_index,
            out.lse.data<float>(), out.loss.data<float>(), out.nll.data<float>(),
            out.ntokens.data<int32_t>(), out.ncorrect.data<int32_t>(),
            reinterpret_cast<int64_t*>(status.data<int32_t>()), workspace.data<float>(),
            cuda::stream(dev.index));
        // One small synchronous copy, so that a bad target is an error here as on the CPU.
        const Tensor host = status.to(Device::cpu());
        int64_t st[2];
        std::memcpy(st, host.raw_data(), sizeof(st));
        totals.bad_row = st[0];
        totals.bad_target = static_cast<int32_t>(st[1]);
      });
  ATTN_CHECK(totals.bad_row < 0, op, ": target ", totals.bad_target, " at row ", totals.bad_row,
             " is out of range for ", vocab, " classes (logits shape ", logits.shape(),
             ", ignore_index ", ignore_index, ")");
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
  // The loss's dtype (f32 for 16-bit logits); the logits' own dtype is accepted too.
  ATTN_CHECK((grad_loss.dtype() == stat_dtype(logits) || grad_loss.dtype() == logits.dtype()) &&
                 grad_loss.device() == logits.device(),
             op, ": grad_loss is ", grad_loss.dtype(), " on ", grad_loss.device(),
             " but logits are ", logits.dtype(), " on ", logits.device(), " (expected ",
             stat_dtype(logits), ", the loss's dtype, on the logits' device)");
  const Tensor g =
      grad_loss.dtype() == stat_dtype(logits) ? grad_loss : grad_loss.to(stat_dtype(logits));
  check_same_shape(op, "targets", targets, "lse", lse);
  ATTN_CHECK(lse.dtype() == stat_dtype(logits) && lse.device() == logits.device(), op, ": lse is ",
             lse.dtype(), " on ", lse.device(), " but logits are ", logits.dtype(), " on ",
             logits.device(), " (expected ", stat_dtype(logits), " on the logits' device)");
  Tensor dlogits = Tensor::empty_like(logits);
  dispatch_float(
      op, logits,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::cross_entropy_backward_cpu<T>(g.data<T>(), logits.data<T>(),
                                               targets.data<int32_t>(), lse.data<T>(), rows, vocab,
                                               label_smoothing, ignore_index, dlogits.data<T>());
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::cross_entropy_backward_cuda<T>(
            g.data<float>(), logits.data<T>(), targets.data<int32_t>(), lse.data<float>(), rows,
            vocab, label_smoothing, ignore_index, dlogits.data<T>(),
            cuda::stream(logits.device().index));
      });
  return dlogits;
}

}  // namespace attn::ops
