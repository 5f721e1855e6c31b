// The YAML configuration and --set overrides (train::parse_config). Input: YAML text, then
// optionally NUL-separated overrides ("yaml\0train.lr=1\0model.heads=4").
// Property: whatever is accepted is written by to_yaml() in a form the reader accepts, with
// the same values (a checkpoint's config.yaml must load again).
#include "fuzz.h"
#include "train/config.h"

namespace attn::fuzz {

void fuzz_one(std::string_view data) {
  std::vector<std::string> pieces = split(data, '\0');
  const std::string yaml = pieces.front();
  pieces.erase(pieces.begin());
  const train::Config config = train::parse_config(yaml, "fuzz.yaml", pieces);

  const std::string resolved = train::to_yaml(config);
  train::Config back;
  try {
    back = train::parse_config(resolved, "config.yaml");
  } catch (const Error& e) {
    require(false, "the resolved config is refused: ", e.what(), "\n", resolved);
  }
  require(train::config_values(back) == train::config_values(config),
          "the resolved config reads back different values:\n", resolved);
}

}  // namespace attn::fuzz
