// A fast non-cryptographic 64-bit hash (the XXH64 construction: four multiply-rotate lanes
// over 32-byte stripes) for cache fingerprints and checksums. It only has to notice changed
// or damaged bytes, at several GB/s, so that checking a large cache costs little at startup.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace attn::data {

class Hash64 {
 public:
  explicit Hash64(uint64_t seed = 0);
  void update(const void* data, size_t bytes);
  void update(std::string_view s) { update(s.data(), s.size()); }
  template <class T>
  void update_value(const T& v) {
    update(&v, sizeof(T));
  }
  // Hash of everything given so far; update() may continue afterwards.
  uint64_t digest() const;

 private:
  void consume_stripe(const unsigned char* p);

  uint64_t seed_;
  uint64_t lanes_[4];
  unsigned char buffer_[32];
  size_t buffered_ = 0;
  uint64_t total_ = 0;
};

uint64_t hash64(const void* data, size_t bytes, uint64_t seed = 0);
inline uint64_t hash64(std::string_view s, uint64_t seed = 0) {
  return hash64(s.data(), s.size(), seed);
}

// Hash of a file's bytes, read in chunks. `role` names the file in errors
// ("cannot open source corpus 'x': ...").
uint64_t hash_file(const std::string& path, const std::string& role, uint64_t* size = nullptr);

// A bijective 64-bit mixer (splitmix64's finalizer) for deriving seeds.
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace attn::data
