#!/usr/bin/env bash
# Builds src/dist and tests/test_dist.cc into a Catch2 binary against an existing CPU build's
# libattn.a, without touching CMake: for checking the communication layer before (or apart
# from) the main build. Usage:
#   tests/dist/build_standalone.sh [BUILD_DIR] [OUT_DIR]
# (defaults: build-main, /tmp/attn_dist)
# then: OUT_DIR/dist_tests "[dist]" and tests/dist/run_mpi_tests.sh OUT_DIR/dist_tests
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-main}
out=${2:-/tmp/attn_dist}
mkdir -p "$out"
[[ -f $build/libattn.a ]] || { echo "build_standalone: no $build/libattn.a" >&2; exit 1; }

flags=(-std=c++20 -O2 -fopenmp -Wall -Wextra -Wno-unused-parameter
       -I"$root" -I"$root/src" -I"$root/tests"
       -DATTN_BINARY="\"$build/attn\"" -DATTN_SOURCE_DIR="\"$root\""  # for test_util.h
       -DFMT_SHARED -DSPDLOG_COMPILED_LIB -DSPDLOG_FMT_EXTERNAL -DSPDLOG_SHARED_LIB)
objs=()
for src in "$root"/src/dist/*.cc "$root/tests/test_dist.cc" "$root/tests/test_main.cc"; do
  obj=$out/$(basename "${src%.cc}").o
  mpicxx "${flags[@]}" -c "$src" -o "$obj"
  objs+=("$obj")
done
libdir=/usr/lib/x86_64-linux-gnu
mpicxx -fopenmp -o "$out/dist_tests" "${objs[@]}" "$build/libattn.a" \
  -Wl,-rpath,$libdir/openblas-openmp -lspdlog -lfmt -lyaml-cpp -lsentencepiece \
  -lsentencepiece_train $libdir/openblas-openmp/libopenblas.so -lpthread
echo "$out/dist_tests"
