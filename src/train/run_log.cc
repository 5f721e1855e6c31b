#include "train/run_log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "base/error.h"

namespace attn::train {
namespace fs = std::filesystem;
using json = nlohmann::json;

void append_json_line(std::ofstream& file, const json& record, const std::string& path) {
  file << record.dump() << "\n";
  file.flush();
  ATTN_CHECK(file.good(), "cannot write '", path, "': ", std::strerror(errno));
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", static_cast<long long>(t / 3600),
                static_cast<long long>(t / 60 % 60), static_cast<long long>(t % 60));
  return buf;
}

void TrainWindow::add(const StepResult& r) {
  if (r.skipped) {
    skipped++;
  } else {
    gnorm += r.grad_norm;
    steps++;
  }
  loss += r.loss;
  nll += r.nll;
  correct += r.correct;
  tokens += r.tokens;
}

double TrainWindow::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

RunLog::RunLog(const std::string& output_dir, bool main, int rank)
    : metrics_path_((fs::path(output_dir) / "metrics.jsonl").string()),
      main_(main),
      tty_(::isatty(STDERR_FILENO) == 1) {
  const fs::path out = output_dir;
  std::error_code ec;
  fs::create_directories(out, ec);
  ATTN_CHECK(!ec, "cannot create train.output_dir '", out.string(), "': ", ec.message());
  auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  if (main_) {
    auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>((out / "train.log").string());
    log_ = std::make_shared<spdlog::logger>("train", spdlog::sinks_init_list{console, file});
    metrics_.open(metrics_path_, std::ios::app);
    ATTN_CHECK(metrics_.good(), "cannot write '", metrics_path_, "'");
  } else {
    // Other ranks compute the same numbers; only their warnings and errors are shown.
    log_ = std::make_shared<spdlog::logger>("train", console);
    log_->set_level(spdlog::level::warn);
  }
  log_->set_pattern(main_ ? "[%Y-%m-%d %H:%M:%S] %v"
                          : "[%Y-%m-%d %H:%M:%S] [rank " + std::to_string(rank) + "] %v");
  log_->flush_on(spdlog::level::info);
}

void RunLog::record(const json& record) {
  if (main_) append_json_line(metrics_, record, metrics_path_);
}

void RunLog::train_line(const TrainWindow& w, const TrainLine& line) {
  clear_progress();
  const double loss = w.loss / w.tokens, nll = w.nll / w.tokens;
  const double ppl = std::exp(nll), acc = w.correct / w.tokens;
  const double gnorm = w.steps > 0 ? w.gnorm / static_cast<double>(w.steps) : 0.0;
  const double tok_s = w.tokens / w.seconds();
  log_->info(
      "step {}/{} | loss {:.4f} | nll {:.4f} | ppl {:.2f} | acc {:.2f}% | lr {:.3e} | "
      "gnorm {:.3f} | {:.0f} tgt tok/s | epoch {} | elapsed {} | ETA {}",
      line.step, line.max_steps, loss, nll, ppl, 100 * acc, line.lr, gnorm, tok_s,
      line.epoch + 1, format_duration(line.elapsed_s), format_duration(line.eta_s));
  record(json{{"type", "train"},
              {"step", line.step},
              {"loss", loss},
              {"nll", nll},
              {"ppl", ppl},
              {"accuracy", acc},
              {"lr", line.lr},
              {"gnorm", gnorm},
              {"tgt_tokens_per_s", tok_s},
              {"epoch", line.epoch},
              {"elapsed_s", line.elapsed_s}});
}

void RunLog::progress(int64_t step, int64_t max_steps, double loss) {
  if (!tty_) return;
  std::fprintf(stderr, "\r\033[Kstep %lld/%lld | loss %.4f", static_cast<long long>(step),
               static_cast<long long>(max_steps), loss);
  std::fflush(stderr);
}

void RunLog::clear_progress() {
  if (tty_) std::fprintf(stderr, "\r\033[K");
}

}  // namespace attn::train
