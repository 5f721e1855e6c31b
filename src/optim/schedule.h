// Learning-rate schedules, as functions of the 1-based update number.
//   noam:         factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)  (Vaswani et al.,
//                 section 5.3; peaks at step = warmup)
//   inverse_sqrt: peak_lr * step / warmup during warmup, then peak_lr * sqrt(warmup / step)
//                 (fairseq's inverse_sqrt with warmup_init_lr = 0)
//   constant:     peak_lr
// Any of them times cooldown_factor (train.cooldown): over the last fraction of the run the
// rate falls linearly to 0, the decay phase of a warmup-stable-decay schedule (Hu et al. 2024,
// "MiniCPM"; Hägele et al. 2024). It gives a run bounded by steps or time the annealed end
// that the inverse square root never reaches.
// Error messages use the config keys: train.lr_schedule, train.lr_factor, train.warmup,
// train.peak_lr, model.d_model.
#pragma once

#include <cstdint>
#include <string>

namespace attn::optim {

struct ScheduleOptions {
  std::string kind = "noam";  // noam | inverse_sqrt | constant
  double factor = 1.0;        // noam multiplier
  int64_t warmup = 4000;      // steps
  double peak_lr = 5e-4;      // inverse_sqrt and constant
  int64_t d_model = 512;      // noam
};

// Throws naming the offending field (only the fields the chosen kind uses are checked).
void validate(const ScheduleOptions& options);

double learning_rate(const ScheduleOptions& options, int64_t step);

// 1 until `progress` (the part of the run done before this update, in [0, 1]) reaches
// 1 - fraction, then (1 - progress) / fraction, down to 0. fraction 0: always 1. Throws on a
// fraction outside [0, 1] or a progress that is not finite.
double cooldown_factor(double fraction, double progress);

}  // namespace attn::optim
