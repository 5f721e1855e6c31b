#include "train/trainer_state.h"

#include <cmath>

#include "base/error.h"
#include "io/json_message.h"

namespace attn::train {
using json = nlohmann::json;

namespace {

// Reads typed values out of one JSON object; errors name the file and the dotted key.
class Reader {
 public:
  Reader(const json& j, const std::string& source, std::string prefix = "")
      : j_(j), source_(source), prefix_(std::move(prefix)) {
    ATTN_CHECK(j_.is_object(), source_, ": ", prefix_.empty() ? "the state" : "'" + prefix_ + "'",
               " must be a JSON object, got ", io::json_excerpt(j_));
  }

  const json* find(const char* key, bool required) const {
    const auto it = j_.find(key);
    if (it == j_.end() || (!required && it->is_null())) {
      ATTN_CHECK(!required, source_, ": key '", name(key), "' is missing");
      return nullptr;
    }
    return &*it;
  }
  void count(const char* key, int64_t& out, bool required = true) const {
    if (const json* v = find(key, required)) {
      check(v->is_number_integer() && v->get<int64_t>() >= 0, key, *v,
            "a non-negative integer");
      out = v->get<int64_t>();
    }
  }
  void number(const char* key, double& out, bool required = true) const {
    if (const json* v = find(key, required)) {
      check(v->is_number() && std::isfinite(v->get<double>()), key, *v, "a finite number");
      out = v->get<double>();
    }
  }
  void text(const char* key, std::string& out, bool required = true) const {
    if (const json* v = find(key, required)) {
      check(v->is_string(), key, *v, "a string");
      out = v->get<std::string>();
    }
  }
  void flag(const char* key, bool& out, bool required = true) const {
    if (const json* v = find(key, required)) {
      check(v->is_boolean(), key, *v, "true or false");
      out = v->get<bool>();
    }
  }
  std::optional<Reader> object(const char* key, bool required = true) const {
    const json* v = find(key, required);
    if (!v) return std::nullopt;
    return Reader(*v, source_, name(key));
  }
  const json* array(const char* key) const {
    const json* v = find(key, false);
    if (v) check(v->is_array(), key, *v, "a list");
    return v;
  }
  const std::string& source() const { return source_; }
  std::string name(const char* key) const { return prefix_.empty() ? key : prefix_ + "." + key; }

 private:
  void check(bool ok, const char* key, const json& v, const char* expected) const {
    ATTN_CHECK(ok, source_, ": key '", name(key), "' must be ", expected, ", got ",
               io::json_excerpt(v));
  }
  const json& j_;
  const std::string& source_;
  std::string prefix_;
};

}  // namespace

json TrainerState::to_json() const {
  json j = {{"format_version", kFormatVersion}, {"step", step}};
  if (is_average()) {
    json sources = json::array();
    for (const Source& s : averaged_from) sources.push_back({{"path", s.path}, {"step", s.step}});
    j["averaged_from"] = sources;
    return j;
  }
  j["batcher"] = {{"epoch", batcher_epoch}, {"position", batcher_position}};
  j["adam_step"] = adam_step;
  j["schedule_offset"] = schedule_offset;
  j["lr"] = lr;
  j["best"] = {{"metric", best_metric}, {"value", best_value ? json(*best_value) : json(nullptr)}};
  j["bad_validations"] = bad_validations;
  j["loss_scale"] = loss_scale ? json{{"scale", loss_scale->scale},
                                      {"clean_steps", loss_scale->clean_steps}}
                               : json(nullptr);
  j["elapsed_seconds"] = elapsed_seconds;
  j["finished"] = finished;
  return j;
}

TrainerState TrainerState::from_json(const json& j, const std::string& source) {
  TrainerState s;
  const Reader r(j, source);
  // The version first, when there is one: a newer layout is refused by number, not by the
  // first field it changed.
  int64_t version = 0;
  const bool has_version = r.find("format_version", false) != nullptr;
  if (has_version) r.count("format_version", version);
  r.count("step", s.step);
  if (!has_version) r.count("format_version", version);  // missing: an error naming the key
  ATTN_CHECK(version == kFormatVersion, source, ": format_version ", version,
             " is not one this attn reads (", kFormatVersion, ")",
             version > kFormatVersion
                 ? "; the checkpoint was written by a newer attn: resume it with that version"
                 : "; the file is damaged");
  if (const json* from = r.array("averaged_from")) {
    for (size_t i = 0; i < from->size(); ++i) {
      const std::string key = "averaged_from[" + std::to_string(i) + "]";
      const Reader item((*from)[i], source, key);
      Source src;
      item.text("path", src.path);
      item.count("step", src.step);
      s.averaged_from.push_back(src);
    }
    ATTN_CHECK(!s.averaged_from.empty(), source, ": key 'averaged_from' is an empty list");
  }
  // An average has no training state; a training checkpoint cannot resume without it.
  const bool need = !s.is_average();
  if (auto b = r.object("batcher", need)) {
    b->count("epoch", s.batcher_epoch);
    b->count("position", s.batcher_position);
  }
  r.count("adam_step", s.adam_step, need);
  r.count("schedule_offset", s.schedule_offset, false);
  r.number("lr", s.lr, false);
  if (auto b = r.object("best", need)) {
    b->text("metric", s.best_metric);
    double v = 0;
    if (b->find("value", false)) {
      b->number("value", v);
      s.best_value = v;
    }
  }
  r.count("bad_validations", s.bad_validations, false);
  if (auto ls = r.object("loss_scale", false)) {
    LossScale l;
    ls->number("scale", l.scale);
    ls->count("clean_steps", l.clean_steps);
    ATTN_CHECK(l.scale > 0, source, ": key 'loss_scale.scale' must be > 0, got ", l.scale);
    s.loss_scale = l;
  }
  r.number("elapsed_seconds", s.elapsed_seconds, false);
  r.flag("finished", s.finished, false);
  return s;
}

TrainerState TrainerState::parse(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    ATTN_FAIL(source, ": not valid JSON (", io::json_error_text(e), "); the file is damaged");
  }
  return from_json(j, source);
}

}  // namespace attn::train
