// Tensor: a shape, an element type and a device over contiguous row-major storage that is
// shared by reference. Views (reshape, slices along the first dimension) share storage
// with an element offset. Copying a Tensor copies the handle, not the data.
//
// Autograd state (requires_grad, grad, grad_fn) lives here so that ops can record the
// graph; the engine itself is in src/autograd.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "base/error.h"
#include "core/random.h"
#include "core/storage.h"

namespace attn {

using Shape = std::vector<int64_t>;

// Elements of a shape; a negative dimension or a count beyond int64 is an error naming the
// shape (sizes from configs and files must never wrap around into a small allocation).
int64_t shape_numel(const Shape& shape);
// Bytes of a tensor of that shape and dtype, checked the same way.
size_t shape_nbytes(const Shape& shape, DType dtype);
std::string shape_str(const Shape& shape);

namespace autograd {
class Node;
}

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape;
  DType dtype = DType::kF32;

  // Autograd: a leaf that requires grad accumulates into `grad`; a non-leaf result of a
  // recorded op points at the node that produced it.
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<autograd::Node> grad_fn;
  std::shared_ptr<autograd::Node> grad_accumulator;  // for leaves, created on first use
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- creation ----
  static Tensor empty(const Shape& shape, DType dtype = kF32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = kF32, Device device = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = kF32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = kF32,
                     Device device = Device::cpu());
  // Values given as doubles (or ints), stored in `dtype`.
  static Tensor from_vector(const std::vector<double>& values, const Shape& shape,
                            DType dtype = kF32, Device device = Device::cpu());
  static Tensor from_ints(const std::vector<int32_t>& values, const Shape& shape,
                          Device device = Device::cpu());
  // Uniform in [low, high) and normal(mean, std), reproducible from the generator.
  static Tensor uniform(const Shape& shape, double low, double high, Generator& gen,
                        DType dtype = kF32, Device device = Device::cpu());
  static Tensor normal(const Shape& shape, double mean, double std, Generator& gen,
                       DType dtype = kF32, Device device = Device::cpu());
  static Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.dtype(), t.device()); }
  static Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype(), t.device()); }

  // ---- properties ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(shape()); }
  DType dtype() const;
  Device device() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& o) const { return impl_ == o.impl_; }

  // ---- data access (device memory for CUDA tensors) ----
  void* raw_data() const;
  template <class T>
  T* data() const {
    ATTN_CHECK(dtype() == dtype_of<T>(), "Tensor::data: tensor is ", dtype(), ", asked for ",
               dtype_name(dtype_of<T>()));
    return static_cast<T*>(raw_data());
  }
  // Copies to the host and converts to double (any dtype).
  std::vector<double> to_double_vector() const;
  std::vector<int32_t> to_int_vector() const;
  // Value of a one-element tensor.
  double item() const;

  // ---- conversions (new storage; not recorded by autograd: use ops::cast / ops::to_device
  // inside a graph. Refused on a tensor that requires grad while grad mode is on.) ----
  Tensor to(Device device) const;
  Tensor to(DType dtype) const;
  Tensor clone() const;
  // Same storage, no autograd history.
  Tensor detach() const;
  // Copies src's values into this tensor (same shape; dtype and device may differ).
  void copy_(const Tensor& src);
  void fill_(double value);
  // Moves this leaf's data to `device` in place: every handle to it (a module's member, the
  // optimizer's slot) sees the new storage. Its gradient is dropped.
  Tensor& move_to_(Device device);

  // ---- views (share storage; not recorded: ops::reshape / ops::slice record) ----
  Tensor view(const Shape& shape) const;           // one dimension may be -1
  Tensor narrow0(int64_t start, int64_t end) const;  // rows [start, end) of dim 0

  // ---- autograd ----
  bool requires_grad() const { return impl_ && impl_->requires_grad; }
  // Marks a leaf as a parameter/input whose gradient is wanted.
  Tensor& set_requires_grad(bool value);
  bool is_leaf() const { return !impl_ || impl_->grad_fn == nullptr; }
  Tensor grad() const;  // undefined until backward reached this leaf
  void zero_grad();     // drops the gradient
  // Backpropagates from this tensor (a scalar unless `grad` is given); see autograd/engine.h.
  void backward(const Tensor& grad = {}, bool retain_graph = false) const;

  std::string str(int64_t max_elements = 16) const;

 private:
  void check_defined(const char* what) const;
  std::shared_ptr<TensorImpl> impl_;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

}  // namespace attn
