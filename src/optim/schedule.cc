#include "optim/schedule.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace attn::optim {

void validate(const ScheduleOptions& o) {
  const bool noam = o.kind == "noam";
  const bool inverse_sqrt = o.kind == "inverse_sqrt";
  ATTN_CHECK(noam || inverse_sqrt || o.kind == "constant",
             "train.lr_schedule must be one of noam, inverse_sqrt, constant, got '", o.kind, "'");
  if (noam) {
    ATTN_CHECK(std::isfinite(o.factor) && o.factor > 0,
               "train.lr_factor must be > 0 for the noam schedule, got ", o.factor);
    ATTN_CHECK(o.d_model > 0, "model.d_model must be > 0 for the noam schedule, got ", o.d_model);
  } else {
    ATTN_CHECK(std::isfinite(o.peak_lr) && o.peak_lr > 0, "train.lr must be > 0 for the ", o.kind,
               " schedule, got ", o.peak_lr);
  }
  // Both formulas divide by warmup; 0 would mean "no warmup", which neither defines.
  if (noam || inverse_sqrt) {
    ATTN_CHECK(o.warmup >= 1, "train.warmup_steps must be >= 1 for the ", o.kind, " schedule, got ",
               o.warmup);
  }
}

double learning_rate(const ScheduleOptions& o, int64_t step) {
  validate(o);
  ATTN_CHECK(step >= 1, "learning_rate: steps count from 1, got ", step);
  const double s = static_cast<double>(step);
  const double w = static_cast<double>(o.warmup);
  if (o.kind == "noam") {
    return o.factor * std::pow(static_cast<double>(o.d_model), -0.5) *
           std::min(std::pow(s, -0.5), s * std::pow(w, -1.5));
  }
  if (o.kind == "inverse_sqrt") {
    return step <= o.warmup ? o.peak_lr * s / w : o.peak_lr * std::sqrt(w / s);
  }
  return o.peak_lr;
}

double cooldown_factor(double fraction, double progress) {
  ATTN_CHECK(std::isfinite(fraction) && fraction >= 0 && fraction <= 1,
             "train.cooldown must be in [0, 1], got ", fraction);
  ATTN_CHECK(std::isfinite(progress), "cooldown_factor: progress must be finite, got ", progress);
  if (fraction == 0) return 1.0;
  const double left = 1.0 - std::clamp(progress, 0.0, 1.0);
  return std::min(1.0, left / fraction);
}

}  // namespace attn::optim
