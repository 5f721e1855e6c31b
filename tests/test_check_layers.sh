#!/usr/bin/env bash
# The layer check (scripts/check_layers.py) passes on the repository and fails on an upward
# include (a kernel including a core header), naming the file, the line and both layers.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python3 "$root/scripts/check_layers.py" "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/kernels" "$tmp/src/core" "$tmp/src/base"
printf '#include "base/error.h"\n#include <vector>\n' > "$tmp/src/core/ok.h"
printf '#pragma once\n\n#include "core/tensor.h"\n' > "$tmp/kernels/bad.h"
if python3 "$root/scripts/check_layers.py" "$tmp" 2> "$tmp/err"; then
  echo "FAIL: an upward include passed the layer check" >&2
  exit 1
fi
grep -q "kernels/bad.h:3: layer 'kernels' includes '#include \"core/tensor.h\"' of the layer above it, 'core'" "$tmp/err" \
  || { echo "FAIL: unexpected message:" >&2; cat "$tmp/err" >&2; exit 1; }
echo "layer check: passes here, catches an upward include"
