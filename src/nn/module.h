// Module: the owner of named parameters and sub-modules, with a training flag and the
// dropout generator, both set recursively. Names are dotted paths in registration order
// ("encoder.layers.3.self_attn.q_proj.weight"); they are the keys of checkpoints.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <unordered_map>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"

namespace attn::nn {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  // Parameters are shared handles: copying a module would alias them silently.
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Every parameter once, under the first name that reaches it (a tensor registered by two
  // modules, e.g. tied embeddings, is listed once).
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<Tensor> parameters() const;
  // Number of scalar values in the unique parameters.
  int64_t parameter_count() const;

  // Direct children in registration order.
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const {
    return children_;
  }

  // Training mode (dropout on) for this module and all below it.
  void train(bool training = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Generator the dropout masks of this module and all below it draw from; null means
  // default_generator(). Not owned: the trainer keeps it (its state is checkpointed).
  void set_dropout_generator(Generator* gen);
  Generator& dropout_generator() const {
    return dropout_gen_ ? *dropout_gen_ : default_generator();
  }

  // Drops the gradients of all parameters.
  void zero_grad();

  // Moves every parameter to `device` in place (handles held elsewhere see the move).
  void to_device(Device device);

  // Mixed precision: parameters stay in their own dtype (f32 master weights); forward passes
  // compute in this dtype (bf16/f16 on CUDA). kF32/kF64 mean "the parameters' dtype".
  void set_compute_dtype(DType dtype);
  DType compute_dtype() const { return compute_dtype_; }
  // p as the forward pass uses it: cast (recorded, so its gradient reaches p in p's dtype)
  // when the compute dtype is a 16-bit type, else p itself. In eval mode without grad
  // (validation, beam search) the cast is made once and reused until the module's mode,
  // device, compute dtype or parameters are changed through this API.
  Tensor compute(const Tensor& p) const;

  // Copies values into the existing parameters by name (dtype converted, shapes must match).
  // strict: every parameter must be given and no other key may appear; otherwise missing
  // parameters keep their values and unknown keys are ignored. Shapes are always checked, and
  // everything is checked before anything is copied (a failed load changes nothing).
  void load_parameters(const std::map<std::string, Tensor>& values, bool strict = true);

 protected:
  // Marks `value` as requiring grad and records it under `name`; returns the same handle.
  Tensor register_parameter(const std::string& name, Tensor value);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }

 private:
  void clear_cast_caches();
  void add_child(const std::string& name, std::shared_ptr<Module> module);
  void check_new_name(const std::string& name) const;
  // Parameters and children interleaved in registration order.
  struct Entry {
    std::string name;
    Tensor param;                    // defined for a parameter
    std::shared_ptr<Module> module;  // set for a child
  };
  void collect(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out,
               std::vector<const TensorImpl*>& seen) const;

  std::vector<Entry> entries_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
  Generator* dropout_gen_ = nullptr;
  DType compute_dtype_ = DType::kF32;
  mutable std::unordered_map<const TensorImpl*, Tensor> cast_cache_;  // see compute()
};

// An indexed list of modules of one type, named "0", "1", ... ("layers.3.ffn...").
template <class M>
class ModuleList : public Module {
 public:
  std::shared_ptr<M> push_back(std::shared_ptr<M> module) {
    items_.push_back(register_module(std::to_string(items_.size()), std::move(module)));
    return items_.back();
  }
  int64_t size() const { return static_cast<int64_t>(items_.size()); }
  M& operator[](int64_t i) const { return *items_.at(static_cast<size_t>(i)); }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::vector<std::shared_ptr<M>> items_;
};

// Eval mode (no dropout) for a scope; the module's training flag is restored however the
// scope ends (decoding, validation).
class EvalModeGuard {
 public:
  explicit EvalModeGuard(Module& m) : module_(m), was_training_(m.is_training()) { m.eval(); }
  ~EvalModeGuard() { module_.train(was_training_); }
  EvalModeGuard(const EvalModeGuard&) = delete;
  EvalModeGuard& operator=(const EvalModeGuard&) = delete;

 private:
  Module& module_;
  bool was_training_;
};

}  // namespace attn::nn
