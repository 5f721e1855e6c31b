#include "dist/in_flight.h"

#include <utility>

namespace attn::dist {

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
  if (!ordered_) new Tensor(std::move(tensor_));  // never freed: NCCL may still write it
}

}  // namespace attn::dist
