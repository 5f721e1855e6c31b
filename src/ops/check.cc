#include "ops/check.h"

namespace attn::ops {

void check_defined(const char* op, const char* name, const Tensor& t) {
  ATTN_CHECK(t.defined(), op, ": ", name, " is undefined");
}

void check_float(const char* op, const char* name, const Tensor& t) {
  check_defined(op, name, t);
  ATTN_CHECK(is_floating(t.dtype()), op, ": ", name, " must be a floating tensor, got ", t.dtype(),
             " of shape ", t.shape());
}

void check_dtype(const char* op, const char* name, const Tensor& t, DType dtype) {
  check_defined(op, name, t);
  ATTN_CHECK(t.dtype() == dtype, op, ": ", name, " must be ", dtype, ", got ", t.dtype(),
             " of shape ", t.shape());
}

void check_dim(const char* op, const char* name, const Tensor& t, int64_t dim) {
  check_defined(op, name, t);
  ATTN_CHECK(t.dim() == dim, op, ": ", name, " must have ", dim, " dimensions, got shape ",
             t.shape());
}

void check_same_shape(const char* op, const char* a_name, const Tensor& a, const char* b_name,
                      const Tensor& b) {
  check_defined(op, a_name, a);
  check_defined(op, b_name, b);
  ATTN_CHECK(a.shape() == b.shape(), op, ": ", a_name, " has shape ", a.shape(), " but ", b_name,
             " has shape ", b.shape());
}

void check_like(const char* op, const char* ref_name, const Tensor& ref, const char* name,
                const Tensor& t) {
  if (!t.defined()) return;
  ATTN_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ", ref_name,
             " is on ", ref.device());
  ATTN_CHECK(t.dtype() == ref.dtype(), op, ": ", name, " is ", t.dtype(), " but ", ref_name,
             " is ", ref.dtype());
}

int64_t wrap_dim(const char* op, int64_t dim, int64_t ndim) {
  const int64_t d = dim < 0 ? dim + ndim : dim;
  ATTN_CHECK(d >= 0 && d < ndim, op, ": dimension ", dim, " out of range for a ", ndim,
             "-dimensional tensor");
  return d;
}

}  // namespace attn::ops
