#include "dist/grad_reducer.h"

#include <algorithm>
#include <utility>

namespace attn::dist {

GradReducer::GradReducer(Communicator& comm, std::vector<Tensor> params, int64_t bucket_bytes,
                         ReduceOp op)
    : comm_(comm), params_(std::move(params)), op_(op) {
  ATTN_CHECK(bucket_bytes > 0, "GradReducer: bucket_bytes must be > 0, got ", bucket_bytes);
  bucket_of_.resize(params_.size());
  seen_.assign(params_.size(), 0);
  int64_t bytes = 0;
  for (size_t r = params_.size(); r-- > 0;) {
    const Tensor& p = params_[r];
    ATTN_CHECK(p.defined(), "GradReducer: parameter ", r, " is undefined");
    ATTN_CHECK(index_.emplace(p.impl(), r).second, "GradReducer: parameter ", r,
               " is listed twice");
    ATTN_CHECK(p.device() == params_.back().device() && p.dtype() == params_.back().dtype(),
               "GradReducer: parameters must share one device and dtype (parameter ", r, " is ",
               p.dtype(), " on ", p.device(), ")");
    const int64_t nb = static_cast<int64_t>(p.nbytes());
    if (buckets_.empty() || (bytes + nb > bucket_bytes && !buckets_.back().members.empty())) {
      buckets_.emplace_back();
      bytes = 0;
    }
    Bucket& b = buckets_.back();
    b.members.push_back(r);
    b.offsets.push_back(b.numel);
    b.numel += p.numel();
    bytes += nb;
    bucket_of_[r] = buckets_.size() - 1;
  }
}

GradReducer::~GradReducer() = default;

void GradReducer::begin() {
  hook_.reset();  // a window left open by an exception: its collectives complete first
  for (Bucket& b : buckets_) {
    b.ready = 0;
    b.pending.reset();
  }
  std::fill(seen_.begin(), seen_.end(), 0);
  next_ = 0;
  early_ = 0;
  hook_.emplace([this](const TensorImpl* leaf) { on_ready(leaf); });
}

void GradReducer::on_ready(const TensorImpl* leaf) {
  auto it = index_.find(leaf);
  if (it == index_.end() || seen_[it->second]) return;
  seen_[it->second] = 1;
  Bucket& b = buckets_[bucket_of_[it->second]];
  ++b.ready;
  const size_t before = next_;
  start_ready_in_order();
  early_ += static_cast<int64_t>(next_ - before);
  // MPI moves non-blocking collectives along only inside MPI calls: give it a turn.
  for (size_t k = 0; k < next_; ++k)
    if (buckets_[k].pending) buckets_[k].pending->test();
}

void GradReducer::start_ready_in_order() {
  while (next_ < buckets_.size() && buckets_[next_].ready == buckets_[next_].members.size()) {
    start(buckets_[next_]);
    ++next_;
  }
}

void GradReducer::start(Bucket& b) {
  const Tensor& first = params_[b.members.front()];
  if (!b.flat.defined()) b.flat = Tensor::empty({b.numel}, first.dtype(), first.device());
  for (size_t i = 0; i < b.members.size(); ++i) {
    const Tensor& p = params_[b.members[i]];
    Tensor slot = b.flat.narrow0(b.offsets[i], b.offsets[i] + p.numel()).view(p.shape());
    const Tensor g = p.grad();
    if (g.defined()) {
      slot.copy_(g);
    } else {
      slot.fill_(0.0);
    }
  }
  b.pending = comm_.all_reduce_start(b.flat, op_);
}

void GradReducer::finish() {
  ATTN_CHECK(hook_, "GradReducer::finish: begin was not called");
  hook_.reset();
  while (next_ < buckets_.size()) start(buckets_[next_++]);
  for (Bucket& b : buckets_) {
    b.pending->wait();
    b.pending.reset();
    for (size_t i = 0; i < b.members.size(); ++i) {
      Tensor& p = params_[b.members[i]];
      const Tensor slot = b.flat.narrow0(b.offsets[i], b.offsets[i] + p.numel()).view(p.shape());
      Tensor g = p.grad();
      if (!g.defined()) {
        p.impl()->grad = slot.clone().impl_ptr();
      } else {
        g.copy_(slot);
      }
    }
  }
}

}  // namespace attn::dist
