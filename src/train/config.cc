#include "train/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <variant>

#include "core/error.h"
#include "data/batcher.h"
#include "data/corpus.h"
#include "data/utf8.h"
#include "decode/beam_search.h"
#include "train/model_config.h"

namespace attn::train {
namespace {

constexpr int64_t kMaxVocab = nn::TransformerConfig::kMaxVocab;

using StringList = std::vector<std::string>;
using FieldPtr = std::variant<int64_t*, uint64_t*, double*, bool*, std::string*, StringList*>;

// The shortest text that reads back as the same double (the writer of every float key, so
// that whatever validation accepts is written in a form the reader accepts).
std::string format_double(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

std::string join(const StringList& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + v[i];
  return out;
}

// The one list of keys. `v(path, pointer)` is called for every field.
template <class V>
void visit_fields(Config& c, V&& v) {
  v("model.d_model", &c.model.d_model);
  v("model.heads", &c.model.heads);
  v("model.d_ff", &c.model.d_ff);
  v("model.encoder_layers", &c.model.encoder_layers);
  v("model.decoder_layers", &c.model.decoder_layers);
  v("model.dropout", &c.model.dropout);
  v("model.attention_dropout", &c.model.attention_dropout);
  v("model.relu_dropout", &c.model.relu_dropout);
  v("model.pre_norm", &c.model.pre_norm);
  v("model.share_embeddings", &c.model.share_embeddings);
  v("model.attention", &c.model.attention);

  v("data.train_src", &c.data.train_src);
  v("data.train_tgt", &c.data.train_tgt);
  v("data.valid_src", &c.data.valid_src);
  v("data.valid_tgt", &c.data.valid_tgt);
  v("data.synthetic", &c.data.synthetic);
  v("data.synthetic_train_size", &c.data.synthetic_train_size);
  v("data.synthetic_valid_size", &c.data.synthetic_valid_size);
  v("data.synthetic_vocab", &c.data.synthetic_vocab);
  v("data.synthetic_min_len", &c.data.synthetic_min_len);
  v("data.synthetic_max_len", &c.data.synthetic_max_len);
  v("data.spm_model", &c.data.spm_model);
  v("data.vocab_size", &c.data.vocab_size);
  v("data.spm_type", &c.data.spm_type);
  v("data.max_tokens", &c.data.max_tokens);
  v("data.max_len", &c.data.max_len);

  v("train.device", &c.train.device);
  v("train.output_dir", &c.train.output_dir);
  v("train.max_steps", &c.train.max_steps);
  v("train.max_epochs", &c.train.max_epochs);
  v("train.seed", &c.train.seed);
  v("train.log_every", &c.train.log_every);
  v("train.valid_every", &c.train.valid_every);
  v("train.save_every", &c.train.save_every);
  v("train.keep_last", &c.train.keep_last);
  v("train.label_smoothing", &c.train.label_smoothing);
  v("train.adam_beta1", &c.train.adam_beta1);
  v("train.adam_beta2", &c.train.adam_beta2);
  v("train.adam_eps", &c.train.adam_eps);
  v("train.weight_decay", &c.train.weight_decay);
  v("train.lr_schedule", &c.train.lr_schedule);
  v("train.lr_factor", &c.train.lr_factor);
  v("train.lr", &c.train.lr);
  v("train.warmup_steps", &c.train.warmup_steps);
  v("train.clip_norm", &c.train.clip_norm);
  v("train.update_freq", &c.train.update_freq);
  v("train.valid_metrics", &c.train.valid_metrics);
  v("train.best_metric", &c.train.best_metric);
  v("train.valid_beam", &c.train.valid_beam);
  v("train.patience", &c.train.patience);
  v("train.average_last", &c.train.average_last);
  v("train.max_time", &c.train.max_time);
  v("train.check_replicas_every", &c.train.check_replicas_every);
  v("train.precision", &c.train.precision);
  v("train.loss_scale", &c.train.loss_scale);
  v("train.loss_scale_init", &c.train.loss_scale_init);
  v("train.loss_scale_window", &c.train.loss_scale_window);
  v("train.loss_scale_min", &c.train.loss_scale_min);
  v("train.allow_tf32", &c.train.allow_tf32);
  v("train.overlap_allreduce", &c.train.overlap_allreduce);
  v("train.bucket_mb", &c.train.bucket_mb);
  v("train.init_weights", &c.train.init_weights);

  v("decode.beam", &c.decode.beam);
  v("decode.alpha", &c.decode.alpha);
  v("decode.max_len_a", &c.decode.max_len_a);
  v("decode.max_len_b", &c.decode.max_len_b);
}

FieldPtr find_field(Config& c, const std::string& key) {
  FieldPtr found;
  bool ok = false;
  visit_fields(c, [&](const char* path, auto* ptr) {
    if (!ok && key == path) {
      found = ptr;
      ok = true;
    }
  });
  if (!ok) return FieldPtr{static_cast<int64_t*>(nullptr)};
  return found;
}

bool is_null(const FieldPtr& f) {
  return std::visit([](auto* p) { return p == nullptr; }, f);
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string unknown_key_message(const std::string& key) {
  std::string best;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const std::string& k : config_keys()) {
    // Edit distance over whole key paths ("train.lr" vs "train.lr_schedule").
    const size_t d = edit_distance(key, k);
    if (d < best_d) {
      best_d = d;
      best = k;
    }
  }
  std::string msg = "unknown key '" + key + "'";
  if (best_d <= std::max<size_t>(3, key.size() / 3)) msg += " (did you mean '" + best + "'?)";
  return msg;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  const auto e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// Sets a field from a YAML scalar; `where` prefixes messages ("cfg.yaml:12: " or "--set ").
void set_field(const FieldPtr& field, const std::string& key, const YAML::Node& node,
               const std::string& where) {
  if (auto* list = std::get_if<StringList*>(&field)) {
    (*list)->clear();
    if (node.IsScalar()) {
      (*list)->push_back(node.Scalar());
      return;
    }
    ATTN_CHECK(node.IsSequence(), where, key, ": expected a list such as [loss, bleu]");
    for (const auto& item : node) {
      ATTN_CHECK(item.IsScalar(), where, key, ": list items must be single values");
      (*list)->push_back(item.Scalar());
    }
    return;
  }
  ATTN_CHECK(node.IsScalar(), where, key, ": expected a single value, got a ",
             node.IsMap() ? "mapping" : node.IsSequence() ? "list" : "null");
  const std::string text = node.Scalar();
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>) {
          *p = text;
        } else if constexpr (std::is_same_v<T, StringList>) {
          // handled above
        } else if constexpr (std::is_same_v<T, bool>) {
          bool v;
          ATTN_CHECK(YAML::convert<bool>::decode(node, v), where, key,
                     ": expected true or false, got '", text, "'");
          *p = v;
        } else if constexpr (std::is_same_v<T, double>) {
          // No setting means anything with infinity or NaN (nor with 1e999, which reads as
          // out of range), and the config written into checkpoints must read back.
          double v = 0;
          ATTN_CHECK(YAML::convert<double>::decode(node, v) && std::isfinite(v), where, key,
                     ": expected a finite number, got '", text, "'");
          *p = v;
        } else {
          // Integers: accept "25000" and "2.5e4" when the value is integral.
          long double v;
          std::istringstream is(text);
          is >> v;
          const bool in_range = !is.fail() && std::fabs(v) < 0x1p63L;
          ATTN_CHECK(in_range && is.eof() && v == static_cast<long double>(static_cast<int64_t>(v)),
                     where, key, ": expected an integer",
                     in_range || is.fail() ? "" : " below 2^63", ", got '", text, "'");
          if constexpr (std::is_same_v<T, uint64_t>) {
            ATTN_CHECK(v >= 0, where, key, ": expected a non-negative integer, got '", text, "'");
          }
          *p = static_cast<T>(v);
        }
      },
      field);
}

void apply_node(Config& c, const YAML::Node& node, const std::string& prefix,
                const std::string& source) {
  for (const auto& kv : node) {
    const std::string where =
        source + ":" + std::to_string(kv.first.Mark().line + 1) + ": ";
    ATTN_CHECK(kv.first.IsScalar(), where, "a key must be a name such as d_model, got a ",
               kv.first.IsMap() ? "mapping" : kv.first.IsSequence() ? "list" : "null");
    const std::string& name = kv.first.Scalar();
    const std::string key = prefix.empty() ? name : prefix + "." + name;
    bool is_section = false;
    for (const std::string& k : config_keys())
      if (k.rfind(key + ".", 0) == 0) is_section = true;
    if (is_section) {
      if (kv.second.IsNull()) continue;  // "decode:" with nothing under it
      ATTN_CHECK(kv.second.IsMap(), where, key, ": expected a section of keys (such as ", key,
                 ".", "...: value), got a ", kv.second.IsSequence() ? "list" : "single value");
      apply_node(c, kv.second, key, source);
      continue;
    }
    ATTN_CHECK(!kv.second.IsMap(), where, unknown_key_message(key));
    const FieldPtr f = find_field(c, key);
    ATTN_CHECK(!is_null(f), where, unknown_key_message(key));
    set_field(f, key, kv.second, where);
  }
}

template <class T>
void check_range(bool ok, const char* key, T value, const char* expect) {
  ATTN_CHECK(ok, "config: ", key, " = ", value, " is out of range (", expect, ")");
}

}  // namespace

double parse_duration(const std::string& text, const std::string& key) {
  if (text.empty()) return 0.0;
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(text, &pos);
  } catch (const std::exception&) {
    ATTN_FAIL("config: ", key, ": expected a duration such as 90s, 15m or 2h, got '", text, "'");
  }
  const std::string unit = trim(text.substr(pos));
  double mult = 0;
  if (unit.empty() || unit == "s") mult = 1;
  if (unit == "m" || unit == "min") mult = 60;
  if (unit == "h") mult = 3600;
  if (unit == "d") mult = 86400;
  ATTN_CHECK(mult > 0 && v > 0, "config: ", key,
             ": expected a positive duration such as 90s, 15m or 2h, got '", text, "'");
  return v * mult;
}

std::vector<std::string> config_keys() {
  Config c;
  std::vector<std::string> keys;
  visit_fields(c, [&](const char* path, auto*) { keys.emplace_back(path); });
  return keys;
}

void apply_override(Config& config, const std::string& assignment) {
  // YAML text is Unicode; other bytes would not survive the round trip through config.yaml.
  if (const auto bad = data::find_invalid_utf8(assignment))
    ATTN_FAIL("--set: invalid UTF-8 at byte ", bad->offset + 1, " (", bad->reason, ")");
  const auto eq = assignment.find('=');
  ATTN_CHECK(eq != std::string::npos, "--set ", assignment, ": expected key=value");
  const std::string key = trim(assignment.substr(0, eq));
  const std::string value = trim(assignment.substr(eq + 1));
  const FieldPtr f = find_field(config, key);
  ATTN_CHECK(!is_null(f), "--set ", assignment, ": ", unknown_key_message(key));
  YAML::Node node;
  try {
    node = YAML::Load(value.empty() ? "''" : value);
  } catch (const YAML::Exception& e) {
    ATTN_FAIL("--set ", assignment, ": cannot parse value: ", e.msg);
  }
  if (node.IsNull()) node = YAML::Node(value);
  set_field(f, key, node, "--set ");
}

Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides) {
  // YAML text is Unicode (yaml-cpp passes other bytes through, and config.yaml would not read
  // back the same; found by fuzz_config): the corpus reader's check names line and byte.
  data::split_lines(yaml_text, source);
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    ATTN_FAIL(source, ":", e.mark.line + 1, ":", e.mark.column + 1, ": malformed YAML: ", e.msg);
  }
  Config c;
  if (root.IsDefined() && !root.IsNull()) {
    ATTN_CHECK(root.IsMap(), source, ": expected a mapping with sections model, data, train, "
                             "decode at the top level");
    apply_node(c, root, "", source);
  }
  for (const std::string& o : overrides) apply_override(c, o);
  validate(c);
  return c;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  // read_file_bytes names the path and the reason (missing, a directory, unreadable).
  return parse_config(data::read_file_bytes(path, "config"), path, overrides);
}

void validate(const Config& c) {
  Config copy = c;
  visit_fields(copy, [](const char* key, auto* p) {
    if constexpr (std::is_same_v<std::remove_pointer_t<decltype(p)>, double>)
      check_range(std::isfinite(*p), key, *p, "a finite number");
  });
  const auto& m = c.model;
  check_range(m.d_model > 0, "model.d_model", m.d_model, "> 0");
  check_range(m.heads > 0, "model.heads", m.heads, "> 0");
  ATTN_CHECK(m.d_model % m.heads == 0, "config: model.d_model (", m.d_model,
             ") must be divisible by model.heads (", m.heads, ")");
  check_range(m.d_ff > 0, "model.d_ff", m.d_ff, "> 0");
  check_range(m.encoder_layers > 0, "model.encoder_layers", m.encoder_layers, "> 0");
  check_range(m.decoder_layers > 0, "model.decoder_layers", m.decoder_layers, "> 0");
  for (auto [key, p] : {std::pair{"model.dropout", m.dropout},
                        {"model.attention_dropout", m.attention_dropout},
                        {"model.relu_dropout", m.relu_dropout}}) {
    check_range(p >= 0 && p < 1, key, p, "0 <= p < 1");
  }
  // Upper bounds (d_model, d_ff, layers) are the model's own.
  transformer_config(c, 8).validate();
  // Contradictions inside the config; whether this build and machine have cuDNN is checked
  // where the model is built (a checkpoint's config must still read back anywhere).
  if (ops::parse_attention_backend(m.attention, "config: model.attention") ==
      ops::AttentionBackend::cudnn) {
    ATTN_CHECK(c.train.device != "cpu", "config: model.attention is cudnn but train.device is "
               "cpu; cuDNN attention needs a CUDA device (use model.attention: fused)");
    ATTN_CHECK(c.train.precision != "fp32", "config: model.attention is cudnn but "
               "train.precision is fp32; cuDNN attention is bf16/fp16 only (use bf16, fp16 or "
               "auto, or model.attention: fused)");
  }

  const auto& d = c.data;
  ATTN_CHECK(d.synthetic.empty() || d.synthetic == "copy" || d.synthetic == "reverse",
             "config: data.synthetic must be '', copy or reverse, got '", d.synthetic, "'");
  if (d.synthetic.empty()) {
    for (auto [key, v] : {std::pair{"data.train_src", &d.train_src}, {"data.train_tgt", &d.train_tgt},
                          {"data.valid_src", &d.valid_src}, {"data.valid_tgt", &d.valid_tgt}}) {
      ATTN_CHECK(!v->empty(), "config: ", key, " is required (or set data.synthetic)");
    }
  } else {
    check_range(d.synthetic_train_size > 0, "data.synthetic_train_size", d.synthetic_train_size,
                "> 0");
    check_range(d.synthetic_valid_size > 0, "data.synthetic_valid_size", d.synthetic_valid_size,
                "> 0");
    check_range(d.synthetic_vocab > 4, "data.synthetic_vocab", d.synthetic_vocab,
                "> 4: ids 0..3 are reserved");
    check_range(d.synthetic_min_len >= 1, "data.synthetic_min_len", d.synthetic_min_len, ">= 1");
    check_range(d.synthetic_max_len >= d.synthetic_min_len, "data.synthetic_max_len",
                d.synthetic_max_len, ">= data.synthetic_min_len");
    check_range(d.synthetic_vocab <= kMaxVocab, "data.synthetic_vocab", d.synthetic_vocab,
                "at most 2^24");
    // Both sets are generated into memory: bound their tokens (2^31 = 16 GiB of ids).
    for (auto [key, n] : {std::pair{"data.synthetic_train_size", d.synthetic_train_size},
                          {"data.synthetic_valid_size", d.synthetic_valid_size}}) {
      check_range(n <= (int64_t{1} << 31) / d.synthetic_max_len, key, n,
                  "at most 2^31 tokens: size * data.synthetic_max_len <= 2147483648");
    }
  }
  check_range(d.vocab_size >= 8 && d.vocab_size <= kMaxVocab, "data.vocab_size", d.vocab_size,
              ">= 8 and at most 2^24");
  ATTN_CHECK(d.spm_type == "bpe" || d.spm_type == "unigram",
             "config: data.spm_type must be bpe or unigram, got '", d.spm_type, "'");
  check_range(d.max_tokens > 0 && d.max_tokens <= data::kMaxBatchTokens, "data.max_tokens",
              d.max_tokens, "> 0 and at most 2^24");
  check_range(d.max_len > 1, "data.max_len", d.max_len, "> 1");
  ATTN_CHECK(d.max_len <= d.max_tokens, "config: data.max_len (", d.max_len,
             ") cannot exceed data.max_tokens (", d.max_tokens, "): no batch could hold it");

  const auto& t = c.train;
  ATTN_CHECK(t.device == "auto" || t.device == "cpu" || t.device == "cuda" ||
                 t.device.rfind("cuda:", 0) == 0,
             "config: train.device must be auto, cpu, cuda or cuda:N, got '", t.device, "'");
  ATTN_CHECK(!t.output_dir.empty(), "config: train.output_dir is required");
  check_range(t.max_steps > 0, "train.max_steps", t.max_steps, "> 0");
  check_range(t.max_epochs >= 0, "train.max_epochs", t.max_epochs, ">= 0");
  check_range(t.log_every > 0, "train.log_every", t.log_every, "> 0");
  check_range(t.valid_every > 0, "train.valid_every", t.valid_every, "> 0");
  check_range(t.save_every > 0, "train.save_every", t.save_every, "> 0");
  check_range(t.keep_last >= 1, "train.keep_last", t.keep_last, ">= 1");
  check_range(t.label_smoothing >= 0 && t.label_smoothing < 1, "train.label_smoothing",
              t.label_smoothing, "0 <= eps < 1");
  check_range(t.adam_beta1 >= 0 && t.adam_beta1 < 1, "train.adam_beta1", t.adam_beta1,
              "0 <= beta1 < 1");
  check_range(t.adam_beta2 >= 0 && t.adam_beta2 < 1, "train.adam_beta2", t.adam_beta2,
              "0 <= beta2 < 1");
  check_range(t.adam_eps > 0, "train.adam_eps", t.adam_eps, "> 0");
  check_range(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, ">= 0");
  ATTN_CHECK(t.lr_schedule == "noam" || t.lr_schedule == "inverse_sqrt" ||
                 t.lr_schedule == "constant",
             "config: train.lr_schedule must be noam, inverse_sqrt or constant, got '",
             t.lr_schedule, "'");
  check_range(t.lr_factor > 0, "train.lr_factor", t.lr_factor, "> 0");
  check_range(t.lr > 0, "train.lr", t.lr, "> 0");
  check_range(t.warmup_steps >= 1, "train.warmup_steps", t.warmup_steps, ">= 1");
  check_range(t.clip_norm >= 0, "train.clip_norm", t.clip_norm, ">= 0 (0 disables)");
  check_range(t.update_freq >= 1, "train.update_freq", t.update_freq, ">= 1");
  bool has_loss = false;
  for (const std::string& m : t.valid_metrics) {
    ATTN_CHECK(m == "loss" || m == "bleu", "config: train.valid_metrics: unknown metric '", m,
               "' (expected loss or bleu)");
    has_loss |= m == "loss";
  }
  ATTN_CHECK(has_loss, "config: train.valid_metrics must include loss");
  ATTN_CHECK(t.best_metric == "loss" || t.best_metric == "bleu",
             "config: train.best_metric must be loss or bleu, got '", t.best_metric, "'");
  ATTN_CHECK(t.best_metric != "bleu" ||
                 std::find(t.valid_metrics.begin(), t.valid_metrics.end(), "bleu") !=
                     t.valid_metrics.end(),
             "config: train.best_metric is bleu but train.valid_metrics does not include bleu");
  check_range(t.valid_beam >= 1 && t.valid_beam <= decode::BeamOptions::kMaxBeam,
              "train.valid_beam", t.valid_beam, ">= 1 and at most 65536");
  check_range(t.patience >= 0, "train.patience", t.patience, ">= 0 (0 disables)");
  check_range(t.average_last >= 0, "train.average_last", t.average_last, ">= 0 (0 disables)");
  ATTN_CHECK(t.average_last <= t.keep_last, "config: train.average_last (", t.average_last,
             ") cannot exceed train.keep_last (", t.keep_last,
             "): the checkpoints to average would be pruned");
  parse_duration(t.max_time, "train.max_time");
  check_range(t.check_replicas_every >= 0, "train.check_replicas_every", t.check_replicas_every,
              ">= 0 (0 disables)");

  ATTN_CHECK(t.precision == "auto" || t.precision == "fp32" || t.precision == "bf16" ||
                 t.precision == "fp16",
             "config: train.precision must be auto, fp32, bf16 or fp16, got '", t.precision, "'");
  ATTN_CHECK(t.loss_scale == "auto" || t.loss_scale == "dynamic" || t.loss_scale == "none",
             "config: train.loss_scale must be auto, dynamic or none, got '", t.loss_scale, "'");
  check_range(t.loss_scale_init > 0 && std::isfinite(t.loss_scale_init), "train.loss_scale_init",
              t.loss_scale_init, "> 0");
  check_range(t.bucket_mb >= 0.001 && t.bucket_mb <= 1024, "train.bucket_mb", t.bucket_mb,
              "between 0.001 and 1024");
  check_range(t.loss_scale_window >= 1, "train.loss_scale_window", t.loss_scale_window, ">= 1");
  check_range(t.loss_scale_min > 0 && t.loss_scale_min <= t.loss_scale_init,
              "train.loss_scale_min", t.loss_scale_min, "> 0 and <= train.loss_scale_init");

  check_range(c.decode.beam >= 1 && c.decode.beam <= decode::BeamOptions::kMaxBeam, "decode.beam",
              c.decode.beam, ">= 1 and at most 65536");
  check_range(c.decode.alpha >= 0, "decode.alpha", c.decode.alpha, ">= 0");
  check_range(c.decode.max_len_a >= 0 && c.decode.max_len_a <= decode::BeamOptions::kMaxLenA,
              "decode.max_len_a", c.decode.max_len_a, ">= 0 and at most 1024");
  check_range(c.decode.max_len_b >= 0 && c.decode.max_len_b <= decode::BeamOptions::kMaxLenB,
              "decode.max_len_b", c.decode.max_len_b, ">= 0 and at most 2^20");
}

std::vector<std::pair<std::string, std::string>> config_values(const Config& config) {
  Config c = config;
  std::vector<std::pair<std::string, std::string>> out;
  visit_fields(c, [&](const char* path, auto* p) {
    std::ostringstream os;
    using T = std::remove_pointer_t<decltype(p)>;
    if constexpr (std::is_same_v<T, StringList>) {
      os << join(*p);
    } else if constexpr (std::is_same_v<T, double>) {
      os << format_double(*p);
    } else {
      os << std::boolalpha << *p;
    }
    out.emplace_back(path, os.str());
  });
  return out;
}

std::string to_yaml(const Config& config) {
  Config c = config;
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string section;
  visit_fields(c, [&](const char* path, auto* p) {
    const std::string key(path);
    const auto dot = key.find('.');
    const std::string sec = key.substr(0, dot);
    if (sec != section) {
      if (!section.empty()) out << YAML::EndMap;
      out << YAML::Key << sec << YAML::Value << YAML::BeginMap;
      section = sec;
    }
    out << YAML::Key << key.substr(dot + 1) << YAML::Value;
    using T = std::remove_pointer_t<decltype(p)>;
    if constexpr (std::is_same_v<T, std::string>) {
      out << YAML::DoubleQuoted << *p;
    } else if constexpr (std::is_same_v<T, StringList>) {
      out << YAML::Flow << YAML::BeginSeq;
      for (const auto& item : *p) out << item;
      out << YAML::EndSeq;
    } else if constexpr (std::is_same_v<T, double>) {
      out << format_double(*p);
    } else {
      out << *p;
    }
  });
  if (!section.empty()) out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace attn::train
