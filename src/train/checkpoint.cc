#include "train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "base/error.h"
#include "core/file.h"
#include "data/corpus.h"
#include "io/safetensors.h"

namespace attn::train {
namespace fs = std::filesystem;

namespace {

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step-%08lld", static_cast<long long>(step));
  return buf;
}

// Points `link` at `target` (a name relative to the link's directory) atomically.
void replace_symlink(const fs::path& link, const std::string& target) {
  const fs::path tmp = link.string() + ".tmp";
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_symlink(target, tmp, ec);
  ATTN_CHECK(!ec, "cannot create link '", tmp.string(), "': ", ec.message());
  fs::rename(tmp, link, ec);
  ATTN_CHECK(!ec, "cannot move link into place at '", link.string(), "': ", ec.message());
}

std::optional<std::string> resolve_link(const fs::path& link) {
  std::error_code ec;
  if (!fs::is_symlink(link, ec)) return std::nullopt;
  const fs::path target = fs::read_symlink(link, ec);
  if (ec) return std::nullopt;
  const fs::path full = link.parent_path() / target;
  if (!fs::is_directory(full, ec)) return std::nullopt;
  return full.string();
}

// Fault injection for the crash-safety tests: ATTN_CRASH_POINT=<name> kills the process
// (SIGKILL, no cleanup) when it reaches that point, as a power cut or OOM killer would.
void crash_point_for_tests(const char* name) {
  const char* want = std::getenv("ATTN_CRASH_POINT");
  if (want && std::strcmp(want, name) == 0) ::kill(::getpid(), SIGKILL);
}

int64_t parse_step(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() <= 5 || name.size() > 5 + 18) return -1;
  for (size_t i = 5; i < name.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  return std::stoll(name.substr(5));
}

}  // namespace

std::vector<std::string> step_checkpoints(const std::string& checkpoints_dir) {
  std::vector<std::pair<int64_t, std::string>> steps;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(checkpoints_dir, ec)) {
    if (e.is_symlink(ec) || !e.is_directory(ec)) continue;
    const int64_t s = parse_step(e.path().filename().string());
    if (s >= 0) steps.emplace_back(s, e.path().string());
  }
  std::sort(steps.begin(), steps.end());
  std::vector<std::string> out;
  for (auto& [step, path] : steps) out.push_back(std::move(path));
  return out;
}

void write_checkpoint_files(const std::string& dir, const CheckpointData& data) {
  const fs::path d(dir);
  io::save_safetensors((d / "model.safetensors").string(), data.model,
                       {{"format", "pt"}, {"attn.kind", "model"}});
  crash_point_for_tests("checkpoint_mid_write");
  io::save_safetensors((d / "optimizer.safetensors").string(), data.optimizer,
                       {{"attn.kind", data.optimizer.empty() ? "none" : "optimizer"}});
  const WriteFileOptions in_place{.atomic = false, .sync = true};
  write_file((d / "trainer_state.json").string(), data.state.to_json().dump(2) + "\n",
             "checkpoint state", in_place);
  write_file((d / "config.yaml").string(), data.config_yaml, "checkpoint config", in_place);
  if (!data.spm_model.empty())
    write_file((d / "spm.model").string(), data.spm_model, "checkpoint vocabulary", in_place);
  sync_path(dir, true);
}

CheckpointManager::CheckpointManager(std::string dir, int64_t keep_last)
    : dir_(std::move(dir)), keep_last_(keep_last) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  ATTN_CHECK(!ec, "cannot create checkpoint directory '", dir_, "': ", ec.message());
}

std::optional<std::string> CheckpointManager::latest() const {
  return resolve_link(fs::path(dir_) / "latest");
}

std::optional<std::string> CheckpointManager::best() const {
  return resolve_link(fs::path(dir_) / "best");
}

void CheckpointManager::set_latest(const std::string& checkpoint) {
  replace_symlink(fs::path(dir_) / "latest", fs::path(checkpoint).filename().string());
  sync_path(dir_, true);
}

std::string CheckpointManager::set_aside(const std::string& checkpoint) {
  std::error_code ec;
  fs::path aside = checkpoint + ".damaged";
  for (int i = 2; fs::exists(aside, ec) || fs::is_symlink(aside, ec); ++i)
    aside = checkpoint + ".damaged-" + std::to_string(i);
  fs::rename(checkpoint, aside, ec);
  ATTN_CHECK(!ec, "cannot move the damaged checkpoint '", checkpoint, "' aside: ", ec.message());
  return aside.string();
}

std::string CheckpointManager::save(int64_t step, const CheckpointData& data, bool is_best) {
  const std::string name = step_name(step);
  const fs::path final_dir = fs::path(dir_) / name;
  const fs::path tmp_dir = fs::path(dir_) / (name + ".tmp");
  std::error_code ec;
  const bool exists = fs::exists(fs::symlink_status(final_dir, ec));
  const bool ours = std::find(written_.begin(), written_.end(), step) != written_.end();
  // Another run's checkpoint (or one a resume passed over) is not ours to replace.
  ATTN_CHECK(!exists || ours, "cannot save checkpoint step ", step, ": '", final_dir.string(),
             "' already exists and was not written by this run (is another run using ",
             dir_, "?); move it away to continue");
  fs::remove_all(tmp_dir, ec);
  fs::create_directories(tmp_dir, ec);
  ATTN_CHECK(!ec, "cannot create '", tmp_dir.string(), "': ", ec.message());
  write_checkpoint_files(tmp_dir.string(), data);

  // Re-saving a step this run wrote: the old one is swapped out first, and `latest` follows
  // it, so that `latest` always names a complete directory.
  const auto current = exists ? latest() : std::nullopt;
  const bool linked = current && fs::equivalent(*current, final_dir, ec);
  replace_directory(tmp_dir, final_dir, fs::path(dir_) / (name + ".old"), "checkpoint", [&] {
    if (linked) replace_symlink(fs::path(dir_) / "latest", name + ".old");
  });
  sync_path(dir_, true);
  if (!ours) written_.push_back(step);
  crash_point_for_tests("checkpoint_before_link");
  replace_symlink(fs::path(dir_) / "latest", name);
  if (is_best) replace_symlink(fs::path(dir_) / "best", name);
  sync_path(dir_, true);
  fs::remove_all(fs::path(dir_) / (name + ".old"), ec);
  prune();
  return final_dir.string();
}

void CheckpointManager::prune() {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string n = e.path().filename().string();
    // Leftovers of an interrupted write.
    if (n.ends_with(".tmp") && parse_step(n.substr(0, n.size() - 4)) >= 0 &&
        !e.is_symlink(ec) && e.is_directory(ec))
      fs::remove_all(e.path(), ec);
  }
  const std::vector<std::string> steps = step_checkpoints(dir_);
  const auto keep_latest = latest();
  const auto keep_best = best();
  const int64_t excess = static_cast<int64_t>(steps.size()) - keep_last_;
  for (int64_t i = 0; i < excess; ++i) {
    const fs::path p = steps[i];
    if ((keep_latest && fs::equivalent(*keep_latest, p, ec)) ||
        (keep_best && fs::equivalent(*keep_best, p, ec)))
      continue;
    fs::remove_all(p, ec);
  }
}

LoadedCheckpoint load_checkpoint(const std::string& path) {
  std::error_code ec;
  fs::path dir = fs::path(path);
  if (fs::is_symlink(dir, ec)) dir = dir.parent_path() / fs::read_symlink(dir, ec);
  ATTN_CHECK(fs::is_directory(dir, ec), "checkpoint '", path, "' does not exist");
  LoadedCheckpoint ck;
  ck.path = dir.string();
  for (const char* f :
       {"model.safetensors", "optimizer.safetensors", "trainer_state.json", "config.yaml"}) {
    ATTN_CHECK(fs::exists(dir / f), "checkpoint '", ck.path, "' is incomplete: ", f, " is missing");
  }
  auto model = io::load_safetensors((dir / "model.safetensors").string());
  ck.model = std::move(model.tensors);
  auto opt = io::load_safetensors((dir / "optimizer.safetensors").string());
  ck.optimizer = std::move(opt.tensors);
  const std::string state_path = (dir / "trainer_state.json").string();
  ck.state = TrainerState::parse(data::read_file_bytes(state_path, "checkpoint state"), state_path);
  ck.config_yaml = data::read_file_bytes((dir / "config.yaml").string(), "checkpoint config");
  if (fs::exists(dir / "spm.model"))
    ck.spm_model = data::read_file_bytes((dir / "spm.model").string(), "checkpoint vocabulary");
  return ck;
}

}  // namespace attn::train
