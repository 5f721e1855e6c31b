// Maps a runtime DType to a C++ type: visit_dtype(t, [&](auto tag) { using T = typename
// decltype(tag)::type; ... }). The ops layer builds its device dispatch on this.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "base/error.h"

namespace attn {

template <class T>
struct TypeTag {
  using type = T;
};

template <class F>
decltype(auto) visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::kF32: return f(TypeTag<float>{});
    case DType::kF64: return f(TypeTag<double>{});
    case DType::kBF16: return f(TypeTag<bf16>{});
    case DType::kF16: return f(TypeTag<f16>{});
    case DType::kI32: return f(TypeTag<int32_t>{});
  }
  ATTN_FAIL("visit_dtype: bad dtype");
}

}  // namespace attn
