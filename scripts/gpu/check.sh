#!/usr/bin/env bash
# One command on the GPU machine (docs/GPU.md). Copied into the bundle by scripts/gpu/bundle.sh
# and run there as `bash .gpu-bundle/check.sh`; it needs nothing but the bundle, the machine's
# CUDA driver and toolkit, and its python3 with PyTorch (for the benchmarks and NCCL check).
#
# Stages, in this order, each under its own time limit (`timeout`, whole process group), never
# stopping at a failure; the limits sum to 465 s, and a global budget (ATTN_CHECK_BUDGET, default
# 470 s) shortens a stage whose limit would overrun it, so the whole stays under 8 minutes:
#   1 smi            nvidia-smi                                               5 s
#   1 devices        attn devices; every bundled binary's libraries resolve  10 s
#   2 cuda_tests     attn_cuda_tests, every case, --durations yes             45 s
#   3 memcheck       compute-sanitizer memcheck on the [small] cases          20 s
#   3 racecheck      compute-sanitizer racecheck on the [small] cases         20 s
#   4 bench_kernels  bench_kernels.py (runs `attn bench kernels`, then PyTorch) 35 s
#   5 bench_train    bench_train.py: attn bench train + PyTorch eager AMP      40 s
#   5 bench_compile  bench_train.py: torch.compile on the same batches          50 s
#   6 train          attn train configs/demo.yaml on Ding, 2 minutes          160 s
#   6 bleu           attn translate --beam 4 of the test set, attn bleu        25 s
#   6 determinism    the same 20 steps twice; cmp of model.safetensors         35 s
#   7 world1         attn train under a one-rank launcher's variables          10 s
#   7 nccl           NCCL all-reduce in a world of one (PyTorch's NCCL)        10 s
# ([small] is a Catch2 tag on the small-shape attention, layer norm and cross-entropy cases.)
#
# --dry-run runs the same stages on a CPU with tiny shapes (CI: tests/gpu/test_check_dry_run.sh):
# smi SKIP; devices as above; cuda_tests = attn_tests "[attention],[norm],[loss]"; the
# sanitizer stages list the [small] cases (FAIL when none) and SKIP; bench_kernels.py and
# bench_train.py --dry-run (no torch.compile: SKIP, minutes on a CPU); a 10-step run of a tiny
# model on the bundle's data with translate + BLEU; determinism of 20 CPU steps; world1 on the
# CPU; nccl SKIP.
#
# Results: PASS, FAIL, TIMEOUT or SKIP (exit status 77 of a stage), with key figures and seconds,
# printed as a table last and written to $OUT/summary.md after every stage. $OUT (the device
# tool's output folder; default ./gpu-logs) gets three files, since that tool brings back only a
# few: summary.md, check.log (every stage's full log, appended as each stage ends) and
# logs.tar.gz (per-stage logs, benchmark JSON/markdown, train.log, metrics, hypotheses). The
# exit status is 1 when a stage failed or timed out, else 0.
#
#   bash .gpu-bundle/check.sh [--dry-run] [--out DIR] [--only ID,ID,...]
# Environment:
#   ATTN_CHECK_LIMIT_<id>=S   a stage's time limit in seconds (e.g. ATTN_CHECK_LIMIT_train=200)
#   ATTN_CHECK_BUDGET=S       the whole run's budget (default 470; dry run 240)
#   ATTN_CHECK_TRAIN_TIME     train.max_time of the train stage (default 2m)
#   ATTN_CHECK_INJECT=id:fail,id:hang,determinism:differ   make stages fail, hang, or the
#                             determinism stage's second run use another seed (tests of this script)
#   ATTN_CHECK_KEEP=1         keep the work folder (default: removed; logs.tar.gz has the logs)
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dry_run=0
out="${OUT:-$PWD/gpu-logs}"
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --out) [ $# -ge 2 ] || { echo "check.sh: --out needs a folder" >&2; exit 2; }; out=$2; shift ;;
    --only) [ $# -ge 2 ] || { echo "check.sh: --only needs stage ids" >&2; exit 2; }; only=$2; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# id|stage number|title|limit on a GPU|limit in the dry run
STAGES=(
  "smi|1|nvidia-smi|5|5"
  "devices|1|attn devices, libraries|10|10"
  "cuda_tests|2|cuda tests (all cases)|45|30"
  "memcheck|3|memcheck [small]|20|10"
  "racecheck|3|racecheck [small]|20|10"
  "bench_kernels|4|bench kernels vs PyTorch|35|40"
  "bench_train|5|bench train: attn, eager AMP|40|40"
  "bench_compile|5|bench train: torch.compile|50|10"
  "train|6|train on Ding|160|30"
  "bleu|6|translate beam 4 + BLEU|25|20"
  "determinism|6|determinism 2 x 20 steps|35|30"
  "world1|7|world of one (attn)|10|15"
  "nccl|7|NCCL world of one|10|10"
)

for need in timeout python3 awk sed tar; do
  command -v "$need" > /dev/null || { echo "check.sh: '$need' is not on PATH" >&2; exit 2; }
done
[ -f "$here/MANIFEST" ] && [ -d "$here/bin" ] || {
  echo "check.sh: $here is not a bundle (no MANIFEST, bin/): make one with scripts/gpu/bundle.sh and run its check.sh" >&2
  exit 2
}
if [ -n "$only" ]; then
  for id in ${only//,/ }; do
    found=0
    for spec in "${STAGES[@]}"; do [ "${spec%%|*}" = "$id" ] && found=1; done
    [ "$found" = 1 ] || { echo "check.sh: --only: no stage '$id'" >&2; exit 2; }
  done
fi

mkdir -p "$out" || { echo "check.sh: cannot create $out" >&2; exit 2; }
out="$(cd "$out" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/attn-check.XXXXXX")" || { echo "check.sh: mktemp failed" >&2; exit 2; }
mkdir -p "$work/logs" "$work/figs"
t0=$(date +%s)
budget=${ATTN_CHECK_BUDGET:-$([ "$dry_run" = 1 ] && echo 240 || echo 470)}
rm -f "$out/summary.md" "$out/check.log" "$out/logs.tar.gz"

export W="$work" DRY="$dry_run" FIGS="$work/figs"
export ATTN="$work/bin/attn" TESTS="$work/bin/attn_tests" CUDA_TESTS="$work/bin/attn_cuda_tests"
export DATA="$work/data" CONFIGS="$here/configs" BENCH="$here/bench"
export TRAIN_TIME="${ATTN_CHECK_TRAIN_TIME:-2m}"
export PYTHONUNBUFFERED=1
# A CPU run shares its cores with nothing useful: one OpenMP thread that sleeps while it waits.
if [ "$dry_run" = 1 ]; then
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
fi

# ---- libraries: the bundle's lib/, PyTorch's nvidia/*/lib (cuDNN, NCCL, cuBLAS, cudart of the
# pip packages; cuDNN and NCCL may exist nowhere else there), then the CUDA toolkit's. The pip
# libraries go before the toolkit's because the Python stages run under the same
# LD_LIBRARY_PATH, which overrides PyTorch's own RUNPATH: PyTorch must get the CUDA libraries
# it was built with, and attn, built against CUDA 13.0, runs on any 13.x.
pylibs="$(python3 - 2>/dev/null <<'PY'
import glob, os
try:
    import nvidia
    dirs = []
    for root in nvidia.__path__:
        dirs += sorted(glob.glob(os.path.join(root, "*", "lib")))
    print(":".join(d for d in dirs if os.path.isdir(d)))
except Exception:
    pass
PY
)"
export LD_LIBRARY_PATH="$work/lib${pylibs:+:$pylibs}:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ---- helpers for the stages (each stage runs in `bash -c` under timeout; they are exported)
fig() { printf '%s\n' "$*" > "$FIGS/$STAGE_ID"; }
skip() { fig "$*"; exit 77; }
die() { echo "check: $*" >&2; fig "$*"; exit 1; }
have_torch() { python3 -c "import torch" > /dev/null 2>&1; }
# Data of the train stages: the bundle's corpus, decompressed once.
data_ready() { [ -s "$DATA/mix.en" ] || die "no corpus in $DATA (unpacking failed: see check.sh's own output)"; }
# attn train with the demo config on the bundle's corpus and vocabulary; extra --set's follow.
attn_train() {
  local outdir=$1
  shift
  local -a sets=(
    --set "train.output_dir=$outdir" --set "data.train_src=$DATA/mix.en"
    --set "data.train_tgt=$DATA/mix.de" --set "data.valid_src=$DATA/valid.en"
    --set "data.valid_tgt=$DATA/valid.de" --set "data.spm_model=$DATA/spm.model"
    --set "data.vocab_size=$(cat "$DATA/vocab_size")" --set train.average_last=0)
  if [ "$DRY" = 1 ]; then
    sets+=(--set train.device=cpu --set model.d_model=32 --set model.heads=2 --set model.d_ff=64
      --set model.encoder_layers=1 --set model.decoder_layers=1 --set data.max_tokens=500)
  else
    # GPU-sized: batches of 8,000 tokens rather than the 2-core CPU's 2,500.
    sets+=(--set train.device=cuda --set data.max_tokens=8000)
  fi
  # The bundle's binarized corpus (made with the same vocabulary and data.max_len; a stale one
  # would be rebuilt) saves each run tokenizing the corpus.
  if [ -s "$DATA/train.bin" ] && [ ! -e "$outdir/cache/train.bin" ]; then
    mkdir -p "$outdir/cache" && cp "$DATA/train.bin" "$DATA/valid.bin" "$outdir/cache/"
  fi
  echo "+ attn train -c $CONFIGS/demo.yaml ${sets[*]} $*"
  "$ATTN" train -c "$CONFIGS/demo.yaml" "${sets[@]}" "$@"
}
# Key figures of a train.log: where it ended, the last logged step's loss and speed, the last
# validation loss ("step N/M | loss L | ... | T tgt tok/s | ...", "valid at step N | loss L").
last_step() {
  local end step valid
  end="$(grep -oE '(stopped|finished) at step [0-9]+' "$1" | tail -1)"
  step="$(grep -E '\] step [0-9]+/' "$1" | tail -1 |
    sed -E 's/.*step ([0-9]+)\/[0-9]+ \| loss ([0-9.]+).*\| ([0-9]+) tgt tok\/s.*/loss \2 and \3 tgt tok\/s at step \1/')"
  valid="$(grep -oE 'valid at step [0-9]+ \| loss [0-9.]+' "$1" | tail -1 | sed 's/ |//')"
  echo "${end:-no end line}${step:+; $step}${valid:+; $valid}"
}
stage_main() {
  STAGE_ID=$1
  case ",${ATTN_CHECK_INJECT:-}," in
    *",$1:fail,"*) echo "check: failure injected by ATTN_CHECK_INJECT"; fig "injected failure"; exit 1 ;;
    *",$1:hang,"*) echo "check: hang injected by ATTN_CHECK_INJECT"; fig "injected hang"; sleep 100000; exit 1 ;;
  esac
  "stage_$1"
}

# ---- stages -----------------------------------------------------------------------------------
stage_smi() {
  [ "$DRY" = 1 ] && skip "dry run: no GPU"
  nvidia-smi || die "nvidia-smi failed"
  fig "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
}

stage_devices() {
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  local b bad=""
  for b in "$ATTN" "$TESTS" "$CUDA_TESTS"; do
    [ -e "$b" ] || { echo "(no $b)"; continue; }
    echo "== ldd $b"
    ldd "$b" > "$W/ldd.txt" 2>&1
    cat "$W/ldd.txt"
    bad="$bad $(awk '/not found/ {print $1}' "$W/ldd.txt" | tr '\n' ' ')"
  done
  echo "== attn devices"
  "$ATTN" devices > "$W/devices.txt" 2>&1
  local rc=$?
  cat "$W/devices.txt"
  bad="$(echo "$bad" | tr -s ' ' '\n' | sort -u | tr '\n' ' ' | sed 's/^ *//; s/ *$//')"
  [ -z "$bad" ] || die "unresolved libraries: $bad"
  [ $rc = 0 ] || die "attn devices exited with $rc: $(tail -1 "$W/devices.txt")"
  if [ "$DRY" = 1 ]; then
    grep -q '^cpu' "$W/devices.txt" || die "attn devices lists no cpu"
    fig "$(head -1 "$W/devices.txt")"
  else
    grep -q '^cuda:0' "$W/devices.txt" || die "attn devices lists no cuda:0: $(grep cuda "$W/devices.txt" | head -1)"
    fig "$(grep '^cuda:0' "$W/devices.txt" | head -1)"
  fi
}

# Catch2's summary line and the slowest case of a --durations log.
catch_figs() {
  local summary slow
  summary="$(grep -E '^(All tests passed|test cases:)' "$1" | tail -1)"
  slow="$(grep -E '^[0-9]+\.[0-9]+ s: ' "$1" | sort -rn | head -1)"
  echo "${summary:-no Catch2 summary}${slow:+; slowest ${slow%% s:*} s}"
}

stage_cuda_tests() {
  local log="$W/logs/cuda_tests.catch.txt" rc
  if [ "$DRY" = 1 ]; then
    # tee: a stage killed at its limit still has every finished case in its log.
    echo "+ attn_tests [attention],[norm],[loss] --durations yes (the CPU analogue)"
    "$TESTS" "[attention],[norm],[loss]" --durations yes 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
  else
    [ -x "$CUDA_TESTS" ] || die "no attn_cuda_tests in the bundle"
    echo "+ attn_cuda_tests --durations yes"
    "$CUDA_TESTS" --durations yes 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
  fi
  fig "$(catch_figs "$log")"
  [ $rc = 0 ] || exit 1
}

sanitize() {
  local tool=$1 n
  if [ "$DRY" = 1 ]; then
    [ -x "$CUDA_TESTS" ] || skip "CPU-only build: no attn_cuda_tests to list"
    "$CUDA_TESTS" "[small]" --list-test-names-only > "$W/small.txt" 2>&1
    cat "$W/small.txt"
    n=$(grep -c 'cuda' "$W/small.txt")
    [ "$n" -gt 0 ] || die "no test case has the [small] tag"
    skip "$n [small] cases listed; compute-sanitizer needs a GPU"
  fi
  local cs
  cs="$(command -v compute-sanitizer || true)"
  for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    [ -n "$cs" ] || { [ -x "$c" ] && cs=$c; }
  done
  [ -n "$cs" ] || die "compute-sanitizer not found"
  local log="$W/logs/$tool.sanitizer.txt"
  echo "+ $cs --tool $tool --error-exitcode 1 attn_cuda_tests [small]"
  "$cs" --tool "$tool" --error-exitcode 1 "$CUDA_TESTS" "[small]" --durations yes 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local s
  s="$(grep -E '(ERROR|RACECHECK) SUMMARY' "$log" | tail -1 | sed 's/^========= //')"
  fig "${s:-no sanitizer summary}; $(catch_figs "$log" | cut -d';' -f1)"
  [ $rc = 0 ] || exit 1
}
stage_memcheck() { sanitize memcheck; }
stage_racecheck() { sanitize racecheck; }

stage_bench_kernels() {
  if ! have_torch; then
    "$ATTN" bench kernels --device cpu --quick --json "$W/logs/attn_bench_kernels.json" || die "attn bench kernels failed"
    skip "torch not importable: ran attn bench kernels --device cpu --quick only"
  fi
  local -a args=(--out "$W/logs/bench_kernels.md")
  if [ "$DRY" = 1 ]; then args+=(--dry-run); else args+=(--device cuda:0); fi
  echo "+ bench_kernels.py $ATTN ${args[*]}"
  python3 "$BENCH/bench_kernels.py" "$ATTN" "${args[@]}" || die "bench_kernels.py failed"
  fig "$(python3 - "$W/logs/bench_kernels.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
a, m = d["attn"], d["meta"]
rows = {r["name"]: r for r in a["results"]}
out = [f"attn copy {a.get('copy_gbps', 0):.3g} GB/s, matmul {a.get('matmul_tflops', 0):.3g} TFLOP/s"]
if "torch_matmul_tflops" in m:
    out.append(f"torch matmul {m['torch_matmul_tflops']:.3g}")
t = {r["name"]: r for r in d["torch"]}
ratios = [t[n]["ms"] / rows[n]["ms"] for n in rows if n.startswith("attention")
          and rows[n].get("ms") and t.get(n, {}).get("ms")]
if ratios:
    out.append(f"attention torch/attn {min(ratios):.2f}-{max(ratios):.2f}x")
print("; ".join(out))
PY
)"
}

# Batches shared by both bench_train stages (same lengths, same token ids on both sides).
bench_batches() {
  [ -s "$W/batches.json" ] && return 0
  if [ "$DRY" = 1 ]; then
    "$ATTN" bench batches -o "$W/batches.json" --tokens 256 --count 4 --vocab 64
  else
    "$ATTN" bench batches -o "$W/batches.json" --tokens 25000 --count 16 --vocab 32000
  fi
}
train_figs() {
  python3 - "$@" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rows = {r["name"]: r for r in d["rows"]}
base = rows.get("attn", {}).get("tokens_per_s")
if base is None and len(sys.argv) > 2:  # the attn row of the other bench_train stage
    try:
        base = {r["name"]: r for r in json.load(open(sys.argv[2]))["rows"]}["attn"]["tokens_per_s"]
    except Exception:
        base = None
peak = d["matmul_tflops"] * 1e12
out = []
for name, r in rows.items():
    if name != "attn" and len(sys.argv) > 2:
        if "compile" not in name:
            continue  # the eager row of the torch.compile stage: reported by the other stage
    mem = r.get("peak_mem_bytes")
    s = f"{name.replace('PyTorch ', '')} {r['tokens_per_s']:,.0f} tok/s, MFU {100 * r['flops_per_s'] / peak:.1f}%"
    if mem:
        s += f", peak {mem / 2**20:,.0f} MiB"
    if base and name != "attn":
        s += f", attn/this {base / r['tokens_per_s']:.2f}x"
    out.append(s)
print("; ".join(out))
PY
}

stage_bench_train() {
  have_torch || skip "torch not importable"
  bench_batches || die "attn bench batches failed"
  local -a args=(--attn "$ATTN" --config "$CONFIGS/base.yaml" --batches "$W/batches.json"
    --no-compile --json-out "$W/logs/bench_train.json")
  [ "$DRY" = 1 ] && args+=(--dry-run)
  echo "+ bench_train.py ${args[*]}"
  python3 "$BENCH/bench_train.py" "${args[@]}" || die "bench_train.py failed"
  python3 -c "import json,sys; r=[x['name'] for x in json.load(open(sys.argv[1]))['rows']]; sys.exit('attn' not in r)" \
    "$W/logs/bench_train.json" || die "no attn row: attn bench train failed (see the log)"
  fig "$(train_figs "$W/logs/bench_train.json")"
}

stage_bench_compile() {
  [ "$DRY" = 1 ] && skip "dry run: torch.compile on a CPU takes minutes"
  have_torch || skip "torch not importable"
  bench_batches || die "attn bench batches failed"
  # One dynamic-shape compilation for the 16 batch shapes (the default recompiles once more).
  local -a args=(--attn "$ATTN" --config "$CONFIGS/base.yaml" --batches "$W/batches.json"
    --no-attn --compile-dynamic true --json-out "$W/logs/bench_compile.json")
  echo "+ bench_train.py ${args[*]}"
  python3 "$BENCH/bench_train.py" "${args[@]}" || die "bench_train.py (torch.compile) failed"
  fig "$(train_figs "$W/logs/bench_compile.json" "$W/logs/bench_train.json")"
}

stage_train() {
  data_ready
  local -a extra
  if [ "$DRY" = 1 ]; then
    extra=(--set train.max_steps=10 --set train.log_every=5 --set train.valid_every=10
      --set train.save_every=10)
  else
    extra=(--set "train.max_time=$TRAIN_TIME" --set train.log_every=500
      --set train.valid_every=2000 --set train.save_every=2000)
  fi
  attn_train "$W/run" "${extra[@]}"
  local rc=$?
  cp "$W/run/train.log" "$W/run/metrics.jsonl" "$W/logs/" 2> /dev/null
  local f
  f="$(last_step "$W/run/train.log" 2> /dev/null)"
  [ $rc = 0 ] || die "attn train exited with $rc ($f)"
  local cached="corpus binarized here"
  grep -q 'data train: .*\[cache\]' "$W/run/train.log" && cached="the bundle's binarized corpus"
  fig "$f ($([ "$DRY" = 1 ] && echo "tiny model on the CPU" || echo "train.max_time $TRAIN_TIME"); $cached)"
}

stage_bleu() {
  data_ready
  local ck="$W/run/checkpoints/latest"
  [ -e "$ck" ] || skip "no checkpoint: the train stage did not save one"
  # The whole test set on the GPU; its first 100 sentences in the dry run (a CPU's beam search
  # of 2,000 sentences takes over 15 s).
  local src="$DATA/test.en" ref_file="$DATA/test.de"
  if [ "$DRY" = 1 ]; then
    head -n 100 "$DATA/test.en" > "$W/test100.en" && head -n 100 "$DATA/test.de" > "$W/test100.de"
    src="$W/test100.en" ref_file="$W/test100.de"
  fi
  local t=$SECONDS
  echo "+ attn translate -m $ck --beam 4 -i $src -o $W/logs/test.hyp.de"
  "$ATTN" translate -m "$ck" --beam 4 -i "$src" -o "$W/logs/test.hyp.de" || die "attn translate failed"
  t=$((SECONDS - t))
  "$ATTN" bleu "$W/logs/test.hyp.de" "$ref_file" | tee "$W/bleu.txt" || die "attn bleu failed"
  local score ref="" n
  score="$(awk '/^BLEU = / {print $3; exit}' "$W/bleu.txt")"
  n=$(wc -l < "$src")
  if python3 -c "import sacrebleu" 2> /dev/null; then
    ref="$(python3 -m sacrebleu "$ref_file" -i "$W/logs/test.hyp.de" -b -w 2 2> /dev/null)"
    echo "sacreBLEU: $ref"
  fi
  fig "BLEU $score${ref:+ (sacreBLEU $ref)}, $n sentences, translate ${t} s"
  [ -n "$score" ] || die "no BLEU line"
  if [ -n "$ref" ] && [ "$(printf '%.2f' "$ref")" != "$(printf '%.2f' "$score")" ]; then
    die "attn bleu $score != sacreBLEU $ref"
  fi
}

stage_determinism() {
  data_ready
  local r seed=7
  for r in detA detB; do
    # determinism:differ (tests of this script): the second run takes another seed.
    [ "$r" = detB ] && [[ ",${ATTN_CHECK_INJECT:-}," == *",determinism:differ,"* ]] && seed=8
    attn_train "$W/$r" --set train.max_steps=20 --set train.save_every=20 \
      --set train.valid_every=1000 --set train.log_every=10 --set "train.seed=$seed" ||
      die "attn train ($r) failed"
  done
  local a="$W/detA/checkpoints/latest/model.safetensors" b="$W/detB/checkpoints/latest/model.safetensors"
  [ -s "$a" ] && [ -s "$b" ] || die "no model.safetensors after 20 steps"
  if cmp "$a" "$b"; then
    fig "model.safetensors identical ($(wc -c < "$a") bytes) after 20 steps"
  else
    die "weights differ after 20 identical steps: $(cmp "$a" "$b" 2>&1 | head -1 | sed 's/.*differ: //')"
  fi
}

stage_world1() {
  data_ready
  local nccl
  nccl="$(ldd "$ATTN" | awk '/libnccl/ {print $3}')"
  [ "$nccl" != "not" ] || die "attn's libnccl does not resolve"
  # The variables `mpirun -np 1` sets: detect_launch sees a launcher and a world of one, which
  # make_communicator serves without MPI or NCCL (src/dist/communicator.cc).
  OMPI_COMM_WORLD_SIZE=1 OMPI_COMM_WORLD_RANK=0 OMPI_COMM_WORLD_LOCAL_RANK=0 \
    attn_train "$W/world1" --set train.max_steps=5 --set train.save_every=5 \
    --set train.valid_every=1000 --set train.log_every=5 || die "attn train under OMPI_COMM_WORLD_SIZE=1 failed"
  fig "5 steps as mpirun rank 0 of 1 (single communicator: attn uses NCCL only for >1 rank); libnccl: ${nccl:-not linked}"
}

stage_nccl() {
  [ "$DRY" = 1 ] && skip "dry run: no GPU (attn itself takes NCCL only for >1 rank)"
  have_torch || skip "torch not importable"
  python3 - <<'PY' || die "NCCL all-reduce in a world of one failed"
import os, tempfile, torch, torch.distributed as dist
init = "file://" + os.path.join(tempfile.mkdtemp(), "rendezvous")
dist.init_process_group("nccl", init_method=init, world_size=1, rank=0)
x = torch.arange(1 << 20, dtype=torch.float32, device="cuda")
dist.all_reduce(x)
torch.cuda.synchronize()
assert torch.equal(x, torch.arange(1 << 20, dtype=torch.float32, device="cuda"))
v = torch.cuda.nccl.version()
print("NCCL", ".".join(map(str, v)) if isinstance(v, tuple) else v, "all_reduce of 1M floats OK")
dist.destroy_process_group()
PY
  local v
  v="$(python3 -c 'import torch; v=torch.cuda.nccl.version(); print(".".join(map(str,v)) if isinstance(v,tuple) else v)')"
  fig "PyTorch's NCCL $v: all_reduce, world of one; attn's own NCCL path needs 2 ranks + mpirun"
}

export -f fig skip die have_torch data_ready attn_train last_step stage_main catch_figs sanitize \
  bench_batches train_figs stage_smi stage_devices stage_cuda_tests stage_memcheck \
  stage_racecheck stage_bench_kernels stage_bench_train stage_bench_compile stage_train \
  stage_bleu stage_determinism stage_world1 stage_nccl

# ---- unpack: bin/, lib/ and data/ding/ of the bundle into the work folder; *.xz decompressed
# (in parallel), anything else linked. Missing pieces show up as failing stages.
unpack() {  # SRC DEST
  if [[ "$1" != *.xz ]]; then ln -s "$1" "$2"
  elif command -v xz > /dev/null; then xz -dc "$1" > "$2"
  else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"
  fi || echo "check.sh: could not unpack $1" >&2
}
unpack_start=$(date +%s.%N)
mkdir -p "$work/bin" "$work/lib" "$DATA"
for pair in bin:bin lib:lib data/ding:data; do
  for f in "$here/${pair%%:*}"/*; do
    [ -f "$f" ] || continue
    unpack "$f" "$work/${pair#*:}/$(basename "$f" .xz)" &
  done
done
wait
chmod +x "$work"/bin/* 2> /dev/null
unpack_s=$(awk -v s="$unpack_start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
echo "[check] unpacked the bundle into $work in $unpack_s s"

# ---- run ----------------------------------------------------------------------------------------
rows=()
failed=0
summary() {
  {
    echo "# attn GPU check: $([ "$dry_run" = 1 ] && echo "DRY RUN on a CPU (no GPU used)" || echo "GPU run")"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), host $(uname -n), bundle: $(head -1 "$here/MANIFEST" 2> /dev/null)"
    echo "elapsed $(( $(date +%s) - t0 )) s of a $budget s budget (unpacking $unpack_s s); logs: check.log, logs.tar.gz"
    echo
    echo "| # | stage | result | key figures | seconds |"
    echo "|---|---|---|---|---:|"
    printf '%s\n' "${rows[@]}"
  } > "$out/summary.md"
}
for spec in "${STAGES[@]}"; do
  IFS='|' read -r id num title gpu_limit dry_limit <<< "$spec"
  if [ -n "$only" ] && ! [[ ",$only," == *",$id,"* ]]; then continue; fi
  limit=$([ "$dry_run" = 1 ] && echo "$dry_limit" || echo "$gpu_limit")
  override="ATTN_CHECK_LIMIT_$id"
  limit=${!override:-$limit}
  left=$((budget - ($(date +%s) - t0)))
  log="$work/logs/$(printf '%02d' $((${#rows[@]} + 1)))-$id.log"
  start=$(date +%s.%N)
  if [ "$left" -lt 3 ]; then
    result=SKIP figs="the $budget s budget is spent"
    echo "$figs" > "$log"
  else
    [ "$limit" -gt "$left" ] && limit=$left
    echo "[check $(( $(date +%s) - t0 ))s] $num $id: running (limit $limit s)"
    timeout --kill-after=5 "$limit" bash -c 'stage_main "$1"' check "$id" > "$log" 2>&1
    rc=$?
    figs="$(head -1 "$work/figs/$id" 2> /dev/null)"
    case $rc in
      0) result=PASS ;;
      77) result=SKIP ;;
      124|137) result=TIMEOUT figs="no result within $limit s${figs:+; $figs}" ;;
      *) result=FAIL
         # The log's last words (attn's one-line error, a Python exception) say why.
         last="$(grep -v -e '^\s*$' -e '^check: ' "$log" | tail -1 | cut -c1-160)"
         figs="${figs:-exit $rc}${last:+; log: $last}" ;;
    esac
  fi
  secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
  case $result in FAIL|TIMEOUT) failed=1 ;; esac
  figs="${figs//|//}"
  rows+=("| $num | $title | $result | ${figs:-} | $secs |")
  echo "[check $(( $(date +%s) - t0 ))s] $num $id: $result ($secs s) $figs"
  { echo "======== $num $id: $result ($secs s, limit $limit s)"; cat "$log"; echo; } >> "$out/check.log"
  summary
done

tar -czf "$out/logs.tar.gz" -C "$work" logs 2> /dev/null ||
  echo "check.sh: could not write $out/logs.tar.gz" >&2
echo
cat "$out/summary.md"
if [ "${ATTN_CHECK_KEEP:-0}" = 1 ]; then
  echo "work folder kept: $work"
else
  rm -rf "$work"
fi
exit $failed
