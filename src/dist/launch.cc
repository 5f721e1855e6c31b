#include "dist/launch.h"

#include <charconv>
#include <cstdlib>
#include <optional>
#include <string_view>

#include "base/error.h"

namespace attn::dist {
namespace {

// The integer in environment variable `name`, or nothing when it is unset.
std::optional<int> env_int(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::nullopt;
  const std::string_view s(value);
  int out = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  ATTN_CHECK(ec == std::errc() && end == s.data() + s.size() && !s.empty(),
             "detect_launch: environment variable ", name, "='", s, "' is not an integer");
  return out;
}

LaunchInfo from_vars(const char* launcher, const char* size_var, const char* rank_var,
                     const char* local_var) {
  LaunchInfo info;
  info.launcher = launcher;
  const std::optional<int> size = env_int(size_var), rank = env_int(rank_var);
  ATTN_CHECK(size && rank, "detect_launch: ", size ? size_var : rank_var, " is set but ",
             size ? rank_var : size_var, " is missing (", launcher, " sets both)");
  info.world_size = *size;
  info.rank = *rank;
  info.local_rank = env_int(local_var).value_or(0);
  ATTN_CHECK(info.world_size >= 1, "detect_launch: ", size_var, " is ", info.world_size,
             " (must be >= 1)");
  ATTN_CHECK(0 <= info.rank && info.rank < info.world_size, "detect_launch: ", rank_var, " is ",
             info.rank, " but ", size_var, " is ", info.world_size);
  ATTN_CHECK(0 <= info.local_rank && info.local_rank < info.world_size,
             "detect_launch: ", local_var, " is ", info.local_rank, " but ", size_var, " is ",
             info.world_size);
  return info;
}

}  // namespace

LaunchInfo detect_launch() {
  if (std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("OMPI_COMM_WORLD_RANK")) {
    return from_vars("mpirun", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                     "OMPI_COMM_WORLD_LOCAL_RANK");
  }
  if (std::getenv("SLURM_STEP_NUM_TASKS")) {
    return from_vars("srun", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID", "SLURM_LOCALID");
  }
  return LaunchInfo{};
}

}  // namespace attn::dist
