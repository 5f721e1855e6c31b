#!/usr/bin/env bash
# Installs every dependency of attn from Debian's packages. Idempotent: packages already
# present are not touched. CUDA comes from the toolkit already on the machine.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libspdlog-dev libfmt-dev libyaml-cpp-dev catch2 libsentencepiece-dev sentencepiece
  libopenblas-dev libopenmpi-dev openmpi-bin nlohmann-json3-dev libcli11-dev
  python3
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1
  fi
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
