#!/usr/bin/env bash
# Tests the GPU machine's one command on a CPU (docs/GPU.md): the bundle's size budget
# (scripts/gpu/bundle.sh --estimate, which must also fail under a too small limit), a bundle
# packed from this build with a tiny Ding corpus made from tests/data/ding_sample.txt, its
# check.sh --dry-run (every stage's row, the summary table printed last and written to
# summary.md, the logs), and, with failures injected, that a failing stage, a hanging one
# (TIMEOUT) and weights that differ are reported while the stages after them still run.
#   tests/gpu/test_check_dry_run.sh BUILD_DIR     (the CMake build folder holding attn)
# Needs bash, python3, coreutils, binutils (strip, readelf), xz or python3's lzma.
set -uo pipefail

build=${1:?usage: test_check_dry_run.sh BUILD_DIR}
# check.sh's own settings (limits, injected failures) must not leak in from the caller.
for v in "${!ATTN_CHECK_@}"; do unset "$v"; done
unset OUT ATTN_BUNDLE_CACHE
build="$(cd "$build" && pwd)" || exit 1
root="$(cd "$(dirname "$0")/../.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_check_dry_run: FAIL: $*" >&2; exit 1; }
# row FILE TITLE: the result column of the summary row whose stage column is TITLE.
row() { awk -F' \\| ' -v t="$2" '$2 == t {print $3}' "$1"; }
expect_row() {  # FILE TITLE RESULT [TEXT in its key figures]
  local line
  line="$(grep -F "| $2 |" "$1")" || fail "no row '$2' in $1"
  [ "$(row "$1" "$2")" = "$3" ] || fail "row '$2' is not $3: $line"
  [ -z "${4:-}" ] || [[ "$line" == *"$4"* ]] || fail "row '$2' lacks '$4': $line"
}
start=$(date +%s)

# ---- the size budget, without building for sm_90
bash "$root/scripts/gpu/bundle.sh" --estimate --build-dir "$build" > "$tmp/estimate.log" 2>&1 ||
  { cat "$tmp/estimate.log"; fail "bundle.sh --estimate failed"; }
grep -q '^estimate: .* MiB; limit 60 MiB$' "$tmp/estimate.log" || fail "no estimate line in $(cat "$tmp/estimate.log")"
if bash "$root/scripts/gpu/bundle.sh" --estimate --build-dir "$build" --limit-mib 1 > "$tmp/small.log" 2>&1; then
  fail "bundle.sh --estimate passed a 1 MiB limit"
fi
grep -q 'would exceed 1 MiB' "$tmp/small.log" || fail "no over-limit message: $(cat "$tmp/small.log")"

# ---- a bundle of this build with a tiny corpus (prepare_ding on the committed sample)
bash "$root/scripts/prepare_ding.sh" --input "$root/tests/data/ding_sample.txt" --out "$tmp/ding" \
  --valid 20 --test 20 > "$tmp/prepare.log" 2>&1 || { cat "$tmp/prepare.log"; fail "prepare_ding failed"; }
ATTN_BUNDLE_CACHE="$tmp/cache" bash "$root/scripts/gpu/bundle.sh" --from-build "$build" \
  --data "$tmp/ding" --vocab-size 200 \
  --out "$tmp/bundle" --no-compress > "$tmp/bundle.log" 2>&1 ||
  { cat "$tmp/bundle.log"; fail "bundle.sh --from-build failed"; }
for f in MANIFEST check.sh bin/attn bin/attn_tests data/ding/mix.en.xz data/ding/test.de.xz \
  data/ding/spm.model data/ding/vocab_size data/ding/train.bin.xz configs/demo.yaml \
  configs/base.yaml bench/bench_train.py; do
  [ -s "$tmp/bundle/$f" ] || fail "the bundle lacks $f"
done
ls "$tmp/bundle/lib/"libopenblas* > /dev/null 2>&1 || fail "the bundle's lib/ lacks OpenBLAS"
for f in "$tmp"/bundle/lib/*; do
  case "$(basename "$f")" in
    libc.so*|libstdc++*|libcudart*|libcublas*|libnccl*|libcudnn*)
      fail "the bundle's lib/ holds $(basename "$f"), which the GPU machine provides" ;;
  esac
done

# ---- the dry run: every stage passes or is skipped with a reason
bash "$tmp/bundle/check.sh" --dry-run --out "$tmp/out1" > "$tmp/run1.log" 2>&1
rc=$?
s1="$tmp/out1/summary.md"
[ -s "$s1" ] || { cat "$tmp/run1.log"; fail "no summary.md"; }
[ $rc = 0 ] || { cat "$tmp/run1.log"; fail "check.sh --dry-run exited with $rc"; }
[ "$(tail -1 "$tmp/run1.log")" = "$(tail -1 "$s1")" ] || fail "the table is not printed last"
[ "$(grep -c '^| [0-9] |' "$s1")" = 13 ] || fail "expected 13 stage rows: $(cat "$s1")"
expect_row "$s1" "nvidia-smi" SKIP "no GPU"
expect_row "$s1" "attn devices, libraries" PASS "cpu"
expect_row "$s1" "cuda tests (all cases)" PASS "All tests passed"
if [ -x "$build/tests/attn_cuda_tests" ]; then
  expect_row "$s1" "memcheck [small]" SKIP "9 [small] cases listed"
else
  expect_row "$s1" "memcheck [small]" SKIP "no attn_cuda_tests"
fi
if python3 -c "import torch" 2> /dev/null; then
  expect_row "$s1" "bench kernels vs PyTorch" PASS "attention torch/attn"
  expect_row "$s1" "bench train: attn, eager AMP" PASS "eager fp32"
else
  expect_row "$s1" "bench kernels vs PyTorch" SKIP "torch not importable"
fi
expect_row "$s1" "bench train: torch.compile" SKIP "dry run"
expect_row "$s1" "train on Ding" PASS "finished at step 10;"
expect_row "$s1" "train on Ding" PASS "the bundle's binarized corpus"
expect_row "$s1" "translate beam 4 + BLEU" PASS "BLEU "
expect_row "$s1" "determinism 2 x 20 steps" PASS "identical"
expect_row "$s1" "world of one (attn)" PASS "rank 0 of 1"
expect_row "$s1" "NCCL world of one" SKIP "no GPU"
tar -tzf "$tmp/out1/logs.tar.gz" > "$tmp/tar.txt" || fail "logs.tar.gz is not a gzipped tar"
grep -qx 'logs/train.log' "$tmp/tar.txt" || fail "logs.tar.gz lacks train.log: $(cat "$tmp/tar.txt")"
grep -q '^======== 6 train: PASS' "$tmp/out1/check.log" || fail "check.log lacks the train stage"
[ "$(find "$tmp/out1" -type f | wc -l)" -le 8 ] || fail "more files in OUT than the device tool brings back"

# ---- injected failures: a failing, a hanging and a nondeterministic stage; the rest still run
ATTN_CHECK_INJECT=devices:fail,bleu:hang,determinism:differ ATTN_CHECK_LIMIT_bleu=2 \
  bash "$tmp/bundle/check.sh" --dry-run --out "$tmp/out2" \
  --only devices,train,bleu,determinism,world1 > "$tmp/run2.log" 2>&1
rc=$?
s2="$tmp/out2/summary.md"
[ $rc = 1 ] || { cat "$tmp/run2.log"; fail "check.sh with failures exited with $rc, not 1"; }
[ "$(grep -c '^| [0-9] |' "$s2")" = 5 ] || fail "expected 5 rows with --only: $(cat "$s2")"
expect_row "$s2" "attn devices, libraries" FAIL "injected failure"
expect_row "$s2" "train on Ding" PASS
expect_row "$s2" "translate beam 4 + BLEU" TIMEOUT "no result within 2 s"
expect_row "$s2" "determinism 2 x 20 steps" FAIL "weights differ"
expect_row "$s2" "world of one (attn)" PASS
[ "$(tail -1 "$tmp/run2.log")" = "$(tail -1 "$s2")" ] || fail "the table is not printed last (failures)"

echo "test_check_dry_run: OK in $(( $(date +%s) - start )) s"
