// Gradient checks and forward values for arithmetic, matmul, reductions and layout ops.
#include <catch2/catch.hpp>

#include "autograd/functions.h"
#include "gradcheck.h"

using namespace attn;
using attn::autograd::OpId;
using testing::randn;

namespace {
using In = std::vector<Tensor>;
Tensor frozen(const Shape& s, Generator& g) { return randn(s, g, false); }
}  // namespace

ATTN_GRADCHECK_CASES({
    {"matmul/2d", OpId::matmul, [](Generator& g) { return In{randn({3, 4}, g), randn({4, 5}, g)}; },
     [](const In& x) { return matmul(x[0], x[1]); }},
    {"matmul/batched trans_a trans_b", OpId::matmul,
     [](Generator& g) { return In{randn({2, 3, 4, 3}, g), randn({2, 3, 5, 4}, g)}; },
     [](const In& x) { return matmul(x[0], x[1], true, true); }},
    {"matmul/batched trans_b (q k^T)", OpId::matmul,
     [](Generator& g) { return In{randn({2, 3, 5}, g), randn({2, 4, 5}, g)}; },
     [](const In& x) { return matmul(x[0], x[1], false, true); }},
    {"matmul/shared 2-D b, trans_a", OpId::matmul,
     [](Generator& g) { return In{randn({2, 4, 3}, g), randn({4, 2}, g)}; },
     [](const In& x) { return matmul(x[0], x[1], true, false); }},
    {"matmul/shared 2-D b, trans_b", OpId::matmul,
     [](Generator& g) { return In{randn({3, 1, 3}, g), randn({5, 3}, g)}; },
     [](const In& x) { return matmul(x[0], x[1], false, true); }},
    {"linear/bias 3-D input", OpId::linear,
     [](Generator& g) { return In{randn({2, 3, 4}, g), randn({5, 4}, g), randn({5}, g)}; },
     [](const In& x) { return linear(x[0], x[1], x[2]); }},
    {"linear/no bias, one row", OpId::linear,
     [](Generator& g) { return In{randn({1, 7}, g), randn({3, 7}, g)}; },
     [](const In& x) { return linear(x[0], x[1]); }},
    {"linear/frozen weight", OpId::linear,
     [](Generator& g) { return In{randn({3, 2}, g), frozen({4, 2}, g), randn({4}, g)}; },
     [](const In& x) { return linear(x[0], x[1], x[2]); }},
    {"add", OpId::add, [](Generator& g) { return In{randn({3, 5}, g), randn({3, 5}, g)}; },
     [](const In& x) { return add(x[0], x[1]); }},
    {"add/same tensor twice", OpId::add, [](Generator& g) { return In{randn({4}, g)}; },
     [](const In& x) { return add(x[0], x[0]); }},
    {"sub", OpId::sub, [](Generator& g) { return In{randn({2, 3}, g), randn({2, 3}, g)}; },
     [](const In& x) { return sub(x[0], x[1]); }},
    {"mul", OpId::mul, [](Generator& g) { return In{randn({7}, g), randn({7}, g)}; },
     [](const In& x) { return mul(x[0], x[1]); }},
    {"mul/square", OpId::mul, [](Generator& g) { return In{randn({5}, g)}; },
     [](const In& x) { return mul(x[0], x[0]); }},
    {"scale", OpId::scale, [](Generator& g) { return In{randn({2, 3}, g)}; },
     [](const In& x) { return scale(x[0], -2.5); }},
    {"relu", OpId::relu,
     [](Generator& g) {
       // Keep inputs away from the kink at 0, where the derivative is not defined.
       Tensor t = Tensor::from_vector({-1.5, -0.3, 0.2, 0.9, 2.0, -0.7}, {2, 3}, kF64);
       t.set_requires_grad(true);
       return In{t};
     },
     [](const In& x) { return relu(x[0]); }},
    {"sum/all", OpId::sum, [](Generator& g) { return In{randn({2, 3, 4}, g)}; },
     [](const In& x) { return sum(x[0]); }},
    {"sum/dim 1", OpId::sum, [](Generator& g) { return In{randn({2, 3, 4}, g)}; },
     [](const In& x) { return sum(x[0], 1); }},
    {"sum/last dim keepdim", OpId::sum, [](Generator& g) { return In{randn({3, 5}, g)}; },
     [](const In& x) { return sum(x[0], -1, true); }},
    {"mean", OpId::mean, [](Generator& g) { return In{randn({3, 3}, g)}; },
     [](const In& x) { return mean(x[0]); }},
    {"reshape", OpId::reshape, [](Generator& g) { return In{randn({2, 6}, g)}; },
     [](const In& x) { return reshape(x[0], {3, -1}); }},
    {"transpose/inner", OpId::transpose, [](Generator& g) { return In{randn({2, 3, 4}, g)}; },
     [](const In& x) { return transpose(x[0], 1, 2); }},
    {"transpose/outer", OpId::transpose, [](Generator& g) { return In{randn({3, 2, 5}, g)}; },
     [](const In& x) { return transpose(x[0], 0, -1); }},
    {"split_heads", OpId::split_heads, [](Generator& g) { return In{randn({2, 3, 6}, g)}; },
     [](const In& x) { return split_heads(x[0], 3); }},
    {"merge_heads", OpId::merge_heads, [](Generator& g) { return In{randn({2, 2, 3, 4}, g)}; },
     [](const In& x) { return merge_heads(x[0]); }},
    {"concat/dim 1", OpId::concat,
     [](Generator& g) { return In{randn({2, 1, 3}, g), randn({2, 4, 3}, g)}; },
     [](const In& x) { return concat({x[0], x[1]}, 1); }},
    {"concat/last dim, frozen middle", OpId::concat,
     [](Generator& g) { return In{randn({3, 2}, g), frozen({3, 1}, g), randn({3, 3}, g)}; },
     [](const In& x) { return concat(x, -1); }},
    {"slice/middle", OpId::slice, [](Generator& g) { return In{randn({2, 5, 3}, g)}; },
     [](const In& x) { return slice(x[0], 1, 1, 4); }},
    {"slice/first rows", OpId::slice, [](Generator& g) { return In{randn({4, 3}, g)}; },
     [](const In& x) { return slice(x[0], 0, 0, 1); }},
    {"cast/f64 to f32", OpId::cast, [](Generator& g) { return In{randn({6}, g)}; },
     // f32 rounding (~1e-7 relative) limits how small eps can be.
     [](const In& x) { return cast(x[0], kF32); }, 1e-2, 1e-4, 1e-4},
});

TEST_CASE("matmul forward matches hand-computed products", "[ops]") {
  Tensor a = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_vector({7, 8, 9, 10, 11, 12}, {3, 2});
  CHECK(matmul(a, b).to_double_vector() == std::vector<double>{58, 64, 139, 154});
  // a^T a : [3, 3]
  CHECK(matmul(a, a, true, false).to_double_vector() ==
        std::vector<double>{17, 22, 27, 22, 29, 36, 27, 36, 45});
  Tensor w = Tensor::from_vector({1, 0, 0, 0, 1, 0}, {2, 3});
  Tensor bias = Tensor::from_vector({0.5, -1}, {2});
  CHECK(linear(a, w, bias).to_double_vector() == std::vector<double>{1.5, 1, 4.5, 4});
}

TEST_CASE("layout ops move elements where expected", "[ops]") {
  Tensor x = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {2, 3});
  CHECK(transpose(x, 0, 1).to_double_vector() == std::vector<double>{0, 3, 1, 4, 2, 5});
  CHECK(slice(x, 1, 1, 3).to_double_vector() == std::vector<double>{1, 2, 4, 5});
  CHECK(concat({x, x}, 0).shape() == Shape{4, 3});
  CHECK(concat({slice(x, 1, 0, 1), slice(x, 1, 1, 3)}, 1).to_double_vector() ==
        x.to_double_vector());
  // [B=1, T=2, H*D=4] with H=2: head h of step t is x[t, 2h:2h+2].
  Tensor y = Tensor::from_vector({0, 1, 2, 3, 4, 5, 6, 7}, {1, 2, 4});
  Tensor h = split_heads(y, 2);
  CHECK(h.shape() == Shape{1, 2, 2, 2});
  CHECK(h.to_double_vector() == std::vector<double>{0, 1, 4, 5, 2, 3, 6, 7});
  CHECK(merge_heads(h).to_double_vector() == y.to_double_vector());
  CHECK(sum(x, 0).to_double_vector() == std::vector<double>{3, 5, 7});
  CHECK(sum(x, 1).to_double_vector() == std::vector<double>{3, 12});
  CHECK(sum(x).item() == 15);
  CHECK(mean(x).item() == 2.5);
}

TEST_CASE("ops reject bad shapes with messages naming the op and the shapes", "[ops][errors]") {
  Tensor a = Tensor::zeros({2, 3});
  Tensor b = Tensor::zeros({4, 5});
  REQUIRE_THROWS_WITH(matmul(a, b), Catch::Contains("matmul") && Catch::Contains("[2, 3]") &&
                                        Catch::Contains("[4, 5]"));
  REQUIRE_THROWS_WITH(add(a, b), Catch::Contains("add") && Catch::Contains("[2, 3]"));
  REQUIRE_THROWS_WITH(linear(a, b), Catch::Contains("linear") && Catch::Contains("[4, 5]"));
  REQUIRE_THROWS_WITH(linear(a, Tensor::zeros({4, 3}), Tensor::zeros({3})),
                      Catch::Contains("linear: bias"));
  REQUIRE_THROWS_WITH(split_heads(Tensor::zeros({1, 2, 5}), 2),
                      Catch::Contains("split_heads") && Catch::Contains("[1, 2, 5]"));
  REQUIRE_THROWS_WITH(concat({a, b}, 0), Catch::Contains("concat"));
  REQUIRE_THROWS_WITH(slice(a, 1, 2, 4), Catch::Contains("slice") && Catch::Contains("[2, 3]"));
  REQUIRE_THROWS_WITH(transpose(a, 0, 2), Catch::Contains("transpose"));
  REQUIRE_THROWS_WITH(reshape(a, {4, 2}), Catch::Contains("view") && Catch::Contains("[4, 2]"));
  REQUIRE_THROWS_WITH(add(a, a.to(kF64)), Catch::Contains("add") && Catch::Contains("f64"));
  REQUIRE_THROWS_WITH(relu(Tensor::zeros({2}, kI32)), Catch::Contains("relu") &&
                                                          Catch::Contains("i32"));
  REQUIRE_THROWS_WITH(relu(Tensor::zeros({2}, kBF16)),
                      Catch::Contains("relu") && Catch::Contains("bf16") &&
                          Catch::Contains("CPU"));
}

TEST_CASE("transpose of two inner dimensions moves every element (outer, mid and inner > 1)",
          "[ops]") {
  // x [2, 3, 4, 5, 6], dims 1 and 3 swapped: out[o, b, m, a, i] = x[o, a, m, b, i].
  const Shape shape = {2, 3, 4, 5, 6};
  std::vector<double> v(2 * 3 * 4 * 5 * 6);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i);
  for (DType dt : {kF32, kF64}) {
    const std::vector<double> out =
        transpose(Tensor::from_vector(v, shape, dt), 1, 3).to_double_vector();
    REQUIRE(out.size() == v.size());
    int64_t bad = 0;
    for (int64_t o = 0; o < 2; ++o)
      for (int64_t a = 0; a < 3; ++a)
        for (int64_t m = 0; m < 4; ++m)
          for (int64_t b = 0; b < 5; ++b)
            for (int64_t i = 0; i < 6; ++i) {
              const int64_t src = (((o * 3 + a) * 4 + m) * 5 + b) * 6 + i;
              const int64_t dst = (((o * 5 + b) * 4 + m) * 3 + a) * 6 + i;
              if (out[static_cast<size_t>(dst)] != v[static_cast<size_t>(src)]) ++bad;
            }
    CHECK(bad == 0);
  }
}
