// trainer_state.json of a checkpoint: one type, written by to_json and read back by
// from_json, which checks every key it reads, so a damaged file is an error naming the file,
// the key and what was expected rather than a JSON library message.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace attn::train {

struct TrainerState {
  // The layout written by to_json. from_json reads this version and refuses others by number
  // (a newer attn's file, or a damaged one); bump it, and teach from_json to read the old one
  // or to say how to convert it, whenever a field changes meaning or a required one is added.
  static constexpr int64_t kFormatVersion = 1;

  int64_t step = 0;
  int64_t batcher_epoch = 0;     // data position (data::Batcher::State)
  int64_t batcher_position = 0;
  int64_t adam_step = 0;         // Adam's update count (bias correction)
  int64_t schedule_offset = 0;   // step at which the LR schedule restarted
  double lr = 0;
  std::string best_metric = "loss";
  std::optional<double> best_value;  // of best_metric; none before the first validation
  int64_t bad_validations = 0;       // validations since the best one
  struct LossScale {
    double scale = 0;
    int64_t clean_steps = 0;
  };
  std::optional<LossScale> loss_scale;  // dynamic loss scaling, when on
  double elapsed_seconds = 0;
  bool finished = false;
  // Set by `attn average` (the marker of an averaged checkpoint): the sources' paths and steps.
  struct Source {
    std::string path;
    int64_t step = 0;
  };
  std::vector<Source> averaged_from;

  bool is_average() const { return !averaged_from.empty(); }

  nlohmann::json to_json() const;
  // `source` (the file) prefixes every error. Keys a training checkpoint needs to resume are
  // required unless the state is an average's.
  static TrainerState from_json(const nlohmann::json& j, const std::string& source);
  // Parses the text of trainer_state.json (malformed JSON is an error naming the file).
  static TrainerState parse(const std::string& text, const std::string& source);
};

}  // namespace attn::train
