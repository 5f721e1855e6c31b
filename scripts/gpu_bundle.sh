#!/usr/bin/env bash
# Builds attn for Hopper (sm_90) here and packs the binaries with the non-CUDA shared
# libraries they need into .gpu-bundle/ (git-ignored), for a GPU machine that has the CUDA
# toolkit but none of our Debian packages (see ../shared/GPU.md, option 2). Carry
# .gpu-bundle to the GPU machine and run `bash .gpu-bundle/run_gpu.sh` there.
#   ATTN_GPU_ARCH  CUDA architectures (default 90)
set -euo pipefail
cd "$(dirname "$0")/.."
build=build-gpu
bundle=.gpu-bundle
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DATTN_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${ATTN_GPU_ARCH:-90}" > /dev/null
cmake --build "$build" -j"$(nproc)" --target attn attn_tests attn_cuda_tests

rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib"
cp "$build/attn" "$build/tests/attn_tests" "$build/tests/attn_cuda_tests" "$bundle/bin/"
# Everything ldd resolves except the C runtime (the GPU machine's own) and CUDA's libraries
# (the GPU machine's toolkit and driver provide them, matching its driver).
for b in "$bundle"/bin/*; do
  ldd "$b" | awk '$3 ~ /^\// {print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*) ;;
    libcuda.so*|libcudart.so*|libcublas*|libnccl.so*|libcudnn*) ;;
    *) cp -L "$lib" "$bundle/lib/" ;;
  esac
done
cp -r configs "$bundle/"
cat > "$bundle/run_gpu.sh" <<'RUN'
#!/usr/bin/env bash
# On the GPU machine: runs the cuda-labelled tests and a device listing; logs go to $OUT
# (or ./gpu-logs). The CUDA runtime comes from /usr/local/cuda; NCCL from there or from
# PyTorch's nvidia-nccl package.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-$here/../gpu-logs}"
mkdir -p "$out"
nccl_dir=$(python3 -c "import nvidia.nccl, os; print(os.path.join(nvidia.nccl.__path__[0], 'lib'))" 2>/dev/null || true)
export LD_LIBRARY_PATH="$here/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib${nccl_dir:+:$nccl_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
"$here/bin/attn" devices 2>&1 | tee "$out/devices.txt"
"$here/bin/attn_cuda_tests" --durations yes > "$out/cuda_tests.txt" 2>&1
rc=$?
tail -5 "$out/cuda_tests.txt"
echo "attn_cuda_tests exit code $rc (full log: $out/cuda_tests.txt)"
exit $rc
RUN
chmod +x "$bundle/run_gpu.sh"
du -sh "$bundle"
