#include <cblas.h>

#include <string>

#include "kernels/gemm.h"

extern "C" char* openblas_get_corename(void);
extern "C" char* openblas_get_config(void);

namespace attn::kernels {

namespace {
void gemm_one(const GemmShape& s, double alpha, const float* a, const float* b, double beta,
              float* c) {
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
    return config.substr(0, second_space) + ", " + openblas_get_corename() + " kernels";
  }();
  return name.c_str();
}

template void gemm_cpu<float>(const GemmShape&, double, const float*, const float*, double,
                              float*);
template void gemm_cpu<double>(const GemmShape&, double, const double*, const double*, double,
                               double*);

}  // namespace attn::kernels
