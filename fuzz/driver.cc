#include <unistd.h>

#include <cstdint>
#include <exception>
#include <typeinfo>
#include <vector>

#include "fuzz.h"

namespace attn::fuzz {

ScratchFile::ScratchFile(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  path_ = std::string(dir && *dir ? dir : "/tmp") + "/attn-fuzz-" + std::to_string(::getpid()) +
          "-" + name;
}

ScratchFile::~ScratchFile() {
  ::unlink(path_.c_str());
}

const std::string& ScratchFile::write(std::string_view bytes) {
  std::FILE* f = std::fopen(path_.c_str(), "wb");
  require(f != nullptr, "cannot create scratch file ", path_);
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  require(std::fclose(f) == 0 && ok, "cannot write scratch file ", path_);
  return path_;
}

std::vector<std::string> split(std::string_view data, char sep) {
  std::vector<std::string> pieces;
  size_t pos = 0;
  while (true) {
    const size_t end = data.find(sep, pos);
    pieces.emplace_back(data.substr(pos, end == std::string_view::npos ? end : end - pos));
    if (end == std::string_view::npos) return pieces;
    pos = end + 1;
  }
}

}  // namespace attn::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    attn::fuzz::fuzz_one(std::string_view(reinterpret_cast<const char*>(data), size));
  } catch (const attn::Error&) {
    // Refused with a message: what a reader of untrusted bytes should do.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz: unexpected exception %s: %s\n", typeid(e).name(), e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "fuzz: unexpected exception of a type not derived from std::exception\n");
    std::abort();
  }
  return 0;
}
