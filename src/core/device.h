// Where a tensor lives: the CPU or one CUDA device.
#pragma once

#include <ostream>
#include <string>

namespace attn {

enum class DeviceType { kCPU, kCUDA };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;

  static Device cpu() { return {DeviceType::kCPU, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::kCUDA, i}; }
  bool is_cpu() const { return type == DeviceType::kCPU; }
  bool is_cuda() const { return type == DeviceType::kCUDA; }
  bool operator==(const Device& o) const { return type == o.type && (is_cpu() || index == o.index); }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;
  // "cpu", "cuda", "cuda:1"
  static Device parse(const std::string& s);
};

inline std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.str(); }

// Whether this build has the CUDA backend, and how many devices the driver reports
// (0 without a GPU or without CUDA).
bool cuda_built();
int cuda_device_count();
// Lets fp32 GEMMs on CUDA use TF32 tensor cores (train.allow_tf32); no-op without CUDA.
void set_allow_tf32(bool allow);

}  // namespace attn
