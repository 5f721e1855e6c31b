#include "kernels/cpu_isa.h"

#include <cstdlib>
#include <string>

#include "base/error.h"

namespace attn::kernels {

CpuIsa cpu_isa() {
  static const CpuIsa isa = [] {
    CpuIsa cap = CpuIsa::kAvx512;
    if (const char* env = std::getenv("ATTN_CPU_ISA"); env && *env) {
      const std::string e = env;
      ATTN_CHECK(e == "baseline" || e == "avx2" || e == "avx512", "ATTN_CPU_ISA=", e,
                 ": expected baseline, avx2 or avx512");
      cap = e == "baseline" ? CpuIsa::kBaseline : e == "avx2" ? CpuIsa::kAvx2 : CpuIsa::kAvx512;
    }
#if ATTN_CPU_ISA_BUILDS
    if (cap == CpuIsa::kAvx512 && __builtin_cpu_supports("avx512f")) return CpuIsa::kAvx512;
    if (cap >= CpuIsa::kAvx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return CpuIsa::kAvx2;
#endif
    return CpuIsa::kBaseline;
  }();
  return isa;
}

const char* cpu_isa_name() {
  switch (cpu_isa()) {
    case CpuIsa::kAvx512: return "avx512";
    case CpuIsa::kAvx2: return "avx2";
    case CpuIsa::kBaseline: break;
  }
  return "baseline";
}

}  // namespace attn::kernels
