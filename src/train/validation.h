// Validation during training: the label-smoothed loss, nll and accuracy over the validation
// batches, BLEU of beam search when train.valid_metrics has it, and which validation is the
// best so far (train.best_metric) with early stopping after train.patience validations
// without improvement.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/device.h"
#include "data/batcher.h"
#include "data/dataset.h"
#include "data/vocab.h"
#include "nn/transformer.h"
#include "train/config.h"

namespace attn::train {

// Which validation is the best so far and whether the run should stop early. Lower is better
// for loss, higher for bleu. State (best value, validations since) is part of a checkpoint.
class EarlyStopping {
 public:
  EarlyStopping(std::string metric, int64_t patience);
  // Records a validation's value of the metric; true when it is the best so far.
  bool update(double value);
  // train.patience validations in a row without improvement (never with patience 0).
  bool stop() const { return patience_ > 0 && bad_ >= patience_; }
  const std::string& metric() const { return metric_; }
  std::optional<double> best() const { return best_; }
  int64_t bad_validations() const { return bad_; }
  void restore(std::optional<double> best, int64_t bad_validations);

 private:
  std::string metric_;
  int64_t patience_;
  std::optional<double> best_;
  int64_t bad_ = 0;
};

struct ValidScores {
  double loss = 0, nll = 0, accuracy = 0;  // per target token
  double tokens = 0;                       // 0: an empty validation set (nothing measured)
  std::optional<double> bleu;              // when asked for
};

// What validation needs of the run: the model, its device, the data and the settings.
struct ValidationSet {
  const std::vector<data::Batch>* batches = nullptr;
  const data::Dataset* data = nullptr;  // for the references of BLEU
  const data::Vocab* vocab = nullptr;   // not loaded: synthetic tasks score space-joined ids
  int64_t vocab_size = 0;
};

// Scores `model` (switched to eval mode for the call) on the validation set.
ValidScores validate_model(nn::Transformer& model, Device device, const ValidationSet& set,
                           const Config& config);

}  // namespace attn::train
