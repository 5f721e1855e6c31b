#!/usr/bin/env bash
# Writes docs/CONFIG.md from the key list itself (`attn keys`, i.e. visit_fields in
# src/train/config.cc), so the reference cannot drift from the code: a CPU test fails when the
# committed page differs. Run after adding or changing a key:  bash scripts/gen_config_doc.sh
#   ATTN_BUILD_DIR  where attn is built (default build-cpu, then build)
set -euo pipefail
cd "$(dirname "$0")/.."
attn="${ATTN_BUILD_DIR:-build-cpu}/attn"
[ -x "$attn" ] || attn=build/attn
[ -x "$attn" ] || { echo "gen_config_doc: no attn binary (build first)" >&2; exit 1; }
{
  cat <<'HEAD'
# Configuration keys

Every key of a run config (`attn train -c CONFIG.yaml`, `--set section.key=value`), in the
order of the resolved `config.yaml` a run writes. Generated from the key list by
`bash scripts/gen_config_doc.sh` (`attn keys`); do not edit by hand. "accepts" is what
`validate()` checks for the key alone; rules between keys (`model.d_model` divisible by
`model.heads`, `train.average_last` <= `train.keep_last`, `data.max_len` <= `data.max_tokens`,
`train.best_metric: bleu` needs `bleu` in `train.valid_metrics`, `train.loss_scale_min` <=
`train.loss_scale_init`, the synthetic sizes) are listed at the end of `validate()` in
src/train/config.cc. Keys marked (architecture) are the model's shape: resuming a checkpoint
with a different value is refused, every other key may change between runs.

HEAD
  "$attn" keys
} > docs/CONFIG.md
echo "wrote docs/CONFIG.md"
