// Errors carry what went wrong and where (the op, the shapes, the file and line of input).
// Library code throws attn::Error; only main() turns it into a message and an exit code.
#pragma once

#include <cstdint>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace attn {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Out of memory on a device; a separate type so callers can react (smaller batch, message).
class OutOfMemoryError : public Error {
 public:
  using Error::Error;
};

inline std::ostream& operator<<(std::ostream& os, const std::vector<int64_t>& shape) {
  os << '[';
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  return os << ']';
}

namespace detail {
template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  using attn::operator<<;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace attn

#define ATTN_CHECK(cond, ...)                                       \
  do {                                                              \
    if (!(cond)) throw ::attn::Error(::attn::detail::str_cat(__VA_ARGS__)); \
  } while (0)

#define ATTN_FAIL(...) throw ::attn::Error(::attn::detail::str_cat(__VA_ARGS__))
