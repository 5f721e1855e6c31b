#include "gradcheck.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <sstream>

#include "autograd/engine.h"

namespace attn::testing {

std::vector<GradCheckCase>& gradcheck_registry() {
  static std::vector<GradCheckCase> cases;
  return cases;
}

GradCheckRegistrar::GradCheckRegistrar(std::vector<GradCheckCase> cases) {
  for (auto& c : cases) gradcheck_registry().push_back(std::move(c));
}

Tensor randn(const Shape& shape, Generator& gen, bool requires_grad) {
  Tensor t = Tensor::normal(shape, 0.0, 1.0, gen, kF64);
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

namespace {
double weighted(const Tensor& out, const std::vector<double>& w) {
  const auto v = out.to_double_vector();
  double s = 0;
  for (size_t i = 0; i < v.size(); ++i) s += v[i] * w[i];
  return s;
}
}  // namespace

void run_gradcheck(const GradCheckCase& c) {
  INFO("gradcheck case: " << c.name);
  Generator gen(20261121);
  std::vector<Tensor> in = c.inputs(gen);
  Tensor out = c.fn(in);
  REQUIRE(out.defined());
  REQUIRE(out.requires_grad());
  REQUIRE_FALSE(out.is_leaf());
  REQUIRE(std::string(out.impl()->grad_fn->name()) == autograd::op_name(c.op));

  Tensor upstream = Tensor::normal(out.shape(), 0.0, 1.0, gen, out.dtype());
  const std::vector<double> w = upstream.to_double_vector();
  out.backward(upstream);

  NoGradGuard no_grad;
  int checked_inputs = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    Tensor& x = in[i];
    if (!x.defined() || !x.requires_grad()) continue;
    REQUIRE(x.dtype() == kF64);
    ++checked_inputs;
    const Tensor g = x.grad();
    const std::vector<double> analytic =
        g.defined() ? g.to_double_vector() : std::vector<double>(x.numel(), 0.0);
    double* p = x.data<double>();
    int mismatches = 0;
    std::ostringstream first;
    for (int64_t k = 0; k < x.numel(); ++k) {
      const double orig = p[k];
      p[k] = orig + c.eps;
      const double fp = weighted(c.fn(in), w);
      p[k] = orig - c.eps;
      const double fm = weighted(c.fn(in), w);
      p[k] = orig;
      const double numeric = (fp - fm) / (2 * c.eps);
      const double diff = std::abs(numeric - analytic[k]);
      if (!(diff <= c.atol + c.rtol * std::abs(numeric))) {
        if (mismatches++ < 5)
          first << "  input " << i << " element " << k << ": analytic " << analytic[k]
                << " numeric " << numeric << "\n";
      }
    }
    INFO("input " << i << " of shape " << shape_str(x.shape()) << ": " << mismatches << " of " << x.numel()
                  << " elements differ\n"
                  << first.str());
    CHECK(mismatches == 0);
  }
  CHECK(checked_inputs > 0);
}

}  // namespace attn::testing
