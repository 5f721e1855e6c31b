#include "ops/attention.h"

#include <cmath>

#include "core/cuda_backend.h"
#include "kernels/attention.h"
#include "ops/check.h"
#include "ops/dispatch.h"
#include "ops/dropout.h"

namespace attn::ops {

namespace {

constexpr const char* kOp = "attention";

DType lse_dtype(DType t) {
  return t == kF64 ? kF64 : kF32;
}

void check_key_length_values(const Tensor& key_lengths, int64_t k_len, const Tensor& k) {
  if (!key_lengths.defined()) return;
  const std::vector<int32_t> lens = key_lengths.to_int_vector();
  for (size_t b = 0; b < lens.size(); ++b) {
    ATTN_CHECK(lens[b] >= 0 && lens[b] <= k_len, kOp, ": key_lengths[", b, "] = ", lens[b],
               " is outside [0, ", k_len, "] (k has shape ", k.shape(), ")");
  }
}

kernels::AttentionArgs make_args(const Tensor& q, const Tensor& k, const AttentionOptions& opt) {
  kernels::AttentionArgs a;
  a.batch = q.size(0);
  a.heads = q.size(1);
  a.q_len = q.size(2);
  a.k_len = k.size(2);
  a.head_dim = q.size(3);
  a.scale = 1.0 / std::sqrt(static_cast<double>(a.head_dim));
  a.key_lengths = opt.key_lengths.defined() ? opt.key_lengths.data<int32_t>() : nullptr;
  a.causal = opt.causal;
  a.dropout_p = static_cast<float>(opt.dropout_p);
  a.seed = opt.seed;
  a.offset = opt.offset;
  return a;
}

}  // namespace

void check_attention_args(const Tensor& q, const Tensor& k, const Tensor& v,
                          const AttentionOptions& opt) {
  check_float(kOp, "q", q);
  check_float(kOp, "k", k);
  check_float(kOp, "v", v);
  ATTN_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, kOp,
             ": q, k, v must be [B, H, T, D], got q ", q.shape(), ", k ", k.shape(), ", v ",
             v.shape());
  check_like(kOp, "q", q, "k", k);
  check_like(kOp, "q", q, "v", v);
  ATTN_CHECK(k.shape() == v.shape(), kOp, ": k has shape ", k.shape(), " but v has shape ",
             v.shape());
  ATTN_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1), kOp, ": q has shape ", q.shape(),
             " but k has shape ", k.shape(), " (batch and heads must match)");
  ATTN_CHECK(q.size(3) == k.size(3), kOp, ": q has shape ", q.shape(), " but k has shape ",
             k.shape(), " (head dims differ)");
  ATTN_CHECK(q.size(3) > 0, kOp, ": head dim must be positive, q has shape ", q.shape());
  if (opt.key_lengths.defined()) {
    const Tensor& len = opt.key_lengths;
    ATTN_CHECK(len.dtype() == kI32 && len.dim() == 1 && len.size(0) == q.size(0), kOp,
               ": key_lengths must be i32 of shape [", q.size(0), "] (q has shape ", q.shape(),
               "), got ", len.dtype(), " of shape ", len.shape());
    ATTN_CHECK(len.device() == q.device(), kOp, ": key_lengths are on ", len.device(),
               " but q is on ", q.device());
  }
  check_dropout_p(kOp, opt.dropout_p);
  if (q.device().is_cuda()) {
    ATTN_CHECK(kernels::attention_cuda_supports_head_dim(q.size(3)), kOp, ": head dim ",
               q.size(3), " is not supported on CUDA (supported head dims: 32, 64, 128); q has shape ",
               q.shape());
  }
}

AttentionResult attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const AttentionOptions& opt) {
  check_attention_args(q, k, v, opt);
  check_key_length_values(opt.key_lengths, k.size(2), k);
  AttentionResult r;
  r.out = Tensor::empty(q.shape(), q.dtype(), q.device());
  r.lse = Tensor::empty({q.size(0), q.size(1), q.size(2)}, lse_dtype(q.dtype()), q.device());
  const kernels::AttentionArgs a = make_args(q, k, opt);
  dispatch_float(
      kOp, q,
      [&](auto t) {
        using T = typename decltype(t)::type;
        using A = kernels::attention_acc_t<T>;
        kernels::attention_forward_cpu<T>(a, q.data<T>(), k.data<T>(), v.data<T>(), r.out.data<T>(),
                                          r.lse.data<A>());
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        const cudaStream_t stream = cuda::stream(q.device().index);
        // One query row and no dropout (incremental decoding): the kernel that splits the keys
        // over warps; same out and lse, so a gradient can still follow.
        if (a.q_len == 1 && a.dropout_p == 0.0f) {
          kernels::attention_decode_cuda<T>(a, q.data<T>(), k.data<T>(), v.data<T>(),
                                            r.out.data<T>(), r.lse.data<float>(), stream);
        } else {
          kernels::attention_forward_cuda<T>(a, q.data<T>(), k.data<T>(), v.data<T>(),
                                             r.out.data<T>(), r.lse.data<float>(), stream);
        }
      });
  return r;
}

AttentionGrads attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const Tensor& out, const Tensor& lse,
                                  const AttentionOptions& opt) {
  check_attention_args(q, k, v, opt);
  check_same_shape(kOp, "grad_out", grad_out, "q", q);
  check_like(kOp, "q", q, "grad_out", grad_out);
  check_same_shape(kOp, "out", out, "q", q);
  check_like(kOp, "q", q, "out", out);
  check_dtype(kOp, "lse", lse, lse_dtype(q.dtype()));
  ATTN_CHECK(lse.shape() == Shape({q.size(0), q.size(1), q.size(2)}), kOp, ": lse has shape ",
             lse.shape(), " but q has shape ", q.shape());
  // Cheap (B values) and keeps a bad length from reading outside k and v.
  check_key_length_values(opt.key_lengths, k.size(2), k);
  AttentionGrads g;
  g.q = Tensor::empty_like(q);
  g.k = Tensor::empty_like(k);
  g.v = Tensor::empty_like(v);
  const kernels::AttentionArgs a = make_args(q, k, opt);
  dispatch_float(
      kOp, q,
      [&](auto t) {
        using T = typename decltype(t)::type;
        using A = kernels::attention_acc_t<T>;
        kernels::attention_backward_cpu<T>(a, q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(),
                                           lse.data<A>(), grad_out.data<T>(), g.q.data<T>(),
                                           g.k.data<T>(), g.v.data<T>());
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        // D_i = rowsum(dO_i * O_i); freed after the launch, which is safe on the op stream.
        Tensor workspace =
            Tensor::empty({kernels::attention_backward_cuda_workspace(a)}, kF32, q.device());
        kernels::attention_backward_cuda<T>(
            a, q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(), lse.data<float>(),
            grad_out.data<T>(), g.q.data<T>(), g.k.data<T>(), g.v.data<T>(),
            workspace.data<float>(), cuda::stream(q.device().index));
      });
  return g;
}

}  // namespace attn::ops
