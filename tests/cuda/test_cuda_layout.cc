// CUDA layout kernels (kernels/layout_cuda.cu) against the CPU's: pure data movement, so the
// results must be identical byte for byte, for every dtype (f32, f64, bf16, f16, i32). The
// destination starts as a known poison pattern made on the CPU, so bytes a copy must not touch
// (gaps between strided rows, the element before a misaligned view) are compared too. Shapes
// cover the tiled transpose (inner == 1, sizes around the 32 x 32 tile), the row-copy path
// (inner > 1: head split/merge, odd inner), reshapes, and every copy unit (16/8/4/2 bytes).
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "core/cuda_backend.h"
#include "core/dispatch.h"
#include "cuda/cuda_test_util.h"
#include "kernels/layout.h"
#include "ops/layout.h"
#include "ops/reduce.h"

namespace attn {
namespace {

using namespace cuda_test;

void require_same_bytes(const Tensor& got, const Tensor& want, const std::string& what) {
  INFO(what);
  REQUIRE(got.shape() == want.shape());
  REQUIRE(got.dtype() == want.dtype());
  const auto g = bytes_of(got), w = bytes_of(want);
  size_t first = g.size();
  for (size_t i = 0; i < g.size(); ++i) {
    if (g[i] != w[i]) {
      first = i;
      break;
    }
  }
  INFO("first differing byte: " << first << " of " << g.size());
  REQUIRE(first == g.size());
}

std::string shape_name(const kernels::SwapAxesShape& s) {
  return "[" + std::to_string(s.outer) + ", " + std::to_string(s.a) + ", " +
         std::to_string(s.mid) + ", " + std::to_string(s.b) + ", " + std::to_string(s.inner) +
         "]";
}

}  // namespace

TEST_CASE("cuda layout: swap_axes equals the CPU byte for byte", "[cuda]") {
  const kernels::SwapAxesShape shapes[] = {
      {1, 1, 1, 1, 1},    {1, 33, 1, 65, 1},  {2, 31, 3, 17, 1},  {3, 32, 1, 32, 1},
      {1, 1000, 1, 3, 1}, {1, 3, 1, 1000, 1}, {2, 5, 1, 4, 8},    {2, 7, 1, 8, 64},
      {3, 4, 2, 5, 3},    {1, 9, 1, 2, 5},    {2, 1, 1, 7, 4},    {2, 7, 1, 1, 4},
      {2, 1, 3, 7, 2},    {0, 3, 1, 4, 2},    {2, 3, 1, 4, 0},    {4, 50, 1, 8, 64},
      {1, 2, 1, 3, 65537}, {1, 70000, 1, 2, 1},
  };
  uint64_t seed = 1;
  for (DType dt : kAllTypes) {
    for (const auto& s : shapes) {
      for (int64_t off : {0, 1}) {
        const int64_t n = s.outer * s.a * s.mid * s.b * s.inner;
        const std::string what = std::string("swap_axes ") + dtype_name(dt) + " " + shape_name(s) +
                                 " offset " + std::to_string(off);
        const Tensor x_cpu = random_any({n + off}, dt, seed++);
        const Tensor x = x_cpu.to(kGpu);
        const Tensor poison = poison_cpu(n + off, dt, 0xA5, 7);
        Tensor out = poison.to(kGpu);
        Tensor want = poison.clone();
        visit_dtype(dt, [&](auto tag) {
          using T = typename decltype(tag)::type;
          kernels::swap_axes_cuda<T>(x.data<T>() + off, out.data<T>() + off, s, stream());
          kernels::swap_axes_cpu<T>(x_cpu.data<T>() + off, want.data<T>() + off, s);
        });
        require_same_bytes(out, want, what);
      }
    }
  }
}

TEST_CASE("cuda layout: copy_2d and expand_axis equal the CPU byte for byte", "[cuda]") {
  struct Copy {
    int64_t rows, cols, src_stride, dst_stride, src_off, dst_off;
  };
  const Copy copies[] = {
      {1, 1, 1, 1, 0, 0},        {3, 5, 5, 5, 0, 0},       {3, 5, 7, 9, 0, 0},
      {4, 8, 8, 16, 0, 8},       {4, 8, 16, 8, 8, 0},      {5, 8, 9, 8, 1, 0},
      {7, 3, 11, 6, 2, 3},       {2, 1000, 3000, 1000, 1000, 0}, {1000, 2, 2, 3, 0, 1},
      {1, 65537 + 5, 0, 0, 3, 1}, {33, 64, 128, 64, 64, 0}, {0, 5, 5, 5, 0, 0},
      {3, 0, 5, 5, 0, 0},        {6, 4, 4, 12, 0, 4},      {6, 2, 2, 6, 0, 2},
  };
  uint64_t seed = 100;
  for (DType dt : kAllTypes) {
    for (const Copy& c : copies) {
      const int64_t src_n = c.src_off + (c.rows ? (c.rows - 1) * c.src_stride + c.cols : 0);
      const int64_t dst_n = c.dst_off + (c.rows ? (c.rows - 1) * c.dst_stride + c.cols : 0);
      const std::string what = std::string("copy_2d ") + dtype_name(dt) + " rows " +
                               std::to_string(c.rows) + " cols " + std::to_string(c.cols) +
                               " strides " + std::to_string(c.src_stride) + "/" +
                               std::to_string(c.dst_stride) + " offsets " +
                               std::to_string(c.src_off) + "/" + std::to_string(c.dst_off);
      const Tensor src_cpu = random_any({src_n}, dt, seed++);
      const Tensor src = src_cpu.to(kGpu);
      const Tensor poison = poison_cpu(dst_n, dt, 0xA5, 7);
      Tensor dst = poison.to(kGpu);
      Tensor want = poison.clone();
      visit_dtype(dt, [&](auto tag) {
        using T = typename decltype(tag)::type;
        kernels::copy_2d_cuda<T>(src.data<T>() + c.src_off, c.src_stride, dst.data<T>() + c.dst_off,
                                 c.dst_stride, c.rows, c.cols, stream());
        kernels::copy_2d_cpu<T>(src_cpu.data<T>() + c.src_off, c.src_stride,
                                want.data<T>() + c.dst_off, c.dst_stride, c.rows, c.cols);
      });
      require_same_bytes(dst, want, what);
    }
    struct Expand {
      int64_t outer, n, inner;
    };
    for (const Expand e : {Expand{1, 300, 515}, Expand{1, 1, 1}, Expand{6, 5, 7}, Expand{3, 4, 8},
                           Expand{2, 1000, 1}, Expand{0, 3, 3}, Expand{3, 0, 3}, Expand{1, 2, 65537 + 5}}) {
      for (int64_t off : {0, 1}) {
        const std::string what = std::string("expand_axis ") + dtype_name(dt) + " [" +
                                 std::to_string(e.outer) + ", " + std::to_string(e.n) + ", " +
                                 std::to_string(e.inner) + "] offset " + std::to_string(off);
        const Tensor x_cpu = random_any({e.outer * e.inner + off}, dt, seed++);
        const Tensor x = x_cpu.to(kGpu);
        const Tensor poison = poison_cpu(e.outer * e.n * e.inner + off, dt, 0xA5, 7);
        Tensor out = poison.to(kGpu);
        Tensor want = poison.clone();
        visit_dtype(dt, [&](auto tag) {
          using T = typename decltype(tag)::type;
          kernels::expand_axis_cuda<T>(x.data<T>() + off, out.data<T>() + off, e.outer, e.n,
                                       e.inner, stream());
          for (int64_t j = 0; j < e.n; ++j)  // as ops::expand_dim does on the CPU
            kernels::copy_2d_cpu<T>(x_cpu.data<T>() + off, e.inner,
                                    want.data<T>() + off + j * e.inner, e.n * e.inner, e.outer,
                                    e.inner);
        });
        require_same_bytes(out, want, what);
      }
    }
  }
}

TEST_CASE("cuda layout: transpose, heads, concat and slices through the ops", "[cuda]") {
  uint64_t seed = 900;
  for (DType dt : kAllTypes) {
    const std::string d = dtype_name(dt);
    const Tensor x_cpu = random_any({3, 7, 40}, dt, seed++);
    const Tensor x = x_cpu.to(kGpu);
    for (const auto& [d0, d1] : {std::pair{0, 1}, std::pair{1, 2}, std::pair{0, 2}, std::pair{2, 2}}) {
      require_same_bytes(ops::transpose(x, d0, d1), ops::transpose(x_cpu, d0, d1),
                         "transpose " + d + " " + std::to_string(d0) + "," + std::to_string(d1));
    }
    const Tensor heads = ops::split_heads(x, 5);
    require_same_bytes(heads, ops::split_heads(x_cpu, 5), "split_heads " + d);
    require_same_bytes(ops::merge_heads(heads), x_cpu, "merge_heads " + d);
    const Tensor y_cpu = random_any({3, 2, 40}, dt, seed++);
    const Tensor y = y_cpu.to(kGpu);
    require_same_bytes(ops::concat({x, y, x}, 1), ops::concat({x_cpu, y_cpu, x_cpu}, 1),
                       "concat dim 1 " + d);
    require_same_bytes(ops::concat({x, x}, 2), ops::concat({x_cpu, x_cpu}, 2), "concat dim 2 " + d);
    require_same_bytes(ops::concat({x, x}, 0), ops::concat({x_cpu, x_cpu}, 0), "concat dim 0 " + d);
    require_same_bytes(ops::slice(x, 1, 2, 5), ops::slice(x_cpu, 1, 2, 5), "slice dim 1 " + d);
    require_same_bytes(ops::slice(x, 2, 3, 4), ops::slice(x_cpu, 2, 3, 4), "slice dim 2 " + d);
    require_same_bytes(ops::slice(x, 0, 1, 1), ops::slice(x_cpu, 0, 1, 1), "empty slice " + d);
    Tensor into = ops::concat({x, x}, 1);
    Tensor into_cpu = ops::concat({x_cpu, x_cpu}, 1);
    ops::slice_assign(into, 1, 3, y);
    ops::slice_assign(into_cpu, 1, 3, y_cpu);
    require_same_bytes(into, into_cpu, "slice_assign " + d);
    const Tensor row_cpu = random_any({1, 40}, dt, seed++);
    require_same_bytes(ops::expand_dim(row_cpu.to(kGpu), {9, 40}, 0),
                       ops::expand_dim(row_cpu, {9, 40}, 0), "expand_dim " + d);
  }
}

}  // namespace attn
