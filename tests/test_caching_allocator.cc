// The caching allocator's block logic on the CPU with a fake memory source (the CUDA
// allocator puts cudaMalloc/cudaFree under the same code): reuse without new system
// allocations, splitting and merging, big requests in their own segment, empty_cache, the
// free-cache-and-retry on out of memory and its message, and a random stress run checking that
// live blocks never overlap and the statistics add up.
#include <catch2/catch.hpp>
#include <cstring>
#include <algorithm>
#include <cstdlib>
#include <map>
#include <random>
#include <vector>
#include "core/allocator.h"
#include "base/error.h"
using namespace attn;

struct Fake : RawMemory {
  size_t capacity, used = 0;
  std::map<void*, size_t>* live;
  Fake(size_t cap, std::map<void*, size_t>* l) : capacity(cap), live(l) {}
  void* allocate(size_t b) override {
    if (used + b > capacity) return nullptr;
    void* p = std::aligned_alloc(512, b);
    used += b; (*live)[p] = b; return p;
  }
  void release(void* p, size_t b) override {
    REQUIRE((live->count(p) && (*live)[p] == b));
    live->erase(p); used -= b; std::free(p);
  }
  std::string out_of_memory_message(size_t b, const AllocatorStats& s) const override {
    return detail::str_cat("OOM asked ", b, " bytes current ", s.current_bytes, " data.max_tokens");
  }
};

TEST_CASE("caching allocator: reuse, split, merge, empty_cache, OOM retry, stress", "[allocator]") {
  std::map<void*, size_t> live;
  auto a = make_caching_allocator(std::make_unique<Fake>(size_t(200) << 20, &live));
  // reuse
  void* p = a->allocate(1000);
  auto s = a->stats();
  CHECK((s.num_system_allocs == 1 && s.reserved_bytes == 2 << 20 && s.current_bytes == 1000));
  a->deallocate(p, 1000);
  void* q = a->allocate(1000);
  CHECK((q == p && a->stats().num_system_allocs == 1));
  // split: next small block directly after
  void* r = a->allocate(700);
  CHECK((char*)r == (char*)q + 1024);
  void* t = a->allocate(100);
  CHECK((char*)t == (char*)r + 1024);
  a->deallocate(r, 700);
  void* u = a->allocate(1000);  // 1024 fits exactly r's slot
  CHECK(u == r);
  a->deallocate(q, 1000); a->deallocate(u, 1000); a->deallocate(t, 100);
  s = a->stats();
  CHECK(s.current_bytes == 0);
  CHECK(s.num_system_allocs == 1);
  CHECK(s.peak_bytes == 1000 + 1000 + 100);  // requested bytes, not rounded blocks
  // whole segment merged back: 2 MiB request in large pool? no: 1 MiB request fits small segment
  void* w = a->allocate(size_t(2) << 20);  // large pool: 20 MiB segment
  s = a->stats();
  CHECK((s.num_system_allocs == 2 && s.reserved_bytes == (2 << 20) + (20 << 20)));
  void* x = a->allocate(size_t(3) << 20);
  CHECK((char*)x == (char*)w + (2 << 20));
  CHECK(a->stats().num_system_allocs == 2);
  a->deallocate(w, 0); a->deallocate(x, 0);
  void* y = a->allocate(size_t(20) << 20);  // merged full segment reused
  CHECK((y == w && a->stats().num_system_allocs == 2));
  a->deallocate(y, 0);
  // big: own segment rounded to 2 MiB
  void* z = a->allocate((size_t(30) << 20) + 1);
  s = a->stats();
  CHECK((s.num_system_allocs == 3 && s.reserved_bytes == (2 << 20) + (20 << 20) + (32 << 20)));
  a->deallocate(z, 0);
  // empty cache
  a->empty_cache();
  s = a->stats();
  CHECK((s.reserved_bytes == 0 && s.num_system_frees == 3 && live.empty()));
  // OOM with retry: fill cache then ask for something that needs the cached memory
  void* big1 = a->allocate(size_t(150) << 20);
  a->deallocate(big1, 0);
  CHECK(a->stats().reserved_bytes == 150 << 20);
  void* big2 = a->allocate(size_t(160) << 20);  // needs the cache released
  s = a->stats();
  CHECK((s.reserved_bytes == 160 << 20 && s.num_system_frees == 4));
  CHECK_THROWS_AS(a->allocate(size_t(100) << 20), OutOfMemoryError);
  CHECK_THROWS_WITH(a->allocate(size_t(1) << 50), Catch::Contains("1125899906842624") && Catch::Contains("data.max_tokens"));
  CHECK(a->stats().current_bytes == 160 << 20);
  a->deallocate(big2, 0);
  // random stress with consistency checks
  a = make_caching_allocator(std::make_unique<Fake>(size_t(8) << 30, &live));
  std::mt19937_64 rng(5);
  std::vector<std::pair<char*, size_t>> held;
  for (int it = 0; it < 200000; ++it) {
    if (held.empty() || rng() % 2) {
      size_t n = rng() % 4 == 0 ? rng() % (size_t(12) << 20) : rng() % 70000;
      if (n == 0) continue;
      char* p2 = (char*)a->allocate(n);
      memset(p2, 0xab, n < 64 ? n : 64); memset(p2 + n - 1, 1, 1);
      held.push_back({p2, n});
    } else {
      size_t i = rng() % held.size();
      a->deallocate(held[i].first, held[i].second);
      held[i] = held.back(); held.pop_back();
    }
  }
  // overlaps
  std::sort(held.begin(), held.end());
  for (size_t i = 1; i < held.size(); ++i) REQUIRE(held[i-1].first + held[i-1].second <= held[i].first);
  int64_t cur = 0; for (auto& h : held) cur += h.second;
  CHECK(a->stats().current_bytes == cur);
  for (auto& h : held) a->deallocate(h.first, h.second);
  a->empty_cache();
  CHECK((a->stats().reserved_bytes == 0 && live.empty() && a->stats().current_bytes == 0));
  a.reset();
}
