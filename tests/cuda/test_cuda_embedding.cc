// CUDA embedding (kernels/embedding_cuda.cu) against the CPU reference run in f64 on the same
// rounded weights, for f32/bf16/f16:
//   forward: 1-D and 2-D ids (positions restart every row of a 2-D batch), widths 1 and 7
//     (scalar), 512 and 1000 (16-byte vectors), with and without positions, offsets 0 and
//     1000 (large angles), scale 1.5 or sqrt(d); output poisoned with NaN
//   backward: deterministic and atomic, duplicate ids, one id filling most rows (runs longer
//     than the 32-position chunks of the sorted path), every row the same id; grad_weight
//     starts from random values and must come back with the scatter added (+=); the
//     workspace starts as NaN; the deterministic path gives the same bits twice
//   id range check: first bad index found on the device, and the op's error message
// Tolerances:
//   forward: tolerance_for(dtype) (f32 2e-5, bf16 2e-2, f16 3e-3; abs and rel)
//   backward: sums of up to 257 rows: f32 1e-4 abs + 1e-5 rel, else tolerance_for(dtype)
#include <catch2/catch.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "core/cuda_backend.h"
#include "cuda/cuda_test_util.h"
#include "kernels/embedding.h"
#include "ops/embedding.h"

namespace attn {
namespace {

using namespace cuda_test;
using Catch::Contains;

Tensor run_backward(DType dt, const Tensor& ids, const Tensor& grad_out, const Tensor& prefill,
                    int64_t vocab, double scale, bool deterministic) {
  const int64_t rows = ids.numel(), dim = grad_out.size(-1);
  Tensor gw = prefill.clone();
  with_gpu_type(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const size_t bytes =
        kernels::embedding_backward_cuda_workspace<T>(rows, dim, vocab, deterministic);
    Tensor workspace = poisoned({static_cast<int64_t>((bytes + 3) / 4)}, kF32);
    kernels::embedding_backward_cuda<T>(ids.data<int32_t>(), grad_out.data<T>(), gw.data<T>(), rows,
                                        dim, vocab, scale, deterministic, workspace.raw_data(),
                                        stream());
    cuda::synchronize(0);  // the workspace is freed when it goes out of scope
  });
  return gw;
}

}  // namespace

TEST_CASE("cuda embedding forward against the f64 reference", "[cuda]") {
  const Shape kIdShapes[] = {{1}, {3}, {257}, {4, 7}};
  const int64_t kDims[] = {1, 7, 512, 1000};
  struct Positions {
    bool add;
    int64_t offset;
  };
  const Positions kPositions[] = {{false, 0}, {true, 0}, {true, 1000}};
  const int64_t vocab = 37;
  uint64_t seed = 1;
  for (DType dt : kGpuFloatTypes) {
    for (const Shape& shape : kIdShapes) {
      for (int64_t dim : kDims) {
        for (const Positions& pos : kPositions) {
          const double scale = dim == 512 ? std::sqrt(512.0) : 1.5;
          const std::string what =
              std::string(dtype_name(dt)) + " ids " + shape_str(shape) + " dim " +
              std::to_string(dim) +
              (pos.add ? " positions from " + std::to_string(pos.offset) : " no positions");
          const int64_t n = shape_numel(shape);
          const Tensor ids_cpu = Tensor::from_ints(random_ids(n, vocab, seed++), shape);
          const Tensor ids = ids_cpu.to(kGpu);
          const Tensor w = random_tensor({vocab, dim}, dt, kGpu, seed++);
          Shape out_shape = shape;
          out_shape.push_back(dim);
          Tensor out = poisoned(out_shape, dt);
          with_gpu_type(dt, [&](auto tag) {
            using T = typename decltype(tag)::type;
            kernels::embedding_forward_cuda<T>(ids.data<int32_t>(), w.data<T>(), out.data<T>(), n,
                                               dim, scale, pos.add, shape.back(), pos.offset,
                                               stream());
          });
          const Tensor want =
              ops::embedding_forward(ids_cpu, as_f64_cpu(w), scale, pos.add, pos.offset);
          require_close(out, want, tolerance_for(dt), what);
          // The op gives the same.
          require_close(ops::embedding_forward(ids, w, scale, pos.add, pos.offset), want,
                        tolerance_for(dt), what + " (op)");
        }
      }
    }
  }
}

TEST_CASE("cuda embedding backward: deterministic and atomic scatter-add (+=)", "[cuda]") {
  struct Case {
    const char* name;
    int64_t rows, vocab, dim;
    int hot;  // > 0: ids are `hot` in 3 of 4 rows (-1: every row), else uniform
  };
  const Case kCases[] = {
      {"one row", 1, 5, 7, 0},
      {"duplicates", 3, 2, 512, 0},
      {"257 rows, vocab 37", 257, 37, 512, 0},
      {"257 rows, vocab 1000, width 1000", 257, 1000, 1000, 0},
      {"width 1", 257, 7, 1, 0},
      {"width 7, hot id", 300, 50, 7, 3},
      {"width 512, hot id", 300, 50, 512, 3},
      {"every row one id", 257, 11, 512, -1},
  };
  uint64_t seed = 100;
  for (DType dt : kGpuFloatTypes) {
    for (const Case& c : kCases) {
      std::vector<int32_t> tv = random_ids(c.rows, c.vocab, seed++);
      if (c.hot != 0) {
        for (size_t r = 0; r < tv.size(); ++r)
          if (c.hot < 0 || r % 4 != 0) tv[r] = c.hot < 0 ? 4 : c.hot;
      }
      const Tensor ids_cpu = Tensor::from_ints(tv, {c.rows});
      const Tensor ids = ids_cpu.to(kGpu);
      const Tensor grad_out = random_tensor({c.rows, c.dim}, dt, kGpu, seed++);
      const Tensor prefill = random_tensor({c.vocab, c.dim}, dt, kGpu, seed++);
      const double scale = 1.5;
      const Tensor want =
          host_sum(as_f64_cpu(prefill),
                   ops::embedding_backward(ids_cpu, as_f64_cpu(grad_out), c.vocab, scale));
      for (bool det : {true, false}) {
        const std::string what =
            std::string(dtype_name(dt)) + " " + c.name + (det ? " deterministic" : " atomic");
        const Tensor got = run_backward(dt, ids, grad_out, prefill, c.vocab, scale, det);
        require_close(got, want, row_sum_tolerance(dt), what);
        if (det) {
          const Tensor again = run_backward(dt, ids, grad_out, prefill, c.vocab, scale, det);
          INFO(what << ": the same bits on a second run");
          CHECK(again.to_double_vector() == got.to_double_vector());
        }
        // The op (fresh zero gradient) agrees too.
        require_close(ops::embedding_backward(ids, grad_out, c.vocab, scale, det),
                      ops::embedding_backward(ids_cpu, as_f64_cpu(grad_out), c.vocab, scale),
                      row_sum_tolerance(dt), what + " (op)");
      }
    }
  }
}

TEST_CASE("cuda embedding: first invalid id found on the device", "[cuda]") {
  Tensor scratch = Tensor::empty({2}, kI32, kGpu);
  auto first_invalid = [&](const std::vector<int32_t>& v, int64_t vocab) {
    const Tensor ids = Tensor::from_ints(v, {static_cast<int64_t>(v.size())}, kGpu);
    return kernels::embedding_first_invalid_cuda(ids.data<int32_t>(), ids.numel(), vocab,
                                                 reinterpret_cast<int64_t*>(scratch.raw_data()),
                                                 stream());
  };
  const int64_t vocab = 1000;
  std::vector<int32_t> ids = random_ids(100003, vocab, 5);
  CHECK(first_invalid(ids, vocab) == -1);
  CHECK(first_invalid({}, vocab) == -1);
  ids[100002] = static_cast<int32_t>(vocab);  // the last one, past the grid's first sweep
  CHECK(first_invalid(ids, vocab) == 100002);
  ids[70000] = -1;
  CHECK(first_invalid(ids, vocab) == 70000);
  ids[17] = 5000;
  ids[16] = static_cast<int32_t>(vocab) + 1;
  CHECK(first_invalid(ids, vocab) == 16);
  ids[0] = -7;
  CHECK(first_invalid(ids, vocab) == 0);
  CHECK(first_invalid({999, 0, 1000}, vocab) == 2);

  // Through the ops: an error naming the id and its position, forward and backward.
  const Tensor w = random_tensor({vocab, 8}, kBF16, kGpu, 1);
  std::vector<int32_t> bad(12, 3);
  bad[7] = 1000;
  const Tensor bad_ids = Tensor::from_ints(bad, {3, 4}, kGpu);
  REQUIRE_THROWS_WITH(ops::embedding_forward(bad_ids, w),
                      Contains("id 1000 at position [1, 3]") && Contains("[0, 1000)"));
  const Tensor g = random_tensor({3, 4, 8}, kBF16, kGpu, 2);
  REQUIRE_THROWS_WITH(ops::embedding_backward(bad_ids, g, vocab, 1.0),
                      Contains("id 1000 at position [1, 3]"));
}

TEST_CASE("cuda embedding ops: no ids", "[cuda]") {
  for (DType dt : kGpuFloatTypes) {
    const Tensor w = random_tensor({10, 6}, dt, kGpu, 3);
    const Tensor ids = Tensor::empty({0}, kI32, kGpu);
    CHECK(ops::embedding_forward(ids, w, 2.0, true, 4).shape() == Shape{0, 6});
    for (bool det : {true, false}) {
      const Tensor gw = ops::embedding_backward(ids, Tensor::empty({0, 6}, dt, kGpu), 10, 2.0, det);
      CHECK(gw.shape() == Shape{10, 6});
      for (double v : gw.to_double_vector()) CHECK(v == 0.0);
    }
  }
}

}  // namespace attn
