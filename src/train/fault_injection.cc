#include "train/fault_injection.h"

#include <charconv>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "base/error.h"

namespace attn::train {
namespace {

constexpr const char* kForm = "expected <throw|hang>@step:<N>@rank:<R>, e.g. throw@step:3@rank:1";

// The integer after `key` at the start of `field` ("step:3" with key "step:").
int64_t field_value(std::string_view spec, std::string_view field, std::string_view key) {
  ATTN_CHECK(field.substr(0, key.size()) == key, "ATTN_FAULT_INJECT='", spec, "': '", field,
             "' should start with '", key, "' (", kForm, ")");
  const std::string_view digits = field.substr(key.size());
  int64_t v = -1;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  ATTN_CHECK(!digits.empty() && ec == std::errc() && end == digits.data() + digits.size() && v >= 0,
             "ATTN_FAULT_INJECT='", spec, "': '", digits, "' is not a non-negative integer (",
             kForm, ")");
  return v;
}

}  // namespace

FaultInjection parse_fault_injection(std::string_view spec) {
  const size_t a = spec.find('@');
  const size_t b = a == std::string_view::npos ? a : spec.find('@', a + 1);
  ATTN_CHECK(b != std::string_view::npos && spec.find('@', b + 1) == std::string_view::npos,
             "ATTN_FAULT_INJECT='", spec, "': ", kForm);
  FaultInjection f;
  const std::string_view kind = spec.substr(0, a);
  if (kind == "throw") {
    f.kind = FaultInjection::Kind::kThrow;
  } else if (kind == "hang") {
    f.kind = FaultInjection::Kind::kHang;
  } else {
    ATTN_FAIL("ATTN_FAULT_INJECT='", spec, "': unknown fault '", kind, "' (", kForm, ")");
  }
  f.step = field_value(spec, spec.substr(a + 1, b - a - 1), "step:");
  const int64_t rank = field_value(spec, spec.substr(b + 1), "rank:");
  ATTN_CHECK(rank <= 1 << 30, "ATTN_FAULT_INJECT='", spec, "': rank ", rank, " is too large");
  f.rank = static_cast<int>(rank);
  return f;
}

FaultInjection fault_injection_from_env() {
  const char* v = std::getenv("ATTN_FAULT_INJECT");
  if (v == nullptr || *v == '\0') return {};
  return parse_fault_injection(v);
}

void inject_fault(const FaultInjection& fault, int64_t step, int rank) {
  if (fault.kind == FaultInjection::Kind::kNone || fault.step != step || fault.rank != rank) return;
  if (fault.kind == FaultInjection::Kind::kThrow) {
    ATTN_FAIL("fault injected by ATTN_FAULT_INJECT (test only): throw at step ", step, " on rank ",
              rank);
  }
  // A stuck rank: alive, holding its resources, never reaching another collective. The
  // launcher ends it when a peer's watchdog aborts the job.
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

}  // namespace attn::train
