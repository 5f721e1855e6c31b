#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/: clang, AddressSanitizer + UndefinedBehaviorSanitizer,
# no CUDA) and runs each for SECONDS (default 30), one after the other. Exits non-zero when
# any target finds something: a crash, a sanitizer report, a leak, an exception other than
# attn::Error, a violated property or an input slower than 10 s.
#   scripts/fuzz.sh [SECONDS] [TARGET...]     TARGET: config, safetensors, ... (default: all)
#   ATTN_FUZZ_BUILD_DIR   build directory (default: build-fuzz)
#   ATTN_FUZZ_RUNS        also stop a target after this many inputs (default: no limit)
# Inputs found to be interesting accumulate in <build>/corpus/<target> (the committed seeds in
# fuzz/corpus/<target> are only read); a finding is saved in <build>/findings/<target>/ and
# replays with `<build>/fuzz/fuzz_<target> FILE`. Fixed findings go into fuzz/corpus/<target>.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
shift || true
build_dir="${ATTN_FUZZ_BUILD_DIR:-build-fuzz}"
all_targets=()
for f in fuzz/fuzz_*.cc; do
  t="${f#fuzz/fuzz_}"
  all_targets+=("${t%.cc}")
done
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

cxx="$(command -v clang++-14 || command -v clang++ || true)"
cc="$(command -v clang-14 || command -v clang || true)"
[ -n "$cxx" ] && [ -n "$cc" ] || { echo "fuzz: clang is not installed (scripts/setup.sh)" >&2; exit 1; }

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_C_COMPILER="$cc" -DATTN_FUZZ=ON -DATTN_BUILD_TESTS=OFF >/dev/null
cmake --build "$build_dir" -j"$(nproc)" --target "${targets[@]/#/fuzz_}"

# Leaks are findings too; UBSan reports abort (the build makes them non-recoverable).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
failed=()
printf '%-15s %12s %8s  %s\n' target executions seconds result
for t in "${targets[@]}"; do
  mkdir -p "$build_dir/corpus/$t" "$build_dir/findings/$t"
  log="$build_dir/findings/$t.log"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$build_dir/findings/$t/")
  [ -n "${ATTN_FUZZ_RUNS:-}" ] && args+=(-runs="$ATTN_FUZZ_RUNS")
  [ -f "fuzz/$t.dict" ] && args+=(-dict="fuzz/$t.dict")
  start=$(date +%s)
  status=0
  "$build_dir/fuzz/fuzz_$t" "${args[@]}" "$build_dir/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1 ||
    status=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  result=ok
  if [ "$status" -ne 0 ]; then
    result="FINDING (exit $status, log $log, input in $build_dir/findings/$t/)"
    failed+=("$t")
  fi
  printf '%-15s %12s %8s  %s\n' "$t" "${execs:-?}" "$(($(date +%s) - start))" "$result"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in: ${failed[*]}" >&2
  for t in "${failed[@]}"; do
    echo "== $t" >&2
    grep -E -m 12 'ERROR|runtime error|property violated|unexpected exception|#[0-9]+ 0x' \
      "$build_dir/findings/$t.log" >&2 || tail -20 "$build_dir/findings/$t.log" >&2
  done
  exit 1
fi
