#include "dist/mpi_communicator.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>

#include "dist/in_flight.h"
#include "dist/watchdog.h"

namespace attn::dist {
namespace {

struct MpiState {
  bool owned = false;  // we called MPI_Init_thread, so we finalize
  std::thread::id thread;
  int world_rank = -1;  // in MPI_COMM_WORLD, for failure messages
  int world_size = 1;
};

MpiState& state() {
  static MpiState s;
  return s;
}

bool initialized() {
  int flag = 0;
  MPI_Initialized(&flag);
  return flag != 0;
}

bool finalized() {
  int flag = 0;
  MPI_Finalized(&flag);
  return flag != 0;
}

void finalize_at_exit() {
  finalize_mpi();
}

// MPI_THREAD_FUNNELED: a call from another thread is undefined behaviour in MPI, so refuse it
// here with a message instead of corrupting the library's state.
void check_thread(const char* what) {
  ATTN_CHECK(std::this_thread::get_id() == state().thread, "mpi ", what,
             ": called from a thread other than the one that initialized MPI "
             "(MPI_THREAD_FUNNELED)");
}

MPI_Datatype mpi_type(DType t, const char* what) {
  switch (t) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kF64:
      return MPI_DOUBLE;
    case DType::kI32:
      return MPI_INT32_T;
    default:
      break;
  }
  ATTN_FAIL("mpi ", what, ": dtype ", t, " is not supported (f32, f64, i32)");
}

void check_tensor(const Tensor& t, const char* what) {
  ATTN_CHECK(t.defined(), "mpi ", what, ": the tensor is undefined");
  ATTN_CHECK(t.device().is_cpu(), "mpi ", what, ": the tensor is on ", t.device(),
             "; the MPI backend works on CPU tensors (CUDA tensors use NCCL)");
}

// In place t /= world (i32 truncates toward zero, as documented for kAverage).
void divide_by_world(Tensor& t, int world) {
  if (world == 1) return;
  const int64_t n = t.numel();
  switch (t.dtype()) {
    case DType::kF32: {
      float* p = t.data<float>();
      const float w = static_cast<float>(world);
      for (int64_t i = 0; i < n; ++i) p[i] /= w;
      break;
    }
    case DType::kF64: {
      double* p = t.data<double>();
      const double w = world;
      for (int64_t i = 0; i < n; ++i) p[i] /= w;
      break;
    }
    default: {
      int32_t* p = t.data<int32_t>();
      for (int64_t i = 0; i < n; ++i) p[i] /= world;
      break;
    }
  }
}

// MPI counts are int: large tensors go in pieces of at most 2^30 elements.
constexpr int64_t kMaxChunk = int64_t{1} << 30;

}  // namespace

namespace detail {
void throw_mpi_error(int code, const char* call, const std::string& where) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) len = 0;
  const std::string call_name(call,
                              std::find(call, call + std::char_traits<char>::length(call), '('));
  throw Error(::attn::detail::str_cat(
      where, ": ", call_name, " failed: ", len > 0 ? std::string(msg, len) : "unknown MPI error"));
}
}  // namespace detail

void ensure_mpi_initialized() {
  if (finalized()) ATTN_FAIL("make_communicator: MPI was already finalized in this process");
  if (!initialized()) {
    int provided = 0;
    // MPI_Init_thread's own failure is fatal by the standard (no error handler exists yet).
    ATTN_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided),
                   "make_communicator");
    state().owned = true;
    state().thread = std::this_thread::get_id();
    std::atexit(finalize_at_exit);
    ATTN_CHECK(provided >= MPI_THREAD_FUNNELED, "make_communicator: MPI provides thread level ",
               provided, ", attn needs MPI_THREAD_FUNNELED");
  } else if (state().thread == std::thread::id()) {
    int provided = 0;
    ATTN_MPI_CHECK(MPI_Query_thread(&provided), "make_communicator");
    ATTN_CHECK(provided >= MPI_THREAD_FUNNELED,
               "make_communicator: MPI was initialized with thread level ", provided,
               ", attn needs MPI_THREAD_FUNNELED");
    state().thread = std::this_thread::get_id();
  }
  ATTN_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "make_communicator");
  ATTN_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &state().world_rank), "make_communicator");
  ATTN_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &state().world_size), "make_communicator");
}

bool mpi_active() {
  return state().owned && initialized() && !finalized();
}

void print_failure(const char* kind, const std::string& message) {
  if (mpi_active() && state().world_size > 1) {
    std::fprintf(stderr, "attn: %s: rank %d: %s\n", kind, state().world_rank, message.c_str());
  } else {
    std::fprintf(stderr, "attn: %s: %s\n", kind, message.c_str());
  }
  std::fflush(stderr);
}

void abort_job(int exit_code) {
  if (initialized() && !finalized()) MPI_Abort(MPI_COMM_WORLD, exit_code == 0 ? 1 : exit_code);
}

void finalize_mpi() {
  if (state().owned && initialized() && !finalized()) MPI_Finalize();
}

MpiCommunicator::MpiCommunicator(const LaunchInfo& launch)
    : timeout_s_(timeout_from_env("ATTN_MPI_TIMEOUT", 600.0)) {
  ensure_mpi_initialized();
  check_thread("make_communicator");
  // A private duplicate keeps our messages apart from any other MPI user in the process.
  ATTN_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "make_communicator");
  ATTN_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "make_communicator");
  ATTN_MPI_CHECK(MPI_Comm_rank(comm_, &rank_), "make_communicator");
  ATTN_MPI_CHECK(MPI_Comm_size(comm_, &world_size_), "make_communicator");
  local_rank_ = launch.local_rank;
  // srun with an MPI that was not built for its PMI starts N independent worlds of one.
  ATTN_CHECK(world_size_ == launch.world_size && rank_ == launch.rank,
             "make_communicator: ", launch.launcher, " says rank ", launch.rank, " of ",
             launch.world_size, " but MPI says rank ", rank_, " of ", world_size_,
             launch.launcher == "srun" ? " (run srun with --mpi=pmix, or use mpirun)" : "");
}

MpiCommunicator::~MpiCommunicator() {
  if (comm_ != MPI_COMM_NULL && initialized() && !finalized()) MPI_Comm_free(&comm_);
}

void MpiCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  check_thread("all_reduce");
  check_tensor(t, "all_reduce");
  const MPI_Datatype type = mpi_type(t.dtype(), "all_reduce");
  const size_t elem = dtype_size(t.dtype());
  const std::string what =
      ::attn::detail::str_cat("mpi all_reduce of ", t.dtype(), " ", t.shape(), " on rank ", rank_);
  char* data = static_cast<char*>(t.raw_data());
  for (int64_t done = 0; done < t.numel(); done += kMaxChunk) {
    const int n = static_cast<int>(std::min(kMaxChunk, t.numel() - done));
    MPI_Request req = MPI_REQUEST_NULL;
    ATTN_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data + done * elem, n, type, MPI_SUM, comm_, &req),
                   what);
    complete(req, what);
  }
  if (op == ReduceOp::kAverage) divide_by_world(t, world_size_);
}

void MpiCommunicator::complete(MPI_Request& request, const std::string& what) const {
  const bool done = poll_until(
      [&] {
        int flag = 0;
        ATTN_MPI_CHECK(MPI_Test(&request, &flag, MPI_STATUS_IGNORE), what);
        return flag != 0;
      },
      timeout_s_);
  if (done) return;
  // `what` ends with "on rank R"; the failure line starts with it.
  print_failure("error", ::attn::detail::str_cat(
                             what, " did not complete within ", timeout_s_,
                             " s (another rank died, hangs or stopped calling collectives; "
                             "ATTN_MPI_TIMEOUT sets the limit); aborting the job"));
  MPI_Abort(MPI_COMM_WORLD, 1);
  ATTN_FAIL(what, ": MPI_Abort returned");  // it does not; if it did, main() tries again
}

namespace {

class MpiPending final : public PendingCollective {
 public:
  MpiPending(const MpiCommunicator& comm, MPI_Request request, Tensor t, ReduceOp op,
             std::string what)
      : comm_(comm), request_(request), t_(std::move(t)), op_(op), what_(std::move(what)) {}
  ~MpiPending() override {
    // An abandoned request (an exception unwound past it) must still complete before its
    // buffer can be reused; MPI has no portable cancel for collectives. While an error unwinds
    // the peers may be gone and the request may never complete: the buffer MPI still owns is
    // kept until the process exits (the job is about to be aborted, by main), never freed
    // under MPI.
    if (request_ == MPI_REQUEST_NULL) return;
    if (std::uncaught_exceptions() > 0) {
      keep_until_exit(std::move(t_));
      return;
    }
    try {
      comm_.complete(request_, what_);
    } catch (const std::exception&) {
      // An MPI error in a destructor: nothing to report it to; the job is failing.
    }
  }
  bool test() override {
    if (request_ == MPI_REQUEST_NULL) return true;
    int done = 0;
    ATTN_MPI_CHECK(MPI_Test(&request_, &done, MPI_STATUS_IGNORE), what_);
    return done != 0;
  }
  void wait() override {
    if (request_ != MPI_REQUEST_NULL) comm_.complete(request_, what_);
    if (op_ == ReduceOp::kAverage && !averaged_) divide_by_world(t_, comm_.world_size());
    averaged_ = true;
  }

 private:
  const MpiCommunicator& comm_;
  MPI_Request request_;
  Tensor t_;
  ReduceOp op_;
  std::string what_;
  bool averaged_ = false;
};

}  // namespace

std::unique_ptr<PendingCollective> MpiCommunicator::all_reduce_start(Tensor& t, ReduceOp op) {
  check_thread("all_reduce_start");
  check_tensor(t, "all_reduce_start");
  ATTN_CHECK(t.numel() <= INT32_MAX, "mpi all_reduce_start: ", t.numel(),
             " elements is more than one MPI call takes (2^31 - 1); use smaller buckets");
  const std::string what = ::attn::detail::str_cat("mpi all_reduce_start of ", t.dtype(), " ",
                                                   t.shape(), " on rank ", rank_);
  MPI_Request req = MPI_REQUEST_NULL;
  ATTN_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, t.raw_data(), static_cast<int>(t.numel()),
                                mpi_type(t.dtype(), "all_reduce_start"), MPI_SUM, comm_, &req),
                 what);
  return std::make_unique<MpiPending>(*this, req, t, op, what);
}

void MpiCommunicator::broadcast(Tensor& t, int root) {
  check_tensor(t, "broadcast");
  ATTN_CHECK(0 <= root && root < world_size_, "mpi broadcast: root ", root,
             " is not a rank of a world of ", world_size_);
  broadcast_bytes(t.raw_data(), static_cast<int64_t>(t.nbytes()), root,
                  ::attn::detail::str_cat("mpi broadcast of ", t.dtype(), " ", t.shape(),
                                          " from rank ", root, " on rank ", rank_));
}

void MpiCommunicator::broadcast_bytes(void* data, int64_t bytes, int root,
                                      const std::string& what) {
  check_thread("broadcast");
  for (int64_t done = 0; done < bytes; done += kMaxChunk) {
    const int n = static_cast<int>(std::min(kMaxChunk, bytes - done));
    MPI_Request req = MPI_REQUEST_NULL;
    ATTN_MPI_CHECK(MPI_Ibcast(static_cast<char*>(data) + done, n, MPI_BYTE, root, comm_, &req),
                   what);
    complete(req, what);
  }
}

void MpiCommunicator::barrier() {
  check_thread("barrier");
  const std::string what = ::attn::detail::str_cat("mpi barrier on rank ", rank_);
  MPI_Request req = MPI_REQUEST_NULL;
  ATTN_MPI_CHECK(MPI_Ibarrier(comm_, &req), what);
  complete(req, what);
}

std::vector<double> MpiCommunicator::all_reduce_host(const std::vector<double>& values) {
  check_thread("all_reduce_host");
  std::vector<double> out = values;
  if (out.empty()) return out;
  ATTN_CHECK(out.size() <= static_cast<size_t>(kMaxChunk), "mpi all_reduce_host: ", out.size(),
             " values are too many for one call");
  const std::string what =
      ::attn::detail::str_cat("mpi all_reduce_host of ", out.size(), " values on rank ", rank_);
  MPI_Request req = MPI_REQUEST_NULL;
  ATTN_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, out.data(), static_cast<int>(out.size()),
                                MPI_DOUBLE, MPI_SUM, comm_, &req),
                 what);
  complete(req, what);
  return out;
}

}  // namespace attn::dist
