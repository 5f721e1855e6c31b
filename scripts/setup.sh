#!/usr/bin/env bash
# Installs every dependency of attn from Debian's packages. Idempotent: packages already
# present are not touched. CUDA comes from the toolkit already on the machine.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libspdlog-dev libfmt-dev libyaml-cpp-dev catch2 libsentencepiece-dev sentencepiece
  libopenblas-dev libopenblas-openmp-dev
  libdnnl-dev  # oneDNN: the CPU's f32 GEMMs (kernels/gemm.h)
  libopenmpi-dev openmpi-bin nlohmann-json3-dev libcli11-dev
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

pip_install() {
  python3 -m pip install --quiet --disable-pip-version-check "$@" ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$@"
}

# Python packages with no Debian package: sacreBLEU (test-only: the reference that
# attn bleu / attn chrf are compared against) and, where the CUDA toolkit is present, the
# cuDNN frontend's header-only C++ API (nvidia-cudnn-frontend ships include/; CMake asks
# Python for it) for model.attention: cudnn. --no-deps: only the headers are used, not its
# Python side; 1.32.0 is the version attn was compiled against. cuDNN 9 itself comes with the toolkit or PyTorch (libcudnn.so.9, loaded at
# run time).
install_python_tools() {
  if ! python3 -c "import sacrebleu, sys; sys.exit(sacrebleu.__version__ != '2.6.0')" 2>/dev/null; then
    echo "setup: installing sacrebleu 2.6.0 from PyPI"
    pip_install "sacrebleu==2.6.0"
  fi
  if [ -x /usr/local/cuda/bin/nvcc ] || command -v nvcc >/dev/null; then
    if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('nvidia-cudnn-frontend') != '1.32.0')" 2>/dev/null; then
      echo "setup: installing the cuDNN frontend 1.32.0 headers (nvidia-cudnn-frontend) from PyPI"
      pip_install --no-deps "nvidia-cudnn-frontend==1.32.0"
    fi
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
