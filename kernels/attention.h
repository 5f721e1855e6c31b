// Scaled dot-product attention for q [B, H, Tq, D], k and v [B, H, Tk, D] (contiguous).
//
// Visibility: key j is visible to query i iff j < key_lengths[b] (when given) and, if causal,
// j <= i + (Tk - Tq). Both are prefix conditions, so row i sees keys [0, n_visible(i)).
// Forward per query row: s_j = scale * q_i . k_j, P = softmax over the visible keys (stable:
// max subtracted), lse_i = log sum_j exp(s_j), o_i = sum_j drop_ij * P_ij * v_j, where
// drop_ij = keep / (1 - p) with keep = dropout_keep(seed, offset, ((b*H + h)*Tq + i)*Tk + j, p).
// A row with no visible key gets o_i = 0 and lse_i = -inf.
// Backward (as FlashAttention does, nothing of size Tq x Tk is stored): P is recomputed as
// exp(s - lse); with Pd = drop * P and dP = drop * (dO V^T), D_i = rowsum(dO_i * O_i)
// (= sum_j P_ij dP_ij), dS = P * (dP - D_i); dV = Pd^T dO, dQ = scale * dS K,
// dK = scale * dS^T Q. Rows with no visible key contribute nothing.
// Memory convention: dq, dk, dv are activation gradients and are written with = (every
// element, masked keys get zeros). Sums are kept in attention_acc_t<T> (float, or double for
// double inputs) as are the lse values.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include "kernels/types.h"

namespace attn::kernels {

template <class T>
using attention_acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

struct AttentionArgs {
  int64_t batch = 0, heads = 0, q_len = 0, k_len = 0, head_dim = 0;
  double scale = 1.0;                    // usually 1/sqrt(head_dim)
  const int32_t* key_lengths = nullptr;  // [batch], values in [0, k_len]; null: all keys
  bool causal = false;
  float dropout_p = 0.0f;  // 0: no dropout
  uint64_t seed = 0, offset = 0;
};

// Number of keys query row i of batch entry b may see (a prefix of the keys).
ATTN_HD inline int64_t attention_visible_keys(int64_t key_length, int64_t i, int64_t q_len,
                                              int64_t k_len, bool causal) {
  int64_t n = key_length;
  if (causal) {
    const int64_t last = i + (k_len - q_len);  // last visible key index
    n = n < last + 1 ? n : last + 1;
  }
  return n < 0 ? 0 : n;
}

template <class T>
void attention_forward_cpu(const AttentionArgs& a, const T* q, const T* k, const T* v, T* out,
                           attention_acc_t<T>* lse);

template <class T>
void attention_backward_cpu(const AttentionArgs& a, const T* q, const T* k, const T* v,
                            const T* out, const attention_acc_t<T>* lse, const T* grad_out,
                            T* grad_q, T* grad_k, T* grad_v);

// ---- CUDA (kernels/attention_cuda.cu): T in {float, bf16, f16}, fp32 accumulation, lse in
// float. Every pointer (key_lengths too) is device memory; work is ordered on `stream`.
// Same semantics and memory convention as the CPU functions above, including the dropout
// mask (bit-identical keep decisions). Head dims: attention_cuda_supports_head_dim; others
// throw naming the head dim and the supported ones.

inline bool attention_cuda_supports_head_dim(int64_t head_dim) {
  return head_dim == 32 || head_dim == 64 || head_dim == 128;
}

template <class T>
void attention_forward_cuda(const AttentionArgs& a, const T* q, const T* k, const T* v, T* out,
                            float* lse, cudaStream_t stream);

// Incremental decoding (q_len == 1, dropout_p == 0, enforced): the results of
// attention_forward_cuda (out and lse), with the keys of each (b, h) split over warps.
template <class T>
void attention_decode_cuda(const AttentionArgs& a, const T* q, const T* k, const T* v, T* out,
                           float* lse, cudaStream_t stream);

// Floats of device workspace attention_backward_cuda needs (D_i = rowsum(dO_i * O_i)).
inline int64_t attention_backward_cuda_workspace(const AttentionArgs& a) {
  return a.batch * a.heads * a.q_len;
}

template <class T>
void attention_backward_cuda(const AttentionArgs& a, const T* q, const T* k, const T* v,
                             const T* out, const float* lse, const T* grad_out, T* grad_q,
                             T* grad_k, T* grad_v, float* workspace, cudaStream_t stream);

// ---- cuDNN (kernels/attention_cudnn.cc; only in builds with ATTN_WITH_CUDNN) ----
// cuDNN's fused SDPA (frontend graph API, libcudnn.so.9 loaded with dlopen on first use) for
// T in {bf16, f16}, head dims 32/64/128 (as cuDNN documents it: d % 8 == 0, d <= 128). The
// same visibility as above, expressed as cuDNN masks: key_lengths -> padding mask
// (seq_len_kv = key_lengths, seq_len_q = q_len for every row), causal -> a top-left diagonal
// band with right bound k_len - q_len (so q_len <= k_len is required when causal), and
// dropout_p -> cuDNN's own Philox dropout from (seed, offset) (same probability and 1/(1-p)
// scaling as ours, but different keep bits). cuDNN's `Stats` output, the natural-log
// log-sum-exp of the scaled scores, is exactly `lse` above, so out/lse have the same meaning as
// attention_forward_cuda's. Not handled here (the caller checks them first): a row with no
// visible key (key length 0; causal with q_len > k_len), f32 inputs, q_len == 1 && k_len == 1.
// Memory convention as above: dq, dk, dv are written (dk and dv are cleared first when
// key_lengths are given, since cuDNN does not promise to write keys past seq_len_kv).
// Built graphs are cached per (device, dtype, direction, B, H, Tq, Tk, D, padding, causal,
// dropout_p); a graph cuDNN refuses is cached as refused.

// Whether libcudnn.so.9 is loaded (the first call tries to load it); if not, *why_not says
// why in one line. Never throws.
bool attention_cudnn_available(std::string* why_not);
// "9.19.0": the loaded cuDNN, and the frontend attn was compiled with ("1.32.0").
std::string attention_cudnn_version();
std::string attention_cudnn_frontend_version();

// Graphs in the cache (built or refused), for tests of the cache.
int64_t attention_cudnn_cached_graphs();

// Device int32 values the cuDNN graphs read, which the caller uploads once per call:
// [0..3]: seed and offset as two little-endian int64 (read when dropout_p > 0);
// [4..4+batch): q_len for every batch row (read when key_lengths are given).
inline int64_t attention_cudnn_aux_ints(const AttentionArgs& a) { return 4 + a.batch; }

// Builds (or finds in the cache) the graph for `a` on the current device and returns its
// workspace in bytes, or -1 when cuDNN cannot run it, with cuDNN's reason in *why_not.
// Throws (attn::Error) only when the library is not loaded or the arguments are malformed.
template <class T>
int64_t attention_forward_cudnn_workspace(const AttentionArgs& a, std::string* why_not);
template <class T>
int64_t attention_backward_cudnn_workspace(const AttentionArgs& a, std::string* why_not);

// Run a graph that *_workspace accepted; `workspace` has at least that many bytes (may be
// null when it is 0), `aux` is attention_cudnn_aux_ints(a) device ints as described above.
template <class T>
void attention_forward_cudnn(const AttentionArgs& a, const T* q, const T* k, const T* v, T* out,
                             float* lse, const int32_t* aux, void* workspace, cudaStream_t stream);
template <class T>
void attention_backward_cudnn(const AttentionArgs& a, const T* q, const T* k, const T* v,
                              const T* out, const float* lse, const T* grad_out, T* grad_q,
                              T* grad_k, T* grad_v, const int32_t* aux, void* workspace,
                              cudaStream_t stream);

}  // namespace attn::kernels
