// Token embedding on the GPU; the semantics of kernels/embedding.h and its CPU reference, with
// fp32 arithmetic.
//
// Forward, one fused pass: out[r, c] = weight[ids[r], c] * scale (+ pe(position_offset +
// r % seq_len, c)). The position encoding is computed in the kernel, not read from a table:
// 1 / 10000^((c - c % 2) / dim) in double (per block in shared memory, one per column pair),
// the angle pos * that in double, reduced to [-pi, pi] in double (exact enough for any
// position), then sinf/cosf of the reduced angle in float, so the values match the CPU's
// double formula to ~1e-7 whatever the position. Threads stride over (row, column vector)
// with 16-byte vectors when dim and the pointers allow.
//
// Backward: grad_weight[ids[r], :] += scale * grad_out[r, :] (a parameter gradient: +=),
// summed in fp32 and added to grad_weight once per id.
//   deterministic (default): the ids are sorted with a stable device radix sort (CUB), which
//     groups each id's rows in row order. The sorted positions are cut into chunks of kChunk;
//     one block per chunk walks its positions in order, summing each run of equal ids (a
//     "piece") per column. A piece that is a whole id's run is added to grad_weight directly
//     (no other block touches that id); otherwise it goes to scratch: the run's first piece
//     to tail[chunk], a continuing piece to head[chunk]. A second kernel lets the chunk where
//     a run starts add tail[c] + head[c + 1] + ... in chunk order and update grad_weight. No
//     float atomics, fixed summation order: the same bits on every run.
//   atomic: one thread per (row, column vector) does float atomicAdd into grad_weight (f32)
//     or into an fp32 scratch copy (bf16/f16), which is then added to grad_weight.
// embedding_first_invalid_cuda: atomicMin of the bad indices (an integer: order-independent),
// then one 8-byte copy to the host.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cub/device/device_radix_sort.cuh>
#include <type_traits>

#include "base/cuda_check.h"
#include "base/error.h"
#include "kernels/cuda_common.cuh"
#include "kernels/embedding.h"

namespace attn::kernels {
namespace {

using namespace cuda_common;

constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = 1 << 16;  // grid-stride kernels: enough blocks for any GPU
constexpr int kChunk = 32;             // sorted positions per block in the deterministic path
constexpr int kMaxTablePairs = 4096;   // inverse frequencies in shared memory (32 KB of double)
constexpr double kTwoPiHi = 6.283185307179586;       // 2 pi rounded to double
constexpr double kTwoPiLo = 2.4492935982947064e-16;  // 2 pi - kTwoPiHi
constexpr double kInvTwoPi = 0.15915494309189535;

// ---- element access -----------------------------------------------------------------------

// float[N] loads/stores of fp32 scratch (N == 1 or 16-byte aligned N == 4 or 8).
template <int N>
__device__ __forceinline__ void load_f32(const float* __restrict__ p, float (&out)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = p[i];
}

template <int N>
__device__ __forceinline__ void store_f32(float* __restrict__ p, const float (&in)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) p[i] = in[i];
}

// grad_weight row segment += acc (one rounding to T).
template <class T, int N>
__device__ __forceinline__ void add_to(T* __restrict__ p, const float (&acc)[N]) {
  float w[N];
  load_vec<T, N>(p, w);
#pragma unroll
  for (int i = 0; i < N; ++i) w[i] += acc[i];
  store_vec<T, N>(p, w);
}

// ---- forward ------------------------------------------------------------------------------

// 1 / 10000^(2p / dim) for column pair p (columns 2p, 2p + 1), as the CPU's double formula.
__device__ __forceinline__ double inverse_frequency(int p, int dim) {
  return 1.0 / pow(10000.0, static_cast<double>(2 * p) / static_cast<double>(dim));
}

// sin and cos of pos * inv_freq: the angle in double, reduced by 2 pi in double (the
// residual is accurate to ~1e-16 * angle), then float sincos on [-pi, pi].
__device__ __forceinline__ void position_sincos(double pos, double inv_freq, float* s, float* c) {
  const double angle = pos * inv_freq;
  const double k = rint(angle * kInvTwoPi);
  double r = fma(-k, kTwoPiHi, angle);
  r = fma(-k, kTwoPiLo, r);
  sincosf(static_cast<float>(r), s, c);
}

// Dynamic shared memory: (dim + 1) / 2 doubles when use_table (positions with a table that
// fits), else none.
template <class T, int VEC>
__global__ void __launch_bounds__(kThreads)
    embedding_forward_kernel(const int32_t* __restrict__ ids, const T* __restrict__ weight,
                             T* __restrict__ out, int64_t rows, int dim, float scale,
                             bool add_positions, int64_t seq_len, int64_t position_offset,
                             bool use_table) {
  extern __shared__ double inv_freq[];
  if (add_positions && use_table) {
    for (int p = threadIdx.x; p < (dim + 1) / 2; p += blockDim.x)
      inv_freq[p] = inverse_frequency(p, dim);
    __syncthreads();
  }
  const int nvec = dim / VEC;
  const int64_t total = rows * nvec;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += stride) {
    const int64_t r = e / nvec;
    const int c = static_cast<int>(e - r * nvec) * VEC;
    float w[VEC], pe[VEC];
    load_vec<T, VEC>(weight + static_cast<int64_t>(ids[r]) * dim + c, w);
#pragma unroll
    for (int i = 0; i < VEC; ++i) pe[i] = 0.f;
    if (add_positions) {
      const double pos = static_cast<double>(position_offset + r % seq_len);
      if constexpr (VEC % 2 == 0) {  // c is even: the vector holds whole (sin, cos) pairs
#pragma unroll
        for (int i = 0; i < VEC; i += 2) {
          const int p = (c + i) / 2;
          position_sincos(pos, use_table ? inv_freq[p] : inverse_frequency(p, dim), &pe[i],
                          &pe[i + 1]);
        }
      } else {
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          const int p = (c + i) / 2;
          float s, co;
          position_sincos(pos, use_table ? inv_freq[p] : inverse_frequency(p, dim), &s, &co);
          pe[i] = (c + i) % 2 == 0 ? s : co;
        }
      }
    }
    float o[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) o[i] = fmaf(w[i], scale, pe[i]);
    store_vec<T, VEC>(out + r * dim + c, o);
  }
}

// ---- id check -----------------------------------------------------------------------------

__global__ void __launch_bounds__(kThreads)
    embedding_first_invalid_kernel(const int32_t* __restrict__ ids, int64_t n, int64_t vocab,
                                   long long* __restrict__ first) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab) atomicMin(first, static_cast<long long>(i));
  }
}

// ---- backward: atomic ---------------------------------------------------------------------

// dst (fp32, [vocab, dim]) += scale * grad_out scattered by ids.
template <class T, int VEC>
__global__ void __launch_bounds__(kThreads)
    embedding_backward_atomic_kernel(const int32_t* __restrict__ ids,
                                     const T* __restrict__ grad_out, float* __restrict__ dst,
                                     int64_t rows, int dim, float scale) {
  const int nvec = dim / VEC;
  const int64_t total = rows * nvec;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += stride) {
    const int64_t r = e / nvec;
    const int c = static_cast<int>(e - r * nvec) * VEC;
    float g[VEC];
    load_vec<T, VEC>(grad_out + r * dim + c, g);
    float* d = dst + static_cast<int64_t>(ids[r]) * dim + c;
#pragma unroll
    for (int i = 0; i < VEC; ++i) atomicAdd(d + i, scale * g[i]);
  }
}

// grad_weight[i] += scratch[i] (bf16/f16 atomic path).
template <class T>
__global__ void __launch_bounds__(kThreads)
    embedding_add_scratch_kernel(const float* __restrict__ scratch, T* __restrict__ grad_weight,
                                 int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    grad_weight[i] = from_f<T>(to_f(grad_weight[i]) + scratch[i]);
  }
}

// ---- backward: deterministic --------------------------------------------------------------

__global__ void __launch_bounds__(kThreads) iota_kernel(uint32_t* __restrict__ v, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    v[i] = static_cast<uint32_t>(i);
}

// Block c: sorted positions [c * kChunk, min(n, (c + 1) * kChunk)); thread q the column
// vectors q, q + blockDim, ... Pieces (maximal runs of one id inside the chunk) are summed in
// position order; see the file comment for where each piece goes. head/tail: [chunks][dim].
template <class T, int VEC>
__global__ void __launch_bounds__(kThreads)
    embedding_backward_chunks_kernel(const uint32_t* __restrict__ sorted_ids,
                                     const uint32_t* __restrict__ sorted_rows,
                                     const T* __restrict__ grad_out, T* __restrict__ grad_weight,
                                     float* __restrict__ head, float* __restrict__ tail, int n,
                                     int dim, float scale) {
  constexpr int kUnroll = 4;
  const int chunk = blockIdx.x;
  const int cs = chunk * kChunk, ce = min(n, cs + kChunk);
  const int nvec = dim / VEC;
  for (int q = threadIdx.x; q < nvec; q += blockDim.x) {
    const int col = q * VEC;
    float acc[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) acc[i] = 0.f;
    int a = cs;  // start of the current piece
    for (int p0 = cs; p0 < ce; p0 += kUnroll) {
      float g[kUnroll][VEC];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {  // loads first: several in flight per thread
        if (p0 + u < ce) {
          load_vec<T, VEC>(grad_out + static_cast<int64_t>(sorted_rows[p0 + u]) * dim + col, g[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int p = p0 + u;
        if (p < ce) {
#pragma unroll
          for (int i = 0; i < VEC; ++i) acc[i] += g[u][i];
          const uint32_t id = sorted_ids[p];
          if (p + 1 == ce || sorted_ids[p + 1] != id) {  // piece [a, p + 1) ends here
            const bool starts_run = a == 0 || sorted_ids[a - 1] != id;
            const bool ends_run = p + 1 == n || sorted_ids[p + 1] != id;
#pragma unroll
            for (int i = 0; i < VEC; ++i) acc[i] *= scale;
            if (starts_run && ends_run) {
              add_to<T, VEC>(grad_weight + static_cast<int64_t>(id) * dim + col, acc);
            } else if (!starts_run) {  // continues a run from earlier chunks: a == cs
              store_f32<VEC>(head + static_cast<int64_t>(chunk) * dim + col, acc);
            } else {  // starts a run that goes on past this chunk: p + 1 == ce
              store_f32<VEC>(tail + static_cast<int64_t>(chunk) * dim + col, acc);
            }
#pragma unroll
            for (int i = 0; i < VEC; ++i) acc[i] = 0.f;
            a = p + 1;
          }
        }
      }
    }
  }
}

// Block c: if a run of ids starts in chunk c and continues past it, adds tail[c] + head[c + 1]
// + ... (chunk order) to that id's grad_weight row.
template <class T, int VEC>
__global__ void __launch_bounds__(kThreads)
    embedding_backward_runs_kernel(const uint32_t* __restrict__ sorted_ids,
                                   T* __restrict__ grad_weight, const float* __restrict__ head,
                                   const float* __restrict__ tail, int n, int dim) {
  const int chunk = blockIdx.x;
  const int cs = chunk * kChunk, ce = min(n, cs + kChunk);
  const uint32_t last = sorted_ids[ce - 1];
  const bool starts_here = cs == 0 || sorted_ids[cs - 1] != last;
  const bool continues = ce < n && sorted_ids[ce] == last;
  if (!starts_here || !continues) return;  // uniform over the block
  const int nvec = dim / VEC;
  for (int q = threadIdx.x; q < nvec; q += blockDim.x) {
    const int col = q * VEC;
    float acc[VEC];
    load_f32<VEC>(tail + static_cast<int64_t>(chunk) * dim + col, acc);
    for (int c2 = chunk + 1;; ++c2) {
      float h[VEC];
      load_f32<VEC>(head + static_cast<int64_t>(c2) * dim + col, h);
#pragma unroll
      for (int i = 0; i < VEC; ++i) acc[i] += h[i];
      const int ce2 = min(n, (c2 + 1) * kChunk);
      if (!(ce2 < n && sorted_ids[ce2] == last)) break;  // the run ends in chunk c2
    }
    add_to<T, VEC>(grad_weight + static_cast<int64_t>(last) * dim + col, acc);
  }
}

// ---- launch helpers -----------------------------------------------------------------------

size_t align256(size_t b) {
  return (b + 255) / 256 * 256;
}

int grid_for(int64_t work) {
  return grid_blocks(work, kThreads, kMaxGrid);
}

// Calls f(Int<VEC>{}) with 16-byte vectors when dim and all pointers allow, else 1.
template <class T, class F>
void with_vec(int64_t dim, bool aligned, F&& f) {
  constexpr int kVec = 16 / sizeof(T);
  if (aligned && dim % kVec == 0) {
    f(Int<kVec>{});
  } else {
    f(Int<1>{});
  }
}

int sort_end_bit(int64_t vocab) {
  int bits = 1;
  while (bits < 32 && (int64_t{1} << bits) < vocab) ++bits;
  return bits;
}

// Byte offsets inside the deterministic path's workspace.
struct SortLayout {
  size_t keys_out, rows_in, rows_out, temp, head, tail, total, temp_bytes;
};

SortLayout sort_layout(int64_t rows, int64_t dim, int64_t vocab) {
  const int n = static_cast<int>(rows);
  SortLayout l{};
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, l.temp_bytes, static_cast<const uint32_t*>(nullptr), static_cast<uint32_t*>(nullptr),
      static_cast<const uint32_t*>(nullptr), static_cast<uint32_t*>(nullptr), n, 0,
      sort_end_bit(vocab)));
  const size_t ids_bytes = align256(static_cast<size_t>(rows) * sizeof(uint32_t));
  const size_t piece_bytes = align256(static_cast<size_t>(ceil_div(rows, kChunk)) *
                                      static_cast<size_t>(dim) * sizeof(float));
  l.keys_out = 0;
  l.rows_in = l.keys_out + ids_bytes;
  l.rows_out = l.rows_in + ids_bytes;
  l.temp = l.rows_out + ids_bytes;
  l.head = l.temp + align256(l.temp_bytes);
  l.tail = l.head + piece_bytes;
  l.total = l.tail + piece_bytes;
  return l;
}

void check_sizes(const char* op, int64_t rows, int64_t dim, int64_t vocab) {
  ATTN_CHECK(rows >= 0 && rows <= INT32_MAX && dim > 0 && dim <= INT32_MAX && vocab > 0 &&
                 vocab <= INT32_MAX,
             op, ": unsupported sizes (rows ", rows, ", dim ", dim, ", vocab ", vocab, ")");
}

}  // namespace

int64_t embedding_first_invalid_cuda(const int32_t* ids, int64_t n, int64_t vocab, int64_t* scratch,
                                     cudaStream_t stream) {
  if (n <= 0) return -1;
  static_assert(sizeof(long long) == sizeof(int64_t));
  long long* first = reinterpret_cast<long long*>(scratch);
  // 0x7f7f7f7f7f7f7f7f: larger than any index, so atomicMin keeps the smallest bad one.
  CUDA_CHECK(cudaMemsetAsync(first, 0x7f, sizeof(long long), stream));
  embedding_first_invalid_kernel<<<grid_for(n), kThreads, 0, stream>>>(ids, n, vocab, first);
  ATTN_CUDA_LAUNCH_CHECK();
  long long host = 0;
  CUDA_CHECK(cudaMemcpyAsync(&host, first, sizeof(host), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return host < n ? static_cast<int64_t>(host) : -1;
}

template <class T>
void embedding_forward_cuda(const int32_t* ids, const T* weight, T* out, int64_t rows, int64_t dim,
                            double scale, bool add_positions, int64_t seq_len,
                            int64_t position_offset, cudaStream_t stream) {
  check_sizes("embedding_forward_cuda", rows, dim, 1);
  ATTN_CHECK(!add_positions || (seq_len > 0 && position_offset >= 0),
             "embedding_forward_cuda: positions need seq_len > 0 and offset >= 0, got ", seq_len,
             " and ", position_offset);
  if (rows == 0) return;
  const int64_t pairs = (dim + 1) / 2;
  const bool use_table = add_positions && pairs <= kMaxTablePairs;
  const size_t smem = use_table ? static_cast<size_t>(pairs) * sizeof(double) : 0;
  with_vec<T>(dim, aligned16(weight) && aligned16(out), [&](auto vec) {
    constexpr int V = decltype(vec)::value;
    embedding_forward_kernel<T, V><<<grid_for(rows * (dim / V)), kThreads, smem, stream>>>(
        ids, weight, out, rows, static_cast<int>(dim), static_cast<float>(scale), add_positions,
        add_positions ? seq_len : 1, position_offset, use_table);
    ATTN_CUDA_LAUNCH_CHECK();
  });
}

template <class T>
size_t embedding_backward_cuda_workspace(int64_t rows, int64_t dim, int64_t vocab,
                                         bool deterministic) {
  check_sizes("embedding_backward_cuda", rows, dim, vocab);
  if (rows == 0) return 0;
  if (deterministic) return sort_layout(rows, dim, vocab).total;
  // Atomics go straight into an f32 gradient; bf16/f16 need an fp32 copy of it.
  return std::is_same_v<T, float> ? 0 : static_cast<size_t>(vocab) * dim * sizeof(float);
}

template <class T>
void embedding_backward_cuda(const int32_t* ids, const T* grad_out, T* grad_weight, int64_t rows,
                             int64_t dim, int64_t vocab, double scale, bool deterministic,
                             void* workspace, cudaStream_t stream) {
  check_sizes("embedding_backward_cuda", rows, dim, vocab);
  if (rows == 0) return;
  const int idim = static_cast<int>(dim);
  const float fscale = static_cast<float>(scale);
  char* ws = static_cast<char*>(workspace);
  if (!deterministic) {
    float* dst;
    if constexpr (std::is_same_v<T, float>) {
      dst = grad_weight;
    } else {
      dst = reinterpret_cast<float*>(ws);
      CUDA_CHECK(cudaMemsetAsync(dst, 0, static_cast<size_t>(vocab) * dim * sizeof(float), stream));
    }
    with_vec<T>(dim, aligned16(grad_out), [&](auto vec) {
      constexpr int V = decltype(vec)::value;
      embedding_backward_atomic_kernel<T, V><<<grid_for(rows * (dim / V)), kThreads, 0, stream>>>(
          ids, grad_out, dst, rows, idim, fscale);
      ATTN_CUDA_LAUNCH_CHECK();
    });
    if constexpr (!std::is_same_v<T, float>) {
      embedding_add_scratch_kernel<T>
          <<<grid_for(vocab * dim), kThreads, 0, stream>>>(dst, grad_weight, vocab * dim);
      ATTN_CUDA_LAUNCH_CHECK();
    }
    return;
  }

  const int n = static_cast<int>(rows);
  const SortLayout l = sort_layout(rows, dim, vocab);
  uint32_t* keys_out = reinterpret_cast<uint32_t*>(ws + l.keys_out);
  uint32_t* rows_in = reinterpret_cast<uint32_t*>(ws + l.rows_in);
  uint32_t* rows_out = reinterpret_cast<uint32_t*>(ws + l.rows_out);
  float* head = reinterpret_cast<float*>(ws + l.head);
  float* tail = reinterpret_cast<float*>(ws + l.tail);
  iota_kernel<<<grid_for(n), kThreads, 0, stream>>>(rows_in, n);
  ATTN_CUDA_LAUNCH_CHECK();
  // Ids are valid (the op checks them), hence non-negative: sorting them as uint32 on their
  // low bits is their numeric order. The sort is stable: a run keeps its rows in row order.
  size_t temp_bytes = l.temp_bytes;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(ws + l.temp, temp_bytes,
                                             reinterpret_cast<const uint32_t*>(ids), keys_out,
                                             rows_in, rows_out, n, 0, sort_end_bit(vocab), stream));
  const int chunks = static_cast<int>(ceil_div(rows, kChunk));
  with_vec<T>(dim, aligned16(grad_out) && aligned16(grad_weight), [&](auto vec) {
    constexpr int V = decltype(vec)::value;
    const int threads =
        static_cast<int>(std::clamp<int64_t>(ceil_div(dim / V, 32) * 32, 32, kThreads));
    embedding_backward_chunks_kernel<T, V><<<chunks, threads, 0, stream>>>(
        keys_out, rows_out, grad_out, grad_weight, head, tail, n, idim, fscale);
    ATTN_CUDA_LAUNCH_CHECK();
    embedding_backward_runs_kernel<T, V>
        <<<chunks, threads, 0, stream>>>(keys_out, grad_weight, head, tail, n, idim);
    ATTN_CUDA_LAUNCH_CHECK();
  });
}

#define ATTN_EMBEDDING_CUDA_INSTANTIATE(T)                                                        \
  template void embedding_forward_cuda<T>(const int32_t*, const T*, T*, int64_t, int64_t, double, \
                                          bool, int64_t, int64_t, cudaStream_t);                  \
  template size_t embedding_backward_cuda_workspace<T>(int64_t, int64_t, int64_t, bool);          \
  template void embedding_backward_cuda<T>(const int32_t*, const T*, T*, int64_t, int64_t,        \
                                           int64_t, double, bool, void*, cudaStream_t);
ATTN_FOR_EACH_FLOAT_TYPE(ATTN_EMBEDDING_CUDA_INSTANTIATE)
#undef ATTN_EMBEDDING_CUDA_INSTANTIATE

}  // namespace attn::kernels
