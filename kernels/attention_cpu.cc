// CPU reference for kernels/attention.h. Loops with the head dimension innermost (rows
// of q, k, v, o are contiguous): the forward parallelises over query rows of all heads, the
// backward over (batch, head) pairs because dK and dV sum over the query rows of a head.
// f32 dot products go through 8 lanes (two f32x4 partial sums, added pairwise at the end): a
// single scalar accumulator made every score wait on the previous add, and the dot products
// were a fifth of a demo-model training step (docs/PERFORMANCE.md).
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/attention.h"
#include "kernels/cpu_math.h"
#include "kernels/dropout.h"

namespace attn::kernels {

namespace {

inline float dot_f32(const float* x, const float* y, int64_t n) {
  f32x4 s0{}, s1{};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) {
    s0 += load4(x + d) * load4(y + d);
    s1 += load4(x + d + 4) * load4(y + d + 4);
  }
  for (; d + 4 <= n; d += 4) s0 += load4(x + d) * load4(y + d);
  s0 += s1;
  float s = (s0[0] + s0[1]) + (s0[2] + s0[3]);
  for (; d < n; ++d) s += x[d] * y[d];
  return s;
}

template <class A, class T>
A dot(const T* x, const T* y, int64_t n) {
  if constexpr (std::is_same_v<T, float> && std::is_same_v<A, float>) {
    return dot_f32(x, y, n);
  } else {
    A s = 0;
    for (int64_t d = 0; d < n; ++d) s += static_cast<A>(x[d]) * static_cast<A>(y[d]);
    return s;
  }
}

int64_t key_length(const AttentionArgs& a, int64_t b) {
  return a.key_lengths ? a.key_lengths[b] : a.k_len;
}

}  // namespace

template <class T>
void attention_forward_cpu(const AttentionArgs& a, const T* q, const T* k, const T* v, T* out,
                           attention_acc_t<T>* lse) {
  using A = attention_acc_t<T>;
  const int64_t Tq = a.q_len, Tk = a.k_len, D = a.head_dim;
  const int64_t rows = a.batch * a.heads * Tq;
  const bool drop = a.dropout_p > 0.0f;
  const A keep_scale = static_cast<A>(1.0 / (1.0 - static_cast<double>(a.dropout_p)));
  const A scale = static_cast<A>(a.scale);
#pragma omp parallel if (rows * Tk * D > (1 << 14))
  {
    std::vector<A> w(static_cast<size_t>(Tk)), acc(static_cast<size_t>(D));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t bh = r / Tq, i = r % Tq, b = bh / a.heads;
      const int64_t n = attention_visible_keys(key_length(a, b), i, Tq, Tk, a.causal);
      const T* qi = q + r * D;
      const T* kh = k + bh * Tk * D;
      const T* vh = v + bh * Tk * D;
      T* oi = out + r * D;
      if (n == 0) {
        std::fill(oi, oi + D, T(0));
        lse[r] = -std::numeric_limits<A>::infinity();
        continue;
      }
      A m = -std::numeric_limits<A>::infinity();
      for (int64_t j = 0; j < n; ++j) {
        w[j] = scale * dot<A>(qi, kh + j * D, D);
        m = std::max(m, w[j]);
      }
      A sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        w[j] = std::exp(w[j] - m);
        sum += w[j];
      }
      lse[r] = m + std::log(sum);
      const A inv = A(1) / sum;
      std::fill(acc.begin(), acc.end(), A(0));
      for (int64_t j = 0; j < n; ++j) {
        A p = w[j] * inv;
        if (drop) {
          const uint64_t idx = static_cast<uint64_t>(r * Tk + j);
          if (!dropout_keep(a.seed, a.offset, idx, a.dropout_p)) continue;
          p *= keep_scale;
        }
        const T* vj = vh + j * D;
        for (int64_t d = 0; d < D; ++d) acc[d] += p * static_cast<A>(vj[d]);
      }
      for (int64_t d = 0; d < D; ++d) oi[d] = static_cast<T>(acc[d]);
    }
  }
}

template <class T>
void attention_backward_cpu(const AttentionArgs& a, const T* q, const T* k, const T* v,
                            const T* out, const attention_acc_t<T>* lse, const T* grad_out,
                            T* grad_q, T* grad_k, T* grad_v) {
  using A = attention_acc_t<T>;
  const int64_t Tq = a.q_len, Tk = a.k_len, D = a.head_dim;
  const int64_t heads = a.batch * a.heads;
  const bool drop = a.dropout_p > 0.0f;
  const A keep_scale = static_cast<A>(1.0 / (1.0 - static_cast<double>(a.dropout_p)));
  const A scale = static_cast<A>(a.scale);
#pragma omp parallel if (heads * Tq * Tk * D > (1 << 14))
  {
    std::vector<A> dk(static_cast<size_t>(Tk * D)), dv(static_cast<size_t>(Tk * D));
    std::vector<A> dq(static_cast<size_t>(D));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < heads; ++bh) {
      const int64_t b = bh / a.heads;
      const T* kh = k + bh * Tk * D;
      const T* vh = v + bh * Tk * D;
      std::fill(dk.begin(), dk.end(), A(0));
      std::fill(dv.begin(), dv.end(), A(0));
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t r = bh * Tq + i;
        const int64_t n = attention_visible_keys(key_length(a, b), i, Tq, Tk, a.causal);
        const T* qi = q + r * D;
        const T* doi = grad_out + r * D;
        std::fill(dq.begin(), dq.end(), A(0));
        const A di = n > 0 ? dot<A>(doi, out + r * D, D) : A(0);
        for (int64_t j = 0; j < n; ++j) {
          const T* kj = kh + j * D;
          const T* vj = vh + j * D;
          const A p = std::exp(scale * dot<A>(qi, kj, D) - lse[r]);
          A f = 1;  // dropout factor of this probability: 0 or 1/(1-p)
          if (drop) {
            const uint64_t idx = static_cast<uint64_t>(r * Tk + j);
            f = dropout_keep(a.seed, a.offset, idx, a.dropout_p) ? keep_scale : A(0);
          }
          const A dp = f == A(0) ? A(0) : f * dot<A>(doi, vj, D);
          const A ds = p * (dp - di);
          const A pd = f * p;
          A* dkj = dk.data() + j * D;
          A* dvj = dv.data() + j * D;
          for (int64_t d = 0; d < D; ++d) {
            dq[d] += ds * static_cast<A>(kj[d]);
            dkj[d] += ds * static_cast<A>(qi[d]);
            dvj[d] += pd * static_cast<A>(doi[d]);
          }
        }
        T* dqi = grad_q + r * D;
        for (int64_t d = 0; d < D; ++d) dqi[d] = static_cast<T>(scale * dq[d]);
      }
      T* dkh = grad_k + bh * Tk * D;
      T* dvh = grad_v + bh * Tk * D;
      for (int64_t e = 0; e < Tk * D; ++e) {
        dkh[e] = static_cast<T>(scale * dk[e]);
        dvh[e] = static_cast<T>(dv[e]);
      }
    }
  }
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
