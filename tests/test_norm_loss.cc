// Layer norm, softmax and label-smoothed cross-entropy: gradient checks, forward values
// computed by hand from the formulas, error messages, and f32 against f64.
#include <catch2/catch.hpp>
#include <cmath>
#include <vector>

#include "kernels/cpu_math.h"
#include "autograd/functions.h"
#include "gradcheck.h"
#include "ops/cross_entropy.h"
#include "ops/layer_norm.h"
#include "ops/softmax.h"

using namespace attn;
using autograd::OpId;
using Catch::Contains;
using testing::GradCheckCase;
using testing::randn;

namespace {

using Inputs = std::vector<Tensor>;

GradCheckCase layer_norm_case(const char* name, Shape shape, bool with_residual) {
  const int64_t cols = shape.back();
  return {name, OpId::layer_norm,
          [shape, cols, with_residual](Generator& g) {
            Inputs in = {randn(shape, g), randn({cols}, g), randn({cols}, g)};
            if (with_residual) in.push_back(randn(shape, g));
            return in;
          },
          [](const Inputs& in) {
            return layer_norm(in[0], in[1], in[2], 1e-5, in.size() > 3 ? in[3] : Tensor());
          }};
}

GradCheckCase softmax_case(const char* name, Shape shape) {
  return {name, OpId::softmax, [shape](Generator& g) { return Inputs{randn(shape, g)}; },
          [](const Inputs& in) { return softmax(in[0]); }};
}

// logits of `shape`, targets given flat (shaped like the logits minus the class dimension).
GradCheckCase cross_entropy_case(const char* name, Shape shape, std::vector<int32_t> targets,
                                 double smoothing, int32_t ignore_index) {
  return {name, OpId::cross_entropy,
          [shape, targets](Generator& g) {
            const Shape tshape(shape.begin(), shape.end() - 1);
            return Inputs{randn(shape, g), Tensor::from_ints(targets, tshape)};
          },
          [smoothing, ignore_index](const Inputs& in) {
            return cross_entropy(in[0], in[1], smoothing, ignore_index).loss;
          }};
}

ATTN_GRADCHECK_CASES({
    layer_norm_case("layer_norm/3x5", {3, 5}, false),
    layer_norm_case("layer_norm/residual 1x7", {1, 7}, true),
    layer_norm_case("layer_norm/residual 3-D 2x3x4", {2, 3, 4}, true),
    layer_norm_case("layer_norm/width 1", {4, 1}, false),
    layer_norm_case("layer_norm/width 2 residual", {3, 2}, true),
    softmax_case("softmax/3x5", {3, 5}),
    softmax_case("softmax/last dim 1", {4, 1}),
    softmax_case("softmax/3-D 2x3x7", {2, 3, 7}),
    softmax_case("softmax/1x1", {1, 1}),
    cross_entropy_case("cross_entropy/eps 0", {4, 5}, {0, 3, 4, 1}, 0.0, -1),
    cross_entropy_case("cross_entropy/eps 0.1 ignored rows V odd", {6, 7}, {0, -1, 6, 2, -1, 3},
                       0.1, -1),
    cross_entropy_case("cross_entropy/eps 0.1 ignore_index inside vocab 3-D", {2, 3, 5},
                       {1, 0, 4, 0, 2, 3}, 0.1, 0),
    cross_entropy_case("cross_entropy/fully ignored", {3, 5}, {-1, -1, -1}, 0.1, -1),
    cross_entropy_case("cross_entropy/V 1", {3, 1}, {0, 0, -1}, 0.2, -1),
});

void require_values(const Tensor& t, const std::vector<double>& expected, double tol) {
  const std::vector<double> v = t.to_double_vector();
  REQUIRE(v.size() == expected.size());
  for (size_t i = 0; i < v.size(); ++i) {
    INFO("element " << i);
    CHECK(v[i] == Approx(expected[i]).margin(tol).epsilon(tol));
  }
}

// |a - b| <= rel * max(1, |b|) element-wise: relative for large values, absolute near zero
// (where f32 rounding of an O(1) computation dominates).
void require_agree(const Tensor& a, const Tensor& b, double rel) {
  const std::vector<double> va = a.to_double_vector(), vb = b.to_double_vector();
  REQUIRE(va.size() == vb.size());
  int bad = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    if (!(std::abs(va[i] - vb[i]) <= rel * std::max(1.0, std::abs(vb[i])))) {
      if (bad++ < 3) UNSCOPED_INFO("element " << i << ": " << va[i] << " vs " << vb[i]);
    }
  }
  CHECK(bad == 0);
}

// The same random values in f32 and f64 (the f64 copy of the f32 tensor, so both see
// identical inputs and only the arithmetic differs).
std::pair<Tensor, Tensor> f32_f64_pair(const Shape& shape, Generator& gen) {
  Tensor x32 = Tensor::normal(shape, 0.0, 1.0, gen, kF64).to(kF32);
  return {x32, x32.to(kF64)};
}

}  // namespace

TEST_CASE("layer_norm forward matches the formula on known rows", "[norm]") {
  // Row 0: [1, 2, 3, 4] has mean 2.5 and biased variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25.
  // Row 1: [-1, 0, 0, 1] has mean 0 and variance (1 + 0 + 0 + 1) / 4 = 0.5.
  const double eps = 1e-5;
  const double r0 = 1.0 / std::sqrt(1.25 + eps), r1 = 1.0 / std::sqrt(0.5 + eps);
  const std::vector<double> gamma = {1, 2, 0.5, -1}, beta = {0, 1, 0, 0.5};
  const std::vector<double> expected = {-1.5 * r0 * 1 + 0,   -0.5 * r0 * 2 + 1,  0.5 * r0 * 0.5 + 0,
                                        1.5 * r0 * -1 + 0.5, -1.0 * r1 * 1 + 0,  0.0 * r1 * 2 + 1,
                                        0.0 * r1 * 0.5 + 0,  1.0 * r1 * -1 + 0.5};
  for (DType dt : {kF64, kF32}) {
    const double tol = dt == kF64 ? 1e-12 : 1e-6;
    Tensor x = Tensor::from_vector({1, 2, 3, 4, -1, 0, 0, 1}, {2, 4}, dt);
    Tensor g = Tensor::from_vector(gamma, {4}, dt), b = Tensor::from_vector(beta, {4}, dt);

    INFO(dtype_name(dt));
    ops::LayerNormOutput out = ops::layer_norm_forward(x, g, b, eps);
    require_values(out.y, expected, tol);
    require_values(out.mean, {2.5, 0.0}, tol);
    require_values(out.rstd, {r0, r1}, tol);
    CHECK(out.mean.shape() == Shape{2});
    require_values(layer_norm(x, g, b, eps), expected, tol);
    // Fused residual: x + residual is the same [1, 2, 3, 4; -1, 0, 0, 1].
    Tensor xs = Tensor::from_vector({0.5, 1.5, 1, 5, 0, -1, 0.25, 3}, {2, 4}, dt);
    Tensor res = Tensor::from_vector({0.5, 0.5, 2, -1, -1, 1, -0.25, -2}, {2, 4}, dt);
    require_values(layer_norm(xs, g, b, eps, res), expected, tol);
  }
}

TEST_CASE("layer_norm of a 3-D input normalises each row of the last dimension", "[norm]") {
  Tensor x = Tensor::from_vector({1, 3, 10, 20, -2, 2}, {3, 1, 2}, kF64);
  Tensor g = Tensor::ones({2}, kF64), b = Tensor::zeros({2}, kF64);
  // Each row [a, c] has mean (a+c)/2 and variance ((c-a)/2)^2, so y = [-1, 1] * |c-a|/2 /
  // sqrt(((c-a)/2)^2 + eps).
  auto y_of = [](double half) { return half / std::sqrt(half * half + 1e-5); };
  ops::LayerNormOutput out = ops::layer_norm_forward(x, g, b, 1e-5);
  CHECK(out.y.shape() == Shape{3, 1, 2});
  CHECK(out.mean.shape() == Shape{3, 1});
  require_values(out.y, {-y_of(1), y_of(1), -y_of(5), y_of(5), -y_of(2), y_of(2)}, 1e-12);
  require_values(out.mean, {2, 15, 0}, 1e-12);
}

TEST_CASE("layer_norm backward gives the residual the same gradient as x", "[norm]") {
  Generator gen(7);
  Tensor x = randn({3, 6}, gen), res = randn({3, 6}, gen);
  Tensor g = randn({6}, gen), b = randn({6}, gen);
  Tensor y = layer_norm(x, g, b, 1e-5, res);
  y.backward(Tensor::normal({3, 6}, 0, 1, gen, kF64));
  REQUIRE(x.grad().defined());
  REQUIRE(res.grad().defined());
  require_values(res.grad(), x.grad().to_double_vector(), 0);
  // The rows of dx sum to zero: the output does not change when a row is shifted.
  const std::vector<double> dx = x.grad().to_double_vector();
  for (int r = 0; r < 3; ++r) {
    double s = 0;
    for (int j = 0; j < 6; ++j) s += dx[r * 6 + j];
    CHECK(s == Approx(0).margin(1e-12));
  }
}

TEST_CASE("layer_norm backward is the same on the parallel path and row by row", "[norm]") {
  // 300 x 128 takes the OpenMP path with per-thread dgamma/dbeta slices; 100-row chunks stay
  // below the threshold and run serially.
  Generator gen(11);
  const int64_t rows = 300, cols = 128;
  Tensor x = randn({rows, cols}, gen, false), dy = randn({rows, cols}, gen, false);
  Tensor g = randn({cols}, gen, false), b = randn({cols}, gen, false);
  ops::LayerNormOutput f = ops::layer_norm_forward(x, g, b, 1e-5);
  ops::LayerNormGrads whole = ops::layer_norm_backward(dy, x, Tensor(), g, f.mean, f.rstd);
  std::vector<double> dg(cols, 0.0), db(cols, 0.0), dx;
  for (int64_t r0 = 0; r0 < rows; r0 += 100) {
    Tensor xc = x.narrow0(r0, r0 + 100), dyc = dy.narrow0(r0, r0 + 100);
    ops::LayerNormOutput fc = ops::layer_norm_forward(xc, g, b, 1e-5);
    ops::LayerNormGrads c = ops::layer_norm_backward(dyc, xc, Tensor(), g, fc.mean, fc.rstd);
    const auto cg = c.dgamma.to_double_vector(), cb = c.dbeta.to_double_vector();
    for (int64_t j = 0; j < cols; ++j) {
      dg[j] += cg[j];
      db[j] += cb[j];
    }
    const auto cx = c.dx.to_double_vector();
    dx.insert(dx.end(), cx.begin(), cx.end());
  }
  require_values(whole.dgamma, dg, 1e-12);
  require_values(whole.dbeta, db, 1e-12);
  require_values(whole.dx, dx, 1e-12);
}

TEST_CASE("softmax of known rows", "[softmax]") {
  const double e = std::exp(1.0);
  const double s3 = e + e * e + e * e * e;
  for (DType dt : {kF64, kF32}) {
    const double tol = dt == kF64 ? 1e-12 : 1e-6;
    INFO(dtype_name(dt));
    // [1, 2, 3] -> e^k / (e + e^2 + e^3); [1000, 1001, 999] overflows exp without the max
    // subtraction and must give [1, e, 1/e] / (1 + e + 1/e).
    Tensor x = Tensor::from_vector({1, 2, 3, 1000, 1001, 999}, {2, 3}, dt);
    const double s2 = 1 + e + 1 / e;
    require_values(softmax(x), {e / s3, e * e / s3, e * e * e / s3, 1 / s2, e / s2, 1 / e / s2},
                   tol);
    // A masked (-inf) entry gets exactly zero; a last dimension of 1 gives 1.
    require_values(softmax(Tensor::from_vector({0, -INFINITY, 0}, {1, 3}, dt)), {0.5, 0, 0.5}, tol);
    require_values(softmax(Tensor::from_vector({-3, 7}, {2, 1}, dt)), {1, 1}, tol);
  }
}

TEST_CASE("softmax backward of a known row", "[softmax]") {
  // y = softmax([0, ln 3]) = [1/4, 3/4]; dy = [1, 0] gives sum(dy*y) = 1/4 and
  // dx = y * (dy - 1/4) = [3/16, -3/16].
  Tensor y = Tensor::from_vector({0.25, 0.75}, {1, 2}, kF64);
  Tensor dy = Tensor::from_vector({1, 0}, {1, 2}, kF64);
  require_values(ops::softmax_backward(y, dy), {3.0 / 16, -3.0 / 16}, 1e-15);
}

TEST_CASE("cross_entropy with label smoothing over a known vocabulary", "[loss]") {
  // V = 4, eps = 0.1: per row loss = 0.9 * (lse - x[y]) + (0.1 / 4) * sum_j (lse - x[j]).
  const double eps = 0.1;
  const std::vector<double> logits = {1,   2,  3, 4,   // target 2: argmax 3, wrong
                                      0.5, -1, 2, 0,   // ignored
                                      3,   1,  0, 0};  // target 0: argmax 0, correct
  const double lse0 = std::log(std::exp(1) + std::exp(2) + std::exp(3) + std::exp(4));
  const double lse2 = std::log(std::exp(3) + std::exp(1) + 2 * std::exp(0));
  const double nll0 = lse0 - 3, nll2 = lse2 - 3;
  const double smooth0 = 4 * lse0 - (1 + 2 + 3 + 4), smooth2 = 4 * lse2 - (3 + 1 + 0 + 0);
  const double loss = (0.9 * nll0 + 0.025 * smooth0) + (0.9 * nll2 + 0.025 * smooth2);
  for (DType dt : {kF64, kF32}) {
    const double tol = dt == kF64 ? 1e-12 : 1e-6;
    INFO(dtype_name(dt));
    Tensor x = Tensor::from_vector(logits, {3, 4}, dt);
    x.set_requires_grad(true);
    Tensor t = Tensor::from_ints({2, -100, 0}, {3});
    CrossEntropyResult r = cross_entropy(x, t, eps, -100);
    CHECK(r.loss.shape() == Shape{});
    CHECK(r.loss.dtype() == dt);
    CHECK(r.nll.dtype() == dt);
    CHECK(r.ntokens.dtype() == kI32);
    CHECK(r.ncorrect.shape() == Shape{});
    CHECK(r.loss.item() == Approx(loss).epsilon(tol));
    CHECK(r.nll.item() == Approx(nll0 + nll2).epsilon(tol));
    CHECK(r.ntokens.item() == 2);
    CHECK(r.ncorrect.item() == 1);
    CHECK_FALSE(r.nll.requires_grad());

    // dlogits = softmax - q with q = 0.9 * onehot(y) + 0.1 / 4; zero on the ignored row.
    r.loss.backward();
    std::vector<double> expected(12, 0.0);
    const double lse[3] = {lse0, 0, lse2};
    const int target[3] = {2, -1, 0};
    for (int i : {0, 2})
      for (int j = 0; j < 4; ++j)
        expected[i * 4 + j] =
            std::exp(logits[i * 4 + j] - lse[i]) - 0.025 - (j == target[i] ? 0.9 : 0.0);
    require_values(x.grad(), expected, tol);
  }
}

TEST_CASE("cross_entropy counts tokens and correct argmaxes around ignored rows", "[loss]") {
  // ignore_index 0 is a padding id inside the vocabulary. Row 1 ties at classes 0 and 1: the
  // first maximum (0) is the argmax, so target 1 is not correct.
  Tensor x = Tensor::from_vector({0, 0, 5,   // target 2: correct
                                  2, 2, 1,   // target 1: tie, wrong
                                  9, 0, 0,   // target 0: ignored although its argmax is 0
                                  1, 4, 1},  // target 1: correct
                                 {2, 2, 3}, kF64);
  Tensor t = Tensor::from_ints({2, 1, 0, 1}, {2, 2});
  CrossEntropyResult r = cross_entropy(x, t, 0.0, 0);
  const double nll = (std::log(2 + std::exp(5)) - 5) +
                     (std::log(2 * std::exp(2) + std::exp(1)) - 2) +
                     (std::log(std::exp(1) * 2 + std::exp(4)) - 4);
  CHECK(r.ntokens.item() == 3);
  CHECK(r.ncorrect.item() == 2);
  CHECK(r.nll.item() == Approx(nll).epsilon(1e-12));
  // Without smoothing the loss is the nll.
  CHECK(r.loss.item() == Approx(nll).epsilon(1e-12));
}

TEST_CASE("cross_entropy of a fully ignored batch is zero with a zero gradient", "[loss]") {
  Generator gen(3);
  Tensor x = randn({3, 5}, gen);
  CrossEntropyResult r = cross_entropy(x, Tensor::from_ints({-1, -1, -1}, {3}), 0.1, -1);
  CHECK(r.loss.item() == 0);
  CHECK(r.nll.item() == 0);
  CHECK(r.ntokens.item() == 0);
  CHECK(r.ncorrect.item() == 0);
  r.loss.backward();
  require_values(x.grad(), std::vector<double>(15, 0.0), 0);
}

TEST_CASE("norm and loss errors name the op and the shapes", "[norm][loss][softmax]") {
  Tensor x = Tensor::zeros({2, 4}, kF32);
  Tensor g4 = Tensor::ones({4}, kF32), b4 = Tensor::zeros({4}, kF32);
  REQUIRE_THROWS_WITH(
      layer_norm(x, Tensor::ones({3}, kF32), b4),
      Contains("layer_norm") && Contains("gamma") && Contains("[3]") && Contains("[2, 4]"));
  REQUIRE_THROWS_WITH(layer_norm(x, g4, Tensor::zeros({1, 4}, kF32)),
                      Contains("layer_norm") && Contains("beta") && Contains("[1, 4]"));
  REQUIRE_THROWS_WITH(layer_norm(x, g4, b4, 1e-5, Tensor::zeros({4, 2}, kF32)),
                      Contains("layer_norm") && Contains("residual") && Contains("[4, 2]"));
  REQUIRE_THROWS_WITH(layer_norm(x, Tensor::ones({4}, kF64), b4),
                      Contains("layer_norm") && Contains("f64"));
  REQUIRE_THROWS_WITH(layer_norm(Tensor::zeros({2, 4}, kI32), g4, b4),
                      Contains("layer_norm") && Contains("i32"));
  REQUIRE_THROWS_WITH(softmax(Tensor::zeros({2, 4}, kI32)),
                      Contains("softmax") && Contains("i32") && Contains("[2, 4]"));

  Tensor logits = Tensor::zeros({3, 5}, kF32);
  REQUIRE_THROWS_WITH(cross_entropy(logits, Tensor::from_ints({0, 1, 2, 3}, {4})),
                      Contains("cross_entropy") && Contains("[4]") && Contains("[3, 5]"));
  REQUIRE_THROWS_WITH(cross_entropy(logits, Tensor::from_ints({0, 7, 1}, {3})),
                      Contains("cross_entropy") && Contains("target 7") && Contains("row 1") &&
                          Contains("5 classes"));
  REQUIRE_THROWS_WITH(cross_entropy(logits, Tensor::from_ints({0, 1, -3}, {3}), 0.0, -1),
                      Contains("cross_entropy") && Contains("target -3") && Contains("row 2"));
  REQUIRE_THROWS_WITH(cross_entropy(Tensor::zeros({3, 5}, kI32), Tensor::from_ints({0, 1, 2}, {3})),
                      Contains("cross_entropy") && Contains("logits") && Contains("i32"));
  REQUIRE_THROWS_WITH(cross_entropy(logits, Tensor::zeros({3}, kF32)),
                      Contains("cross_entropy") && Contains("targets") && Contains("f32"));
  REQUIRE_THROWS_WITH(cross_entropy(logits, Tensor::from_ints({0, 1, 2}, {3}), 1.5),
                      Contains("cross_entropy") && Contains("label_smoothing"));
}

TEST_CASE("f32 and f64 forward and backward agree", "[norm][loss][softmax]") {
  // Sizes above the OpenMP threshold, so the parallel paths are the ones compared.
  Generator gen(42);
  const double rel = 1e-5;

  SECTION("layer_norm") {
    // With and without the fused residual; a row length that is no multiple of a vector width.
    for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{300, 128}, {1000, 37}}) {
      for (const bool with_residual : {true, false}) {
        INFO(rows << " x " << cols << (with_residual ? ", residual" : ""));
        auto [x32, x64] = f32_f64_pair({rows, cols}, gen);
        auto [r32, r64] = f32_f64_pair({rows, cols}, gen);
        if (!with_residual) r32 = r64 = Tensor();
        auto [g32, g64] = f32_f64_pair({cols}, gen);
        auto [b32, b64] = f32_f64_pair({cols}, gen);
        auto [dy32, dy64] = f32_f64_pair({rows, cols}, gen);
        ops::LayerNormOutput f32 = ops::layer_norm_forward(x32, g32, b32, 1e-5, r32);
        ops::LayerNormOutput f64 = ops::layer_norm_forward(x64, g64, b64, 1e-5, r64);
        require_agree(f32.y, f64.y, rel);
        require_agree(f32.mean, f64.mean, rel);
        require_agree(f32.rstd, f64.rstd, rel);
        ops::LayerNormGrads d32 = ops::layer_norm_backward(dy32, x32, r32, g32, f32.mean, f32.rstd);
        ops::LayerNormGrads d64 = ops::layer_norm_backward(dy64, x64, r64, g64, f64.mean, f64.rstd);
        require_agree(d32.dx, d64.dx, rel);
        require_agree(d32.dgamma, d64.dgamma, rel);
        require_agree(d32.dbeta, d64.dbeta, rel);
      }
    }
  }
  SECTION("softmax") {
    auto [x32, x64] = f32_f64_pair({300, 128}, gen);
    auto [dy32, dy64] = f32_f64_pair({300, 128}, gen);
    Tensor y32 = ops::softmax_forward(x32), y64 = ops::softmax_forward(x64);
    require_agree(y32, y64, rel);
    require_agree(ops::softmax_backward(y32, dy32), ops::softmax_backward(y64, dy64), rel);
  }
  SECTION("cross_entropy") {
    const int64_t rows = 200, vocab = 257;
    auto [x32, x64] = f32_f64_pair({rows, vocab}, gen);
    std::vector<int32_t> tv(rows);
    for (int64_t i = 0; i < rows; ++i)
      tv[i] = i % 7 == 0 ? 1 : static_cast<int32_t>((i * 31) % vocab);
    Tensor t = Tensor::from_ints(tv, {rows});
    ops::CrossEntropyForward f32 = ops::cross_entropy_forward(x32, t, 0.1, 1);
    ops::CrossEntropyForward f64 = ops::cross_entropy_forward(x64, t, 0.1, 1);
    require_agree(f32.loss, f64.loss, rel);
    require_agree(f32.nll, f64.nll, rel);
    CHECK(f32.ntokens.item() == f64.ntokens.item());
    CHECK(f32.ncorrect.item() == f64.ncorrect.item());
    Tensor g32 = Tensor::from_vector({0.5}, {}, kF32), g64 = Tensor::from_vector({0.5}, {}, kF64);
    require_agree(ops::cross_entropy_backward(g32, x32, t, f32.lse, 0.1, 1),
                  ops::cross_entropy_backward(g64, x64, t, f64.lse, 0.1, 1), rel);
  }
}

TEST_CASE("exp_f32 is within 2 ulp of exp over float's range", "[loss]") {
  // The cross-entropy kernel's vectorisable exp (kernels/cpu_math.h), against exp in double
  // rounded to float, on 2 million points spread over [-87.3, 88.7] plus the special values.
  double worst_ulp = 0, worst_x = 0;
  const int64_t n = 2000000;
  for (int64_t i = 0; i <= n; ++i) {
    const float x = static_cast<float>(-87.3 + (88.7 + 87.3) * static_cast<double>(i) / n);
    const float want = static_cast<float>(std::exp(static_cast<double>(x)));
    const float got = kernels::exp_f32(x);
    const double ulp = std::abs(static_cast<double>(got) - want) /
                       (std::nextafter(want, INFINITY) - want);
    if (!(ulp <= worst_ulp)) worst_ulp = ulp, worst_x = x;
  }
  INFO("worst error " << worst_ulp << " ulp at x = " << worst_x);
  CHECK(worst_ulp <= 2.0);
  CHECK(kernels::exp_f32(0.0f) == 1.0f);
  CHECK(kernels::exp_f32(-INFINITY) == 0.0f);
  CHECK(kernels::exp_f32(-200.0f) == 0.0f);
  CHECK(std::isinf(kernels::exp_f32(100.0f)));
  CHECK(std::isnan(kernels::exp_f32(NAN)));
}
