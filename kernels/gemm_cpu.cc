#include <cblas.h>

#include <cstdlib>
#include <string>

#ifdef ATTN_WITH_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

#include "base/error.h"
#include "kernels/gemm.h"

extern "C" char* openblas_get_corename(void);
extern "C" char* openblas_get_config(void);

namespace attn::kernels {

namespace {

// ATTN_CPU_GEMM: "onednn" (the default where built with it) or "openblas".
bool f32_through_onednn() {
  static const bool onednn = [] {
    const char* env = std::getenv("ATTN_CPU_GEMM");
    const std::string choice = env && *env ? env : "";
#ifdef ATTN_WITH_ONEDNN
    if (choice.empty() || choice == "onednn") return true;
#else
    ATTN_CHECK(choice != "onednn", "ATTN_CPU_GEMM=onednn: attn was built without oneDNN "
               "(install libdnnl-dev and reconfigure)");
    if (choice.empty()) return false;
#endif
    ATTN_CHECK(choice == "openblas", "ATTN_CPU_GEMM=", choice,
               ": expected onednn or openblas");
    return false;
  }();
  return onednn;
}

#ifdef ATTN_WITH_ONEDNN
const char* onednn_isa_name(dnnl_cpu_isa_t isa) {
  switch (isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}
#endif

void gemm_one(const GemmShape& s, double alpha, const float* a, const float* b, double beta,
              float* c) {
#ifdef ATTN_WITH_ONEDNN
  if (f32_through_onednn()) {
    // Row-major, like the CBLAS call below.
    const dnnl_status_t st = dnnl_sgemm(
        s.trans_a ? 'T' : 'N', s.trans_b ? 'T' : 'N', s.m, s.n, s.k, static_cast<float>(alpha), a,
        s.trans_a ? s.m : s.k, b, s.trans_b ? s.k : s.n, static_cast<float>(beta), c, s.n);
    ATTN_CHECK(st == dnnl_success, "oneDNN sgemm failed (status ", static_cast<int>(st),
               ") for ", s.m, "x", s.n, "x", s.k);
    return;
  }
#endif
  cblas_sgemm(CblasRowMajor, s.trans_a ? CblasTrans : CblasNoTrans,
              s.trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(s.m), static_cast<int>(s.n),
              static_cast<int>(s.k), static_cast<float>(alpha), a,
              static_cast<int>(s.trans_a ? s.m : s.k), b, static_cast<int>(s.trans_b ? s.k : s.n),
              static_cast<float>(beta), c, static_cast<int>(s.n));
}
void gemm_one(const GemmShape& s, double alpha, const double* a, const double* b, double beta,
              double* c) {
  cblas_dgemm(CblasRowMajor, s.trans_a ? CblasTrans : CblasNoTrans,
              s.trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(s.m), static_cast<int>(s.n),
              static_cast<int>(s.k), alpha, a, static_cast<int>(s.trans_a ? s.m : s.k), b,
              static_cast<int>(s.trans_b ? s.k : s.n), beta, c, static_cast<int>(s.n));
}
}  // namespace

template <class T>
void gemm_cpu(const GemmShape& s, double alpha, const T* a, const T* b, double beta, T* c) {
  if (s.m == 0 || s.n == 0) return;
  for (int64_t i = 0; i < s.batch; ++i) {
    T* ci = c + i * s.stride_c;
    if (s.k == 0) {  // BLAS may not touch C when k == 0; the result is beta * C
      for (int64_t j = 0; j < s.m * s.n; ++j) ci[j] = beta == 0 ? T(0) : static_cast<T>(beta) * ci[j];
      continue;
    }
    gemm_one(s, alpha, a + i * s.stride_a, b + i * s.stride_b, beta, ci);
  }
}

const char* gemm_cpu_library() {
  static const std::string name = [] {
    // openblas_get_config() starts with "OpenBLAS <version> ".
    std::string config = openblas_get_config();
    const size_t second_space = config.find(' ', config.find(' ') + 1);
    const std::string openblas =
        config.substr(0, second_space) + ", " + openblas_get_corename() + " kernels";
#ifdef ATTN_WITH_ONEDNN
    if (f32_through_onednn()) {
      const dnnl_version_t* v = dnnl_version();
      return "f32: oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
             std::to_string(v->patch) + " " + onednn_isa_name(dnnl_get_effective_cpu_isa()) +
             " kernels; f64: " + openblas;
    }
#endif
    return openblas;
  }();
  return name.c_str();
}

template void gemm_cpu<float>(const GemmShape&, double, const float*, const float*, double,
                              float*);
template void gemm_cpu<double>(const GemmShape&, double, const double*, const double*, double,
                               double*);

}  // namespace attn::kernels
