// The attn binary. Subcommands are added as the layers below them land; every error becomes
// one line on stderr and a non-zero exit code (library code only throws).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <iostream>

#include "core/device.h"
#include "core/error.h"
#include "train/config.h"
#include "train/trainer.h"

namespace {

int run_devices() {
  std::cout << "cpu\n";
  if (!attn::cuda_built()) {
    std::cout << "cuda: not built (configure with -DATTN_CUDA=ON)\n";
    return 0;
  }
  const int n = attn::cuda_device_count();
  if (n == 0) std::cout << "cuda: built, no device visible\n";
  for (int i = 0; i < n; ++i) std::cout << attn::Device::cuda(i) << "\n";
  return 0;
}

int run_train(const std::string& config_path, const std::vector<std::string>& overrides,
              const attn::train::TrainFlags& flags) {
  const attn::train::Config config = attn::train::load_config(config_path, overrides);
  attn::train::install_stop_signal_handlers();
  const attn::train::TrainResult r = attn::train::train(config, flags);
  // Interrupted runs exit like the signal that stopped them, after their checkpoint is safe.
  return r.stop_signal != 0 ? 128 + r.stop_signal : 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"attn: train Transformers for machine translation"};
  app.set_version_flag("--version", std::string("attn ") + ATTN_VERSION);
  app.require_subcommand(1);
  auto* devices = app.add_subcommand("devices", "List the devices attn can use");

  auto* train = app.add_subcommand(
      "train", "Train (or resume: rerunning the same command continues from the latest checkpoint)");
  std::string config_path;
  std::vector<std::string> overrides;
  attn::train::TrainFlags flags;
  train->add_option("-c,--config", config_path, "YAML config (see configs/)")->required();
  train->add_option("--set", overrides, "Override a config key: --set train.max_steps=2000")
      ->take_all()
      ->allow_extra_args(false);
  train->add_flag("--fresh", flags.fresh,
                  "Start from scratch; existing checkpoints are moved aside, not deleted");
  train->add_flag("--reset-optimizer", flags.reset_optimizer,
                  "Resume the weights and data position but restart Adam and the LR schedule");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (devices->parsed()) return run_devices();
    if (train->parsed()) return run_train(config_path, overrides, flags);
  } catch (const attn::Error& e) {
    std::fprintf(stderr, "attn: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attn: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
