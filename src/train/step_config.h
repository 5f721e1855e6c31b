// The one way from a run configuration to a training step: the device, the compute precision,
// loss scaling, label smoothing, clipping, the all-reduce and Adam's settings. The trainer and
// `attn bench train` both build their StepEngine from these functions, so the benchmark times
// the update that training runs (step.h).
#pragma once

#include <string>

#include "core/device.h"
#include "core/dtype.h"
#include "optim/adam.h"
#include "train/config.h"
#include "train/step.h"

namespace attn::train {

// train.device (auto | cpu | cuda | cuda:N) -> the device. auto is a CUDA device when attn was
// built with CUDA and one is visible, else the CPU. Under mpirun/srun each process on a machine
// takes its own GPU (`local_rank` modulo the visible devices, for auto and cuda; an explicit
// cuda:N is taken as given, for launchers that set CUDA_VISIBLE_DEVICES per rank). A device
// that is not there is an error naming `key` (e.g. "train.device", "--device").
Device resolve_device(const std::string& setting, int local_rank, const std::string& key);

// train.precision (auto | fp32 | bf16 | fp16) on `device` -> the dtype the model computes in
// (master weights stay f32). auto is bf16 on CUDA (attn builds for sm_80+), fp32 on the CPU;
// 16-bit on the CPU is an error naming the key. `setting` is a validated config's (validate()
// checks the allowed values).
DType resolve_precision(const std::string& setting, Device device);

// "fp32", "bf16" or "fp16": the train.precision value naming a compute dtype.
std::string precision_name(DType compute_dtype);

// Everything of a StepEngine that the config decides, for training on `device`.
StepOptions step_options(const Config& config, Device device);

// train.adam_beta1/beta2/eps/weight_decay.
optim::AdamOptions adam_options(const Config& config);

}  // namespace attn::train
