// Config: parsing, overrides, and one test per error class.
#include <catch2/catch.hpp>

#include <fstream>
#include <iterator>

#include "nn/attention.h"
#include "train/config.h"
#include "train/model_config.h"

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

TEST_CASE("each key's rule lives with the key and is what validate() enforces", "[config]") {
  const std::string base = "data:\n  synthetic: copy\n";
  auto error_for = [&](const std::string& assignment) -> std::string {
    try {
      parse_config(base, "c.yaml", {assignment});
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  };
  // Bounds, open and closed, and the notes that say what the boundary means.
  CHECK_THAT(error_for("model.d_model=0"), Contains("model.d_model = 0 is out of range (> 0)"));
  CHECK(error_for("model.dropout=0").empty());
  CHECK_THAT(error_for("model.dropout=1"), Contains("model.dropout = 1 is out of range (>= 0 and < 1)"));
  CHECK_THAT(error_for("train.clip_norm=-1"), Contains("(>= 0 (0 disables))"));
  CHECK(error_for("decode.beam=65536").empty());
  CHECK_THAT(error_for("decode.beam=65537"), Contains("decode.beam"));
  // Allowed values, including the cuda:N pattern.
  CHECK(error_for("train.device=cuda:3").empty());
  CHECK_THAT(error_for("train.device=cuda:x"), Contains("train.device must be auto, cpu, cuda or cuda:N, got 'cuda:x'"));
  CHECK_THAT(error_for("train.device='cuda:'"), Contains("train.device must be"));
  CHECK_THAT(error_for("train.valid_metrics=[loss, ter]"), Contains("train.valid_metrics: unknown value 'ter' (expected loss or bleu)"));
  CHECK_THAT(error_for("train.output_dir="), Contains("train.output_dir is required"));
  CHECK_THAT(error_for("train.max_time=soon"), Contains("train.max_time"));
  // A rule that applies only when its key is set: synthetic sizes are free without a task.
  CHECK_THAT(error_for("data.synthetic_vocab=4"), Contains("data.synthetic_vocab = 4 is out of range (> 4 and <= 16777216 (ids 0..3 are reserved))"));
  CHECK_NOTHROW(parse_config("data:\n  train_src: a\n  train_tgt: b\n  valid_src: c\n  valid_tgt: d\n",
                             "c.yaml", {"data.synthetic_vocab=4"}));
  // Rules between keys.
  CHECK_THAT(error_for("train.loss_scale_min=1e9"), Contains("train.loss_scale_min (1e+09) cannot exceed train.loss_scale_init"));
}

TEST_CASE("the architecture keys are the ones a resume refuses to change", "[config]") {
  const Config a = parse_config("data:\n  synthetic: copy\n", "a.yaml");
  std::vector<std::string> arch;
  for (const KeyInfo& k : config_key_info())
    if (k.architecture) arch.push_back(k.key);
  CHECK(arch == std::vector<std::string>{"model.d_model", "model.heads", "model.d_ff",
                                         "model.encoder_layers", "model.decoder_layers",
                                         "model.pre_norm", "model.share_embeddings"});
  for (const std::string& o : {"model.dropout=0.3", "model.attention_dropout=0.2",
                               "train.lr=1", "data.max_tokens=999", "decode.beam=2"}) {
    CHECK(architecture_difference(a, parse_config("data:\n  synthetic: copy\n", "b.yaml", {o})).empty());
  }
  CHECK(architecture_difference(a, parse_config("data:\n  synthetic: copy\n", "b.yaml", {"model.d_ff=64"})) ==
        "model.d_ff is 2048 in the checkpoint but 64 in the config");
  CHECK(architecture_difference(a, parse_config("data:\n  synthetic: copy\n", "b.yaml", {"model.pre_norm=true"})) ==
        "model.pre_norm is false in the checkpoint but true in the config");
}

TEST_CASE("docs/CONFIG.md lists every key as attn keys prints it", "[config][docs]") {
  std::ifstream in(std::string(ATTN_SOURCE_DIR) + "/docs/CONFIG.md");
  REQUIRE(in.good());
  const std::string doc((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string table = config_keys_markdown();
  // Regenerate with scripts/gen_config_doc.sh when a key changes.
  CHECK(doc.find(table) != std::string::npos);
  for (const std::string& key : config_keys()) CHECK(table.find("`" + key + "`") != std::string::npos);
}

// model.attention: the value, the config's own contradictions (validate), the device training
// resolved to (check_attention_device), and the build/library (model construction). The last
// depends on the build: a build without cuDNN must refuse, a build with it must either build
// the model or name the library that did not load.
TEST_CASE("model.attention: fused by default, cudnn refused where it cannot run",
          "[config][attention]") {
  const std::string base = "data:\n  synthetic: copy\n";
  Config c = parse_config(base, "c.yaml");
  CHECK(c.model.attention == "fused");
  CHECK(attn::train::transformer_config(c, 8).attention == attn::ops::AttentionBackend::fused);
  CHECK(parse_config(to_yaml(c), "resolved.yaml").model.attention == "fused");
  CHECK(to_yaml(c).find("attention: \"fused\"") != std::string::npos);

  REQUIRE_THROWS_WITH(parse_config(base + "model:\n  attention: flash\n", "c.yaml"),
                      Contains("model.attention") && Contains("fused or cudnn") &&
                          Contains("'flash'"));
  REQUIRE_THROWS_WITH(
      parse_config(base + "model:\n  attention: cudnn\ntrain:\n  device: cpu\n", "c.yaml"),
      Contains("model.attention is cudnn") && Contains("train.device is cpu"));
  REQUIRE_THROWS_WITH(parse_config(base, "c.yaml",
                                   {"model.attention=cudnn", "train.precision=fp32"}),
                      Contains("model.attention is cudnn") && Contains("fp32"));

  // train.device auto reads back (a checkpoint's config must parse on any machine) ...
  Config cu = parse_config(base + "model:\n  attention: cudnn\n", "c.yaml");
  CHECK(cu.model.attention == "cudnn");
  const attn::nn::TransformerConfig mc = attn::train::transformer_config(cu, 8);
  CHECK(mc.attention == attn::ops::AttentionBackend::cudnn);
  // ... and is refused once it resolves to the CPU.
  REQUIRE_THROWS_WITH(attn::train::check_attention_device(cu, attn::Device::cpu()),
                      Contains("model.attention is cudnn") && Contains("training runs on cpu"));
  CHECK_NOTHROW(attn::train::check_attention_device(c, attn::Device::cpu()));

  attn::Generator gen(1);
  if (!attn::ops::attention_backend_built(attn::ops::AttentionBackend::cudnn)) {
    REQUIRE_THROWS_WITH(attn::nn::MultiHeadAttention(16, 2, 0.0, gen, mc.attention),
                        Contains("model.attention is cudnn") && Contains("built without"));
  } else if (std::string why; !attn::ops::attention_backend_available(
                 attn::ops::AttentionBackend::cudnn, &why)) {
    REQUIRE_THROWS_WITH(attn::nn::MultiHeadAttention(16, 2, 0.0, gen, mc.attention),
                        Contains("model.attention is cudnn") && Contains("libcudnn.so.9"));
  } else {
    // Built and loadable: the model builds, and CPU tensors are refused by the op.
    attn::nn::MultiHeadAttention mha(16, 2, 0.0, gen, mc.attention);
    const attn::Tensor x = attn::Tensor::zeros({1, 3, 16});
    REQUIRE_THROWS_WITH(mha.forward(x, x, attn::Tensor(), false),
                        Contains("cudnn backend needs CUDA tensors") && Contains("cpu"));
  }
}
