#!/usr/bin/env bash
# Packs what the GPU machine lacks into one git-ignored folder (default .gpu-bundle/, at most
# 60 MiB) for `bash .gpu-bundle/check.sh` there (docs/GPU.md). Every large file is xz'd (the
# sm_90 binaries and OpenBLAS would not fit otherwise); check.sh unpacks them into its work
# folder in a few seconds.
#   bin/        attn, attn_tests, attn_cuda_tests (stripped), built here for sm_90 (build-gpu/)
#               with RPATH $ORIGIN/../lib
#   lib/        the non-CUDA shared libraries they need (ldd), minus the C library, libstdc++,
#               libgcc_s and libz (the GPU machine's own are newer, and PyTorch loads them) and
#               CUDA's (cudart, cuBLAS, cuDNN, NCCL: the GPU machine's toolkit and PyTorch's
#               nvidia packages provide them, matching its driver)
#   data/ding/  the prepared Ding corpus (mix, valid, test) and spm.model, a joint SentencePiece
#               model that attn itself trained on mix.en + mix.de with configs/demo.yaml's
#               settings (`attn train` for one CPU step; vocab_size holds its size), and the
#               corpus binarized by that run (train.bin, valid.bin)
#   configs/, bench/ (scripts/bench/*.py), check.sh (scripts/gpu/check.sh), MANIFEST (commit,
#               sizes, and the numbers --estimate records)
#
#   scripts/gpu/bundle.sh                      build build-gpu (sm_90) and pack
#   scripts/gpu/bundle.sh --from-build DIR     pack the binaries of an existing build (no build;
#                                              a CPU build gives a bundle for check.sh --dry-run)
#   scripts/gpu/bundle.sh --estimate [--build-dir DIR]
#       no build, no packing: the bundle's size from the sizes recorded below (measured in a
#       real bundle), host code or libraries grown since then counted uncompressed, plus a 10%
#       margin; exits 1 above the limit. DIR (default build/) is any build: its binaries'
#       host code (device code excluded) and their libraries are compared with the record.
# Options: --out DIR (default .gpu-bundle), --build-dir DIR (default build-gpu; --estimate:
# build), --data DIR (a prepared corpus; default data/ding, made by scripts/prepare_ding.sh when
# missing), --vocab-size N (default: configs/demo.yaml's data.vocab_size), --no-compress (bin/
# and lib/ as plain files, no size limit: quick bundles for a dry run here; data stays xz'd),
# --limit-mib N
# (default 60), -j N (build jobs; default nproc).
#   ATTN_GPU_ARCH       CUDA architectures of the build (default 90-real: sm_90 machine code, no PTX)
#   ATTN_BUNDLE_CACHE   where trained vocabularies are kept (default .cache/gpu-bundle)
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
compress_bins=1
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
    --no-compress) compress_bins=0 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
[[ "$limit_mib" =~ ^[0-9]+$ ]] || die "--limit-mib must be a whole number of MiB"
limit_bytes=$((limit_mib * 1024 * 1024))
# Folders given on the command line are relative to where bundle.sh was called from; the
# defaults, to the repository.
absolute() { case "$1" in /*|'') echo "$1" ;; *) echo "$caller/$1" ;; esac; }
for v in out build from data; do
  if [ -n "${given[$v]:-}" ]; then printf -v "$v" '%s' "$(absolute "${!v}")"; fi
done

# ---- recorded from a real bundle (MANIFEST's "record" lines), for --estimate -------------------
# Per binary: host code (stripped, without the .nv_fatbin device code) and the xz'd stripped
# sm_90 binary; the libraries, uncompressed and xz'd; data/ding/ (xz'd corpus, spm.model).
# Recorded 2026-12-07 from commit 6930c35 (CUDA 13.0, sm_90 SASS without PTX; stripped device
# code: 14,399,376 bytes in each binary, which xz shrinks about sevenfold).
declare -A REC_HOST=([attn]=3576848 [attn_tests]=6142672 [attn_cuda_tests]=2885168)
declare -A REC_XZ=([attn]=2258036 [attn_tests]=3051008 [attn_cuda_tests]=2039620)
REC_LIBS=47341224
REC_LIBS_XZ=7544696
REC_DATA=4583693

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
fatbin_bytes() {  # size of the .nv_fatbin section (device code; 0 when there is none)
  local hex
  hex="$(readelf -S --wide "$1" 2> /dev/null |
    awk '{for (i = 1; i < NF; i++) if ($i == ".nv_fatbin") {print $(i + 4); exit}}')"
  echo $((16#${hex:-0}))
}
stripped_bytes() {
  local tmp n
  tmp="$(mktemp)"
  strip -o "$tmp" "$1" || { rm -f "$tmp"; return 1; }
  n=$(wc -c < "$tmp")
  rm -f "$tmp"
  echo "$n"
}
bytes() { wc -c < "$1"; }
dir_bytes() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
find_binary() {  # DIR NAME: the binary of a CMake build folder
  local p
  for p in "$1/$2" "$1/tests/$2"; do [ -x "$p" ] && [ -f "$p" ] && { echo "$p"; return 0; }; done
  return 1
}
xz_file() {  # FILE OUT.xz
  if command -v xz > /dev/null; then
    xz -6 -T0 -c "$1" > "$2"
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(open(sys.argv[1], "rb"), lzma.open(sys.argv[2], "wb", preset=6))' "$1" "$2"
  fi
}
other_bytes() { cat configs/*.yaml scripts/bench/*.py scripts/gpu/check.sh | wc -c; }

# ---- --estimate -------------------------------------------------------------------------------
if [ "$estimate" = 1 ]; then
  build=${build:-build}
  [ -x "$build/attn" ] || die "--estimate: no $build/attn (build first, or pass --build-dir)"
  [ "${REC_XZ[attn]}" -gt 0 ] || die "--estimate: no sizes recorded yet (pack a real bundle first)"
  total=0
  present=()
  printf '%-24s %11s  %s\n' "part" "bytes" "how"
  for name in attn attn_tests attn_cuda_tests; do
    est=${REC_XZ[$name]}
    how="recorded xz'd sm_90 binary"
    if p="$(find_binary "$build" "$name")"; then
      present+=("$p")
      sb=$(stripped_bytes "$p") || die "strip failed on $p"
      host=$((sb - $(fatbin_bytes "$p")))
      grown=$((host - REC_HOST[$name]))
      if [ "$grown" -gt 0 ]; then
        est=$((est + grown))
        how="$how + $grown bytes of host code grown since (uncompressed)"
      else
        how="$how (host code of $p: no growth)"
      fi
    else
      how="$how ($name not in $build)"
    fi
    total=$((total + est))
    printf '%-24s %11d  %s\n' "bin/$name.xz" "$est" "$how"
  done
  libs=0
  # Without oneDNN: the bundle's own build is configured -DATTN_ONEDNN=OFF (its CPU GEMMs do not
  # matter on the GPU machine), though the build estimated from may have it.
  while read -r lib; do libs=$((libs + $(stat -L -c %s "$lib"))); done < <(bundled_libs "${present[@]}" | grep -v '/libdnnl\.so')
  est=$REC_LIBS_XZ
  how="recorded xz'd libraries"
  if [ "$libs" -gt "$REC_LIBS" ]; then
    est=$((est + libs - REC_LIBS))
    how="$how + $((libs - REC_LIBS)) bytes more than recorded (uncompressed)"
  fi
  total=$((total + est))
  printf '%-24s %11d  %s\n' "lib/*.xz" "$est" "$how ($libs bytes by ldd now)"
  printf '%-24s %11d  %s\n' "data/ding/" "$REC_DATA" "recorded (xz'd corpus + spm.model)"
  other=$(other_bytes)
  printf '%-24s %11d  %s\n' "configs, bench, check.sh" "$other" "measured"
  total=$((total + REC_DATA + other))
  with_margin=$((total * 110 / 100))
  echo "estimate: $(mib "$total"), with a 10% margin $(mib "$with_margin"); limit $limit_mib MiB"
  [ "$with_margin" -le "$limit_bytes" ] ||
    die "the bundle would exceed $limit_mib MiB ($(mib "$with_margin") estimated with the margin)"
  exit 0
fi

# ---- build --------------------------------------------------------------------------------------
if [ -n "$from" ]; then
  build=$from
else
  build=${build:-build-gpu}
  echo "== building attn for CUDA arch ${ATTN_GPU_ARCH:-90-real} in $build (-j$jobs)"
  # RPATH (not RUNPATH: it also serves the libraries' own dependencies) $ORIGIN/../lib, so the
  # unpacked binaries find lib/ even without LD_LIBRARY_PATH. CMake escapes $ORIGIN in
  # BUILD_RPATH for the link command's shell (a raw linker flag would lose it).
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DATTN_CUDA=ON -DATTN_ONEDNN=OFF \
    -DCMAKE_CUDA_ARCHITECTURES="${ATTN_GPU_ARCH:-90-real}" \
    -DCMAKE_EXE_LINKER_FLAGS=-Wl,--disable-new-dtags '-DCMAKE_BUILD_RPATH=$ORIGIN/../lib' > /dev/null ||
    die "cmake configure of $build failed"
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
  [ -z "${given[data]:-}" ] || die "no prepared corpus in $data (scripts/prepare_ding.sh --out $data)"
  echo "== preparing the Ding corpus (scripts/prepare_ding.sh)"
  bash scripts/prepare_ding.sh || die "scripts/prepare_ding.sh failed"
fi
for f in mix.en mix.de valid.en valid.de test.en test.de; do
  [ -s "$data/$f" ] || die "$data/$f is missing or empty"
done
demo_key() {  # the value of data.KEY in configs/demo.yaml
  awk -v k="$1:" '/^data:/ {d = 1; next} /^[^ ]/ {d = 0} d && $1 == k {print $2}' configs/demo.yaml
}
[ -n "$vocab" ] || vocab="$(demo_key vocab_size)"
[[ "$vocab" =~ ^[0-9]+$ ]] || die "no usable vocabulary size (data.vocab_size in configs/demo.yaml, or --vocab-size)"
spm_type="$(demo_key spm_type)"
spm_type=${spm_type:-bpe}

# The SentencePiece model: trained by attn once per corpus and vocabulary, cached in .cache/
# (git-ignored; on the full corpus it takes about a minute).
key="$(cat "$data/mix.en" "$data/mix.de" | sha256sum | cut -c1-16)-$vocab-$spm_type"
spm_cache="${ATTN_BUNDLE_CACHE:-.cache/gpu-bundle}/spm-$key"
if [ ! -s "$spm_cache/spm.model" ] || [ ! -s "$spm_cache/train.bin" ]; then
  echo "== training the SentencePiece model ($vocab $spm_type pieces) with attn on $data/mix.*"
  tmp="$(mktemp -d)"
  "${bins[0]}" train -c configs/demo.yaml \
    --set "train.output_dir=$tmp/run" --set "data.train_src=$data/mix.en" \
    --set "data.train_tgt=$data/mix.de" --set "data.valid_src=$data/valid.en" \
    --set "data.valid_tgt=$data/valid.de" --set "data.vocab_size=$vocab" --set train.device=cpu \
    --set train.max_steps=1 --set train.average_last=0 --set data.max_tokens=500 > "$tmp/log" 2>&1 ||
    { cat "$tmp/log" >&2; rm -rf "$tmp"; die "attn train (vocabulary) failed"; }
  mkdir -p "$spm_cache" && cp "$tmp/run/spm.model" "$spm_cache/spm.model" ||
    { rm -rf "$tmp"; die "attn wrote no spm.model"; }
  # The corpus binarized with it (token ids; its fingerprint covers the corpus bytes, the
  # vocabulary and data.max_len, so a mismatch is rebuilt, never used): saves the GPU machine
  # the step.
  cp "$tmp/run/cache/train.bin" "$tmp/run/cache/valid.bin" "$spm_cache/" ||
    { rm -rf "$tmp"; die "attn wrote no binarized corpus"; }
  rm -rf "$tmp"
fi

# ---- pack ---------------------------------------------------------------------------------------
echo "== packing $out$([ "$compress_bins" = 1 ] && echo " (xz)")"
# Replaces an earlier bundle only: never a folder that holds something else.
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2> /dev/null)" ] && ! [ -f "$out/MANIFEST" ]; then
  die "$out exists and is not a bundle (no MANIFEST): not replacing it"
fi
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/data/ding" "$out/bench" "$out/configs" || die "cannot create $out"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
# pack FILE DIR: FILE into the bundle's DIR, xz'd unless --no-compress.
pack() {
  if [ "$compress_bins" = 1 ]; then xz_file "$1" "$out/$2/$(basename "$1").xz"
  else cp "$1" "$out/$2/"
  fi || die "cannot pack $1"
}
declare -A host_rec=()
for b in "${bins[@]}"; do
  n="$(basename "$b")"
  strip -o "$stage/$n" "$b" || die "strip failed on $b"
  host_rec[$n]=$(( $(bytes "$stage/$n") - $(fatbin_bytes "$stage/$n") ))
  pack "$stage/$n" bin
done
libs=()
while read -r lib; do libs+=("$lib"); done < <(bundled_libs "${bins[@]}")
[ "${#libs[@]}" -gt 0 ] || die "ldd found no libraries to bundle"
libs_raw=0
for lib in "${libs[@]}"; do
  cp -L "$lib" "$stage/" || die "cannot copy $lib"
  libs_raw=$((libs_raw + $(bytes "$stage/$(basename "$lib")")))
  pack "$stage/$(basename "$lib")" lib
done
for f in mix.en mix.de valid.en valid.de test.en test.de; do
  xz_file "$data/$f" "$out/data/ding/$f.xz" || die "cannot compress $data/$f"
done
cp "$spm_cache/spm.model" "$out/data/ding/" || die "cannot copy the vocabulary"
for f in train.bin valid.bin; do
  xz_file "$spm_cache/$f" "$out/data/ding/$f.xz" || die "cannot compress $spm_cache/$f"
done
echo "$vocab" > "$out/data/ding/vocab_size"
cp configs/*.yaml "$out/configs/" && cp scripts/bench/*.py "$out/bench/" &&
  cp scripts/gpu/check.sh "$out/check.sh" && chmod +x "$out/check.sh" || die "cannot copy scripts"

total=$(dir_bytes "$out")
commit="$(git rev-parse --short HEAD 2> /dev/null || echo unknown)$(git diff --quiet HEAD 2> /dev/null || echo +dirty)"
{
  echo "attn $commit, packed $(date -u +%Y-%m-%dT%H:%M:%SZ) from $build ($([ -n "$from" ] && echo "existing build" || echo "CUDA arch ${ATTN_GPU_ARCH:-90-real}"))"
  echo "vocabulary: spm.model, $vocab $spm_type pieces, trained by attn (1 CPU step of configs/demo.yaml) on $data/mix.en + mix.de; train.bin, valid.bin: the corpus binarized by that run"
  echo
  echo "size: $total bytes ($(mib "$total")), limit $limit_mib MiB$([ "$compress_bins" = 1 ] || echo " (not applied: --no-compress, for a dry run here)")"
  for b in "${bins[@]}"; do
    n="$(basename "$b")"
    f="$out/bin/$n.xz"
    [ -f "$f" ] || f="$out/bin/$n"
    echo "  bin/$(basename "$f") $(bytes "$f") bytes (stripped $(bytes "$stage/$n"), of which device code $(fatbin_bytes "$stage/$n"))"
  done
  echo "  lib/ $(dir_bytes "$out/lib") bytes ($libs_raw unpacked): $(cd "$out/lib" && ls | tr '\n' ' ')"
  echo "  data/ding/ $(dir_bytes "$out/data/ding") bytes"
  echo "  configs/ bench/ check.sh MANIFEST $(( $(dir_bytes "$out/configs") + $(dir_bytes "$out/bench") + $(bytes "$out/check.sh") )) bytes"
  echo
  echo "record for bundle.sh --estimate (only from an xz'd sm_90 bundle):"
  for n in "${!host_rec[@]}"; do
    f="$out/bin/$n.xz"
    [ -f "$f" ] || f="$out/bin/$n"
    echo "  REC_HOST[$n]=${host_rec[$n]} REC_XZ[$n]=$(bytes "$f")"
  done
  echo "  REC_LIBS=$libs_raw REC_LIBS_XZ=$(dir_bytes "$out/lib") REC_DATA=$(dir_bytes "$out/data/ding")"
} > "$out/MANIFEST"
cat "$out/MANIFEST"
# An uncompressed bundle is for the dry run on this machine; it does not travel.
if [ "$compress_bins" = 1 ] && [ "$total" -gt "$limit_bytes" ]; then
  die "$out is $(mib "$total"), over the $limit_mib MiB limit"
fi
echo "bundle ready: $out; on the GPU machine: bash $(basename "$out")/check.sh (docs/GPU.md)"
