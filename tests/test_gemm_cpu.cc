// The CPU GEMM (kernels/gemm.h: f32 through oneDNN where built with it, else OpenBLAS) against a
// double-precision loop, for every transpose combination, accumulation (beta) and batch
// strides, at sizes that are not multiples of any vector width. The same cases run a second
// time with ATTN_CPU_GEMM=openblas (CTest gemm_cpu_openblas), so both libraries are checked.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/gemm.h"

using attn::kernels::GemmShape;

namespace {

// C = alpha * op(A) op(B) + beta * C in double, and per element the sum of |terms| that bounds
// the f32 rounding error: |fl(c) - c| <= gamma_k * sum_k |a||b| (+ the beta term).
void reference(const GemmShape& s, double alpha, const std::vector<float>& a,
               const std::vector<float>& b, double beta, const std::vector<float>& c0,
               std::vector<double>& c, std::vector<double>& bound) {
  c.assign(c0.size(), 0);
  bound.assign(c0.size(), 0);
  for (int64_t i = 0; i < s.batch; ++i)
    for (int64_t r = 0; r < s.m; ++r)
      for (int64_t col = 0; col < s.n; ++col) {
        double sum = 0, mag = 0;
        for (int64_t k = 0; k < s.k; ++k) {
          const double x = a[i * s.stride_a + (s.trans_a ? k * s.m + r : r * s.k + k)];
          const double y = b[i * s.stride_b + (s.trans_b ? col * s.k + k : k * s.n + col)];
          sum += x * y;
          mag += std::fabs(x * y);
        }
        const int64_t e = i * s.stride_c + r * s.n + col;
        c[e] = alpha * sum + beta * c0[e];
        bound[e] = std::fabs(alpha) * mag + std::fabs(beta * c0[e]);
      }
}

}  // namespace

TEST_CASE("CPU f32 GEMM matches a double reference within the f32 rounding bound", "[ops][gemm]") {
  std::mt19937 gen(7);
  std::normal_distribution<float> normal;
  const int64_t sizes[][3] = {{1, 1, 1}, {5, 3, 7}, {33, 17, 9}, {64, 128, 128}, {130, 70, 300}};
  const double u = std::ldexp(1.0, -24);  // f32 unit roundoff
  for (const auto& mnk : sizes) {
    for (int trans = 0; trans < 4; ++trans) {
      for (const double beta : {0.0, 1.0}) {
        GemmShape s{mnk[0], mnk[1], mnk[2]};
        s.trans_a = trans & 1;
        s.trans_b = trans & 2;
        s.batch = 2;
        s.stride_a = s.m * s.k;
        s.stride_b = s.k * s.n;
        s.stride_c = s.m * s.n;
        auto fill = [&](int64_t n) {
          std::vector<float> v(static_cast<size_t>(n));
          for (float& x : v) x = normal(gen);
          return v;
        };
        const std::vector<float> a = fill(s.batch * s.stride_a), b = fill(s.batch * s.stride_b);
        const std::vector<float> c0 = fill(s.batch * s.stride_c);
        std::vector<float> c = c0;
        const double alpha = 0.75;
        attn::kernels::gemm_cpu<float>(s, alpha, a.data(), b.data(), beta, c.data());
        std::vector<double> ref, bound;
        reference(s, alpha, a, b, beta, c0, ref, bound);
        // gamma_(k+2) covers the k products and sums, alpha and the beta term; 2x for blocked
        // summation orders that a library may pick.
        const double gamma = 2 * (s.k + 2) * u / (1 - (s.k + 2) * u);
        int64_t bad = 0;
        for (size_t e = 0; e < c.size(); ++e)
          if (!(std::fabs(c[e] - ref[e]) <= gamma * bound[e] + 1e-30)) ++bad;
        INFO("m " << s.m << " n " << s.n << " k " << s.k << " trans_a " << s.trans_a << " trans_b "
                  << s.trans_b << " beta " << beta << " library " << attn::kernels::gemm_cpu_library());
        CHECK(bad == 0);
      }
    }
  }
}
