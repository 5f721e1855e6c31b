// Test-only fault injection for the rank-failure tests (tests/dist/test_rank_failure_mpi.sh):
// ATTN_FAULT_INJECT=<kind>@step:<N>@rank:<R> makes rank R, as it begins training step N
// (1-based, the step the log would report), either throw attn::Error (kind `throw`: a rank
// that fails) or stop forever without calling another collective (kind `hang`: a rank that is
// stuck, so its peers wait in their next collective until ATTN_MPI_TIMEOUT or
// ATTN_NCCL_TIMEOUT ends the job). Unset: nothing happens. Not for production use; the
// variable is read once, when training starts.
#pragma once

#include <cstdint>
#include <string_view>

namespace attn::train {

struct FaultInjection {
  enum class Kind { kNone, kThrow, kHang };
  Kind kind = Kind::kNone;
  int64_t step = 0;
  int rank = 0;
};

// Parses a value of ATTN_FAULT_INJECT; throws attn::Error naming the variable and the
// expected form.
FaultInjection parse_fault_injection(std::string_view spec);
// ATTN_FAULT_INJECT, or kNone when it is unset or empty.
FaultInjection fault_injection_from_env();

// Injects `fault` if it is meant for this step and rank: throws, or never returns (hang).
void inject_fault(const FaultInjection& fault, int64_t step, int rank);

}  // namespace attn::train
