// Scaled dot-product attention on tensors (no autograd); algorithm in kernels/attention.h.
// The forward returns the output and the per-row log-sum-exp; the backward recomputes the
// probabilities from q, k and lse (nothing of size Tq x Tk is kept between the two).
//
// Two backends on CUDA (the config key model.attention):
//   fused  attn's own kernels (kernels/attention_cuda.cu): every dtype, the reference.
//   cudnn  cuDNN's fused SDPA (kernels/attention_cudnn.cc), bf16/f16. A call cuDNN cannot do
//          runs on `fused` instead and says so once per reason on the log (spdlog warn):
//          f32 inputs, an empty batch/query/key range, one query row (incremental
//          decoding, which has its own fused kernel),
//          a query row with no visible key (a key length of 0, or causal with Tq > Tk), or a
//          graph cuDNN itself refuses (its message is logged). Asking for cudnn where it can
//          never run is an error instead: CPU tensors, a build without cuDNN, libcudnn.so.9
//          not loadable. Dropout draws cuDNN's own Philox bits, so its mask differs from
//          fused's for the same seed and offset (same keep probability and scaling).
#pragma once

#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace attn::ops {

enum class AttentionBackend { fused, cudnn };

const char* attention_backend_name(AttentionBackend b);
// "fused" or "cudnn"; anything else throws naming `key` (e.g. "model.attention") and the value.
AttentionBackend parse_attention_backend(const std::string& name, const std::string& key);
// Whether this build has the backend at all (cudnn: compiled with the cuDNN frontend).
bool attention_backend_built(AttentionBackend b);
// Whether the backend can run here: built, and for cudnn libcudnn.so.9 loads. Otherwise
// *why_not says why in words. Never throws.
bool attention_backend_available(AttentionBackend b, std::string* why_not = nullptr);
// "fused", or "cudnn (cuDNN 9.19.0, frontend 1.32.0)" with the loaded library's version.
std::string attention_backend_description(AttentionBackend b);
// Throws "<key> is cudnn but <why>" when attention_backend_available is false.
void require_attention_backend(AttentionBackend b, const std::string& key);

struct AttentionOptions {
  Tensor key_lengths;             // i32 [B] with values in [0, Tk], or undefined (all keys)
  bool causal = false;            // query i sees keys j <= i + (Tk - Tq)
  double dropout_p = 0.0;         // in [0, 1): probability of dropping an attention probability
  uint64_t seed = 0, offset = 0;  // Philox stream of the dropout mask
  AttentionBackend backend = AttentionBackend::fused;
};

struct AttentionResult {
  Tensor out;  // [B, H, Tq, D], q's dtype
  Tensor lse;  // [B, H, Tq], f64 for f64 inputs else f32; -inf for rows with no visible key
  // The backend that ran (cudnn asked for may have fallen back to fused): pass it to the
  // backward, which must use the same one (dropout masks differ between them).
  AttentionBackend backend = AttentionBackend::fused;
};

struct AttentionGrads {
  Tensor q, k, v;
};

// Shape, dtype and device checks of q [B, H, Tq, D], k and v [B, H, Tk, D], key_lengths and
// dropout_p (not the key length values, which may live on a device).
void check_attention_args(const Tensor& q, const Tensor& k, const Tensor& v,
                          const AttentionOptions& opt);

AttentionResult attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const AttentionOptions& opt);
// `out` and `lse` are the forward's results for the same inputs and options, with
// opt.backend = the forward result's `backend`.
AttentionGrads attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const Tensor& out, const Tensor& lse,
                                  const AttentionOptions& opt);

}  // namespace attn::ops
