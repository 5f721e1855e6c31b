#!/usr/bin/env bash
# Packs what the GPU machine lacks into one git-ignored folder (default .gpu-bundle/, at most
# 60 MiB) for `bash .gpu-bundle/check.sh` there (docs/GPU.md):
#   bin/        attn, attn_tests, attn_cuda_tests, built here for sm_90 (build-gpu/)
#   lib/        the non-CUDA shared libraries they need (ldd), minus the C library, libstdc++,
#               libgcc_s, libz (the GPU machine's own are newer, and PyTorch loads them) and
#               CUDA's (cudart, cuBLAS, cuDNN, NCCL: the GPU machine's toolkit and PyTorch's
#               nvidia packages provide them, matching its driver)
#   data/ding/  the prepared Ding corpus (mix, valid, test; xz) and spm.model, a joint
#               SentencePiece model trained by attn itself on mix.en + mix.de with
#               configs/demo.yaml's settings (`attn train` for one CPU step; vocab_size says
#               how many pieces)
#   configs/, bench/ (scripts/bench/*.py), check.sh (scripts/gpu/check.sh), MANIFEST
#
#   scripts/gpu/bundle.sh                      build build-gpu (CUDA arch 90) and pack
#   scripts/gpu/bundle.sh --from-build DIR     pack the binaries of an existing build (no build)
#   scripts/gpu/bundle.sh --estimate [--build-dir DIR]
#                      no build, no packing: the bundle's size from DIR's binaries (default
#                      build/; their host code, plus the sm_90 device code measured once in a
#                      real bundle, recorded below), their libraries and the recorded data size,
#                      plus a 10% margin; exits 1 above the limit
# Options: --out DIR (default .gpu-bundle), --build-dir DIR (default build-gpu; --estimate:
# build), --data DIR (prepared corpus; default data/ding, made by scripts/prepare_ding.sh when
# missing), --vocab-size N (default: configs/demo.yaml's data.vocab_size), --limit-mib N
# (default 60), -j N (build jobs; default nproc).
#   ATTN_GPU_ARCH   CUDA architectures of the build (default 90)
set -uo pipefail
caller="$(pwd)"
cd "$(dirname "$0")/../.." || exit 1

die() { echo "bundle.sh: $*" >&2; exit 1; }

out=.gpu-bundle
build=""
from=""
data=data/ding
vocab=""
estimate=0
limit_mib=60
jobs="$(nproc)"
declare -A given=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out|--build-dir|--from-build|--data|--vocab-size|--limit-mib|-j)
      [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in
        --out) out=$2; given[out]=$2 ;; --build-dir) build=$2; given[build]=$2 ;;
        --from-build) from=$2; given[from]=$2 ;; --data) data=$2; given[data]=$2 ;;
        --vocab-size) vocab=$2 ;; --limit-mib) limit_mib=$2 ;; -j) jobs=$2 ;;
      esac
      shift ;;
    --estimate) estimate=1 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
limit_bytes=$((limit_mib * 1024 * 1024))
# Folders given on the command line are relative to where bundle.sh was called from; the
# defaults, to the repository.
absolute() { case "$1" in /*|'') echo "$1" ;; *) echo "$caller/$1" ;; esac; }
for v in out build from data; do
  [ "${!v}" = "${given[$v]:-}" ] && [ -n "${!v}" ] && printf -v "$v" '%s' "$(absolute "${!v}")"
done

# ---- measured once in a real bundle (sm_90 only, Release, stripped), for --estimate ----------
# Bytes of the .nv_fatbin section (device code for sm_90) of each binary, and the whole stripped
# binary for a build that lacks it (a CPU-only build has no attn_cuda_tests). Data: the xz'd
# corpus plus spm.model. Re-measure with a real bundle after large kernel changes: bundle.sh
# prints these numbers (MANIFEST keeps them).
declare -A FATBIN=([attn]=0 [attn_tests]=0 [attn_cuda_tests]=0)
declare -A WHOLE=([attn_cuda_tests]=0)
DATA_BYTES=0

# The libraries ldd resolves for these binaries, minus those the GPU machine provides.
bundled_libs() {
  for b in "$@"; do ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'; done | sort -u |
    while read -r lib; do
      case "$(basename "$lib")" in
        libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libresolv.so*|libutil.so*) ;;
        libstdc++.so*|libgcc_s.so*|libz.so*) ;;
        libcuda.so*|libcudart.so*|libcublas*|libnccl.so*|libcudnn*|libnvrtc*|libnvJitLink*) ;;
        *) echo "$lib" ;;
      esac
    done
}
fatbin_bytes() {  # size of the .nv_fatbin section (0 when there is none)
  readelf -S --wide "$1" 2> /dev/null |
    awk '$2 == ".nv_fatbin" {print strtonum("0x" $6); f = 1} END {if (!f) print 0}'
}
stripped_bytes() {
  local tmp
  tmp="$(mktemp)"
  strip -o "$tmp" "$1" && wc -c < "$tmp"
  rm -f "$tmp"
}
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
find_binary() {  # DIR NAME: the binary of a CMake build folder
  local p
  for p in "$1/$2" "$1/tests/$2"; do [ -x "$p" ] && { echo "$p"; return 0; }; done
  return 1
}
compress() {  # FILE OUT.xz
  if command -v xz > /dev/null; then xz -6 -T1 -c "$1" > "$2"
  else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(open(sys.argv[1], "rb"), lzma.open(sys.argv[2], "wb", preset=6))' "$1" "$2"
  fi
}
other_bytes() {  # configs, bench scripts, check.sh, sample, prepare script
  cat configs/*.yaml scripts/bench/*.py scripts/gpu/check.sh | wc -c
}

# ---- --estimate -------------------------------------------------------------------------------
if [ "$estimate" = 1 ]; then
  build=${build:-build}
  [ -x "$build/attn" ] || die "--estimate: no $build/attn (build first, or pass --build-dir)"
  [ "${FATBIN[attn]}" -gt 0 ] || die "--estimate: the sm_90 sizes are not recorded yet (run a real bundle first)"
  total=0
  present=()
  printf '%-22s %12s  %s\n' "part" "bytes" "how"
  for name in attn attn_tests attn_cuda_tests; do
    if p="$(find_binary "$build" "$name")"; then
      present+=("$p")
      host=$(( $(stripped_bytes "$p") - $(fatbin_bytes "$p") ))
      bytes=$((host + FATBIN[$name]))
      how="host code of $p (stripped, device code removed) + recorded sm_90 device code"
    else
      bytes=${WHOLE[$name]:-0}
      [ "$bytes" -gt 0 ] || die "--estimate: no $name in $build and no recorded size"
      how="not in $build: recorded size of the sm_90 binary"
    fi
    total=$((total + bytes))
    printf '%-22s %12d  %s\n' "bin/$name" "$bytes" "$how"
  done
  libs=0
  while read -r lib; do libs=$((libs + $(stat -L -c %s "$lib"))); done < <(bundled_libs "${present[@]}")
  printf '%-22s %12d  %s\n' "lib/" "$libs" "ldd of the binaries above, as packed"
  printf '%-22s %12d  %s\n' "data/ding/" "$DATA_BYTES" "recorded (xz'd corpus + spm.model)"
  other=$(other_bytes)
  printf '%-22s %12d  %s\n' "configs, scripts" "$other" "measured"
  total=$((total + libs + DATA_BYTES + other))
  with_margin=$((total * 110 / 100))
  echo "estimate: $(mib "$total"), with a 10% margin $(mib "$with_margin"); limit $limit_mib MiB"
  [ "$with_margin" -le "$limit_bytes" ] ||
    die "the bundle would exceed $limit_mib MiB ($(mib "$with_margin") estimated)"
  exit 0
fi

# ---- build --------------------------------------------------------------------------------------
if [ -n "$from" ]; then
  build=$from
else
  build=${build:-build-gpu}
  echo "== building attn for CUDA arch ${ATTN_GPU_ARCH:-90} in $build (-j$jobs)"
  # RPATH (not RUNPATH: it also serves the libraries' own dependencies) $ORIGIN/../lib, so the
  # bundle's binaries find lib/ even without LD_LIBRARY_PATH.
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DATTN_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="${ATTN_GPU_ARCH:-90}" \
    "-DCMAKE_EXE_LINKER_FLAGS=-Wl,--disable-new-dtags,-rpath,\$ORIGIN/../lib" > "$build.configure.log" ||
    die "cmake configure failed (see $build.configure.log)"
  cmake --build "$build" -j"$jobs" --target attn attn_tests attn_cuda_tests ||
    die "the build failed"
fi
bins=()
for name in attn attn_tests attn_cuda_tests; do
  if p="$(find_binary "$build" "$name")"; then bins+=("$p")
  elif [ "$name" = attn_cuda_tests ] && [ -n "$from" ]; then echo "note: $build has no $name (CPU-only build)"
  else die "no $name in $build"
  fi
done

# ---- data ---------------------------------------------------------------------------------------
if [ ! -s "$data/mix.en" ]; then
  [ "$data" = data/ding ] || die "no prepared corpus in $data (scripts/prepare_ding.sh --out $data)"
  echo "== preparing the Ding corpus (scripts/prepare_ding.sh)"
  bash scripts/prepare_ding.sh || die "scripts/prepare_ding.sh failed"
fi
for f in mix.en mix.de valid.en valid.de test.en test.de; do
  [ -s "$data/$f" ] || die "$data/$f is missing or empty"
done
if [ -z "$vocab" ]; then
  vocab="$(awk '/^data:/ {d = 1; next} /^[^ ]/ {d = 0} d && $1 == "vocab_size:" {print $2}' configs/demo.yaml)"
  [ -n "$vocab" ] || die "no data.vocab_size in configs/demo.yaml"
fi
spm_type="$(awk '/^data:/ {d = 1; next} /^[^ ]/ {d = 0} d && $1 == "spm_type:" {print $2}' configs/demo.yaml)"

# The SentencePiece model: trained by attn once per corpus, vocabulary size and attn binary's
# settings; cached next to the build (training on the full corpus takes about a minute).
key="$(cat "$data/mix.en" "$data/mix.de" | sha256sum | cut -c1-16)-$vocab-${spm_type:-bpe}"
spm_cache="$build/spm-cache/$key"
if [ ! -s "$spm_cache/spm.model" ]; then
  echo "== training the SentencePiece model ($vocab pieces, ${spm_type:-bpe}) with attn on $data/mix.*"
  tmp="$(mktemp -d)"
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} "${bins[0]}" train -c configs/demo.yaml \
    --set "train.output_dir=$tmp/run" --set "data.train_src=$data/mix.en" \
    --set "data.train_tgt=$data/mix.de" --set "data.valid_src=$data/valid.en" \
    --set "data.valid_tgt=$data/valid.de" --set "data.vocab_size=$vocab" --set train.device=cpu \
    --set train.max_steps=1 --set train.average_last=0 --set data.max_tokens=500 > "$tmp/log" 2>&1 ||
    { cat "$tmp/log" >&2; rm -rf "$tmp"; die "attn train (vocabulary) failed"; }
  mkdir -p "$spm_cache"
  cp "$tmp/run/spm.model" "$spm_cache/spm.model" || die "attn wrote no spm.model"
  rm -rf "$tmp"
fi

# ---- pack ---------------------------------------------------------------------------------------
echo "== packing $out"
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/data/ding" "$out/bench" "$out/configs" || die "cannot create $out"
strip_failed=0
for b in "${bins[@]}"; do
  strip -o "$out/bin/$(basename "$b")" "$b" || strip_failed=1
done
[ "$strip_failed" = 0 ] || die "strip failed"
libs=()
while read -r lib; do libs+=("$lib"); done < <(bundled_libs "${bins[@]}")
for lib in "${libs[@]}"; do cp -L "$lib" "$out/lib/" || die "cannot copy $lib"; done
for f in mix.en mix.de valid.en valid.de test.en test.de; do
  compress "$data/$f" "$out/data/ding/$f.xz" || die "cannot compress $data/$f"
done
cp "$spm_cache/spm.model" "$out/data/ding/"
echo "$vocab" > "$out/data/ding/vocab_size"
cp configs/*.yaml "$out/configs/"
cp scripts/bench/*.py "$out/bench/"
cp scripts/gpu/check.sh "$out/check.sh"
chmod +x "$out/check.sh"

size() { du -sb "$1" | cut -f1; }
total=$(size "$out")
commit="$(git rev-parse --short HEAD 2> /dev/null || echo unknown)$(git diff --quiet HEAD 2> /dev/null || echo +dirty)"
{
  echo "attn $commit, packed $(date -u +%Y-%m-%dT%H:%M:%SZ) from $build ($([ -n "$from" ] && echo "existing build" || echo "CUDA arch ${ATTN_GPU_ARCH:-90}"))"
  echo "vocabulary: spm.model, $vocab ${spm_type:-bpe} pieces, trained by attn (1 CPU step of configs/demo.yaml) on $data/mix.en + mix.de"
  echo
  echo "size: $total bytes ($(mib "$total")), limit $limit_mib MiB"
  for b in "$out"/bin/*; do
    n="$(basename "$b")"
    echo "  bin/$n $(wc -c < "$b") bytes (device code .nv_fatbin $(fatbin_bytes "$b"))"
  done
  echo "  lib/ $(size "$out/lib") bytes: $(cd "$out/lib" && ls | tr '\n' ' ')"
  echo "  data/ding/ $(size "$out/data/ding") bytes"
  echo "  configs/ bench/ check.sh $(( $(size "$out/configs") + $(size "$out/bench") + $(wc -c < "$out/check.sh") )) bytes"
} > "$out/MANIFEST"
cat "$out/MANIFEST"
[ "$total" -le "$limit_bytes" ] || die "$out is $(mib "$total"), over the $limit_mib MiB limit"
echo "bundle ready: carry $out to the GPU machine and run: bash $out/check.sh"
