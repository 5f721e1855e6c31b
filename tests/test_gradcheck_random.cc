// Gradient checks on shapes drawn from the seeded generator (sizes 1..5, so odd sizes and
// length-1 sequences come up), in addition to the hand-picked shapes next to each op.
#include <catch2/catch.hpp>

#include "autograd/functions.h"
#include "gradcheck.h"

using namespace attn;
using attn::autograd::OpId;
using testing::randn;

namespace {
using In = std::vector<Tensor>;
int64_t draw(Generator& g, int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(Tensor::uniform({1}, 0, 1, g, kF64).item() * (hi - lo + 1));
}
}  // namespace

ATTN_GRADCHECK_CASES({
    {"matmul/random shapes", OpId::matmul,
     [](Generator& g) {
       const int64_t b = draw(g, 1, 3), m = draw(g, 1, 5), k = draw(g, 1, 5), n = draw(g, 1, 5);
       return In{randn({b, m, k}, g), randn({b, k, n}, g)};
     },
     [](const In& x) { return matmul(x[0], x[1]); }},
    {"layer_norm/random shapes with residual", OpId::layer_norm,
     [](Generator& g) {
       const int64_t r = draw(g, 1, 5), w = draw(g, 1, 9);
       return In{randn({r, w}, g), randn({w}, g), randn({w}, g), randn({r, w}, g)};
     },
     [](const In& x) { return layer_norm(x[0], x[1], x[2], 1e-5, x[3]); }},
    {"attention/random shapes, lengths and causality", OpId::attention,
     [](Generator& g) {
       const int64_t b = draw(g, 1, 3), h = draw(g, 1, 2), tq = draw(g, 1, 4),
                     tk = draw(g, 1, 4), d = draw(g, 1, 4);
       std::vector<int32_t> lens;
       for (int64_t i = 0; i < b; ++i) lens.push_back(static_cast<int32_t>(draw(g, 0, tk)));
       const bool causal = draw(g, 0, 1) == 1;
       return In{randn({b, h, tq, d}, g), randn({b, h, tk, d}, g), randn({b, h, tk, d}, g),
                 Tensor::from_ints(lens, {b}), Tensor::full({1}, causal ? 1 : 0, kI32)};
     },
     [](const In& x) { return attention(x[0], x[1], x[2], x[3], x[4].item() != 0); }},
});
