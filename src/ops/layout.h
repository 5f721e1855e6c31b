// Layout ops (no autograd): transposes, head split/merge, concat and slices. All copy into
// new contiguous storage (reshape views live on Tensor::view).
#pragma once

#include <vector>

#include "core/tensor.h"

namespace attn::ops {

Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);
Tensor split_heads(const Tensor& x, int64_t heads);  // [B, T, H*D] -> [B, H, T, D]
Tensor merge_heads(const Tensor& x);                 // [B, H, T, D] -> [B, T, H*D]
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end);
// Writes `src` into out[..., start:start+src.size(dim), ...] (the backward of slice/concat).
void slice_assign(Tensor& out, int64_t dim, int64_t start, const Tensor& src);

}  // namespace attn::ops
