#include "data/hash.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "core/error.h"

namespace attn::data {

namespace {

constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ull;
constexpr uint64_t kP5 = 0x27D4EB2F165667C5ull;

inline uint64_t rotl(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

inline uint64_t load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

inline uint32_t load32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline uint64_t lane_round(uint64_t acc, uint64_t input) {
  return rotl(acc + input * kP2, 31) * kP1;
}

inline uint64_t merge(uint64_t h, uint64_t lane) {
  return (h ^ lane_round(0, lane)) * kP1 + kP4;
}

}  // namespace

Hash64::Hash64(uint64_t seed) : seed_(seed) {
  lanes_[0] = seed + kP1 + kP2;
  lanes_[1] = seed + kP2;
  lanes_[2] = seed;
  lanes_[3] = seed - kP1;
}

void Hash64::consume_stripe(const unsigned char* p) {
  for (int k = 0; k < 4; ++k) lanes_[k] = lane_round(lanes_[k], load64(p + 8 * k));
}

void Hash64::update(const void* data, size_t bytes) {
  if (bytes == 0) return;  // data may be null then
  const auto* p = static_cast<const unsigned char*>(data);
  total_ += bytes;
  if (buffered_ > 0) {
    const size_t take = std::min(bytes, sizeof(buffer_) - buffered_);
    std::memcpy(buffer_ + buffered_, p, take);
    buffered_ += take;
    p += take;
    bytes -= take;
    if (buffered_ < sizeof(buffer_)) return;
    consume_stripe(buffer_);
    buffered_ = 0;
  }
  while (bytes >= 32) {
    consume_stripe(p);
    p += 32;
    bytes -= 32;
  }
  std::memcpy(buffer_, p, bytes);
  buffered_ = bytes;
}

uint64_t Hash64::digest() const {
  uint64_t h;
  if (total_ >= 32) {
    h = rotl(lanes_[0], 1) + rotl(lanes_[1], 7) + rotl(lanes_[2], 12) + rotl(lanes_[3], 18);
    for (int k = 0; k < 4; ++k) h = merge(h, lanes_[k]);
  } else {
    h = seed_ + kP5;
  }
  h += total_;
  const unsigned char* p = buffer_;
  size_t left = buffered_;
  for (; left >= 8; p += 8, left -= 8) h = rotl(h ^ lane_round(0, load64(p)), 27) * kP1 + kP4;
  if (left >= 4) {
    h = rotl(h ^ (static_cast<uint64_t>(load32(p)) * kP1), 23) * kP2 + kP3;
    p += 4;
    left -= 4;
  }
  for (; left > 0; ++p, --left) h = rotl(h ^ (*p * kP5), 11) * kP1;
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

uint64_t hash64(const void* data, size_t bytes, uint64_t seed) {
  Hash64 h(seed);
  h.update(data, bytes);
  return h.digest();
}

uint64_t hash_file(const std::string& path, const std::string& role, uint64_t* size) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) ATTN_FAIL("cannot open ", role, " '", path, "': ", std::strerror(errno));
  std::vector<char> chunk(1 << 20);
  Hash64 h;
  uint64_t total = 0;
  while (true) {
    const size_t got = std::fread(chunk.data(), 1, chunk.size(), f.get());
    h.update(chunk.data(), got);
    total += got;
    if (got < chunk.size()) break;
  }
  if (std::ferror(f.get()))
    ATTN_FAIL("cannot read ", role, " '", path, "': ", std::strerror(errno));
  if (size) *size = total;
  return h.digest();
}

}  // namespace attn::data
