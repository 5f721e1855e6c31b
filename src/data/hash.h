// Hashing for data-cache fingerprints: XXH64 (core/hash.h) over strings and whole files, and
// a seed mixer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/hash.h"

namespace attn::data {

using Hash64 = attn::Xxh64;

inline uint64_t hash64(const void* data, size_t bytes, uint64_t seed = 0) {
  return xxh64(data, bytes, seed);
}
inline uint64_t hash64(std::string_view s, uint64_t seed = 0) {
  return xxh64(s.data(), s.size(), seed);
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
