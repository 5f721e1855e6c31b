// trainer_state.json of a checkpoint (train::TrainerState::parse). Property: a state that
// is accepted is written by to_json() and reads back to the same JSON.
#include "fuzz.h"
#include "train/trainer_state.h"

namespace attn::fuzz {

void fuzz_one(std::string_view data) {
  const train::TrainerState state =
      train::TrainerState::parse(std::string(data), "trainer_state.json");
  const nlohmann::json written = state.to_json();
  train::TrainerState back;
  try {
    back = train::TrainerState::parse(written.dump(2), "written");
  } catch (const Error& e) {
    require(false, "the written state is refused: ", e.what(), "\n", written.dump(2));
  }
  require(back.to_json() == written, "the state reads back differently:\n", written.dump(2),
          "\nvs\n", back.to_json().dump(2));
}

}  // namespace attn::fuzz
