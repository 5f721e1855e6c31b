// Optimizer-step kernels: the fused Adam/AdamW update and the squared norm that gradient
// clipping needs. Both read every parameter once per step, so they are memory bound; fusing
// the update into one pass reads param, grad, m and v once and writes param, m and v once.
//
// adam_step: bias-corrected Adam (Kingma & Ba), in PyTorch's order of operations, with
// decoupled weight decay (AdamW, Loshchilov & Hutter) when weight_decay > 0:
//   param *= 1 - lr * weight_decay
//   m = beta1 * m + (1 - beta1) * g
//   v = beta2 * v + (1 - beta2) * g^2
//   param -= (lr / bias_correction1) * m / (sqrt(v) / sqrt(bias_correction2) + eps)
// with bias_correction{1,2} = 1 - beta{1,2}^t computed by the caller in double. Arithmetic is
// in T (float for f32 parameters, double for f64). param, m and v are updated in place.
#pragma once

#include <cstdint>

#include "kernels/types.h"

namespace attn::kernels {

template <class T>
void adam_step_cpu(T* param, const T* grad, T* m, T* v, int64_t n, double lr, double beta1,
                   double beta2, double eps, double weight_decay, double bias_correction1,
                   double bias_correction2);

// sum_i x[i]^2 accumulated in double. Blocks of a fixed size are summed independently and then
// in order, so the result does not depend on the number of threads (a resumed run clips the
// same way whatever OMP_NUM_THREADS is).
template <class T>
double sum_squares_cpu(const T* x, int64_t n);

// ---- Global gradient norm, clip factor and their statistics ("clip state") ----
// An f64 vector of kClipStateSize that the norm computation writes and the Adam step reads, so
// that a GPU step needs no host synchronisation. Slots:
enum ClipStateSlot : int {
  kClipNorm = 0,             // sqrt(sum of squares) / loss_scale of the latest computation
  kClipFactor = 1,           // what the step multiplies gradients by (1 / loss_scale * clip)
  kClipSumSquares = 2,       // sum of squares of the (scaled) gradients, latest computation
  kClipNormSum = 3,          // sum of the finite norms since the window was reset
  kClipSteps = 4,            // computations since the window was reset
  kClipNonfinite = 5,        // of which had a non-finite norm
  kClipFirstNonfinite = 6,   // 1-based position of the first of those in the window (0: none)
};
inline constexpr int kClipStateSize = 8;

// The one definition of the norm and the clip factor (torch.nn.utils.clip_grad_norm_, with
// dynamic loss scaling undone first): norm = sqrt(sum_squares) / loss_scale; factor =
// 1 / loss_scale, times max_norm / (norm + 1e-6) when max_norm > 0 and norm > max_norm. A step
// must not be applied when the norm is not finite. Used by the CPU path and the CUDA kernel.
ATTN_HD inline void clip_state_update(double* state, double sum_squares, double max_norm,
                                      double loss_scale) {
  const double norm = std::sqrt(sum_squares) / loss_scale;
  double factor = 1.0 / loss_scale;
  if (max_norm > 0 && norm > max_norm) factor *= max_norm / (norm + 1e-6);
  state[kClipNorm] = norm;
  state[kClipFactor] = factor;
  state[kClipSumSquares] = sum_squares;
  const double steps = state[kClipSteps] + 1;
  state[kClipSteps] = steps;
  if (std::isfinite(norm)) {
    state[kClipNormSum] += norm;
  } else {
    state[kClipNonfinite] += 1;
    if (state[kClipFirstNonfinite] == 0) state[kClipFirstNonfinite] = steps;
  }
}

// ---- CUDA multi-tensor forms (kernels/adam_cuda.cu) ----
// One launch covers a whole list of tensors: the launcher builds a table of tensors and of
// 64k-element chunks, copies it to the device (skipped when it equals the previous table),
// and each block processes one chunk. Tensors of different element types may be mixed.
enum class MultiTensorType : int32_t { kF32 = 0, kBF16 = 1, kF16 = 2 };

struct AdamTensorRef {  // param, grad, exp_avg, exp_avg_sq: n elements of `type` each
  void* param;
  const void* grad;
  void* m;
  void* v;
  int64_t n;
  MultiTensorType type;
};

struct NormTensorRef {
  const void* x;
  int64_t n;
  MultiTensorType type;
};

// Sum of squares of every tensor (each stored value widened exactly, squared and accumulated in
// f64: per-chunk partials, then one block adds them in chunk order, so the result is
// deterministic), then clip_state_update(state, sum, max_norm, loss_scale) on the device.
// `state` is a device array of kClipStateSize doubles. `tensors` is host memory.
void grad_norm_multi_cuda(const NormTensorRef* tensors, int64_t count, double max_norm,
                          double loss_scale, double* state, cudaStream_t stream);

// adam_step_cpu on every tensor in one launch, fp32 arithmetic in the CPU's order with no FMA
// contraction (bit-identical to adam_step_cpu<float> for f32 tensors; bf16/f16 state is
// computed in fp32 and rounded once). With clip_state (device, may be null) every block first
// reads the norm: when it is not finite nothing is updated; otherwise each gradient is
// multiplied by float(state[kClipFactor]) in registers (the CPU scales the gradient in place
// with the same float factor first, so the values agree).
void adam_step_multi_cuda(const AdamTensorRef* tensors, int64_t count, double lr, double beta1,
                          double beta2, double eps, double weight_decay, double bias_correction1,
                          double bias_correction2, const double* clip_state, cudaStream_t stream);

}  // namespace attn::kernels
