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

#include "base/error.h"
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

// What a key accepts and what it is, next to the key in visit_fields: validate(), the resume
// check (architecture_difference), `attn keys` and docs/CONFIG.md all read it from there.
// Doubles must be finite whatever the rule says. Rules between keys (d_model divisible by
// heads, average_last <= keep_last, ...) are the few lines at the end of validate().
struct Rule {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_open = false, hi_open = false;
  std::vector<std::string> choices;  // strings and list items; "cuda:N" is cuda: and digits
  std::string says;                  // the range in words, when the bounds alone do not say it
  std::string note;                  // appended to the range: "0 disables"
  const char* when = nullptr;        // the rule applies only when this string key is set
  const char* unless = nullptr;      // required (non-empty) unless this string key is set
  bool required = false;             // a string that must not be empty
  bool duration = false;             // parse_duration syntax (90s, 15m, 2h)
  bool architecture = false;         // the weights depend on it: a resume must not change it

  Rule& gt(double v) { return lo = v, lo_open = true, *this; }
  Rule& ge(double v) { return lo = v, lo_open = false, *this; }
  Rule& lt(double v) { return hi = v, hi_open = true, *this; }
  Rule& le(double v) { return hi = v, hi_open = false, *this; }
  Rule& one_of(std::vector<std::string> c) { return choices = std::move(c), *this; }
  Rule& saying(std::string text) { return says = std::move(text), *this; }
  Rule& noting(std::string text) { return note = std::move(text), *this; }
  Rule& only_when(const char* key) { return when = key, *this; }
  Rule& required_unless(const char* key) { return unless = key, *this; }
  Rule& non_empty() { return required = true, *this; }
  Rule& a_duration() { return duration = true, *this; }
  Rule& arch() { return architecture = true, *this; }

  bool bounded() const { return std::isfinite(lo) || std::isfinite(hi); }
  bool in_range(double v) const {
    return (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  }
  // "> 0", ">= 0 and < 1", ">= 1 and <= 65536", plus the note.
  std::string range_text() const {
    std::string t = says;
    if (t.empty()) {
      if (std::isfinite(lo)) t = std::string(lo_open ? "> " : ">= ") + format_double(lo);
      if (std::isfinite(hi))
        t += (t.empty() ? "" : " and ") + std::string(hi_open ? "< " : "<= ") + format_double(hi);
    }
    if (!note.empty()) t += " (" + note + ")";
    return t;
  }
  // "auto, cpu, cuda or cuda:N" ('' for the empty string).
  std::string choices_text() const {
    std::string t;
    for (size_t i = 0; i < choices.size(); ++i) {
      if (i) t += i + 1 == choices.size() ? " or " : ", ";
      t += choices[i].empty() ? "''" : choices[i];
    }
    return t;
  }
  bool allows(const std::string& value) const {
    for (const std::string& c : choices) {
      if (value == c) return true;
      if (c.size() > 2 && c.ends_with(":N") && value.size() > c.size() - 1 &&
          value.starts_with(c.substr(0, c.size() - 1)) &&
          value.find_first_not_of("0123456789", c.size() - 1) == std::string::npos)
        return true;
    }
    return false;
  }
};

Rule gt(double v) { return Rule().gt(v); }
Rule ge(double v) { return Rule().ge(v); }
Rule one_of(std::vector<std::string> c) { return Rule().one_of(std::move(c)); }
Rule arch() { return Rule().arch(); }
Rule probability() { return Rule().ge(0).lt(1); }  // dropout rates, label smoothing, betas
Rule none() { return Rule(); }

// The one list of keys: `v(path, pointer, rule, meaning)` is called for every field, in the
// order of config.yaml and of docs/CONFIG.md. A new key is a field in config.h and one line
// here.
template <class V>
void visit_fields(Config& c, V&& v) {
  const double max_vocab = static_cast<double>(kMaxVocab);
  const double max_beam = static_cast<double>(decode::BeamOptions::kMaxBeam);
  auto& m = c.model;
  v("model.d_model", &m.d_model, arch().gt(0), "width of every layer (embeddings, attention, residual stream)");
  v("model.heads", &m.heads, arch().gt(0), "attention heads per layer (must divide d_model)");
  v("model.d_ff", &m.d_ff, arch().gt(0), "inner width of the feed-forward blocks");
  v("model.encoder_layers", &m.encoder_layers, arch().gt(0), "encoder layers");
  v("model.decoder_layers", &m.decoder_layers, arch().gt(0), "decoder layers");
  v("model.dropout", &m.dropout, probability(), "dropout on embeddings and sub-layer outputs");
  v("model.attention_dropout", &m.attention_dropout, probability(), "dropout on attention weights");
  v("model.relu_dropout", &m.relu_dropout, probability(), "dropout after the feed-forward ReLU");
  v("model.pre_norm", &m.pre_norm, arch(), "layer norm before each sub-layer (false: after, as in the paper)");
  v("model.share_embeddings", &m.share_embeddings, arch(), "one embedding matrix for source, target and output projection");
  v("model.attention", &m.attention, one_of({"fused", "cudnn"}), "attention backend: fused (attn's kernels) or cudnn (cuDNN's fused SDPA: CUDA, bf16/fp16; calls it cannot run use fused, logged once); not architecture, attn translate always uses fused");

  auto& d = c.data;
  const Rule corpus = Rule().required_unless("data.synthetic");
  v("data.train_src", &d.train_src, corpus, "training source text, one sentence per line");
  v("data.train_tgt", &d.train_tgt, corpus, "training target text, line by line parallel to train_src");
  v("data.valid_src", &d.valid_src, corpus, "validation source text");
  v("data.valid_tgt", &d.valid_tgt, corpus, "validation target text");
  v("data.synthetic", &d.synthetic, one_of({"", "copy", "reverse"}), "a built-in task instead of the files ('' = off)");
  const char* syn = "data.synthetic";
  v("data.synthetic_train_size", &d.synthetic_train_size, gt(0).only_when(syn), "pairs of the synthetic training set");
  v("data.synthetic_valid_size", &d.synthetic_valid_size, gt(0).only_when(syn), "pairs of the synthetic validation set");
  v("data.synthetic_vocab", &d.synthetic_vocab, gt(4).le(max_vocab).noting("ids 0..3 are reserved").only_when(syn), "vocabulary of the synthetic task (ids 0..3 are pad/unk/bos/eos)");
  v("data.synthetic_min_len", &d.synthetic_min_len, ge(1).only_when(syn), "shortest synthetic sentence");
  v("data.synthetic_max_len", &d.synthetic_max_len, ge(1).only_when(syn), "longest synthetic sentence (>= synthetic_min_len)");
  v("data.spm_model", &d.spm_model, none(), "joint SentencePiece model; trained from the training text when missing ('' = <train.output_dir>/spm.model)");
  v("data.vocab_size", &d.vocab_size, ge(8).le(max_vocab), "pieces of a SentencePiece model trained here");
  v("data.spm_type", &d.spm_type, one_of({"bpe", "unigram"}), "SentencePiece model type");
  v("data.max_tokens", &d.max_tokens, gt(0).le(static_cast<double>(data::kMaxBatchTokens)), "tokens per batch, padding included (per GPU)");
  v("data.max_len", &d.max_len, gt(1), "longer pairs (in pieces) are skipped; at most max_tokens");

  auto& t = c.train;
  v("train.device", &t.device, one_of({"auto", "cpu", "cuda", "cuda:N"}), "auto: a CUDA device when one is visible, else the CPU");
  v("train.output_dir", &t.output_dir, Rule().non_empty(), "checkpoints, logs, metrics.jsonl, config.yaml");
  v("train.max_steps", &t.max_steps, gt(0), "stop after this many updates");
  v("train.max_epochs", &t.max_epochs, ge(0).noting("0: no limit"), "stop after this many passes over the data");
  v("train.seed", &t.seed, none(), "initialisation, data order and dropout");
  v("train.log_every", &t.log_every, gt(0), "steps between log lines (and metrics.jsonl train records)");
  v("train.valid_every", &t.valid_every, gt(0), "steps between validations");
  v("train.save_every", &t.save_every, gt(0), "steps between checkpoints");
  v("train.keep_last", &t.keep_last, ge(1), "step checkpoints kept (plus latest and best)");
  v("train.label_smoothing", &t.label_smoothing, probability(), "label smoothing of the cross-entropy");
  v("train.adam_beta1", &t.adam_beta1, probability(), "Adam beta1");
  v("train.adam_beta2", &t.adam_beta2, probability(), "Adam beta2");
  v("train.adam_eps", &t.adam_eps, gt(0), "Adam epsilon");
  v("train.weight_decay", &t.weight_decay, ge(0), "decoupled weight decay (AdamW; 0 = Adam)");
  v("train.lr_schedule", &t.lr_schedule, one_of({"noam", "inverse_sqrt", "constant"}), "learning-rate schedule");
  v("train.lr_factor", &t.lr_factor, gt(0), "noam: multiplier of d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)");
  v("train.lr", &t.lr, gt(0), "peak learning rate (inverse_sqrt, constant)");
  v("train.warmup_steps", &t.warmup_steps, ge(1), "linear warm-up steps");
  v("train.cooldown", &t.cooldown, ge(0).le(1), "the last fraction of the run over which the rate falls linearly to 0 (the run's end is train.max_steps, or train.max_time when that comes first; max_epochs and patience are not foreseen; 0 = off)");
  v("train.clip_norm", &t.clip_norm, ge(0).noting("0 disables"), "clip the global gradient norm to this");
  v("train.update_freq", &t.update_freq, ge(1), "micro-batches per update (gradient accumulation)");
  v("train.valid_metrics", &t.valid_metrics, one_of({"loss", "bleu"}), "validation metrics: loss always; bleu adds beam search (valid_beam) on the valid set");
  v("train.best_metric", &t.best_metric, one_of({"loss", "bleu"}), "what the best checkpoint and early stopping follow");
  v("train.valid_beam", &t.valid_beam, ge(1).le(max_beam), "beam of validation BLEU (1 = greedy)");
  v("train.patience", &t.patience, ge(0).noting("0 disables"), "stop after this many validations without improvement");
  v("train.average_last", &t.average_last, ge(0).noting("0 disables"), "at the end, average the last N checkpoints into checkpoints/averaged");
  v("train.max_time", &t.max_time, Rule().a_duration(), "wall-clock bound such as 90s, 15m, 2h ('' = none)");
  v("train.check_replicas_every", &t.check_replicas_every, ge(0).noting("0 disables"), "data parallel debug: verify every N steps that ranks hold equal weights");
  v("train.precision", &t.precision, one_of({"auto", "fp32", "bf16", "fp16"}), "compute precision (auto: bf16 on CUDA, fp32 on the CPU); master weights and Adam stay fp32");
  v("train.loss_scale", &t.loss_scale, one_of({"auto", "dynamic", "none"}), "loss scaling (auto: dynamic for fp16)");
  v("train.loss_scale_init", &t.loss_scale_init, gt(0), "first loss scale");
  v("train.loss_scale_window", &t.loss_scale_window, ge(1), "clean steps before the scale doubles");
  v("train.loss_scale_min", &t.loss_scale_min, gt(0), "overflowing at this scale stops the run (<= loss_scale_init)");
  v("train.allow_tf32", &t.allow_tf32, none(), "fp32 GEMMs on CUDA may use TF32 tensor cores");
  v("train.overlap_allreduce", &t.overlap_allreduce, none(), "data parallel: all-reduce gradient buckets while backward runs");
  v("train.bucket_mb", &t.bucket_mb, ge(0.001).le(1024), "MiB per all-reduce bucket");
  v("train.init_weights", &t.init_weights, none(), "safetensors of model parameters a fresh run starts from ('' = seeded initialisation)");

  auto& dec = c.decode;
  v("decode.beam", &dec.beam, ge(1).le(max_beam), "beam size of attn translate");
  v("decode.alpha", &dec.alpha, ge(0), "length penalty ((5 + len) / 6)^alpha");
  v("decode.max_len_a", &dec.max_len_a, ge(0).le(decode::BeamOptions::kMaxLenA), "output length limit: a * source length + b");
  v("decode.max_len_b", &dec.max_len_b, ge(0).le(static_cast<double>(decode::BeamOptions::kMaxLenB)), "output length limit: a * source length + b");
  v("decode.max_repeats", &dec.max_repeats, ge(0), "> 0: no block of 1-4 tokens repeated back to back more often (or than the source repeats one); 0 = off");
}

FieldPtr find_field(Config& c, const std::string& key) {
  FieldPtr found;
  bool ok = false;
  visit_fields(c, [&](const char* path, auto* ptr, const Rule&, const char*) {
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
void check_range(bool ok, const char* key, T value, const std::string& expect) {
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
  visit_fields(c, [&](const char* path, auto*, const Rule&, const char*) { keys.emplace_back(path); });
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
  auto text_of = [&](const char* key) -> const std::string& {
    return *std::get<std::string*>(find_field(copy, key));
  };
  // Each key against its own rule (visit_fields).
  visit_fields(copy, [&](const char* key, auto* p, const Rule& rule, const char*) {
    using T = std::remove_pointer_t<decltype(p)>;
    if (rule.when && text_of(rule.when).empty()) return;
    if constexpr (std::is_same_v<T, double>)
      check_range(std::isfinite(*p), key, *p, "a finite number");
    if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
      if (rule.bounded())
        check_range(rule.in_range(static_cast<double>(*p)), key, *p, rule.range_text());
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (rule.unless)
        ATTN_CHECK(!p->empty() || !text_of(rule.unless).empty(), "config: ", key,
                   " is required (or set ", rule.unless, ")");
      ATTN_CHECK(!rule.required || !p->empty(), "config: ", key, " is required");
      if (!rule.choices.empty())
        ATTN_CHECK(rule.allows(*p), "config: ", key, " must be ", rule.choices_text(), ", got '",
                   *p, "'");
      if (rule.duration) parse_duration(*p, key);
    } else if constexpr (std::is_same_v<T, StringList>) {
      for (const std::string& item : *p)
        ATTN_CHECK(rule.allows(item), "config: ", key, ": unknown value '", item, "' (expected ",
                   rule.choices_text(), ")");
    }
  });

  // Rules between keys.
  const auto& m = c.model;
  ATTN_CHECK(m.d_model % m.heads == 0, "config: model.d_model (", m.d_model,
             ") must be divisible by model.heads (", m.heads, ")");
  transformer_config(c, 8).validate();  // upper bounds of the model's own (sizes, layers)
  // Contradictions inside the config; whether this build and machine have cuDNN is checked
  // where the model is built (a checkpoint's config must still read back anywhere).
  if (m.attention == "cudnn") {
    ATTN_CHECK(c.train.device != "cpu", "config: model.attention is cudnn but train.device is "
               "cpu; cuDNN attention needs a CUDA device (use model.attention: fused)");
    ATTN_CHECK(c.train.precision != "fp32", "config: model.attention is cudnn but "
               "train.precision is fp32; cuDNN attention is bf16/fp16 only (use bf16, fp16 or "
               "auto, or model.attention: fused)");
  }
  const auto& d = c.data;
  if (!d.synthetic.empty()) {
    check_range(d.synthetic_max_len >= d.synthetic_min_len, "data.synthetic_max_len",
                d.synthetic_max_len, ">= data.synthetic_min_len");
    // Both sets are generated into memory: bound their tokens (2^31 = 16 GiB of ids).
    for (auto [key, n] : {std::pair{"data.synthetic_train_size", d.synthetic_train_size},
                          {"data.synthetic_valid_size", d.synthetic_valid_size}}) {
      check_range(n <= (int64_t{1} << 31) / d.synthetic_max_len, key, n,
                  "at most 2^31 tokens: size * data.synthetic_max_len <= 2147483648");
    }
  }
  ATTN_CHECK(d.max_len <= d.max_tokens, "config: data.max_len (", d.max_len,
             ") cannot exceed data.max_tokens (", d.max_tokens, "): no batch could hold it");
  const auto& t = c.train;
  const auto has = [&](const char* metric) {
    return std::find(t.valid_metrics.begin(), t.valid_metrics.end(), metric) !=
           t.valid_metrics.end();
  };
  ATTN_CHECK(has("loss"), "config: train.valid_metrics must include loss");
  ATTN_CHECK(t.best_metric != "bleu" || has("bleu"),
             "config: train.best_metric is bleu but train.valid_metrics does not include bleu");
  ATTN_CHECK(t.average_last <= t.keep_last, "config: train.average_last (", t.average_last,
             ") cannot exceed train.keep_last (", t.keep_last,
             "): the checkpoints to average would be pruned");
  ATTN_CHECK(t.loss_scale_min <= t.loss_scale_init, "config: train.loss_scale_min (",
             t.loss_scale_min, ") cannot exceed train.loss_scale_init (", t.loss_scale_init, ")");
}

std::string architecture_difference(const Config& saved, const Config& config) {
  const auto va = config_values(saved), vb = config_values(config);
  const auto keys = config_key_info();
  for (size_t i = 0; i < va.size(); ++i) {
    if (keys[i].architecture && va[i].second != vb[i].second)
      return va[i].first + " is " + va[i].second + " in the checkpoint but " + vb[i].second +
             " in the config";
  }
  return "";
}

std::vector<KeyInfo> config_key_info() {
  Config c;
  const auto values = config_values(c);
  std::vector<KeyInfo> out;
  size_t i = 0;
  visit_fields(c, [&](const char* key, auto* p, const Rule& rule, const char* meaning) {
    using T = std::remove_pointer_t<decltype(p)>;
    KeyInfo k;
    k.key = key;
    k.default_value = values[i++].second;
    k.meaning = meaning;
    k.architecture = rule.architecture;
    std::vector<std::string> parts;
    if constexpr (std::is_same_v<T, bool>) parts.push_back("true or false");
    if constexpr (std::is_same_v<T, double>) parts.push_back("finite");
    if constexpr (std::is_same_v<T, uint64_t>) parts.push_back(">= 0");
    if (rule.bounded() || !rule.note.empty()) parts.push_back(rule.range_text());
    if (!rule.choices.empty())
      parts.push_back(std::string(std::is_same_v<T, StringList> ? "a list of " : "") +
                      rule.choices_text());
    if (rule.required) parts.push_back("required");
    if (rule.unless) parts.push_back(std::string("required unless ") + rule.unless + " is set");
    if (rule.duration) parts.push_back("a duration");
    if (rule.when) parts.push_back(std::string("checked when ") + rule.when + " is set");
    for (size_t j = 0; j < parts.size(); ++j) k.rule += (j ? "; " : "") + parts[j];
    out.push_back(std::move(k));
  });
  return out;
}

std::string config_keys_markdown() {
  std::string out =
      "| key | default | accepts | meaning |\n|---|---|---|---|\n";
  for (const KeyInfo& k : config_key_info()) {
    out += "| `" + k.key + "` | " + (k.default_value.empty() ? "''" : "`" + k.default_value + "`") +
           " | " + k.rule + " | " + k.meaning + (k.architecture ? " (architecture)" : "") +
           " |\n";
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> config_values(const Config& config) {
  Config c = config;
  std::vector<std::pair<std::string, std::string>> out;
  visit_fields(c, [&](const char* path, auto* p, const Rule&, const char*) {
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
  visit_fields(c, [&](const char* path, auto* p, const Rule&, const char*) {
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
