#include "bench/common.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>

#include "base/error.h"

#ifdef ATTN_WITH_CUDA
#include <cuda_runtime.h>

#include "core/cuda_backend.h"
#include "base/cuda_check.h"
#endif

namespace attn::bench {

uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t hash_u64(std::initializer_list<uint64_t> values) {
  uint64_t acc = 0;
  for (uint64_t v : values) acc = mix64(acc ^ v);
  return acc;
}

double median(std::vector<double> v) {
  ATTN_CHECK(!v.empty(), "median of no values");
  const size_t n = v.size(), mid = n / 2;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid), v.end());
  if (n % 2 == 1) return v[mid];
  const double hi = v[mid];
  const double lo = *std::max_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(mid));
  return 0.5 * (lo + hi);
}

void synchronize(Device device) {
  if (device.is_cpu()) return;
#ifdef ATTN_WITH_CUDA
  cuda::synchronize(device.index);
#endif
}

std::vector<double> time_calls(Device device, int warmup, int reps,
                               const std::function<void()>& fn) {
  ATTN_CHECK(warmup >= 0 && reps >= 1, "time_calls: warmup ", warmup, " and reps ", reps,
             " (need warmup >= 0, reps >= 1)");
  for (int i = 0; i < warmup; ++i) fn();
  synchronize(device);
  std::vector<double> ms(static_cast<size_t>(reps));
  if (device.is_cpu()) {
    using Clock = std::chrono::steady_clock;
    for (int i = 0; i < reps; ++i) {
      const auto t0 = Clock::now();
      fn();
      ms[i] = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    }
    return ms;
  }
#ifdef ATTN_WITH_CUDA
  cudaStream_t stream = cuda::stream(device.index);  // also makes the device current
  std::vector<cudaEvent_t> events(2 * static_cast<size_t>(reps));
  for (auto& e : events) CUDA_CHECK(cudaEventCreate(&e));
  try {
    for (int i = 0; i < reps; ++i) {
      CUDA_CHECK(cudaEventRecord(events[2 * i], stream));
      fn();
      CUDA_CHECK(cudaEventRecord(events[2 * i + 1], stream));
    }
    CUDA_CHECK(cudaEventSynchronize(events.back()));
    for (int i = 0; i < reps; ++i) {
      float t = 0;
      CUDA_CHECK(cudaEventElapsedTime(&t, events[2 * i], events[2 * i + 1]));
      ms[i] = t;
    }
  } catch (...) {
    for (auto& e : events) cudaEventDestroy(e);
    throw;
  }
  for (auto& e : events) cudaEventDestroy(e);
  return ms;
#else
  ATTN_FAIL("time_calls: device ", device, " but attn was built without CUDA");
#endif
}

Tensor hashed_uniform(const Shape& shape, double lo, double hi, uint64_t seed, DType dtype,
                      Device device) {
  Tensor t = Tensor::empty(shape, dtype, Device::cpu());
  const int64_t n = t.numel();
  const double width = hi - lo;
  auto fill = [&](auto* p, auto convert) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i)
      p[i] = convert(lo + width * unit_double(hash_u64({seed, static_cast<uint64_t>(i)})));
  };
  switch (dtype) {
    case DType::kF32:
      fill(t.data<float>(), [](double v) { return static_cast<float>(v); });
      break;
    case DType::kF64:
      fill(t.data<double>(), [](double v) { return v; });
      break;
    case DType::kBF16:
      fill(t.data<bf16>(), [](double v) { return float_to_bf16(static_cast<float>(v)); });
      break;
    case DType::kF16:
      fill(t.data<f16>(), [](double v) { return float_to_f16(static_cast<float>(v)); });
      break;
    default:
      ATTN_FAIL("hashed_uniform: ", dtype, " is not a floating-point type");
  }
  return t.to(device);
}

std::string utc_timestamp() {
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  return date;
}

}  // namespace attn::bench
