#!/bin/bash
# CPU overlap benchmark: 2 MPI ranks x 1 OpenMP thread, same config, alternating modes; the
# step time is the wall time of steps 11-40 from metrics.jsonl (elapsed_s at step 40 - at 10).
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive OMPI_MCA_btl_vader_single_copy_mechanism=none
common=(-c configs/copy.yaml --set model.d_model=256 --set model.d_ff=1024 --set model.heads=4
  --set model.encoder_layers=3 --set model.decoder_layers=3 --set train.max_steps=40 --set train.log_every=10
  --set train.valid_every=1000 --set train.save_every=1000 --set data.synthetic_train_size=20000 --set data.max_tokens=1024
  --set train.bucket_mb=1)
for rep in 1 2; do
for mode in true false; do
  rm -rf /tmp/ob_$mode
  mpirun --oversubscribe --allow-run-as-root -np 2 ${ATTN:-./build/attn} train "${common[@]}" --set train.output_dir=/tmp/ob_$mode --set train.overlap_allreduce=$mode > /tmp/ob_$mode.log 2>&1
  python3 - "$mode" <<'PY'
import json,sys
m=[json.loads(l) for l in open(f"/tmp/ob_{sys.argv[1]}/metrics.jsonl") if '"train"' in l]
e={j["step"]:j["elapsed_s"] for j in m}
print(f"overlap={sys.argv[1]}: {(e[40]-e[10])/30*1000:.1f} ms/step (steps 11-40)")
PY
done
done
