// Strided batched GEMM on row-major matrices: for each batch index i,
//   C_i = alpha * op(A_i) @ op(B_i) + beta * C_i
// with op(X) = X or X^T, A_i = A + i * stride_a (stride 0 shares one matrix across the
// batch). beta = 1 accumulates (parameter gradients), beta = 0 overwrites (C is not read,
// so it may hold garbage).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/types.h"

struct cublasLtContext;

namespace attn::kernels {

// What a cuBLASLt GEMM runs with, given by the caller (core's cuda::gemm_context(device), which
// also makes `device` current): the device, its stream, the cuBLASLt handle, a workspace that
// only this stream uses (nullptr: none), and whether f32 GEMMs may use TF32 tensor cores.
struct GemmContext {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasLtContext* blaslt = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  bool allow_tf32 = false;
};

struct GemmShape {
  int64_t m, n, k;      // op(A) is m x k, op(B) is k x n, C is m x n
  bool trans_a = false;  // A stored k x m
  bool trans_b = false;  // B stored n x k
  int64_t batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;  // elements between batch entries
};

// CPU: f32 through oneDNN's dnnl_sgemm where attn was built with it (ATTN_WITH_ONEDNN), else
// OpenBLAS; f64 (gradient checks) always through OpenBLAS. oneDNN's JIT kernels use the CPU's
// widest ISA and ran the demo model's small GEMMs (K or N = 128) 1.2-1.4x faster than
// OpenBLAS 0.3.21 on a 2-core AVX-512 EPYC (docs/PERFORMANCE.md). ATTN_CPU_GEMM=openblas
// sends f32 to OpenBLAS as well (for comparison); ONEDNN_MAX_CPU_ISA caps oneDNN's ISA.
template <class T>
void gemm_cpu(const GemmShape& s, double alpha, const T* a, const T* b, double beta, T* c);

// The CPU GEMM libraries and the kernels they run on this CPU, e.g. "f32: oneDNN 2.6.3
// avx512_core kernels; f64: OpenBLAS 0.3.21, Haswell kernels" (OPENBLAS_CORETYPE and
// ONEDNN_MAX_CPU_ISA override them; results round differently per kernel family, which the
// test suite checks by running under two of them).
const char* gemm_cpu_library();

// CUDA through cuBLASLt, for T in float, bf16, f16, always accumulating in fp32 (float uses
// TF32 tensor cores when ctx.allow_tf32), on ctx's stream.
template <class T>
void gemm_cuda(const GemmShape& s, double alpha, const T* a, const T* b, double beta, T* c,
               const GemmContext& ctx);

// One GEMM (batch 1) with the Linear layer's epilogue, fused by cuBLASLt:
//   C = act(op(A) @ op(B) + bias)
// bias[n] is added to every row (nullptr: no bias); act is relu or the identity. C is
// written (beta 0). Returns false, having done nothing, when cuBLASLt has no kernel for this
// epilogue; the caller then adds the bias itself.
template <class T>
bool gemm_bias_cuda(const GemmShape& s, const T* a, const T* b, const T* bias, bool relu, T* c,
                    const GemmContext& ctx);

// One GEMM (batch 1), C = op(A) @ op(B) (written, beta 0), that also writes
//   bias_grad[i] = sum_k op(A)[i, k]   (length m)
// For the Linear layer's weight gradient, A = the output gradient [rows, out] (trans_a) and
// B = the input [rows, in]: C = dW [out, in] and bias_grad = the bias gradient. Returns
// false, having done nothing, when cuBLASLt has no kernel for it.
template <class T>
bool gemm_bias_grad_cuda(const GemmShape& s, const T* a, const T* b, T* c, T* bias_grad,
                         const GemmContext& ctx);

// Cached cuBLASLt plans (all devices): a shape seen before asks no heuristic again.
int64_t gemm_cuda_plan_count();

}  // namespace attn::kernels
