#!/usr/bin/env bash
# Installs every dependency of attn from Debian's packages. Idempotent: packages already
# present are not touched. CUDA comes from the toolkit already on the machine.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libspdlog-dev libfmt-dev libyaml-cpp-dev catch2 libsentencepiece-dev sentencepiece
  libopenblas-dev libopenblas-openmp-dev libopenmpi-dev openmpi-bin nlohmann-json3-dev libcli11-dev
  python3
  procps  # pgrep and ps: tests/dist/test_rank_failure_mpi.sh looks for surviving ranks
  librsvg2-bin  # rsvg-convert: tests render attn plot's SVG to PNG; the demo writes a PNG too
  # scripts/fuzz.sh: clang with libFuzzer and the sanitizer runtimes, LLVM's OpenMP for clang
  clang-14 libclang-rt-14-dev libomp-14-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# Test-only Python package (no Debian package exists): sacreBLEU, the reference that
# attn bleu / attn chrf are compared against.
install_python_tools() {
  if ! python3 -c "import sacrebleu, sys; sys.exit(sacrebleu.__version__ != '2.6.0')" 2>/dev/null; then
    echo "setup: installing sacrebleu 2.6.0 from PyPI"
    python3 -m pip install --quiet --disable-pip-version-check "sacrebleu==2.6.0" ||
      python3 -m pip install --quiet --break-system-packages "sacrebleu==2.6.0"
  fi
}

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  install_python_tools
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
install_python_tools
