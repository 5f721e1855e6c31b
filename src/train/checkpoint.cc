#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "core/error.h"
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

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  ATTN_CHECK(fd >= 0, "cannot open '", path, "' to sync it: ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  ATTN_CHECK(rc == 0, "fsync of '", path, "' failed: ", std::strerror(err));
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
  if (name.rfind("step-", 0) != 0 || name.size() <= 5) return -1;
  for (size_t i = 5; i < name.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  return std::stoll(name.substr(5));
}

}  // namespace

void write_file_synced(const std::string& path, const std::string& content) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    ATTN_CHECK(out.good(), "cannot write '", path, "': ", std::strerror(errno));
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.flush();
    ATTN_CHECK(out.good(), "writing '", path, "' failed (disk full?)");
  }
  fsync_path(path, false);
}

void write_file_atomic(const std::string& path, const std::string& content) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (fs::exists(st) && !fs::is_regular_file(st)) {
    // Renaming over a device or pipe would replace it instead of writing to it.
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "wb"),
                                                     &std::fclose);
    ATTN_CHECK(f, "cannot write '", path, "': ", std::strerror(errno));
    const size_t put = std::fwrite(content.data(), 1, content.size(), f.get());
    const int flushed = std::fflush(f.get());
    ATTN_CHECK(put == content.size() && flushed == 0, "writing '", path,
               "' failed: ", std::strerror(errno));
    return;
  }
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  try {
    write_file_synced(tmp, content);
  } catch (const Error&) {
    fs::remove(tmp, ec);
    throw;
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    ATTN_FAIL("cannot move '", tmp, "' to '", path, "': ", ec.message());
  }
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

std::string CheckpointManager::save(int64_t step, const CheckpointData& data, bool is_best) {
  const std::string name = step_name(step);
  const fs::path final_dir = fs::path(dir_) / name;
  const fs::path tmp_dir = fs::path(dir_) / (name + ".tmp");
  std::error_code ec;
  fs::remove_all(tmp_dir, ec);
  fs::create_directories(tmp_dir, ec);
  ATTN_CHECK(!ec, "cannot create '", tmp_dir.string(), "': ", ec.message());

  io::save_safetensors((tmp_dir / "model.safetensors").string(), data.model,
                       {{"format", "pt"}, {"attn.kind", "model"}});
  crash_point_for_tests("checkpoint_mid_write");
  io::save_safetensors((tmp_dir / "optimizer.safetensors").string(), data.optimizer,
                       {{"attn.kind", "optimizer"}});
  write_file_synced((tmp_dir / "trainer_state.json").string(), data.trainer_state.dump(2) + "\n");
  write_file_synced((tmp_dir / "config.yaml").string(), data.config_yaml);
  if (!data.spm_model.empty()) write_file_synced((tmp_dir / "spm.model").string(), data.spm_model);
  fsync_path(tmp_dir.string(), true);

  if (fs::exists(final_dir)) {
    // Re-saving a step (e.g. after a resume at the same step): swap the old one out first so
    // there is never a moment without a complete directory under the final name's link.
    const fs::path old = fs::path(dir_) / (name + ".old");
    fs::remove_all(old, ec);
    if (latest() && fs::equivalent(*latest(), final_dir)) {
      fs::rename(final_dir, old, ec);
      ATTN_CHECK(!ec, "cannot move '", final_dir.string(), "' aside: ", ec.message());
      replace_symlink(fs::path(dir_) / "latest", name + ".old");
    } else {
      fs::rename(final_dir, old, ec);
    }
  }
  fs::rename(tmp_dir, final_dir, ec);
  ATTN_CHECK(!ec, "cannot move '", tmp_dir.string(), "' into place: ", ec.message());
  fsync_path(dir_, true);
  crash_point_for_tests("checkpoint_before_link");
  replace_symlink(fs::path(dir_) / "latest", name);
  if (is_best) replace_symlink(fs::path(dir_) / "best", name);
  fsync_path(dir_, true);
  fs::remove_all(fs::path(dir_) / (name + ".old"), ec);
  prune();
  return final_dir.string();
}

void CheckpointManager::prune() {
  std::vector<std::pair<int64_t, fs::path>> steps;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    if (!e.is_directory() || e.is_symlink()) continue;
    const std::string n = e.path().filename().string();
    const int64_t s = parse_step(n);
    if (s >= 0) steps.emplace_back(s, e.path());
    // Leftovers of an interrupted write.
    if (n.size() > 4 && n.compare(n.size() - 4, 4, ".tmp") == 0) fs::remove_all(e.path(), ec);
  }
  std::sort(steps.begin(), steps.end());
  const auto keep_latest = latest();
  const auto keep_best = best();
  const int64_t excess = static_cast<int64_t>(steps.size()) - keep_last_;
  for (int64_t i = 0; i < excess; ++i) {
    const fs::path& p = steps[i].second;
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
  try {
    ck.trainer_state = nlohmann::json::parse(data::read_file_bytes(state_path, "checkpoint state"));
  } catch (const nlohmann::json::exception& e) {
    ATTN_FAIL("checkpoint state '", state_path, "' is corrupt: ", e.what());
  }
  ck.config_yaml = data::read_file_bytes((dir / "config.yaml").string(), "checkpoint config");
  if (fs::exists(dir / "spm.model"))
    ck.spm_model = data::read_file_bytes((dir / "spm.model").string(), "checkpoint vocabulary");
  return ck;
}

}  // namespace attn::train
