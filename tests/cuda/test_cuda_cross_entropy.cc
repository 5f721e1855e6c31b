// CUDA cross-entropy (kernels/cross_entropy_cuda.cu) against the CPU reference run in f64 on
// the same rounded logits, for f32/bf16/f16, rows 1/3/257, vocabularies 1, 7, 1000 (warp per
// row), 1025 and 32003 (block per row; odd sizes put rows at every offset from a 16-byte
// boundary), label smoothing 0 and 0.1, ignore_index inside the vocabulary (a pad id) and
// outside it (-100), rows whose target is the argmax (ties included: bf16 logits repeat), a
// fully ignored batch, no rows at all, and bad targets. Every output starts poisoned (NaN for
// floats, -12345 for counts, -7 for the status).
//
// Tolerances:
//   lse (float for every dtype): 2e-5 abs + 2e-5 rel
//   loss, nll (float for every dtype, summed over up to 257 rows of fp32 per-row values):
//     1e-3 abs + 1e-5 rel
//   ntokens, ncorrect, status: exact
//   dlogits: tolerance_for(dtype) (f32 2e-5, bf16 2e-2, f16 3e-3)
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/cuda_backend.h"
#include "cuda/cuda_test_util.h"
#include "kernels/cross_entropy.h"
#include "ops/cross_entropy.h"

namespace attn {
namespace {

using namespace cuda_test;
using Catch::Contains;

const int64_t kRows[] = {1, 3, 257};
const int64_t kVocab[] = {1, 7, 1000, 1025, 32003};
const double kSmoothing[] = {0.0, 0.1};
const int32_t kIgnore[] = {0, -100};
const Tolerance kLseTol{2e-5, 2e-5};
const Tolerance kTotalTol{1e-3, 1e-5};

// Random targets: every 4th row (from row 1) ignored, every 3rd the row's first argmax (so
// some rows are correct), the rest uniform in [0, vocab).
std::vector<int32_t> make_targets(const Tensor& logits, int32_t ignore_index, uint64_t seed) {
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  const std::vector<double> x = logits.to_double_vector();
  std::vector<int32_t> t = random_ids(rows, vocab, seed);
  for (int64_t r = 0; r < rows; ++r) {
    if (r % 3 == 0) {
      int64_t best = 0;
      for (int64_t j = 1; j < vocab; ++j)
        if (x[r * vocab + j] > x[r * vocab + best]) best = j;
      t[r] = static_cast<int32_t>(best);
    }
    if (r % 4 == 1) t[r] = ignore_index;
  }
  return t;
}

struct Outputs {
  Tensor lse, loss, nll, ntokens, ncorrect, status;
};

Outputs poisoned_outputs(int64_t rows, DType dt) {
  Outputs o;
  o.lse = poisoned({rows}, kF32);
  o.loss = poisoned({}, kF32);
  o.nll = poisoned({}, kF32);
  o.ntokens = Tensor::full({}, -12345, kI32, kGpu);
  o.ncorrect = Tensor::full({}, -12345, kI32, kGpu);
  o.status = Tensor::full({4}, -7, kI32, kGpu);
  return o;
}

void run_forward(DType dt, const Tensor& logits, const Tensor& targets, double eps, int32_t ii,
                 Outputs& o) {
  const int64_t rows = targets.numel(), vocab = logits.size(-1);
  Tensor workspace = poisoned({kernels::cross_entropy_forward_cuda_workspace(rows)}, kF32);
  with_gpu_type(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::cross_entropy_forward_cuda<T>(
        logits.data<T>(), targets.data<int32_t>(), rows, vocab, eps, ii, o.lse.data<float>(),
        o.loss.data<float>(), o.nll.data<float>(), o.ntokens.data<int32_t>(),
        o.ncorrect.data<int32_t>(), reinterpret_cast<int64_t*>(o.status.data<int32_t>()),
        workspace.data<float>(), stream());
  });
}

void run_backward(DType dt, const Tensor& g, const Tensor& logits, const Tensor& targets,
                  const Tensor& lse, double eps, int32_t ii, Tensor& dlogits) {
  const int64_t rows = targets.numel(), vocab = logits.size(-1);
  with_gpu_type(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::cross_entropy_backward_cuda<T>(g.data<float>(), logits.data<T>(),
                                            targets.data<int32_t>(), lse.data<float>(), rows, vocab,
                                            eps, ii, dlogits.data<T>(), stream());
  });
}

// The two int64 of the status buffer.
std::vector<int64_t> status_of(const Tensor& status) {
  const Tensor h = status.to(Device::cpu());
  std::vector<int64_t> s(2);
  std::memcpy(s.data(), h.raw_data(), 2 * sizeof(int64_t));
  return s;
}

std::string describe(DType dt, int64_t rows, int64_t vocab, double eps, int32_t ii) {
  return describe_rows(dt, rows, vocab) + " eps " + std::to_string(eps) + " ignore_index " +
         std::to_string(ii);
}

// Forward and backward on one case, both against the f64 CPU op.
void check_case(DType dt, const Tensor& logits, const std::vector<int32_t>& tv, double eps,
                int32_t ii, const std::string& what) {
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  const Tensor targets_cpu = Tensor::from_ints(tv, {rows});
  const Tensor targets = targets_cpu.to(kGpu);
  const Tensor logits64 = as_f64_cpu(logits);
  const ops::CrossEntropyForward ref = ops::cross_entropy_forward(logits64, targets_cpu, eps, ii);

  Outputs o = poisoned_outputs(rows, dt);
  run_forward(dt, logits, targets, eps, ii, o);
  require_close(o.lse, ref.lse, kLseTol, what + ": lse");
  require_close(o.loss, ref.loss, kTotalTol, what + ": loss");
  require_close(o.nll, ref.nll, kTotalTol, what + ": nll");
  INFO(what);
  CHECK(o.ntokens.item() == ref.ntokens.item());
  CHECK(o.ncorrect.item() == ref.ncorrect.item());
  CHECK(status_of(o.status) == std::vector<int64_t>{-1, 0});

  // Backward from the reference lse rounded to float (what the forward stores); the upstream
  // gradient has the loss's dtype, f32.
  const Tensor g = Tensor::from_vector({0.37}, {}, kF32, kGpu);
  Tensor dlogits = poisoned({rows, vocab}, dt);
  run_backward(dt, g, logits, targets, ref.lse.to(kF32).to(kGpu), eps, ii, dlogits);
  const Tensor want =
      ops::cross_entropy_backward(as_f64_cpu(g), logits64, targets_cpu, ref.lse, eps, ii);
  require_close(dlogits, want, tolerance_for(dt), what + ": dlogits");
}

}  // namespace

TEST_CASE("cuda cross_entropy forward and backward against the f64 reference", "[cuda]") {
  uint64_t seed = 1;
  for (DType dt : kGpuFloatTypes) {
    for (int64_t rows : kRows) {
      for (int64_t vocab : kVocab) {
        for (double eps : kSmoothing) {
          for (int32_t ii : kIgnore) {
            const std::string what = describe(dt, rows, vocab, eps, ii);
            const Tensor logits = random_tensor({rows, vocab}, dt, kGpu, seed++, -3.0, 3.0);
            check_case(dt, logits, make_targets(logits, ii, seed++), eps, ii, what);
          }
        }
      }
    }
  }
}

TEST_CASE("cuda cross_entropy: fully ignored batch, no rows, misaligned logits", "[cuda][small]") {
  uint64_t seed = 500;
  for (DType dt : kGpuFloatTypes) {
    for (int64_t vocab : {int64_t{7}, int64_t{32003}}) {
      // Every target is ignore_index: zero totals, lse 0, zero gradient.
      const int64_t rows = 33;
      const Tensor logits = random_tensor({rows, vocab}, dt, kGpu, seed++, -3.0, 3.0);
      const std::vector<int32_t> ignored(static_cast<size_t>(rows), 0);
      check_case(dt, logits, ignored, 0.1, 0, describe(dt, rows, vocab, 0.1, 0) + " all ignored");
      Outputs o = poisoned_outputs(rows, dt);
      run_forward(dt, logits, Tensor::from_ints(ignored, {rows}, kGpu), 0.1, 0, o);
      CHECK(o.loss.item() == 0.0);
      CHECK(o.nll.item() == 0.0);
      CHECK(o.ntokens.item() == 0.0);
      CHECK(o.ncorrect.item() == 0.0);
      for (double v : o.lse.to_double_vector()) CHECK(v == 0.0);

      // Logits seen through a view one element into its storage: rows start off the 16-byte
      // grid differently from the fresh dlogits, so the backward takes its scalar path.
      const Tensor shifted = misaligned_copy(logits);
      check_case(dt, shifted, make_targets(logits, -100, seed++), 0.1, -100,
                 describe(dt, rows, vocab, 0.1, -100) + " misaligned");
    }

    // No rows: the totals are still written (zeros), nothing else.
    Outputs o = poisoned_outputs(0, dt);
    run_forward(dt, Tensor::empty({0, 5}, dt, kGpu), Tensor::empty({0}, kI32, kGpu), 0.1, 0, o);
    CHECK(o.loss.item() == 0.0);
    CHECK(o.nll.item() == 0.0);
    CHECK(o.ntokens.item() == 0.0);
    CHECK(o.ncorrect.item() == 0.0);
    CHECK(status_of(o.status) == std::vector<int64_t>{-1, 0});
  }
}

TEST_CASE("cuda cross_entropy: bad targets are reported, their rows skipped", "[cuda][small]") {
  for (DType dt : kGpuFloatTypes) {
    const int64_t rows = 20, vocab = 1000;
    const Tensor logits = random_tensor({rows, vocab}, dt, kGpu, 7, -3.0, 3.0);
    std::vector<int32_t> tv = make_targets(logits, -100, 8);
    tv[9] = -3;     // negative and not ignore_index
    tv[5] = vocab;  // one past the end: the first bad row
    tv[12] = vocab + 100;
    Outputs o = poisoned_outputs(rows, dt);
    run_forward(dt, logits, Tensor::from_ints(tv, {rows}, kGpu), 0.1, -100, o);
    CHECK(status_of(o.status) == std::vector<int64_t>{5, vocab});
    // The CPU reference skips bad rows from the totals too (its op then throws).
    const Tensor logits64 = as_f64_cpu(logits);
    const kernels::CrossEntropyTotals ref = kernels::cross_entropy_forward_cpu<double>(
        logits64.data<double>(), tv.data(), rows, vocab, 0.1, -100,
        Tensor::empty({rows}, kF64).data<double>());
    CHECK(ref.bad_row == 5);
    CHECK(o.ntokens.item() == static_cast<double>(ref.ntokens));
    CHECK(o.ncorrect.item() == static_cast<double>(ref.ncorrect));
    require_close(o.loss, Tensor::from_vector({ref.loss}, {}, kF64), kTotalTol, "loss");
    // Bad rows get a zero gradient.
    Tensor dlogits = poisoned({rows, vocab}, dt);
    run_backward(dt, Tensor::from_vector({1.0}, {}, kF32, kGpu), logits,
                 Tensor::from_ints(tv, {rows}, kGpu), o.lse, 0.1, -100, dlogits);
    const std::vector<double> d = dlogits.to_double_vector();
    for (int64_t r : {5, 9, 12})
      for (int64_t j = 0; j < vocab; ++j) REQUIRE(d[r * vocab + j] == 0.0);

    // Through the op: an error naming the row and the target.
    REQUIRE_THROWS_WITH(
        ops::cross_entropy_forward(logits, Tensor::from_ints(tv, {rows}, kGpu), 0.1, -100),
        Contains("target 1000 at row 5"));
  }
}

TEST_CASE("cuda cross_entropy ops: output types and values, backward from the op's lse", "[cuda]") {
  uint64_t seed = 900;
  for (DType dt : kGpuFloatTypes) {
    for (int64_t vocab : {int64_t{1000}, int64_t{32003}}) {
      const int64_t rows = 257;
      const Tensor logits = random_tensor({rows, vocab}, dt, kGpu, seed++, -3.0, 3.0);
      const std::vector<int32_t> tv = make_targets(logits, 0, seed++);
      const Tensor targets_cpu = Tensor::from_ints(tv, {rows});
      const Tensor targets = targets_cpu.to(kGpu);
      const ops::CrossEntropyForward f = ops::cross_entropy_forward(logits, targets, 0.1, 0);
      CHECK(f.loss.dtype() == kF32);  // f32 for 16-bit logits too: a batch sum needs the digits
      CHECK(f.nll.dtype() == kF32);
      CHECK(f.ntokens.dtype() == kI32);
      CHECK(f.ncorrect.dtype() == kI32);
      CHECK(f.lse.dtype() == kF32);
      CHECK(f.loss.device() == kGpu);
      CHECK(f.loss.shape() == Shape{});
      const Tensor logits64 = as_f64_cpu(logits);
      const ops::CrossEntropyForward ref =
          ops::cross_entropy_forward(logits64, targets_cpu, 0.1, 0);
      const std::string what = describe(dt, rows, vocab, 0.1, 0) + " (ops)";
      require_close(f.loss, ref.loss, kTotalTol, what + ": loss");
      require_close(f.nll, ref.nll, kTotalTol, what + ": nll");
      require_close(f.lse, ref.lse, kLseTol, what + ": lse");
      CHECK(f.ntokens.item() == ref.ntokens.item());
      CHECK(f.ncorrect.item() == ref.ncorrect.item());
      const Tensor g = Tensor::from_vector({0.01}, {}, kF32, kGpu);
      const Tensor want_d =
          ops::cross_entropy_backward(as_f64_cpu(g), logits64, targets_cpu, ref.lse, 0.1, 0);
      require_close(ops::cross_entropy_backward(g, logits, targets, f.lse, 0.1, 0), want_d,
                    tolerance_for(dt), what + ": dlogits");
      // An upstream gradient in the logits' dtype is accepted (0.01 rounds by < 0.1%).
      require_close(ops::cross_entropy_backward(Tensor::from_vector({0.01}, {}, dt, kGpu), logits,
                                                targets, f.lse, 0.1, 0),
                    want_d, tolerance_for(dt), what + ": dlogits, grad_loss in the logits' dtype");
      // Deterministic: the same bits twice.
      const ops::CrossEntropyForward f2 = ops::cross_entropy_forward(logits, targets, 0.1, 0);
      CHECK(f2.loss.item() == f.loss.item());
      CHECK(f2.lse.to_double_vector() == f.lse.to_double_vector());
    }
    // No rows through the op.
    const ops::CrossEntropyForward e = ops::cross_entropy_forward(
        Tensor::empty({0, 5}, dt, kGpu), Tensor::empty({0}, kI32, kGpu), 0.1, 0);
    CHECK(e.loss.item() == 0.0);
    CHECK(e.ntokens.item() == 0.0);
  }
}

}  // namespace attn
