// The MPI backend (CPU tensors) and the MPI plumbing the NCCL backend reuses (bootstrap,
// host sums, barrier). Internal to src/dist: it pulls in <mpi.h>.
//
// Hangs end the job: every collective is started non-blocking and completed by complete(),
// which polls it with a deadline of ATTN_MPI_TIMEOUT seconds (default 600; 0 waits forever).
// At the deadline the rank prints "attn: error: rank R: <collective> did not complete within
// N s ..." and calls MPI_Abort, so the launcher ends every rank. This is the one place where
// library code ends the process: a collective that never completed cannot be cancelled (MPI
// has no cancel for collectives, and its buffer stays in MPI's hands), so there is nothing an
// exception could let a caller recover.
#pragma once

// Only MPI's C interface is used; its deprecated C++ bindings warn under -Wextra.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "base/error.h"
#include "dist/communicator.h"
#include "dist/launch.h"

namespace attn::dist {

namespace detail {
[[noreturn]] void throw_mpi_error(int code, const char* call, const std::string& where);
}  // namespace detail

// Checks the return code of an MPI call (MPI_ERRORS_RETURN is set on our communicators);
// the remaining arguments say where, as in ATTN_CHECK.
#define ATTN_MPI_CHECK(call, ...)                                                  \
  do {                                                                             \
    const int attn_mpi_rc_ = (call);                                               \
    if (attn_mpi_rc_ != MPI_SUCCESS) {                                             \
      ::attn::dist::detail::throw_mpi_error(attn_mpi_rc_, #call,                   \
                                            ::attn::detail::str_cat(__VA_ARGS__)); \
    }                                                                              \
  } while (0)

// Initializes MPI once per process (MPI_THREAD_FUNNELED) with MPI_ERRORS_RETURN on
// MPI_COMM_WORLD, and registers MPI_Finalize at exit. Leaves an MPI someone else initialized
// alone (and does not finalize it).
void ensure_mpi_initialized();

class MpiCommunicator final : public Communicator {
 public:
  // Initializes MPI if needed and checks that MPI's world is the one `launch` describes.
  explicit MpiCommunicator(const LaunchInfo& launch);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  int local_rank() const override { return local_rank_; }
  const char* backend() const override { return "mpi"; }
  void all_reduce(Tensor& t, ReduceOp op) override;
  void broadcast(Tensor& t, int root) override;
  void barrier() override;
  std::vector<double> all_reduce_host(const std::vector<double>& values) override;
  // MPI_Iallreduce (at most 2^31 - 1 elements); the average is taken in wait().
  std::unique_ptr<PendingCollective> all_reduce_start(Tensor& t, ReduceOp op) override;

  // Overwrites `bytes` bytes at `data` with root's (for the NCCL bootstrap too); `what` names
  // the call in errors.
  void broadcast_bytes(void* data, int64_t bytes, int root, const std::string& what);
  // Waits for `request` with the ATTN_MPI_TIMEOUT watchdog (see the top of this file): returns
  // when it completed, throws on an MPI error, ends the job at the deadline.
  void complete(MPI_Request& request, const std::string& what) const;

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, world_size_ = 1, local_rank_ = 0;
  double timeout_s_ = 600;
};

#ifdef ATTN_WITH_NCCL
// Defined in nccl_communicator.cc (built only with CUDA and NCCL).
std::unique_ptr<Communicator> make_nccl_communicator(const LaunchInfo& launch, Device device);
#endif

}  // namespace attn::dist
