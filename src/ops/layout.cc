#include "ops/layout.h"

#include "core/cuda_backend.h"
#include "kernels/layout.h"
#include "ops/check.h"
#include "ops/dispatch.h"

namespace attn::ops {

namespace {
int64_t prod(const Shape& s, int64_t from, int64_t to) {
  int64_t p = 1;
  for (int64_t i = from; i < to; ++i) p *= s[i];
  return p;
}

// Block copy of a [rows, cols] region between tensors of the same dtype and device.
void copy_block(const char* op, const Tensor& src, int64_t src_off, int64_t src_stride, Tensor& dst,
                int64_t dst_off, int64_t dst_stride, int64_t rows, int64_t cols) {
  dispatch_any(
      op, src,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::copy_2d_cpu<T>(src.data<T>() + src_off, src_stride, dst.data<T>() + dst_off,
                                dst_stride, rows, cols);
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::copy_2d_cuda<T>(src.data<T>() + src_off, src_stride, dst.data<T>() + dst_off,
                                 dst_stride, rows, cols, cuda::stream(src.device().index));
      });
}
}  // namespace

Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1) {
  check_defined("transpose", "x", x);
  int64_t d0 = wrap_dim("transpose", dim0, x.dim());
  int64_t d1 = wrap_dim("transpose", dim1, x.dim());
  if (d0 > d1) std::swap(d0, d1);
  Shape out_shape = x.shape();
  std::swap(out_shape[d0], out_shape[d1]);
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  if (d0 == d1) {
    out.copy_(x.detach());
    return out;
  }
  const Shape& s = x.shape();
  kernels::SwapAxesShape sw{prod(s, 0, d0), s[d0], prod(s, d0 + 1, d1), s[d1],
                            prod(s, d1 + 1, x.dim())};
  dispatch_any(
      "transpose", x,
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::swap_axes_cpu<T>(x.data<T>(), out.data<T>(), sw);
      },
      [&](auto t) {
        using T = typename decltype(t)::type;
        kernels::swap_axes_cuda<T>(x.data<T>(), out.data<T>(), sw, cuda::stream(x.device().index));
      });
  return out;
}

Tensor split_heads(const Tensor& x, int64_t heads) {
  check_dim("split_heads", "x", x, 3);
  ATTN_CHECK(heads > 0 && x.size(2) % heads == 0, "split_heads: width ", x.size(2),
             " of x ", x.shape(), " is not divisible by ", heads, " heads");
  Tensor v = x.detach().view({x.size(0), x.size(1), heads, x.size(2) / heads});
  return transpose(v, 1, 2);
}

Tensor merge_heads(const Tensor& x) {
  check_dim("merge_heads", "x", x, 4);
  Tensor t = transpose(x, 1, 2);  // [B, T, H, D]
  return t.view({x.size(0), x.size(2), x.size(1) * x.size(3)});
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  ATTN_CHECK(!xs.empty(), "concat: no tensors given");
  const Tensor& ref = xs[0];
  check_defined("concat", "tensor 0", ref);
  const int64_t d = wrap_dim("concat", dim, ref.dim());
  Shape out_shape = ref.shape();
  out_shape[d] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    check_defined("concat", "tensor", xs[i]);
    check_like("concat", "tensor 0", ref, "tensor", xs[i]);
    bool ok = xs[i].dim() == ref.dim();
    for (int64_t j = 0; ok && j < ref.dim(); ++j) ok = j == d || xs[i].size(j) == ref.size(j);
    ATTN_CHECK(ok, "concat: tensor ", i, " has shape ", xs[i].shape(), " but tensor 0 has shape ",
               ref.shape(), " (they may differ only in dimension ", d, ")");
    out_shape[d] += xs[i].size(d);
  }
  Tensor out = Tensor::empty(out_shape, ref.dtype(), ref.device());
  int64_t start = 0;
  for (const Tensor& x : xs) {
    slice_assign(out, d, start, x);
    start += x.size(d);
  }
  return out;
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end) {
  check_defined("slice", "x", x);
  const int64_t d = wrap_dim("slice", dim, x.dim());
  ATTN_CHECK(0 <= start && start <= end && end <= x.size(d), "slice: [", start, ", ", end,
             ") out of range for dimension ", d, " of shape ", x.shape());
  Shape out_shape = x.shape();
  out_shape[d] = end - start;
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  const int64_t inner = prod(x.shape(), d + 1, x.dim());
  const int64_t outer = prod(x.shape(), 0, d);
  copy_block("slice", x, start * inner, x.size(d) * inner, out, 0, (end - start) * inner, outer,
             (end - start) * inner);
  return out;
}

void slice_assign(Tensor& out, int64_t dim, int64_t start, const Tensor& src) {
  check_like("slice_assign", "out", out, "src", src);
  const int64_t d = wrap_dim("slice_assign", dim, out.dim());
  bool ok = src.dim() == out.dim() && start >= 0 && start + src.size(d) <= out.size(d);
  for (int64_t j = 0; ok && j < out.dim(); ++j) ok = j == d || src.size(j) == out.size(j);
  ATTN_CHECK(ok, "slice_assign: cannot write shape ", src.shape(), " at ", start,
             " along dimension ", d, " of shape ", out.shape());
  const int64_t inner = prod(out.shape(), d + 1, out.dim());
  const int64_t outer = prod(out.shape(), 0, d);
  const int64_t n = src.size(d);
  copy_block("slice_assign", src, 0, n * inner, out, start * inner, out.size(d) * inner, outer,
             n * inner);
}

}  // namespace attn::ops
