// Argument checks shared by ops. Each message names the op, the argument and the shapes.
#pragma once

#include <initializer_list>
#include <string>

#include "core/tensor.h"

namespace attn::ops {

void check_defined(const char* op, const char* name, const Tensor& t);
// Defined and of a floating dtype.
void check_float(const char* op, const char* name, const Tensor& t);
void check_dtype(const char* op, const char* name, const Tensor& t, DType dtype);
void check_dim(const char* op, const char* name, const Tensor& t, int64_t dim);
void check_same_shape(const char* op, const char* a_name, const Tensor& a, const char* b_name,
                      const Tensor& b);
// Same dtype and device as `ref` (named tensors, undefined ones skipped).
void check_like(const char* op, const char* ref_name, const Tensor& ref, const char* name,
                const Tensor& t);
// Normalises a possibly negative dimension index.
int64_t wrap_dim(const char* op, int64_t dim, int64_t ndim);

}  // namespace attn::ops
