// Multi-tensor optimizer kernels on the GPU (kernels/adam.h): the global gradient norm with
// the clip factor, and the fused Adam/AdamW update of every parameter, each in one launch with
// no host synchronisation.
//
// Tables: the host lists the tensors (pointers, sizes, element type, whether 16-byte vector
// access is possible) and cuts each into chunks of kChunk = 65536 elements; chunk entries are
// (tensor, chunk index). The table goes to the device through a pinned staging buffer with an
// async copy on the launch stream; when the table is byte-identical to the previous one of the
// same kind on this device (the usual case: parameters never move and the caching allocator
// hands back the same gradient buffers every step) nothing is copied. Block b processes chunk
// b; its element type is uniform across the block, so the type switch costs nothing.
//
// Norm: each thread widens its elements exactly to f64 (16-byte loads when aligned), squares
// and accumulates them in f64 (one DFMA per element: still memory bound); warp shuffles and
// shared memory add the 256 per-thread sums in a fixed order into one partial per chunk
// (workspace); then a single block adds the partials in chunk order and applies
// clip_state_update (kernels/adam.h) on the device. The result depends only on the table:
// deterministic.
//
// Adam: 4 elements per access of each array (16 bytes for f32, 8 for bf16/f16, which keeps the
// 16-bit paths within 64 registers); per element, exactly adam_step_cpu's operations in fp32
// with explicitly rounded intrinsics (no FMA contraction; IEEE sqrt and division), so f32
// results are bit-identical to adam_step_cpu<float>. With a clip state, the gradient is first
// multiplied by float(state[kClipFactor]) (as the CPU's in-place clip_scale_), and a
// non-finite norm makes every block return before touching memory.
//
// Launch: 256 threads per block, one block per chunk; the finalize kernel is one block.
// Memory: param, exp_avg, exp_avg_sq updated in place; gradients only read; the clip state's
// window slots accumulate (kClipNormSum, kClipSteps, kClipNonfinite); table and partial
// buffers are per device and reused in stream order, so every launch for one device must use
// the same stream (attn's convention: cuda::stream(device)); a change of stream waits for the
// previous one first.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

#include "base/cuda_check.h"
#include "kernels/adam.h"
#include "kernels/cuda_common.cuh"

namespace attn::kernels {
namespace {

using namespace cuda_common;

constexpr int kThreads = 256;
constexpr int64_t kChunk = 1 << 16;
constexpr int kMaxDevices = 64;

// Adam moves four arrays at once: 4 elements per access for every type keeps the 16-bit paths
// within the register budget (16-byte accesses for f32, 8-byte for bf16/f16).
template <class T>
using Pack4 = Pack<T, 4>;

// ---- device tables ----
struct ChunkEntry {
  int32_t tensor;
  int32_t chunk;
};

struct AdamEntry {
  void* param;
  const void* grad;
  void* m;
  void* v;
  int64_t n;
  int32_t type;  // MultiTensorType
  int32_t vec;   // all four pointers 16-byte aligned
};

struct NormEntry {
  const void* x;
  int64_t n;
  int32_t type;
  int32_t vec;
};

// adam_step_cpu's float constants, rounded from double exactly as it does.
struct AdamConstants {
  float decay, b1, one_minus_b1, b2, one_minus_b2, step_size, sqrt_bc2, eps;
  int decays;
};

// A per-device, per-kind staging area: the table on the device (with the last uploaded bytes,
// to skip identical uploads), two pinned host buffers used in turn, and device scratch.
class TableBuffer {
 public:
  // Returns the device copy of `bytes`. The copy is ordered on `stream`.
  const void* upload(const std::vector<unsigned char>& bytes, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mu_);
    switch_stream(stream);
    if (valid_ && bytes == last_) return dev_;
    valid_ = false;
    grow_device(&dev_, &dev_cap_, bytes.size());
    const int slot = next_;
    next_ ^= 1;
    if (copied_[slot] == nullptr) {
      CUDA_CHECK(cudaEventCreateWithFlags(&copied_[slot], cudaEventDisableTiming));
    } else {
      CUDA_CHECK(cudaEventSynchronize(copied_[slot]));  // its previous copy has left the buffer
    }
    if (bytes.size() > host_cap_[slot]) {
      if (host_[slot] != nullptr) CUDA_CHECK(cudaFreeHost(host_[slot]));
      host_[slot] = nullptr;
      host_cap_[slot] = 0;
      const size_t cap = std::max<size_t>(bytes.size() * 2, 4096);
      CUDA_CHECK(cudaMallocHost(&host_[slot], cap));
      host_cap_[slot] = cap;
    }
    std::memcpy(host_[slot], bytes.data(), bytes.size());
    CUDA_CHECK(cudaMemcpyAsync(dev_, host_[slot], bytes.size(), cudaMemcpyHostToDevice, stream));
    CUDA_CHECK(cudaEventRecord(copied_[slot], stream));
    last_ = bytes;
    valid_ = true;
    return dev_;
  }

  // Device scratch of at least `bytes`, ordered on `stream` like the table.
  void* scratch(size_t bytes, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mu_);
    switch_stream(stream);
    grow_device(&scratch_, &scratch_cap_, bytes);
    return scratch_;
  }

 private:
  // Buffers last used on another stream may still be read there.
  void switch_stream(cudaStream_t stream) {
    if (used_ && stream != stream_) CUDA_CHECK(cudaStreamSynchronize(stream_));
    stream_ = stream;
    used_ = true;
  }

  // cudaFree waits for the device to finish with the old buffer.
  static void grow_device(void** ptr, size_t* cap, size_t bytes) {
    if (bytes <= *cap) return;
    if (*ptr != nullptr) CUDA_CHECK(cudaFree(*ptr));
    *ptr = nullptr;
    *cap = 0;
    const size_t want = std::max<size_t>(bytes * 2, 4096);
    CUDA_CHECK(cudaMalloc(ptr, want));
    *cap = want;
  }

  std::mutex mu_;
  bool used_ = false;
  cudaStream_t stream_ = nullptr;
  void* dev_ = nullptr;
  size_t dev_cap_ = 0;
  std::vector<unsigned char> last_;
  bool valid_ = false;
  void* host_[2] = {nullptr, nullptr};
  size_t host_cap_[2] = {0, 0};
  cudaEvent_t copied_[2] = {nullptr, nullptr};
  int next_ = 0;
  void* scratch_ = nullptr;
  size_t scratch_cap_ = 0;
};

enum class TableKind { kNorm = 0, kAdam = 1 };

// Never destroyed: CUDA may already be shut down when static destructors run.
TableBuffer& table_buffer(TableKind kind) {
  static std::mutex mu;
  static TableBuffer* buffers[kMaxDevices][2] = {};
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  ATTN_CHECK(device >= 0 && device < kMaxDevices, "multi-tensor kernels: device ", device,
             " out of range");
  std::lock_guard<std::mutex> lock(mu);
  TableBuffer*& b = buffers[device][static_cast<int>(kind)];
  if (b == nullptr) b = new TableBuffer();
  return *b;
}

int64_t chunks_of(int64_t n) { return (n + kChunk - 1) / kChunk; }

// Appends tensor `t`'s chunks; checks that the chunk count fits the grid.
void add_chunks(std::vector<ChunkEntry>& chunks, int32_t t, int64_t n) {
  const int64_t c = chunks_of(n);
  ATTN_CHECK(static_cast<int64_t>(chunks.size()) + c <= INT_MAX,
             "multi-tensor kernels: too many elements for one launch");
  for (int64_t i = 0; i < c; ++i) chunks.push_back({t, static_cast<int32_t>(i)});
}

// [entries][chunks] as bytes; chunk entries start at `chunks_offset`.
template <class Entry>
std::vector<unsigned char> pack_table(const std::vector<Entry>& entries,
                                      const std::vector<ChunkEntry>& chunks,
                                      size_t* chunks_offset) {
  const size_t eb = entries.size() * sizeof(Entry);
  const size_t off = (eb + 15) / 16 * 16;
  std::vector<unsigned char> bytes(off + chunks.size() * sizeof(ChunkEntry), 0);
  if (eb) std::memcpy(bytes.data(), entries.data(), eb);
  if (!chunks.empty())
    std::memcpy(bytes.data() + off, chunks.data(), chunks.size() * sizeof(ChunkEntry));
  *chunks_offset = off;
  return bytes;
}

// ---- sum of squares ----
__device__ __forceinline__ double square_add(double acc, float x) {
  const double d = static_cast<double>(x);
  return fma(d, d, acc);
}

template <class T>
__device__ double chunk_sum_squares(const T* x, int64_t len, bool vec) {
  double acc = 0.0;
  int64_t first_scalar = 0;
  if (vec) {
    constexpr int V = Pack<T>::kN;
    const int64_t packs = len / V;
    const Pack<T>* xp = reinterpret_cast<const Pack<T>*>(x);
    for (int64_t i = threadIdx.x; i < packs; i += kThreads) {
      const Pack<T> p = xp[i];
#pragma unroll
      for (int j = 0; j < V; ++j) acc = square_add(acc, to_f(p.v[j]));
    }
    first_scalar = packs * V;
  }
  for (int64_t i = first_scalar + threadIdx.x; i < len; i += kThreads)
    acc = square_add(acc, to_f(x[i]));
  return acc;
}

__global__ void __launch_bounds__(kThreads)
    sum_squares_chunks_kernel(const NormEntry* __restrict__ entries,
                              const ChunkEntry* __restrict__ chunks, double* __restrict__ partial) {
  const ChunkEntry c = chunks[blockIdx.x];
  const NormEntry e = entries[c.tensor];
  const int64_t start = static_cast<int64_t>(c.chunk) * kChunk;
  const int64_t len = e.n - start < kChunk ? e.n - start : kChunk;
  double acc = 0.0;
  switch (static_cast<MultiTensorType>(e.type)) {
    case MultiTensorType::kF32:
      acc = chunk_sum_squares(static_cast<const float*>(e.x) + start, len, e.vec != 0);
      break;
    case MultiTensorType::kBF16:
      acc = chunk_sum_squares(static_cast<const bf16*>(e.x) + start, len, e.vec != 0);
      break;
    case MultiTensorType::kF16:
      acc = chunk_sum_squares(static_cast<const f16*>(e.x) + start, len, e.vec != 0);
      break;
  }
  acc = block_sum<kThreads>(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// One block: adds the partials in order and updates the clip state.
__global__ void __launch_bounds__(kThreads)
    norm_finalize_kernel(const double* __restrict__ partial, int64_t count, double max_norm,
                         double loss_scale, double* __restrict__ state) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) acc += partial[i];
  acc = block_sum<kThreads>(acc);
  if (threadIdx.x == 0) clip_state_update(state, acc, max_norm, loss_scale);
}

// ---- Adam ----
// adam_step_cpu's loop body, operation for operation.
__device__ __forceinline__ void adam_update(float& p, float g, float& m, float& v,
                                            const AdamConstants& k, float clip) {
  g = __fmul_rn(clip, g);
  if (k.decays) p = __fmul_rn(p, k.decay);
  m = __fadd_rn(__fmul_rn(k.b1, m), __fmul_rn(k.one_minus_b1, g));
  v = __fadd_rn(__fmul_rn(k.b2, v), __fmul_rn(k.one_minus_b2, __fmul_rn(g, g)));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), k.sqrt_bc2), k.eps);
  p = __fsub_rn(p, __fmul_rn(k.step_size, __fdiv_rn(m, denom)));
}

template <class T>
__device__ void adam_chunk(const AdamEntry& e, int64_t start, int64_t len,
                           const AdamConstants& k, float clip) {
  T* param = static_cast<T*>(e.param) + start;
  const T* grad = static_cast<const T*>(e.grad) + start;
  T* m = static_cast<T*>(e.m) + start;
  T* v = static_cast<T*>(e.v) + start;
  int64_t first_scalar = 0;
  if (e.vec) {
    constexpr int V = Pack4<T>::kN;
    const int64_t packs = len / V;
    for (int64_t i = threadIdx.x; i < packs; i += kThreads) {
      Pack4<T> pp = reinterpret_cast<const Pack4<T>*>(param)[i];
      const Pack4<T> pg = reinterpret_cast<const Pack4<T>*>(grad)[i];
      Pack4<T> pm = reinterpret_cast<const Pack4<T>*>(m)[i];
      Pack4<T> pv = reinterpret_cast<const Pack4<T>*>(v)[i];
#pragma unroll
      for (int j = 0; j < V; ++j) {
        float p = to_f(pp.v[j]), mm = to_f(pm.v[j]), vv = to_f(pv.v[j]);
        adam_update(p, to_f(pg.v[j]), mm, vv, k, clip);
        pp.v[j] = from_f<T>(p);
        pm.v[j] = from_f<T>(mm);
        pv.v[j] = from_f<T>(vv);
      }
      reinterpret_cast<Pack4<T>*>(param)[i] = pp;
      reinterpret_cast<Pack4<T>*>(m)[i] = pm;
      reinterpret_cast<Pack4<T>*>(v)[i] = pv;
    }
    first_scalar = packs * V;
  }
  for (int64_t i = first_scalar + threadIdx.x; i < len; i += kThreads) {
    float p = to_f(param[i]), mm = to_f(m[i]), vv = to_f(v[i]);
    adam_update(p, to_f(grad[i]), mm, vv, k, clip);
    param[i] = from_f<T>(p);
    m[i] = from_f<T>(mm);
    v[i] = from_f<T>(vv);
  }
}

// At most 64 registers: 4 blocks (1024 threads) per SM keep enough loads in flight.
__global__ void __launch_bounds__(kThreads, 4)
    adam_chunks_kernel(const AdamEntry* __restrict__ entries,
                       const ChunkEntry* __restrict__ chunks, AdamConstants k,
                       const double* __restrict__ clip_state) {
  float clip = 1.0f;
  if (clip_state != nullptr) {
    if (!isfinite(clip_state[kClipNorm])) return;  // the step is skipped everywhere
    clip = static_cast<float>(clip_state[kClipFactor]);
  }
  const ChunkEntry c = chunks[blockIdx.x];
  const AdamEntry e = entries[c.tensor];
  const int64_t start = static_cast<int64_t>(c.chunk) * kChunk;
  const int64_t len = e.n - start < kChunk ? e.n - start : kChunk;
  switch (static_cast<MultiTensorType>(e.type)) {
    case MultiTensorType::kF32: adam_chunk<float>(e, start, len, k, clip); break;
    case MultiTensorType::kBF16: adam_chunk<bf16>(e, start, len, k, clip); break;
    case MultiTensorType::kF16: adam_chunk<f16>(e, start, len, k, clip); break;
  }
}

}  // namespace

void grad_norm_multi_cuda(const NormTensorRef* tensors, int64_t count, double max_norm,
                          double loss_scale, double* state, cudaStream_t stream) {
  std::vector<NormEntry> entries;
  std::vector<ChunkEntry> chunks;
  for (int64_t i = 0; i < count; ++i) {
    const NormTensorRef& t = tensors[i];
    if (t.n <= 0) continue;
    const int32_t idx = static_cast<int32_t>(entries.size());
    entries.push_back({t.x, t.n, static_cast<int32_t>(t.type), aligned16(t.x) ? 1 : 0});
    add_chunks(chunks, idx, t.n);
  }
  const double* partial = nullptr;
  if (!chunks.empty()) {
    TableBuffer& tb = table_buffer(TableKind::kNorm);
    size_t off = 0;
    const std::vector<unsigned char> bytes = pack_table(entries, chunks, &off);
    const unsigned char* dev = static_cast<const unsigned char*>(tb.upload(bytes, stream));
    double* scratch = static_cast<double*>(tb.scratch(chunks.size() * sizeof(double), stream));
    sum_squares_chunks_kernel<<<static_cast<unsigned>(chunks.size()), kThreads, 0, stream>>>(
        reinterpret_cast<const NormEntry*>(dev), reinterpret_cast<const ChunkEntry*>(dev + off),
        scratch);
    ATTN_CUDA_LAUNCH_CHECK();
    partial = scratch;
  }
  norm_finalize_kernel<<<1, kThreads, 0, stream>>>(partial, static_cast<int64_t>(chunks.size()),
                                                   max_norm, loss_scale, state);
  ATTN_CUDA_LAUNCH_CHECK();
}

void adam_step_multi_cuda(const AdamTensorRef* tensors, int64_t count, double lr, double beta1,
                          double beta2, double eps, double weight_decay, double bias_correction1,
                          double bias_correction2, const double* clip_state, cudaStream_t stream) {
  std::vector<AdamEntry> entries;
  std::vector<ChunkEntry> chunks;
  for (int64_t i = 0; i < count; ++i) {
    const AdamTensorRef& t = tensors[i];
    if (t.n <= 0) continue;
    const bool vec = aligned16(t.param) && aligned16(t.grad) && aligned16(t.m) && aligned16(t.v);
    const int32_t idx = static_cast<int32_t>(entries.size());
    entries.push_back({t.param, t.grad, t.m, t.v, t.n, static_cast<int32_t>(t.type), vec ? 1 : 0});
    add_chunks(chunks, idx, t.n);
  }
  if (chunks.empty()) return;
  // The constants exactly as adam_step_cpu<float> rounds them.
  AdamConstants k;
  k.decay = static_cast<float>(1.0 - lr * weight_decay);
  k.b1 = static_cast<float>(beta1);
  k.one_minus_b1 = static_cast<float>(1.0 - beta1);
  k.b2 = static_cast<float>(beta2);
  k.one_minus_b2 = static_cast<float>(1.0 - beta2);
  k.step_size = static_cast<float>(lr / bias_correction1);
  k.sqrt_bc2 = static_cast<float>(std::sqrt(bias_correction2));
  k.eps = static_cast<float>(eps);
  k.decays = weight_decay != 0.0 ? 1 : 0;
  TableBuffer& tb = table_buffer(TableKind::kAdam);
  size_t off = 0;
  const std::vector<unsigned char> bytes = pack_table(entries, chunks, &off);
  const unsigned char* dev = static_cast<const unsigned char*>(tb.upload(bytes, stream));
  adam_chunks_kernel<<<static_cast<unsigned>(chunks.size()), kThreads, 0, stream>>>(
      reinterpret_cast<const AdamEntry*>(dev), reinterpret_cast<const ChunkEntry*>(dev + off), k,
      clip_state);
  ATTN_CUDA_LAUNCH_CHECK();
}

}  // namespace attn::kernels
