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

}  // namespace attn::kernels
