#include "ops/optim.h"

#include "kernels/adam.h"
#include "kernels/elementwise.h"
#include "ops/check.h"
#include "ops/dispatch.h"

namespace attn::ops {

void adam_step_(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamStepArgs& a) {
  check_float("adam_step", "param", param);
  check_same_shape("adam_step", "param", param, "grad", grad);
  check_same_shape("adam_step", "param", param, "exp_avg", m);
  check_same_shape("adam_step", "param", param, "exp_avg_sq", v);
  check_like("adam_step", "param", param, "grad", grad);
  check_like("adam_step", "param", param, "exp_avg", m);
  check_like("adam_step", "param", param, "exp_avg_sq", v);
  dispatch_float(
      "adam_step", param,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::adam_step_cpu<T>(param.data<T>(), grad.data<T>(), m.data<T>(), v.data<T>(),
                                  param.numel(), a.lr, a.beta1, a.beta2, a.eps, a.weight_decay,
                                  a.bias_correction1, a.bias_correction2);
      },
      kNoCuda);
}

double squared_norm(const Tensor& x) {
  check_float("squared_norm", "x", x);
  double out = 0.0;
  dispatch_float(
      "squared_norm", x,
      [&](auto t) {
        using T = typename decltype(t)::type;
        out = kernels::sum_squares_cpu<T>(x.data<T>(), x.numel());
      },
      kNoCuda);
  return out;
}

void clip_scale_(Tensor& x, double factor) {
  check_float("clip_scale_", "x", x);
  dispatch_float(
      "clip_scale_", x,
      [&](auto t) {
        using T = typename decltype(t)::type;
        // scale_cpu is element-wise (out[i] = a * x[i]), so in == out is safe.
        kernels::scale_cpu<T>(x.data<T>(), factor, x.data<T>(), x.numel());
      },
      kNoCuda);
}

}  // namespace attn::ops
