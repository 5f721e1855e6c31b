// The attn binary. Subcommands are added as the layers below them land; every error becomes
// one line on stderr and a non-zero exit code (library code only throws).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <iostream>

#include "core/device.h"
#include "core/error.h"

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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"attn: train Transformers for machine translation"};
  app.set_version_flag("--version", std::string("attn ") + ATTN_VERSION);
  app.require_subcommand(1);
  auto* devices = app.add_subcommand("devices", "List the devices attn can use");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (devices->parsed()) return run_devices();
  } catch (const attn::Error& e) {
    std::fprintf(stderr, "attn: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attn: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
