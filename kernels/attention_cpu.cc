// CPU reference for kernels/attention.h, parallel over (batch, head) pairs. Per pair, the
// scores of all its query rows are materialised in per-thread scratch ([Tq, Tk], a few KiB at
// MT lengths) and every product is a small row-major GEMM (small_gemm) that keeps a 4-row by
// 2-vector block of its output in registers while it runs over the inner dimension; the score
// rows are padded to 32 columns (zero keys) so that no block ends in a scalar remainder. Keys
// that no query row of a pair sees (padding) are never read.
//
// The f32 kernels are built three times from one body: for the baseline x86-64 ISA (4-float
// vectors) and, on x86-64, with AVX2 + FMA (8-float vectors) and AVX-512F (16-float vectors),
// by GCC/Clang's target attribute on the function that holds the OpenMP loop, so that its
// outlined body is compiled for it; the per-head bodies are always-inline, so nothing compiled
// for a wider ISA is shared with the baseline build. The widest build the CPU runs is used;
// ATTN_CPU_ISA=baseline|avx2|avx512 caps it.
//
// The row-at-a-time form this replaced (a dot product per key, rank-1 updates of dK and dV per
// query row, about 100 instructions per key in SSE2) took a fifth of a demo-model training
// step; docs/PERFORMANCE.md. f32 softmax exponentials use exp_f32 (kernels/cpu_math.h), which
// vectorises where libm's expf cannot. f64 (the gradient checks) runs the same steps in scalar
// loops.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "base/error.h"
#include "kernels/attention.h"
#include "kernels/cpu_isa.h"
#include "kernels/cpu_math.h"
#include "kernels/dropout.h"


namespace attn::kernels {

namespace {

#define ATTN_ALWAYS_INLINE inline __attribute__((always_inline))

using v4f = float __attribute__((vector_size(16)));
using v8f = float __attribute__((vector_size(32)));
using v16f = float __attribute__((vector_size(64)));

// The vector type of a build, or Scalar for f64.
struct Scalar {};

// By reference, never by value: a 32-byte vector passed by value would take the AVX calling
// convention in the baseline build (GCC's -Wpsabi); these are always inlined anyway.
template <class V>
ATTN_ALWAYS_INLINE void loadv(V& v, const float* p) {
  __builtin_memcpy(&v, p, sizeof(v));
}
template <class V>
ATTN_ALWAYS_INLINE void storev(float* p, const V& v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// c[i, j] = alpha * sum_kk a[i, kk] b[kk, j] for i < m, j < n (row-major, leading dimensions
// lda, ldb, ldc). Blocks of 4 rows x 2 vectors of c are accumulated in registers over kk.
template <class V, class A>
ATTN_ALWAYS_INLINE void small_gemm(int64_t m, int64_t n, int64_t k, A alpha, const A* a,
                                   int64_t lda, const A* b, int64_t ldb, A* c, int64_t ldc) {
  int64_t j0 = 0;
  if constexpr (!std::is_same_v<V, Scalar>) {
    constexpr int64_t W = sizeof(V) / sizeof(float);
    for (; j0 + 2 * W <= n; j0 += 2 * W) {
      int64_t i = 0;
      for (; i + 4 <= m; i += 4) {
        V c00{}, c01{}, c10{}, c11{}, c20{}, c21{}, c30{}, c31{};
        const A* a0 = a + i * lda;
        for (int64_t kk = 0; kk < k; ++kk) {
          V b0, b1;
          loadv(b0, b + kk * ldb + j0);
          loadv(b1, b + kk * ldb + j0 + W);
          const V x0 = V{} + a0[kk], x1 = V{} + a0[lda + kk], x2 = V{} + a0[2 * lda + kk],
                  x3 = V{} + a0[3 * lda + kk];
          c00 += x0 * b0;
          c01 += x0 * b1;
          c10 += x1 * b0;
          c11 += x1 * b1;
          c20 += x2 * b0;
          c21 += x2 * b1;
          c30 += x3 * b0;
          c31 += x3 * b1;
        }
        A* ci = c + i * ldc + j0;
        storev(ci, V(c00 * alpha));
        storev(ci + W, V(c01 * alpha));
        storev(ci + ldc, V(c10 * alpha));
        storev(ci + ldc + W, V(c11 * alpha));
        storev(ci + 2 * ldc, V(c20 * alpha));
        storev(ci + 2 * ldc + W, V(c21 * alpha));
        storev(ci + 3 * ldc, V(c30 * alpha));
        storev(ci + 3 * ldc + W, V(c31 * alpha));
      }
      for (; i < m; ++i) {
        V c0{}, c1{};
        for (int64_t kk = 0; kk < k; ++kk) {
          const V x = V{} + a[i * lda + kk];
          V b0, b1;
          loadv(b0, b + kk * ldb + j0);
          loadv(b1, b + kk * ldb + j0 + W);
          c0 += x * b0;
          c1 += x * b1;
        }
        storev(c + i * ldc + j0, V(c0 * alpha));
        storev(c + i * ldc + j0 + W, V(c1 * alpha));
      }
    }
  }
  if (j0 == n) return;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = j0; j < n; ++j) c[i * ldc + j] = 0;
    for (int64_t kk = 0; kk < k; ++kk) {
      const A x = a[i * lda + kk];
      const A* bk = b + kk * ldb;
      A* ci = c + i * ldc;
      for (int64_t j = j0; j < n; ++j) ci[j] += x * bk[j];
    }
    for (int64_t j = j0; j < n; ++j) c[i * ldc + j] *= alpha;
  }
}

ATTN_ALWAYS_INLINE int64_t key_length(const AttentionArgs& a, int64_t b) {
  return a.key_lengths ? a.key_lengths[b] : a.k_len;
}

// Score rows in scratch: Tk rounded up to 32 columns (a block of 2 vectors of 16 floats, or
// of 2 blocks of 2 vectors of 8).
ATTN_ALWAYS_INLINE int64_t padded(int64_t n) { return (n + 31) / 32 * 32; }

// xt[c * ldt + r] = x[r * cols + c] for r < rows, and zeros in columns [rows, pad) of xt.
template <class A, class T>
ATTN_ALWAYS_INLINE void transpose_pad(const T* x, int64_t rows, int64_t cols, int64_t pad, A* xt,
                                      int64_t ldt) {
  for (int64_t c = 0; c < cols; ++c) {
    A* row = xt + c * ldt;
    for (int64_t r = 0; r < rows; ++r) row[r] = static_cast<A>(x[r * cols + c]);
    for (int64_t r = rows; r < pad; ++r) row[r] = A(0);
  }
}

// Dropout factor of probability (r, j): 0 or 1 / (1 - p).
template <class A>
ATTN_ALWAYS_INLINE A dropout_factor(const AttentionArgs& a, int64_t r, int64_t j, A keep_scale) {
  const uint64_t idx = static_cast<uint64_t>(r * a.k_len + j);
  return dropout_keep(a.seed, a.offset, idx, a.dropout_p) ? keep_scale : A(0);
}

// Scratch of one thread, sized for the call.
template <class A>
struct Scratch {
  std::vector<A> kt, vt, s, dp, dst, pdt;
  Scratch(const AttentionArgs& a, bool backward) {
    const size_t tkp = static_cast<size_t>(padded(a.k_len)), tq = static_cast<size_t>(a.q_len);
    const size_t d = static_cast<size_t>(a.head_dim), tk = static_cast<size_t>(a.k_len);
    kt.resize(d * tkp);
    s.resize(tq * tkp);
    if (backward) {
      vt.resize(d * tkp);
      dp.resize(tq * tkp);
      dst.resize(tk * tq);
      pdt.resize(tk * tq);
    }
  }
};

// Forward of one (batch, head) pair bh.
template <class V, class T>
ATTN_ALWAYS_INLINE void forward_head(const AttentionArgs& a, const T* q, const T* k, const T* v,
                                     T* out, attention_acc_t<T>* lse, int64_t bh,
                                     Scratch<T>& w) {
  using A = T;
  const int64_t Tq = a.q_len, Tk = a.k_len, D = a.head_dim, Tkp = padded(Tk);
  const bool drop = a.dropout_p > 0.0f;
  const A keep_scale = static_cast<A>(1.0 / (1.0 - static_cast<double>(a.dropout_p)));
  const int64_t kl = key_length(a, bh / a.heads);
  const int64_t seen = attention_visible_keys(kl, Tq - 1, Tq, Tk, a.causal);
  const T* qh = q + bh * Tq * D;
  T* oh = out + bh * Tq * D;
  A* lh = lse + bh * Tq;
  A* s = w.s.data();
  const int64_t cols = padded(seen);
  transpose_pad(k + bh * Tk * D, seen, D, cols, w.kt.data(), Tkp);
  small_gemm<V>(Tq, cols, D, static_cast<A>(a.scale), qh, D, w.kt.data(), Tkp, s, Tkp);
  for (int64_t i = 0; i < Tq; ++i) {
    const int64_t n = attention_visible_keys(kl, i, Tq, Tk, a.causal);
    A* si = s + i * Tkp;
    std::fill(si + n, si + seen, A(0));
    if (n == 0) {
      lh[i] = -std::numeric_limits<A>::infinity();
      continue;
    }
    A m = -std::numeric_limits<A>::infinity();
    for (int64_t j = 0; j < n; ++j) m = std::max(m, si[j]);
    A sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; ++j) {
      si[j] = exp_t(si[j] - m);
      sum += si[j];
    }
    lh[i] = m + std::log(sum);
    const A inv = A(1) / sum;
    if (drop) {
      for (int64_t j = 0; j < n; ++j) si[j] *= inv * dropout_factor(a, bh * Tq + i, j, keep_scale);
    } else {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) si[j] *= inv;
    }
  }
  small_gemm<V>(Tq, D, seen, A(1), s, Tkp, v + bh * Tk * D, D, oh, D);  // O = P V
}

// Backward of one (batch, head) pair bh.
template <class V, class T>
ATTN_ALWAYS_INLINE void backward_head(const AttentionArgs& a, const T* q, const T* k, const T* v,
                                      const T* out, const attention_acc_t<T>* lse,
                                      const T* grad_out, T* grad_q, T* grad_k, T* grad_v,
                                      int64_t bh, Scratch<T>& w) {
  using A = T;
  const int64_t Tq = a.q_len, Tk = a.k_len, D = a.head_dim, Tkp = padded(Tk);
  const bool drop = a.dropout_p > 0.0f;
  const A keep_scale = static_cast<A>(1.0 / (1.0 - static_cast<double>(a.dropout_p)));
  const A scale = static_cast<A>(a.scale);
  const int64_t kl = key_length(a, bh / a.heads);
  const int64_t seen = attention_visible_keys(kl, Tq - 1, Tq, Tk, a.causal);
  const int64_t cols = padded(seen);
  const T* qh = q + bh * Tq * D;
  const T* kh = k + bh * Tk * D;
  const T* oh = out + bh * Tq * D;
  const T* doh = grad_out + bh * Tq * D;
  T* dkh = grad_k + bh * Tk * D;
  T* dvh = grad_v + bh * Tk * D;
  A* s = w.s.data();
  A* dp = w.dp.data();
  A* dst = w.dst.data();
  A* pdt = w.pdt.data();
  transpose_pad(kh, seen, D, cols, w.kt.data(), Tkp);
  transpose_pad(v + bh * Tk * D, seen, D, cols, w.vt.data(), Tkp);
  small_gemm<V>(Tq, cols, D, scale, qh, D, w.kt.data(), Tkp, s, Tkp);     // scores
  small_gemm<V>(Tq, cols, D, A(1), doh, D, w.vt.data(), Tkp, dp, Tkp);    // dO V^T
  // s becomes dS = P (f dP - D_i); dS^T and Pd^T = (f P)^T go to dst and pdt.
  for (int64_t i = 0; i < Tq; ++i) {
    const int64_t n = attention_visible_keys(kl, i, Tq, Tk, a.causal);
    A* si = s + i * Tkp;
    const A* dpi = dp + i * Tkp;
    A di = 0;  // D_i = dO_i . O_i
    for (int64_t d = 0; d < D; ++d) di += doh[i * D + d] * oh[i * D + d];
    const A l = lse[bh * Tq + i];
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) si[j] = exp_t(si[j] - l);
    for (int64_t j = 0; j < n; ++j) {
      const A f = drop ? dropout_factor(a, bh * Tq + i, j, keep_scale) : A(1);
      const A p = si[j];
      si[j] = p * (f * dpi[j] - di);
      dst[j * Tq + i] = si[j];
      pdt[j * Tq + i] = f * p;
    }
    for (int64_t j = n; j < seen; ++j) {
      si[j] = 0;
      dst[j * Tq + i] = 0;
      pdt[j * Tq + i] = 0;
    }
  }
  small_gemm<V>(Tq, D, seen, scale, s, Tkp, kh, D, grad_q + bh * Tq * D, D);  // dQ = scale dS K
  small_gemm<V>(seen, D, Tq, scale, dst, Tq, qh, D, dkh, D);                   // dK = scale dS^T Q
  small_gemm<V>(seen, D, Tq, A(1), pdt, Tq, doh, D, dvh, D);                   // dV = Pd^T dO
  std::fill(dkh + seen * D, dkh + Tk * D, T(0));
  std::fill(dvh + seen * D, dvh + Tk * D, T(0));
}

// The parallel loops over (batch, head) pairs, one per build; the same text in each.
#define ATTN_FORWARD_LOOP(V)                                                         \
  const int64_t heads = a.batch * a.heads;                                           \
  _Pragma("omp parallel if (heads * a.q_len * a.k_len * a.head_dim > (1 << 14))") {  \
    Scratch<T> w(a, false);                                                           \
    _Pragma("omp for schedule(static)") for (int64_t bh = 0; bh < heads; ++bh)        \
        forward_head<V, T>(a, q, k, v, out, lse, bh, w);                              \
  }
#define ATTN_BACKWARD_LOOP(V)                                                         \
  const int64_t heads = a.batch * a.heads;                                            \
  _Pragma("omp parallel if (heads * a.q_len * a.k_len * a.head_dim > (1 << 14))") {   \
    Scratch<T> w(a, true);                                                             \
    _Pragma("omp for schedule(static)") for (int64_t bh = 0; bh < heads; ++bh)         \
        backward_head<V, T>(a, q, k, v, out, lse, grad_out, grad_q, grad_k, grad_v, bh, w); \
  }

template <class T>
using BaselineVec = std::conditional_t<std::is_same_v<T, float>, v4f, Scalar>;

template <class T>
void forward_baseline(const AttentionArgs& a, const T* q, const T* k, const T* v, T* out,
                      attention_acc_t<T>* lse) {
  ATTN_FORWARD_LOOP(BaselineVec<T>)
}
template <class T>
void backward_baseline(const AttentionArgs& a, const T* q, const T* k, const T* v, const T* out,
                       const attention_acc_t<T>* lse, const T* grad_out, T* grad_q, T* grad_k,
                       T* grad_v) {
  ATTN_BACKWARD_LOOP(BaselineVec<T>)
}

#if ATTN_CPU_ISA_BUILDS
// The f32 forward and backward of one wider ISA: the loops above in functions compiled for it.
#define ATTN_ISA_KERNELS(suffix, isa, V)                                                          \
  __attribute__((target(isa))) void forward_##suffix(const AttentionArgs& a, const float* q,    \
                                                     const float* k, const float* v, float* out, \
                                                     float* lse) {                               \
    using T = float;                                                                             \
    ATTN_FORWARD_LOOP(V)                                                                         \
  }                                                                                              \
  __attribute__((target(isa))) void backward_##suffix(                                           \
      const AttentionArgs& a, const float* q, const float* k, const float* v, const float* out,  \
      const float* lse, const float* grad_out, float* grad_q, float* grad_k, float* grad_v) {    \
    using T = float;                                                                             \
    ATTN_BACKWARD_LOOP(V)                                                                        \
  }
ATTN_ISA_KERNELS(avx2, "avx2,fma", v8f)
ATTN_ISA_KERNELS(avx512, "avx512f", v16f)
#undef ATTN_ISA_KERNELS
#endif

}  // namespace

template <class T>
void attention_forward_cpu(const AttentionArgs& a, const T* q, const T* k, const T* v, T* out,
                           attention_acc_t<T>* lse) {
  static_assert(std::is_same_v<attention_acc_t<T>, T>, "the CPU kernels compute in their type");
#if ATTN_CPU_ISA_BUILDS
  if constexpr (std::is_same_v<T, float>) {
    if (cpu_isa() == CpuIsa::kAvx512) return forward_avx512(a, q, k, v, out, lse);
    if (cpu_isa() == CpuIsa::kAvx2) return forward_avx2(a, q, k, v, out, lse);
  }
#endif
  forward_baseline<T>(a, q, k, v, out, lse);
}

template <class T>
void attention_backward_cpu(const AttentionArgs& a, const T* q, const T* k, const T* v,
                            const T* out, const attention_acc_t<T>* lse, const T* grad_out,
                            T* grad_q, T* grad_k, T* grad_v) {
#if ATTN_CPU_ISA_BUILDS
  if constexpr (std::is_same_v<T, float>) {
    if (cpu_isa() == CpuIsa::kAvx512)
      return backward_avx512(a, q, k, v, out, lse, grad_out, grad_q, grad_k, grad_v);
    if (cpu_isa() == CpuIsa::kAvx2)
      return backward_avx2(a, q, k, v, out, lse, grad_out, grad_q, grad_k, grad_v);
  }
#endif
  backward_baseline<T>(a, q, k, v, out, lse, grad_out, grad_q, grad_k, grad_v);
}

template void attention_forward_cpu<float>(const AttentionArgs&, const float*, const float*,
                                           const float*, float*, float*);
template void attention_forward_cpu<double>(const AttentionArgs&, const double*, const double*,
                                            const double*, double*, double*);
template void attention_backward_cpu<float>(const AttentionArgs&, const float*, const float*,
                                            const float*, const float*, const float*, const float*,
                                            float*, float*, float*);
template void attention_backward_cpu<double>(const AttentionArgs&, const double*, const double*,
                                             const double*, const double*, const double*,
                                             const double*, double*, double*, double*);

}  // namespace attn::kernels
