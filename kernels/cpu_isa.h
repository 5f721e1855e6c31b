// Which build of attn's ISA-specific CPU kernels runs here. The library is compiled for
// baseline x86-64; a hot f32 kernel may add builds for AVX2 + FMA and AVX-512F with the
// `target` attribute on the function that holds its OpenMP loop (bodies always-inline, so no
// wide code lands in a function the baseline build shares) and pick one with cpu_isa() at run
// time. ATTN_CPU_ISA=baseline|avx2|avx512 caps the choice (tests run the narrower builds so).
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ATTN_CPU_ISA_BUILDS 1  // the AVX2 and AVX-512 builds exist
#else
#define ATTN_CPU_ISA_BUILDS 0
#endif

namespace attn::kernels {

enum class CpuIsa { kBaseline, kAvx2, kAvx512 };

// The widest build the CPU runs (AVX-512F, else AVX2 + FMA, else baseline), capped by
// ATTN_CPU_ISA; decided once. Throws on an ATTN_CPU_ISA it does not know.
CpuIsa cpu_isa();

// "avx512", "avx2" or "baseline": what `attn devices` prints.
const char* cpu_isa_name();

}  // namespace attn::kernels
