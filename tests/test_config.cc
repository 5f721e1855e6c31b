// Config: parsing, overrides, and one test per error class.
#include <catch2/catch.hpp>

#include "train/config.h"

using namespace attn::train;
using Catch::Contains;

TEST_CASE("config parses sections, keeps defaults and applies --set", "[config]") {
  const std::string yaml = R"(
model:
  d_model: 64
  heads: 4
data:
  synthetic: copy
  max_tokens: 2.5e3
train:
  max_steps: 300
  device: cpu
)";
  Config c = parse_config(yaml, "t.yaml", {"train.max_steps=500", "model.pre_norm=true"});
  CHECK(c.model.d_model == 64);
  CHECK(c.model.d_ff == 2048);  // default
  CHECK(c.data.max_tokens == 2500);
  CHECK(c.train.max_steps == 500);
  CHECK(c.model.pre_norm);
  // The resolved dump parses back to the same values.
  Config again = parse_config(to_yaml(c), "resolved.yaml");
  CHECK(to_yaml(again) == to_yaml(c));
  CHECK(again.data.synthetic == "copy");
}

TEST_CASE("config errors name the key, the file and the line", "[config][errors]") {
  const std::string base = "data:\n  synthetic: copy\n";
  SECTION("unknown key suggests the nearest") {
    REQUIRE_THROWS_WITH(parse_config(base + "train:\n  max_stpes: 3\n", "c.yaml"),
                        Contains("c.yaml:4") && Contains("unknown key 'train.max_stpes'") &&
                            Contains("did you mean 'train.max_steps'"));
  }
  SECTION("unknown section") {
    REQUIRE_THROWS_WITH(parse_config(base + "trian:\n  max_steps: 3\n", "c.yaml"),
                        Contains("unknown key 'trian'"));
  }
  SECTION("wrong type") {
    REQUIRE_THROWS_WITH(parse_config(base + "train:\n  max_steps: lots\n", "c.yaml"),
                        Contains("c.yaml:4") && Contains("train.max_steps") &&
                            Contains("expected an integer, got 'lots'"));
    REQUIRE_THROWS_WITH(parse_config(base + "model:\n  pre_norm: maybe\n", "c.yaml"),
                        Contains("model.pre_norm") && Contains("true or false"));
    REQUIRE_THROWS_WITH(parse_config(base + "model:\n  dropout: [1, 2]\n", "c.yaml"),
                        Contains("model.dropout") && Contains("list"));
  }
  SECTION("out of range") {
    REQUIRE_THROWS_WITH(parse_config(base + "model:\n  dropout: 1.5\n", "c.yaml"),
                        Contains("model.dropout") && Contains("out of range"));
    REQUIRE_THROWS_WITH(parse_config(base + "model:\n  heads: 7\n", "c.yaml"),
                        Contains("model.d_model") && Contains("model.heads"));
    REQUIRE_THROWS_WITH(parse_config(base + "train:\n  device: tpu\n", "c.yaml"),
                        Contains("train.device") && Contains("'tpu'"));
  }
  SECTION("malformed YAML") {
    REQUIRE_THROWS_WITH(parse_config("model: [unclosed\n", "bad.yaml"),
                        Contains("bad.yaml") && Contains("malformed YAML"));
  }
  SECTION("bytes that are not UTF-8 (found by fuzz_config: they did not survive config.yaml)") {
    REQUIRE_THROWS_WITH(parse_config(base + "train:\n  output_dir: runs/x\x95\n", "c.yaml"),
                        "invalid UTF-8 in 'c.yaml' line 4, byte 21 (unexpected continuation byte)");
    REQUIRE_THROWS_WITH(parse_config(base, "c.yaml", {"train.output_dir=a\xC0\xAF"}),
                        "--set: invalid UTF-8 at byte 19 (overlong encoding)");
  }
  SECTION("missing data files") {
    REQUIRE_THROWS_WITH(parse_config("train:\n  max_steps: 3\n", "c.yaml"),
                        Contains("data.train_src is required"));
  }
  SECTION("bad overrides") {
    REQUIRE_THROWS_WITH(parse_config(base, "c.yaml", {"train.max_step=3"}),
                        Contains("--set") && Contains("did you mean 'train.max_steps'"));
    REQUIRE_THROWS_WITH(parse_config(base, "c.yaml", {"train.max_steps"}),
                        Contains("expected key=value"));
    REQUIRE_THROWS_WITH(parse_config(base, "c.yaml", {"train.max_steps=1.5"}),
                        Contains("expected an integer"));
  }
  SECTION("missing file") {
    REQUIRE_THROWS_WITH(load_config("/nonexistent/cfg.yaml"),
                        Contains("cannot open config '/nonexistent/cfg.yaml'"));
  }
}
