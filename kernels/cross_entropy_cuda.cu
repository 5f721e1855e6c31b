// Label-smoothed cross-entropy fused with log-softmax on the GPU; the semantics of
// kernels/cross_entropy.h and its CPU reference, fp32 arithmetic, totals in double.
//
// Forward, one pass over each counted row (ignored and bad rows are not read): every thread
// keeps an online (max m, sum of exp(x - m)), the sum of the logits and the first maximum
// (value, index) of its columns; the row group combines them (shuffles, then shared memory
// in warp order for block groups) and its first thread writes
//   lse  = m + log(s)                     (kept for the backward, float)
//   nll  = (m - x[y]) + log(s)            (no cancellation when p(y) is close to 1)
//   loss = (1 - eps) * nll + eps * ((m - sum(x) / V) + log(s))   (the eps term skipped at 0)
// and the row's state (ignored / wrong / correct / bad target) into fp32 scratch. The
// probabilities are never written. cross_entropy_totals_kernel (one block) then sums loss and
// nll in double and counts tokens and correct rows in a fixed order (per-thread strided sums,
// then a fixed shuffle tree), writes the four outputs (loss and nll as float whatever T: a
// 16-bit sum over a batch would lose its digits or overflow f16) and the first bad row:
// deterministic, no atomics.
// Backward, one pass: dlogits = g * (exp(x - lse) - eps / V - (1 - eps) * [j == y]) written
// with = (an activation gradient), zeros on ignored and bad rows.
// Geometry: a warp per row (8 rows per 256-thread block) for V <= 1024, a 256-thread block
// per row above; grids stride over rows. Rows are read with 16-byte loads: a few scalar
// elements up to the first 16-byte boundary of the row, vectors, then the scalar tail, so
// any V (odd included) and any row offset is vectorised. The backward vectorises when logits
// and dlogits share their offset modulo 16 bytes, else runs scalar.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <type_traits>

#include "base/cuda_check.h"
#include "base/error.h"
#include "kernels/cross_entropy.h"
#include "kernels/cuda_common.cuh"

namespace attn::kernels {
namespace {

using namespace cuda_common;

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int kWarpMaxVocab = 1024;
constexpr int kTotalsThreads = 1024;
constexpr int64_t kMaxGrid = 1 << 20;

enum RowState : int32_t { kIgnored = 0, kWrong = 1, kCorrect = 2, kBadTarget = 3 };

// ---- row access ---------------------------------------------------------------------------

// The chunks of row[0, n) that this thread (rank of size) owns: `head` scalar elements up to
// the row's first 16-byte boundary, aligned vectors of VEC, then the scalar tail (VEC == 1:
// every element is body).
template <int VEC, class T>
struct RowSplit {
  int head, nvec;
  __device__ __forceinline__ RowSplit(const T* row, int n) {
    if constexpr (VEC == 1) {
      head = 0;
      nvec = n;
    } else {
      head = min(
          n, static_cast<int>(((16 - (reinterpret_cast<uintptr_t>(row) & 15)) & 15) / sizeof(T)));
      nvec = (n - head) / VEC;
    }
  }
};

template <class V>
constexpr int kLen = std::extent_v<std::remove_reference_t<V>>;

// Calls f(v, j) with v = row[j .. j + N) as floats (float[N], N == 1 or VEC) for every chunk
// this thread owns. Body vectors are loaded kUnroll at a time before any is used, so each
// thread keeps several loads in flight.
template <int VEC, class T, class F>
__device__ __forceinline__ void for_row_values(const T* __restrict__ row, int n, int rank, int size,
                                               F&& f) {
  constexpr int kUnroll = 4;
  const RowSplit<VEC, T> sp(row, n);
  for (int j = rank; j < sp.head; j += size) {
    float v[1];
    load_vec<T, 1>(row + j, v);
    f(v, j);
  }
  const T* body = row + sp.head;
  int q = rank;
  for (; q + (kUnroll - 1) * size < sp.nvec; q += kUnroll * size) {
    float v[kUnroll][VEC];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) load_vec<T, VEC>(body + (q + u * size) * VEC, v[u]);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) f(v[u], sp.head + (q + u * size) * VEC);
  }
  for (; q < sp.nvec; q += size) {
    float v[VEC];
    load_vec<T, VEC>(body + q * VEC, v);
    f(v, sp.head + q * VEC);
  }
  for (int j = sp.head + sp.nvec * VEC + rank; j < n; j += size) {
    float v[1];
    load_vec<T, 1>(row + j, v);
    f(v, j);
  }
}

// Writes zeros to the chunks of row[0, n) this thread owns (same split as for_row_values).
template <int VEC, class T>
__device__ __forceinline__ void zero_row(T* __restrict__ row, int n, int rank, int size) {
  const RowSplit<VEC, T> sp(row, n);
  const float z1[1] = {0.f};
  float zv[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) zv[i] = 0.f;
  for (int j = rank; j < sp.head; j += size) store_vec<T, 1>(row + j, z1);
  for (int q = rank; q < sp.nvec; q += size) store_vec<T, VEC>(row + sp.head + q * VEC, zv);
  for (int j = sp.head + sp.nvec * VEC + rank; j < n; j += size) store_vec<T, 1>(row + j, z1);
}

// ---- forward ------------------------------------------------------------------------------

// One thread's (or a group's) summary of some columns of a row.
struct RowStats {
  float m;   // maximum (-inf when empty)
  float s;   // sum of exp(x - m) (0 when empty)
  float sx;  // sum of x
  float bv;  // first maximum: value
  int bi;    // and index (INT_MAX when empty)
};

__device__ __forceinline__ RowStats empty_stats() {
  return {-INFINITY, 0.f, 0.f, -INFINITY, INT_MAX};
}

// (value, index) order of the argmax: larger value, then smaller index (torch.argmax).
__device__ __forceinline__ bool before(float v, int i, float bv, int bi) {
  return v > bv || (v == bv && i < bi);
}

template <int N>
__device__ __forceinline__ void accumulate(RowStats& st, const float (&v)[N], int c0) {
  float lm = v[0];
#pragma unroll
  for (int i = 0; i < N; ++i) {
    lm = fmaxf(lm, v[i]);
    st.sx += v[i];
    if (before(v[i], c0 + i, st.bv, st.bi)) {
      st.bv = v[i];
      st.bi = c0 + i;
    }
  }
  const float nm = fmaxf(st.m, lm);
  if (nm != -INFINITY) {  // while every value is -inf, s stays 0 (and -inf - -inf is NaN)
    float acc = 0.f;
#pragma unroll
    for (int i = 0; i < N; ++i) acc += exp2f((v[i] - nm) * kLog2e);
    st.s = (nm > st.m ? st.s * exp2f((st.m - nm) * kLog2e) : st.s) + acc;
    st.m = nm;
  }
}

// Symmetric in a and b (so shuffle butterflies leave the same value in every lane).
__device__ __forceinline__ RowStats combine(const RowStats& a, const RowStats& b) {
  RowStats r;
  r.m = fmaxf(a.m, b.m);
  const float sa = a.m == -INFINITY ? 0.f : a.s * exp2f((a.m - r.m) * kLog2e);
  const float sb = b.m == -INFINITY ? 0.f : b.s * exp2f((b.m - r.m) * kLog2e);
  r.s = sa + sb;
  r.sx = a.sx + b.sx;
  const bool take_b = before(b.bv, b.bi, a.bv, a.bi);
  r.bv = take_b ? b.bv : a.bv;
  r.bi = take_b ? b.bi : a.bi;
  return r;
}

__device__ __forceinline__ RowStats warp_combine(RowStats st) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    RowStats other;
    other.m = __shfl_xor_sync(0xffffffffu, st.m, o);
    other.s = __shfl_xor_sync(0xffffffffu, st.s, o);
    other.sx = __shfl_xor_sync(0xffffffffu, st.sx, o);
    other.bv = __shfl_xor_sync(0xffffffffu, st.bv, o);
    other.bi = __shfl_xor_sync(0xffffffffu, st.bi, o);
    st = combine(st, other);
  }
  return st;
}

// Per-row results go to row_loss/row_nll/row_state (scratch) and lse (output).
template <class T, int VEC, bool kWarpRow>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_forward_kernel(const T* __restrict__ logits, const int32_t* __restrict__ targets,
                                 int64_t rows, int vocab, float eps, int32_t ignore_index,
                                 float* __restrict__ lse, float* __restrict__ row_loss,
                                 float* __restrict__ row_nll, int32_t* __restrict__ row_state) {
  __shared__ RowStats part[kWarpsPerBlock];
  const RowGroup grp = row_group<kWarpRow>();
  for (int64_t row = grp.first; row < rows; row += grp.stride) {
    const int32_t t = targets[row];
    // The same t in the whole group, so the branch (and the barriers below) are uniform.
    if (t == ignore_index || t < 0 || t >= vocab) {
      if (grp.rank == 0) {
        lse[row] = 0.f;
        row_loss[row] = 0.f;
        row_nll[row] = 0.f;
        row_state[row] = t == ignore_index ? kIgnored : kBadTarget;
      }
      continue;
    }
    const T* xr = logits + row * vocab;
    RowStats st = empty_stats();
    for_row_values<VEC>(xr, vocab, grp.rank, grp.size,
                        [&](const auto& v, int j) { accumulate(st, v, j); });
    st = warp_combine(st);
    if constexpr (!kWarpRow) {
      const int warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
      if ((threadIdx.x & 31) == 0) part[warp] = st;
      __syncthreads();
      if (threadIdx.x == 0) {
        st = part[0];
        for (int w = 1; w < warps; ++w) st = combine(st, part[w]);
      }
      __syncthreads();  // part is rewritten for the next row
    }
    if (grp.rank == 0) {
      const float log_s = logf(st.s);
      const float nll = (st.m - to_f(xr[t])) + log_s;
      float loss = (1.f - eps) * nll;
      // Skipped at eps == 0 so that a -inf logit does not turn 0 * inf into NaN.
      if (eps != 0.f) loss += eps * ((st.m - st.sx / static_cast<float>(vocab)) + log_s);
      lse[row] = st.m + log_s;
      row_loss[row] = loss;
      row_nll[row] = nll;
      row_state[row] = st.bi == t ? kCorrect : kWrong;
    }
  }
}

__device__ __forceinline__ long long warp_min_down(long long v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_down_sync(0xffffffffu, v, o));
  return v;
}

// One block of kTotalsThreads: fixed-order sums over the rows (thread k takes rows k,
// k + 1024, ...; then a fixed shuffle tree and the warps in order).
__global__ void __launch_bounds__(kTotalsThreads) cross_entropy_totals_kernel(
    const float* __restrict__ row_loss, const float* __restrict__ row_nll,
    const int32_t* __restrict__ row_state, const int32_t* __restrict__ targets, int64_t rows,
    float* __restrict__ loss, float* __restrict__ nll, int32_t* __restrict__ ntokens,
    int32_t* __restrict__ ncorrect, int64_t* __restrict__ status) {
  __shared__ double s_loss[32], s_nll[32];
  __shared__ long long s_tok[32], s_cor[32], s_bad[32];
  double l = 0.0, n = 0.0;
  long long tok = 0, cor = 0, bad = LLONG_MAX;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    const int32_t state = row_state[r];
    if (state == kBadTarget) {
      bad = min(bad, static_cast<long long>(r));
    } else if (state != kIgnored) {
      ++tok;
      cor += state == kCorrect;
      l += static_cast<double>(row_loss[r]);
      n += static_cast<double>(row_nll[r]);
    }
  }
  l = warp_sum_down(l);
  n = warp_sum_down(n);
  tok = warp_sum_down(tok);
  cor = warp_sum_down(cor);
  bad = warp_min_down(bad);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  if (lane == 0) {
    s_loss[warp] = l;
    s_nll[warp] = n;
    s_tok[warp] = tok;
    s_cor[warp] = cor;
    s_bad[warp] = bad;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < warps; ++w) {
      l += s_loss[w];
      n += s_nll[w];
      tok += s_tok[w];
      cor += s_cor[w];
      bad = min(bad, s_bad[w]);
    }
    // As the CPU op for f32 logits: the double sums rounded once to float.
    *loss = static_cast<float>(l);
    *nll = static_cast<float>(n);
    *ntokens = static_cast<int32_t>(tok);
    *ncorrect = static_cast<int32_t>(cor);
    status[0] = bad == LLONG_MAX ? -1 : bad;
    status[1] = bad == LLONG_MAX ? 0 : targets[bad];
  }
}

// ---- backward -----------------------------------------------------------------------------

template <class T, int VEC, bool kWarpRow>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_backward_kernel(const float* __restrict__ grad_loss, const T* __restrict__ logits,
                                  const int32_t* __restrict__ targets,
                                  const float* __restrict__ lse, int64_t rows, int vocab, float eps,
                                  int32_t ignore_index, T* __restrict__ dlogits) {
  const RowGroup grp = row_group<kWarpRow>();
  const float g = *grad_loss;
  const float uniform = eps / static_cast<float>(vocab);
  const float on_target = 1.f - eps;
  for (int64_t row = grp.first; row < rows; row += grp.stride) {
    const int32_t t = targets[row];
    const T* xr = logits + row * vocab;
    T* dr = dlogits + row * vocab;
    if (t == ignore_index || t < 0 || t >= vocab) {
      zero_row<VEC>(dr, vocab, grp.rank, grp.size);
      continue;
    }
    const float l = lse[row];
    // dr has xr's offset modulo 16 bytes (checked by the launcher), so the chunks line up.
    for_row_values<VEC>(xr, vocab, grp.rank, grp.size, [&](const auto& v, int j) {
      constexpr int N = kLen<decltype(v)>;
      float out[N];
#pragma unroll
      for (int i = 0; i < N; ++i)
        out[i] = g * (exp2f((v[i] - l) * kLog2e) - uniform - (j + i == t ? on_target : 0.f));
      store_vec<T, N>(dr + j, out);
    });
  }
}

// ---- launch helpers -----------------------------------------------------------------------

// Calls f(Bool<kWarpRow>{}, grid) with the geometry for V (rows > 0).
template <class F>
void with_geometry(int64_t rows, int64_t vocab, F&& f) {
  if (vocab <= kWarpMaxVocab) {
    f(Bool<true>{}, grid_blocks(rows, kWarpsPerBlock, kMaxGrid));
  } else {
    f(Bool<false>{}, grid_blocks(rows, 1, kMaxGrid));
  }
}

void check_sizes(const char* op, int64_t rows, int64_t vocab) {
  ATTN_CHECK(rows >= 0 && vocab > 0 && vocab <= INT32_MAX, op, ": unsupported size [", rows, ", ",
             vocab, "]");
}

}  // namespace

int64_t cross_entropy_forward_cuda_workspace(int64_t rows) {
  return 3 * std::max<int64_t>(rows, 0);
}

template <class T>
void cross_entropy_forward_cuda(const T* logits, const int32_t* targets, int64_t rows,
                                int64_t vocab, double label_smoothing, int32_t ignore_index,
                                float* lse, float* loss, float* nll, int32_t* ntokens,
                                int32_t* ncorrect, int64_t* status, float* workspace,
                                cudaStream_t stream) {
  check_sizes("cross_entropy_forward_cuda", rows, vocab);
  float* row_loss = workspace;
  float* row_nll = workspace + rows;
  int32_t* row_state = reinterpret_cast<int32_t*>(workspace + 2 * rows);
  const float eps = static_cast<float>(label_smoothing);
  if (rows > 0) {
    constexpr int kVec = 16 / sizeof(T);
    with_geometry(rows, vocab, [&](auto warp_row, int grid) {
      constexpr bool W = decltype(warp_row)::value;
      cross_entropy_forward_kernel<T, kVec, W>
          <<<grid, kThreads, 0, stream>>>(logits, targets, rows, static_cast<int>(vocab), eps,
                                          ignore_index, lse, row_loss, row_nll, row_state);
      ATTN_CUDA_LAUNCH_CHECK();
    });
  }
  // Also for rows == 0: the outputs are zeros and status says no bad row.
  cross_entropy_totals_kernel<<<1, kTotalsThreads, 0, stream>>>(
      row_loss, row_nll, row_state, targets, rows, loss, nll, ntokens, ncorrect, status);
  ATTN_CUDA_LAUNCH_CHECK();
}

template <class T>
void cross_entropy_backward_cuda(const float* grad_loss, const T* logits, const int32_t* targets,
                                 const float* lse, int64_t rows, int64_t vocab,
                                 double label_smoothing, int32_t ignore_index, T* dlogits,
                                 cudaStream_t stream) {
  check_sizes("cross_entropy_backward_cuda", rows, vocab);
  if (rows == 0) return;
  const float eps = static_cast<float>(label_smoothing);
  // Row r of both tensors starts at the same offset from a 16-byte boundary only if the
  // bases do.
  const bool same_phase =
      (reinterpret_cast<uintptr_t>(logits) - reinterpret_cast<uintptr_t>(dlogits)) % 16 == 0;
  auto launch = [&](auto vec) {
    constexpr int V = decltype(vec)::value;
    with_geometry(rows, vocab, [&](auto warp_row, int grid) {
      constexpr bool W = decltype(warp_row)::value;
      cross_entropy_backward_kernel<T, V, W>
          <<<grid, kThreads, 0, stream>>>(grad_loss, logits, targets, lse, rows,
                                          static_cast<int>(vocab), eps, ignore_index, dlogits);
      ATTN_CUDA_LAUNCH_CHECK();
    });
  };
  if (same_phase) {
    launch(Int<16 / sizeof(T)>{});
  } else {
    launch(Int<1>{});
  }
}

#define ATTN_CROSS_ENTROPY_CUDA_INSTANTIATE(T)                                                     \
  template void cross_entropy_forward_cuda<T>(const T*, const int32_t*, int64_t, int64_t, double,  \
                                              int32_t, float*, float*, float*, int32_t*, int32_t*, \
                                              int64_t*, float*, cudaStream_t);                     \
  template void cross_entropy_backward_cuda<T>(const float*, const T*, const int32_t*,             \
                                               const float*, int64_t, int64_t, double, int32_t,    \
                                               T*, cudaStream_t);
ATTN_FOR_EACH_FLOAT_TYPE(ATTN_CROSS_ENTROPY_CUDA_INSTANTIATE)
#undef ATTN_CROSS_ENTROPY_CUDA_INSTANTIATE

}  // namespace attn::kernels
