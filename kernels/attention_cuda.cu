// Fused scaled dot-product attention on the GPU (FlashAttention-2 organisation) with the
// semantics of kernels/attention.h and its CPU reference kernels/attention_cpu.cc.
//
// Forward (attention_forward_cuda): one block of 4 warps per (b, h, tile of query rows). Key
// and value tiles go through shared memory with cp.async (the next K tile loads while P V runs,
// the next V tile while Q K^T runs); the softmax is online, in fp32 and in the log2 domain; the
// Tq x Tk scores never reach global memory. Key tiles past the block's visible prefix
// (key_lengths, causal) are neither loaded nor computed, and keys past a row's prefix inside a
// tile are masked (zero-filled in shared memory when past the entry's key length).
//  - bf16/f16: 64 query rows (16 per warp), 64 keys per tile, tensor cores through
//    mma.sync.m16n8k16 with fp32 accumulation and ldmatrix fragments. P never leaves registers:
//    the accumulator layout of S = Q K^T is the A-operand layout of P V.
//  - f32: plain FMA (tf32 would miss f32 accuracy): 32 query rows (8 per warp), 32 keys per
//    tile; a lane per key for the scores, a lane per head dimension for P V.
// lse is stored per row in fp32; rows without a visible key get o = 0 and lse = -inf.
// Dropout: the keep bits of each tile are regenerated into shared memory with the CPU's rule
// (kernels/dropout.h: element (b, h, i, j) has index ((b*H + h)*Tq + i)*Tk + j, Philox counter
// offset + index/4, lane index%4, kept iff its 24-bit uniform >= p), one Philox call per 4
// consecutive elements; the same bits on CPU and GPU, in forward and backward.
//
// Backward (attention_backward_cuda): D_i = rowsum(dO_i * O_i) into the fp32 workspace
// (attention_bwd_rowdot_kernel), then two kernels that recompute P = exp(s - lse) and the mask:
//  - dK/dV: one block per (b, h, tile of keys), looping over the query tiles that can see them
//    (a tile of padded keys, or keys no causal row reaches, costs only its zero store);
//  - dQ: one block per (b, h, tile of query rows), looping over its visible key tiles.
//  bf16/f16: dK/dV blocks own 64 keys (16 per warp, dK and dV in registers) and step over 64
//  query rows (32 for D = 128); dQ blocks own 64 rows and step over 64 keys (32 for D = 128).
//  f32: 32 keys (8 per warp) x 32-row steps, and 32 rows (8 per warp) x 32-key steps.
// A separate dQ kernel instead of atomicAdd into an fp32 buffer: it recomputes Q K^T and dO V^T
// once more (about 7 instead of 5 matmul-sized products) but is deterministic (bitwise
// reproducible gradients, which checkpoint/resume equality relies on), needs no dQ scratch and
// no conversion pass, and writes dQ with = directly.
//
// Decode (attention_decode_cuda; q_len 1, no dropout): one block per (b, h); each warp splits
// into groups of D/8 lanes (8 dimensions per lane), the groups take keys round robin (4 keys
// in flight per group), and their partial softmax states are combined in shared memory.
//
// Memory: out, lse, grad_q, grad_k, grad_v are written with = (every element; keys that no
// query sees get zero grad_k and grad_v). The workspace holds D_i only. Head dims 32, 64 and
// 128 (a template parameter); other sizes fail on the host with a clear error.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "base/cuda_check.h"
#include "kernels/attention.h"
#include "kernels/cuda_common.cuh"
#include "kernels/philox.h"

namespace attn::kernels {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kThreads = 128;  // every kernel here runs 4 warps per block
constexpr unsigned kFull = 0xffffffffu;

using cuda_common::DeviceType;  // attn::bf16 -> __nv_bfloat16, attn::f16 -> __half
using cuda_common::from_f;      // float -> float, __half, __nv_bfloat16 (round to nearest even)
using cuda_common::to_f;
using cuda_common::warp_max;    // butterfly: every lane ends with the result
using cuda_common::warp_sum;

// ==== PTX primitives (begin) ====
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared without blocking; zero-fill (src not read) when !valid.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 matrices of 16-bit elements: lanes 8m..8m+7 give the row addresses of matrix m, and
// r[m] receives, in lane l, row l/4 elements 2(l%4), 2(l%4)+1 of matrix m.
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}

// Same, transposed: r[m] receives, in lane l, elements (2(l%4), l/4) and (2(l%4)+1, l/4).
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}

// c (16x8, fp32) += a (16x16, row) * b (16x8, col). Lane l, g = l/4, t = l%4 holds
// a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..];
// b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]; c = C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1].
template <class T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}
// ==== PTX primitives (end) ====

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

// Two values as one 32-bit operand register, `lo` in the low half (the lower column index).
template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  uint32_t r;
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 h = __floats2half2_rn(lo, hi);
    memcpy(&r, &h, 4);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    memcpy(&r, &h, 4);
  }
  return r;
}

template <class T>
struct Params {
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
  T* out = nullptr;             // forward, decode
  float* lse = nullptr;         // forward, decode
  const T* dout = nullptr;      // backward
  const float* lse_in = nullptr;   // backward: the forward's lse
  const float* row_dot = nullptr;  // backward: D_i
  T* dq = nullptr;
  T* dk = nullptr;
  T* dv = nullptr;
  const int32_t* key_lengths = nullptr;
  int heads = 0, q_len = 0, k_len = 0;
  int n_tiles = 0;  // tiles per (b, h) along the grid
  float scale = 1, scale_log2 = 1, dropout_p = 0, keep_scale = 1;
  uint64_t seed = 0, offset = 0;
  bool causal = false;
  bool vec = false;  // all row pointers 16-byte aligned: cp.async and 16-byte stores
};

template <class T>
__device__ __forceinline__ int key_length(const Params<T>& p, int64_t b) {
  return p.key_lengths ? imin(imax(p.key_lengths[b], 0), p.k_len) : p.k_len;
}

__device__ __forceinline__ int visible_keys(int key_len, int i, const int q_len, int k_len,
                                            bool causal) {
  return static_cast<int>(attention_visible_keys(key_len, i, q_len, k_len, causal));
}

// Rows row0 .. row0+ROWS-1 of the [*, D] matrix g into shared memory (row pitch PITCH
// elements); rows >= valid_rows are zero-filled. Asynchronous (cp.async, the caller commits
// and waits) when vec, else plain loads and stores (ordered by the caller's __syncthreads).
template <class T, int D, int ROWS, int PITCH>
__device__ __forceinline__ void load_tile(T* s, const T* g, int row0, int valid_rows, bool vec) {
  constexpr int kPer = 16 / static_cast<int>(sizeof(T));
  constexpr int kChunks = D / kPer;
  if (vec) {
    for (int c = threadIdx.x; c < ROWS * kChunks; c += kThreads) {
      const int r = c / kChunks, cc = c - r * kChunks;
      const bool ok = row0 + r < valid_rows;
      const T* src = ok ? g + static_cast<int64_t>(row0 + r) * D + cc * kPer : g;
      cp_async_16(s + r * PITCH + cc * kPer, src, ok);
    }
  } else {
    for (int e = threadIdx.x; e < ROWS * D; e += kThreads) {
      const int r = e / D, d = e - r * D;
      s[r * PITCH + d] =
          row0 + r < valid_rows ? g[static_cast<int64_t>(row0 + r) * D + d] : from_f<T>(0.f);
    }
  }
}

// One warp copies ROWS staged rows (pitch PITCH) to rows row0.. of g, those < valid_rows.
template <class T, int D, int ROWS, int PITCH>
__device__ __forceinline__ void store_rows(T* g, const T* s, int row0, int valid_rows, bool vec,
                                           int lane) {
  constexpr int kPer = 16 / static_cast<int>(sizeof(T));
  constexpr int kChunks = D / kPer;
  for (int c = lane; c < ROWS * kChunks; c += 32) {
    const int r = c / kChunks, cc = c - r * kChunks;
    if (row0 + r >= valid_rows) continue;
    T* dst = g + static_cast<int64_t>(row0 + r) * D + cc * kPer;
    const T* src = s + r * PITCH + cc * kPer;
    if (vec) {
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
    } else {
#pragma unroll
      for (int e = 0; e < kPer; ++e) dst[e] = src[e];
    }
  }
}

// Writes zeros to rows [row0, row_end) of the [*, D] matrix g (the whole block).
template <class T, int D>
__device__ __forceinline__ void zero_rows(T* g, int row0, int row_end) {
  const int n = (row_end - row0) * D;
  for (int e = threadIdx.x; e < n; e += kThreads) g[static_cast<int64_t>(row0) * D + e] = from_f<T>(0.f);
}

// dropout_keep (kernels/dropout.h) given the 32 Philox bits of the element: philox_uniform's
// 24-bit value in float, compared with p.
__device__ __forceinline__ bool keep_from_bits(uint32_t bits, float p) {
  return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f) >= p;
}

// Keep bits of a ROWS x COLS tile: rows first_row + r (r < rows; global rows (b*H + h)*Tq + i),
// keys key0 + c. Byte r * COLS/8 + c/8, bit c%8; rows r >= rows get 0. One Philox call per
// counter, i.e. per 4 consecutive elements (2 or 3 calls per byte). The whole block calls this.
template <int ROWS, int COLS>
__device__ __forceinline__ void dropout_tile(uint8_t* mask, uint64_t first_row, int rows,
                                             int k_len, int key0, uint64_t seed, uint64_t offset,
                                             float p) {
  constexpr int kBytes = COLS / 8;
  for (int s = threadIdx.x; s < ROWS * kBytes; s += kThreads) {
    const int r = s / kBytes, sg = s - r * kBytes;
    uint32_t byte = 0;
    if (r < rows) {
      const uint64_t start = (first_row + static_cast<uint64_t>(r)) * static_cast<uint64_t>(k_len) +
                             static_cast<uint64_t>(key0 + 8 * sg);
      const int lead = static_cast<int>(start & 3u);  // elements of the first counter before ours
      const uint64_t ctr0 = offset + (start >> 2);       // philox_bits: counter offset + index / 4
#pragma unroll 1
      for (int ci = 0; 4 * ci < lead + 8; ++ci) {  // 2 or 3 counters
        const uint64_t ctr = ctr0 + static_cast<uint64_t>(ci);
        const Philox4 x =
            philox4x32_10(static_cast<uint32_t>(ctr), static_cast<uint32_t>(ctr >> 32), 0u, 0u,
                          static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
#pragma unroll
        for (int l = 0; l < 4; ++l) {  // element index 4 * counter + l uses lane l
          const int e = 4 * ci + l - lead;
          if (e >= 0 && e < 8 && keep_from_bits(x.v[l], p)) byte |= 1u << e;
        }
      }
    }
    mask[s] = static_cast<uint8_t>(byte);
  }
}

// The COLS keep bits of one row of a dropout tile.
template <int COLS>
__device__ __forceinline__ uint64_t mask_row(const uint8_t* row) {
  static_assert(COLS == 32 || COLS == 64, "mask rows are 32 or 64 bits");
  if constexpr (COLS == 64) {
    return *reinterpret_cast<const uint64_t*>(row);
  } else {
    return *reinterpret_cast<const uint32_t*>(row);
  }
}

// ============================================================================================
// Pieces shared by the kernels below.
// ============================================================================================

// The keep bits of the dropout tile at query rows q0.., keys k0.. of head bh (Tq query rows, Tk
// keys) into mask (dropout_tile).
template <int ROWS, int COLS, class T>
__device__ __forceinline__ void load_dropout_tile(uint8_t* mask, const Params<T>& p, int64_t bh,
                                                  int Tq, int Tk, int q0, int k0) {
  dropout_tile<ROWS, COLS>(mask, static_cast<uint64_t>(bh) * Tq + q0, Tq - q0, Tk, k0, p.seed,
                           p.offset, p.dropout_p);
}

// A forward or dQ block: rows q0 .. q_end-1 of head bh (Tq query rows, Tk keys, the keys ending
// at kv; BR rows a block), which see the first n_blk keys (the last row sees most), n_kt tiles of
// BC. Kernels bind it in place, const auto [bh, Tq, ...] = QueryTile<BR, BC>(p), which keeps the
// fields separate scalars (a struct returned by value is copied as packed 64-bit words).
template <int BR, int BC>
struct QueryTile {
  int64_t bh;
  int Tq, Tk, q0, q_end, kv, n_blk, n_kt;

  template <class T>
  __device__ __forceinline__ explicit QueryTile(const Params<T>& p) {
    bh = blockIdx.x / p.n_tiles;
    q0 = static_cast<int>(blockIdx.x % p.n_tiles) * BR;
    Tq = p.q_len;
    Tk = p.k_len;
    kv = key_length(p, bh / p.heads);
    q_end = imin(q0 + BR, Tq);
    n_blk = visible_keys(kv, q_end - 1, Tq, Tk, p.causal);
    n_kt = (n_blk + BC - 1) / BC;
  }
};

// A dK/dV block: keys k0 .. k_end-1 of head bh (Tq query rows, Tk keys, the keys ending at kv;
// BC keys a block); bound in place like QueryTile.
template <int BC>
struct KeyTile {
  int64_t bh;
  int Tq, Tk, k0, k_end, kv;

  template <class T>
  __device__ __forceinline__ explicit KeyTile(const Params<T>& p) {
    bh = blockIdx.x / p.n_tiles;
    k0 = static_cast<int>(blockIdx.x % p.n_tiles) * BC;
    Tq = p.q_len;
    Tk = p.k_len;
    kv = key_length(p, bh / p.heads);
    k_end = imin(k0 + BC, Tk);
  }
};

// The query tiles [qt_begin, qt_end) of BR rows that see the keys from k0 on (the head's keys end
// at kv): rows i >= k0 - (Tk - Tq) if causal; none when the keys are padding or no row reaches
// them.
template <int BR>
__device__ __forceinline__ void query_tiles_seeing(int k0, int kv, int Tq, int Tk, bool causal,
                                                   int& qt_begin, int& qt_end) {
  qt_begin = 0;
  qt_end = 0;
  if (k0 < kv) {
    const int i_min = causal ? imax(0, k0 - (Tk - Tq)) : 0;
    if (i_min < Tq) {
      qt_begin = i_min / BR;
      qt_end = (Tq + BR - 1) / BR;
    }
  }
}

// Forward rows q0 .. q_end-1 of a head (output oh, lse lh) that see no key: o = 0 and lse = -inf
// (the whole block).
template <class T, int D>
__device__ __forceinline__ void forward_no_keys(T* oh, float* lh, int q0, int q_end) {
  zero_rows<T, D>(oh, q0, q_end);
  for (int r = q0 + static_cast<int>(threadIdx.x); r < q_end; r += kThreads) lh[r] = -INFINITY;
}

// The base of a row's exp2: its running max m, or 0 while the row has no visible key (m = -inf),
// so that exp2(x - base) never computes -inf - -inf.
__device__ __forceinline__ float softmax_base(float m) {
  return m == -INFINITY ? 0.f : m;
}

// Online softmax step of a row: the running max m (log2 domain) takes in mx; alpha = exp2(old m -
// new base) rescales the row's sum and accumulator so far. Returns the new base.
__device__ __forceinline__ float softmax_update(float& m, float mx, float& alpha) {
  const float m_new = fmaxf(m, mx);
  const float m_use = softmax_base(m_new);
  alpha = exp2f(m - m_use);
  m = m_new;
  return m_use;
}

// A row's lse from its running max (log2 domain) and sum; -inf for a row without visible keys.
__device__ __forceinline__ float row_lse(float m, float l) {
  return l > 0.f ? m * kLn2 + logf(l) : -INFINITY;
}

// A forward row's output factor: the dropout keep scale over its sum (0 without visible keys).
template <class T>
__device__ __forceinline__ float out_factor(const Params<T>& p, float l) {
  return l > 0.f ? p.keep_scale / l : 0.f;
}

// The dQ kernels' statistics of query row i of head bh: its visible keys nv, lse2 = lse * log2(e)
// (0 for a row without keys, whose lse is -inf) and D_i; all 0 past Tq.
template <class T>
__device__ __forceinline__ void dq_row_stats(const Params<T>& p, int64_t bh, int Tq, int Tk, int kv,
                                             int i, int& nv, float& lse2, float& di) {
  nv = 0;
  lse2 = 0.f;
  di = 0.f;
  if (i < Tq) {
    nv = visible_keys(kv, i, Tq, Tk, p.causal);
    if (nv > 0) lse2 = p.lse_in[bh * Tq + i] * kLog2e;
    di = p.row_dot[bh * Tq + i];
  }
}

// A row's keep bits given either as the bits themselves or as the row of the dropout tile in
// shared memory (read when needed).
template <int BC>
__device__ __forceinline__ uint64_t row_bits(uint64_t bits) {
  return bits;
}
template <int BC>
__device__ __forceinline__ uint64_t row_bits(const uint8_t* row) {
  return mask_row<BC>(row);
}

// dS = P * (drop * dP - D_i) of one (row, key) in the dQ kernels: P = exp2(scale_log2 s - lse2)
// where visible; with dropout, dP scaled by the keep factor where bit `bit` of the row's keep bits
// (row_bits<BC>(mask)) is set and 0 where not.
template <int BC, class T, class Mask>
__device__ __forceinline__ float dq_dscore(const Params<T>& p, float s, float dp, bool visible,
                                           bool drop, Mask mask, int bit, float lse2, float di) {
  const float pr = visible ? exp2f(s * p.scale_log2 - lse2) : 0.f;
  float dpv = dp;
  if (drop) dpv = ((row_bits<BC>(mask) >> bit) & 1u) ? dpv * p.keep_scale : 0.f;
  return pr * (dpv - di);
}

// lse * log2(e) and D_i of the BR query rows from q0 of head bh into sL and sD (0 past Tq), for
// a dK/dV step. The whole block calls this.
template <int BR, class T>
__device__ __forceinline__ void stage_row_stats(const Params<T>& p, int64_t bh, int Tq, int q0,
                                                float* sL, float* sD) {
  for (int r = threadIdx.x; r < BR; r += kThreads) {
    const int i = q0 + r;
    float lv = 0.f, dval = 0.f;
    if (i < Tq) {
      const float lse = p.lse_in[bh * Tq + i];
      lv = lse == -INFINITY ? 0.f : lse * kLog2e;  // -inf: the row sees no key, never used
      dval = p.row_dot[bh * Tq + i];
    }
    sL[r] = lv;
    sD[r] = dval;
  }
}

// The dK/dV kernels' values of one (query, key) pair from s = q.k and dp = dO.v: pd = drop * P
// (dV's operand) and ds = P * (drop * dP - D_i) (dK's), P = exp2(scale_log2 s - lv) where the key
// is visible to the query (lv = lse * log2(e), dval = D_i of the query); with dropout, the pair's
// keep bit is bit `bit` of `bits`.
template <class T>
__device__ __forceinline__ void dkdv_scores(const Params<T>& p, bool vis, float s, float dp,
                                            bool drop, uint64_t bits, int bit, float lv, float dval,
                                            float& pd, float& ds) {
  const float pr = vis ? exp2f(s * p.scale_log2 - lv) : 0.f;
  float f = 1.f;
  if (drop) f = ((bits >> bit) & 1u) ? p.keep_scale : 0.f;
  const float dpv = f == 0.f ? 0.f : dp * f;
  pd = pr * f;
  ds = pr * (dpv - dval);
}

// ---- Tensor-core fragments (bf16/f16 kernels). A warp's 16 x (8N) fp32 accumulator is
// float[N][4]: c[n][2h+e] is row g + 8h, column 8n + 2t + e (g = lane/4, t = lane%4).

// This lane's ldmatrix row address (lanes 8m..8m+7 address the rows of 8 x 8 matrix m) for
//  - a_frag_ptr: the A operand of mma_16816 from rows r0..r0+15, k-slice ks (columns 16ks..) of a
//    row-major tile; matrices at (+0, +0), (+8, +0), (+0, +8), (+8, +8) (ldsm_x4);
//  - b_frag_ptr_nk: the B operands of n-tiles nt and nt+1 (rows 8nt..8nt+15), k-slice ks, of a
//    row-major [n][k] tile; matrices at (+0, +0), (+0, +8), (+8, +0), (+8, +8) (ldsm_x4);
//  - b_frag_ptr_kn: the B operands of n-tiles dt and dt+1 (columns 8dt..8dt+15), k-slice kk (rows
//    16kk..), of a row-major [k][n] tile; matrices as for a_frag_ptr (ldsm_x4_trans).
// s has row pitch PITCH elements.
template <int PITCH, class T>
__device__ __forceinline__ const T* a_frag_ptr(const T* s, int r0, int ks, int lane) {
  return s + (r0 + (lane & 15)) * PITCH + ks * 16 + (lane >> 4) * 8;
}

template <int PITCH, class T>
__device__ __forceinline__ const T* b_frag_ptr_nk(const T* s, int nt, int ks, int lane) {
  return s + (nt * 8 + (lane >> 4) * 8 + (lane & 7)) * PITCH + ks * 16 + (lane & 8);
}

template <int PITCH, class T>
__device__ __forceinline__ const T* b_frag_ptr_kn(const T* s, int kk, int dt, int lane) {
  return s + (kk * 16 + (lane & 15)) * PITCH + dt * 8 + (lane >> 4) * 8;
}

// c0 += a * B0, c1 += a * B1 for the two n-tiles of B that ldmatrix reads at s: mma_pair from a
// row-major [n][k] tile (at b_frag_ptr_nk), mma_pair_trans from a row-major [k][n] one (at
// b_frag_ptr_kn).
template <class T>
__device__ __forceinline__ void mma_pair(float (&c0)[4], float (&c1)[4], const uint32_t (&a)[4],
                                         const T* s) {
  uint32_t b[4];
  ldsm_x4(b, s);
  mma_16816<T>(c0, a, b[0], b[1]);
  mma_16816<T>(c1, a, b[2], b[3]);
}

template <class T>
__device__ __forceinline__ void mma_pair_trans(float (&c0)[4], float (&c1)[4],
                                               const uint32_t (&a)[4], const T* s) {
  uint32_t b[4];
  ldsm_x4_trans(b, s);
  mma_16816<T>(c0, a, b[0], b[1]);
  mma_16816<T>(c1, a, b[2], b[3]);
}

// acc += A B^T over the k-slice ks (columns 16ks..16ks+15), B the row-major [8N][k] tile s
// (S = Q K^T, dP = dO V^T); a is the A fragment of that slice.
template <int PITCH, class T, int N>
__device__ __forceinline__ void mma_nk(float (&acc)[N][4], const uint32_t (&a)[4], const T* s,
                                       int ks, int lane) {
#pragma unroll
  for (int nt = 0; nt < N; nt += 2) {
    mma_pair<T>(acc[nt], acc[nt + 1], a, b_frag_ptr_nk<PITCH>(s, nt, ks, lane));
  }
}

// acc += A B over the k-slice kk (rows 16kk..16kk+15 of s), B the row-major [k][8N] tile s
// (O += P V, dQ += dS K); a is the A fragment of that slice.
template <int PITCH, class T, int N>
__device__ __forceinline__ void mma_kn(float (&acc)[N][4], const uint32_t (&a)[4], const T* s,
                                       int kk, int lane) {
#pragma unroll
  for (int dt = 0; dt < N; dt += 2) {
    mma_pair_trans<T>(acc[dt], acc[dt + 1], a, b_frag_ptr_kn<PITCH>(s, kk, dt, lane));
  }
}

// The A fragment of this warp's rows r0.. of the tile s, k-slice ks: regs[ks] (preloaded) when
// REGS, else read from shared memory.
template <bool REGS, int PITCH, class T, int N>
__device__ __forceinline__ void a_frag(uint32_t (&a)[4], const uint32_t (&regs)[N][4], const T* s,
                                       int r0, int ks, int lane) {
  if constexpr (REGS) {
    a[0] = regs[ks][0], a[1] = regs[ks][1], a[2] = regs[ks][2], a[3] = regs[ks][3];
  } else {
    ldsm_x4(a, a_frag_ptr<PITCH>(s, r0, ks, lane));
  }
}

// Columns 16kk..16kk+15 of an accumulator, converted to T, as an A operand: the accumulator
// layout of S = Q K^T is the A-operand layout of P V.
template <class T, int N>
__device__ __forceinline__ void pack_a(uint32_t (&a)[4], const float (&c)[N][4], int kk) {
  a[0] = pack2<T>(c[2 * kk][0], c[2 * kk][1]);
  a[1] = pack2<T>(c[2 * kk][2], c[2 * kk][3]);
  a[2] = pack2<T>(c[2 * kk + 1][0], c[2 * kk + 1][1]);
  a[3] = pack2<T>(c[2 * kk + 1][2], c[2 * kk + 1][3]);
}

// Zeroes an accumulator.
template <int N>
__device__ __forceinline__ void zero_acc(float (&c)[N][4]) {
#pragma unroll
  for (int n = 0; n < N; ++n) c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.f;
}

// Writes 8-column tile dt of the warp's accumulator (c = acc[dt]), each value x of row g + 8h
// mapped to f(x, h) and converted to T, into the warp's 16 rows at s (row pitch PITCH): staging
// for store_rows.
template <int PITCH, class T, class F>
__device__ __forceinline__ void stage_frag(T* s, const float (&c)[4], int dt, int g, int t, F f) {
  *reinterpret_cast<uint32_t*>(s + g * PITCH + dt * 8 + 2 * t) = pack2<T>(f(c[0], 0), f(c[1], 0));
  *reinterpret_cast<uint32_t*>(s + (g + 8) * PITCH + dt * 8 + 2 * t) =
      pack2<T>(f(c[2], 1), f(c[3], 1));
}

// ---- FMA (f32 kernels).

// acc[r] = sum_d A[r0 + r][d] * b[d]: the warp's R rows of the row-major [*][D] tile sA against
// this lane's row b (S = Q K^T, dP = dO V^T with the lane as the key).
template <int D, int R>
__device__ __forceinline__ void dot_rows_f32(float (&acc)[R], const float* sA, int r0,
                                             const float* b) {
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.f;
#pragma unroll 4
  for (int d = 0; d < D; d += 4) {
    const float4 b4 = *reinterpret_cast<const float4*>(b + d);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float4 a4 = *reinterpret_cast<const float4*>(sA + (r0 + r) * D + d);
      acc[r] = fmaf(a4.x, b4.x, acc[r]);
      acc[r] = fmaf(a4.y, b4.y, acc[r]);
      acc[r] = fmaf(a4.z, b4.z, acc[r]);
      acc[r] = fmaf(a4.w, b4.w, acc[r]);
    }
  }
}

// acc[r][c] += sum_j P[r][j] B[j][lane + 32c] over the BC keys of a tile: P the warp's R x BC
// weights (row-major, shared), B the row-major [BC][*] tile sB with row pitch PITCH (O += P V,
// dQ += dS K with the lane as the head dimension).
template <int BC, int PITCH, int R, int C>
__device__ __forceinline__ void pv_rows_f32(float (&acc)[R][C], const float* sP, const float* sB,
                                            int lane) {
#pragma unroll 2
  for (int jj = 0; jj < BC; jj += 4) {
    float bv[4][C];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
#pragma unroll
      for (int c = 0; c < C; ++c) bv[u][c] = sB[(jj + u) * PITCH + lane + 32 * c];
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float4 p4 = *reinterpret_cast<const float4*>(sP + r * BC + jj);
#pragma unroll
      for (int c = 0; c < C; ++c) {
        acc[r][c] = fmaf(p4.x, bv[0][c], acc[r][c]);
        acc[r][c] = fmaf(p4.y, bv[1][c], acc[r][c]);
        acc[r][c] = fmaf(p4.z, bv[2][c], acc[r][c]);
        acc[r][c] = fmaf(p4.w, bv[3][c], acc[r][c]);
      }
    }
  }
}

// ============================================================================================
// Forward, bf16/f16, tensor cores.
// ============================================================================================

template <class T, int D>
struct FwdMma {
  static constexpr int kBr = 64, kBc = 64, kPitch = D + 8;  // +8: conflict-free ldmatrix rows
  static constexpr size_t kSmem =
      static_cast<size_t>(kBr + 2 * kBc) * kPitch * sizeof(T) + kBr * kBc / 8;
};

template <class T, int D>
__global__ void __launch_bounds__(kThreads) attention_fwd_mma_kernel(const Params<T> p) {
  using Cfg = FwdMma<T, D>;
  constexpr int kBr = Cfg::kBr, kBc = Cfg::kBc, kPitch = Cfg::kPitch;
  constexpr int kNT = kBc / 8, kDT = D / 8, kKS = D / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + kBr * kPitch;
  T* sV = sK + kBc * kPitch;
  uint8_t* sMask = reinterpret_cast<uint8_t*>(sV + kBc * kPitch);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const auto [bh, Tq, Tk, q0, q_end, kv, n_blk, n_kt] = QueryTile<kBr, kBc>(p);
  const T* qh = p.q + bh * Tq * D;
  const T* kh = p.k + bh * Tk * D;
  const T* vh = p.v + bh * Tk * D;
  if (n_kt == 0) {  // no row of this tile sees a key
    forward_no_keys<T, D>(p.out + bh * Tq * D, p.lse + bh * Tq, q0, q_end);
    return;
  }

  // Groups in flight: Q, K0, V0.
  load_tile<T, D, kBr, kPitch>(sQ, qh, q0, Tq, p.vec);
  cp_async_commit();
  load_tile<T, D, kBc, kPitch>(sK, kh, 0, n_blk, p.vec);
  cp_async_commit();
  load_tile<T, D, kBc, kPitch>(sV, vh, 0, n_blk, p.vec);
  cp_async_commit();
  cp_async_wait<2>();
  __syncthreads();

  const int r0 = warp * 16;  // this warp's rows of the tile
  uint32_t qa[kKS][4];
#pragma unroll
  for (int ks = 0; ks < kKS; ++ks) ldsm_x4(qa[ks], a_frag_ptr<kPitch>(sQ, r0, ks, lane));

  // This thread holds rows r0+g (h = 0) and r0+g+8 (h = 1) of the warp's 16.
  int nv[2];
  float m[2], l[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int i = q0 + r0 + g + 8 * h;
    nv[h] = i < Tq ? visible_keys(kv, i, Tq, Tk, p.causal) : 0;
    m[h] = -INFINITY;  // running max of scale*log2(e)*s
    l[h] = 0.f;        // running sum over this thread's columns (reduced over the quad at the end)
  }
  float o[kDT][4];
  zero_acc(o);
  const bool drop = p.dropout_p > 0.f;

  for (int kt = 0; kt < n_kt; ++kt) {
    const int k0 = kt * kBc;
    if (drop) load_dropout_tile<kBr, kBc>(sMask, p, bh, Tq, Tk, q0, k0);
    cp_async_wait<1>();
    __syncthreads();  // K tile and mask visible

    float s[kNT][4];
    zero_acc(s);
#pragma unroll
    for (int ks = 0; ks < kKS; ++ks) mma_nk<kPitch>(s, qa[ks], sK, ks, lane);

    // Online softmax; s[nt][2h+e] is row r0+g+8h, key k0 + nt*8 + 2t + e.
    float alpha[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int j = k0 + nt * 8 + 2 * t + e;
          const float x = j < nv[h] ? s[nt][2 * h + e] * p.scale_log2 : -INFINITY;
          s[nt][2 * h + e] = x;
          mx = fmaxf(mx, x);
        }
      }
      mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, 2));
      const float m_use = softmax_update(m[h], mx, alpha[h]);
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float x = exp2f(s[nt][2 * h + e] - m_use);
          s[nt][2 * h + e] = x;
          sum += x;
        }
      }
      l[h] = l[h] * alpha[h] + sum;  // the sum is over undropped probabilities
    }
#pragma unroll
    for (int dt = 0; dt < kDT; ++dt) {
      o[dt][0] *= alpha[0];
      o[dt][1] *= alpha[0];
      o[dt][2] *= alpha[1];
      o[dt][3] *= alpha[1];
    }
    if (drop) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint64_t bits = mask_row<kBc>(sMask + (r0 + g + 8 * h) * (kBc / 8));
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            if (!((bits >> (nt * 8 + 2 * t + e)) & 1u)) s[nt][2 * h + e] = 0.f;
          }
        }
      }
    }

    cp_async_wait<0>();
    __syncthreads();  // V tile visible; every warp is done with sK
    if (kt + 1 < n_kt) load_tile<T, D, kBc, kPitch>(sK, kh, k0 + kBc, n_blk, p.vec);
    cp_async_commit();

    // O += P V: P's accumulator fragments are the A operand (keys 16kk .. 16kk+15).
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      uint32_t a[4];
      pack_a<T>(a, s, kk);
      mma_kn<kPitch>(o, a, sV, kk, lane);
    }
    __syncthreads();  // every warp is done with sV and the mask
    if (kt + 1 < n_kt) load_tile<T, D, kBc, kPitch>(sV, vh, k0 + kBc, n_blk, p.vec);
    cp_async_commit();
  }

  float inv[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(kFull, l[h], 1);
    l[h] += __shfl_xor_sync(kFull, l[h], 2);
    inv[h] = out_factor(p, l[h]);
  }
  // Stage the output through this warp's own rows of sQ (no other warp reads them) so the
  // global stores are 16-byte rows.
  T* sO = sQ + r0 * kPitch;
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt) {
    stage_frag<kPitch>(sO, o[dt], dt, g, t, [&](float x, int h) { return x * inv[h]; });
  }
  __syncwarp();
  store_rows<T, D, 16, kPitch>(p.out + bh * Tq * D, sO, q0 + r0, Tq, p.vec, lane);
  if (t == 0) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int i = q0 + r0 + g + 8 * h;
      if (i < Tq) p.lse[bh * Tq + i] = row_lse(m[h], l[h]);
    }
  }
}

// ============================================================================================
// Forward, f32, FMA.
// ============================================================================================

template <int D>
struct FwdF32 {
  static constexpr int kR = 8, kBr = 32, kBc = 32, kPitchK = D + 4;  // +4: conflict-free float4
  static constexpr size_t kSmem =
      (static_cast<size_t>(kBr) * D + kBc * kPitchK + kBc * D + 4 * kR * kBc) * sizeof(float) +
      kBr * kBc / 8;
};

template <int D>
__global__ void __launch_bounds__(kThreads) attention_fwd_f32_kernel(const Params<float> p) {
  using Cfg = FwdF32<D>;
  constexpr int kR = Cfg::kR, kBr = Cfg::kBr, kBc = Cfg::kBc, kPK = Cfg::kPitchK, kC = D / 32;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* sQ = reinterpret_cast<float*>(smem_raw);  // [kBr][D]
  float* sK = sQ + kBr * D;                        // [kBc][kPK]
  float* sV = sK + kBc * kPK;                      // [kBc][D]
  float* sP = sV + kBc * D;                        // [4 warps][kR][kBc]
  uint8_t* sMask = reinterpret_cast<uint8_t*>(sP + 4 * kR * kBc);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const auto [bh, Tq, Tk, q0, q_end, kv, n_blk, n_kt] = QueryTile<kBr, kBc>(p);
  const float* qh = p.q + bh * Tq * D;
  const float* kh = p.k + bh * Tk * D;
  const float* vh = p.v + bh * Tk * D;
  float* oh = p.out + bh * Tq * D;
  float* lh = p.lse + bh * Tq;
  if (n_kt == 0) {
    forward_no_keys<float, D>(oh, lh, q0, q_end);
    return;
  }

  // Groups in flight: Q, K0, V0.
  load_tile<float, D, kBr, D>(sQ, qh, q0, Tq, p.vec);
  cp_async_commit();
  load_tile<float, D, kBc, kPK>(sK, kh, 0, n_blk, p.vec);
  cp_async_commit();
  load_tile<float, D, kBc, D>(sV, vh, 0, n_blk, p.vec);
  cp_async_commit();

  const int r0 = warp * kR;  // rows r0 .. r0+kR-1; the lane is the key within a tile
  float* sPw = sP + warp * kR * kBc;
  int nv[kR];
  float m[kR], l[kR], o[kR][kC];
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int i = q0 + r0 + r;
    nv[r] = i < Tq ? visible_keys(kv, i, Tq, Tk, p.causal) : 0;
    m[r] = -INFINITY;
    l[r] = 0.f;  // per-lane partial sum, reduced over the warp at the end
#pragma unroll
    for (int c = 0; c < kC; ++c) o[r][c] = 0.f;
  }
  const bool drop = p.dropout_p > 0.f;

  for (int kt = 0; kt < n_kt; ++kt) {
    const int k0 = kt * kBc;
    if (drop) load_dropout_tile<kBr, kBc>(sMask, p, bh, Tq, Tk, q0, k0);
    cp_async_wait<1>();
    __syncthreads();  // Q, K tile and mask visible

    float s[kR];
    dot_rows_f32<D>(s, sQ, r0, sK + lane * kPK);
    const int j = k0 + lane;
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      const float x = j < nv[r] ? s[r] * p.scale_log2 : -INFINITY;
      float alpha;
      const float m_use = softmax_update(m[r], warp_max(x), alpha);
      float pr = exp2f(x - m_use);
      l[r] = l[r] * alpha + pr;
#pragma unroll
      for (int c = 0; c < kC; ++c) o[r][c] *= alpha;
      if (drop && !((mask_row<kBc>(sMask + (r0 + r) * (kBc / 8)) >> lane) & 1u)) pr = 0.f;
      sPw[r * kBc + lane] = pr;
    }

    cp_async_wait<0>();
    __syncthreads();  // V tile visible (and sPw); every warp is done with sK
    if (kt + 1 < n_kt) load_tile<float, D, kBc, kPK>(sK, kh, k0 + kBc, n_blk, p.vec);
    cp_async_commit();

    pv_rows_f32<kBc, D>(o, sPw, sV, lane);
    __syncthreads();  // every warp is done with sV, sP and the mask
    if (kt + 1 < n_kt) load_tile<float, D, kBc, D>(sV, vh, k0 + kBc, n_blk, p.vec);
    cp_async_commit();
  }

#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const float lr = warp_sum(l[r]);
    const float inv = out_factor(p, lr);
    const int i = q0 + r0 + r;
    if (i < Tq) {
#pragma unroll
      for (int c = 0; c < kC; ++c) oh[static_cast<int64_t>(i) * D + lane + 32 * c] = o[r][c] * inv;
      if (lane == 0) lh[i] = row_lse(m[r], lr);
    }
  }
}

// ============================================================================================
// Decode: q_len 1, no dropout, every dtype.
// ============================================================================================

template <class T>
__device__ __forceinline__ void load8(float (&f)[8], const T* ptr, bool vec) {
  if (vec) {
    if constexpr (std::is_same_v<T, float>) {
      const float4 a = reinterpret_cast<const float4*>(ptr)[0];
      const float4 b = reinterpret_cast<const float4*>(ptr)[1];
      f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w;
      f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
    } else {
      const uint4 u = *reinterpret_cast<const uint4*>(ptr);
      T h[8];
      memcpy(h, &u, 16);
#pragma unroll
      for (int e = 0; e < 8; ++e) f[e] = to_f(h[e]);
    }
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) f[e] = to_f(ptr[e]);
  }
}

template <class T, int D>
__global__ void __launch_bounds__(kThreads) attention_decode_kernel(const Params<T> p) {
  constexpr int kL = D / 8;        // lanes per key, 8 dimensions each
  constexpr int kG = 32 / kL;      // key groups per warp
  constexpr int kNG = 4 * kG;      // key groups per block
  constexpr int kU = 4;            // keys in flight per group and step
  __shared__ float s_m[kNG], s_l[kNG];
  __shared__ float s_acc[kNG][D];

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int grp = warp * kG + lane / kL, sub = lane % kL;
  const int64_t bh = blockIdx.x;
  const int Tk = p.k_len;
  const int n = visible_keys(key_length(p, bh / p.heads), 0, 1, Tk, p.causal);
  const T* kh = p.k + bh * Tk * D + sub * 8;
  const T* vh = p.v + bh * Tk * D + sub * 8;
  float qv[8];
  load8(qv, p.q + bh * D + sub * 8, p.vec);
#pragma unroll
  for (int e = 0; e < 8; ++e) qv[e] *= p.scale_log2;

  float m = -INFINITY, l = 0.f, acc[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) acc[e] = 0.f;
  for (int base = 0; base < n; base += kNG * kU) {  // uniform over the block: shuffles are safe
    float kf[kU][8], vf[kU][8];
    bool ok[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int j = base + u * kNG + grp;
      ok[u] = j < n;
      if (ok[u]) {
        load8(kf[u], kh + static_cast<int64_t>(j) * D, p.vec);
        load8(vf[u], vh + static_cast<int64_t>(j) * D, p.vec);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) kf[u][e] = vf[u][e] = 0.f;
      }
    }
    float sc[kU];
    float mx = -INFINITY;
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      float x = 0.f;
#pragma unroll
      for (int e = 0; e < 8; ++e) x = fmaf(qv[e], kf[u][e], x);
#pragma unroll
      for (int o = kL / 2; o > 0; o >>= 1) x += __shfl_xor_sync(kFull, x, o);  // within the group
      sc[u] = ok[u] ? x : -INFINITY;
      mx = fmaxf(mx, sc[u]);
    }
    float alpha;
    const float m_use = softmax_update(m, mx, alpha);
    l *= alpha;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] *= alpha;
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const float pr = exp2f(sc[u] - m_use);
      l += pr;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] = fmaf(pr, vf[u][e], acc[e]);
    }
  }

  // Combine the groups' (max, sum, accumulator) states.
  if (sub == 0) {
    s_m[grp] = m;
    s_l[grp] = l;
  }
#pragma unroll
  for (int e = 0; e < 8; ++e) s_acc[grp][sub * 8 + e] = acc[e];
  __syncthreads();
  if (tid < D) {
    float mm = -INFINITY;
    for (int gi = 0; gi < kNG; ++gi) mm = fmaxf(mm, s_m[gi]);
    const float m_use = softmax_base(mm);
    float ls = 0.f, os = 0.f;
    for (int gi = 0; gi < kNG; ++gi) {
      const float w = exp2f(s_m[gi] - m_use);
      ls = fmaf(s_l[gi], w, ls);
      os = fmaf(s_acc[gi][tid], w, os);
    }
    p.out[bh * D + tid] = from_f<T>(ls > 0.f ? os / ls : 0.f);
    if (tid == 0) p.lse[bh] = row_lse(mm, ls);
  }
}

// ============================================================================================
// Backward: D_i = rowsum(dO_i * O_i).
// ============================================================================================

template <class T>
__global__ void __launch_bounds__(kThreads)
    attention_bwd_rowdot_kernel(const T* dout, const T* out, float* row_dot, int64_t rows, int dim) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * 4 + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * 4) {  // uniform over the warp
    const T* a = dout + r * dim;
    const T* b = out + r * dim;
    float sum = 0.f;
    for (int d = lane; d < dim; d += 32) sum = fmaf(to_f(a[d]), to_f(b[d]), sum);
    sum = warp_sum(sum);
    if (lane == 0) row_dot[r] = sum;
  }
}

// ============================================================================================
// Backward dQ, bf16/f16, tensor cores: dQ = scale * sum_j dS_ij K_j over visible key tiles.
// ============================================================================================

template <class T, int D>
struct DqMma {
  static constexpr int kBr = 64, kBc = D <= 64 ? 64 : 32, kPitch = D + 8;
  static constexpr bool kRegs = D <= 64;  // Q and dO fragments kept in registers
  static constexpr size_t kSmem =
      static_cast<size_t>(2 * kBr + 2 * kBc) * kPitch * sizeof(T) + kBr * kBc / 8;
};

template <class T, int D>
__global__ void __launch_bounds__(kThreads) attention_bwd_dq_mma_kernel(const Params<T> p) {
  using Cfg = DqMma<T, D>;
  constexpr int kBr = Cfg::kBr, kBc = Cfg::kBc, kPitch = Cfg::kPitch;
  constexpr bool kRegs = Cfg::kRegs;
  constexpr int kNT = kBc / 8, kDT = D / 8, kKS = D / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sdO = sQ + kBr * kPitch;
  T* sK = sdO + kBr * kPitch;
  T* sV = sK + kBc * kPitch;
  uint8_t* sMask = reinterpret_cast<uint8_t*>(sV + kBc * kPitch);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const auto [bh, Tq, Tk, q0, q_end, kv, n_blk, n_kt] = QueryTile<kBr, kBc>(p);
  const T* qh = p.q + bh * Tq * D;
  const T* doh = p.dout + bh * Tq * D;
  const T* kh = p.k + bh * Tk * D;
  const T* vh = p.v + bh * Tk * D;
  T* dqh = p.dq + bh * Tq * D;
  if (n_kt == 0) {
    zero_rows<T, D>(dqh, q0, q_end);
    return;
  }

  // Groups in flight: (Q, dO), V0, K0 -- V first: dP = dO V^T comes before S = Q K^T.
  load_tile<T, D, kBr, kPitch>(sQ, qh, q0, Tq, p.vec);
  load_tile<T, D, kBr, kPitch>(sdO, doh, q0, Tq, p.vec);
  cp_async_commit();
  load_tile<T, D, kBc, kPitch>(sV, vh, 0, n_blk, p.vec);
  cp_async_commit();
  load_tile<T, D, kBc, kPitch>(sK, kh, 0, n_blk, p.vec);
  cp_async_commit();
  cp_async_wait<2>();
  __syncthreads();

  const int r0 = warp * 16;
  uint32_t qa[kRegs ? kKS : 1][4], da[kRegs ? kKS : 1][4];
  if constexpr (kRegs) {
#pragma unroll
    for (int ks = 0; ks < kKS; ++ks) {
      ldsm_x4(qa[ks], a_frag_ptr<kPitch>(sQ, r0, ks, lane));
      ldsm_x4(da[ks], a_frag_ptr<kPitch>(sdO, r0, ks, lane));
    }
  }

  int nv[2];
  float lse2[2], di[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    dq_row_stats(p, bh, Tq, Tk, kv, q0 + r0 + g + 8 * h, nv[h], lse2[h], di[h]);
  }
  float dq[kDT][4];
  zero_acc(dq);
  const bool drop = p.dropout_p > 0.f;

  for (int kt = 0; kt < n_kt; ++kt) {
    const int k0 = kt * kBc;
    if (drop) load_dropout_tile<kBr, kBc>(sMask, p, bh, Tq, Tk, q0, k0);
    cp_async_wait<1>();
    __syncthreads();  // V tile and mask visible

    float dp[kNT][4];  // dO V^T
    zero_acc(dp);
#pragma unroll
    for (int ks = 0; ks < kKS; ++ks) {
      uint32_t a[4];
      a_frag<kRegs, kPitch>(a, da, sdO, r0, ks, lane);
      mma_nk<kPitch>(dp, a, sV, ks, lane);
    }

    cp_async_wait<0>();
    __syncthreads();  // K tile visible; every warp is done with sV
    if (kt + 1 < n_kt) load_tile<T, D, kBc, kPitch>(sV, vh, k0 + kBc, n_blk, p.vec);
    cp_async_commit();

    float s[kNT][4];  // Q K^T, then dS
    zero_acc(s);
#pragma unroll
    for (int ks = 0; ks < kKS; ++ks) {
      uint32_t a[4];
      a_frag<kRegs, kPitch>(a, qa, sQ, r0, ks, lane);
      mma_nk<kPitch>(s, a, sK, ks, lane);
    }

    // dS = P * (drop * dP - D_i), P = exp(scale*s - lse) on visible keys.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint64_t bits = drop ? mask_row<kBc>(sMask + (r0 + g + 8 * h) * (kBc / 8)) : 0;
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int c = nt * 8 + 2 * t + e;
          s[nt][2 * h + e] = dq_dscore<kBc>(p, s[nt][2 * h + e], dp[nt][2 * h + e], k0 + c < nv[h],
                                            drop, bits, c, lse2[h], di[h]);
        }
      }
    }

    // dQ += dS K (K as the col-major B operand: transposed fragments).
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      uint32_t a[4];
      pack_a<T>(a, s, kk);
      mma_kn<kPitch>(dq, a, sK, kk, lane);
    }
    __syncthreads();  // every warp is done with sK and the mask
    if (kt + 1 < n_kt) load_tile<T, D, kBc, kPitch>(sK, kh, k0 + kBc, n_blk, p.vec);
    cp_async_commit();
  }

  // Stage through this warp's own rows of sQ (only this warp read them).
  __syncwarp();
  T* sO = sQ + r0 * kPitch;
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt) {
    stage_frag<kPitch>(sO, dq[dt], dt, g, t, [sc = p.scale](float x, int) { return x * sc; });
  }
  __syncwarp();
  store_rows<T, D, 16, kPitch>(dqh, sO, q0 + r0, Tq, p.vec, lane);
}

// ============================================================================================
// Backward dK, dV, bf16/f16, tensor cores: per key tile, over the query tiles that see it,
// dV += (drop * P)^T dO and dK += dS^T Q (scaled at the end).
// ============================================================================================

template <class T, int D>
struct DkvMma {
  static constexpr int kBc = 64;                  // keys per block, 16 per warp
  static constexpr int kBr = D <= 64 ? 64 : 32;  // query rows per step
  static constexpr int kPitch = D + 8;
  static constexpr bool kRegs = D <= 32;  // K and V fragments kept in registers
  static constexpr size_t kSmem = static_cast<size_t>(2 * kBc + 2 * kBr) * kPitch * sizeof(T) +
                                  2 * kBr * sizeof(float) + kBr * kBc / 8;
};

template <class T, int D>
__global__ void __launch_bounds__(kThreads) attention_bwd_dkdv_mma_kernel(const Params<T> p) {
  using Cfg = DkvMma<T, D>;
  constexpr int kBr = Cfg::kBr, kBc = Cfg::kBc, kPitch = Cfg::kPitch;
  constexpr bool kRegs = Cfg::kRegs;
  constexpr int kQT = kBr / 8, kDT = D / 8, kKS = D / 16;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);
  T* sV = sK + kBc * kPitch;
  T* sQ = sV + kBc * kPitch;
  T* sdO = sQ + kBr * kPitch;
  float* sL = reinterpret_cast<float*>(sdO + kBr * kPitch);  // lse * log2(e) per query row
  float* sD = sL + kBr;                                       // D_i per query row
  uint8_t* sMask = reinterpret_cast<uint8_t*>(sD + kBr);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const auto [bh, Tq, Tk, k0, k_end, kv] = KeyTile<kBc>(p);
  const T* qh = p.q + bh * Tq * D;
  const T* doh = p.dout + bh * Tq * D;
  int qt_begin, qt_end;
  query_tiles_seeing<kBr>(k0, kv, Tq, Tk, p.causal, qt_begin, qt_end);
  if (qt_begin >= qt_end) {  // no query sees these keys
    zero_rows<T, D>(p.dk + bh * Tk * D, k0, k_end);
    zero_rows<T, D>(p.dv + bh * Tk * D, k0, k_end);
    return;
  }

  load_tile<T, D, kBc, kPitch>(sK, p.k + bh * Tk * D, k0, kv, p.vec);  // keys >= kv: zeros
  load_tile<T, D, kBc, kPitch>(sV, p.v + bh * Tk * D, k0, kv, p.vec);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  const int r0 = warp * 16;  // this warp's keys of the tile
  uint32_t ka[kRegs ? kKS : 1][4], va[kRegs ? kKS : 1][4];
  if constexpr (kRegs) {
#pragma unroll
    for (int ks = 0; ks < kKS; ++ks) {
      ldsm_x4(ka[ks], a_frag_ptr<kPitch>(sK, r0, ks, lane));
      ldsm_x4(va[ks], a_frag_ptr<kPitch>(sV, r0, ks, lane));
    }
  }
  const int jk[2] = {k0 + r0 + g, k0 + r0 + g + 8};  // this thread's keys (h = 0, 1)
  float dk[kDT][4], dv[kDT][4];
  zero_acc(dk);
  zero_acc(dv);
  const bool drop = p.dropout_p > 0.f;
  const int diag = Tk - Tq;  // causal: key j visible to row i iff j <= i + diag

  for (int qt = qt_begin; qt < qt_end; ++qt) {
    const int q0 = qt * kBr;
    __syncthreads();  // the previous step is done with sQ, sdO, sL, sD and the mask
    load_tile<T, D, kBr, kPitch>(sQ, qh, q0, Tq, p.vec);
    load_tile<T, D, kBr, kPitch>(sdO, doh, q0, Tq, p.vec);
    cp_async_commit();
    stage_row_stats<kBr>(p, bh, Tq, q0, sL, sD);
    if (drop) load_dropout_tile<kBr, kBc>(sMask, p, bh, Tq, Tk, q0, k0);
    cp_async_wait<0>();
    __syncthreads();

    // S^T = K Q^T and dP^T = V dO^T for this warp's 16 keys x kBr queries.
    float st[kQT][4], dpt[kQT][4];
    zero_acc(st);
    zero_acc(dpt);
#pragma unroll
    for (int ks = 0; ks < kKS; ++ks) {
      uint32_t ak[4], av[4];
      a_frag<kRegs, kPitch>(ak, ka, sK, r0, ks, lane);
      a_frag<kRegs, kPitch>(av, va, sV, r0, ks, lane);
#pragma unroll
      for (int nt = 0; nt < kQT; nt += 2) {
        mma_pair<T>(st[nt], st[nt + 1], ak, b_frag_ptr_nk<kPitch>(sQ, nt, ks, lane));
        mma_pair<T>(dpt[nt], dpt[nt + 1], av, b_frag_ptr_nk<kPitch>(sdO, nt, ks, lane));
      }
    }

    // st[nt][2h+e] is key jk[h] (local row r0+g+8h), query q0 + nt*8 + 2t + e.
    // -> st: drop * P (for dV), dpt: dS = P * (drop * dP - D_i) (for dK).
#pragma unroll
    for (int nt = 0; nt < kQT; ++nt) {
      const int c0 = nt * 8 + 2 * t;
      const float2 l2 = *reinterpret_cast<const float2*>(sL + c0);
      const float2 d2 = *reinterpret_cast<const float2*>(sD + c0);
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int i = q0 + c0 + e;
        const float lv = e ? l2.y : l2.x, dval = e ? d2.y : d2.x;
        const uint64_t bits = drop ? mask_row<kBc>(sMask + (c0 + e) * (kBc / 8)) : 0;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int j = jk[h];
          const bool vis = i < Tq && j < kv && (!p.causal || j <= i + diag);
          dkdv_scores(p, vis, st[nt][2 * h + e], dpt[nt][2 * h + e], drop, bits, r0 + g + 8 * h, lv,
                      dval, st[nt][2 * h + e], dpt[nt][2 * h + e]);
        }
      }
    }

    // dV += Pd^T dO and dK += dS^T Q (dO and Q as col-major B operands: transposed loads).
#pragma unroll
    for (int kq = 0; kq < kBr / 16; ++kq) {
      uint32_t ap[4], as[4];
      pack_a<T>(ap, st, kq);
      pack_a<T>(as, dpt, kq);
#pragma unroll
      for (int dt = 0; dt < kDT; dt += 2) {
        mma_pair_trans<T>(dv[dt], dv[dt + 1], ap, b_frag_ptr_kn<kPitch>(sdO, kq, dt, lane));
        mma_pair_trans<T>(dk[dt], dk[dt + 1], as, b_frag_ptr_kn<kPitch>(sQ, kq, dt, lane));
      }
    }
  }

  // Stage through this warp's own rows of sK and sV (only this warp read them).
  __syncwarp();
  T* sKo = sK + r0 * kPitch;
  T* sVo = sV + r0 * kPitch;
#pragma unroll
  for (int dt = 0; dt < kDT; ++dt) {
    stage_frag<kPitch>(sKo, dk[dt], dt, g, t, [sc = p.scale](float x, int) { return x * sc; });
    stage_frag<kPitch>(sVo, dv[dt], dt, g, t, [](float x, int) { return x; });
  }
  __syncwarp();
  store_rows<T, D, 16, kPitch>(p.dk + bh * Tk * D, sKo, k0 + r0, Tk, p.vec, lane);
  store_rows<T, D, 16, kPitch>(p.dv + bh * Tk * D, sVo, k0 + r0, Tk, p.vec, lane);
}

// ============================================================================================
// Backward dQ, f32, FMA: the lane is the key for dP and S, the head dimension for dS K.
// ============================================================================================

template <int D>
struct DqF32 {
  static constexpr int kR = 8, kBr = 32, kBc = 32, kPitchK = D + 4;
  static constexpr size_t kSmem =
      (static_cast<size_t>(2 * kBr) * D + 2 * kBc * kPitchK + 4 * kR * kBc) * sizeof(float) +
      kBr * kBc / 8;
};

template <int D>
__global__ void __launch_bounds__(kThreads) attention_bwd_dq_f32_kernel(const Params<float> p) {
  using Cfg = DqF32<D>;
  constexpr int kR = Cfg::kR, kBr = Cfg::kBr, kBc = Cfg::kBc, kPK = Cfg::kPitchK, kC = D / 32;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* sQ = reinterpret_cast<float*>(smem_raw);  // [kBr][D]
  float* sdO = sQ + kBr * D;                       // [kBr][D]
  float* sK = sdO + kBr * D;                       // [kBc][kPK]
  float* sV = sK + kBc * kPK;                      // [kBc][kPK]
  float* sP = sV + kBc * kPK;                      // [4 warps][kR][kBc]
  uint8_t* sMask = reinterpret_cast<uint8_t*>(sP + 4 * kR * kBc);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const auto [bh, Tq, Tk, q0, q_end, kv, n_blk, n_kt] = QueryTile<kBr, kBc>(p);
  const float* qh = p.q + bh * Tq * D;
  const float* doh = p.dout + bh * Tq * D;
  const float* kh = p.k + bh * Tk * D;
  const float* vh = p.v + bh * Tk * D;
  float* dqh = p.dq + bh * Tq * D;
  if (n_kt == 0) {
    zero_rows<float, D>(dqh, q0, q_end);
    return;
  }

  // Groups in flight: (Q, dO), V0, K0.
  load_tile<float, D, kBr, D>(sQ, qh, q0, Tq, p.vec);
  load_tile<float, D, kBr, D>(sdO, doh, q0, Tq, p.vec);
  cp_async_commit();
  load_tile<float, D, kBc, kPK>(sV, vh, 0, n_blk, p.vec);
  cp_async_commit();
  load_tile<float, D, kBc, kPK>(sK, kh, 0, n_blk, p.vec);
  cp_async_commit();

  const int r0 = warp * kR;
  float* sPw = sP + warp * kR * kBc;
  int nv[kR];
  float lse2[kR], di[kR], dq[kR][kC];
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    dq_row_stats(p, bh, Tq, Tk, kv, q0 + r0 + r, nv[r], lse2[r], di[r]);
#pragma unroll
    for (int c = 0; c < kC; ++c) dq[r][c] = 0.f;
  }
  const bool drop = p.dropout_p > 0.f;

  for (int kt = 0; kt < n_kt; ++kt) {
    const int k0 = kt * kBc;
    if (drop) load_dropout_tile<kBr, kBc>(sMask, p, bh, Tq, Tk, q0, k0);
    cp_async_wait<1>();
    __syncthreads();  // Q, dO, V tile and mask visible

    float dp[kR];
    dot_rows_f32<D>(dp, sdO, r0, sV + lane * kPK);

    cp_async_wait<0>();
    __syncthreads();  // K tile visible; every warp is done with sV
    if (kt + 1 < n_kt) load_tile<float, D, kBc, kPK>(sV, vh, k0 + kBc, n_blk, p.vec);
    cp_async_commit();

    float s[kR];
    dot_rows_f32<D>(s, sQ, r0, sK + lane * kPK);
    const int j = k0 + lane;
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      sPw[r * kBc + lane] = dq_dscore<kBc>(p, s[r], dp[r], j < nv[r], drop,
                                           sMask + (r0 + r) * (kBc / 8), lane, lse2[r], di[r]);
    }
    __syncwarp();

    pv_rows_f32<kBc, kPK>(dq, sPw, sK, lane);
    __syncthreads();  // every warp is done with sK, sP and the mask
    if (kt + 1 < n_kt) load_tile<float, D, kBc, kPK>(sK, kh, k0 + kBc, n_blk, p.vec);
    cp_async_commit();
  }

#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int i = q0 + r0 + r;
    if (i < Tq) {
#pragma unroll
      for (int c = 0; c < kC; ++c) {
        dqh[static_cast<int64_t>(i) * D + lane + 32 * c] = dq[r][c] * p.scale;
      }
    }
  }
}

// ============================================================================================
// Backward dK, dV, f32, FMA: 8 keys per warp; the lane is the query for S and dP, the head
// dimension for the dV, dK sums.
// ============================================================================================

template <int D>
struct DkvF32 {
  static constexpr int kKw = 8, kBc = 32, kBr = 32, kPitchQ = D + 4;
  static constexpr size_t kSmem = (static_cast<size_t>(2 * kBc) * D + 2 * kBr * kPitchQ + 2 * kBr +
                                   2 * 4 * kBr * kKw) * sizeof(float) +
                                  kBr * kBc / 8;
};

template <int D>
__global__ void __launch_bounds__(kThreads) attention_bwd_dkdv_f32_kernel(const Params<float> p) {
  using Cfg = DkvF32<D>;
  constexpr int kKw = Cfg::kKw, kBc = Cfg::kBc, kBr = Cfg::kBr, kPQ = Cfg::kPitchQ, kC = D / 32;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* sK = reinterpret_cast<float*>(smem_raw);  // [kBc][D]
  float* sV = sK + kBc * D;                        // [kBc][D]
  float* sQ = sV + kBc * D;                        // [kBr][kPQ]
  float* sdO = sQ + kBr * kPQ;                     // [kBr][kPQ]
  float* sL = sdO + kBr * kPQ;                     // [kBr] lse * log2(e)
  float* sD = sL + kBr;                            // [kBr] D_i
  float* sPd = sD + kBr;                           // [4 warps][kBr][kKw] drop * P
  float* sDs = sPd + 4 * kBr * kKw;                // [4 warps][kBr][kKw] dS
  uint8_t* sMask = reinterpret_cast<uint8_t*>(sDs + 4 * kBr * kKw);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const auto [bh, Tq, Tk, k0, k_end, kv] = KeyTile<kBc>(p);
  const float* qh = p.q + bh * Tq * D;
  const float* doh = p.dout + bh * Tq * D;
  const float* kh = p.k + bh * Tk * D;
  const float* vh = p.v + bh * Tk * D;
  float* dkh = p.dk + bh * Tk * D;
  float* dvh = p.dv + bh * Tk * D;
  int qt_begin, qt_end;
  query_tiles_seeing<kBr>(k0, kv, Tq, Tk, p.causal, qt_begin, qt_end);
  if (qt_begin >= qt_end) {
    zero_rows<float, D>(dkh, k0, k_end);
    zero_rows<float, D>(dvh, k0, k_end);
    return;
  }

  load_tile<float, D, kBc, D>(sK, kh, k0, kv, p.vec);
  load_tile<float, D, kBc, D>(sV, vh, k0, kv, p.vec);
  cp_async_commit();

  const int kw0 = warp * kKw;  // this warp's keys: k0 + kw0 + kk
  float dk[kKw][kC], dv[kKw][kC];
#pragma unroll
  for (int kk = 0; kk < kKw; ++kk) {
#pragma unroll
    for (int c = 0; c < kC; ++c) dk[kk][c] = dv[kk][c] = 0.f;
  }
  const bool drop = p.dropout_p > 0.f;
  const int diag = Tk - Tq;
  float* pdw = sPd + warp * kBr * kKw;
  float* dsw = sDs + warp * kBr * kKw;

  for (int qt = qt_begin; qt < qt_end; ++qt) {
    const int q0 = qt * kBr;
    __syncthreads();  // the previous step is done with sQ, sdO, sL, sD and the mask
    load_tile<float, D, kBr, kPQ>(sQ, qh, q0, Tq, p.vec);
    load_tile<float, D, kBr, kPQ>(sdO, doh, q0, Tq, p.vec);
    cp_async_commit();
    stage_row_stats<kBr>(p, bh, Tq, q0, sL, sD);
    if (drop) load_dropout_tile<kBr, kBc>(sMask, p, bh, Tq, Tk, q0, k0);
    cp_async_wait<0>();
    __syncthreads();

    const int i = q0 + lane;  // this lane's query
    float s[kKw], dp[kKw];
#pragma unroll
    for (int kk = 0; kk < kKw; ++kk) s[kk] = dp[kk] = 0.f;
    const float* qrow = sQ + lane * kPQ;
    const float* orow = sdO + lane * kPQ;
#pragma unroll 2
    for (int d = 0; d < D; d += 4) {
      const float4 q4 = *reinterpret_cast<const float4*>(qrow + d);
      const float4 o4 = *reinterpret_cast<const float4*>(orow + d);
#pragma unroll
      for (int kk = 0; kk < kKw; ++kk) {
        const float4 k4 = *reinterpret_cast<const float4*>(sK + (kw0 + kk) * D + d);
        const float4 v4 = *reinterpret_cast<const float4*>(sV + (kw0 + kk) * D + d);
        s[kk] = fmaf(q4.x, k4.x, s[kk]);
        s[kk] = fmaf(q4.y, k4.y, s[kk]);
        s[kk] = fmaf(q4.z, k4.z, s[kk]);
        s[kk] = fmaf(q4.w, k4.w, s[kk]);
        dp[kk] = fmaf(o4.x, v4.x, dp[kk]);
        dp[kk] = fmaf(o4.y, v4.y, dp[kk]);
        dp[kk] = fmaf(o4.z, v4.z, dp[kk]);
        dp[kk] = fmaf(o4.w, v4.w, dp[kk]);
      }
    }
    const float lv = sL[lane], dval = sD[lane];
    const uint64_t bits = drop ? mask_row<kBc>(sMask + lane * (kBc / 8)) : 0;
    float pd[kKw], ds[kKw];
#pragma unroll
    for (int kk = 0; kk < kKw; ++kk) {
      const int j = k0 + kw0 + kk;
      const bool vis = i < Tq && j < kv && (!p.causal || j <= i + diag);
      dkdv_scores(p, vis, s[kk], dp[kk], drop, bits, kw0 + kk, lv, dval, pd[kk], ds[kk]);
    }
    *reinterpret_cast<float4*>(pdw + lane * kKw) = make_float4(pd[0], pd[1], pd[2], pd[3]);
    *reinterpret_cast<float4*>(pdw + lane * kKw + 4) = make_float4(pd[4], pd[5], pd[6], pd[7]);
    *reinterpret_cast<float4*>(dsw + lane * kKw) = make_float4(ds[0], ds[1], ds[2], ds[3]);
    *reinterpret_cast<float4*>(dsw + lane * kKw + 4) = make_float4(ds[4], ds[5], ds[6], ds[7]);
    __syncwarp();

#pragma unroll 2
    for (int ii = 0; ii < kBr; ++ii) {
      float qv[kC], ov[kC];
#pragma unroll
      for (int c = 0; c < kC; ++c) {
        qv[c] = sQ[ii * kPQ + lane + 32 * c];
        ov[c] = sdO[ii * kPQ + lane + 32 * c];
      }
      const float4 pa = *reinterpret_cast<const float4*>(pdw + ii * kKw);
      const float4 pb = *reinterpret_cast<const float4*>(pdw + ii * kKw + 4);
      const float4 da = *reinterpret_cast<const float4*>(dsw + ii * kKw);
      const float4 db = *reinterpret_cast<const float4*>(dsw + ii * kKw + 4);
      const float pv[kKw] = {pa.x, pa.y, pa.z, pa.w, pb.x, pb.y, pb.z, pb.w};
      const float sv[kKw] = {da.x, da.y, da.z, da.w, db.x, db.y, db.z, db.w};
#pragma unroll
      for (int kk = 0; kk < kKw; ++kk) {
#pragma unroll
        for (int c = 0; c < kC; ++c) {
          dv[kk][c] = fmaf(pv[kk], ov[c], dv[kk][c]);
          dk[kk][c] = fmaf(sv[kk], qv[c], dk[kk][c]);
        }
      }
    }
  }

#pragma unroll
  for (int kk = 0; kk < kKw; ++kk) {
    const int j = k0 + kw0 + kk;
    if (j < Tk) {
#pragma unroll
      for (int c = 0; c < kC; ++c) {
        dkh[static_cast<int64_t>(j) * D + lane + 32 * c] = dk[kk][c] * p.scale;
        dvh[static_cast<int64_t>(j) * D + lane + 32 * c] = dv[kk][c];
      }
    }
  }
}

// ============================================================================================
// Host side.
// ============================================================================================

constexpr int64_t kMaxLen = int64_t(1) << 30;

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void check_cuda_args(const AttentionArgs& a, const char* op) {
  ATTN_CHECK(attention_cuda_supports_head_dim(a.head_dim), op, ": head dim ", a.head_dim,
             " is not supported by the CUDA kernels (supported head dims: 32, 64, 128)");
  ATTN_CHECK(a.batch >= 0 && a.heads >= 0 && a.q_len >= 0 && a.k_len >= 0 && a.q_len <= kMaxLen &&
                 a.k_len <= kMaxLen && a.heads <= INT_MAX,
             op, ": sizes out of range for the CUDA kernels (batch ", a.batch, ", heads ", a.heads,
             ", q_len ", a.q_len, ", k_len ", a.k_len, "; lengths up to 2^30)");
}

int grid_size(int64_t blocks, const char* op) {
  ATTN_CHECK(blocks <= INT_MAX, op, ": ", blocks, " thread blocks exceed the CUDA grid limit");
  return static_cast<int>(blocks);
}

// Dynamic shared memory above the default 48 KiB needs an opt-in per kernel and device; done
// once per (kernel, device) for the first 64 devices, on every launch beyond.
template <auto Kernel>
void allow_smem(size_t bytes) {
  if (bytes <= 48 * 1024) return;
  static std::atomic<uint64_t> done{0};
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  const uint64_t bit = device < 64 ? uint64_t(1) << device : 0;
  if (bit != 0 && (done.load(std::memory_order_acquire) & bit) != 0) return;
  CUDA_CHECK(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(bytes)));
  done.fetch_or(bit, std::memory_order_release);
}

template <class F>
void with_head_dim(int64_t d, F&& f) {
  switch (d) {
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    case 128: f(std::integral_constant<int, 128>{}); break;
    default: ATTN_FAIL("attention: head dim ", d, " has no CUDA kernel");
  }
}

// The parameters every kernel takes, with q, k and v as the device types.
template <class T, class DT = typename DeviceType<T>::type>
Params<DT> make_params(const AttentionArgs& a, const T* q, const T* k, const T* v) {
  Params<DT> p;
  p.q = reinterpret_cast<const DT*>(q);
  p.k = reinterpret_cast<const DT*>(k);
  p.v = reinterpret_cast<const DT*>(v);
  p.key_lengths = a.key_lengths;
  p.heads = static_cast<int>(a.heads);
  p.q_len = static_cast<int>(a.q_len);
  p.k_len = static_cast<int>(a.k_len);
  p.scale = static_cast<float>(a.scale);
  p.scale_log2 = static_cast<float>(a.scale * 1.4426950408889634);
  p.dropout_p = a.dropout_p;
  p.keep_scale =
      a.dropout_p > 0.0f ? static_cast<float>(1.0 / (1.0 - static_cast<double>(a.dropout_p))) : 1.0f;
  p.seed = a.seed;
  p.offset = a.offset;
  p.causal = a.causal;
  return p;
}

// Launches a kernel with one block per (b, h, tile of `tile` along `len`) and Cfg::kSmem bytes of
// dynamic shared memory.
template <auto Kernel, class Cfg, class DT>
void launch_tiled(Params<DT>& p, int64_t bh, int64_t len, int tile, const char* op,
                  cudaStream_t stream) {
  p.n_tiles = static_cast<int>(ceil_div(len, tile));
  const int blocks = grid_size(bh * p.n_tiles, op);
  auto kernel = Kernel;
  allow_smem<Kernel>(Cfg::kSmem);
  kernel<<<blocks, kThreads, Cfg::kSmem, stream>>>(p);
  ATTN_CUDA_LAUNCH_CHECK();
}

}  // namespace

template <class T>
void attention_forward_cuda(const AttentionArgs& a, const T* q, const T* k, const T* v, T* out,
                            float* lse, cudaStream_t stream) {
  check_cuda_args(a, "attention");
  const int64_t bh = a.batch * a.heads;
  if (bh * a.q_len == 0) return;
  using DT = typename DeviceType<T>::type;
  Params<DT> p = make_params(a, q, k, v);
  p.out = reinterpret_cast<DT*>(out);
  p.lse = lse;
  p.vec = aligned16(q) && aligned16(k) && aligned16(v) && aligned16(out);
  with_head_dim(a.head_dim, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    if constexpr (std::is_same_v<DT, float>) {
      using Cfg = FwdF32<D>;
      launch_tiled<attention_fwd_f32_kernel<D>, Cfg>(p, bh, a.q_len, Cfg::kBr, "attention", stream);
    } else {
      using Cfg = FwdMma<DT, D>;
      launch_tiled<attention_fwd_mma_kernel<DT, D>, Cfg>(p, bh, a.q_len, Cfg::kBr, "attention",
                                                         stream);
    }
  });
}

template <class T>
void attention_decode_cuda(const AttentionArgs& a, const T* q, const T* k, const T* v, T* out,
                           float* lse, cudaStream_t stream) {
  check_cuda_args(a, "attention_decode");
  ATTN_CHECK(a.q_len == 1 && a.dropout_p == 0.0f,
             "attention_decode: needs q_len 1 and no dropout, got q_len ", a.q_len,
             " and dropout_p ", a.dropout_p);
  const int64_t bh = a.batch * a.heads;
  if (bh == 0) return;
  using DT = typename DeviceType<T>::type;
  Params<DT> p = make_params(a, q, k, v);
  p.out = reinterpret_cast<DT*>(out);
  p.lse = lse;
  p.vec = aligned16(q) && aligned16(k) && aligned16(v);
  p.n_tiles = 1;
  const int blocks = grid_size(bh, "attention_decode");
  with_head_dim(a.head_dim, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    auto kernel = attention_decode_kernel<DT, D>;
    kernel<<<blocks, kThreads, 0, stream>>>(p);
    ATTN_CUDA_LAUNCH_CHECK();
  });
}

template <class T>
void attention_backward_cuda(const AttentionArgs& a, const T* q, const T* k, const T* v,
                             const T* out, const float* lse, const T* grad_out, T* grad_q,
                             T* grad_k, T* grad_v, float* workspace, cudaStream_t stream) {
  check_cuda_args(a, "attention backward");
  const int64_t bh = a.batch * a.heads;
  if (bh == 0) return;
  const int64_t rows = bh * a.q_len;
  using DT = typename DeviceType<T>::type;
  Params<DT> p = make_params(a, q, k, v);
  p.dout = reinterpret_cast<const DT*>(grad_out);
  p.lse_in = lse;
  p.row_dot = workspace;
  p.dq = reinterpret_cast<DT*>(grad_q);
  p.dk = reinterpret_cast<DT*>(grad_k);
  p.dv = reinterpret_cast<DT*>(grad_v);
  p.vec = aligned16(q) && aligned16(k) && aligned16(v) && aligned16(grad_out) &&
          aligned16(grad_q) && aligned16(grad_k) && aligned16(grad_v);
  if (rows > 0) {
    const int blocks = static_cast<int>(std::min<int64_t>(ceil_div(rows, 4), int64_t(1) << 20));
    auto kernel = attention_bwd_rowdot_kernel<DT>;
    kernel<<<blocks, kThreads, 0, stream>>>(reinterpret_cast<const DT*>(grad_out), reinterpret_cast<const DT*>(out), workspace, rows, static_cast<int>(a.head_dim));
    ATTN_CUDA_LAUNCH_CHECK();
  }
  with_head_dim(a.head_dim, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    if constexpr (std::is_same_v<DT, float>) {
      if (rows > 0) {
        using Cfg = DqF32<D>;
        launch_tiled<attention_bwd_dq_f32_kernel<D>, Cfg>(p, bh, a.q_len, Cfg::kBr,
                                                  "attention backward", stream);
      }
      if (a.k_len > 0) {
        using Cfg = DkvF32<D>;
        launch_tiled<attention_bwd_dkdv_f32_kernel<D>, Cfg>(p, bh, a.k_len, Cfg::kBc,
                                                  "attention backward", stream);
      }
    } else {
      if (rows > 0) {
        using Cfg = DqMma<DT, D>;
        launch_tiled<attention_bwd_dq_mma_kernel<DT, D>, Cfg>(p, bh, a.q_len, Cfg::kBr,
                                                  "attention backward", stream);
      }
      if (a.k_len > 0) {
        using Cfg = DkvMma<DT, D>;
        launch_tiled<attention_bwd_dkdv_mma_kernel<DT, D>, Cfg>(p, bh, a.k_len, Cfg::kBc,
                                                  "attention backward", stream);
      }
    }
  });
}

#define ATTN_ATTENTION_CUDA(T)                                                                   \
  template void attention_forward_cuda<T>(const AttentionArgs&, const T*, const T*, const T*, T*, \
                                          float*, cudaStream_t);                                  \
  template void attention_decode_cuda<T>(const AttentionArgs&, const T*, const T*, const T*, T*,  \
                                         float*, cudaStream_t);                                   \
  template void attention_backward_cuda<T>(const AttentionArgs&, const T*, const T*, const T*,    \
                                           const T*, const float*, const T*, T*, T*, T*, float*,  \
                                           cudaStream_t);
ATTN_ATTENTION_CUDA(float)
ATTN_ATTENTION_CUDA(bf16)
ATTN_ATTENTION_CUDA(f16)
#undef ATTN_ATTENTION_CUDA

}  // namespace attn::kernels
