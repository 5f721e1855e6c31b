#include "train/step_config.h"

#include "base/error.h"

namespace attn::train {

Device resolve_device(const std::string& setting, int local_rank, const std::string& key) {
  if (setting == "cpu") return Device::cpu();
  const int visible = cuda_device_count();  // 0 in a build without CUDA
  if (setting == "auto") return visible > 0 ? Device::cuda(local_rank % visible) : Device::cpu();
  Device d = Device::parse(setting);
  if (setting == "cuda" && visible > 0) d = Device::cuda(local_rank % visible);
  ATTN_CHECK(cuda_built(), key, " is ", setting,
             " but attn was built without CUDA; use cpu or auto");
  ATTN_CHECK(visible > d.index, key, " is ", setting, " but ", visible,
             " CUDA device(s) are visible; use cpu or auto");
  return d;
}

DType resolve_precision(const std::string& setting, Device device) {
  if (setting == "auto") return device.is_cuda() ? kBF16 : kF32;
  if (setting == "fp32") return kF32;
  ATTN_CHECK(device.is_cuda(), "train.precision is ", setting, " but training runs on ",
             device.str(), "; 16-bit training needs a CUDA device (use train.precision: fp32 or "
             "auto)");
  return setting == "bf16" ? kBF16 : kF16;
}

std::string precision_name(DType compute_dtype) {
  switch (compute_dtype) {
    case kF32:
      return "fp32";
    case kBF16:
      return "bf16";
    case kF16:
      return "fp16";
    default:
      return dtype_name(compute_dtype);
  }
}

StepOptions step_options(const Config& config, Device device) {
  const TrainSection& t = config.train;
  StepOptions so;
  so.compute_dtype = resolve_precision(t.precision, device);
  so.label_smoothing = t.label_smoothing;
  so.clip_norm = t.clip_norm;
  so.overlap_allreduce = t.overlap_allreduce;
  so.bucket_bytes = static_cast<int64_t>(t.bucket_mb * (1 << 20));
  so.loss_scale.enabled =
      t.loss_scale == "dynamic" || (t.loss_scale == "auto" && so.compute_dtype == kF16);
  so.loss_scale.init = t.loss_scale_init;
  so.loss_scale.growth_interval = t.loss_scale_window;
  so.loss_scale.min_scale = t.loss_scale_min;
  so.allow_tf32 = t.allow_tf32;
  return so;
}

optim::AdamOptions adam_options(const Config& config) {
  const TrainSection& t = config.train;
  return {.beta1 = t.adam_beta1, .beta2 = t.adam_beta2, .eps = t.adam_eps,
          .weight_decay = t.weight_decay};
}

}  // namespace attn::train
