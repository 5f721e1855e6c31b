#include "train/average.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "train/checkpoint.h"

namespace attn::train {
namespace fs = std::filesystem;

void average_checkpoints(const std::vector<std::string>& checkpoints, const std::string& out_dir) {
  ATTN_CHECK(!checkpoints.empty(), "average: no checkpoints given");
  std::vector<std::pair<std::string, Tensor>> sums;  // f64 accumulators in the first's order
  std::vector<std::string> order;
  LoadedCheckpoint first;
  nlohmann::json sources = nlohmann::json::array();
  for (size_t c = 0; c < checkpoints.size(); ++c) {
    LoadedCheckpoint ck = load_checkpoint(checkpoints[c]);
    sources.push_back({{"path", ck.path}, {"step", ck.trainer_state.value("step", int64_t{-1})}});
    if (c == 0) {
      for (auto& [name, t] : ck.model) sums.emplace_back(name, t.to(kF64).clone());
      first = std::move(ck);
      continue;
    }
    ATTN_CHECK(ck.model.size() == sums.size(), "average: ", ck.path, " has ", ck.model.size(),
               " parameters but ", first.path, " has ", sums.size());
    for (auto& [name, acc] : sums) {
      auto it = ck.model.find(name);
      ATTN_CHECK(it != ck.model.end(), "average: ", ck.path, " has no parameter '", name, "'");
      ATTN_CHECK(it->second.shape() == acc.shape(), "average: parameter '", name, "' has shape ",
                 it->second.shape(), " in ", ck.path, " but ", acc.shape(), " in ", first.path);
      const std::vector<double> v = it->second.to_double_vector();
      double* a = acc.data<double>();
      for (size_t i = 0; i < v.size(); ++i) a[i] += v[i];
    }
  }
  const double inv = 1.0 / static_cast<double>(checkpoints.size());
  std::vector<std::pair<std::string, Tensor>> averaged;
  for (auto& [name, acc] : sums) {
    double* a = acc.data<double>();
    for (int64_t i = 0; i < acc.numel(); ++i) a[i] *= inv;
    averaged.emplace_back(name, acc.to(first.model.at(name).dtype()));
  }

  const fs::path out(out_dir);
  const fs::path tmp = out.string() + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  ATTN_CHECK(!ec, "average: cannot create '", tmp.string(), "': ", ec.message());
  io::save_safetensors((tmp / "model.safetensors").string(), averaged,
                       {{"format", "pt"}, {"attn.kind", "model"}});
  // An empty optimizer file keeps the directory loadable by load_checkpoint.
  io::save_safetensors((tmp / "optimizer.safetensors").string(), {}, {{"attn.kind", "none"}});
  nlohmann::json state = {{"format_version", 1},
                          {"step", first.trainer_state.value("step", int64_t{0})},
                          {"averaged_from", sources}};
  write_file_synced((tmp / "trainer_state.json").string(), state.dump(2) + "\n");
  write_file_synced((tmp / "config.yaml").string(), first.config_yaml);
  if (!first.spm_model.empty()) write_file_synced((tmp / "spm.model").string(), first.spm_model);
  if (fs::exists(out)) fs::remove_all(out, ec);
  fs::rename(tmp, out, ec);
  ATTN_CHECK(!ec, "average: cannot move '", tmp.string(), "' to '", out.string(),
             "': ", ec.message());
}

std::vector<std::string> last_checkpoints(const std::string& checkpoints_dir, int64_t n) {
  std::vector<std::pair<int64_t, std::string>> steps;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(checkpoints_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || e.is_symlink() || name.rfind("step-", 0) != 0) continue;
    if (name.find('.') != std::string::npos) continue;  // step-N.tmp / .old
    steps.emplace_back(std::stoll(name.substr(5)), e.path().string());
  }
  std::sort(steps.begin(), steps.end());
  std::vector<std::string> out;
  for (size_t i = steps.size() > static_cast<size_t>(n) ? steps.size() - n : 0; i < steps.size();
       ++i)
    out.push_back(steps[i].second);
  return out;
}

}  // namespace attn::train
