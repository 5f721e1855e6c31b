// Small helpers shared by the CPU test files.
#pragma once

#include <catch2/catch.hpp>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "core/tensor.h"
#include "nn/config.h"
#include "nn/module.h"
#include "train/config.h"

namespace attn::testing {

// Sets (or, with nullopt, unsets) environment variables for one scope and restores them.
class EnvGuard {
 public:
  EnvGuard(std::initializer_list<std::pair<const char*, std::optional<std::string>>> vars) {
    for (const auto& [name, value] : vars) {
      const char* old = std::getenv(name);
      saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
      if (value) {
        ::setenv(name, value->c_str(), 1);
      } else {
        ::unsetenv(name);
      }
    }
  }
  ~EnvGuard() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second) {
        ::setenv(it->first.c_str(), it->second->c_str(), 1);
      } else {
        ::unsetenv(it->first.c_str());
      }
    }
  }
  EnvGuard(const EnvGuard&) = delete;
  EnvGuard& operator=(const EnvGuard&) = delete;

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};


// <tmp>/attn_test_<suite>_<pid>/<name>, removed if it exists (its parent is created).
inline std::filesystem::path scratch_path(const std::string& suite, const std::string& name) {
  namespace fs = std::filesystem;
  const fs::path p =
      fs::temp_directory_path() / ("attn_test_" + suite + "_" + std::to_string(::getpid())) / name;
  fs::remove_all(p);
  fs::create_directories(p.parent_path());
  return p;
}

// configs/copy.yaml writing to `out`, with --set style overrides.
inline train::Config copy_task_config(const std::filesystem::path& out,
                                      const std::vector<std::string>& extra = {}) {
  std::vector<std::string> o = {"train.output_dir=" + out.string()};
  o.insert(o.end(), extra.begin(), extra.end());
  return train::load_config(std::string(ATTN_SOURCE_DIR) + "/configs/copy.yaml", o);
}

// A tiny Transformer (d_model 16, 4 heads, 2+2 layers) with every dropout at 0.1, so that a
// code path left in training mode shows up in comparisons.
inline nn::TransformerConfig tiny_transformer_config(int64_t src_vocab, int64_t tgt_vocab,
                                                     bool pre_norm = false, bool share = true) {
  nn::TransformerConfig c;
  c.src_vocab = src_vocab;
  c.tgt_vocab = tgt_vocab;
  c.d_model = 16;
  c.heads = 4;
  c.d_ff = 24;
  c.encoder_layers = 2;
  c.decoder_layers = 2;
  c.dropout = 0.1;
  c.attention_dropout = 0.1;
  c.relu_dropout = 0.1;
  c.pre_norm = pre_norm;
  c.share_embeddings = share;
  return c;
}

// Converts every parameter of `model` to `dtype` in place (e.g. a whole model in f64 for tests
// that need rounding far below f32's). Modules hold handles that share one TensorImpl per
// parameter, so replacing the impl's storage converts the parameter for every module that uses
// it (tied embeddings included).
inline void convert_parameters(nn::Module& model, DType dtype) {
  for (auto& [name, p] : model.named_parameters()) {
    Tensor c = p.detach().to(dtype);
    TensorImpl* impl = p.impl();
    impl->storage = c.impl()->storage;
    impl->offset = c.impl()->offset;
    impl->dtype = dtype;
  }
}

// The message of the attn::Error that f throws (fails the test if it throws nothing).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("expected an attn::Error");
  return "";
}

// Same dtype, shape and bytes.
inline bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         (a.nbytes() == 0 || std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0);
}

}  // namespace attn::testing

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

extern char** environ;

namespace attn::testing {

// The whole file, bytes as they are; "" when it cannot be read (tests check for that).
inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct CommandResult {
  int status = 0;  // as from waitpid
  std::string out, err;
  int exit_code() const { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
};

// Starts `program` (a path, or a name looked up in PATH) with `args` and extra environment
// entries ("NAME=value"), with stdin, stdout and stderr opened from/to the given paths;
// returns its pid.
inline pid_t spawn_program(const std::string& program, const std::vector<std::string>& args,
                           const std::vector<std::string>& env, const std::string& in,
                           const std::string& out, const std::string& err) {
  std::vector<std::string> all = {program};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) envs.emplace_back(*e);
  envs.insert(envs.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& e : envs) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, in.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid;
  const int rc = posix_spawnp(&pid, program.c_str(), &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  INFO("starting " << program << ": " << std::strerror(rc));
  REQUIRE(rc == 0);
  return pid;
}

// The attn binary under test, as spawn_program. A non-empty `shell_setup` runs first in
// /bin/sh, which then execs attn: resource limits such as "ulimit -v 1048576" (allocations
// beyond it fail the same way on every machine, whatever its overcommit policy) or
// "trap '' XFSZ; ulimit -f 64" (writes beyond it fail like a full disk).
inline pid_t spawn_attn(const std::vector<std::string>& args, const std::vector<std::string>& env,
                        const std::string& in, const std::string& out, const std::string& err,
                        const std::string& shell_setup = "") {
  if (shell_setup.empty()) return spawn_program(ATTN_BINARY, args, env, in, out, err);
  std::vector<std::string> all = {"-c", shell_setup + " && exec \"$0\" \"$@\"", ATTN_BINARY};
  all.insert(all.end(), args.begin(), args.end());
  return spawn_program("/bin/sh", all, env, in, out, err);
}

// Runs a process started by `spawn(in, out, err)`, feeding `input` on stdin, capturing stdout
// (unless `stdout_path` names where it goes instead, e.g. /dev/full) and stderr.
inline CommandResult run_capture(
    const std::function<pid_t(const std::string&, const std::string&, const std::string&)>& spawn,
    const std::string& input, const std::string& stdout_path) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("attn_cmd_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path in = dir / "in", out = dir / "out", err = dir / "err";
  std::ofstream(in, std::ios::binary) << input;
  const pid_t pid =
      spawn(in.string(), stdout_path.empty() ? out.string() : stdout_path, err.string());
  CommandResult r;
  waitpid(pid, &r.status, 0);
  r.out = stdout_path.empty() ? read_text(out) : "";
  r.err = read_text(err);
  return r;
}

// Runs `program` with `args`, feeding `input` on stdin, capturing stdout and stderr.
inline CommandResult run_program_capture(const std::string& program,
                                         const std::vector<std::string>& args,
                                         const std::string& input = "") {
  return run_capture(
      [&](const std::string& in, const std::string& out, const std::string& err) {
        return spawn_program(program, args, {}, in, out, err);
      },
      input, "");
}

// Runs the attn binary with `args` as run_program_capture; `stdout_path` and `shell_setup` as
// for run_capture and spawn_attn.
inline CommandResult run_attn_capture(const std::vector<std::string>& args,
                                      const std::string& input = "",
                                      const std::string& stdout_path = "",
                                      const std::string& shell_setup = "") {
  return run_capture(
      [&](const std::string& in, const std::string& out, const std::string& err) {
        return spawn_attn(args, {}, in, out, err, shell_setup);
      },
      input, stdout_path);
}

}  // namespace attn::testing
