// JSON in error messages about files: values shown cut short, nlohmann's exceptions in plain
// words. Every reader of JSON files (trainer_state.json, safetensors headers, metrics.jsonl,
// batch files) uses these, so no message shows library internals or can crash.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace attn::io {

// What went wrong in a json::exception from parsing, without nlohmann's
// "[json.exception.parse_error.101] " prefix: "parse error at line 1, column 9: ...",
// "number overflow parsing '1e999'". Readers catch json::exception, not only parse_error: a
// number beyond double's range is an out_of_range error (found by fuzz_trainer_state).
inline std::string json_error_text(const nlohmann::json::exception& e) {
  const std::string what = e.what();
  const size_t cut = what.find("] ");
  return what.rfind("[json.exception.", 0) == 0 && cut != std::string::npos ? what.substr(cut + 2)
                                                                            : what;
}

// A JSON value as it appears in an error message: its compact text, cut after `max_chars`
// characters ("..." marks the cut). Written without recursion, unlike nlohmann's dump(), so a
// value nested a million levels deep in a damaged or hostile file (the parser accepts any
// depth) makes a message, not a stack overflow (a hand-made input to the fuzz targets).
template <class Json>
std::string json_excerpt(const Json& value, size_t max_chars = 40) {
  auto scalar = [](const Json& v) {
    return v.dump(-1, ' ', false, Json::error_handler_t::replace);
  };
  std::string out;
  // Open containers: the value and the iterator to its next element.
  std::vector<std::pair<const Json*, typename Json::const_iterator>> open;
  const Json* next = &value;
  while (out.size() <= max_chars) {
    if (next != nullptr) {
      if (next->is_structured()) {
        out += next->is_object() ? '{' : '[';
        open.emplace_back(next, next->cbegin());
      } else {
        out += scalar(*next);
      }
      next = nullptr;
      continue;
    }
    if (open.empty()) break;
    auto& [container, it] = open.back();
    if (it == container->cend()) {
      out += container->is_object() ? '}' : ']';
      open.pop_back();
      continue;
    }
    if (it != container->cbegin()) out += ',';
    if (container->is_object()) out += scalar(Json(it.key())) + ':';
    next = &*it;
    ++it;
  }
  if (out.size() > max_chars) out = out.substr(0, max_chars) + "...";
  return out;
}

}  // namespace attn::io
