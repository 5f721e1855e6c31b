#include "dist/watchdog.h"

#include <cmath>
#include <cstdlib>

#include "base/error.h"

namespace attn::dist {

double timeout_from_env(const char* name, double default_s) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return default_s;
  char* end = nullptr;
  const double s = std::strtod(value, &end);
  ATTN_CHECK(end != value && *end == '\0' && std::isfinite(s) && s >= 0, name, "='", value,
             "' is not a number of seconds >= 0 (0 waits forever)");
  return s;
}

}  // namespace attn::dist
