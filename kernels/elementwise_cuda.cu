// Element-wise kernels on the GPU (kernels/elementwise.h), same semantics as
// kernels/elementwise_cpu.cc.
//
// Algorithm: one grid-stride loop per op. When every pointer is 16-byte aligned, each step of
// the loop moves one 16-byte pack (4 floats or 8 halves) per array, and the n % pack elements
// left over are done one by one by the first threads; otherwise the whole loop is scalar.
// Arithmetic is in fp32 with explicitly rounded intrinsics (__fadd_rn, __fmul_rn: no FMA
// contraction), so float results are bit-identical to the CPU reference; bf16/f16 round once.
// bias_add walks a [rows, cols] matrix with a 2-D block (columns on x, rows on y), so the bias
// column needs no division per element.
// Launch: 256 threads per block, at most 65536 blocks (the loops cover any n).
// Memory: outputs written with `=` for i < n; axpy adds into dst. Outputs may alias inputs
// (each element is read before it is written by the same thread).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "base/cuda_check.h"
#include "kernels/cuda_common.cuh"
#include "kernels/elementwise.h"

namespace attn::kernels {
namespace {

using namespace cuda_common;

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;

int64_t num_blocks(int64_t work) { return grid_blocks(work, kThreads, kMaxBlocks); }

// ---- the ops, on fp32 values (b is ignored by unary ops) ----
struct AddOp {
  __device__ float operator()(float a, float b) const { return __fadd_rn(a, b); }
};
struct SubOp {
  __device__ float operator()(float a, float b) const { return __fsub_rn(a, b); }
};
struct MulOp {
  __device__ float operator()(float a, float b) const { return __fmul_rn(a, b); }
};
struct ScaleOp {  // alpha * x, as the CPU's T(alpha) * x
  float alpha;
  __device__ float operator()(float x, float) const { return __fmul_rn(alpha, x); }
};
struct AxpyOp {  // dst + alpha * src, two roundings like the CPU's dst += a * src
  float alpha;
  __device__ float operator()(float dst, float src) const {
    return __fadd_rn(dst, __fmul_rn(alpha, src));
  }
};
struct ReluOp {
  __device__ float operator()(float x, float) const { return x > 0.0f ? x : 0.0f; }
};
struct ReluBackwardOp {  // (dy, y)
  __device__ float operator()(float dy, float y) const { return y > 0.0f ? dy : 0.0f; }
};

// out[i] = op(a[i], b[i]) (b unused when !kHasB). kVec: all pointers 16-byte aligned.
template <class T, class Op, bool kHasB, bool kVec>
__global__ void map_kernel(const T* a, const T* b, T* out, int64_t n, Op op) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t first_scalar = 0;
  if constexpr (kVec) {
    constexpr int V = Pack<T>::kN;
    const int64_t packs = n / V;
    for (int64_t i = tid; i < packs; i += stride) {
      const Pack<T> pa = reinterpret_cast<const Pack<T>*>(a)[i];
      Pack<T> pb;
      if constexpr (kHasB) pb = reinterpret_cast<const Pack<T>*>(b)[i];
      Pack<T> po;
#pragma unroll
      for (int j = 0; j < V; ++j)
        po.v[j] = from_f<T>(op(to_f(pa.v[j]), kHasB ? to_f(pb.v[j]) : 0.0f));
      reinterpret_cast<Pack<T>*>(out)[i] = po;
    }
    first_scalar = packs * V;
  }
  for (int64_t i = first_scalar + tid; i < n; i += stride) {
    out[i] = from_f<T>(op(to_f(a[i]), kHasB ? to_f(b[i]) : 0.0f));
  }
}

template <class T, bool kHasB, class Op>
void launch_map(const T* a, const T* b, T* out, int64_t n, Op op, cudaStream_t stream) {
  if (n <= 0) return;
  const bool vec = aligned16(a) && aligned16(out) && (!kHasB || aligned16(b));
  if (vec) {
    const int64_t work = std::max<int64_t>(n / Pack<T>::kN, 1);
    map_kernel<T, Op, kHasB, true>
        <<<static_cast<unsigned>(num_blocks(work)), kThreads, 0, stream>>>(a, b, out, n, op);
  } else {
    map_kernel<T, Op, kHasB, false>
        <<<static_cast<unsigned>(num_blocks(n)), kThreads, 0, stream>>>(a, b, out, n, op);
  }
  ATTN_CUDA_LAUNCH_CHECK();
}

// y[r, c] = x[r, c] + bias[c] (then relu). Columns in units of U elements (a Pack when kVec,
// one element otherwise); threadIdx.x walks units of a row, threadIdx.y rows.
template <class T, bool kVec>
__global__ void bias_add_kernel(const T* x, const T* bias, T* y, int64_t rows, int64_t units,
                                bool relu) {
  constexpr int U = kVec ? Pack<T>::kN : 1;
  const int64_t row_stride = static_cast<int64_t>(gridDim.x) * blockDim.y;
  const int64_t unit_stride = static_cast<int64_t>(gridDim.y) * blockDim.x;
  const int64_t cols = units * U;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; r < rows;
       r += row_stride) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    for (int64_t u = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; u < units;
         u += unit_stride) {
      if constexpr (kVec) {
        const Pack<T> px = reinterpret_cast<const Pack<T>*>(xr)[u];
        const Pack<T> pb = reinterpret_cast<const Pack<T>*>(bias)[u];
        Pack<T> py;
#pragma unroll
        for (int j = 0; j < U; ++j) {
          const float v = __fadd_rn(to_f(px.v[j]), to_f(pb.v[j]));
          py.v[j] = from_f<T>(relu ? (v > 0.0f ? v : 0.0f) : v);
        }
        reinterpret_cast<Pack<T>*>(yr)[u] = py;
      } else {
        const float v = __fadd_rn(to_f(xr[u]), to_f(bias[u]));
        yr[u] = from_f<T>(relu ? (v > 0.0f ? v : 0.0f) : v);
      }
    }
  }
}

}  // namespace

template <class T>
void binary_cuda(BinaryOp op, const T* a, const T* b, T* out, int64_t n, cudaStream_t stream) {
  switch (op) {
    case BinaryOp::kAdd: launch_map<T, true>(a, b, out, n, AddOp{}, stream); return;
    case BinaryOp::kSub: launch_map<T, true>(a, b, out, n, SubOp{}, stream); return;
    case BinaryOp::kMul: launch_map<T, true>(a, b, out, n, MulOp{}, stream); return;
  }
}

template <class T>
void axpy_cuda(T* dst, double alpha, const T* src, int64_t n, cudaStream_t stream) {
  launch_map<T, true>(dst, src, dst, n, AxpyOp{static_cast<float>(alpha)}, stream);
}

template <class T>
void scale_cuda(const T* x, double alpha, T* out, int64_t n, cudaStream_t stream) {
  launch_map<T, false>(x, static_cast<const T*>(nullptr), out, n,
                       ScaleOp{static_cast<float>(alpha)}, stream);
}

template <class T>
void relu_forward_cuda(const T* x, T* y, int64_t n, cudaStream_t stream) {
  launch_map<T, false>(x, static_cast<const T*>(nullptr), y, n, ReluOp{}, stream);
}

template <class T>
void relu_backward_cuda(const T* dy, const T* y, T* dx, int64_t n, cudaStream_t stream) {
  launch_map<T, true>(dy, y, dx, n, ReluBackwardOp{}, stream);
}

template <class T>
void bias_add_cuda(const T* x, const T* bias, T* y, int64_t rows, int64_t cols, bool relu,
                   cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  constexpr int V = Pack<T>::kN;
  const bool vec = cols % V == 0 && aligned16(x) && aligned16(y) && aligned16(bias);
  const int64_t units = vec ? cols / V : cols;
  const RowsGrid g = rows_units_grid(rows, units, kThreads, kMaxBlocks);
  if (vec) {
    bias_add_kernel<T, true><<<g.grid, g.block, 0, stream>>>(x, bias, y, rows, units, relu);
  } else {
    bias_add_kernel<T, false><<<g.grid, g.block, 0, stream>>>(x, bias, y, rows, units, relu);
  }
  ATTN_CUDA_LAUNCH_CHECK();
}

#define ATTN_INSTANTIATE(T)                                                                  \
  template void binary_cuda<T>(BinaryOp, const T*, const T*, T*, int64_t, cudaStream_t);    \
  template void axpy_cuda<T>(T*, double, const T*, int64_t, cudaStream_t);                  \
  template void scale_cuda<T>(const T*, double, T*, int64_t, cudaStream_t);                 \
  template void relu_forward_cuda<T>(const T*, T*, int64_t, cudaStream_t);                  \
  template void relu_backward_cuda<T>(const T*, const T*, T*, int64_t, cudaStream_t);       \
  template void bias_add_cuda<T>(const T*, const T*, T*, int64_t, int64_t, bool, cudaStream_t);
ATTN_FOR_EACH_FLOAT_TYPE(ATTN_INSTANTIATE)
#undef ATTN_INSTANTIATE

}  // namespace attn::kernels
