#include "core/tensor.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/allocator.h"
#include "core/cuda_backend.h"
#include "core/dispatch.h"
#include "core/grad_mode.h"
#include "kernels/cast.h"
#include "kernels/philox.h"

namespace attn {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    ATTN_CHECK(d >= 0, "Tensor: negative dimension in shape ", shape);
    ATTN_CHECK(!__builtin_mul_overflow(n, d, &n), "Tensor: shape ", shape,
               " has more elements than fit in 64 bits");
  }
  return n;
}

size_t shape_nbytes(const Shape& shape, DType dtype) {
  size_t bytes = 0;
  ATTN_CHECK(!__builtin_mul_overflow(static_cast<size_t>(shape_numel(shape)), dtype_size(dtype),
                                     &bytes),
             "Tensor: shape ", shape, " of ", dtype, " has more bytes than fit in 64 bits");
  return bytes;
}

std::string shape_str(const Shape& shape) { return detail::str_cat(shape); }

namespace {

std::shared_ptr<TensorImpl> make_impl(const Shape& shape, DType dtype, Device device) {
  const size_t bytes = shape_nbytes(shape, dtype);
  auto impl = std::make_shared<TensorImpl>();
  try {
    impl->storage = std::make_shared<Storage>(bytes, device);
  } catch (const OutOfMemoryError& e) {
    throw OutOfMemoryError(detail::str_cat("cannot allocate a ", dtype, " tensor of shape ", shape,
                                           " (", format_bytes(static_cast<double>(bytes)),
                                           ") on ", device, ": ", e.what()));
  }
  impl->shape = shape;
  impl->dtype = dtype;
  return impl;
}

// Conversions and views made outside ops would cut the autograd graph without a trace.
void check_not_recording(const Tensor& t, const char* what) {
  ATTN_CHECK(!(t.requires_grad() && grad_enabled()), "Tensor::", what,
             " on a tensor that requires grad would cut the autograd graph; use the ops:: "
             "version, or detach() / NoGradGuard");
}

void cast_on_device(const void* src, DType src_t, void* dst, DType dst_t, int64_t n,
                    Device device) {
  visit_dtype(src_t, [&](auto s) {
    using S = typename decltype(s)::type;
    visit_dtype(dst_t, [&](auto d) {
      using D = typename decltype(d)::type;
      if (device.is_cpu()) {
        kernels::cast_cpu<S, D>(static_cast<const S*>(src), static_cast<D*>(dst), n);
      } else {
#ifdef ATTN_WITH_CUDA
        kernels::cast_cuda<S, D>(static_cast<const S*>(src), static_cast<D*>(dst), n,
                                 cuda::stream(device.index));
#endif
      }
    });
  });
}

}  // namespace

void Tensor::check_defined(const char* what) const {
  ATTN_CHECK(impl_ != nullptr, "Tensor::", what, " called on an undefined tensor");
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  return Tensor(make_impl(shape, dtype, device));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return full(shape, 0.0, dtype, device);
}

Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) {
  return full(shape, 1.0, dtype, device);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<double>& values, const Shape& shape, DType dtype,
                           Device device) {
  ATTN_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "Tensor::from_vector: ",
             values.size(), " values for shape ", shape);
  Tensor t = empty(shape, dtype, Device::cpu());
  cast_on_device(values.data(), kF64, t.raw_data(), dtype, t.numel(), Device::cpu());
  return t.to(device);
}

Tensor Tensor::from_ints(const std::vector<int32_t>& values, const Shape& shape, Device device) {
  ATTN_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "Tensor::from_ints: ",
             values.size(), " values for shape ", shape);
  Tensor t = empty(shape, kI32, Device::cpu());
  std::copy(values.begin(), values.end(), t.data<int32_t>());
  return t.to(device);
}

namespace {

// Fills a new tensor from value(i) through a small double buffer: the tensor is allocated
// (and its size checked) first, and no n-sized temporary is needed.
template <class F>
Tensor generate(const Shape& shape, DType dtype, Device device, F&& value) {
  Tensor t = Tensor::empty(shape, dtype, Device::cpu());
  const int64_t n = t.numel();
  constexpr int64_t kChunk = 1 << 14;
  std::vector<double> buf(static_cast<size_t>(std::min(n, kChunk)));
  char* dst = static_cast<char*>(t.raw_data());
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t count = std::min(kChunk, n - start);
    for (int64_t i = 0; i < count; ++i) buf[static_cast<size_t>(i)] = value(start + i);
    cast_on_device(buf.data(), kF64, dst + start * dtype_size(dtype), dtype, count,
                   Device::cpu());
  }
  return t.to(device);
}

}  // namespace

Tensor Tensor::uniform(const Shape& shape, double low, double high, Generator& gen, DType dtype,
                       Device device) {
  const int64_t n = shape_numel(shape);
  const uint64_t off = gen.reserve(static_cast<uint64_t>(n));
  // 53-bit uniform from two 32-bit draws of consecutive lanes would need 2n values; 24 bits
  // are enough for initialisation and test inputs.
  return generate(shape, dtype, device, [&](int64_t i) {
    return low + (high - low) * philox_uniform(gen.seed(), off, static_cast<uint64_t>(i));
  });
}

Tensor Tensor::normal(const Shape& shape, double mean, double std, Generator& gen, DType dtype,
                      Device device) {
  const int64_t n = shape_numel(shape);
  const uint64_t off = gen.reserve(2 * static_cast<uint64_t>(n));
  return generate(shape, dtype, device, [&](int64_t i) {
    // Box-Muller; u1 in (0, 1] so the log is finite.
    const double u1 = 1.0 - philox_uniform(gen.seed(), off, 2 * static_cast<uint64_t>(i));
    const double u2 = philox_uniform(gen.seed(), off, 2 * static_cast<uint64_t>(i) + 1);
    return mean + std * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  });
}

const Shape& Tensor::shape() const {
  check_defined("shape");
  return impl_->shape;
}

int64_t Tensor::size(int64_t d) const {
  const int64_t n = dim();
  const int64_t k = d < 0 ? d + n : d;
  ATTN_CHECK(k >= 0 && k < n, "Tensor::size: dimension ", d, " out of range for shape ",
             shape());
  return impl_->shape[k];
}

DType Tensor::dtype() const {
  check_defined("dtype");
  return impl_->dtype;
}

Device Tensor::device() const {
  check_defined("device");
  return impl_->storage->device();
}

void* Tensor::raw_data() const {
  check_defined("data");
  return static_cast<char*>(impl_->storage->data()) + impl_->offset * dtype_size(impl_->dtype);
}

std::vector<double> Tensor::to_double_vector() const {
  check_defined("to_double_vector");
  Tensor host = device().is_cpu() ? *this : detach().to(Device::cpu());
  std::vector<double> out(static_cast<size_t>(numel()));
  cast_on_device(host.raw_data(), dtype(), out.data(), kF64, numel(), Device::cpu());
  return out;
}

std::vector<int32_t> Tensor::to_int_vector() const {
  check_defined("to_int_vector");
  Tensor host = device().is_cpu() ? *this : detach().to(Device::cpu());
  std::vector<int32_t> out(static_cast<size_t>(numel()));
  cast_on_device(host.raw_data(), dtype(), out.data(), kI32, numel(), Device::cpu());
  return out;
}

double Tensor::item() const {
  ATTN_CHECK(defined() && numel() == 1, "Tensor::item: needs a one-element tensor, got shape ",
             defined() ? shape() : Shape{});
  return to_double_vector()[0];
}

Tensor Tensor::to(Device dev) const {
  check_defined("to");
  if (dev == device()) return *this;
  check_not_recording(*this, "to(device)");
  Tensor out = empty(shape(), dtype(), dev);
  copy_bytes(out.raw_data(), dev, raw_data(), device(), nbytes());
  return out;
}

Tensor Tensor::to(DType t) const {
  check_defined("to");
  if (t == dtype()) return *this;
  check_not_recording(*this, "to(dtype)");
  Tensor out = empty(shape(), t, device());
  cast_on_device(raw_data(), dtype(), out.raw_data(), t, numel(), device());
  return out;
}

Tensor Tensor::clone() const {
  check_defined("clone");
  Tensor out = empty(shape(), dtype(), device());
  copy_bytes(out.raw_data(), device(), raw_data(), device(), nbytes());
  return out;
}

Tensor Tensor::detach() const {
  check_defined("detach");
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->offset = impl_->offset;
  impl->shape = impl_->shape;
  impl->dtype = impl_->dtype;
  return Tensor(impl);
}

void Tensor::copy_(const Tensor& src) {
  check_defined("copy_");
  ATTN_CHECK(src.defined() && src.shape() == shape(), "Tensor::copy_: source shape ",
             src.defined() ? src.shape() : Shape{}, " does not match destination ", shape());
  Tensor s = src.detach();
  if (s.dtype() != dtype()) s = s.to(dtype());
  copy_bytes(raw_data(), device(), s.raw_data(), s.device(), nbytes());
}

void Tensor::fill_(double value) {
  check_defined("fill_");
  visit_dtype(dtype(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (device().is_cpu()) {
      kernels::fill_cpu<T>(static_cast<T*>(raw_data()), value, numel());
    } else {
#ifdef ATTN_WITH_CUDA
      kernels::fill_cuda<T>(static_cast<T*>(raw_data()), value, numel(),
                            cuda::stream(device().index));
#endif
    }
  });
}

Tensor Tensor::view(const Shape& new_shape) const {
  check_defined("view");
  check_not_recording(*this, "view");
  Shape s = new_shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      ATTN_CHECK(infer < 0, "view: more than one -1 in shape ", new_shape);
      infer = static_cast<int64_t>(i);
    } else {
      ATTN_CHECK(s[i] >= 0, "view: negative dimension in shape ", new_shape);
      known *= s[i];
    }
  }
  if (infer >= 0) {
    ATTN_CHECK(known > 0 && numel() % known == 0, "view: cannot view shape ", shape(), " as ",
               new_shape);
    s[infer] = numel() / known;
  }
  ATTN_CHECK(shape_numel(s) == numel(), "view: cannot view shape ", shape(), " (", numel(),
             " elements) as ", new_shape);
  Tensor out = detach();
  out.impl_->shape = s;
  return out;
}

Tensor Tensor::narrow0(int64_t start, int64_t end) const {
  check_defined("narrow0");
  check_not_recording(*this, "narrow0");
  ATTN_CHECK(dim() >= 1 && 0 <= start && start <= end && end <= shape()[0], "narrow0: rows [",
             start, ", ", end, ") out of range for shape ", shape());
  Tensor out = detach();
  out.impl_->offset += start * (shape()[0] ? numel() / shape()[0] : 0);
  out.impl_->shape[0] = end - start;
  return out;
}

Tensor& Tensor::move_to_(Device dev) {
  check_defined("move_to_");
  ATTN_CHECK(is_leaf(), "move_to_: only leaf tensors can move in place");
  if (dev == device()) return *this;
  Tensor moved = detach().to(dev);
  impl_->storage = moved.impl_->storage;
  impl_->offset = moved.impl_->offset;
  impl_->grad.reset();
  return *this;
}

Tensor& Tensor::set_requires_grad(bool value) {
  check_defined("set_requires_grad");
  ATTN_CHECK(is_leaf(), "set_requires_grad: only leaf tensors can be marked (this one is the "
                        "result of an op; detach() it first)");
  ATTN_CHECK(!value || is_floating(dtype()), "set_requires_grad: ", dtype(),
             " tensors cannot require grad");
  impl_->requires_grad = value;
  return *this;
}

Tensor Tensor::grad() const {
  check_defined("grad");
  return impl_->grad ? Tensor(impl_->grad) : Tensor();
}

void Tensor::zero_grad() {
  check_defined("zero_grad");
  impl_->grad.reset();
}

std::string Tensor::str(int64_t max_elements) const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor(shape=" << shape() << ", dtype=" << dtype() << ", device=" << device();
  if (requires_grad()) os << ", requires_grad";
  os << ", values=[";
  const auto v = to_double_vector();
  const int64_t n = std::min<int64_t>(max_elements, numel());
  for (int64_t i = 0; i < n; ++i) os << (i ? ", " : "") << v[i];
  if (n < numel()) os << ", ...";
  os << "])";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace attn
