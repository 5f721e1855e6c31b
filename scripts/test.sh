#!/usr/bin/env bash
# Installs dependencies, configures, builds (CUDA sources included when nvcc is present) and
# runs every test that needs no GPU. Exits non-zero on any failure.
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
ctest --test-dir "$build_dir" -LE cuda --output-on-failure -j"$jobs" --no-tests=error
