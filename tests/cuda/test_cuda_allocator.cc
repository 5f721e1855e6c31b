// The CUDA caching allocator: reuse without cudaMalloc, splitting and merging of segments,
// statistics (current, peak, reserved, cudaMalloc/cudaFree counts), empty_cache, the
// out-of-memory path (cache released and retried, then an error with the amounts), thread
// safety, a repeated training-step pattern that stops calling cudaMalloc, and the plain
// allocator selected by ATTN_CUDA_ALLOCATOR=simple. Most tests use their own allocator
// (cuda::make_caching_allocator), so the counts do not depend on what ran before.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/allocator.h"
#include "core/cuda_backend.h"
#include "core/tensor.h"

namespace attn {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

char* as_bytes(void* p) { return static_cast<char*>(p); }

size_t device_free_bytes() {
  size_t free_b = 0, total_b = 0;
  cuda::stream(0);  // makes device 0 current
  REQUIRE(cudaMemGetInfo(&free_b, &total_b) == cudaSuccess);
  return free_b;
}

// Sets an environment variable for a scope and restores the previous value.
class EnvScope {
 public:
  EnvScope(const char* name, const char* value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~EnvScope() {
    if (had_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

// One step of a training-like pattern: activations kept for backward, temporaries freed at
// once, then the backward pass frees activations in reverse order while making gradients.
void training_step(Allocator& a, size_t tokens) {
  std::vector<std::pair<void*, size_t>> saved;
  for (int layer = 0; layer < 6; ++layer) {
    for (size_t bytes : {tokens * 512 * 2, tokens * 2048 * 2, tokens * 512 * 4}) {
      saved.emplace_back(a.allocate(bytes), bytes);
    }
    void* tmp = a.allocate(tokens * 8 * 64 * 4);  // scores-like temporary
    void* small = a.allocate(512 * 4);
    a.deallocate(tmp, tokens * 8 * 64 * 4);
    a.deallocate(small, 512 * 4);
  }
  std::vector<std::pair<void*, size_t>> grads;
  while (!saved.empty()) {
    const size_t g_bytes = saved.back().second;
    void* g = a.allocate(g_bytes);
    a.deallocate(saved.back().first, saved.back().second);
    saved.pop_back();
    if (!grads.empty()) {  // the previous gradient is consumed
      a.deallocate(grads.back().first, grads.back().second);
      grads.pop_back();
    }
    grads.emplace_back(g, g_bytes);
    void* w_grad = a.allocate(2048 * 512 * 4);  // parameter-gradient-sized temporary
    a.deallocate(w_grad, 2048 * 512 * 4);
  }
  for (auto& [p, bytes] : grads) a.deallocate(p, bytes);
}

}  // namespace

TEST_CASE("the caching allocator reuses a freed block without cudaMalloc", "[cuda][allocator]") {
  auto a = cuda::make_caching_allocator(0);
  void* p = a->allocate(1000);
  REQUIRE(p != nullptr);
  AllocatorStats s = a->stats();
  CHECK(s.num_system_allocs == 1);
  CHECK(s.reserved_bytes == static_cast<int64_t>(caching::kSmallBuffer));
  CHECK(s.current_bytes == 1000);
  a->deallocate(p, 1000);
  CHECK(a->stats().current_bytes == 0);
  CHECK(a->stats().reserved_bytes == static_cast<int64_t>(caching::kSmallBuffer));  // cached

  void* q = a->allocate(1000);
  CHECK(q == p);
  // Small requests share the 2 MiB segment: cut one after the other, 512-byte granules.
  void* r = a->allocate(700);
  void* t = a->allocate(1);
  CHECK(as_bytes(r) == as_bytes(q) + 1024);
  CHECK(as_bytes(t) == as_bytes(r) + 1024);
  s = a->stats();
  CHECK(s.num_system_allocs == 1);
  CHECK(s.num_allocs == 4);
  CHECK(s.current_bytes == 1000 + 700 + 1);
  a->deallocate(q, 1000);
  a->deallocate(r, 700);
  a->deallocate(t, 1);
  CHECK(a->stats().current_bytes == 0);
  CHECK(a->stats().num_system_frees == 0);
  CHECK(a->allocate(0) == nullptr);
  a->deallocate(nullptr, 0);
}

TEST_CASE("the caching allocator splits large segments and merges them back",
          "[cuda][allocator]") {
  auto a = cuda::make_caching_allocator(0);
  void* p3 = a->allocate(3 * kMiB);  // below 10 MiB: a 20 MiB segment
  AllocatorStats s = a->stats();
  CHECK(s.num_system_allocs == 1);
  CHECK(s.reserved_bytes == static_cast<int64_t>(caching::kLargeBuffer));
  void* p5 = a->allocate(5 * kMiB);  // the rest of the same segment
  CHECK(as_bytes(p5) == as_bytes(p3) + 3 * kMiB);
  void* p2 = a->allocate(2 * kMiB);
  CHECK(as_bytes(p2) == as_bytes(p5) + 5 * kMiB);
  CHECK(a->stats().num_system_allocs == 1);
  // Freed in an order that needs merging on both sides.
  a->deallocate(p3, 3 * kMiB);
  a->deallocate(p2, 2 * kMiB);
  a->deallocate(p5, 5 * kMiB);
  void* whole = a->allocate(caching::kLargeBuffer);  // only fits if all merged back
  CHECK(whole == p3);
  CHECK(a->stats().num_system_allocs == 1);
  a->deallocate(whole, caching::kLargeBuffer);

  // 30 MiB + 1: a segment of its own, rounded up to 2 MiB.
  const size_t big = 30 * kMiB + 1;
  void* pb = a->allocate(big);
  s = a->stats();
  CHECK(s.num_system_allocs == 2);
  CHECK(s.reserved_bytes == static_cast<int64_t>(caching::kLargeBuffer + 32 * kMiB));
  CHECK(s.current_bytes == static_cast<int64_t>(big));
  a->deallocate(pb, big);
  // A 1.5 MiB request from the 20 MiB segment leaves 18.5 MiB for the next one.
  void* q1 = a->allocate(3 * kMiB / 2);
  void* q2 = a->allocate(18 * kMiB);
  CHECK(a->stats().num_system_allocs == 2);
  a->deallocate(q1, 3 * kMiB / 2);
  a->deallocate(q2, 18 * kMiB);
}

TEST_CASE("caching allocator statistics and empty_cache", "[cuda][allocator]") {
  auto a = cuda::make_caching_allocator(0);
  const size_t sizes[] = {100, 5000, 2 * kMiB + 3, 40 * kMiB, 256 * kMiB};
  std::vector<void*> ptrs;
  int64_t expect = 0;
  for (size_t n : sizes) {
    ptrs.push_back(a->allocate(n));
    expect += static_cast<int64_t>(n);
    const AllocatorStats s = a->stats();
    CHECK(s.current_bytes == expect);
    CHECK(s.peak_bytes == expect);
    CHECK(s.reserved_bytes >= s.current_bytes);
  }
  const int64_t peak = expect;
  for (size_t i = 0; i < ptrs.size(); ++i) a->deallocate(ptrs[i], sizes[i]);
  AllocatorStats s = a->stats();
  CHECK(s.current_bytes == 0);
  CHECK(s.peak_bytes == peak);
  CHECK(s.reserved_bytes >= peak);  // all still cached
  CHECK(s.num_system_frees == 0);
  a->reset_peak();
  CHECK(a->stats().peak_bytes == 0);

  const int64_t reserved = s.reserved_bytes;
  const size_t free_before = device_free_bytes();
  a->empty_cache();
  s = a->stats();
  CHECK(s.reserved_bytes == 0);
  CHECK(s.num_system_frees == s.num_system_allocs);
  // The memory really went back to the device (at least the 256 MiB block).
  CHECK(device_free_bytes() >= free_before + 200 * kMiB);
  CHECK(reserved >= static_cast<int64_t>(256 * kMiB));

  // Blocks in use survive empty_cache.
  void* keep = a->allocate(3 * kMiB);
  void* other = a->allocate(5 * kMiB);
  a->deallocate(other, 5 * kMiB);
  a->empty_cache();
  CHECK(a->stats().reserved_bytes == static_cast<int64_t>(caching::kLargeBuffer));
  CHECK(cudaMemsetAsync(keep, 0, 3 * kMiB, cuda::stream(0)) == cudaSuccess);
  cuda::synchronize(0);
  a->deallocate(keep, 3 * kMiB);
}

TEST_CASE("an impossible allocation throws OutOfMemoryError with the amounts",
          "[cuda][allocator]") {
  const size_t pib = size_t{1} << 50;
  auto a = cuda::make_caching_allocator(0);
  void* cached = a->allocate(4 * kMiB);
  a->deallocate(cached, 4 * kMiB);
  try {
    a->allocate(pib);
    FAIL("1 PiB was allocated");
  } catch (const OutOfMemoryError& e) {
    const std::string msg = e.what();
    CHECK_THAT(msg, Catch::Contains("1125899906842624 bytes"));
    CHECK_THAT(msg, Catch::Contains("data.max_tokens"));
    CHECK_THAT(msg, Catch::Contains("cuda:0"));
    CHECK_THAT(msg, Catch::Contains("free of"));
  }
  // The retry released the cache first; nothing is counted as allocated.
  AllocatorStats s = a->stats();
  CHECK(s.current_bytes == 0);
  CHECK(s.reserved_bytes == 0);
  CHECK(s.num_system_frees == 1);
  // Later work is not poisoned by the failed cudaMalloc.
  void* p = a->allocate(1000);
  CHECK(cudaMemsetAsync(p, 0, 1000, cuda::stream(0)) == cudaSuccess);
  CHECK(cudaGetLastError() == cudaSuccess);
  cuda::synchronize(0);
  a->deallocate(p, 1000);

  // The same through tensors and the default allocator.
  CHECK_THROWS_AS(Tensor::empty({int64_t{1} << 48}, kF32, Device::cuda(0)), OutOfMemoryError);
  CHECK_THROWS_WITH(Tensor::empty({int64_t{1} << 48}, kF32, Device::cuda(0)),
                    Catch::Contains("1125899906842624") && Catch::Contains("data.max_tokens"));
}

TEST_CASE("when cudaMalloc fails the cache is released and the request retried",
          "[cuda][allocator]") {
  auto a = cuda::make_caching_allocator(0);
  const size_t free_b = device_free_bytes();
  const size_t first = free_b / 10 * 6 / (2 * kMiB) * (2 * kMiB);
  const size_t second = free_b / 10 * 7 / (2 * kMiB) * (2 * kMiB);
  void* p = a->allocate(first);
  a->deallocate(p, first);  // cached: only ~40% of the device is left
  void* q = nullptr;
  REQUIRE_NOTHROW(q = a->allocate(second));
  const AllocatorStats s = a->stats();
  CHECK(s.num_system_allocs == 2);
  CHECK(s.num_system_frees == 1);
  CHECK(s.reserved_bytes == static_cast<int64_t>(second));
  a->deallocate(q, second);
  a->empty_cache();
}

TEST_CASE("a repeated training step stops calling cudaMalloc after warm-up",
          "[cuda][allocator]") {
  auto a = cuda::make_caching_allocator(0);
  for (int i = 0; i < 3; ++i) training_step(*a, 1000);
  const AllocatorStats warm = a->stats();
  for (int i = 0; i < 5; ++i) training_step(*a, 1000);
  const AllocatorStats after = a->stats();
  CHECK(after.num_system_allocs == warm.num_system_allocs);
  CHECK(after.reserved_bytes == warm.reserved_bytes);
  CHECK(after.current_bytes == 0);
  CHECK(after.num_allocs > warm.num_allocs);
}

TEST_CASE("the default CUDA allocator caches, unless ATTN_CUDA_ALLOCATOR=simple",
          "[cuda][allocator]") {
  const char* env = std::getenv("ATTN_CUDA_ALLOCATOR");
  const bool simple = env && std::string(env) == "simple";
  Allocator& global = allocator_for(Device::cuda(0));
  for (int i = 0; i < 2; ++i) {
    const Tensor t = Tensor::empty({1000, 513}, kF32, Device::cuda(0));
  }
  const int64_t before = global.stats().num_system_allocs;
  for (int i = 0; i < 10; ++i) {
    const Tensor t = Tensor::empty({1000, 513}, kF32, Device::cuda(0));
  }
  CHECK(global.stats().num_system_allocs == before + (simple ? 10 : 0));
}

TEST_CASE("ATTN_CUDA_ALLOCATOR selects the allocator", "[cuda][allocator]") {
  {
    const EnvScope env("ATTN_CUDA_ALLOCATOR", "simple");
    auto a = cuda::make_allocator(0);
    void* p = a->allocate(1000);
    AllocatorStats s = a->stats();
    CHECK(s.reserved_bytes == 1000);  // exactly what was asked: no cache
    a->deallocate(p, 1000);
    void* q = a->allocate(1000);
    a->deallocate(q, 1000);
    s = a->stats();
    CHECK(s.num_system_allocs == 2);
    CHECK(s.num_system_frees == 2);
    CHECK(s.reserved_bytes == 0);
    CHECK_THROWS_AS(a->allocate(size_t{1} << 50), OutOfMemoryError);
  }
  for (const char* value : {"caching", static_cast<const char*>(nullptr)}) {
    const EnvScope env("ATTN_CUDA_ALLOCATOR", value);
    auto a = cuda::make_allocator(0);
    void* p = a->allocate(1000);
    a->deallocate(p, 1000);
    void* q = a->allocate(1000);
    a->deallocate(q, 1000);
    CHECK(a->stats().num_system_allocs == 1);
  }
  {
    const EnvScope env("ATTN_CUDA_ALLOCATOR", "bogus");
    CHECK_THROWS_WITH(cuda::make_allocator(0),
                      Catch::Contains("ATTN_CUDA_ALLOCATOR=bogus") && Catch::Contains("simple"));
  }
}

TEST_CASE("the caching allocator is thread-safe", "[cuda][allocator]") {
  auto a = cuda::make_caching_allocator(0);
  std::mutex mu;
  std::map<uintptr_t, size_t> live;  // start -> bytes, across all threads
  bool overlap = false;
  auto worker = [&](int id) {
    std::mt19937_64 rng(static_cast<uint64_t>(id) + 1);
    std::vector<std::pair<void*, size_t>> mine;
    for (int i = 0; i < 3000; ++i) {
      if (mine.empty() || rng() % 2) {
        const size_t n = rng() % 4 == 0 ? 1 + rng() % (12 * kMiB) : 1 + rng() % 70000;
        void* p = a->allocate(n);
        const uintptr_t u = reinterpret_cast<uintptr_t>(p);
        std::lock_guard<std::mutex> lock(mu);
        auto next = live.lower_bound(u);
        if (next != live.end() && next->first < u + n) overlap = true;
        if (next != live.begin() && std::prev(next)->first + std::prev(next)->second > u)
          overlap = true;
        live[u] = n;
        mine.emplace_back(p, n);
      } else {
        const size_t k = rng() % mine.size();
        {
          std::lock_guard<std::mutex> lock(mu);
          live.erase(reinterpret_cast<uintptr_t>(mine[k].first));
        }
        a->deallocate(mine[k].first, mine[k].second);
        mine[k] = mine.back();
        mine.pop_back();
      }
    }
    for (auto& [p, n] : mine) {
      {
        std::lock_guard<std::mutex> lock(mu);
        live.erase(reinterpret_cast<uintptr_t>(p));
      }
      a->deallocate(p, n);
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) threads.emplace_back(worker, i);
  for (auto& t : threads) t.join();
  CHECK_FALSE(overlap);
  const AllocatorStats s = a->stats();
  CHECK(s.current_bytes == 0);
  CHECK(s.num_allocs > 8 * 1000);
  a->empty_cache();
  CHECK(a->stats().reserved_bytes == 0);
}

}  // namespace attn
