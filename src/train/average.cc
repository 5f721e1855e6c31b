#include "train/average.h"

#include <unistd.h>

#include <filesystem>

#include "base/error.h"
#include "core/file.h"
#include "data/corpus.h"
#include "train/checkpoint.h"

namespace attn::train {
namespace fs = std::filesystem;

namespace {

// `inner` is `outer` or lies inside it (both resolved: symlinks such as `latest` followed).
bool within(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i) {
    if (o->empty()) continue;  // trailing separator
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

fs::path resolved(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(path, ec), ec);
  ATTN_CHECK(!ec, "average: cannot resolve '", path, "': ", ec.message());
  return p;
}

// An existing output may only be replaced if it is a previous average (its trainer_state.json
// names its sources); anything else (a training checkpoint, a checkpoints folder, a file, a
// link) is refused.
void check_output(const std::string& out_dir, const std::vector<std::string>& checkpoints) {
  const fs::path out = resolved(out_dir);
  for (const std::string& c : checkpoints) {
    const fs::path in = resolved(c);
    ATTN_CHECK(!within(in, out), "average: the output '", out_dir, "' ",
               in == out ? "is" : "contains", " the input checkpoint '", c,
               "'; choose a new directory for the average");
    ATTN_CHECK(!within(out, in), "average: the output '", out_dir,
               "' lies inside the input checkpoint '", c, "'; choose a new directory");
  }
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(out_dir, ec);
  if (!fs::exists(st)) return;
  ATTN_CHECK(fs::is_directory(st), "average: the output '", out_dir, "' exists and is not ",
             "a directory written by attn average; it is not replaced");
  const std::string state = (fs::path(out_dir) / "trainer_state.json").string();
  bool is_average = false;
  try {
    is_average = TrainerState::parse(data::read_file_bytes(state, "checkpoint state"), state)
                     .is_average();
  } catch (const Error&) {
  }
  ATTN_CHECK(is_average, "average: the output '", out_dir,
             "' exists and is not a previous output of attn average (its trainer_state.json ",
             "names no averaged_from); it is not replaced; choose a new directory");
}

}  // namespace

void average_checkpoints(const std::vector<std::string>& checkpoints,
                         const std::string& out_arg) {
  ATTN_CHECK(!checkpoints.empty(), "average: no checkpoints given");
  ATTN_CHECK(!out_arg.empty(), "average: the output directory is empty");
  fs::path out = fs::path(out_arg).lexically_normal();
  if (!out.has_filename()) out = out.parent_path();  // "avg/" is "avg"
  const std::string out_dir = out.string();
  check_output(out_dir, checkpoints);
  std::vector<std::pair<std::string, Tensor>> sums;  // f64 accumulators in the first's order
  LoadedCheckpoint first;
  CheckpointData result;
  for (size_t c = 0; c < checkpoints.size(); ++c) {
    LoadedCheckpoint ck = load_checkpoint(checkpoints[c]);
    result.state.averaged_from.push_back({ck.path, ck.state.step});
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
      ATTN_CHECK(it->second.dtype() == first.model.at(name).dtype(), "average: parameter '", name,
                 "' is ", it->second.dtype(), " in ", ck.path, " but ",
                 first.model.at(name).dtype(), " in ", first.path);
      const std::vector<double> v = it->second.to_double_vector();
      double* a = acc.data<double>();
      for (size_t i = 0; i < v.size(); ++i) a[i] += v[i];
    }
  }
  const double inv = 1.0 / static_cast<double>(checkpoints.size());
  for (auto& [name, acc] : sums) {
    double* a = acc.data<double>();
    for (int64_t i = 0; i < acc.numel(); ++i) a[i] *= inv;
    result.model.emplace_back(name, acc.to(first.model.at(name).dtype()));
  }
  result.state.step = first.state.step;
  result.config_yaml = first.config_yaml;
  result.spm_model = first.spm_model;

  // A fresh temporary next to the output (never an existing path), renamed into place.
  const fs::path tmp = out.string() + ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  ATTN_CHECK(fs::create_directory(tmp, ec) && !ec, "average: cannot create the temporary ",
             "directory '", tmp.string(), "': ",
             ec ? ec.message() : std::string("it already exists (left by a killed run?)"));
  try {
    write_checkpoint_files(tmp.string(), result);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  // Replacing a previous average: move it aside, move the new one in, then delete the old.
  const fs::path old = replace_directory(tmp, out, tmp.string() + ".old", "average");
  sync_path(out.has_parent_path() ? out.parent_path().string() : ".", true);
  if (!old.empty()) fs::remove_all(old, ec);
}

std::vector<std::string> last_checkpoints(const std::string& checkpoints_dir, int64_t n) {
  std::vector<std::string> steps = step_checkpoints(checkpoints_dir);
  if (steps.size() > static_cast<size_t>(n)) steps.erase(steps.begin(), steps.end() - n);
  return steps;
}

}  // namespace attn::train
