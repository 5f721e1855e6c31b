// Runs every registered gradient check and requires one for every differentiable op.
#include <catch2/catch.hpp>
#include <set>

#include "gradcheck.h"

using namespace attn;

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
