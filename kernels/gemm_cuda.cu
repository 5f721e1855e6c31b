// GEMMs through cuBLASLt (semantics in gemm.h), fp32 accumulation for every storage type.
//
// Row-major to column-major: cuBLASLt works on column-major matrices, and a row-major r x c
// matrix is, byte for byte, the column-major c x r matrix (its transpose). So the row-major
// C = op(A) op(B) (m x n) is computed as the column-major C^T = op(B)^T op(A)^T (n x m):
// cuBLASLt's A is our B and its B is our A, with the same transpose flags, and its (m, n) are
// our (n, m). Consequences for the epilogues: cuBLASLt's bias runs along the rows of its D,
// i.e. along our n (one value per output column of a Linear layer: what we want), and its
// BGRADB reduces its B (our op(A)) over k, giving one value per our row i (length m).
//
// Plans: the matmul descriptor, the three layouts and the algorithm chosen by
// cublasLtMatmulAlgoGetHeuristic are cached per (device, dtype, compute type, epilogue, shape,
// transposes, batch strides, pointer alignments, workspace) in one hash map, so the repeated
// shapes of training ask the heuristic once each. A descriptor is modified per call (the bias
// pointer), so one mutex covers lookup, that update and the enqueue (cublasLtMatmul only
// enqueues: the lock is held for microseconds). Plans are never destroyed (process lifetime).
//
// Pointer alignment: cuBLASLt assumes 256-byte aligned operands unless told otherwise; views
// (narrow0, slices) can start anywhere, so the alignment of each pointer (and of its batch
// stride in bytes) is passed as a preference and is part of the plan's key.
//
// Workspace: the caller's (GemmContext: core gives the device context's 32 MiB with the
// device's own stream); none when ctx.workspace is null, so two streams never share one.
//
// Accumulation: fp32 throughout; for bf16/f16 outputs split-k partial sums are kept in fp32
// too (reduction scheme COMPUTE_TYPE), not rounded to the output type between parts.
//
// k = 0 (an empty sum) is done by a small kernel: C = beta * C, or C = act(bias), and a zero
// bias gradient; cuBLASLt is not asked. Those kernels: 256 threads, a grid-stride loop over
// the output's elements with int64 indices, at most 4096 blocks. Zero m, n or batch: nothing
// is launched.
//
// Memory convention: C is written when beta = 0 (never read, may hold NaN), accumulated when
// beta = 1; the bias gradient is written.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <mutex>
#include <type_traits>
#include <unordered_map>

#include "base/cuda_check.h"
#include "kernels/cuda_common.cuh"
#include "kernels/gemm.h"

namespace attn::kernels {
namespace {

using namespace cuda_common;

template <class T>
constexpr cudaDataType_t cuda_type() {
  if constexpr (std::is_same_v<T, float>) {
    return CUDA_R_32F;
  } else if constexpr (std::is_same_v<T, bf16>) {
    return CUDA_R_16BF;
  } else {
    static_assert(std::is_same_v<T, f16>);
    return CUDA_R_16F;
  }
}

// ---- the k = 0 kernels -------------------------------------------------------------------

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

int blocks_for(int64_t total) { return grid_blocks(total, kThreads, kMaxBlocks); }

// C_i = beta * C_i for every batch entry (beta 0: zeros, C not read). Grid-stride over
// batch * mn elements.
template <class D>
__global__ void gemm_empty_sum_kernel(D* c, int64_t mn, int64_t stride_c, int64_t total,
                                      float beta) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / mn;
    D* p = c + i * stride_c + (idx - i * mn);
    *p = from_f<D>(beta == 0.0f ? 0.0f : beta * to_f(*p));
  }
}

// C[r, j] = act(bias[j]) (bias may be null: 0). Grid-stride over m * n elements.
template <class D>
__global__ void gemm_bias_only_kernel(D* c, const D* bias, int64_t n, int64_t total, bool relu) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = bias ? to_f(bias[idx % n]) : 0.0f;
    if (relu) v = fmaxf(v, 0.0f);
    c[idx] = from_f<D>(v);
  }
}

template <class T>
void empty_sum(const GemmShape& s, double beta, T* c, cudaStream_t stream) {
  using D = typename DeviceType<T>::type;
  const int64_t mn = s.m * s.n;
  const int64_t total = mn * s.batch;
  gemm_empty_sum_kernel<D><<<blocks_for(total), kThreads, 0, stream>>>(
      reinterpret_cast<D*>(c), mn, s.stride_c, total, static_cast<float>(beta));
  ATTN_CUDA_LAUNCH_CHECK();
}

template <class T>
void bias_only(const GemmShape& s, const T* bias, bool relu, T* c, cudaStream_t stream) {
  using D = typename DeviceType<T>::type;
  const int64_t total = s.m * s.n;
  gemm_bias_only_kernel<D><<<blocks_for(total), kThreads, 0, stream>>>(
      reinterpret_cast<D*>(c), reinterpret_cast<const D*>(bias), s.n, total, relu);
  ATTN_CUDA_LAUNCH_CHECK();
}

// ---- plans -------------------------------------------------------------------------------

enum class Epilogue : int { kNone, kRelu, kBias, kBiasRelu, kBiasGradB };

cublasLtEpilogue_t lt_epilogue(Epilogue e) {
  switch (e) {
    case Epilogue::kNone: return CUBLASLT_EPILOGUE_DEFAULT;
    case Epilogue::kRelu: return CUBLASLT_EPILOGUE_RELU;
    case Epilogue::kBias: return CUBLASLT_EPILOGUE_BIAS;
    case Epilogue::kBiasRelu: return CUBLASLT_EPILOGUE_RELU_BIAS;
    case Epilogue::kBiasGradB: return CUBLASLT_EPILOGUE_BGRADB;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

struct PlanKey {
  int device;
  int dtype;    // cudaDataType_t
  int compute;  // cublasComputeType_t
  int epilogue;
  int64_t m, n, k, batch, stride_a, stride_b, stride_c;  // strides 0 when batch == 1
  int trans_a, trans_b;
  uint32_t align_a, align_b, align_c, align_bias;  // bytes, powers of two <= 256
  int use_workspace;
  bool operator==(const PlanKey&) const = default;
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    uint64_t h = 0xcbf29ce484222325ull;
    auto mix = [&h](uint64_t v) {
      h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    };
    mix(static_cast<uint64_t>(k.device));
    mix(static_cast<uint64_t>(k.dtype));
    mix(static_cast<uint64_t>(k.compute));
    mix(static_cast<uint64_t>(k.epilogue));
    mix(static_cast<uint64_t>(k.m));
    mix(static_cast<uint64_t>(k.n));
    mix(static_cast<uint64_t>(k.k));
    mix(static_cast<uint64_t>(k.batch));
    mix(static_cast<uint64_t>(k.stride_a));
    mix(static_cast<uint64_t>(k.stride_b));
    mix(static_cast<uint64_t>(k.stride_c));
    mix(static_cast<uint64_t>(k.trans_a) | static_cast<uint64_t>(k.trans_b) << 1 |
        static_cast<uint64_t>(k.use_workspace) << 2);
    mix(static_cast<uint64_t>(k.align_a) | static_cast<uint64_t>(k.align_b) << 16 |
        static_cast<uint64_t>(k.align_c) << 32 | static_cast<uint64_t>(k.align_bias) << 48);
    return static_cast<size_t>(h);
  }
};

struct Plan {
  bool supported = false;  // false: cuBLASLt offered no algorithm (remembered, not re-asked)
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t lt_a = nullptr;  // cuBLASLt's A = our B
  cublasLtMatrixLayout_t lt_b = nullptr;  // cuBLASLt's B = our A
  cublasLtMatrixLayout_t lt_c = nullptr;  // C and D
  cublasLtMatmulAlgo_t algo{};
  size_t workspace_bytes = 0;
};

std::mutex g_plans_mu;
std::unordered_map<PlanKey, Plan, PlanKeyHash>& plans() {
  static auto* m = new std::unordered_map<PlanKey, Plan, PlanKeyHash>();  // never destroyed
  return *m;
}

// The largest power of two (<= 256) dividing the address and, for batches, the stride.
uint32_t alignment(const void* p, int64_t stride_elems, int64_t batch, size_t elem_bytes) {
  uint64_t x = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p)) | 256u;
  if (batch > 1) x |= static_cast<uint64_t>(stride_elems) * elem_bytes;
  return static_cast<uint32_t>(x & (~x + 1));
}

cublasLtMatrixLayout_t make_layout(cudaDataType_t dt, int64_t rows, int64_t cols, int64_t ld,
                                   int64_t batch, int64_t stride) {
  cublasLtMatrixLayout_t layout = nullptr;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, dt, static_cast<uint64_t>(rows),
                                          static_cast<uint64_t>(cols), ld));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                  &count, sizeof(count)));
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
        layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
  return layout;
}

// Frees a plan's descriptors on the paths that give a plan up (no algorithm, or an error about
// to be thrown). The destroys only free host memory and leave no CUDA error state, so their
// status is deliberately ignored rather than masking the reason the plan is dropped.
void destroy(Plan& p) {
  if (p.op) (void)cublasLtMatmulDescDestroy(p.op);
  if (p.lt_a) (void)cublasLtMatrixLayoutDestroy(p.lt_a);
  if (p.lt_b) (void)cublasLtMatrixLayoutDestroy(p.lt_b);
  if (p.lt_c) (void)cublasLtMatrixLayoutDestroy(p.lt_c);
  p = Plan{};
}

// `epilogue_ptr` is the bias (or bias gradient) the heuristic sees: its alignment matters.
Plan make_plan(const PlanKey& key, cublasLtHandle_t handle, size_t max_workspace,
               const void* epilogue_ptr) {
  Plan p;
  const auto dt = static_cast<cudaDataType_t>(key.dtype);
  const int64_t m = key.m, n = key.n, k = key.k;
  // Our B, row-major (trans_b ? n x k : k x n), read column-major.
  p.lt_a = key.trans_b ? make_layout(dt, k, n, k, key.batch, key.stride_b)
                       : make_layout(dt, n, k, n, key.batch, key.stride_b);
  // Our A, row-major (trans_a ? k x m : m x k), read column-major.
  p.lt_b = key.trans_a ? make_layout(dt, m, k, m, key.batch, key.stride_a)
                       : make_layout(dt, k, m, k, key.batch, key.stride_a);
  // C, row-major m x n = column-major n x m.
  p.lt_c = make_layout(dt, n, m, n, key.batch, key.stride_c);

  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, static_cast<cublasComputeType_t>(key.compute),
                                        CUDA_R_32F));
  const cublasOperation_t op_a = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  const auto epi = static_cast<Epilogue>(key.epilogue);
  if (epi != Epilogue::kNone) {
    const cublasLtEpilogue_t e = lt_epilogue(epi);
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof(e)));
  }
  if (epilogue_ptr) {
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                &epilogue_ptr, sizeof(epilogue_ptr)));
    const int32_t bias_type = static_cast<int32_t>(dt);
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                &bias_type, sizeof(bias_type)));
  }

  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = max_workspace;
  const uint32_t align_lt_a = key.align_b, align_lt_b = key.align_a, align_cd = key.align_c;
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                              &align_lt_a, sizeof(align_lt_a));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                              &align_lt_b, sizeof(align_lt_b));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                              &align_cd, sizeof(align_cd));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                              &align_cd, sizeof(align_cd));
  // Split-k partial sums of 16-bit outputs stay in fp32: the in-place and output-type
  // reduction schemes would round them to bf16/f16 (fp32 accumulation is the contract).
  // Algorithms without split-k (scheme NONE) pass any mask.
  const bool narrow_output = dt != CUDA_R_32F;
  const uint32_t fp32_reductions = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  if (st == CUBLAS_STATUS_SUCCESS && narrow_output)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                              &fp32_reductions, sizeof(fp32_reductions));
  cublasLtMatmulHeuristicResult_t result{};
  int count = 0;
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(handle, p.op, p.lt_a, p.lt_b, p.lt_c, p.lt_c, pref, 1,
                                        &result, &count);
  if (narrow_output && (st == CUBLAS_STATUS_NOT_SUPPORTED ||
                        (st == CUBLAS_STATUS_SUCCESS && count == 0))) {
    // Better a result with a rounded split-k reduction than none.
    const uint32_t any_reduction = CUBLASLT_REDUCTION_SCHEME_MASK;
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                              &any_reduction, sizeof(any_reduction));
    if (st == CUBLAS_STATUS_SUCCESS)
      st = cublasLtMatmulAlgoGetHeuristic(handle, p.op, p.lt_a, p.lt_b, p.lt_c, p.lt_c, pref, 1,
                                          &result, &count);
  }
  (void)cublasLtMatmulPreferenceDestroy(pref);  // host memory only; st decides below
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || (st == CUBLAS_STATUS_SUCCESS && count == 0)) {
    destroy(p);  // supported = false
    return p;
  }
  if (st != CUBLAS_STATUS_SUCCESS) {
    destroy(p);
    detail::throw_cublas_error(st, "cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__);
  }
  p.algo = result.algo;
  p.workspace_bytes = result.workspaceSize;
  p.supported = true;
  return p;
}

// Runs one cuBLASLt matmul with the cached plan. Returns false when cuBLASLt has no
// algorithm for it (nothing was enqueued).
template <class T>
bool run(const GemmShape& s, float alpha, const T* a, const T* b, float beta, T* c,
         Epilogue epi, const void* epilogue_ptr, const GemmContext& ctx) {
  ATTN_CHECK(s.batch <= INT32_MAX, "gemm: batch of ", s.batch, " exceeds cuBLASLt's limit");
  ATTN_CHECK(ctx.blaslt != nullptr, "gemm: no cuBLASLt handle in the GemmContext");
  const int device = ctx.device;
  const bool use_workspace = ctx.workspace != nullptr && ctx.workspace_bytes > 0;

  int compute = CUBLAS_COMPUTE_32F;
  if constexpr (std::is_same_v<T, float>) {
    if (ctx.allow_tf32) compute = CUBLAS_COMPUTE_32F_FAST_TF32;
  }
  const bool batched = s.batch > 1;
  PlanKey key{};
  key.device = device;
  key.dtype = cuda_type<T>();
  key.compute = compute;
  key.epilogue = static_cast<int>(epi);
  key.m = s.m;
  key.n = s.n;
  key.k = s.k;
  key.batch = s.batch;
  key.stride_a = batched ? s.stride_a : 0;
  key.stride_b = batched ? s.stride_b : 0;
  key.stride_c = batched ? s.stride_c : 0;
  key.trans_a = s.trans_a;
  key.trans_b = s.trans_b;
  key.align_a = alignment(a, s.stride_a, s.batch, sizeof(T));
  key.align_b = alignment(b, s.stride_b, s.batch, sizeof(T));
  key.align_c = alignment(c, s.stride_c, s.batch, sizeof(T));
  key.align_bias = epilogue_ptr ? alignment(epilogue_ptr, 0, 1, sizeof(T)) : 0;
  key.use_workspace = use_workspace;

  std::lock_guard<std::mutex> lock(g_plans_mu);
  auto& cache = plans();
  auto it = cache.find(key);
  if (it == cache.end()) {
    Plan p = make_plan(key, ctx.blaslt, use_workspace ? ctx.workspace_bytes : 0, epilogue_ptr);
    it = cache.emplace(key, p).first;
  }
  Plan& p = it->second;
  if (!p.supported) return false;
  if (epilogue_ptr) {
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                &epilogue_ptr, sizeof(epilogue_ptr)));
  }
  CUBLAS_CHECK(cublasLtMatmul(ctx.blaslt, p.op, &alpha, b, p.lt_a, a, p.lt_b, &beta, c, p.lt_c,
                              c, p.lt_c, &p.algo, use_workspace ? ctx.workspace : nullptr,
                              use_workspace ? p.workspace_bytes : 0, ctx.stream));
  return true;
}

void check_shape(const char* fn, const GemmShape& s) {
  ATTN_CHECK(s.m >= 0 && s.n >= 0 && s.k >= 0 && s.batch >= 0, fn, ": negative size (m ", s.m,
             ", n ", s.n, ", k ", s.k, ", batch ", s.batch, ")");
  ATTN_CHECK(s.batch <= 1 || s.stride_c >= s.m * s.n, fn, ": batch entries of C overlap (stride ",
             s.stride_c, " for ", s.m, " x ", s.n, ")");
}

}  // namespace

template <class T>
void gemm_cuda(const GemmShape& s, double alpha, const T* a, const T* b, double beta, T* c,
               const GemmContext& ctx) {
  check_shape("gemm", s);
  if (s.m == 0 || s.n == 0 || s.batch == 0) return;
  if (s.k == 0) {
    empty_sum(s, beta, c, ctx.stream);
    return;
  }
  const bool ok = run<T>(s, static_cast<float>(alpha), a, b, static_cast<float>(beta), c,
                         Epilogue::kNone, nullptr, ctx);
  ATTN_CHECK(ok, "gemm: cuBLASLt has no algorithm for ", s.m, " x ", s.n, " x ", s.k,
             " (batch ", s.batch, ", trans_a ", s.trans_a, ", trans_b ", s.trans_b, ")");
}

template <class T>
bool gemm_bias_cuda(const GemmShape& s, const T* a, const T* b, const T* bias, bool relu, T* c,
                    const GemmContext& ctx) {
  check_shape("gemm_bias", s);
  ATTN_CHECK(s.batch == 1, "gemm_bias: batch must be 1, got ", s.batch);
  if (s.m == 0 || s.n == 0) return true;
  if (s.k == 0) {
    bias_only(s, bias, relu, c, ctx.stream);
    return true;
  }
  const Epilogue epi = bias ? (relu ? Epilogue::kBiasRelu : Epilogue::kBias)
                            : (relu ? Epilogue::kRelu : Epilogue::kNone);
  return run<T>(s, 1.0f, a, b, 0.0f, c, epi, bias, ctx);
}

template <class T>
bool gemm_bias_grad_cuda(const GemmShape& s, const T* a, const T* b, T* c, T* bias_grad,
                         const GemmContext& ctx) {
  check_shape("gemm_bias_grad", s);
  ATTN_CHECK(s.batch == 1, "gemm_bias_grad: batch must be 1, got ", s.batch);
  if (s.m == 0) return true;   // C and the bias gradient are empty
  if (s.n == 0) return false;  // C is empty but the bias gradient is not: no GEMM to fuse with
  if (s.k == 0) {
    empty_sum(s, 0.0, c, ctx.stream);
    CUDA_CHECK(cudaMemsetAsync(bias_grad, 0, static_cast<size_t>(s.m) * sizeof(T), ctx.stream));
    return true;
  }
  return run<T>(s, 1.0f, a, b, 0.0f, c, Epilogue::kBiasGradB, bias_grad, ctx);
}

int64_t gemm_cuda_plan_count() {
  std::lock_guard<std::mutex> lock(g_plans_mu);
  return static_cast<int64_t>(plans().size());
}

#define ATTN_INSTANTIATE(T)                                                                    \
  template void gemm_cuda<T>(const GemmShape&, double, const T*, const T*, double, T*,        \
                             const GemmContext&);                                              \
  template bool gemm_bias_cuda<T>(const GemmShape&, const T*, const T*, const T*, bool, T*,    \
                                  const GemmContext&);                                         \
  template bool gemm_bias_grad_cuda<T>(const GemmShape&, const T*, const T*, T*, T*,           \
                                       const GemmContext&);
ATTN_FOR_EACH_FLOAT_TYPE(ATTN_INSTANTIATE)
#undef ATTN_INSTANTIATE

}  // namespace attn::kernels
