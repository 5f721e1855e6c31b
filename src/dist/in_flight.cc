#include "dist/in_flight.h"

#include <mutex>
#include <utility>
#include <vector>

namespace attn::dist {

void keep_until_exit(Tensor t) {
  static std::mutex mutex;
  static auto* kept = new std::vector<Tensor>;  // never destroyed, on purpose
  const std::lock_guard<std::mutex> lock(mutex);
  kept->push_back(std::move(t));
}

InFlightBuffer::InFlightBuffer(Tensor tensor, std::function<void()> order_main)
    : tensor_(std::move(tensor)), order_main_(std::move(order_main)) {}

void InFlightBuffer::order() {
  if (ordered_) return;
  order_main_();
  ordered_ = true;
}

InFlightBuffer::~InFlightBuffer() {
  try {
    order();
  } catch (...) {
    // Nothing can be reported from a destructor that may run while an error unwinds; the
    // tensor is kept (below), which is what matters.
  }
  if (!ordered_) keep_until_exit(std::move(tensor_));  // never freed: NCCL may still write it
}

}  // namespace attn::dist
