// Communicator: the collectives data-parallel training needs (all-reduce, broadcast, barrier,
// host scalar sums) behind one interface with three backends: a world of one (no MPI at all),
// MPI over CPU tensors, and NCCL over CUDA tensors (bootstrapped and helped by MPI).
//
// Every rank must make the same calls in the same order with the same shapes and dtypes;
// the collectives are blocking (when a call returns, the tensor holds the result), except
// all_reduce_start, which returns a PendingCollective that completes it.
//
// Failure model (docs/RELIABILITY.md, "Rank failure"). MPI runs with MPI_ERRORS_RETURN, so a
// failed MPI call throws attn::Error naming the call and MPI's message. A peer that dies is
// not reported by MPI itself: under mpirun (and srun) the launcher notices the dead process
// and kills the whole job, so the survivors do not hang. A peer that is alive but never joins
// a collective (a bug, a deadlock, a stuck device) would hang the others: every MPI
// collective is polled with a deadline of ATTN_MPI_TIMEOUT seconds, after which the waiting
// rank prints which collective did not complete and calls MPI_Abort (mpi_communicator.h);
// the NCCL backend gives up after ATTN_NCCL_TIMEOUT seconds, aborts the NCCL communicator and
// throws (both default 600; 0 waits forever). When one rank throws, main() prints the error
// with the rank (print_failure) and must call abort_job() (launch.h), not return normally:
// MPI_Finalize waits for the peers, which are blocked in the next collective.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/device.h"
#include "core/tensor.h"
#include "dist/launch.h"

namespace attn::dist {

enum class ReduceOp { kSum, kAverage };

const char* reduce_op_name(ReduceOp op);

// A collective in flight (all_reduce_start). The tensor must not be read or written until
// wait() has returned. Destroying it without wait() (an exception in between) is safe: the
// collective still completes (MPI) or later work is ordered after it (NCCL) before the
// buffer can be reused. It must not outlive its communicator. test() lets the library make progress (MPI progresses non-blocking
// collectives only inside MPI calls) and says whether the result is there.
class PendingCollective {
 public:
  virtual ~PendingCollective();
  virtual bool test() = 0;
  // Makes the result visible: in memory (MPI) or to later work on the device's stream (NCCL,
  // without blocking the host).
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator();

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Rank among the processes on this machine: picks the GPU.
  virtual int local_rank() const = 0;
  virtual const char* backend() const = 0;  // "single", "mpi", "nccl"

  // In place over a contiguous tensor: f32/f64/i32 on the CPU for MPI, f32/f64/bf16/f16/i32
  // on CUDA for NCCL. kAverage of i32 divides the sum by world_size truncating toward zero
  // (MPI; NCCL averages floating-point types only).
  virtual void all_reduce(Tensor& t, ReduceOp op) = 0;
  // Overwrites `t` on every rank with root's values (same shape and dtype everywhere).
  virtual void broadcast(Tensor& t, int root) = 0;
  virtual void barrier() = 0;
  // Host scalars (token counts, losses for the log line): element-wise sums across ranks in
  // double. Every rank must pass the same number of values.
  virtual std::vector<double> all_reduce_host(const std::vector<double>& values) = 0;
  // Starts an all-reduce of `t` and returns at once where the backend can overlap it with
  // other work (MPI: MPI_Iallreduce; NCCL: a separate CUDA stream); the default reduces
  // before returning. Pending collectives must be started in the same order on every rank.
  virtual std::unique_ptr<PendingCollective> all_reduce_start(Tensor& t, ReduceOp op);

  bool is_main() const { return rank() == 0; }
};

// The world of one: every collective is the identity (a sum over one rank is the value).
class SingleCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  int local_rank() const override { return 0; }
  const char* backend() const override { return "single"; }
  void all_reduce(Tensor& t, ReduceOp op) override;
  void broadcast(Tensor& t, int root) override;
  void barrier() override {}
  std::vector<double> all_reduce_host(const std::vector<double>& values) override;
};

// The communicator for training on `device` in this launch (detect_launch()): a world of one
// gives SingleCommunicator without touching MPI; otherwise MPI is initialized (once,
// MPI_THREAD_FUNNELED: only the thread that made the communicator may call it; finalized at
// exit) and CPU devices get the MPI backend, CUDA devices the NCCL backend (a build without
// CUDA/NCCL throws). The MPI world must match what the launcher's variables say.
std::unique_ptr<Communicator> make_communicator(Device device);
std::unique_ptr<Communicator> make_communicator(Device device, const LaunchInfo& launch);

// Reduces the gradients of `params` across ranks (op kAverage for gradients of a per-rank
// mean loss; kSum when each rank already scaled its loss by the global token count). The
// gradients are packed in parameter order into buckets of about `bucket_bytes` (one dtype
// per bucket; a bigger gradient is reduced in place on its own), each bucket is reduced and
// copied back. A parameter without a gradient on this rank takes part with zeros when any
// rank has one (and then receives the result as its gradient); parameters with a gradient on
// no rank are skipped and stay without one, so replicas step identically. Every rank must
// pass the same parameters in the same order.
void all_reduce_gradients(Communicator& comm, const std::vector<Tensor>& params,
                          int64_t bucket_bytes = 25 << 20, ReduceOp op = ReduceOp::kAverage);

// Debug check (train.check_replicas): throws on every rank, naming the first parameter whose
// name, dtype, shape or bytes differ from rank 0's and the ranks that differ. Compares XXH64
// hashes through all_reduce_host, so it costs one host copy of each parameter, not a gather.
void check_replicas_identical(Communicator& comm,
                              const std::vector<std::pair<std::string, Tensor>>& named_params);

}  // namespace attn::dist
