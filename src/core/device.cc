#include "core/device.h"

#include <cstdlib>

#include "core/cuda_backend.h"
#include "base/error.h"

namespace attn {

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5) {
    char* end = nullptr;
    const long i = std::strtol(s.c_str() + 5, &end, 10);
    if (*end == '\0' && i >= 0) return cuda(static_cast<int>(i));
  }
  ATTN_FAIL("unknown device '", s, "' (expected cpu, cuda or cuda:N)");
}

bool cuda_built() {
#ifdef ATTN_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef ATTN_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

void set_allow_tf32(bool allow) {
#ifdef ATTN_WITH_CUDA
  cuda::set_allow_tf32(allow);
#else
  (void)allow;
#endif
}

}  // namespace attn
