#include "core/profile.h"

#include <algorithm>
#include <map>
#include <mutex>

namespace attn::profile {

namespace {
bool g_enabled = false;
std::mutex g_mutex;
std::map<std::string, Entry>& table() {
  static std::map<std::string, Entry> t;
  return t;
}
}  // namespace

void enable(bool on) { g_enabled = on; }
bool enabled() { return g_enabled; }

void reset() {
  std::lock_guard<std::mutex> lock(g_mutex);
  table().clear();
}

void add(const char* name, double seconds) {
  std::lock_guard<std::mutex> lock(g_mutex);
  Entry& e = table()[name];
  if (e.name.empty()) e.name = name;
  ++e.calls;
  e.seconds += seconds;
}

std::vector<Entry> entries() {
  std::vector<Entry> out;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    for (const auto& [name, e] : table()) out.push_back(e);
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  return out;
}

}  // namespace attn::profile
