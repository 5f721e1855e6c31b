#!/usr/bin/env bash
# Installs dependencies, configures, builds (CUDA sources included when nvcc is present) and
# runs every test that needs no GPU, under two OpenBLAS kernel families. Exits non-zero on
# any failure.
#   ATTN_BUILD_DIR   build directory (default: build)
#   ATTN_CMAKE_ARGS  extra configure arguments, e.g. "-DATTN_CUDA=OFF"
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

build_dir="${ATTN_BUILD_DIR:-build}"
jobs="$(nproc)"
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ${ATTN_CMAKE_ARGS:-}
cmake --build "$build_dir" -j"$jobs"

# Every CPU test runs under two GEMM kernel families, so that a test which holds only with
# one CPU's rounding fails here and not on a user's machine: Haswell (AVX2) and SkylakeX
# (AVX-512) where the CPU has AVX-512, else Sandybridge (AVX). OPENBLAS_CORETYPE picks
# OpenBLAS's family, ONEDNN_MAX_CPU_ISA caps oneDNN's (the f32 GEMMs where attn has oneDNN) to
# the same ISA; `attn devices` shows which ones run, and a mismatch fails the run.
declare -A onednn_isa=([Sandybridge]=avx [Haswell]=avx2 [SkylakeX]=avx512_core)
families=(Sandybridge)
grep -qw avx2 /proc/cpuinfo && families=(Haswell Sandybridge)
grep -qw avx512f /proc/cpuinfo && families=(Haswell SkylakeX)
for family in "${families[@]}"; do
  isa=${onednn_isa[$family]}
  echo "== CPU tests with OpenBLAS's $family kernels (oneDNN, where built: $isa)"
  OPENBLAS_CORETYPE="$family" ONEDNN_MAX_CPU_ISA="$isa" "$build_dir/attn" devices |
    tee "$build_dir/devices.txt"
  grep -q "$family kernels" "$build_dir/devices.txt" || {
    echo "error: OPENBLAS_CORETYPE=$family was not taken by OpenBLAS" >&2
    exit 1
  }
  if grep -q oneDNN "$build_dir/devices.txt" && ! grep -q "oneDNN [0-9.]* $isa kernels" "$build_dir/devices.txt"; then
    echo "error: ONEDNN_MAX_CPU_ISA=$isa was not taken by oneDNN" >&2
    exit 1
  fi
  OPENBLAS_CORETYPE="$family" ONEDNN_MAX_CPU_ISA="$isa" ctest --test-dir "$build_dir" -LE cuda \
    --output-on-failure -j"$jobs" --no-tests=error
done

# ---- Reliability stages (docs/RELIABILITY.md): after the CPU tests pass, a short run of every
# fuzz target and the CPU test suite under AddressSanitizer + UndefinedBehaviorSanitizer, each
# in its own build directory. CI runs both; ATTN_CI_QUICK=1 skips both for local use.
#   ATTN_CI_FUZZ_SECONDS   seconds per fuzz target (default: 30)
#   ATTN_CI_SANITIZE=0     skips only the sanitizer stage
if [ "${ATTN_CI_QUICK:-0}" != 1 ]; then
  echo "== fuzz targets, ${ATTN_CI_FUZZ_SECONDS:-30} s each"
  bash scripts/fuzz.sh "${ATTN_CI_FUZZ_SECONDS:-30}"
fi
if [ "${ATTN_CI_QUICK:-0}" != 1 ] && [ "${ATTN_CI_SANITIZE:-1}" != 0 ]; then
  echo "== CPU tests under AddressSanitizer + UndefinedBehaviorSanitizer"
  bash scripts/sanitize.sh
fi
