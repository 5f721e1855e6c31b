#include "ops/optim.h"

#include <cmath>
#include <type_traits>

#include "core/cuda_backend.h"
#include "kernels/adam.h"
#include "kernels/elementwise.h"
#include "ops/check.h"
#include "ops/dispatch.h"

namespace attn::ops {

namespace {

template <class T>
constexpr kernels::MultiTensorType multi_tensor_type() {
  if constexpr (std::is_same_v<T, float>) {
    return kernels::MultiTensorType::kF32;
  } else if constexpr (std::is_same_v<T, bf16>) {
    return kernels::MultiTensorType::kBF16;
  } else {
    static_assert(std::is_same_v<T, f16>, "multi-tensor kernels take f32, bf16 or f16");
    return kernels::MultiTensorType::kF16;
  }
}

void check_adam_args(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v) {
  check_float("adam_step", "param", param);
  check_same_shape("adam_step", "param", param, "grad", grad);
  check_same_shape("adam_step", "param", param, "exp_avg", m);
  check_same_shape("adam_step", "param", param, "exp_avg_sq", v);
  check_like("adam_step", "param", param, "grad", grad);
  check_like("adam_step", "param", param, "exp_avg", m);
  check_like("adam_step", "param", param, "exp_avg_sq", v);
}

void check_clip_state(const char* op, const Tensor& state) {
  check_dtype(op, "clip state", state, kF64);
  ATTN_CHECK(state.numel() >= kernels::kClipStateSize, op, ": clip state has shape ",
             state.shape(), ", expected [", kernels::kClipStateSize, "] (make_clip_state)");
}

#ifdef ATTN_WITH_CUDA
kernels::MultiTensorType multi_tensor_type_of(const char* op, const Tensor& t) {
  switch (t.dtype()) {
    case DType::kF32: return kernels::MultiTensorType::kF32;
    case DType::kBF16: return kernels::MultiTensorType::kBF16;
    case DType::kF16: return kernels::MultiTensorType::kF16;
    default:
      ATTN_FAIL(op, ": ", t.dtype(), " tensors are not supported on CUDA (use f32, bf16 or f16)");
  }
}
#endif

}  // namespace

void adam_step_(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamStepArgs& a) {
  check_adam_args(param, grad, m, v);
  dispatch_float(
      "adam_step", param,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::adam_step_cpu<T>(param.data<T>(), grad.data<T>(), m.data<T>(), v.data<T>(),
                                  param.numel(), a.lr, a.beta1, a.beta2, a.eps, a.weight_decay,
                                  a.bias_correction1, a.bias_correction2);
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        const kernels::AdamTensorRef ref{param.data<T>(), grad.data<T>(), m.data<T>(),
                                         v.data<T>(),     param.numel(),  multi_tensor_type<T>()};
        kernels::adam_step_multi_cuda(&ref, 1, a.lr, a.beta1, a.beta2, a.eps, a.weight_decay,
                                      a.bias_correction1, a.bias_correction2, nullptr,
                                      cuda::stream(param.device().index));
      });
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
      [&](auto t) {
        using T = typename decltype(t)::type;
        Tensor state = make_clip_state(x.device());
        const kernels::NormTensorRef ref{x.data<T>(), x.numel(), multi_tensor_type<T>()};
        kernels::grad_norm_multi_cuda(&ref, 1, 0.0, 1.0, state.data<double>(),
                                      cuda::stream(x.device().index));
        out = state.to(Device::cpu()).data<double>()[kernels::kClipSumSquares];
      });
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
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::scale_cuda<T>(x.data<T>(), factor, x.data<T>(), x.numel(),
                               cuda::stream(x.device().index));
      });
}

Tensor make_clip_state(Device device) {
  return Tensor::zeros({kernels::kClipStateSize}, kF64, device);
}

void grad_norm_state_(const std::vector<Tensor>& grads, double max_norm, double loss_scale,
                      Tensor& state) {
  constexpr const char* kOp = "grad_norm";
  check_clip_state(kOp, state);
  ATTN_CHECK(std::isfinite(loss_scale) && loss_scale > 0, kOp,
             ": loss scale must be finite and > 0, got ", loss_scale);
  for (const Tensor& g : grads) {
    if (!g.defined()) continue;
    check_float(kOp, "gradient", g);
    ATTN_CHECK(g.device() == state.device(), kOp, ": a gradient is on ", g.device(),
               " but the clip state is on ", state.device());
  }
  if (state.device().is_cpu()) {
    double total = 0.0;
    for (const Tensor& g : grads) {
      if (g.defined()) total += squared_norm(g);
    }
    kernels::clip_state_update(state.data<double>(), total, max_norm, loss_scale);
    return;
  }
#ifdef ATTN_WITH_CUDA
  std::vector<kernels::NormTensorRef> refs;
  refs.reserve(grads.size());
  for (const Tensor& g : grads) {
    if (g.defined()) refs.push_back({g.raw_data(), g.numel(), multi_tensor_type_of(kOp, g)});
  }
  kernels::grad_norm_multi_cuda(refs.data(), static_cast<int64_t>(refs.size()), max_norm,
                                loss_scale, state.data<double>(),
                                cuda::stream(state.device().index));
#else
  ATTN_FAIL(kOp, ": clip state on ", state.device(), " but attn was built without CUDA");
#endif
}

void adam_step_multi_(const std::vector<Tensor>& params, const std::vector<Tensor>& grads,
                      const std::vector<Tensor>& exp_avg, const std::vector<Tensor>& exp_avg_sq,
                      const AdamStepArgs& a, const Tensor& clip_state) {
  const size_t n = params.size();
  ATTN_CHECK(grads.size() == n && exp_avg.size() == n && exp_avg_sq.size() == n,
             "adam_step: ", n, " parameters but ", grads.size(), " gradients, ", exp_avg.size(),
             " exp_avg and ", exp_avg_sq.size(), " exp_avg_sq");
  if (n == 0) return;
  for (size_t i = 0; i < n; ++i) check_adam_args(params[i], grads[i], exp_avg[i], exp_avg_sq[i]);
  const Device device = params[0].device();
  for (size_t i = 1; i < n; ++i) {
    ATTN_CHECK(params[i].device() == device, "adam_step: parameters on ", device, " and ",
               params[i].device(), " in one step");
  }
  if (clip_state.defined()) {
    check_clip_state("adam_step", clip_state);
    ATTN_CHECK(clip_state.device() == device, "adam_step: the clip state is on ",
               clip_state.device(), " but the parameters are on ", device);
  }

  if (device.is_cpu()) {
    double factor = 1.0;
    if (clip_state.defined()) {
      const double* s = clip_state.data<double>();
      if (!std::isfinite(s[kernels::kClipNorm])) return;
      factor = s[kernels::kClipFactor];
    }
    for (size_t i = 0; i < n; ++i) {
      Tensor p = params[i], m = exp_avg[i], v = exp_avg_sq[i];
      if (factor == 1.0) {
        adam_step_(p, grads[i], m, v, a);
      } else {
        Tensor g = grads[i].clone();  // the caller's gradient stays as it is
        clip_scale_(g, factor);
        adam_step_(p, g, m, v, a);
      }
    }
    return;
  }
#ifdef ATTN_WITH_CUDA
  std::vector<kernels::AdamTensorRef> refs;
  refs.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    refs.push_back({params[i].raw_data(), grads[i].raw_data(), exp_avg[i].raw_data(),
                    exp_avg_sq[i].raw_data(), params[i].numel(),
                    multi_tensor_type_of("adam_step", params[i])});
  }
  kernels::adam_step_multi_cuda(refs.data(), static_cast<int64_t>(n), a.lr, a.beta1, a.beta2,
                                a.eps, a.weight_decay, a.bias_correction1, a.bias_correction2,
                                clip_state.defined() ? clip_state.data<double>() : nullptr,
                                cuda::stream(device.index));
#else
  ATTN_FAIL("adam_step: parameters on ", device, " but attn was built without CUDA");
#endif
}

}  // namespace attn::ops
