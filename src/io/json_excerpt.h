// A JSON value as it appears in an error message: its compact text, cut after `max_chars`
// characters ("..." marks the cut). Written without recursion, unlike nlohmann's dump(), so a
// value nested a million levels deep in a damaged or hostile file (the parser accepts any
// depth) makes a message, not a stack overflow (a hand-made input to the fuzz targets).
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace attn::io {

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
