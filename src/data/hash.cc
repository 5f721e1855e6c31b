#include "data/hash.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "base/error.h"

namespace attn::data {

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
