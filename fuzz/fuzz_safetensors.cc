// safetensors files (io::load_safetensors): header length, JSON header, offsets, dtypes,
// shapes, checksum. Property: a file that loads is saved again and loads to the same
// tensors (names, order, dtypes, shapes, bytes) and metadata.
#include <cstring>

#include "fuzz.h"
#include "io/safetensors.h"

namespace attn::fuzz {

void fuzz_one(std::string_view data) {
  static ScratchFile input("input.safetensors"), copy("copy.safetensors");
  const io::SafetensorsFile file = io::load_safetensors(input.write(data));
  require(file.order.size() == file.tensors.size(), "order lists ", file.order.size(),
          " names for ", file.tensors.size(), " tensors");

  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& name : file.order) tensors.emplace_back(name, file.tensors.at(name));
  io::save_safetensors(copy.path(), tensors, file.metadata);
  const io::SafetensorsFile back = io::load_safetensors(copy.path());
  require(back.order == file.order, "saved and reloaded, the tensor order differs");
  for (const std::string& name : file.order) {
    const Tensor& a = file.tensors.at(name);
    const Tensor& b = back.tensors.at(name);
    require(a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
                (a.nbytes() == 0 || std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0),
            "saved and reloaded, tensor '", name, "' differs");
  }
  for (const auto& [key, value] : file.metadata) {
    if (key != io::kChecksumKey)
      require(back.metadata.count(key) && back.metadata.at(key) == value, "metadata '", key,
              "' differs after a round trip");
  }
}

}  // namespace attn::fuzz
