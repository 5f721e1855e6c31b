// `attn bench kernels`: times attn's op-level API (src/ops) on one device at machine-translation
// shapes and puts each result next to the device's measured copy bandwidth and bf16 matmul
// rate. Every row is the median of `reps` timed calls after `warmup` untimed ones (CUDA events
// on attn's stream, or the wall clock on the CPU). scripts/bench/bench_kernels.py runs the
// same shapes in PyTorch from the JSON this writes (lengths included).
//
// Rows (names are stable: the Python side matches on them):
//   copy                      device-to-device copy of one buffer; bytes = 2 x size
//   matmul                    ops::matmul of two [N, N] bf16 matrices; flops = 2 N^3
//   attention.enc_self.fwd/bwd  [B, H, T, D], key padding from per-sentence lengths
//   attention.dec_causal.fwd/bwd  [B, H, T, D], causal, no key padding (as the decoder)
//   attention.{enc_self,dec_causal}.cudnn.fwd/bwd  the same through the cudnn backend (on a
//                                GPU, in builds with cuDNN; a fallback to fused is an error row)
//   layer_norm.fwd/bwd        [rows, cols] in bf16 and in f32, no residual
//   cross_entropy.fwd/bwd     logits [rows, V] bf16, label smoothing 0.1, ignore_index 0
// Bytes are the minimum traffic of the op as called: the sizes of every tensor it reads plus
// every tensor it writes. Attention FLOPs count the dense [T, T] score matrix (half for causal):
// forward 4 B H T^2 D, backward 2.5 x forward (five matmuls, one recomputing the scores).
//
// On the CPU, bf16 rows run in f32 (the CPU kernels are f32/f64 only); `dtype` says what ran
// and `requested_dtype` what was asked for.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/tensor.h"

namespace attn::bench {

struct KernelBenchOptions {
  Device device = Device::cpu();
  bool quick = false;  // tiny shapes (see quick_kernel_options), 1 warm-up, 3 reps
  int warmup = 5;
  int reps = 20;
  uint64_t seed = 1234;
  int64_t tokens = 25000;  // per attention batch: B = tokens / T
  std::vector<int64_t> seq_lens = {16, 32, 64, 128, 256};
  int64_t heads = 8, head_dim = 64;
  int64_t ln_rows = 25000, ln_cols = 512;
  int64_t ce_rows = 25000, vocab = 32000;
  double label_smoothing = 0.1;
  int64_t copy_bytes = int64_t{1} << 30;  // size of the copied buffer
  int64_t matmul_n = 8192;
};

// The full-size defaults for `device`, or with quick set the tiny shapes that run in well
// under a second on a CPU (tokens 32, T in {4, 8}, 2 heads of 8, layer norm 16 x 32, cross
// entropy 16 x 50, a 1 MiB copy, a 64 x 64 matmul).
KernelBenchOptions kernel_bench_options(Device device, bool quick);

struct KernelResult {
  std::string name;
  Shape shape;
  std::string dtype;            // what ran
  std::string requested_dtype;  // what was asked for (differs on the CPU for bf16)
  double ms = 0;                // median
  double ms_min = 0;
  double bytes = 0;       // minimum bytes moved (reads + writes)
  double gbps = 0;        // bytes / ms
  double copy_ratio = 0;  // gbps / the measured copy bandwidth
  double flops = 0;       // 0 where not meaningful
  double tflops = 0;
  std::vector<int32_t> lengths;  // attention: per-sentence key lengths (enc_self)
  bool causal = false;
  std::string error;  // set when the op failed (the other fields are then 0)
};

struct KernelBenchReport {
  std::string device;
  bool quick = false;
  int warmup = 0, reps = 0;
  uint64_t seed = 0;
  double copy_gbps = 0;      // measured device-to-device copy bandwidth
  double matmul_tflops = 0;  // measured bf16 (CPU: f32) matmul rate
  std::vector<KernelResult> rows;
  bool ok() const;  // no row failed
};

// The documented length rule: sentence i of a batch of `batch` sentences at length T has
// lengths[i] = lo + hash_u64({seed, T, i}) % (T - lo + 1) with lo = ceil(T / 2), i.e. uniform
// in [ceil(T/2), T].
std::vector<int32_t> padded_lengths(int64_t batch, int64_t T, uint64_t seed);

KernelBenchReport run_kernel_bench(const KernelBenchOptions& options);

// A fixed-width table with one line per row, preceded by the device, copy and matmul rates.
std::string format_kernel_table(const KernelBenchReport& report);
nlohmann::json to_json(const KernelBenchReport& report);
KernelBenchReport kernel_report_from_json(const nlohmann::json& j);

// to_json's object with one key per line and one result per line.
std::string dump_kernel_json(const nlohmann::json& j);

// `attn bench kernels`: runs, prints the table to stdout, writes the JSON when json_path is
// not empty. Returns 0, or 1 when a row failed (the JSON and table are written regardless).
int run_bench_kernels_command(const std::string& device, const std::string& json_path, bool quick,
                              int warmup, int reps);

}  // namespace attn::bench
