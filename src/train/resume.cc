#include "train/resume.h"

#include <ctime>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"

namespace attn::train {
namespace fs = std::filesystem;

RunCheckpoints::RunCheckpoints(const Config& config, bool fresh, dist::Communicator& comm,
                               bool main, spdlog::logger& log)
    : config_(config), comm_(comm), main_(main), log_(log) {
  const fs::path out = config.train.output_dir;
  std::error_code ec;
  const fs::path ckdir = out / "checkpoints";
  if (main_ && fresh && fs::exists(ckdir) && !fs::is_empty(ckdir)) {
    char stamp[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", std::localtime(&now));
    const fs::path aside = out / (std::string("checkpoints.old-") + stamp);
    fs::rename(ckdir, aside, ec);
    ATTN_CHECK(!ec, "--fresh: cannot move '", ckdir.string(), "' aside: ", ec.message());
    log_.info("--fresh: previous checkpoints moved to {}", aside.string());
  }
  comm_.barrier();  // every rank sees the directory after --fresh
  manager_ = std::make_unique<CheckpointManager>(ckdir.string(), config.train.keep_last);
}

std::string RunCheckpoints::latest_or_none() const {
  return manager_->latest().value_or("(none)");
}

std::optional<LoadedCheckpoint> RunCheckpoints::find_resumable() {
  const fs::path ckdir = manager_->dir();
  const fs::path link = ckdir / "latest";
  std::error_code ec;
  const bool has_link = fs::is_symlink(link, ec);
  const auto latest = manager_->latest();
  const std::vector<std::string> steps = step_checkpoints(ckdir.string());
  const std::string how_to_start_over =
      "pass --fresh to start over (the checkpoints are moved aside, not deleted)";
  if (steps.empty()) {
    ATTN_CHECK(!has_link, "cannot resume: ", link.string(), " points at '",
               fs::read_symlink(link, ec).string(), "', which ",
               latest ? "is not a step-<N> checkpoint directory" : "does not exist",
               ", and there is no other checkpoint in ", ckdir.string(), "; ", how_to_start_over);
    return std::nullopt;
  }
  std::vector<std::pair<std::string, std::string>> damaged;  // path, why
  std::optional<LoadedCheckpoint> found;
  Config saved;
  for (auto it = steps.rbegin(); it != steps.rend() && !found; ++it) {
    try {
      LoadedCheckpoint ck = load_checkpoint(*it);
      saved = parse_config(ck.config_yaml, ck.path + "/config.yaml");
      found = std::move(ck);
    } catch (const Error& e) {
      damaged.emplace_back(*it, e.what());
    }
  }
  if (!found) {
    std::string what;
    for (const auto& [path, why] : damaged) what += (what.empty() ? "" : "; ") + why;
    ATTN_FAIL("cannot resume from ", ckdir.string(), ": no intact checkpoint (", what, "); ",
              how_to_start_over);
  }
  const LoadedCheckpoint& ck = *found;
  const std::string diff = architecture_difference(saved, config_);
  ATTN_CHECK(diff.empty(), "cannot resume from ", ck.path,
             ": the checkpoint is of another architecture (", diff,
             "); use another train.output_dir or pass --fresh");
  comm_.barrier();  // every rank has chosen before rank 0 renames anything
  if (main_) {
    for (const auto& [path, why] : damaged) {
      const std::string aside = manager_->set_aside(path);
      log_.warn("checkpoint {} is damaged ({}); moved to {} and not used", path, why, aside);
    }
    const bool linked = latest && fs::equivalent(*latest, ck.path, ec);
    if (!linked) {
      const std::string link_state =
          !has_link ? "is missing"
          : latest  ? "points at the older " + *latest
                    : "points at '" + fs::read_symlink(link, ec).string() +
                          "', which does not exist";
      log_.warn("{} {}; resuming from the newest intact checkpoint {}", link.string(),
                link_state, ck.path);
      manager_->set_latest(ck.path);
    }
  }
  comm_.barrier();
  log_.info("resuming from {}", ck.path);
  return found;
}

}  // namespace attn::train
