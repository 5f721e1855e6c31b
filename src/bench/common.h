// Shared pieces of the benchmarks (`attn bench ...`): a documented hash that Python can
// reproduce (lengths, token ids and test inputs are functions of it), timing on a device, and
// device resolution. See scripts/bench/README.md for the formulas.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/allocator.h"  // format_bytes
#include "core/device.h"
#include "core/tensor.h"

namespace attn::bench {

// SplitMix64's output function applied to z + 0x9E3779B97F4A7C15 (all arithmetic mod 2^64):
//   z += 0x9E3779B97F4A7C15; z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
//   z = (z ^ (z >> 27)) * 0x94D049BB133111EB; return z ^ (z >> 31).
uint64_t mix64(uint64_t z);
// acc = 0; for v in values: acc = mix64(acc ^ v). The one hash of the benchmarks.
uint64_t hash_u64(std::initializer_list<uint64_t> values);
// A double in [0, 1) from the top 53 bits of h.
inline double unit_double(uint64_t h) {
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

double median(std::vector<double> values);

// Waits until all of attn's work on `device` is done (no-op on the CPU).
void synchronize(Device device);

// Runs fn `warmup` times untimed, then `reps` times, and returns the milliseconds of each timed
// call: CUDA events recorded on attn's stream around each call on a CUDA device, the wall
// clock on the CPU.
std::vector<double> time_calls(Device device, int warmup, int reps,
                               const std::function<void()>& fn);

// A tensor of values uniform in [lo, hi) computed from hash_u64({seed, i}) (element i, row-major),
// rounded to `dtype`, built on the host in parallel and copied to `device`. Unlike
// Tensor::uniform it needs no double per element, so gigabyte-sized inputs are cheap.
Tensor hashed_uniform(const Shape& shape, double lo, double hi, uint64_t seed, DType dtype,
                      Device device);

// The current time as ISO 8601 UTC ("2026-11-21T14:05:00Z"), for report headers.
std::string utc_timestamp();

}  // namespace attn::bench
