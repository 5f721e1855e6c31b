#!/usr/bin/env bash
# A failed rank ends the whole job, two MPI ranks on the CPU (docs/RELIABILITY.md, "Rank
# failure"). Each case checks a non-zero exit, a line naming the rank, and the time taken:
#  1. killed: SIGKILL to one rank mid-run; mpirun names the rank; within 60 s; the latest
#     checkpoint stays loadable.
#  2. throws: ATTN_FAULT_INJECT=throw@step:3@rank:1; "attn: error: rank 1: ..."; within 30 s.
#  3. hangs: ATTN_FAULT_INJECT=hang@step:3@rank:1 with ATTN_MPI_TIMEOUT=3; rank 0's watchdog
#     prints "attn: error: rank 0: mpi ... did not complete within 3 s" and aborts; after 3 s
#     and within 30 s.
# mpirun's own --timeout is only a backstop: a case that needed it fails on its time bound.
# usage: test_rank_failure_mpi.sh ATTN_BINARY SOURCE_DIR
set -euo pipefail
source "$(dirname "$0")/mpi_common.sh" test_rank_failure_mpi 120 "$@"
unset ATTN_FAULT_INJECT ATTN_MPI_TIMEOUT

common=(-c "$src/configs/copy.yaml" --set train.log_every=5 --set train.valid_every=1000
        --set data.synthetic_train_size=4000 --set model.dropout=0.0)

# run NAME [VAR=VALUE...]: a 2-rank job that should fail; sets rc and elapsed (s), log in
# $tmp/NAME.log.
run() {
  local name=$1
  shift
  local start
  start=$(date +%s.%N)
  set +e
  env "$@" "${mpi[@]}" "$attn" train "${common[@]}" --set train.output_dir="$tmp/$name" \
    --set train.max_steps=1000 > "$tmp/$name.log" 2>&1
  rc=$?
  set -e
  elapsed=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" \
    "$start" "$(date +%s.%N)")
}
within() {  # within NAME SECONDS
  python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)" \
    "$elapsed" "$2" || fail "$1: the job took ${elapsed}s to end (bound $2 s)"
}

# 1. A killed rank.
"${mpi[@]}" "$attn" train "${common[@]}" --set train.output_dir="$tmp/killed" \
  --set train.max_steps=1000000 --set train.save_every=20 > "$tmp/killed.log" 2>&1 &
job=$!
for _ in $(seq 1 300); do
  [ -L "$tmp/killed/checkpoints/latest" ] && break
  sleep 0.1
done
[ -L "$tmp/killed/checkpoints/latest" ] || fail "killed: the run never saved a checkpoint"
victim=$(pgrep -f "train.output_dir=$tmp/killed" | while read -r p; do
  [ "$(cat /proc/"$p"/comm 2>/dev/null)" = attn ] && echo "$p"; done | tail -1)
[ -n "$victim" ] || fail "killed: no rank process found"
victim_rank=$(tr '\0' '\n' < /proc/"$victim"/environ | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
[ -n "$victim_rank" ] || fail "killed: cannot tell the rank of process $victim"
kill -9 "$victim"
start=$(date +%s)
set +e
wait "$job"
rc=$?
set -e
elapsed=$(( $(date +%s) - start ))
[ "$rc" -ne 0 ] || fail "killed: the job exited 0 after rank $victim_rank was killed"
within killed 60
grep -q "process rank $victim_rank .*signal 9" "$tmp/killed.log" ||
  fail "killed: no line names rank $victim_rank: $(tail -5 "$tmp/killed.log")"
"$attn" info "$tmp/killed/checkpoints/latest" > /dev/null ||
  fail "killed: latest not loadable after the kill"
echo "test_rank_failure_mpi: killed rank $victim_rank: rc=$rc after ${elapsed}s"

# 2. A rank that throws.
run throws ATTN_FAULT_INJECT=throw@step:3@rank:1
[ "$rc" -ne 0 ] || fail "throws: the job exited 0"
within throws 30
grep -q "^attn: error: rank 1: fault injected by ATTN_FAULT_INJECT (test only): throw at step 3 on rank 1$" \
  "$tmp/throws.log" || fail "throws: no error line naming rank 1: $(tail -5 "$tmp/throws.log")"
echo "test_rank_failure_mpi: rank 1 threw: rc=$rc after ${elapsed}s"

# 3. A rank that hangs: rank 0 waits in its next collective until the watchdog fires.
run hangs ATTN_FAULT_INJECT=hang@step:3@rank:1 ATTN_MPI_TIMEOUT=3
[ "$rc" -ne 0 ] || fail "hangs: the job exited 0"
within hangs 30
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= 3 else 1)" "$elapsed" ||
  fail "hangs: the job ended after ${elapsed}s, before the 3 s timeout"
grep -Eq "^attn: error: rank 0: mpi [a-z_]+ .* did not complete within 3 s .*ATTN_MPI_TIMEOUT" \
  "$tmp/hangs.log" || fail "hangs: no watchdog line naming rank 0: $(tail -5 "$tmp/hangs.log")"
echo "test_rank_failure_mpi: rank 1 hung, rank 0's watchdog ended the job: rc=$rc after ${elapsed}s"
echo "test_rank_failure_mpi: OK"
