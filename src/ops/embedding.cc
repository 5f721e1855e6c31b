#include "ops/embedding.h"

#include "core/cuda_backend.h"
#include "kernels/embedding.h"
#include "ops/check.h"
#include "ops/dispatch.h"

namespace attn::ops {

namespace {

// Flat index -> "[i, j, ...]" in ids' shape, for error messages.
std::string index_str(int64_t flat, const Shape& shape) {
  Shape idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = shape[d] ? flat % shape[d] : 0;
    flat = shape[d] ? flat / shape[d] : 0;
  }
  return shape_str(idx);
}

void check_ids(const char* op, const Tensor& ids, int64_t vocab) {
  // Ids come from data; a bad one would read (or, in backward, write) outside the table.
  int64_t bad = -1;
  dispatch_any(
      op, ids,
      [&](auto) {
        bad = kernels::embedding_first_invalid_cpu(ids.data<int32_t>(), ids.numel(), vocab);
      },
      [&](auto) {
        // On the device: one kernel and an 8-byte copy back, not the whole id tensor.
        Tensor scratch = Tensor::empty({2}, kI32, ids.device());
        bad = kernels::embedding_first_invalid_cuda(ids.data<int32_t>(), ids.numel(), vocab,
                                                    reinterpret_cast<int64_t*>(scratch.raw_data()),
                                                    cuda::stream(ids.device().index));
      });
  if (bad < 0) return;
  const int32_t id = ids.view({-1}).narrow0(bad, bad + 1).to(Device::cpu()).data<int32_t>()[0];
  ATTN_FAIL(op, ": id ", id, " at position ", index_str(bad, ids.shape()), " of ids with shape ",
            ids.shape(), " is outside the vocabulary [0, ", vocab, ")");
}

}  // namespace

Tensor embedding_forward(const Tensor& ids, const Tensor& weight, double scale, bool add_positions,
                         int64_t position_offset) {
  const char* op = "embedding";
  check_dtype(op, "ids", ids, kI32);
  check_float(op, "weight", weight);
  check_dim(op, "weight", weight, 2);
  ATTN_CHECK(ids.device() == weight.device(), op, ": ids are on ", ids.device(),
             " but weight is on ", weight.device());
  ATTN_CHECK(position_offset >= 0, op, ": position_offset must be >= 0, got ", position_offset);
  const int64_t vocab = weight.size(0), dim = weight.size(1);
  check_ids(op, ids, vocab);

  Shape out_shape = ids.shape();
  out_shape.push_back(dim);
  Tensor out = Tensor::empty(out_shape, weight.dtype(), weight.device());
  const int64_t seq_len = ids.dim() > 0 ? ids.size(-1) : 1;
  dispatch_float(
      op, weight,
      [&](auto t) {
        using T = typename decltype(t)::type;
        Tensor pe;
        if (add_positions && ids.numel() > 0)
          pe = sinusoidal_positions(seq_len, dim, position_offset, weight.dtype(), weight.device());
        kernels::embedding_forward_cpu<T>(ids.data<int32_t>(), weight.data<T>(), out.data<T>(),
                                          ids.numel(), dim, scale,
                                          pe.defined() ? pe.data<T>() : nullptr, seq_len);
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        // Positions are computed in the kernel (no table is built or copied).
        kernels::embedding_forward_cuda<T>(ids.data<int32_t>(), weight.data<T>(), out.data<T>(),
                                           ids.numel(), dim, scale, add_positions, seq_len,
                                           position_offset, cuda::stream(weight.device().index));
      });
  return out;
}

Tensor embedding_backward(const Tensor& ids, const Tensor& grad_out, int64_t vocab, double scale,
                          bool deterministic) {
  const char* op = "embedding_backward";
  check_dtype(op, "ids", ids, kI32);
  check_float(op, "grad_out", grad_out);
  ATTN_CHECK(grad_out.dim() == ids.dim() + 1, op, ": grad_out has shape ", grad_out.shape(),
             " but ids have shape ", ids.shape());
  Shape expect = ids.shape();
  expect.push_back(grad_out.size(-1));
  ATTN_CHECK(grad_out.shape() == expect, op, ": grad_out has shape ", grad_out.shape(),
             " but ids have shape ", ids.shape());
  ATTN_CHECK(ids.device() == grad_out.device(), op, ": ids are on ", ids.device(),
             " but grad_out is on ", grad_out.device());
  check_ids(op, ids, vocab);
  const int64_t dim = grad_out.size(-1);
  Tensor grad_weight = Tensor::zeros({vocab, dim}, grad_out.dtype(), grad_out.device());
  dispatch_float(
      op, grad_out,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::embedding_backward_cpu<T>(ids.data<int32_t>(), grad_out.data<T>(),
                                           grad_weight.data<T>(), ids.numel(), dim, scale);
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        cudaStream_t stream = cuda::stream(grad_out.device().index);  // also selects the device
        const size_t bytes =
            kernels::embedding_backward_cuda_workspace<T>(ids.numel(), dim, vocab, deterministic);
        Tensor workspace =
            Tensor::empty({static_cast<int64_t>((bytes + 3) / 4)}, kF32, grad_out.device());
        kernels::embedding_backward_cuda<T>(ids.data<int32_t>(), grad_out.data<T>(),
                                            grad_weight.data<T>(), ids.numel(), dim, vocab, scale,
                                            deterministic, workspace.raw_data(), stream);
      });
  return grad_weight;
}

Tensor sinusoidal_positions(int64_t length, int64_t dim, int64_t offset, DType dtype,
                            Device device) {
  const char* op = "sinusoidal_positions";
  ATTN_CHECK(length >= 0 && dim > 0 && offset >= 0, op,
             ": need length >= 0, dim > 0 and offset >= 0, got length ", length, ", dim ", dim,
             ", offset ", offset);
  ATTN_CHECK(is_floating(dtype), op, ": dtype must be floating, got ", dtype);
  // A small table: built on the CPU in f32/f64, then converted and moved where needed, so every
  // dtype and device works without a device kernel.
  const DType host_dtype = dtype == kF32 ? kF32 : kF64;
  Tensor table = Tensor::empty({length, dim}, host_dtype, Device::cpu());
  dispatch_float(
      op, table,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::sinusoidal_positions_cpu<T>(table.data<T>(), length, dim, offset);
      },
      kNoCuda);
  return table.to(dtype).to(device);
}

}  // namespace attn::ops
