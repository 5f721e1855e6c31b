// CUDA row gather (kernels/index_cuda.cu) against gather_rows_cpu: byte-identical output for
// every dtype, row sizes that select each copy unit (16/8/4/2 bytes) and misaligned bases,
// repeated and reordered indices, an empty index and empty rows. The output starts as a poison
// pattern made on the CPU, so the element before a misaligned view must keep it. Also
// ops::index_select0 with the index on the CPU and on the GPU.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "core/cuda_backend.h"
#include "core/dispatch.h"
#include "cuda/cuda_test_util.h"
#include "kernels/index.h"
#include "ops/index.h"

namespace attn {
namespace {

using namespace cuda_test;

std::vector<int32_t> random_index(int64_t n, int64_t rows, uint64_t seed) {
  std::vector<int32_t> idx = random_ids(n, rows, seed);
  if (n >= 2) idx[1] = idx[0];  // a repeat
  if (n >= 3) idx[2] = static_cast<int32_t>(rows - 1);
  return idx;
}

}  // namespace

TEST_CASE("cuda index: gather_rows equals the CPU byte for byte", "[cuda]") {
  struct Case {
    int64_t rows, row_size, n_index;
  };
  const Case cases[] = {{1, 1, 1},   {5, 3, 7},    {8, 8, 3},       {10, 64, 20},  {4, 1000, 9},
                        {3, 2, 5},   {3, 4, 2},    {100, 1, 1000},  {7, 5, 0},     {6, 0, 4},
                        {2, 65537 + 5, 3},         {64, 512, 256}};
  uint64_t seed = 1;
  for (DType dt : kAllTypes) {
    for (const Case& c : cases) {
      for (int64_t off : {0, 1}) {
        const std::string what = std::string("gather_rows ") + dtype_name(dt) + " rows " +
                                 std::to_string(c.rows) + " x " + std::to_string(c.row_size) +
                                 " index " + std::to_string(c.n_index) + " offset " +
                                 std::to_string(off);
        INFO(what);
        const Tensor x_cpu = random_any({c.rows * c.row_size + off}, dt, seed++);
        const Tensor x = x_cpu.to(kGpu);
        const std::vector<int32_t> idx = random_index(c.n_index, c.rows, seed++);
        const Tensor index_cpu = Tensor::from_ints(idx, {c.n_index});
        const Tensor index = index_cpu.to(kGpu);
        const Tensor poison = poison_cpu(c.n_index * c.row_size + off, dt, 0x5A, 13);
        Tensor out = poison.to(kGpu);
        Tensor want = poison.clone();
        visit_dtype(dt, [&](auto tag) {
          using T = typename decltype(tag)::type;
          kernels::gather_rows_cuda<T>(x.data<T>() + off, index.data<int32_t>(),
                                       out.data<T>() + off, c.n_index, c.row_size,
                                       cuda::stream(0));
          kernels::gather_rows_cpu<T>(x_cpu.data<T>() + off, index_cpu.data<int32_t>(),
                                      want.data<T>() + off, c.n_index, c.row_size);
        });
        CHECK(bytes_of(out) == bytes_of(want));
      }
    }
  }
}

TEST_CASE("cuda index: ops::index_select0 on CUDA tensors", "[cuda]") {
  for (DType dt : kAllTypes) {
    INFO(dtype_name(dt));
    const Tensor x_cpu = random_any({6, 5, 9}, dt, 3);
    const Tensor x = x_cpu.to(kGpu);
    const Tensor index_cpu = Tensor::from_ints({5, 0, 0, 3, 2}, {5});
    const Tensor want = ops::index_select0(x_cpu, index_cpu);
    const Tensor got_host_index = ops::index_select0(x, index_cpu);
    const Tensor got_device_index = ops::index_select0(x, index_cpu.to(kGpu));
    CHECK(got_host_index.shape() == want.shape());
    CHECK(bytes_of(got_host_index) == bytes_of(want));
    CHECK(bytes_of(got_device_index) == bytes_of(want));
    const Tensor none = ops::index_select0(x, Tensor::from_ints({}, {0}));
    CHECK(none.shape() == Shape{0, 5, 9});
  }
}

}  // namespace attn
