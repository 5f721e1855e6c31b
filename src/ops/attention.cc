#include "ops/attention.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>

#include "core/cuda_backend.h"
#include "core/device.h"
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

// The key lengths on the host (empty when not given), each checked against [0, k_len].
std::vector<int32_t> check_key_length_values(const Tensor& key_lengths, int64_t k_len,
                                             const Tensor& k) {
  if (!key_lengths.defined()) return {};
  std::vector<int32_t> lens = key_lengths.to_int_vector();
  for (size_t b = 0; b < lens.size(); ++b) {
    ATTN_CHECK(lens[b] >= 0 && lens[b] <= k_len, kOp, ": key_lengths[", b, "] = ", lens[b],
               " is outside [0, ", k_len, "] (k has shape ", k.shape(), ")");
  }
  return lens;
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

// ---- the cudnn backend's routing (the kernels are in kernels/attention_cudnn.cc) ----

// Logs "runs on fused" once per distinct reason: a fallback is a fact about the run, not
// about every call.
void note_fallback(const std::string& reason) {
  static std::mutex mu;
  static std::set<std::string> seen;
  std::lock_guard<std::mutex> lock(mu);
  if (seen.insert(reason).second)
    spdlog::warn("attention: the cudnn backend cannot run {}; those calls use the fused kernel",
                 reason);
}

// Refusals that hold wherever the call runs (an error, not a fallback).
void require_cudnn_call(const Tensor& q) {
  ATTN_CHECK(q.device().is_cuda(), kOp, ": the cudnn backend needs CUDA tensors, q is on ",
             q.device(), " (use model.attention: fused)");
  require_attention_backend(AttentionBackend::cudnn, std::string(kOp) + ": backend");
}

// Why cuDNN cannot take these inputs, judged before any graph is built ("" if it can).
std::string cudnn_data_refusal(const Tensor& q, const Tensor& k, const AttentionOptions& opt,
                               const std::vector<int32_t>& lens) {
  if (q.dtype() != kBF16 && q.dtype() != kF16)
    return std::string(dtype_name(q.dtype())) + " inputs (cuDNN attention is bf16/f16 only)";
  if (q.numel() == 0 || k.numel() == 0) return "an empty batch, query or key range";
  if (q.size(2) == 1) return "one query row (incremental decoding has its own fused kernel)";
  if (std::find(lens.begin(), lens.end(), 0) != lens.end())
    return "a key length of 0 (a query row with no visible key)";
  if (opt.causal && q.size(2) > k.size(2))
    return "causal attention with more queries than keys (rows with no visible key)";
  return "";
}

#ifdef ATTN_WITH_CUDNN
// Calls f(TypeTag<T>) for T = bf16 or f16 (cudnn_data_refusal has ruled out the rest).
template <class F>
void dispatch_half(const Tensor& q, F&& f) {
  if (q.dtype() == kBF16) {
    f(TypeTag<bf16>{});
  } else {
    ATTN_CHECK(q.dtype() == kF16, kOp, ": cudnn backend got ", q.dtype(), " tensors");
    f(TypeTag<f16>{});
  }
}

// The device ints the cuDNN graphs read (kernels/attention.h: attention_cudnn_aux_ints).
Tensor cudnn_aux(const kernels::AttentionArgs& a, Device device) {
  std::vector<int32_t> v(static_cast<size_t>(kernels::attention_cudnn_aux_ints(a)), 0);
  const int64_t seed = static_cast<int64_t>(a.seed), offset = static_cast<int64_t>(a.offset);
  std::memcpy(&v[0], &seed, sizeof(seed));
  std::memcpy(&v[2], &offset, sizeof(offset));
  std::fill(v.begin() + 4, v.end(), static_cast<int32_t>(a.q_len));
  return Tensor::from_ints(v, {static_cast<int64_t>(v.size())}, device);
}

// Workspace bytes as a tensor from attn's allocator (freed after the call: stream-ordered).
Tensor cudnn_workspace(int64_t bytes, Device device) {
  return Tensor::empty({std::max<int64_t>((bytes + 3) / 4, 1)}, kF32, device);
}
#endif

// The cudnn forward, or nothing when it falls back to fused (logged).
std::optional<AttentionResult> cudnn_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                             const AttentionOptions& opt,
                                             const std::vector<int32_t>& lens) {
  require_cudnn_call(q);
  if (const std::string why = cudnn_data_refusal(q, k, opt, lens); !why.empty()) {
    note_fallback(why);
    return std::nullopt;
  }
#ifdef ATTN_WITH_CUDNN
  const kernels::AttentionArgs a = make_args(q, k, opt);
  const cudaStream_t stream = cuda::stream(q.device().index);  // also the current device
  std::optional<AttentionResult> result;
  dispatch_half(q, [&](auto t) {
    using T = typename decltype(t)::type;
    std::string why;
    const int64_t ws = kernels::attention_forward_cudnn_workspace<T>(a, &why);
    if (ws < 0) return note_fallback(why);
    // With dropout a backward follows (training), and it must regenerate cuDNN's mask: make
    // sure cuDNN can run it before committing to cuDNN's forward.
    if (a.dropout_p > 0.0f && kernels::attention_backward_cudnn_workspace<T>(a, &why) < 0)
      return note_fallback(why);
    AttentionResult r;
    r.out = Tensor::empty(q.shape(), q.dtype(), q.device());
    r.lse = Tensor::empty({q.size(0), q.size(1), q.size(2)}, kF32, q.device());
    r.backend = AttentionBackend::cudnn;
    const Tensor aux = cudnn_aux(a, q.device());
    const Tensor workspace = cudnn_workspace(ws, q.device());
    kernels::attention_forward_cudnn<T>(a, q.data<T>(), k.data<T>(), v.data<T>(), r.out.data<T>(),
                                        r.lse.data<float>(), aux.data<int32_t>(),
                                        workspace.raw_data(), stream);
    result = std::move(r);
  });
  return result;
#else
  return std::nullopt;  // unreachable: require_cudnn_call threw
#endif
}

// The cudnn backward, or nothing when fused can do it instead (logged). Fused's backward
// reproduces cuDNN's only without dropout (the masks differ), so a dropout backward that
// cuDNN refuses is an error.
std::optional<AttentionGrads> cudnn_backward(const Tensor& grad_out, const Tensor& q,
                                             const Tensor& k, const Tensor& v, const Tensor& out,
                                             const Tensor& lse, const AttentionOptions& opt,
                                             const std::vector<int32_t>& lens) {
  require_cudnn_call(q);
  if (const std::string why = cudnn_data_refusal(q, k, opt, lens); !why.empty()) {
    ATTN_CHECK(opt.dropout_p == 0.0, kOp, ": backend cudnn cannot run the backward (", why,
               ") and fused's would draw a different dropout mask");
    note_fallback(why);
    return std::nullopt;
  }
#ifdef ATTN_WITH_CUDNN
  const kernels::AttentionArgs a = make_args(q, k, opt);
  const cudaStream_t stream = cuda::stream(q.device().index);
  std::optional<AttentionGrads> result;
  dispatch_half(q, [&](auto t) {
    using T = typename decltype(t)::type;
    std::string why;
    const int64_t ws = kernels::attention_backward_cudnn_workspace<T>(a, &why);
    if (ws < 0) {
      ATTN_CHECK(a.dropout_p == 0.0f, kOp, ": cuDNN cannot run the backward of its dropout "
                 "forward (", why, ")");
      return note_fallback(why);
    }
    AttentionGrads g;
    g.q = Tensor::empty_like(q);
    g.k = Tensor::empty_like(k);
    g.v = Tensor::empty_like(v);
    const Tensor aux = cudnn_aux(a, q.device());
    const Tensor workspace = cudnn_workspace(ws, q.device());
    kernels::attention_backward_cudnn<T>(a, q.data<T>(), k.data<T>(), v.data<T>(), out.data<T>(),
                                         lse.data<float>(), grad_out.data<T>(), g.q.data<T>(),
                                         g.k.data<T>(), g.v.data<T>(), aux.data<int32_t>(),
                                         workspace.raw_data(), stream);
    result = std::move(g);
  });
  return result;
#else
  return std::nullopt;
#endif
}

}  // namespace

const char* attention_backend_name(AttentionBackend b) {
  return b == AttentionBackend::cudnn ? "cudnn" : "fused";
}

AttentionBackend parse_attention_backend(const std::string& name, const std::string& key) {
  if (name == "fused") return AttentionBackend::fused;
  if (name == "cudnn") return AttentionBackend::cudnn;
  ATTN_FAIL(key, " must be fused or cudnn, got '", name, "'");
}

bool attention_backend_built(AttentionBackend b) {
#ifdef ATTN_WITH_CUDNN
  return true;
#else
  return b == AttentionBackend::fused;
#endif
}

bool attention_backend_available(AttentionBackend b, std::string* why_not) {
  if (b == AttentionBackend::fused) return true;
#ifdef ATTN_WITH_CUDNN
  return kernels::attention_cudnn_available(why_not);
#else
  if (why_not) {
    *why_not = cuda_built() ? "attn was built without cuDNN (CMake did not find the cuDNN "
                              "frontend headers; scripts/setup.sh installs them)"
                            : "attn was built without CUDA";
  }
  return false;
#endif
}

std::string attention_backend_description(AttentionBackend b) {
#ifdef ATTN_WITH_CUDNN
  if (b == AttentionBackend::cudnn && kernels::attention_cudnn_available(nullptr))
    return "cudnn (cuDNN " + kernels::attention_cudnn_version() + ", frontend " +
           kernels::attention_cudnn_frontend_version() + ")";
#endif
  return attention_backend_name(b);
}

void require_attention_backend(AttentionBackend b, const std::string& key) {
  std::string why;
  ATTN_CHECK(attention_backend_available(b, &why), key, " is ", attention_backend_name(b),
             " but ", why);
}

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
  const std::vector<int32_t> lens = check_key_length_values(opt.key_lengths, k.size(2), k);
  if (opt.backend == AttentionBackend::cudnn) {
    if (std::optional<AttentionResult> r = cudnn_forward(q, k, v, opt, lens)) return *r;
  }
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
  const std::vector<int32_t> lens = check_key_length_values(opt.key_lengths, k.size(2), k);
  if (opt.backend == AttentionBackend::cudnn) {
    if (std::optional<AttentionGrads> g = cudnn_backward(grad_out, q, k, v, out, lse, opt, lens))
      return *g;
  }
  AttentionGrads g;
  g.q = Tensor::empty_like(q);
  g.k = Tensor::empty_like(k);
  g.v = Tensor::empty_like(v);
  const kernels::AttentionArgs a = make_args(q, k, opt);
  dispatch_float(
      "attention_backward", q,
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
