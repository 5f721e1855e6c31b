// Finite-difference gradient checks in double. Each test file registers cases for the ops it
// covers; test_gradcheck.cc runs them all and fails if any differentiable op
// (autograd::differentiable_ops()) has no case.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "core/tensor.h"

namespace attn::testing {

struct GradCheckCase {
  std::string name;     // op and variant, e.g. "layer_norm/residual odd width"
  autograd::OpId op;    // the op under test: the output's grad_fn must be this op
  // Fresh f64 inputs; those to check have requires_grad set. Integer inputs (ids, lengths)
  // are passed along unchanged.
  std::function<std::vector<Tensor>(Generator&)> inputs;
  std::function<Tensor(const std::vector<Tensor>&)> fn;
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-5;
};

std::vector<GradCheckCase>& gradcheck_registry();

struct GradCheckRegistrar {
  explicit GradCheckRegistrar(std::vector<GradCheckCase> cases);
};

// Checks fn's analytic gradient (backward of a random upstream gradient) against central
// differences for every element of every input that requires grad. Reports through Catch2.
void run_gradcheck(const GradCheckCase& c);

// f64 normal(0, 1) leaf, optionally requiring grad.
Tensor randn(const Shape& shape, Generator& gen, bool requires_grad = true);

}  // namespace attn::testing

#define ATTN_GC_CONCAT2(a, b) a##b
#define ATTN_GC_CONCAT(a, b) ATTN_GC_CONCAT2(a, b)
// Registers gradient-check cases from a test file: ATTN_GRADCHECK_CASES({case1, case2});
#define ATTN_GRADCHECK_CASES(...)                                              \
  static ::attn::testing::GradCheckRegistrar ATTN_GC_CONCAT(attn_gc_reg_, __LINE__)( \
      std::vector<::attn::testing::GradCheckCase> __VA_ARGS__)
