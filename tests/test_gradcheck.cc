// Runs every registered gradient check and requires one for every differentiable op.
#include <catch2/catch.hpp>
#include <set>

#include "autograd/functions.h"
#include "gradcheck.h"

using namespace attn;

namespace {
using GcIn = std::vector<Tensor>;
}  // namespace

// linear_relu: random inputs put no pre-activation within eps of the kink at 0 (checked by
// the finite differences themselves: a straddled kink would show as a mismatch).
ATTN_GRADCHECK_CASES({
    {"linear_relu/bias 3-D input", autograd::OpId::linear_relu,
     [](Generator& g) {
       return GcIn{testing::randn({2, 3, 4}, g), testing::randn({5, 4}, g),
                   testing::randn({5}, g)};
     },
     [](const GcIn& x) { return linear_relu(x[0], x[1], x[2]); }},
    {"linear_relu/no bias", autograd::OpId::linear_relu,
     [](Generator& g) { return GcIn{testing::randn({4, 6}, g), testing::randn({3, 6}, g)}; },
     [](const GcIn& x) { return linear_relu(x[0], x[1]); }},
    {"linear_relu/frozen weight and input", autograd::OpId::linear_relu,
     [](Generator& g) {
       return GcIn{testing::randn({3, 2}, g, false), testing::randn({4, 2}, g, false),
                   testing::randn({4}, g)};
     },
     [](const GcIn& x) { return linear_relu(x[0], x[1], x[2]); }},
});

TEST_CASE("every differentiable op has a gradient check", "[gradcheck]") {
  std::set<autograd::OpId> covered;
  for (const auto& c : testing::gradcheck_registry()) covered.insert(c.op);
  for (autograd::OpId op : autograd::differentiable_ops()) {
    INFO("op without a gradient check: " << autograd::op_name(op));
    CHECK(covered.count(op) == 1);
  }
}

TEST_CASE("gradient checks", "[gradcheck]") {
  const auto& cases = testing::gradcheck_registry();
  REQUIRE(!cases.empty());
  for (const auto& c : cases) {
    DYNAMIC_SECTION(c.name) { testing::run_gradcheck(c); }
  }
}
