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

# Every CPU test runs under two OpenBLAS kernel families, so that a test which holds only with
# one CPU's rounding fails here and not on a user's machine: Haswell (AVX2) and SkylakeX
# (AVX-512) where the CPU has AVX-512, else Sandybridge (AVX). OPENBLAS_CORETYPE picks the
# family; `attn devices` shows which one runs, and a mismatch fails the run.
families=(Sandybridge)
grep -qw avx2 /proc/cpuinfo && families=(Haswell Sandybridge)
grep -qw avx512f /proc/cpuinfo && families=(Haswell SkylakeX)
for family in "${families[@]}"; do
  echo "== CPU tests with OpenBLAS's $family kernels"
  OPENBLAS_CORETYPE="$family" "$build_dir/attn" devices | tee "$build_dir/devices.txt"
  grep -q "$family kernels" "$build_dir/devices.txt" || {
    echo "error: OPENBLAS_CORETYPE=$family was not taken by OpenBLAS" >&2
    exit 1
  }
  OPENBLAS_CORETYPE="$family" ctest --test-dir "$build_dir" -LE cuda --output-on-failure \
    -j"$jobs" --no-tests=error
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
