#!/usr/bin/env bash
# Builds the CPU test suite with AddressSanitizer and UndefinedBehaviorSanitizer (gcc, no CUDA,
# its own build directory; undefined behaviour aborts) and runs it. Exits non-zero on a failed
# test, a sanitizer report or a leak.
#   ATTN_SANITIZE_BUILD_DIR   build directory (default: build-sanitize)
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${ATTN_SANITIZE_BUILD_DIR:-build-sanitize}"
jobs="$(nproc)"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DATTN_CUDA=OFF \
  -DATTN_SANITIZE=ON >/dev/null
cmake --build "$build_dir" -j"$jobs"

# allocator_may_return_null: attn turns a failed allocation into OutOfMemoryError (tested with
# a 4 PiB tensor); ASan would otherwise stop the process at the request.
# detect_leaks: a leak fails the test that caused it; OpenMPI's own allocations that live
# until exit are suppressed (scripts/lsan.supp). The child processes that tests start (the
# attn binary) inherit these settings.
export ASAN_OPTIONS="allocator_may_return_null=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1"
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

# Left out, each for a reason:
# - "allocations beyond ulimit -v ...": runs attn under `ulimit -v` (1-3 GiB), where an ASan
#   process cannot start (its shadow memory reserves terabytes of address space).
# - prepare_ding: Python only, no attn code to check.
excluded='^(allocations beyond ulimit -v name the settings and the amount|prepare_ding)$'
start=$(date +%s)
ctest --test-dir "$build_dir" -LE cuda -E "$excluded" --output-on-failure -j"$jobs" \
  --no-tests=error
echo "sanitize: CPU test suite clean under ASan + UBSan in $(($(date +%s) - start)) s"
