#include "nn/module.h"

#include "autograd/functions.h"
#include "core/grad_mode.h"

#include <algorithm>
#include <set>

namespace attn::nn {

void Module::check_new_name(const std::string& name) const {
  ATTN_CHECK(!name.empty() && name.find('.') == std::string::npos, "Module: name '", name,
             "' must be non-empty and contain no '.'");
  for (const Entry& e : entries_) {
    ATTN_CHECK(e.name != name, "Module: '", name, "' is already registered");
  }
}

Tensor Module::register_parameter(const std::string& name, Tensor value) {
  check_new_name(name);
  ATTN_CHECK(value.defined(), "Module: parameter '", name, "' is undefined");
  value.set_requires_grad(true);
  entries_.push_back({name, value, nullptr});
  return value;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
  check_new_name(name);
  ATTN_CHECK(module != nullptr, "Module: sub-module '", name, "' is null");
  entries_.push_back({name, Tensor(), module});
  children_.emplace_back(name, std::move(module));
}

void Module::collect(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out,
                     std::vector<const TensorImpl*>& seen) const {
  for (const Entry& e : entries_) {
    const std::string name = prefix + e.name;
    if (e.module) {
      e.module->collect(name + ".", out, seen);
    } else if (std::find(seen.begin(), seen.end(), e.param.impl()) == seen.end()) {
      seen.push_back(e.param.impl());
      out.emplace_back(name, e.param);
    }
  }
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::vector<const TensorImpl*> seen;
  collect("", out, seen);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, p] : named_parameters()) out.push_back(p);
  return out;
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (auto& [name, p] : named_parameters()) n += p.numel();
  return n;
}

void Module::train(bool training) {
  training_ = training;
  cast_cache_.clear();
  for (auto& [name, child] : children_) child->train(training);
}

void Module::set_dropout_generator(Generator* gen) {
  dropout_gen_ = gen;
  for (auto& [name, child] : children_) child->set_dropout_generator(gen);
}

void Module::to_device(Device device) {
  for (auto& [name, p] : named_parameters()) p.move_to_(device);
  clear_cast_caches();
}

void Module::clear_cast_caches() {
  cast_cache_.clear();
  for (auto& [name, child] : children_) child->clear_cast_caches();
}

void Module::set_compute_dtype(DType dtype) {
  ATTN_CHECK(dtype == kF32 || dtype == kF64 || dtype == kBF16 || dtype == kF16,
             "Module: compute dtype must be a floating-point type, got ", dtype_name(dtype));
  compute_dtype_ = dtype;
  cast_cache_.clear();
  for (auto& [name, child] : children_) child->set_compute_dtype(dtype);
}

Tensor Module::compute(const Tensor& p) const {
  const bool low = compute_dtype_ == kBF16 || compute_dtype_ == kF16;
  if (!low || !p.defined() || p.dtype() == compute_dtype_) return p;
  if (training_ || grad_enabled()) return cast(p, compute_dtype_);
  auto [it, fresh] = cast_cache_.try_emplace(p.impl());
  if (fresh) it->second = cast(p, compute_dtype_);
  return it->second;
}

void Module::zero_grad() {
  for (auto& [name, p] : named_parameters()) p.zero_grad();
}

void Module::load_parameters(const std::map<std::string, Tensor>& values, bool strict) {
  const auto params = named_parameters();
  std::set<std::string> known;
  // Check everything before copying anything, so a failed load leaves the model unchanged.
  for (const auto& [name, p] : params) {
    known.insert(name);
    auto it = values.find(name);
    if (it == values.end()) {
      ATTN_CHECK(!strict, "load_parameters: checkpoint has no parameter '", name,
                 "' (the model expects shape ", p.shape(), ")");
      continue;
    }
    ATTN_CHECK(it->second.defined(), "load_parameters: checkpoint parameter '", name,
               "' is undefined");
    ATTN_CHECK(it->second.shape() == p.shape(), "checkpoint parameter '", name, "' has shape ",
               it->second.shape(), " but the model expects ", p.shape());
    // A different dtype is a different file than the one written for this model: converting
    // it silently would hide a damaged or foreign checkpoint.
    ATTN_CHECK(it->second.dtype() == p.dtype(), "checkpoint parameter '", name, "' is ",
               it->second.dtype(), " but the model's parameter is ", p.dtype());
  }
  for (const auto& [name, t] : values) {
    ATTN_CHECK(!strict || known.count(name), "load_parameters: checkpoint parameter '", name,
               "' (shape ", t.defined() ? t.shape() : Shape{},
               ") is not a parameter of this model");
  }
  for (const auto& [name, p] : params) {
    auto it = values.find(name);
    if (it == values.end()) continue;
    Tensor dst = p.detach();  // writing values is not an op to record
    dst.copy_(it->second);
  }
  clear_cast_caches();
}

}  // namespace attn::nn
