#!/usr/bin/env bash
# Builds data/ding/{train,valid,test}.{en,de} (EN->DE) from Debian's trans-de-en package
# (the Ding German-English dictionary, GPL-2+). The rules are documented at the top of
# scripts/prepare_ding.py; this wrapper only checks for python3 (stdlib only).
#   scripts/prepare_ding.sh [--input FILE] [--out DIR] [--valid N] [--test N] [--seed S]
#                           [--cache DIR] [--force]
set -euo pipefail
if ! command -v python3 >/dev/null 2>&1; then
  echo "prepare_ding: python3 is required (Debian: apt-get install python3)" >&2
  exit 1
fi
exec python3 "$(dirname "$0")/prepare_ding.py" "$@"
