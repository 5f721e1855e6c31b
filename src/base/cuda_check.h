// Error checking for CUDA runtime and cuBLAS calls: a failed call throws attn::Error naming
// the error, the call and where it was made. Include only from code compiled with CUDA
// (.cu files, or C++ files built only when ATTN_WITH_CUDA is set); it pulls in CUDA headers.
#pragma once

#include <cublas_api.h>
#include <cuda_runtime.h>

#include "base/error.h"

namespace attn::detail {

// Clears the runtime's sticky last error first (it would otherwise be reported again by the
// next launch check, against an unrelated kernel, after a caller recovered from this one).
[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* expr, const char* file,
                                          int line) {
  cudaGetLastError();
  throw Error(str_cat("CUDA error ", cudaGetErrorName(err), ": ", cudaGetErrorString(err), " at ",
                      file, ":", line, " in ", expr));
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t status, const char* expr,
                                            const char* file, int line) {
  throw Error(str_cat("cuBLAS error ", cublasGetStatusName(status), ": ",
                      cublasGetStatusString(status), " at ", file, ":", line, " in ", expr));
}

}  // namespace attn::detail

#define CUDA_CHECK(expr)                                                           \
  do {                                                                             \
    const cudaError_t attn_cuda_err_ = (expr);                                     \
    if (attn_cuda_err_ != cudaSuccess) {                                           \
      ::attn::detail::throw_cuda_error(attn_cuda_err_, #expr, __FILE__, __LINE__); \
    }                                                                              \
  } while (0)

#define CUBLAS_CHECK(expr)                                                                \
  do {                                                                                    \
    const cublasStatus_t attn_cublas_status_ = (expr);                                    \
    if (attn_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                                   \
      ::attn::detail::throw_cublas_error(attn_cublas_status_, #expr, __FILE__, __LINE__); \
    }                                                                                     \
  } while (0)

// After every kernel launch: catches bad launch configurations at once (cheap: no sync).
// Faults inside the kernel surface at the next synchronizing call instead.
#define ATTN_CUDA_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())
