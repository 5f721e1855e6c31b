// The one place where ops choose a kernel by device and element type.
//
//   dispatch_float("layer_norm", x,
//       [&](auto t) { using T = typename decltype(t)::type; kernels::..._cpu<T>(...); },
//       [&](auto t) { using T = typename decltype(t)::type; kernels::..._cuda<T>(...); });
//
// CPU kernels exist for f32 and f64 (f64 for gradient checks); CUDA kernels for f32, bf16
// and f16. The lambdas must be generic so that a build without CUDA never instantiates
// (and never links) the CUDA branch. Ops whose CUDA kernel has not been written pass
// kNoCuda and fail with a clear message on a CUDA tensor.
#pragma once

#include "core/dispatch.h"
#include "core/profile.h"
#include "core/tensor.h"

namespace attn::ops {

struct NoCuda {};
inline constexpr NoCuda kNoCuda{};

template <class Cpu, class Cuda>
void dispatch_float(const char* op, const Tensor& t, Cpu&& cpu, Cuda&& cuda) {
  const DType dt = t.dtype();
  if (t.device().is_cpu()) {
    const profile::Scope scope(op);
    switch (dt) {
      case DType::kF32: cpu(TypeTag<float>{}); return;
      case DType::kF64: cpu(TypeTag<double>{}); return;
      default: ATTN_FAIL(op, ": ", dt, " tensors are not supported on the CPU (use f32 or f64)");
    }
  }
  if constexpr (std::is_same_v<std::decay_t<Cuda>, NoCuda>) {
    ATTN_FAIL(op, ": no CUDA kernel for this op in this build (tensor on ", t.device(), ")");
  } else {
#ifdef ATTN_WITH_CUDA
    switch (dt) {
      case DType::kF32: cuda(TypeTag<float>{}); return;
      case DType::kBF16: cuda(TypeTag<bf16>{}); return;
      case DType::kF16: cuda(TypeTag<f16>{}); return;
      default: ATTN_FAIL(op, ": ", dt, " tensors are not supported on CUDA (use f32, bf16 or f16)");
    }
#else
    ATTN_FAIL(op, ": tensor on ", t.device(), " but attn was built without CUDA");
#endif
  }
}

// Same, for kernels that only move elements (layout ops): every dtype, bytes are bytes.
template <class Cpu, class Cuda>
void dispatch_any(const char* op, const Tensor& t, Cpu&& cpu, Cuda&& cuda) {
  if (t.device().is_cpu()) {
    const profile::Scope scope(op);
    visit_dtype(t.dtype(), cpu);
    return;
  }
  if constexpr (std::is_same_v<std::decay_t<Cuda>, NoCuda>) {
    ATTN_FAIL(op, ": no CUDA kernel for this op in this build (tensor on ", t.device(), ")");
  } else {
#ifdef ATTN_WITH_CUDA
    visit_dtype(t.dtype(), cuda);
#else
    ATTN_FAIL(op, ": tensor on ", t.device(), " but attn was built without CUDA");
#endif
  }
}

}  // namespace attn::ops
