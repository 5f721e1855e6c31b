// attn translate / bleu / average / info through the binary: a trained copy model reproduces
// its inputs, and bad input gives one-line errors.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "data/synthetic.h"
#include "test_util.h"
#include "train/average.h"
#include "train/config.h"
#include "train/trainer.h"

using namespace attn;
using attn::testing::run_attn_capture;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

// One trained copy model shared by the tests in this file.
const fs::path& copy_run() {
  static const fs::path run = [] {
    const fs::path p =
        fs::temp_directory_path() / ("attn_test_translate_" + std::to_string(::getpid()));
    fs::remove_all(p);
    train::Config c = train::load_config(std::string(ATTN_SOURCE_DIR) + "/configs/copy.yaml",
                                         {"train.output_dir=" + p.string()});
    train::train(c);
    return p;
  }();
  return run;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  std::string line;
  while (std::getline(is, line)) out.push_back(line);
  return out;
}

}  // namespace

TEST_CASE("translate: a trained copy model reproduces held-out inputs", "[translate]") {
  const data::Dataset held_out = data::make_synthetic("copy", 60, 16, 2, 8, 777);
  std::string input;
  std::vector<std::string> expected;
  for (int64_t i = 0; i < held_out.size(); ++i) {
    std::string line;
    for (int32_t id : held_out.src(i)) line += (line.empty() ? "" : " ") + std::to_string(id);
    expected.push_back(line);
    input += line + "\n";
    if (i == 10) {  // an empty line stays an empty line
      input += "\n";
      expected.push_back("");
    }
  }
  const std::string model = (copy_run() / "checkpoints" / "best").string();
  auto r = run_attn_capture({"translate", "-m", model, "--beam", "4"}, input);
  REQUIRE(r.exit_code() == 0);
  const auto got = split_lines(r.out);
  REQUIRE(got.size() == expected.size());
  int exact = 0;
  for (size_t i = 0; i < got.size(); ++i) exact += got[i] == expected[i];
  INFO(r.err);
  CHECK(exact >= static_cast<int>(expected.size()) - 2);
  CHECK(got[11].empty());

  // n-best in Moses format, best first.
  auto nb = run_attn_capture({"translate", "-m", model, "--beam", "4", "--nbest", "3"},
                             expected[0] + "\n");
  REQUIRE(nb.exit_code() == 0);
  const auto lines = split_lines(nb.out);
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].rfind("0 ||| " + expected[0] + " ||| ", 0) == 0);
}

TEST_CASE("translate: attention pictures", "[translate]") {
  const fs::path dir = copy_run() / "svg";
  const std::string model = (copy_run() / "checkpoints" / "best").string();
  auto r = run_attn_capture({"translate", "-m", model, "--attention-svg", dir.string()},
                            "5 6 7\n9 10\n");
  REQUIRE(r.exit_code() == 0);
  REQUIRE(fs::exists(dir / "1.svg"));
  std::ifstream f(dir / "2.svg");
  std::stringstream ss;
  ss << f.rdbuf();
  CHECK_THAT(ss.str(), Contains("<svg") && Contains("average of 2 heads") &&
                           Contains("head 1") && Contains("&lt;/s&gt;"));
}

TEST_CASE("average and info", "[translate]") {
  const fs::path ck = copy_run() / "checkpoints";
  const fs::path out = copy_run() / "avg";
  auto r = run_attn_capture({"average", "-o", out.string(), (ck / "step-00000600").string(),
                             (ck / "step-00000800").string()});
  REQUIRE(r.exit_code() == 0);
  auto info = run_attn_capture({"info", out.string()});
  REQUIRE(info.exit_code() == 0);
  CHECK_THAT(info.out, Contains("averaged_from") && Contains("d_model: 32"));
  // The keys a resume must keep, from the key list's roles (dropout is not one of them).
  CHECK_THAT(info.out, Contains("architecture: model.d_model=32 model.heads=") &&
                           Contains("model.share_embeddings=") &&
                           !Contains("model.dropout="));
  // The average of a checkpoint with itself is the checkpoint.
  train::average_checkpoints({(ck / "step-00000800").string(), (ck / "step-00000800").string()},
                             (copy_run() / "same").string());
  auto a = run_attn_capture({"translate", "-m", (ck / "step-00000800").string()}, "5 6 7 8\n");
  auto b = run_attn_capture({"translate", "-m", (copy_run() / "same").string()}, "5 6 7 8\n");
  CHECK(a.out == b.out);
  auto bad = run_attn_capture({"average", "-o", out.string(), (ck / "nope").string()});
  CHECK(bad.exit_code() == 1);
  CHECK_THAT(bad.err, Contains("does not exist"));
}

TEST_CASE("translate and bleu reject bad input with one-line errors", "[translate][errors]") {
  const std::string model = (copy_run() / "checkpoints" / "best").string();
  SECTION("missing checkpoint") {
    auto r = run_attn_capture({"translate", "-m", "/nonexistent/ckpt"}, "5 6\n");
    CHECK(r.exit_code() == 1);
    CHECK_THAT(r.err, Contains("checkpoint '/nonexistent/ckpt' does not exist"));
  }
  SECTION("empty input") {
    auto r = run_attn_capture({"translate", "-m", model}, "");
    CHECK(r.exit_code() == 1);
    CHECK_THAT(r.err, Contains("no input") && Contains("standard input"));
  }
  SECTION("bad token for a synthetic model") {
    auto r = run_attn_capture({"translate", "-m", model}, "5 hello\n");
    CHECK(r.exit_code() == 1);
    CHECK_THAT(r.err, Contains("input line 1") && Contains("'hello'"));
  }
  SECTION("reference with another line count") {
    const fs::path d = copy_run() / "bleu";
    fs::create_directories(d);
    std::ofstream(d / "hyp") << "a b c\nd e f\n";
    std::ofstream(d / "ref") << "a b c\n";
    auto r = run_attn_capture({"bleu", (d / "hyp").string(), (d / "ref").string()});
    CHECK(r.exit_code() == 1);
    CHECK_THAT(r.err, Contains("has 1 lines but the hypotheses have 2"));
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
}
