// Small helpers shared by the CPU test files.
#pragma once

#include <catch2/catch.hpp>
#include <cstring>
#include <functional>
#include <string>

#include "core/error.h"
#include "core/tensor.h"

namespace attn::testing {

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
