// The engine itself: accumulation, shared inputs, graph lifetime, grad mode.
#include <catch2/catch.hpp>

#include "autograd/engine.h"
#include "autograd/functions.h"
#include "core/grad_mode.h"

using namespace attn;

namespace {
Tensor param(std::vector<double> v, Shape s) {
  Tensor t = Tensor::from_vector(v, s, kF64);
  t.set_requires_grad(true);
  return t;
}
}  // namespace

TEST_CASE("a tensor used twice gets the sum of both gradients (tied embeddings)", "[autograd]") {
  Tensor w = param({1, 2, 3}, {3});
  // loss = sum(w * w) + sum(3 w)  ->  d/dw = 2w + 3
  Tensor loss = add(sum(mul(w, w)), sum(scale(w, 3)));
  loss.backward();
  CHECK(w.grad().to_double_vector() == std::vector<double>{5, 7, 9});
}

TEST_CASE("gradients accumulate across backward calls until zero_grad", "[autograd]") {
  Tensor w = param({1, -1}, {2});
  sum(scale(w, 2)).backward();
  sum(scale(w, 2)).backward();
  CHECK(w.grad().to_double_vector() == std::vector<double>{4, 4});
  w.zero_grad();
  CHECK_FALSE(w.grad().defined());
}

TEST_CASE("diamond graphs run each node once with the summed gradient", "[autograd]") {
  Tensor x = param({0.5, 2}, {2});
  Tensor h = relu(x);            // shared intermediate
  Tensor a = scale(h, 3);
  Tensor b = mul(h, h);
  sum(add(a, b)).backward();     // d/dx = 3 + 2x  (x > 0)
  CHECK(x.grad().to_double_vector() == std::vector<double>{4, 7});
}

TEST_CASE("backward errors are clear", "[autograd][errors]") {
  Tensor c = Tensor::from_vector({1, 2}, {2}, kF64);
  REQUIRE_THROWS_WITH(sum(c).backward(), Catch::Contains("does not require grad"));

  Tensor w = param({1, 2}, {2});
  REQUIRE_THROWS_WITH(scale(w, 2).backward(), Catch::Contains("non-scalar root"));

  Tensor loss = sum(mul(w, w));
  loss.backward();
  REQUIRE_THROWS_WITH(loss.backward(), Catch::Contains("already freed") &&
                                           Catch::Contains("retain_graph"));

  Tensor loss2 = sum(mul(w, w));
  w.zero_grad();
  loss2.backward({}, /*retain_graph=*/true);
  loss2.backward();
  CHECK(w.grad().to_double_vector() == std::vector<double>{4, 8});

  REQUIRE_THROWS_WITH(Tensor::zeros({2}, kI32).set_requires_grad(true),
                      Catch::Contains("cannot require grad"));
  REQUIRE_THROWS_WITH(scale(w, 1).set_requires_grad(false), Catch::Contains("leaf"));
}

TEST_CASE("NoGradGuard records nothing", "[autograd]") {
  Tensor w = param({1, 2}, {2});
  Tensor y;
  {
    NoGradGuard guard;
    y = scale(w, 2);
  }
  CHECK_FALSE(y.requires_grad());
  CHECK(y.is_leaf());
  CHECK(scale(w, 2).requires_grad());
}

TEST_CASE("inputs without requires_grad get no gradient; frozen branches still flow",
          "[autograd]") {
  Tensor w = param({1, 2}, {2});
  Tensor frozen = Tensor::from_vector({3, 4}, {2}, kF64);
  Tensor loss = sum(mul(w, frozen));
  loss.backward();
  CHECK(w.grad().to_double_vector() == std::vector<double>{3, 4});
  CHECK_FALSE(frozen.grad().defined());
}

TEST_CASE("backward from a leaf and with an explicit gradient", "[autograd]") {
  Tensor w = param({1, 2, 3}, {3});
  Tensor g = Tensor::from_vector({0.5, 1, 2}, {3}, kF64);
  autograd::backward(w, g);
  CHECK(w.grad().to_double_vector() == std::vector<double>{0.5, 1, 2});
  Tensor y = matmul(w.detach().view({1, 3}), Tensor::ones({3, 2}, kF64));
  CHECK_FALSE(y.requires_grad());
}

TEST_CASE("saved tensors are released after backward", "[autograd]") {
  Tensor w = param({1, 2}, {2});
  std::weak_ptr<Storage> saved_storage;
  {
    Tensor h = scale(w, 2);
    saved_storage = h.impl()->storage;
    Tensor loss = sum(mul(h, h));  // mul saves h
    h = Tensor();
    CHECK_FALSE(saved_storage.expired());
    loss.backward();
    CHECK(saved_storage.expired());  // the graph no longer holds h
  }
}
