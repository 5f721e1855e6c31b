#!/usr/bin/env bash
# The main job on a fresh Debian machine: install dependencies, build, prepare the Ding
# EN->DE corpus, train configs/demo.yaml on the best available device (bounded by
# train.max_time), translate the test set with beam 4, score it with attn bleu / chrf
# (sacreBLEU-identical) and draw the training curves (attn plot; a PNG as well when
# rsvg-convert is there). Rerunning resumes or reuses what is already there.
#   ATTN_BUILD_DIR  build directory (default: build with a GPU, build-cpu without)
#   ATTN_DEMO_RUN   run directory (default: runs/demo)
#   extra arguments are passed to `attn train` (e.g. --set train.max_time=5m)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
stamp() { echo "[demo $(( $(date +%s) - start ))s] $*"; }

stamp "installing dependencies"
bash scripts/setup.sh

# Without a visible GPU the demo trains on the CPU, so it builds without the CUDA kernels (most
# of the build time on a small machine), in a build directory of its own so that the test
# command's build (scripts/test.sh, CUDA sources included) is left as it is.
if nvidia-smi -L > /dev/null 2>&1; then
  build_dir="${ATTN_BUILD_DIR:-build}"
  cuda=AUTO
else
  build_dir="${ATTN_BUILD_DIR:-build-cpu}"
  cuda=OFF
fi
stamp "building attn in $build_dir (CUDA: $cuda)"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DATTN_CUDA="$cuda" > /dev/null
cmake --build "$build_dir" --target attn -j"$(nproc)"
attn="$build_dir/attn"

stamp "preparing the Ding corpus"
bash scripts/prepare_ding.sh

run="${ATTN_DEMO_RUN:-runs/demo}"
stamp "training configs/demo.yaml into $run"
"$attn" train -c configs/demo.yaml --set train.output_dir="$run" "$@"

model="$run/checkpoints/averaged"
[ -d "$model" ] || model="$run/checkpoints/best"
stamp "translating data/ding/test.en with $model (beam 4)"
"$attn" translate -m "$model" --beam 4 -i data/ding/test.en -o "$run/test.hyp.de"

echo
echo "Examples (source / reference / attn):"
for n in 1 2 3 4 5; do
  echo "  SRC: $(sed -n "${n}p" data/ding/test.en)"
  echo "  REF: $(sed -n "${n}p" data/ding/test.de)"
  echo "  HYP: $(sed -n "${n}p" "$run/test.hyp.de")"
  echo
done
# Degenerate output: a hypothesis that repeats a word 4 or more times in a row where its
# source does not (the failure mode of an undertrained model: "die die die die ...").
paste -d '\t' data/ding/test.en "$run/test.hyp.de" | awk -F'\t' '
  function longest_run(s,   w, n, i, r, m) {
    n = split(s, w, " "); m = n > 0; r = 1
    for (i = 2; i <= n; i++) { if (w[i] == w[i - 1]) { if (++r > m) m = r } else r = 1 }
    return m
  }
  longest_run($2) >= 4 && longest_run($1) < 4 { if (++bad <= 3) print "  degenerate, line " NR ": " $2 }
  END { printf "degenerate hypotheses (a word 4+ times in a row, not in the source): %d of %d\n", bad, NR }
' | tee "$run/test.degenerate"
"$attn" bleu "$run/test.hyp.de" data/ding/test.de | tee "$run/test.bleu"
"$attn" chrf "$run/test.hyp.de" data/ding/test.de | tee "$run/test.chrf"

"$attn" plot "$run" -o "$run/curves.svg"
pictures="$run/curves.svg"
if command -v rsvg-convert > /dev/null; then
  rsvg-convert -b white -o "$run/curves.png" "$run/curves.svg"
  pictures="$pictures and $run/curves.png"
fi
stamp "done in $(( $(date +%s) - start )) s"
echo "training curves: $pictures"
