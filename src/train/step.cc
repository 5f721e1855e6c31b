#include "train/step.h"

#include <algorithm>
#include <cmath>

#include "autograd/functions.h"
#include "data/vocab.h"

namespace attn::train {

TargetRows target_rows(const Tensor& tgt_out, int32_t pad_id) {
  TargetRows r;
  const std::vector<int32_t> t = tgt_out.to_int_vector();
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == pad_id) continue;
    r.index.push_back(static_cast<int32_t>(i));
    r.targets.push_back(t[i]);
  }
  return r;
}

StepEngine::StepEngine(nn::Transformer& model, optim::Adam& adam, dist::Communicator& comm,
                       StepOptions options)
    : model_(model), adam_(adam), comm_(comm), options_(options), clipper_(options.clip_norm) {
  const DType cd = options_.compute_dtype;
  ATTN_CHECK(cd == kF32 || cd == kF64 || cd == kBF16 || cd == kF16,
             "StepEngine: compute dtype must be f32, f64, bf16 or f16, got ", dtype_name(cd));
  model_.set_compute_dtype(cd);
  const std::vector<Tensor> params = model_.parameters();
  if (!params.empty() && params.front().device().is_cuda()) set_allow_tf32(options_.allow_tf32);
  scale_ = options_.loss_scale.enabled ? options_.loss_scale.init : 1.0;
  if (comm_.world_size() > 1 && options_.overlap_allreduce) {
    reducer_ = std::make_unique<dist::GradReducer>(comm_, model_.parameters(),
                                                   options_.bucket_bytes);
  }
}

StepEngine::~StepEngine() = default;

void StepEngine::set_loss_scale(double scale, int64_t clean_steps) {
  ATTN_CHECK(std::isfinite(scale) && scale > 0, "loss scale must be finite and > 0, got ", scale);
  scale_ = options_.loss_scale.enabled ? scale : 1.0;
  clean_steps_ = clean_steps;
}

StepResult StepEngine::step(const std::vector<data::Batch>& batches, double lr) {
  ATTN_CHECK(!batches.empty(), "StepEngine::step: no batches");
  const std::vector<Tensor> params = model_.parameters();
  const Device device = params.front().device();
  StepResult r;
  r.loss_scale = scale_;
  for (const data::Batch& b : batches) r.tokens += static_cast<double>(b.tgt_tokens);
  const int world = comm_.world_size();
  // Normalised by the target tokens of the whole update on all ranks; the gradient all-reduce
  // averages, so each rank scales by world / global tokens (and by the loss scale).
  const double global_tokens = world > 1 ? comm_.all_reduce_host({r.tokens})[0] : r.tokens;
  const double loss_factor = static_cast<double>(world) / std::max(global_tokens, 1.0) * scale_;
  for (size_t i = 0; i < batches.size(); ++i) {
    const data::Batch& b = batches[i];
    // The last micro-batch's backward completes the gradients: reduce them as they appear.
    if (reducer_ && i + 1 == batches.size()) reducer_->begin();
    // Logits and loss for the positions with a target only: padding rows would add nothing to
    // the loss (ignore_index) but cost their share of the largest GEMM and of the loss.
    Tensor h = model_.forward_hidden(b.src.to(device), b.src_lengths.to(device),
                                     b.tgt_in.to(device));
    h = reshape(h, {-1, h.size(-1)});
    const TargetRows rows = target_rows(b.tgt_out, data::kPadId);
    Tensor targets = b.tgt_out.view({-1});
    if (!rows.index.empty() && static_cast<int64_t>(rows.index.size()) < h.size(0)) {
      const int64_t n = static_cast<int64_t>(rows.index.size());
      // A row gather: embedding's out = table[ids], backward scatter-adds into the table (h).
      h = embedding(Tensor::from_ints(rows.index, {n}).to(device), h);
      targets = Tensor::from_ints(rows.targets, {n});
    }
    CrossEntropyResult ce = cross_entropy(model_.project_output(h), targets.to(device),
                                          options_.label_smoothing, data::kPadId);
    scale(ce.loss, loss_factor).backward();
    r.loss += ce.loss.item();
    r.nll += ce.nll.item();
    r.correct += ce.ncorrect.item();
  }
  if (reducer_) {
    reducer_->finish();
  } else if (world > 1) {
    dist::all_reduce_gradients(comm_, params, options_.bucket_bytes);
  }

  // The gradients hold scale * the true gradient; the clipper's norm is the true one and its
  // factor (1 / scale, times the clip factor) is applied inside the Adam step.
  clipper_.compute(params, scale_);
  const double norm = clipper_.last_norm();
  r.grad_norm = norm;
  if (!std::isfinite(norm)) {
    model_.zero_grad();
    r.skipped = true;
    if (!options_.loss_scale.enabled) return r;  // the caller decides (training diverged)
    if (!(scale_ > options_.loss_scale.min_scale))
      throw LossScaleError(detail::str_cat(
          "the gradients overflow even at the minimum loss scale ", scale_,
          " (train.loss_scale_min); fp16 cannot represent this run's gradients: use "
          "train.precision: bf16 or fp32, or a lower learning rate"));
    scale_ = std::max(scale_ / 2, options_.loss_scale.min_scale);
    clean_steps_ = 0;
    return r;
  }
  adam_.step(lr, clipper_.state());
  adam_.zero_grad();
  if (options_.loss_scale.enabled && ++clean_steps_ >= options_.loss_scale.growth_interval) {
    scale_ *= 2;
    clean_steps_ = 0;
  }
  return r;
}

}  // namespace attn::train
