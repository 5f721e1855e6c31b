// The communication layer (src/dist): the single-process communicator, launch detection from
// the launchers' environment variables, gradient bucketing (against a fake two-rank world that
// records what it is asked to reduce) and, under mpirun with two ranks, the MPI backend.
//
// The [.mpi] cases are hidden from normal runs; tests/dist/run_mpi_tests.sh runs them as
// `mpirun -np 2 attn_tests "[mpi]"`. Run any other way they fail: they need a world of two.
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "autograd/functions.h"
#include "dist/communicator.h"
#include "dist/grad_reducer.h"
#include "dist/in_flight.h"
#include "dist/launch.h"
#include "dist/watchdog.h"
#include "test_util.h"
#include "train/fault_injection.h"

using namespace attn;
using attn::testing::EnvGuard;
using attn::testing::error_of;

namespace {


// Every variable detect_launch reads, unset: a clean slate even when ctest itself runs under
// Slurm or mpirun.
EnvGuard no_launcher() {
  return EnvGuard{{"OMPI_COMM_WORLD_SIZE", std::nullopt},
                  {"OMPI_COMM_WORLD_RANK", std::nullopt},
                  {"OMPI_COMM_WORLD_LOCAL_RANK", std::nullopt},
                  {"SLURM_STEP_NUM_TASKS", std::nullopt},
                  {"SLURM_NTASKS", std::nullopt},
                  {"SLURM_PROCID", std::nullopt},
                  {"SLURM_LOCALID", std::nullopt}};
}

Tensor param(const std::vector<double>& values, const Shape& shape, DType dtype = kF32) {
  Tensor p = Tensor::from_vector(values, shape, dtype);
  p.set_requires_grad(true);
  return p;
}

void set_grad(const Tensor& p, const std::vector<double>& g) {
  p.impl()->grad = Tensor::from_vector(g, p.shape(), p.dtype()).impl_ptr();
}

std::vector<double> grad_of(const Tensor& p) {
  return p.grad().to_double_vector();
}

// A world of two in one process: rank 0 of 2 whose peer holds exactly the same tensors (so a
// sum doubles and an average keeps values), except that the peer's host values can be set,
// which is how a peer with other gradients present is simulated. Records every reduction.
class TwinCommunicator final : public dist::Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 2; }
  int local_rank() const override { return 0; }
  const char* backend() const override { return "twin"; }
  void all_reduce(Tensor& t, dist::ReduceOp op) override {
    reduced.emplace_back(t.dtype(), t.numel());
    if (op == dist::ReduceOp::kSum) {
      std::vector<double> v = t.to_double_vector();
      for (double& x : v) x *= 2;
      t.copy_(Tensor::from_vector(v, t.shape(), t.dtype()));
    }
  }
  void broadcast(Tensor&, int) override {}
  void barrier() override {}
  std::vector<double> all_reduce_host(const std::vector<double>& values) override {
    std::vector<double> out = values;
    for (size_t i = 0; i < out.size(); ++i) out[i] += peer_host ? (*peer_host)[i] : values[i];
    return out;
  }

  std::optional<std::vector<double>> peer_host;
  std::vector<std::pair<DType, int64_t>> reduced;
};

}  // namespace

TEST_CASE("single communicator: collectives are the identity", "[dist]") {
  dist::SingleCommunicator comm;
  CHECK(comm.rank() == 0);
  CHECK(comm.world_size() == 1);
  CHECK(comm.local_rank() == 0);
  CHECK(comm.is_main());
  CHECK(std::string(comm.backend()) == "single");

  Tensor t = Tensor::from_vector({1.5, -2, 3}, {3});
  comm.all_reduce(t, dist::ReduceOp::kSum);
  CHECK(t.to_double_vector() == std::vector<double>{1.5, -2, 3});
  comm.all_reduce(t, dist::ReduceOp::kAverage);
  CHECK(t.to_double_vector() == std::vector<double>{1.5, -2, 3});
  Tensor ids = Tensor::from_ints({7, -1}, {2});
  comm.all_reduce(ids, dist::ReduceOp::kAverage);
  CHECK(ids.to_int_vector() == std::vector<int32_t>{7, -1});

  comm.broadcast(t, 0);
  CHECK(t.to_double_vector() == std::vector<double>{1.5, -2, 3});
  CHECK(error_of([&] { comm.broadcast(t, 1); }).find("root 1") != std::string::npos);
  comm.barrier();

  CHECK(comm.all_reduce_host({}).empty());
  CHECK(comm.all_reduce_host({3, 0.25, -1}) == std::vector<double>{3, 0.25, -1});

  Tensor undefined;
  CHECK(error_of([&] { comm.all_reduce(undefined, dist::ReduceOp::kSum); }).find("undefined") !=
        std::string::npos);
}

TEST_CASE("detect_launch reads mpirun's and srun's variables", "[dist]") {
  {
    EnvGuard clean = no_launcher();
    const dist::LaunchInfo info = dist::detect_launch();
    CHECK(info.world_size == 1);
    CHECK(info.rank == 0);
    CHECK(info.local_rank == 0);
    CHECK(info.launcher == "none");
    // make_communicator without a launcher: the world of one, MPI untouched.
    const auto comm = dist::make_communicator(Device::cpu());
    CHECK(std::string(comm->backend()) == "single");
    CHECK(!dist::mpi_active());
  }
  {
    EnvGuard clean = no_launcher();
    EnvGuard env{{"OMPI_COMM_WORLD_SIZE", "8"},
                 {"OMPI_COMM_WORLD_RANK", "5"},
                 {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}};
    const dist::LaunchInfo info = dist::detect_launch();
    CHECK(info.world_size == 8);
    CHECK(info.rank == 5);
    CHECK(info.local_rank == 1);
    CHECK(info.launcher == "mpirun");
  }
  {
    EnvGuard clean = no_launcher();
    EnvGuard env{{"SLURM_STEP_NUM_TASKS", "4"},
                 {"SLURM_NTASKS", "4"},
                 {"SLURM_PROCID", "3"},
                 {"SLURM_LOCALID", "3"}};
    const dist::LaunchInfo info = dist::detect_launch();
    CHECK(info.world_size == 4);
    CHECK(info.rank == 3);
    CHECK(info.local_rank == 3);
    CHECK(info.launcher == "srun");
  }
  {
    // A batch script (no srun step): SLURM_NTASKS describes the job, not this process.
    EnvGuard clean = no_launcher();
    EnvGuard env{{"SLURM_NTASKS", "4"}, {"SLURM_PROCID", "0"}, {"SLURM_LOCALID", "0"}};
    CHECK(dist::detect_launch().launcher == "none");
    CHECK(dist::detect_launch().world_size == 1);
  }
  {
    // mpirun inside a Slurm allocation: mpirun's variables win.
    EnvGuard clean = no_launcher();
    EnvGuard env{{"SLURM_STEP_NUM_TASKS", "1"},
                 {"SLURM_PROCID", "0"},
                 {"OMPI_COMM_WORLD_SIZE", "2"},
                 {"OMPI_COMM_WORLD_RANK", "1"}};
    const dist::LaunchInfo info = dist::detect_launch();
    CHECK(info.launcher == "mpirun");
    CHECK(info.world_size == 2);
    CHECK(info.rank == 1);
    CHECK(info.local_rank == 0);  // not given: 0
  }
}

TEST_CASE("detect_launch rejects malformed launcher variables", "[dist]") {
  EnvGuard clean = no_launcher();
  {
    EnvGuard env{{"OMPI_COMM_WORLD_SIZE", "two"}, {"OMPI_COMM_WORLD_RANK", "0"}};
    const std::string e = error_of([] { dist::detect_launch(); });
    CHECK(e.find("OMPI_COMM_WORLD_SIZE='two' is not an integer") != std::string::npos);
  }
  {
    EnvGuard env{{"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_RANK", "2"}};
    CHECK(error_of([] { dist::detect_launch(); }).find("OMPI_COMM_WORLD_RANK is 2") !=
          std::string::npos);
  }
  {
    EnvGuard env{{"OMPI_COMM_WORLD_SIZE", "2"}};
    CHECK(error_of([] { dist::detect_launch(); }).find("OMPI_COMM_WORLD_RANK is missing") !=
          std::string::npos);
  }
  {
    EnvGuard env{{"SLURM_STEP_NUM_TASKS", "0"}, {"SLURM_PROCID", "0"}};
    CHECK(error_of([] { dist::detect_launch(); }).find("SLURM_STEP_NUM_TASKS is 0") !=
          std::string::npos);
  }
  {
    EnvGuard env{{"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_PROCID", "1"}, {"SLURM_LOCALID", "-1"}};
    CHECK(error_of([] { dist::detect_launch(); }).find("SLURM_LOCALID is -1") != std::string::npos);
  }
}

#ifndef ATTN_WITH_NCCL
TEST_CASE("make_communicator refuses several CUDA processes without NCCL", "[dist]") {
  dist::LaunchInfo two;
  two.world_size = 2;
  two.launcher = "mpirun";
  const std::string e = error_of([&] { dist::make_communicator(Device::cuda(0), two); });
  CHECK(e.find("need NCCL") != std::string::npos);
  CHECK(!dist::mpi_active());
}
#endif

TEST_CASE("all_reduce_gradients with one process leaves gradients alone", "[dist]") {
  dist::SingleCommunicator comm;
  Tensor a = param({1, 2, 3, 4}, {2, 2});
  Tensor b = param({5}, {1}, kF64);
  Tensor unused = param({6, 7}, {2});
  set_grad(a, {0.5, -1, 2, 8});
  set_grad(b, {-3});
  dist::all_reduce_gradients(comm, {a, b, unused}, 4);
  CHECK(grad_of(a) == std::vector<double>{0.5, -1, 2, 8});
  CHECK(grad_of(b) == std::vector<double>{-3});
  CHECK(!unused.grad().defined());
}

TEST_CASE("all_reduce_gradients packs buckets in parameter order and unpacks them", "[dist]") {
  // 16-byte buckets: p0 + p1 (8 + 8 bytes) share one; p2 (12) goes alone; p3 (20 >= 16) is
  // reduced in place; the scalar f64 p4 starts a new bucket (another dtype) with the f64 p5.
  Tensor p0 = param({0, 0}, {2});
  Tensor p1 = param({0, 0}, {1, 2});
  Tensor p2 = param({0, 0, 0}, {3});
  Tensor p3 = param({0, 0, 0, 0, 0}, {5});
  Tensor p4 = param({0}, {}, kF64);
  Tensor p5 = param({0}, {1}, kF64);
  set_grad(p0, {1, 2});
  set_grad(p1, {3, 4});
  set_grad(p2, {5, 6, 7});
  set_grad(p3, {8, 9, 10, 11, 12});
  set_grad(p4, {13});
  set_grad(p5, {14});
  const std::vector<Tensor> params{p0, p1, p2, p3, p4, p5};

  TwinCommunicator comm;
  dist::all_reduce_gradients(comm, params, 16, dist::ReduceOp::kSum);
  const std::vector<std::pair<DType, int64_t>> expected{{kF32, 4}, {kF32, 3}, {kF32, 5}, {kF64, 2}};
  CHECK(comm.reduced == expected);
  CHECK(grad_of(p0) == std::vector<double>{2, 4});
  CHECK(grad_of(p1) == std::vector<double>{6, 8});
  CHECK(grad_of(p2) == std::vector<double>{10, 12, 14});
  CHECK(grad_of(p3) == std::vector<double>{16, 18, 20, 22, 24});
  CHECK(grad_of(p4) == std::vector<double>{26});
  CHECK(grad_of(p5) == std::vector<double>{28});
  CHECK(p1.grad().shape() == Shape{1, 2});
  CHECK(p4.grad().shape() == Shape{});

  // Averaging over identical replicas gives the gradients back, whatever the bucket size.
  for (int64_t bucket : {int64_t{1}, int64_t{16}, int64_t{1} << 20}) {
    TwinCommunicator twin;
    dist::all_reduce_gradients(twin, params, bucket);
    CHECK(grad_of(p0) == std::vector<double>{2, 4});
    CHECK(grad_of(p3) == std::vector<double>{16, 18, 20, 22, 24});
    CHECK(grad_of(p5) == std::vector<double>{28});
  }
}

TEST_CASE("all_reduce_gradients exchanges zeros for gradients present only elsewhere", "[dist]") {
  Tensor used = param({1, 2}, {2});
  Tensor peer_only = param({3, 4, 5}, {3});
  Tensor nowhere = param({6}, {1});
  set_grad(used, {1, 1});
  TwinCommunicator comm;
  comm.peer_host = std::vector<double>{1, 1, 0};  // the peer has gradients for used, peer_only
  dist::all_reduce_gradients(comm, {used, peer_only, nowhere}, 1 << 20);
  // Both reduced in one bucket of 5 elements: the same layout on every rank.
  CHECK(comm.reduced == std::vector<std::pair<DType, int64_t>>{{kF32, 5}});
  REQUIRE(peer_only.grad().defined());
  CHECK(peer_only.grad().shape() == Shape{3});
  CHECK(grad_of(peer_only) == std::vector<double>{0, 0, 0});
  CHECK(!nowhere.grad().defined());  // no rank has one: Adam skips it everywhere
}

TEST_CASE("GradReducer starts buckets during backward, in order, and unpacks the sums",
          "[dist]") {
  // y = sum(w3 * relu(w2 * (w1 * x))): backward completes w3's gradient first, then w2's,
  // then w1's; reverse-order buckets of one parameter each start as soon as each is ready.
  Tensor x = Tensor::from_vector({1, 2, 3, 4}, {4});
  Tensor w1 = param({0.5, -1, 2, 1}, {4}), w2 = param({1, 2, 3, 4}, {4}),
         w3 = param({2, 2, 2, 2}, {4});
  auto loss = [&] { return sum(mul(w3, relu(mul(w2, mul(w1, x))))); };
  TwinCommunicator twin;
  dist::GradReducer reducer(twin, {w1, w2, w3}, 16, dist::ReduceOp::kSum);
  CHECK(reducer.bucket_count() == 3);
  reducer.begin();
  loss().backward();
  CHECK(twin.reduced.size() == 3);  // all three started from the engine's hook
  CHECK(reducer.started_during_backward() == 3);
  reducer.finish();
  // The twin doubles (a sum over two identical ranks).
  CHECK(grad_of(w3) == std::vector<double>{2 * 0.5, 0, 2 * 18, 2 * 16});
  CHECK(grad_of(w1) == std::vector<double>{2 * 2, 0, 2 * 18, 2 * 32});

  // Same numbers as all_reduce_gradients after backward, for any bucket size.
  for (int64_t bucket : {int64_t{1}, int64_t{32}, int64_t{1} << 20}) {
    for (Tensor* p : {&w1, &w2, &w3}) p->zero_grad();
    TwinCommunicator a, b;
    loss().backward();
    dist::all_reduce_gradients(a, {w1, w2, w3}, bucket, dist::ReduceOp::kSum);
    const auto want = std::vector<std::vector<double>>{grad_of(w1), grad_of(w2), grad_of(w3)};
    for (Tensor* p : {&w1, &w2, &w3}) p->zero_grad();
    dist::GradReducer r(b, {w1, w2, w3}, bucket, dist::ReduceOp::kSum);
    r.begin();
    loss().backward();
    r.finish();
    CHECK(std::vector<std::vector<double>>{grad_of(w1), grad_of(w2), grad_of(w3)} == want);
  }
}

TEST_CASE("GradReducer gives a parameter without a gradient the reduced zeros", "[dist]") {
  Tensor used = param({1, 2}, {2}), unused = param({3}, {1});
  TwinCommunicator twin;
  dist::GradReducer reducer(twin, {used, unused}, 1 << 20, dist::ReduceOp::kSum);
  reducer.begin();
  sum(mul(used, used)).backward();
  CHECK(twin.reduced.empty());  // the bucket waits for `unused`
  reducer.finish();
  CHECK(twin.reduced.size() == 1);
  CHECK(grad_of(used) == std::vector<double>{4, 8});
  REQUIRE(unused.grad().defined());
  CHECK(grad_of(unused) == std::vector<double>{0});
  CHECK_THAT(error_of([&] { reducer.finish(); }), Catch::Contains("begin was not called"));
}

TEST_CASE("all_reduce_gradients rejects bad arguments", "[dist]") {
  TwinCommunicator comm;
  Tensor p = param({1}, {1});
  set_grad(p, {1});
  CHECK(error_of([&] { dist::all_reduce_gradients(comm, {p}, 0); }).find("bucket_bytes") !=
        std::string::npos);
  CHECK(error_of([&] {
          dist::all_reduce_gradients(comm, {p, p}, 64);
        }).find("listed twice") != std::string::npos);
}

TEST_CASE("check_replicas_identical with one process", "[dist]") {
  dist::SingleCommunicator comm;
  Tensor a = param({1, 2}, {2});
  CHECK_NOTHROW(dist::check_replicas_identical(comm, {{"a", a}}));
}

// ---- rank failure: deadlines, in-flight buffers, fault injection ---------------------------

TEST_CASE("timeout_from_env reads seconds and names the variable when they are bad", "[dist]") {
  {
    EnvGuard env{{"ATTN_TEST_TIMEOUT", std::nullopt}};
    CHECK(dist::timeout_from_env("ATTN_TEST_TIMEOUT", 600) == 600);
  }
  for (const auto& [text, seconds] :
       std::vector<std::pair<std::string, double>>{{"", 7}, {"0", 0}, {"2.5", 2.5}, {"30", 30}}) {
    EnvGuard env{{"ATTN_TEST_TIMEOUT", text}};
    CHECK(dist::timeout_from_env("ATTN_TEST_TIMEOUT", 7) == seconds);
  }
  for (const char* bad : {"-1", "soon", "3s", "inf", "nan"}) {
    INFO(bad);
    EnvGuard env{{"ATTN_TEST_TIMEOUT", std::string(bad)}};
    CHECK(error_of([] { dist::timeout_from_env("ATTN_TEST_TIMEOUT", 1); }) ==
          std::string("ATTN_TEST_TIMEOUT='") + bad +
              "' is not a number of seconds >= 0 (0 waits forever)");
  }
}

TEST_CASE("poll_until returns when done, gives up at the deadline, passes errors on", "[dist]") {
  int calls = 0;
  CHECK(dist::poll_until([&] { return ++calls == 5; }, 10.0));
  CHECK(calls == 5);
  // Past the deadline: false, after the deadline and not much later (yields, then 100 µs
  // sleeps). A generous upper bound: the machine is shared.
  const auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(dist::poll_until([] { return false; }, 0.2));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(took >= 0.2);
  CHECK(took < 5.0);
  // 0 has no deadline: only done() ends the wait.
  calls = 0;
  CHECK(dist::poll_until([&] { return ++calls == 3000; }, 0));
  CHECK(error_of([] { dist::poll_until([]() -> bool { ATTN_FAIL("peer died"); }, 1.0); }) ==
        "peer died");
}

namespace {

// The side of InFlightBuffer's contract that a GPU would see, recorded: when the main stream
// was ordered, and whether the tensor was still held then.
struct FakeStream {
  std::weak_ptr<TensorImpl> tensor;
  int orders = 0;
  bool held_when_ordered = false;
  bool fail = false;
  std::function<void()> order_main() {
    return [this] {
      ++orders;
      held_when_ordered = !tensor.expired();
      if (fail) ATTN_FAIL("cudaStreamWaitEvent: an illegal memory access was encountered");
    };
  }
};

}  // namespace

TEST_CASE("an abandoned in-flight buffer orders the main stream before letting go", "[dist]") {
  FakeStream stream;
  auto buffer = [&] {
    Tensor bucket = Tensor::zeros({8}, kF32);
    stream.tensor = bucket.impl_ptr();
    return std::make_unique<dist::InFlightBuffer>(bucket, stream.order_main());
  }();
  CHECK_FALSE(stream.tensor.expired());  // the buffer alone keeps the bucket alive
  CHECK_FALSE(buffer->ordered());
  buffer.reset();  // as when an exception unwinds between all_reduce_start and wait
  CHECK(stream.orders == 1);
  CHECK(stream.held_when_ordered);
  CHECK(stream.tensor.expired());
}

TEST_CASE("an in-flight buffer ordered by wait is not ordered again", "[dist]") {
  FakeStream stream;
  Tensor bucket = Tensor::zeros({8}, kF32);
  stream.tensor = bucket.impl_ptr();
  auto buffer = std::make_unique<dist::InFlightBuffer>(std::move(bucket), stream.order_main());
  buffer->order();
  buffer->order();
  CHECK(buffer->ordered());
  CHECK(stream.orders == 1);
  CHECK(stream.held_when_ordered);
  buffer.reset();
  CHECK(stream.orders == 1);
  CHECK(stream.tensor.expired());
}

TEST_CASE("an in-flight buffer that cannot be ordered keeps its tensor forever", "[dist]") {
  FakeStream stream;
  stream.fail = true;
  Tensor bucket = Tensor::zeros({8}, kF32);
  stream.tensor = bucket.impl_ptr();
  auto buffer = std::make_unique<dist::InFlightBuffer>(std::move(bucket), stream.order_main());
  // From wait(): the error reaches the caller, and nothing counts as ordered.
  CHECK(error_of([&] { buffer->order(); }).find("cudaStreamWaitEvent") != std::string::npos);
  CHECK_FALSE(buffer->ordered());
  // From the destructor: no exception, and the memory is never handed out again (leaked on
  // purpose; the collective may still write it).
  CHECK_NOTHROW(buffer.reset());
  CHECK(stream.orders == 2);
  CHECK_FALSE(stream.tensor.expired());
}

TEST_CASE("ATTN_FAULT_INJECT: throw or hang at a step on a rank, test only", "[dist]") {
  using train::FaultInjection;
  const FaultInjection t = train::parse_fault_injection("throw@step:3@rank:1");
  CHECK(t.kind == FaultInjection::Kind::kThrow);
  CHECK(t.step == 3);
  CHECK(t.rank == 1);
  const FaultInjection h = train::parse_fault_injection("hang@step:12@rank:0");
  CHECK(h.kind == FaultInjection::Kind::kHang);
  CHECK(h.step == 12);
  CHECK(h.rank == 0);
  for (const char* bad : {"", "throw", "throw@step:3", "crash@step:3@rank:1",
                          "throw@rank:1@step:3", "throw@step:x@rank:1", "throw@step:-1@rank:1",
                          "throw@step:3@rank:", "throw@step:3@rank:1@x"}) {
    INFO(bad);
    const std::string e = error_of([&] { train::parse_fault_injection(bad); });
    CHECK(e.rfind(std::string("ATTN_FAULT_INJECT='") + bad + "'", 0) == 0);
    CHECK(e.find("<throw|hang>@step:<N>@rank:<R>") != std::string::npos);
  }
  {
    EnvGuard env{{"ATTN_FAULT_INJECT", std::nullopt}};
    CHECK(train::fault_injection_from_env().kind == FaultInjection::Kind::kNone);
  }
  {
    EnvGuard env{{"ATTN_FAULT_INJECT", "throw@step:3@rank:1"}};
    CHECK(train::fault_injection_from_env().kind == FaultInjection::Kind::kThrow);
  }
  // Only the named step on the named rank.
  CHECK_NOTHROW(train::inject_fault(t, 2, 1));
  CHECK_NOTHROW(train::inject_fault(t, 3, 0));
  CHECK_NOTHROW(train::inject_fault(FaultInjection{}, 3, 1));
  CHECK_NOTHROW(train::inject_fault(h, 3, 1));  // a hang elsewhere: not here
  CHECK(error_of([&] { train::inject_fault(t, 3, 1); }) ==
        "fault injected by ATTN_FAULT_INJECT (test only): throw at step 3 on rank 1");
}

// ---- under mpirun -np 2 --------------------------------------------------------------------

namespace {

std::unique_ptr<dist::Communicator> mpi_world_of_two() {
  const dist::LaunchInfo launch = dist::detect_launch();
  INFO("the [mpi] tests run under `mpirun -np 2` (tests/dist/run_mpi_tests.sh); launcher: "
       << launch.launcher << ", world size " << launch.world_size);
  REQUIRE(launch.world_size == 2);
  auto comm = dist::make_communicator(Device::cpu(), launch);
  REQUIRE(std::string(comm->backend()) == "mpi");
  REQUIRE(comm->world_size() == 2);
  REQUIRE(dist::mpi_active());
  return comm;
}

std::vector<double> iota(int n, double scale) {
  std::vector<double> v(n);
  for (int i = 0; i < n; ++i) v[i] = scale * (i + 1);
  return v;
}

}  // namespace

TEST_CASE("mpi: ranks and world", "[.mpi]") {
  auto comm = mpi_world_of_two();
  const int r = comm->rank();
  CHECK((r == 0 || r == 1));
  CHECK(comm->is_main() == (r == 0));
  CHECK(comm->local_rank() == r);  // one machine
  const std::vector<double> ranks = comm->all_reduce_host({static_cast<double>(r), 1.0});
  CHECK(ranks == std::vector<double>{1, 2});  // both ranks present, each once
}

TEST_CASE("mpi: all_reduce sums and averages f32, f64 and i32", "[.mpi]") {
  auto comm = mpi_world_of_two();
  const double k = comm->rank() + 1;  // 1 and 2: sum 3x, average 1.5x
  for (DType dt : {kF32, kF64}) {
    INFO(dtype_name(dt));
    Tensor s = Tensor::from_vector(iota(1000, k), {10, 100}, dt);
    comm->all_reduce(s, dist::ReduceOp::kSum);
    CHECK(s.to_double_vector() == iota(1000, 3));
    Tensor a = Tensor::from_vector(iota(7, k), {7}, dt);
    comm->all_reduce(a, dist::ReduceOp::kAverage);
    CHECK(a.to_double_vector() == iota(7, 1.5));
  }
  Tensor s = Tensor::from_ints({static_cast<int32_t>(k), -10 * static_cast<int32_t>(k)}, {2});
  comm->all_reduce(s, dist::ReduceOp::kSum);
  CHECK(s.to_int_vector() == std::vector<int32_t>{3, -30});
  // Integer averages truncate toward zero: 3 / 2 = 1, -3 / 2 = -1.
  Tensor a = Tensor::from_ints({static_cast<int32_t>(k), -static_cast<int32_t>(k), 4}, {3});
  comm->all_reduce(a, dist::ReduceOp::kAverage);
  CHECK(a.to_int_vector() == std::vector<int32_t>{1, -1, 4});
  // An empty tensor is a no-op on every rank, not a hang.
  Tensor empty = Tensor::zeros({0}, kF32);
  comm->all_reduce(empty, dist::ReduceOp::kSum);
  // Refused before any message is sent, on both ranks alike.
  Tensor half = Tensor::zeros({2}, kBF16);
  CHECK(error_of([&] {
          comm->all_reduce(half, dist::ReduceOp::kSum);
        }).find("mpi all_reduce: dtype bf16 is not supported") != std::string::npos);
}

TEST_CASE("mpi: broadcast from rank 1, barrier, host sums", "[.mpi]") {
  auto comm = mpi_world_of_two();
  const double k = comm->rank() + 1;
  for (DType dt : {kF32, kF64, kBF16, kI32}) {
    INFO(dtype_name(dt));
    Tensor t = Tensor::from_vector(iota(5, k), {5}, dt);
    comm->broadcast(t, 1);
    CHECK(t.to_double_vector() == iota(5, 2));
  }
  Tensor t = Tensor::zeros({1}, kF32);
  CHECK(error_of([&] { comm->broadcast(t, 2); }).find("root 2") != std::string::npos);
  comm->barrier();
  const std::vector<double> h = comm->all_reduce_host({k, 0.5, -k, 1e15});
  CHECK(h == std::vector<double>{3, 1, -3, 2e15});
  CHECK(comm->all_reduce_host({}).empty());
  comm->barrier();
}

TEST_CASE("mpi: all_reduce_gradients averages across ranks", "[.mpi]") {
  auto comm = mpi_world_of_two();
  const int r = comm->rank();
  const double k = r + 1;
  Tensor w = param(iota(6, 1), {2, 3});
  Tensor big = param(iota(40, 1), {40});  // 160 bytes: reduced in place
  Tensor b = param({0, 0}, {2}, kF64);
  Tensor rank1_only = param({0, 0, 0}, {3});
  Tensor nowhere = param({0}, {1});
  set_grad(w, iota(6, k));
  set_grad(big, iota(40, k));
  set_grad(b, {k, -k});
  if (r == 1) set_grad(rank1_only, {2, 4, 6});
  dist::all_reduce_gradients(*comm, {w, big, b, rank1_only, nowhere}, 32);
  CHECK(grad_of(w) == iota(6, 1.5));
  CHECK(grad_of(big) == iota(40, 1.5));
  CHECK(grad_of(b) == std::vector<double>{1.5, -1.5});
  REQUIRE(rank1_only.grad().defined());
  CHECK(grad_of(rank1_only) == std::vector<double>{1, 2, 3});
  CHECK(!nowhere.grad().defined());

  // Summing instead (each rank scaled its loss by the global token count).
  set_grad(w, iota(6, k));
  dist::all_reduce_gradients(*comm, {w}, 1 << 20, dist::ReduceOp::kSum);
  CHECK(grad_of(w) == iota(6, 3));
}

TEST_CASE("mpi: GradReducer overlaps non-blocking all-reduces with backward", "[.mpi]") {
  auto comm = mpi_world_of_two();
  const double k = comm->rank() + 1;
  Tensor x = Tensor::from_vector(iota(64, k), {64});
  Tensor w1 = param(iota(64, 0.01), {64}), w2 = param(iota(64, 0.02), {64});
  dist::GradReducer reducer(*comm, {w1, w2}, 64 * 4);
  CHECK(reducer.bucket_count() == 2);
  for (int step = 0; step < 3; ++step) {
    w1.zero_grad();
    w2.zero_grad();
    reducer.begin();
    sum(mul(w2, mul(w1, x))).backward();
    CHECK(reducer.started_during_backward() == 2);
    reducer.finish();
    // d/dw1 = w2 * x, d/dw2 = w1 * x; x averages to 1.5 * iota(64, 1).
    const std::vector<double> g1 = grad_of(w1), g2 = grad_of(w2);
    for (int i = 0; i < 64; ++i) {
      CHECK(g1[i] == Approx(0.02 * (i + 1) * 1.5 * (i + 1)).epsilon(1e-6));
      CHECK(g2[i] == Approx(0.01 * (i + 1) * 1.5 * (i + 1)).epsilon(1e-6));
    }
  }
}

TEST_CASE("mpi: check_replicas_identical names the parameter that differs", "[.mpi]") {
  auto comm = mpi_world_of_two();
  const int r = comm->rank();
  Tensor a = param(iota(4, 1), {4});
  Tensor b = param(iota(3, 1), {3}, kF64);
  Tensor c = param(iota(2, 1), {2});
  CHECK_NOTHROW(dist::check_replicas_identical(*comm, {{"a", a}, {"b", b}, {"c", c}}));

  // One value of b differs on rank 1 (c too, but b comes first): both ranks throw alike.
  Tensor b2 = param(r == 1 ? std::vector<double>{1, 2, 3.0000001} : iota(3, 1), {3}, kF64);
  Tensor c2 = param(r == 1 ? std::vector<double>{9, 9} : iota(2, 1), {2});
  const std::string e = error_of([&] {
    dist::check_replicas_identical(*comm, {{"a", a}, {"b", b2}, {"c", c2}});
  });
  CHECK(e == "check_replicas_identical: parameter 'b' (#1) differs from rank 0's on rank(s) 1");

  // A different shape or dtype with equal bytes is a difference too.
  Tensor shaped = r == 1 ? param(iota(4, 1), {2, 2}) : param(iota(4, 1), {4});
  CHECK(error_of([&] {
          dist::check_replicas_identical(*comm, {{"a", shaped}});
        }).find("parameter 'a' (#0)") != std::string::npos);

  // Different parameter lists.
  std::vector<std::pair<std::string, Tensor>> list{{"a", a}};
  if (r == 1) list.emplace_back("b", b);
  CHECK(error_of([&] {
          dist::check_replicas_identical(*comm, list);
        }).find("different numbers of parameters") != std::string::npos);
  comm->barrier();
}

// ---- under mpirun -np 2 on a machine with two GPUs (CUDA build with NCCL) -----------------

#ifdef ATTN_WITH_NCCL
namespace {

std::unique_ptr<dist::Communicator> nccl_world_of_two() {
  const dist::LaunchInfo launch = dist::detect_launch();
  INFO(
      "the [nccl] tests run under `mpirun -np 2` on two GPUs (tests/dist/run_mpi_tests.sh "
      "BINARY \"[nccl]\"); launcher: "
      << launch.launcher << ", world size " << launch.world_size << ", GPUs "
      << cuda_device_count());
  REQUIRE(launch.world_size == 2);
  REQUIRE(cuda_device_count() >= 2);
  auto comm = dist::make_communicator(Device::cuda(launch.local_rank), launch);
  REQUIRE(std::string(comm->backend()) == "nccl");
  return comm;
}

}  // namespace

TEST_CASE("nccl: all_reduce, broadcast, barrier and host sums on CUDA tensors", "[.nccl]") {
  auto comm = nccl_world_of_two();
  const Device dev = Device::cuda(comm->local_rank());
  const double k = comm->rank() + 1;
  for (DType dt : {kF32, kF64, kBF16, kF16}) {
    INFO(dtype_name(dt));
    Tensor s = Tensor::from_vector(iota(64, k), {8, 8}, dt, dev);
    comm->all_reduce(s, dist::ReduceOp::kSum);
    CHECK(s.to_double_vector() == iota(64, 3));
    Tensor a = Tensor::from_vector(iota(16, k), {16}, dt, dev);
    comm->all_reduce(a, dist::ReduceOp::kAverage);
    CHECK(a.to_double_vector() == iota(16, 1.5));
    Tensor b = Tensor::from_vector(iota(5, k), {5}, dt, dev);
    comm->broadcast(b, 1);
    CHECK(b.to_double_vector() == iota(5, 2));
  }
  Tensor ids = Tensor::from_ints({static_cast<int32_t>(k), 7}, {2}, dev);
  comm->all_reduce(ids, dist::ReduceOp::kSum);
  CHECK(ids.to_int_vector() == std::vector<int32_t>{3, 14});
  CHECK(error_of([&] { comm->all_reduce(ids, dist::ReduceOp::kAverage); }).find("average") !=
        std::string::npos);
  Tensor host = Tensor::zeros({2}, kF32);
  CHECK(error_of([&] { comm->all_reduce(host, dist::ReduceOp::kSum); }).find("is on cpu") !=
        std::string::npos);
  comm->barrier();
  CHECK(comm->all_reduce_host({k, 1}) == std::vector<double>{3, 2});
}

TEST_CASE("nccl: gradients and replica check on CUDA tensors", "[.nccl]") {
  auto comm = nccl_world_of_two();
  const Device dev = Device::cuda(comm->local_rank());
  const int r = comm->rank();
  const double k = r + 1;
  auto cuda_param = [&](const std::vector<double>& v, const Shape& shape, DType dt) {
    Tensor p = Tensor::from_vector(v, shape, dt, dev);
    p.set_requires_grad(true);
    return p;
  };
  auto cuda_grad = [&](const Tensor& p, const std::vector<double>& g) {
    p.impl()->grad = Tensor::from_vector(g, p.shape(), p.dtype(), dev).impl_ptr();
  };
  Tensor w = cuda_param(iota(6, 1), {2, 3}, kF32);
  Tensor big = cuda_param(iota(40, 1), {40}, kF32);
  Tensor h = cuda_param(iota(4, 1), {4}, kBF16);
  Tensor rank1_only = cuda_param({0, 0}, {2}, kF32);
  cuda_grad(w, iota(6, k));
  cuda_grad(big, iota(40, k));
  cuda_grad(h, iota(4, k));
  if (r == 1) cuda_grad(rank1_only, {2, 4});
  dist::all_reduce_gradients(*comm, {w, big, h, rank1_only}, 32);
  CHECK(grad_of(w) == iota(6, 1.5));
  CHECK(grad_of(big) == iota(40, 1.5));
  CHECK(grad_of(h) == iota(4, 1.5));
  REQUIRE(rank1_only.grad().defined());
  CHECK(grad_of(rank1_only) == std::vector<double>{1, 2});

  CHECK_NOTHROW(dist::check_replicas_identical(*comm, {{"w", w}, {"h", h}}));
  Tensor h2 = cuda_param(r == 1 ? std::vector<double>{1, 2, 3, 5} : iota(4, 1), {4}, kBF16);
  CHECK(error_of([&] {
          dist::check_replicas_identical(*comm, {{"w", w}, {"h", h2}});
        }) == "check_replicas_identical: parameter 'h' (#1) differs from rank 0's on rank(s) 1");
}

TEST_CASE("nccl: a collective a peer never joins times out instead of hanging", "[.nccl]") {
  EnvGuard env{{"ATTN_NCCL_TIMEOUT", "3"}};
  auto comm = nccl_world_of_two();
  const Device dev = Device::cuda(comm->local_rank());
  if (comm->rank() == 0) {
    Tensor t = Tensor::ones({1024}, kF32, dev);
    const std::string e = error_of([&] { comm->all_reduce(t, dist::ReduceOp::kSum); });
    CHECK(e.find("nccl all_reduce of f32 [1024] on rank 0") != std::string::npos);
    CHECK(e.find("ATTN_NCCL_TIMEOUT") != std::string::npos);
    CHECK(error_of([&] { comm->barrier(); }).find("aborted") != std::string::npos);
  }
  // Rank 1's communicator never sees the lost call: its destructor finalizes or aborts it.
  comm.reset();
  // MPI itself is unaffected: both ranks meet here.
  CHECK(dist::make_communicator(Device::cpu())->all_reduce_host({1})[0] == 2);
}
#endif
