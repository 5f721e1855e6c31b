// safetensors (https://github.com/huggingface/safetensors), the weight format that PyTorch and
// Hugging Face tools read: an 8-byte little-endian header length N, N bytes of JSON
//   {"__metadata__": {"k": "v", ...}, "name": {"dtype": "F32", "shape": [2, 3],
//    "data_offsets": [begin, end]}, ...}
// padded with spaces to a multiple of 8, then the data buffer. Offsets are bytes relative to
// the buffer start; tensors are stored back to back in the order given, row-major.
//
// attn adds one metadata key, "attn.checksum": XXH64 (seed 0, core/hash.h) of the whole data
// buffer as 16 lowercase hex digits, checked on load when present. Files from other writers
// have none and load without the check.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace attn::io {

inline constexpr const char* kChecksumKey = "attn.checksum";

// Writes `tensors` (any device; non-CPU ones are copied to the host) to `path`, replacing it,
// and fsyncs it. The caller makes this atomic (write into a temporary directory, rename).
// Names must be unique and not "__metadata__". "attn.checksum" in `metadata` is overwritten.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;  // CPU tensors, each with its own storage
  std::map<std::string, std::string> metadata;
  std::vector<std::string> order;  // tensor names in data-buffer order (= the order saved)
};

// Reads and validates a whole file. Every problem (missing or truncated file, bad JSON,
// unsupported dtype, inconsistent or overlapping offsets, checksum mismatch) is an attn::Error
// whose one-line message names the path.
SafetensorsFile load_safetensors(const std::string& path);

// "F32" <-> DType::kF32 etc. (F32, F64, BF16, F16, I32).
const char* safetensors_dtype_name(DType dtype);

}  // namespace attn::io
