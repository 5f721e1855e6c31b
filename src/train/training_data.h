// The data of a training run: the vocabulary (a checkpoint's, a trained or loaded SentencePiece
// model, or a synthetic task's ids), the training and validation sets (tokenized once and
// cached under <run>/cache), this rank's batcher over the training set and the validation
// batches.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <vector>

#include "data/batcher.h"
#include "data/dataset.h"
#include "data/vocab.h"
#include "train/config.h"

namespace attn::train {

struct TrainingData {
  data::Vocab vocab;  // not loaded for synthetic tasks
  int64_t vocab_size = 0;
  data::Dataset train, valid;
  std::unique_ptr<data::Batcher> batcher;  // shuffled token buckets of this rank
  std::vector<data::Batch> valid_batches;
};

// `checkpoint_spm`: the serialized vocabulary of the checkpoint being resumed (null or empty:
// none), which wins over data.spm_model so that a resumed run tokenizes as it trained.
// rank/world: this process's share of every batch (data parallel).
TrainingData load_training_data(const Config& config, const std::string* checkpoint_spm,
                                int rank, int world, spdlog::logger& log);

}  // namespace attn::train
