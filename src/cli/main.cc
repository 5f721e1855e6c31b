// The attn binary. Subcommands are added as the layers below them land; every error becomes
// one line on stderr and a non-zero exit code (library code only throws).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <new>
#include <omp.h>
#include <utility>

#include "bench/batches.h"
#include "bench/bench_kernels.h"
#include "bench/bench_train.h"
#include "core/device.h"
#include "base/error.h"
#include "core/file.h"
#include "kernels/cpu_isa.h"
#include "kernels/gemm.h"
#include "dist/launch.h"
#include "eval/cli_commands.h"
#include "train/average.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/plot.h"
#include "train/trainer.h"
#include "train/translate.h"

namespace {

int run_devices() {
  // Both may fail on a bad ATTN_CPU_GEMM / ATTN_CPU_ISA: before anything is printed.
  const std::string gemm = attn::kernels::gemm_cpu_library();
  const std::string isa = attn::kernels::cpu_isa_name();
  std::cout << "cpu (" << gemm << "; attention and dropout " << isa << ", " << omp_get_max_threads()
            << " threads)\n";
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

int run_average(const std::string& out, const std::vector<std::string>& checkpoints) {
  attn::train::average_checkpoints(checkpoints, out);
  std::cout << "averaged " << checkpoints.size() << " checkpoints into " << out << "\n";
  return 0;
}

int run_info(const std::string& path) {
  const attn::train::LoadedCheckpoint ck = attn::train::load_checkpoint(path);
  int64_t params = 0;
  for (const auto& [name, t] : ck.model) params += t.numel();
  std::cout << "checkpoint: " << ck.path << "\n"
            << "step: " << ck.state.step << "\n"
            << "parameters: " << params << " in " << ck.model.size() << " tensors\n"
            << "vocabulary: " << (ck.spm_model.empty() ? "none (synthetic task)" : "spm.model")
            << "\n"
            << "state: " << ck.state.to_json().dump() << "\n";
  // The keys a resume must keep (the architecture: config_key_info's role), then all of them.
  const auto config = attn::train::parse_config(ck.config_yaml, ck.path + "/config.yaml");
  const auto values = attn::train::config_values(config);
  const auto keys = attn::train::config_key_info();
  std::cout << "architecture:";
  for (size_t i = 0; i < keys.size(); ++i)
    if (keys[i].architecture) std::cout << " " << values[i].first << "=" << values[i].second;
  std::cout << "\nconfig:\n" << ck.config_yaml;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"attn: train Transformers for machine translation"};
  app.set_version_flag("--version", std::string("attn ") + ATTN_VERSION);
  app.require_subcommand(1);
  auto* devices = app.add_subcommand("devices", "List the devices attn can use");

  auto* train = app.add_subcommand(
      "train",
      "Train (or resume: rerunning the same command continues from the latest checkpoint)");
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
  train->add_option("--dump-batches", flags.dump_batches,
                    "Write every step's batches (token ids) and learning rate to this file, one "
                    "JSON line per step (for scripts/bench/parity.py)");
  auto* average = app.add_subcommand("average", "Average the weights of several checkpoints");
  std::string average_out;
  std::vector<std::string> average_in;
  average->add_option("-o,--output", average_out, "Output checkpoint directory")->required();
  average->add_option("checkpoints", average_in, "Checkpoint directories")->required();

  auto* info = app.add_subcommand("info", "Show a checkpoint's step, size and config");
  auto* keys = app.add_subcommand(
      "keys", "List every config key: default, what it accepts, meaning (docs/CONFIG.md)");
  std::string info_path;
  info->add_option("checkpoint", info_path, "Checkpoint directory (or latest/best link)")
      ->required();

  auto* translate = app.add_subcommand(
      "translate", "Translate sentences with a checkpoint (beam search); input order is kept");
  std::string tr_model, tr_input = "-", tr_output = "-";
  attn::train::TranslateOptions tr_opt;
  translate
      ->add_option("-m,--model", tr_model, "Checkpoint directory (e.g. runs/x/checkpoints/best)")
      ->required();
  translate->add_option("-i,--input", tr_input, "Source sentences, one per line ('-' = stdin)");
  translate->add_option("-o,--output", tr_output, "Translations ('-' = stdout)");
  translate->add_option("--beam", tr_opt.beam_size,
                        "Beam size (1 = greedy); default from the checkpoint's decode.beam");
  translate->add_option("--alpha", tr_opt.alpha, "Length penalty ((5+|Y|)/6)^alpha");
  translate->add_option("--max-len-a", tr_opt.max_len_a, "Output length limit a*src_len+b: a");
  translate->add_option("--max-len-b", tr_opt.max_len_b, "Output length limit a*src_len+b: b");
  translate->add_option("--max-repeats", tr_opt.max_repeats,
                        "No block of 1-4 tokens repeated back to back more often than this "
                        "(or than the source repeats one); 0 = off; default decode.max_repeats");
  translate->add_option("--nbest", tr_opt.beam.nbest,
                        "Hypotheses per sentence (Moses n-best format when > 1)");
  translate->add_option("--max-tokens", tr_opt.max_tokens, "Tokens per batch, padding included");
  translate->add_flag("--scores", tr_opt.scores, "Print 'id ||| translation ||| score' lines");
  translate->add_option("--attention-svg", tr_opt.attention_svg_dir,
                        "Write a cross-attention heatmap per sentence (last layer, each head and "
                        "the average) into DIR");

  auto* plot = app.add_subcommand(
      "plot", "Draw training curves (loss, BLEU, learning rate, tokens/s) of runs into one SVG");
  std::vector<std::string> plot_runs;
  std::string plot_output;
  plot->add_option("runs", plot_runs, "Run directories (or their metrics.jsonl), overlaid")
      ->required();
  plot->add_option("-o,--output", plot_output, "SVG file to write (e.g. curves.svg; - = stdout)")->required();

  auto* bleu = app.add_subcommand(
      "bleu", "Corpus BLEU, identical to sacreBLEU 2.6.0's defaults (13a, exp smoothing)");
  auto* chrf = app.add_subcommand("chrf", "Corpus chrF, identical to sacreBLEU 2.6.0's defaults");
  std::vector<std::string> eval_files;
  bool eval_lowercase = false, eval_json = false;
  for (CLI::App* sub : {bleu, chrf}) {
    sub->add_option("files", eval_files, "HYP REF [REF...]: hypotheses ('-' = stdin), references")
        ->required()
        ->expected(2, -1);
    sub->add_flag("--lc,--lowercase", eval_lowercase, "Lowercase both sides (sacreBLEU -lc)");
    sub->add_flag("--json", eval_json, "Print one JSON object with full-precision statistics");
  }
  auto* bench = app.add_subcommand("bench", "Benchmarks (see scripts/bench/README.md)");
  bench->require_subcommand(1);
  auto* bench_kernels = bench->add_subcommand(
      "kernels", "Time attention, layer norm, cross-entropy, copy and matmul on one device");
  std::string bk_device = "auto", bk_json;
  bool bk_quick = false;
  int bk_warmup = -1, bk_reps = 0;
  bench_kernels->add_option("--device", bk_device, "cpu, cuda, cuda:N or auto (cuda:0 if any)");
  bench_kernels->add_option("--json", bk_json, "Also write the results as JSON to FILE");
  bench_kernels->add_flag("--quick", bk_quick, "Tiny shapes (a smoke test; runs on a CPU)");
  bench_kernels->add_option("--warmup", bk_warmup, "Untimed calls per row (default 5, quick 1)");
  bench_kernels->add_option("--reps", bk_reps, "Timed calls per row (default 20, quick 3)");

  auto* bench_batches = bench->add_subcommand(
      "batches", "Write synthetic MT-like batches (lengths only) for bench train / bench_train.py");
  std::string bb_out;
  attn::bench::BatchGenOptions bb_opt;
  bench_batches->add_option("-o,--out", bb_out, "Output JSON file")->required();
  bench_batches->add_option("--tokens", bb_opt.max_tokens,
                            "Max padded tokens per batch: max(B*S, B*T)");
  bench_batches->add_option("--seed", bb_opt.seed, "Seed of the length distribution");
  bench_batches->add_option("--count", bb_opt.count, "Number of batches");
  bench_batches->add_option("--vocab,--src-vocab", bb_opt.vocab,
                            "Vocabulary size (shared; token ids in [4, V))");
  bench_batches->add_option("--max-len", bb_opt.max_len, "Longest sentence (tokens incl. eos)");

  auto* bench_train = bench->add_subcommand(
      "train", "Time training steps (StepEngine) of the config's model on synthetic batches");
  std::string bt_config;
  std::vector<std::string> bt_overrides;
  attn::bench::TrainBenchFlags bt_flags;
  bench_train->add_option("-c,--config", bt_config, "YAML config (its model and train sections)")
      ->required();
  bench_train->add_option("--set", bt_overrides, "Override a config key (as attn train)")
      ->take_all()
      ->allow_extra_args(false);
  bench_train->add_option("--batches", bt_flags.batches_path,
                          "Batch file from `attn bench batches` (default: generated in memory "
                          "from data.max_tokens and train.seed)");
  bench_train->add_option("--steps", bt_flags.steps, "Timed steps");
  bench_train->add_option("--warmup", bt_flags.warmup, "Untimed steps first");
  bench_train->add_option("--device", bt_flags.device, "Default: the config's train.device");
  bench_train
      ->add_option("--precision", bt_flags.precision,
                   "fp32, bf16 or fp16 (default: the config's train.precision)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16", "auto"}));
  bench_train->add_option("--json", bt_flags.json_path, "Also write the result as JSON to FILE");
  bench_train->add_option("--vocab", bt_flags.vocab, "Vocabulary of in-memory batches");
  bench_train->add_option("--count", bt_flags.count, "Number of in-memory batches");
  bench_train->add_flag("--profile", bt_flags.profile,
                        "Also print the wall time of every op's kernels over the timed steps "
                        "(CPU only)");

  // sacreBLEU spells the flag -lc; CLI11 only takes one-letter short options.
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "-lc") == 0) argv[i] = const_cast<char*>("--lc");

  // Usage errors are one line too, and name what was not understood.
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return std::string("attn: error: ") + e.what() + " (see attn --help)\n";
  });
  if (argc > 1 && argv[1][0] != '-') {
    std::string known;
    bool found = false;
    for (const CLI::App* sub : std::as_const(app).get_subcommands([](const CLI::App*) { return true; })) {
      known += (known.empty() ? "" : ", ") + sub->get_name();
      found |= sub->get_name() == argv[1];
    }
    if (!found) {
      std::fprintf(stderr, "attn: error: unknown command '%s' (commands: %s)\n", argv[1],
                   known.c_str());
      return 1;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 1;  // --help and --version succeed; usage errors are errors
  }
  try {
    const int rc = [&] {
      if (devices->parsed()) return run_devices();
      if (train->parsed()) return run_train(config_path, overrides, flags);
      if (average->parsed()) return run_average(average_out, average_in);
      if (info->parsed()) return run_info(info_path);
      if (keys->parsed()) {
        std::cout << attn::train::config_keys_markdown();
        return 0;
      }
      if (translate->parsed())
        return attn::train::run_translate(tr_model, tr_input, tr_output, tr_opt);
      if (plot->parsed()) return attn::train::run_plot_command(plot_runs, plot_output);
      if (bleu->parsed())
        return attn::eval::run_bleu_command(eval_files, eval_lowercase, eval_json, std::cout);
      if (bench_kernels->parsed())
        return attn::bench::run_bench_kernels_command(bk_device, bk_json, bk_quick, bk_warmup,
                                                      bk_reps);
      if (bench_batches->parsed()) return attn::bench::run_bench_batches_command(bb_out, bb_opt);
      if (bench_train->parsed())
        return attn::bench::run_bench_train_command(bt_config, bt_overrides, bt_flags);
      if (chrf->parsed())
        return attn::eval::run_chrf_command(eval_files, eval_lowercase, eval_json, std::cout);
      return 0;
    }();
    // Every command's result on standard output must have arrived (a full disk, a closed
    // pipe); files are checked where they are written (attn::write_file).
    attn::check_standard_output();
    return rc;
  } catch (const attn::Error& e) {
    // One line naming the rank (in a job of several); one failing rank must take the job
    // down: returning would leave the others waiting in their next collective.
    attn::dist::print_failure("error", e.what());
    if (attn::dist::mpi_active()) attn::dist::abort_job(1);
    return 1;
  } catch (const std::bad_alloc&) {
    // Tensors report their own size and shape; this is any other allocation.
    attn::dist::print_failure("error",
                              "out of memory (an allocation outside the tensors failed; a size "
                              "setting is probably too large)");
    if (attn::dist::mpi_active()) attn::dist::abort_job(1);
    return 1;
  } catch (const std::exception& e) {
    attn::dist::print_failure("internal error", e.what());
    if (attn::dist::mpi_active()) attn::dist::abort_job(2);
    return 2;
  }
}
