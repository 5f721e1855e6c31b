// XXH64 (xxHash, 64-bit, Yann Collet's specification), written out here rather than linked:
// used for data-cache fingerprints and checksums; checkpoints store it as "attn.checksum" so a flipped byte is caught at load time. Chosen
// over FNV-1a because it hashes 8 bytes per step (several GB/s), which matters for
// multi-hundred-megabyte optimizer files; and because it is a published algorithm, a
// checksum can be checked from Python with `xxhash.xxh64(data).hexdigest()`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace attn {

// Streaming form: update() any number of times with consecutive pieces, then digest().
class Xxh64 {
 public:
  explicit Xxh64(uint64_t seed = 0);
  void update(const void* data, size_t bytes);
  void update(std::string_view s) { update(s.data(), s.size()); }
  template <class T>
  void update_value(const T& v) {
    update(&v, sizeof(T));
  }
  // Hash of everything given so far; update() may continue afterwards.
  uint64_t digest() const;

 private:
  uint64_t acc_[4];
  uint64_t seed_;
  uint64_t total_ = 0;
  unsigned char buf_[32];
  size_t buffered_ = 0;
};

uint64_t xxh64(const void* data, size_t bytes, uint64_t seed = 0);

// 16 lowercase hex digits, most significant first (what xxhash's hexdigest() prints).
std::string hex64(uint64_t value);

}  // namespace attn
