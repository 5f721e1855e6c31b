// One optimizer update of the Transformer: forward and backward of every micro-batch
// (teacher forcing, label-smoothed cross-entropy), the gradient all-reduce, loss scaling,
// clipping and the Adam step. The trainer and `attn bench train` both run this, built from the
// config by the same step_options() (step_config.h), so the benchmark times exactly what
// training does.
//
// Precision (train.precision): fp32 master weights and Adam state always; with bf16/fp16 the
// model computes in that type (nn::set_compute_dtype: GEMM inputs and activations), layer norm
// and softmax statistics and the loss stay fp32. fp16 uses dynamic loss scaling: the loss is
// multiplied by `scale` before backward, gradients are divided by it before clipping; a
// non-finite gradient skips the step and halves the scale; `growth_interval` clean steps in a
// row double it.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"
#include "data/batcher.h"
#include "dist/communicator.h"
#include "dist/grad_reducer.h"
#include "nn/transformer.h"
#include "optim/adam.h"
#include "optim/clip.h"

namespace attn::train {

struct LossScaleOptions {
  bool enabled = false;        // on for fp16 unless the config turns it off
  double init = 65536.0;       // 2^16
  int64_t growth_interval = 2000;  // clean steps in a row before the scale doubles
  double min_scale = 1.0;      // a run that overflows at this scale stops (LossScaleError)
};

struct StepOptions {
  DType compute_dtype = kF32;  // kF32, kBF16 or kF16 (CUDA only for the latter two)
  double label_smoothing = 0.1;
  double clip_norm = 0.0;      // 0: no clipping
  LossScaleOptions loss_scale;
  // Data parallel: reduce gradient buckets while backward runs (dist::GradReducer) instead
  // of all at once after it.
  bool overlap_allreduce = true;
  int64_t bucket_bytes = 25 << 20;
  bool allow_tf32 = false;  // fp32 GEMMs on CUDA may use TF32 (set when the engine is built)
};

// Sums over this rank's micro-batches of the update (per rank: the trainer sums loss and
// token counts over the ranks itself when it logs them).
// The positions of tgt_out (i32, any shape, read on the host) that have a target (!= pad_id),
// as flat row indices, and those targets: StepEngine projects and scores only these rows.
struct TargetRows {
  std::vector<int32_t> index, targets;
};
TargetRows target_rows(const Tensor& tgt_out, int32_t pad_id);

struct StepResult {
  double loss = 0, nll = 0, correct = 0, tokens = 0;  // tokens: non-pad targets
  double grad_norm = 0;     // before clipping, unscaled
  bool skipped = false;     // overflow: no parameter changed
  double loss_scale = 1.0;  // the scale used for this step
};

// Thrown when fp16 gradients keep overflowing at the minimum loss scale.
class LossScaleError : public Error {
 public:
  using Error::Error;
};

class StepEngine {
 public:
  StepEngine(nn::Transformer& model, optim::Adam& adam, dist::Communicator& comm,
             StepOptions options);
  ~StepEngine();

  // One update over `batches` (update_freq micro-batches of this rank) at learning rate lr.
  // The loss is normalised by the target tokens of the whole update on all ranks.
  StepResult step(const std::vector<data::Batch>& batches, double lr);

  double loss_scale() const { return scale_; }
  int64_t clean_steps() const { return clean_steps_; }
  // For resume: the scaler is part of the checkpoint.
  void set_loss_scale(double scale, int64_t clean_steps);

 private:
  nn::Transformer& model_;
  optim::Adam& adam_;
  dist::Communicator& comm_;
  StepOptions options_;
  std::unique_ptr<dist::GradReducer> reducer_;  // world > 1 with overlap_allreduce
  optim::GradClipper clipper_;                   // norm, unscale and clip factor for Adam
  double scale_ = 1.0;
  int64_t clean_steps_ = 0;
};

}  // namespace attn::train
