#include "ops/dropout.h"

#include "core/cuda_backend.h"
#include "kernels/dropout.h"
#include "ops/check.h"
#include "ops/dispatch.h"

namespace attn::ops {

void check_dropout_p(const char* op, double p) {
  ATTN_CHECK(p >= 0.0 && p < 1.0, op, ": dropout probability must be in [0, 1), got ", p);
}

namespace {
Tensor masked_scale(const char* op, const Tensor& x, double p, uint64_t seed, uint64_t offset,
                    bool backward) {
  check_float(op, "x", x);
  check_dropout_p(op, p);
  Tensor out = Tensor::empty_like(x);
  // The kernels compare in float, as the CUDA kernels will.
  const float pf = static_cast<float>(p);
  dispatch_float(
      op, x,
      [&](auto t) {
        using T = typename decltype(t)::type;
        if (backward) {
          kernels::dropout_backward_cpu<T>(x.data<T>(), out.data<T>(), x.numel(), pf, seed, offset);
        } else {
          kernels::dropout_forward_cpu<T>(x.data<T>(), out.data<T>(), x.numel(), pf, seed, offset);
        }
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        cudaStream_t stream = cuda::stream(x.device().index);
        if (backward) {
          kernels::dropout_backward_cuda<T>(x.data<T>(), out.data<T>(), x.numel(), pf, seed,
                                            offset, stream);
        } else {
          kernels::dropout_forward_cuda<T>(x.data<T>(), out.data<T>(), x.numel(), pf, seed, offset,
                                           stream);
        }
      });
  return out;
}
}  // namespace

Tensor dropout_forward(const Tensor& x, double p, uint64_t seed, uint64_t offset) {
  return masked_scale("dropout", x, p, seed, offset, false);
}

Tensor dropout_backward(const Tensor& grad_y, double p, uint64_t seed, uint64_t offset) {
  return masked_scale("dropout_backward", grad_y, p, seed, offset, true);
}

}  // namespace attn::ops
