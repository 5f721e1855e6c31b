// The NCCL backend: CUDA tensors reduced by NCCL on attn's stream of the device, with MPI for
// the bootstrap (rank 0's ncclUniqueId goes out by MPI_Bcast), host sums and the barrier.
//
// Hangs become errors: the communicator is non-blocking (ncclConfig_t::blocking = 0), and
// every wait, for initialization, for an enqueue that NCCL reports as in progress, and for the
// stream to finish a collective, polls ncclCommGetAsyncError with a deadline of
// ATTN_NCCL_TIMEOUT seconds (default 600, 0 = no deadline). On an error or at the deadline the
// communicator is aborted (ncclCommAbort also stops its kernels) and attn::Error thrown; the
// communicator refuses any later call. The MPI calls (bootstrap, host sums, barrier) have
// their own watchdog, ATTN_MPI_TIMEOUT (mpi_communicator.h).
//
// Started all-reduces run on a second stream. Their Pending holds the bucket (an
// InFlightBuffer, in_flight.h) until attn's stream is ordered after the collective: by wait(),
// or by the destructor when an exception came between start and wait, so the next step's copy
// into the bucket cannot overtake the reduction and the caching allocator cannot hand the
// bucket out while NCCL writes it. barrier() waits for both streams; the destructor finalizes
// (or aborts) the communicator, then synchronizes and destroys the second stream.
//
// Compiled only with ATTN_WITH_NCCL (a CUDA build that found NCCL): the whole file is guarded
// so that a glob over src/dist/*.cc can include it unconditionally.
#ifdef ATTN_WITH_NCCL

#include <cuda_runtime.h>
#include <nccl.h>

#include <exception>
#include <string>

#include "core/cuda_backend.h"
#include "base/cuda_check.h"
#include "dist/in_flight.h"
#include "dist/mpi_communicator.h"
#include "dist/watchdog.h"

namespace attn::dist {
namespace {

// A CUDA event for ordering only (no timing), destroyed with its owner. Destroying an event
// whose work is still pending is allowed: its resources are released once the work completes.
class Event {
 public:
  Event() { CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  ~Event() {
    if (event_ != nullptr) cudaEventDestroy(event_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kF64:
      return ncclFloat64;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF16:
      return ncclFloat16;
    case DType::kI32:
      return ncclInt32;
  }
  ATTN_FAIL("nccl: bad dtype");
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const LaunchInfo& launch, Device device)
      : mpi_(launch), device_(device), timeout_s_(timeout_from_env("ATTN_NCCL_TIMEOUT", 600.0)) {
    ATTN_CHECK(device.is_cuda(), "make_communicator: NCCL needs a CUDA device, got ", device);
    cuda::require_device(device.index);
    stream_ = cuda::stream(device.index);  // also makes the device current
    ncclUniqueId id;
    if (mpi_.rank() == 0) {
      const ncclResult_t r = ncclGetUniqueId(&id);
      ATTN_CHECK(r == ncclSuccess,
                 "make_communicator: ncclGetUniqueId failed on rank 0: ", ncclGetErrorString(r));
    }
    mpi_.broadcast_bytes(&id, sizeof(id), 0,
                         ::attn::detail::str_cat("make_communicator: sending the NCCL id from "
                                                 "rank 0 to rank ",
                                                 mpi_.rank()));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // so that a missing peer times out instead of hanging
    settle(ncclCommInitRankConfig(&comm_, mpi_.world_size(), id, mpi_.rank(), &config),
           "ncclCommInitRank");
  }

  ~NcclCommunicator() override {
    close();
    if (comm_stream_ != nullptr) {
      // Finalized (every collective done) or aborted (its kernels stopped): nothing on the
      // second stream can still be waiting for a peer.
      cudaSetDevice(device_.index);
      cudaStreamSynchronize(comm_stream_);
      cudaStreamDestroy(comm_stream_);
    }
  }

  int rank() const override { return mpi_.rank(); }
  int world_size() const override { return mpi_.world_size(); }
  int local_rank() const override { return mpi_.local_rank(); }
  const char* backend() const override { return "nccl"; }

  void all_reduce(Tensor& t, ReduceOp op) override {
    const std::string what = describe("all_reduce", t);
    check_tensor(t, what);
    ATTN_CHECK(op == ReduceOp::kSum || is_floating(t.dtype()), what,
               ": average is for floating-point tensors (reduce i32 with sum)");
    enter();
    settle(ncclAllReduce(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()),
                         nccl_type(t.dtype()), op == ReduceOp::kSum ? ncclSum : ncclAvg, comm_,
                         stream_),
           what);
    wait(what);
  }

  // On a second stream, ordered after everything queued on attn's stream so far, so that
  // backward kernels queued later run while NCCL reduces. wait() polls for completion with
  // the same watchdog as the blocking calls (a missing peer must not hang the job), then
  // orders attn's stream after it.
  std::unique_ptr<PendingCollective> all_reduce_start(Tensor& t, ReduceOp op) override {
    const std::string what = describe("all_reduce_start", t);
    check_tensor(t, what);
    ATTN_CHECK(op == ReduceOp::kSum || is_floating(t.dtype()), what,
               ": average is for floating-point tensors (reduce i32 with sum)");
    enter();
    if (comm_stream_ == nullptr)
      CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
    // Made before anything is queued, so that from here on any exit orders attn's stream after
    // `done` before the tensor is let go of (an unrecorded event is a no-op to wait for).
    auto pending = std::make_unique<Pending>(*this, t, what);
    CUDA_CHECK(cudaEventRecord(pending->ready(), stream_));
    CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, pending->ready(), 0));
    settle(ncclAllReduce(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()),
                         nccl_type(t.dtype()), op == ReduceOp::kSum ? ncclSum : ncclAvg, comm_,
                         comm_stream_),
           what);
    CUDA_CHECK(cudaEventRecord(pending->done(), comm_stream_));
    return pending;
  }

  void broadcast(Tensor& t, int root) override {
    const std::string what = describe("broadcast", t) + " from rank " + std::to_string(root);
    check_tensor(t, what);
    ATTN_CHECK(0 <= root && root < world_size(), what, ": root is not a rank of a world of ",
               world_size());
    enter();
    settle(ncclBroadcast(t.raw_data(), t.raw_data(), t.nbytes(), ncclUint8, root, comm_, stream_),
           what);
    wait(what);
  }

  void barrier() override {
    // Our own queued collectives first, blocking and started ones (with the watchdog), then
    // everyone meets in MPI.
    enter();
    wait_stream(stream_, "nccl barrier");
    if (comm_stream_ != nullptr) wait_stream(comm_stream_, "nccl barrier (started all-reduces)");
    mpi_.barrier();
  }

  std::vector<double> all_reduce_host(const std::vector<double>& values) override {
    return mpi_.all_reduce_host(values);
  }

 private:
  // A started all-reduce: `ready` (attn's stream up to the start) and `done` (the collective
  // on the second stream), and the tensor, held until attn's stream is ordered after `done`
  // (the members are destroyed in reverse order: buffer_ orders, then the events go). Must not
  // outlive the communicator (wait() polls through it; the destructor does not).
  class Pending final : public PendingCollective {
   public:
    Pending(NcclCommunicator& owner, const Tensor& t, std::string what)
        : owner_(owner),
          what_(std::move(what)),
          buffer_(t, [stream = owner.stream_, done = done_.get()] {
            CUDA_CHECK(cudaStreamWaitEvent(stream, done, 0));
          }) {}
    cudaEvent_t ready() const { return ready_.get(); }
    cudaEvent_t done() const { return done_.get(); }
    bool test() override {
      if (buffer_.ordered()) return true;
      const cudaError_t q = cudaEventQuery(done_.get());
      if (q == cudaErrorNotReady) return false;
      CUDA_CHECK(q);
      return true;
    }
    void wait() override {
      if (buffer_.ordered()) return;
      owner_.poll_until_done(what_, "cudaEventQuery",
                             [event = done_.get()] { return cudaEventQuery(event); });
      buffer_.order();
    }

   private:
    NcclCommunicator& owner_;
    std::string what_;
    Event ready_, done_;
    InFlightBuffer buffer_;
  };

  // Finalizes the communicator, or aborts it when that fails or an error is unwinding the
  // stack (peers may be gone: a clean finalize could only time out). Never throws.
  void close() noexcept {
    if (comm_ == nullptr || aborted_) return;
    if (std::uncaught_exceptions() == 0) {
      try {
        enter();
        settle(ncclCommFinalize(comm_), "ncclCommFinalize");
        ncclCommDestroy(comm_);
        comm_ = nullptr;
        return;
      } catch (const std::exception&) {
        if (aborted_) return;  // settle() aborted it
      }
    }
    ncclCommAbort(comm_);
    aborted_ = true;
  }

  std::string describe(const char* op, const Tensor& t) const {
    return ::attn::detail::str_cat("nccl ", op, " of ",
                                   t.defined() ? dtype_name(t.dtype()) : "undefined", " ",
                                   t.defined() ? t.shape() : Shape{}, " on rank ", rank());
  }

  void check_tensor(const Tensor& t, const std::string& what) const {
    ATTN_CHECK(t.defined(), what, ": the tensor is undefined");
    ATTN_CHECK(t.device() == device_, what, ": the tensor is on ", t.device(),
               " but this communicator works on ", device_);
  }

  void enter() {
    ATTN_CHECK(!aborted_, "nccl: the communicator of rank ", rank(),
               " was aborted after an earlier error");
    CUDA_CHECK(cudaSetDevice(device_.index));
  }

  [[noreturn]] void fail(const std::string& what, const std::string& why) {
    if (comm_ != nullptr) ncclCommAbort(comm_);
    aborted_ = true;
    ATTN_FAIL(what, ": ", why);
  }

  // NCCL's state after an error, with its last message when it has one.
  [[noreturn]] void fail_nccl(const std::string& what, ncclResult_t r) {
    const char* last = ncclGetLastError(comm_);
    fail(what, ::attn::detail::str_cat("NCCL error ", ncclGetErrorString(r),
                                       last && *last ? ": " : "", last ? last : ""));
  }

  // A non-blocking communicator may answer ncclInProgress: poll until the call has gone
  // through (or failed, or the deadline passed).
  void settle(ncclResult_t r, const std::string& what) {
    const bool through = poll_until(
        [&] {
          if (r != ncclInProgress) return true;
          if (const ncclResult_t q = ncclCommGetAsyncError(comm_, &r); q != ncclSuccess) r = q;
          return r != ncclInProgress;
        },
        timeout_s_);
    if (!through) {
      fail(what, ::attn::detail::str_cat("no progress in ", timeout_s_,
                                         " s (a peer is missing or stuck; ATTN_NCCL_TIMEOUT "
                                         "sets the limit)"));
    }
    if (r != ncclSuccess) fail_nccl(what, r);
  }

  // Waits for `stream` to finish what was queued, watching for NCCL's asynchronous errors (a
  // peer that died, a network failure) and the deadline.
  void wait_stream(cudaStream_t stream, const std::string& what) {
    poll_until_done(what, "cudaStreamQuery", [stream] { return cudaStreamQuery(stream); });
  }
  void wait(const std::string& what) { wait_stream(stream_, what); }

  // Polls `query` (cudaSuccess: done, cudaErrorNotReady: not yet) with the watchdog.
  template <class Query>
  void poll_until_done(const std::string& what, const char* query_name, Query&& query) {
    const bool done = poll_until(
        [&] {
          const cudaError_t q = query();
          if (q == cudaSuccess) return true;
          if (q != cudaErrorNotReady) {
            ::attn::detail::throw_cuda_error(q, query_name, __FILE__, __LINE__);
          }
          ncclResult_t async = ncclSuccess;
          if (const ncclResult_t r = ncclCommGetAsyncError(comm_, &async); r != ncclSuccess) {
            fail_nccl(what, r);
          }
          if (async != ncclSuccess && async != ncclInProgress) fail_nccl(what, async);
          return false;
        },
        timeout_s_);
    if (!done) {
      fail(what, ::attn::detail::str_cat("did not finish within ", timeout_s_,
                                         " s (a peer died or stopped calling collectives; "
                                         "ATTN_NCCL_TIMEOUT sets the limit)"));
    }
  }

  MpiCommunicator mpi_;
  Device device_;
  double timeout_s_;
  cudaStream_t stream_ = nullptr;
  cudaStream_t comm_stream_ = nullptr;  // all_reduce_start; created on first use
  ncclComm_t comm_ = nullptr;
  bool aborted_ = false;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const LaunchInfo& launch, Device device) {
  return std::make_unique<NcclCommunicator>(launch, device);
}

}  // namespace attn::dist

#endif  // ATTN_WITH_NCCL
