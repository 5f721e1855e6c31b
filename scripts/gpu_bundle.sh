#!/usr/bin/env bash
# Moved to scripts/gpu/bundle.sh (docs/GPU.md); this forwards to it so that older instructions
# keep working. The bundle's one command on the GPU machine is now `bash .gpu-bundle/check.sh`
# (it replaces run_gpu.sh).
exec bash "$(dirname "$0")/gpu/bundle.sh" "$@"
