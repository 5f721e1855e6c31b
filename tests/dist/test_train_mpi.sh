#!/usr/bin/env bash
# Data-parallel training on two MPI ranks on the CPU:
#  1. 2 ranks equal 1 rank on the same global batches (1 rank accumulates the two batches the
#     ranks see with train.update_freq=2): parameters within 1e-6 relative after 20 steps,
#     logged losses equal.
#  1b. all-reduce overlapped with backward (several buckets) equals all-reduce after it.
#  2. 2-rank checkpoint + resume equals an uninterrupted 2-rank run (bitwise).
# A rank that is killed, throws or hangs: test_rank_failure_mpi.sh.
# usage: test_train_mpi.sh ATTN_BINARY SOURCE_DIR
set -euo pipefail
source "$(dirname "$0")/mpi_common.sh" test_train_mpi 300 "$@"

common=(-c "$src/configs/copy.yaml" --set train.max_steps=20 --set train.log_every=5
        --set train.valid_every=10 --set train.save_every=10 --set data.synthetic_train_size=4000
        --set model.dropout=0.0)

compare() {  # compare A B TOLERANCE: model parameters of two runs' latest checkpoints
  python3 - "$1" "$2" "$3" <<'PY'
import array, json, struct, sys
def load(run):
    b = open(run + "/checkpoints/latest/model.safetensors", "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); d = b[8 + n:]
    out = {}
    for k, v in h.items():
        if k == "__metadata__": continue
        s, e = v["data_offsets"]; a = array.array("f"); a.frombytes(d[s:e]); out[k] = a
    return out
a, b, tol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
assert a.keys() == b.keys(), "parameter names differ"
worst = max(abs(x - y) / max(abs(x), abs(y), 1e-3) for k in a for x, y in zip(a[k], b[k]))
print(f"max relative difference {worst:.3g} (tolerance {tol:g})")
sys.exit(0 if worst <= tol else 1)
PY
}
losses() { python3 -c "
import json,sys
print(' '.join('%.5f' % j['loss'] for j in map(json.loads, open(sys.argv[1])) if j['type']=='train'))" "$1/metrics.jsonl"; }

# 1. Two ranks vs one rank accumulating the same two batches.
"$attn" train "${common[@]}" --set train.output_dir="$tmp/one" --set train.update_freq=2 \
  > "$tmp/one.log" 2>&1 || fail "1-rank run failed: $(tail -3 "$tmp/one.log")"
"${mpi[@]}" "$attn" train "${common[@]}" --set train.output_dir="$tmp/two" \
  --set train.check_replicas_every=5 > "$tmp/two.log" 2>&1 || fail "2-rank run failed: $(tail -3 "$tmp/two.log")"
grep -q "data parallel: 2 ranks (mpi backend" "$tmp/two.log" || fail "2-rank run did not use MPI"
compare "$tmp/one" "$tmp/two" 1e-6 || fail "2 ranks and 1 rank differ"
[ "$(losses "$tmp/one")" = "$(losses "$tmp/two")" ] ||
  fail "logged losses differ: $(losses "$tmp/one") vs $(losses "$tmp/two")"

# 1b. Gradient buckets reduced during backward (the default, here ~16 KiB buckets so the
#     model needs several) equal one all-reduce after backward, bitwise.
"${mpi[@]}" "$attn" train "${common[@]}" --set train.output_dir="$tmp/after" \
  --set train.overlap_allreduce=false > "$tmp/after.log" 2>&1 || fail "non-overlapped run failed"
"${mpi[@]}" "$attn" train "${common[@]}" --set train.output_dir="$tmp/small" \
  --set train.bucket_mb=0.016 > "$tmp/small.log" 2>&1 || fail "small-bucket run failed: $(tail -3 "$tmp/small.log")"
compare "$tmp/two" "$tmp/after" 0 || fail "overlapped and non-overlapped all-reduce differ"
compare "$tmp/two" "$tmp/small" 0 || fail "small buckets differ from the default"

# 2. Checkpoint and resume on two ranks equals the uninterrupted run.
"${mpi[@]}" "$attn" train "${common[@]}" --set train.output_dir="$tmp/resumed" \
  --set train.max_steps=10 > "$tmp/r1.log" 2>&1 || fail "first half failed"
"${mpi[@]}" "$attn" train "${common[@]}" --set train.output_dir="$tmp/resumed" \
  > "$tmp/r2.log" 2>&1 || fail "resumed half failed: $(tail -3 "$tmp/r2.log")"
grep -q "resuming from" "$tmp/r2.log" || fail "second run did not resume"
compare "$tmp/two" "$tmp/resumed" 0 || fail "resumed 2-rank run differs from the straight one"
[ "$(losses "$tmp/two")" = "$(losses "$tmp/resumed")" ] || fail "resumed losses differ"

# 3. A cooldown bounded by train.max_time: both ranks take the rate from rank 0's clock, so the
#    replicas stay bitwise identical (checked after every step; with each rank's own clock the
#    rates, and so the weights, would differ).
"${mpi[@]}" "$attn" train -c "$src/configs/copy.yaml" --set train.output_dir="$tmp/cool" \
  --set train.max_steps=100000000 --set train.max_time=3s --set train.cooldown=0.5 \
  --set train.check_replicas_every=1 --set train.valid_every=100000 --set train.save_every=100000 \
  > "$tmp/cool.log" 2>&1 || fail "time-bound cooldown run failed: $(tail -3 "$tmp/cool.log")"
grep -q "train.max_time (3s) reached" "$tmp/cool.log" || fail "cooldown run did not stop at max_time"

echo "test_train_mpi: OK"
