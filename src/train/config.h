// The run configuration: YAML (sections model, data, train, decode) into typed structs.
// Every key is listed once in visit_fields() (config.cc) with its rule (range, allowed values,
// required-unless, duration syntax), its role (architecture or not) and its meaning; parsing,
// --set overrides, type errors, validate(), the resume check (architecture_difference), the
// resolved-config dump, `attn keys` and docs/CONFIG.md all go through that list, so a key
// cannot exist in one and not the others. Unknown keys are errors that suggest the nearest
// known key; type and range errors name the key path (and the file and line when the value
// came from a file).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace attn::train {

struct ModelSection {
  int64_t d_model = 512;
  int64_t heads = 8;
  int64_t d_ff = 2048;
  int64_t encoder_layers = 6;
  int64_t decoder_layers = 6;
  double dropout = 0.1;
  double attention_dropout = 0.0;
  double relu_dropout = 0.0;
  bool pre_norm = false;
  bool share_embeddings = true;
  // fused | cudnn: attn's own attention kernels, or cuDNN's fused SDPA (CUDA, bf16/fp16
  // training; calls cuDNN cannot run use fused and are logged once). Not architecture: a run
  // may resume with the other one, and `attn translate` always uses fused.
  std::string attention = "fused";
};

struct DataSection {
  // Parallel text, one sentence per line. Ignored when `synthetic` is set.
  std::string train_src, train_tgt, valid_src, valid_tgt;
  // A built-in task instead of files: "" (off), "copy" or "reverse".
  std::string synthetic;
  int64_t synthetic_train_size = 10000;
  int64_t synthetic_valid_size = 200;
  int64_t synthetic_vocab = 32;  // ids 0..3 are pad/unk/bos/eos
  int64_t synthetic_min_len = 2;
  int64_t synthetic_max_len = 12;
  // Joint SentencePiece model: trained from the training text when the file is missing.
  // Empty: <train.output_dir>/spm.model.
  std::string spm_model;
  int64_t vocab_size = 8000;
  std::string spm_type = "bpe";
  int64_t max_tokens = 25000;  // per batch, padding included (per GPU)
  int64_t max_len = 256;       // longer pairs are skipped
};

struct TrainSection {
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  std::string output_dir = "runs/default";
  int64_t max_steps = 100000;
  int64_t max_epochs = 0;  // 0: no limit
  uint64_t seed = 1;
  int64_t log_every = 100;
  int64_t valid_every = 1000;
  int64_t save_every = 1000;
  int64_t keep_last = 5;
  double label_smoothing = 0.1;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.98;
  double adam_eps = 1e-9;
  double weight_decay = 0.0;
  std::string lr_schedule = "noam";  // noam | inverse_sqrt | constant
  double lr_factor = 1.0;            // noam multiplier
  double lr = 5e-4;                  // peak (inverse_sqrt, constant)
  int64_t warmup_steps = 4000;
  double cooldown = 0;               // last fraction of the run with the rate falling to 0
  double clip_norm = 0.0;  // 0: no clipping
  int64_t update_freq = 1;  // gradient accumulation
  // Validation: `loss` always; `bleu` adds BLEU of beam search (valid_beam) on the valid set.
  std::vector<std::string> valid_metrics = {"loss"};
  std::string best_metric = "loss";  // loss | bleu: what `best` and early stopping follow
  int64_t valid_beam = 1;            // beam for validation BLEU (1 = greedy)
  int64_t patience = 0;              // stop after this many validations without improvement
  int64_t average_last = 0;          // at the end, average the last N checkpoints (0: off)
  std::string max_time;              // wall-clock bound, e.g. "90s", "15m", "2h" ("" = none)
  int64_t check_replicas_every = 0;  // data parallel debug: verify ranks hold equal weights
  // auto | fp32 | bf16 | fp16. auto: bf16 on a CUDA device that has it (sm_80+), else fp32.
  // Master weights and Adam state are fp32 whatever this says.
  std::string precision = "auto";
  // auto | dynamic | none. auto: dynamic for fp16, none otherwise.
  std::string loss_scale = "auto";
  double loss_scale_init = 65536.0;
  int64_t loss_scale_window = 2000;  // clean steps before the scale doubles
  double loss_scale_min = 1.0;       // overflowing at this scale stops the run
  bool allow_tf32 = false;           // fp32 GEMMs may use TF32 tensor cores (CUDA)
  // Data parallel: all-reduce gradient buckets of bucket_mb MiB while backward runs.
  bool overlap_allreduce = true;
  double bucket_mb = 25;  // MiB; fractions allowed
  // A safetensors file of model parameters (attn's names, e.g. a checkpoint's
  // model.safetensors or reference_model.py's save_attn_safetensors) that a fresh run starts
  // from instead of the seeded initialisation; every parameter must be present with its shape.
  // A resumed run takes the checkpoint's weights and ignores it. "" = off.
  std::string init_weights;
};

// Seconds in a duration such as "90s", "15m", "1.5h" or "45" (seconds); "" is 0 (no bound).
double parse_duration(const std::string& text, const std::string& key);

struct DecodeSection {
  int64_t beam = 4;
  double alpha = 0.6;
  double max_len_a = 1.0;
  int64_t max_len_b = 50;
  int64_t max_repeats = 0;
};

struct Config {
  ModelSection model;
  DataSection data;
  TrainSection train;
  DecodeSection decode;
};

// Reads `path` (YAML), applies overrides ("a.b=value", YAML scalar syntax), validates.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// Same from YAML text; `source` names it in messages.
Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {});
void apply_override(Config& config, const std::string& assignment);
// Throws attn::Error naming the key of the first invalid value.
void validate(const Config& config);
// The full resolved configuration as YAML (every key, defaults included).
std::string to_yaml(const Config& config);
// Every key with its value as YAML text, in order ("model.d_model" -> "512").
std::vector<std::pair<std::string, std::string>> config_values(const Config& config);
// Every key path ("model.d_model", ...), in order.
std::vector<std::string> config_keys();

// The architecture keys (those whose rule says the weights depend on them: the model's sizes,
// norm placement, sharing; not dropout) that differ between a checkpoint's config and this
// one: "model.d_model is 64 in the checkpoint but 32 in the config", or "" when none does.
std::string architecture_difference(const Config& saved, const Config& config);

// Every key with its default, what it accepts, whether it is architecture, and its meaning,
// in order: `attn keys` prints it, docs/CONFIG.md is generated from it.
struct KeyInfo {
  std::string key, default_value, rule, meaning;
  bool architecture = false;
};
std::vector<KeyInfo> config_key_info();
// The same as a markdown table (the body of docs/CONFIG.md).
std::string config_keys_markdown();

}  // namespace attn::train
