#include "dist/communicator.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "core/hash.h"
#include "dist/mpi_communicator.h"

namespace attn::dist {

PendingCollective::~PendingCollective() = default;

namespace {
class CompletedCollective final : public PendingCollective {
 public:
  bool test() override { return true; }
  void wait() override {}
};
}  // namespace

std::unique_ptr<PendingCollective> Communicator::all_reduce_start(Tensor& t, ReduceOp op) {
  all_reduce(t, op);
  return std::make_unique<CompletedCollective>();
}


const char* reduce_op_name(ReduceOp op) {
  return op == ReduceOp::kSum ? "sum" : "average";
}

Communicator::~Communicator() = default;

// ---- the world of one ---------------------------------------------------------------------

void SingleCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  ATTN_CHECK(t.defined(), "single all_reduce (", reduce_op_name(op), "): the tensor is undefined");
}

void SingleCommunicator::broadcast(Tensor& t, int root) {
  ATTN_CHECK(t.defined(), "single broadcast: the tensor is undefined");
  ATTN_CHECK(root == 0, "single broadcast: root ", root, " is not a rank of a world of 1");
}

std::vector<double> SingleCommunicator::all_reduce_host(const std::vector<double>& values) {
  return values;
}

// ---- construction ---------------------------------------------------------------------------

std::unique_ptr<Communicator> make_communicator(Device device) {
  return make_communicator(device, detect_launch());
}

std::unique_ptr<Communicator> make_communicator(Device device, const LaunchInfo& launch) {
  if (launch.world_size == 1) return std::make_unique<SingleCommunicator>();
  if (device.is_cpu()) return std::make_unique<MpiCommunicator>(launch);
#ifdef ATTN_WITH_NCCL
  return make_nccl_communicator(launch, device);
#else
  ATTN_FAIL(
      "make_communicator: ", launch.world_size, " processes training on ", device,
      " need NCCL, but this build has none (",
      cuda_built() ? "NCCL was not found when attn was configured" : "attn was built without CUDA",
      "); set train.device: cpu to train over MPI");
#endif
}

// ---- gradients ------------------------------------------------------------------------------

namespace {

// Consecutive gradients of one dtype and device, reduced as one flat tensor.
class Bucket {
 public:
  Bucket(Communicator& comm, ReduceOp op) : comm_(comm), op_(op) {}

  bool fits(const Tensor& g, int64_t limit) const {
    return grads_.empty() || (g.dtype() == grads_[0].dtype() && g.device() == grads_[0].device() &&
                              bytes_ + static_cast<int64_t>(g.nbytes()) <= limit);
  }
  void add(const Tensor& g) {
    grads_.push_back(g);
    bytes_ += static_cast<int64_t>(g.nbytes());
    numel_ += g.numel();
  }
  void flush() {
    if (grads_.size() == 1) {
      comm_.all_reduce(grads_[0], op_);  // nothing to pack
    } else if (grads_.size() > 1) {
      Tensor flat = Tensor::empty({numel_}, grads_[0].dtype(), grads_[0].device());
      int64_t off = 0;
      for (const Tensor& g : grads_) {
        flat.narrow0(off, off + g.numel()).view(g.shape()).copy_(g);
        off += g.numel();
      }
      comm_.all_reduce(flat, op_);
      off = 0;
      for (Tensor& g : grads_) {
        g.copy_(flat.narrow0(off, off + g.numel()).view(g.shape()));
        off += g.numel();
      }
    }
    grads_.clear();
    bytes_ = numel_ = 0;
  }

 private:
  Communicator& comm_;
  ReduceOp op_;
  std::vector<Tensor> grads_;
  int64_t bytes_ = 0, numel_ = 0;
};

}  // namespace

void all_reduce_gradients(Communicator& comm, const std::vector<Tensor>& params,
                          int64_t bucket_bytes, ReduceOp op) {
  ATTN_CHECK(bucket_bytes > 0, "all_reduce_gradients: bucket_bytes must be > 0, got ",
             bucket_bytes);
  if (comm.world_size() == 1) return;
  // Which parameters have a gradient on some rank: the same answer everywhere, so every rank
  // packs the same buckets even when a parameter was unused on one of them.
  std::vector<double> has_grad(params.size());
  std::set<const void*> seen;
  for (size_t i = 0; i < params.size(); ++i) {
    ATTN_CHECK(params[i].defined(), "all_reduce_gradients: parameter ", i, " is undefined");
    // A tensor listed twice would be reduced twice in place.
    ATTN_CHECK(seen.insert(params[i].impl()).second, "all_reduce_gradients: parameter ", i,
               " is listed twice");
    has_grad[i] = params[i].grad().defined() ? 1.0 : 0.0;
  }
  has_grad = comm.all_reduce_host(has_grad);

  Bucket bucket(comm, op);
  for (size_t i = 0; i < params.size(); ++i) {
    if (has_grad[i] == 0.0) continue;
    Tensor g = params[i].grad();
    if (!g.defined()) {
      g = Tensor::zeros_like(params[i]);
      params[i].impl()->grad = g.impl_ptr();
    }
    if (g.numel() == 0) continue;
    if (static_cast<int64_t>(g.nbytes()) >= bucket_bytes) {
      // Big enough to reduce on its own, in place: packing would only add two copies.
      bucket.flush();
      comm.all_reduce(g, op);
      continue;
    }
    if (!bucket.fits(g, bucket_bytes)) bucket.flush();
    bucket.add(g);
  }
  bucket.flush();
}

// ---- replica check --------------------------------------------------------------------------

namespace {

// A 64-bit hash as four 16-bit pieces: doubles hold sums of them exactly.
constexpr int kPieces = 4;

uint64_t parameter_hash(const std::string& name, const Tensor& t) {
  Xxh64 h;
  h.update(name);
  h.update_value(static_cast<int>(t.dtype()));
  for (int64_t d : t.shape()) h.update_value(d);
  const Tensor host = t.device().is_cpu() ? t : t.detach().to(Device::cpu());
  h.update(host.raw_data(), host.nbytes());
  return h.digest();
}

}  // namespace

void check_replicas_identical(Communicator& comm,
                              const std::vector<std::pair<std::string, Tensor>>& named_params) {
  const int world = comm.world_size();
  if (world == 1) return;
  // The same number of parameters everywhere? sum(n)^2 == W * sum(n^2) exactly when all n are
  // equal (Cauchy-Schwarz), and the later exchanges need equal lengths.
  const double n = static_cast<double>(named_params.size());
  const std::vector<double> counts = comm.all_reduce_host({n, n * n});
  ATTN_CHECK(counts[0] * counts[0] == world * counts[1], "check_replicas_identical: the ranks ",
             "hold different numbers of parameters (", named_params.size(), " on rank ",
             comm.rank(), ")");

  std::vector<uint64_t> mine(named_params.size());
  std::vector<double> root(named_params.size() * kPieces, 0.0);
  for (size_t i = 0; i < named_params.size(); ++i) {
    ATTN_CHECK(named_params[i].second.defined(), "check_replicas_identical: parameter '",
               named_params[i].first, "' is undefined");
    mine[i] = parameter_hash(named_params[i].first, named_params[i].second);
    if (comm.rank() == 0) {
      for (int k = 0; k < kPieces; ++k) root[i * kPieces + k] = (mine[i] >> (16 * k)) & 0xffff;
    }
  }
  // Rank 0's hashes to everyone (the others add zeros), then each rank reports its first
  // parameter that differs, so all ranks agree on the verdict and throw the same error.
  root = comm.all_reduce_host(root);
  std::vector<double> first_diff(world, 0.0);  // 1 + index, 0 = none
  for (size_t i = 0; i < named_params.size(); ++i) {
    uint64_t h = 0;
    for (int k = 0; k < kPieces; ++k) {
      h |= static_cast<uint64_t>(root[i * kPieces + k]) << (16 * k);
    }
    if (h != mine[i]) {
      first_diff[comm.rank()] = static_cast<double>(i + 1);
      break;
    }
  }
  first_diff = comm.all_reduce_host(first_diff);
  double first = 0;
  for (double d : first_diff) {
    if (d > 0 && (first == 0 || d < first)) first = d;
  }
  if (first == 0) return;
  std::string ranks;
  for (int r = 0; r < world; ++r) {
    if (first_diff[r] == first) ranks += (ranks.empty() ? "" : ", ") + std::to_string(r);
  }
  const size_t index = static_cast<size_t>(first) - 1;
  ATTN_FAIL("check_replicas_identical: parameter '", named_params[index].first, "' (#", index,
            ") differs from rank 0's on rank(s) ", ranks);
}

}  // namespace attn::dist
