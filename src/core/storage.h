// A block of device memory owned by one allocator and shared by reference among tensors
// (views share their base's storage).
#pragma once

#include <cstddef>

#include "core/allocator.h"
#include "core/device.h"

namespace attn {

class Storage {
 public:
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
  Allocator* allocator_ = nullptr;
};

}  // namespace attn
