// attn plot: metrics.jsonl parsing (resumes, nulls, malformed lines), tick computation, the
// SVG's panels, and the real thing: two copy-task runs trained here, plotted by the binary,
// rendered to PNG by rsvg-convert (librsvg, scripts/setup.sh) and checked for drawn pixels of
// each run's colour by tests/plot/png_ink.py. An empty SVG through the same check counts as
// blank, so the check can fail.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "test_util.h"
#include "train/plot.h"
#include "train/trainer.h"

using namespace attn;
using attn::testing::error_of;
using attn::testing::read_text;
using attn::testing::run_attn_capture;
using attn::testing::run_program_capture;
using attn::testing::scratch_path;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

void write_text(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

size_t count_of(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string::npos;
       pos = haystack.find(needle, pos + needle.size()))
    ++n;
  return n;
}

std::vector<int64_t> steps_of(const std::vector<train::CurvePoint>& s) {
  std::vector<int64_t> out;
  for (const auto& p : s) out.push_back(p.step);
  return out;
}

// Lines as the trainer writes them (trainer.cc), trimmed to the keys the plot reads and a few.
std::string train_line(int64_t step, double loss, double lr, double tok_s) {
  return nlohmann::json{{"type", "train"}, {"step", step},
                        {"loss", loss},    {"nll", loss},
                        {"lr", lr},        {"tgt_tokens_per_s", tok_s},
                        {"epoch", 0},      {"elapsed_s", 0.1 * step}}
             .dump() +
         "\n";
}
std::string valid_line(int64_t step, double loss, std::optional<double> bleu = {}) {
  nlohmann::json j = {{"type", "valid"}, {"step", step}, {"loss", loss}, {"best", true}};
  if (bleu) j["bleu"] = *bleu;
  return j.dump() + "\n";
}

// rsvg-convert's PNG of `svg` on a white background, measured by png_ink.py.
nlohmann::json ink_of(const fs::path& svg, const std::vector<std::string>& colors) {
  const std::string png = svg.string() + ".png";
  const auto render = run_program_capture("rsvg-convert", {"-b", "white", "-o", png, svg.string()});
  INFO("rsvg-convert (librsvg2-bin, installed by scripts/setup.sh): " << render.err);
  REQUIRE(render.exit_code() == 0);
  std::vector<std::string> args = {std::string(ATTN_SOURCE_DIR) + "/tests/plot/png_ink.py", png};
  args.insert(args.end(), colors.begin(), colors.end());
  const auto measured = run_program_capture("python3", args);
  INFO(measured.err);
  REQUIRE(measured.exit_code() == 0);
  return nlohmann::json::parse(measured.out);
}

}  // namespace

TEST_CASE("plot: nice ticks cover the range with 1-2-5 steps", "[plot]") {
  auto t = train::nice_ticks(0, 97, 5);
  CHECK(t.step == 20);
  CHECK(t.values == std::vector<double>{0, 20, 40, 60, 80, 100});

  t = train::nice_ticks(1.23, 4.56, 5);
  CHECK(t.step == Approx(1));
  CHECK(t.values.front() == Approx(1));
  CHECK(t.values.back() == Approx(5));

  t = train::nice_ticks(0, 7e-4, 5);  // learning rates
  CHECK(t.step == Approx(2e-4));
  CHECK(t.values.back() == Approx(8e-4));

  // One value (a single point, a constant learning rate) gets a range around it.
  t = train::nice_ticks(3, 3, 5);
  CHECK(t.values.front() < 3);
  CHECK(t.values.back() > 3);
  t = train::nice_ticks(0, 0, 5);
  CHECK(t.values.front() < 0);
  CHECK(t.values.back() > 0);
  CHECK(std::find(t.values.begin(), t.values.end(), 0.0) != t.values.end());

  // Any range: covered, a readable number of ticks, exact multiples of a 1/2/5 step.
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> mag(-8, 8), u(-1, 1);
  for (int i = 0; i < 2000; ++i) {
    const double scale = std::pow(10.0, mag(rng));
    double lo = u(rng) * scale, hi = u(rng) * scale;
    if (lo > hi) std::swap(lo, hi);
    t = train::nice_ticks(lo, hi, 5);
    INFO("range [" << lo << ", " << hi << "] step " << t.step);
    REQUIRE(t.values.size() >= 3);
    REQUIRE(t.values.size() <= 9);
    CHECK(t.values.front() <= lo);
    CHECK(t.values.back() >= hi);
    const double m = t.step / std::pow(10.0, std::floor(std::log10(t.step) + 1e-9));
    CHECK((m == Approx(1) || m == Approx(2) || m == Approx(5)));
    for (size_t k = 1; k < t.values.size(); ++k)
      CHECK(t.values[k] - t.values[k - 1] == Approx(t.step));
    // Enough digits to tell the ticks apart, and one label each.
    REQUIRE(t.labels.size() == t.values.size());
    CHECK(std::set<std::string>(t.labels.begin(), t.labels.end()).size() == t.labels.size());
  }
  CHECK_THROWS_AS(train::nice_ticks(2, 1, 5), Error);
  CHECK_THROWS_AS(train::nice_ticks(0, INFINITY, 5), Error);
}

TEST_CASE("plot: tick labels are short, free of float noise, one format per axis", "[plot]") {
  using V = std::vector<std::string>;
  CHECK(train::nice_ticks(0, 97, 5).labels == V{"0", "20", "40", "60", "80", "100"});
  CHECK(train::nice_ticks(0.1, 0.5, 5).labels == V{"0.1", "0.2", "0.3", "0.4", "0.5"});
  CHECK(train::nice_ticks(-0.9, 0.9, 5).labels == V{"-1.0", "-0.5", "0", "0.5", "1.0"});
  CHECK(train::nice_ticks(2.2, 2.36, 5).labels == V{"2.20", "2.25", "2.30", "2.35", "2.40"});
  CHECK(train::nice_ticks(900, 17000, 5).labels == V{"0", "5000", "10000", "15000", "20000"});
  // Learning rates: one power of ten for the axis.
  CHECK(train::nice_ticks(0, 7e-4, 5).labels == V{"0", "2e-4", "4e-4", "6e-4", "8e-4"});
  CHECK(train::nice_ticks(4e-4, 2.7e-3, 5).labels ==
        V{"0", "0.5e-3", "1.0e-3", "1.5e-3", "2.0e-3", "2.5e-3", "3.0e-3"});
  CHECK(train::nice_ticks(1e6, 4e6, 4).labels == V{"1e6", "2e6", "3e6", "4e6"});
  CHECK(train::nice_ticks(0, 3e-3, 4).labels == V{"0", "1e-3", "2e-3", "3e-3"});
  // A nearly flat loss keeps its digits instead of switching to e-notation.
  CHECK(train::nice_ticks(2.2, 2.2003, 4).labels == V{"2.2000", "2.2001", "2.2002", "2.2003"});
  // Tiny ranges are ranges too, not constants.
  CHECK(train::nice_ticks(1e-9, 4e-9, 4).labels == V{"1e-9", "2e-9", "3e-9", "4e-9"});
}

TEST_CASE("plot: metrics.jsonl is read into curves", "[plot]") {
  const std::string text = train_line(50, 2.5, 1e-3, 900) + train_line(100, 2.0, 2e-3, 1000) +
                           "\n" + valid_line(100, 1.9, 12.5) +
                           "{\"type\":\"bench\",\"step\":3,\"whatever\":\"x\"}\n" +
                           train_line(150, 1.5, 1.5e-3, 1100) +
                           "{\"type\":\"train\",\"step\":200,\"loss\":null,\"lr\":1e-3}\n";
  const train::RunCurves r = train::parse_metrics(text, "m.jsonl", "run-a");
  CHECK(r.label == "run-a");
  CHECK(steps_of(r.train_loss) == std::vector<int64_t>{50, 100, 150});  // null: no point
  CHECK(r.train_loss[2].value == 1.5);
  CHECK(steps_of(r.lr) == std::vector<int64_t>{50, 100, 150, 200});
  CHECK(r.lr[1].value == 2e-3);
  CHECK(r.tokens_per_s.back().value == 1100);
  CHECK(steps_of(r.valid_loss) == std::vector<int64_t>{100});
  CHECK(r.valid_bleu.at(0).value == 12.5);

  // A resume from step 100 appends steps 150.. again: the newer history replaces the older.
  const train::RunCurves resumed = train::parse_metrics(
      train_line(100, 2, 1e-3, 1) + train_line(150, 9, 1e-3, 1) + train_line(200, 9, 1e-3, 1) +
          train_line(150, 1, 1e-3, 1) + train_line(200, 0.5, 1e-3, 1),
      "m.jsonl", "r");
  CHECK(steps_of(resumed.train_loss) == std::vector<int64_t>{100, 150, 200});
  CHECK(resumed.train_loss[1].value == 1);
  CHECK(resumed.train_loss[2].value == 0.5);
}

TEST_CASE("plot: malformed or empty metrics are errors naming file and line", "[plot]") {
  const std::string good = train_line(50, 2.5, 1e-3, 900);
  CHECK_THAT(
      error_of([&] { train::parse_metrics(good + "{\"type\":\"train\",\"st\n", "m.jsonl", ""); }),
      Contains("m.jsonl:2: not a JSON line"));
  // A number beyond double's range is nlohmann's out_of_range, not a parse_error.
  CHECK_THAT(
      error_of([&] { train::parse_metrics(good + "{\"step\": 1e999}\n", "m.jsonl", ""); }),
      Contains("m.jsonl:2: not a JSON line (number overflow") && !Contains("json.exception"));
  // ... but an unterminated last line of a live run is one still being written.
  CHECK(train::parse_metrics(good + "{\"type\":\"train\",\"st", "m.jsonl", "").train_loss.size() ==
        1);
  CHECK_THAT(error_of([&] { train::parse_metrics(good + "\n[1,2]\n", "m.jsonl", ""); }),
             Contains("m.jsonl:3: expected a JSON object"));
  CHECK_THAT(
      error_of([&] { train::parse_metrics("{\"type\":\"train\",\"loss\":1}\n", "m.jsonl", ""); }),
      Contains("m.jsonl:1: record has no integer \"step\""));
  CHECK_THAT(error_of([&] { train::parse_metrics("{\"step\":1,\"loss\":1}\n", "m.jsonl", ""); }),
             Contains("m.jsonl:1: record has no \"type\""));
  CHECK_THAT(error_of([&] {
               train::parse_metrics(good + "{\"type\":\"valid\",\"step\":9,\"loss\":\"low\"}\n",
                                    "m.jsonl", "");
             }),
             Contains("m.jsonl:2: \"loss\" is \"low\", not a number"));
  CHECK_THAT(error_of([&] { train::parse_metrics("", "runs/x/metrics.jsonl", ""); }),
             Contains("metrics log 'runs/x/metrics.jsonl' is empty"));
  CHECK_THAT(error_of([&] { train::parse_metrics("\n  \n", "m.jsonl", ""); }),
             Contains("is empty"));

  const fs::path dir = scratch_path("plot", "missing");
  CHECK_THAT(error_of([&] { train::load_run_curves(dir.string()); }),
             Contains("cannot open metrics log '" + (dir / "metrics.jsonl").string() + "'"));
  // A run directory or its metrics file; trailing slashes are not part of the label.
  write_text(dir / "metrics.jsonl", good);
  CHECK(train::load_run_curves(dir.string() + "/").label == dir.string());
  CHECK(train::load_run_curves((dir / "metrics.jsonl").string()).train_loss.size() == 1);
}

TEST_CASE("plot: the SVG has every panel, says 'no data', draws single points", "[plot]") {
  train::RunCurves a = train::parse_metrics(
      train_line(100, 3, 1e-3, 900) + train_line(200, 2, 2e-3, 950) + valid_line(200, 2.1),
      "a.jsonl", "runs/<a&b>");
  const std::string svg = train::render_curves_svg({a});
  for (const char* title :
       {"Training loss", "Validation loss", "Validation BLEU", "Learning rate", "Training speed"})
    CHECK_THAT(svg, Contains(title));
  CHECK(count_of(svg, "no data") == 1);               // no run has BLEU
  CHECK(count_of(svg, "<polyline") == 3);             // train loss, lr, tokens/s
  CHECK(count_of(svg, "<circle") == 2 * 3 + 1);       // + the single validation point
  CHECK_THAT(svg, Contains("runs/&lt;a&amp;b&gt;"));  // labels are escaped
  CHECK_THAT(svg, !Contains("<a&b>"));
  CHECK_THAT(svg, Contains(">1.2e-3<"));  // learning-rate ticks
  CHECK(svg.rfind("</svg>\n") == svg.size() - 7);

  // A second run with BLEU fills that panel; each run has its own colour.
  train::RunCurves b =
      train::parse_metrics(valid_line(200, 2.0, 20) + valid_line(400, 1.5, 30), "b.jsonl", "b");
  const std::string two = train::render_curves_svg({a, b});
  CHECK(count_of(two, "no data") == 0);
  CHECK_THAT(two, Contains("stroke=\"#1f77b4\""));
  CHECK_THAT(two, Contains("stroke=\"#ff7f0e\""));
}

TEST_CASE("plot: attn plot draws real training runs that render to a non-blank PNG",
          "[plot][e2e]") {
  // Two copy-task runs: one validated with BLEU, one with another learning rate and without.
  const fs::path a = scratch_path("plot", "copy-bleu"), b = scratch_path("plot", "copy-lr");
  train::train(attn::testing::copy_task_config(
      a, {"train.max_steps=200", "train.log_every=20", "train.valid_every=50",
          "train.valid_metrics=[loss, bleu]"}));
  train::train(attn::testing::copy_task_config(
      b, {"train.max_steps=200", "train.log_every=20", "train.valid_every=100", "train.lr=1e-3"}));

  const fs::path out = scratch_path("plot", "out") / "curves.svg";
  fs::create_directories(out.parent_path());
  const auto r = run_attn_capture({"plot", a.string(), b.string(), "-o", out.string()});
  INFO(r.err);
  REQUIRE(r.exit_code() == 0);
  CHECK_THAT(r.err, Contains("wrote training curves of 2 runs to " + out.string()));
  // "-" is standard output: the same picture.
  const auto piped = run_attn_capture({"plot", a.string(), b.string(), "-o", "-"});
  CHECK(piped.exit_code() == 0);
  const std::string svg = read_text(out);
  CHECK(piped.out == svg);
  CHECK(count_of(svg, "no data") == 0);
  CHECK(count_of(svg, "<polyline") == 2 * 4 + 1);  // run b has no BLEU
  // Nothing but the picture is left next to it.
  CHECK(std::distance(fs::directory_iterator(out.parent_path()), fs::directory_iterator{}) == 1);

  const nlohmann::json ink = ink_of(out, {"#1f77b4", "#ff7f0e"});
  INFO(ink.dump());
  CHECK(ink["width"] == 1200);
  // Frames, grid, text and ten curves: well over a few thousand pixels, and both runs' lines.
  CHECK(ink["ink"].get<int64_t>() > 20000);
  CHECK(ink["colors"]["#1f77b4"].get<int64_t>() > 300);
  CHECK(ink["colors"]["#ff7f0e"].get<int64_t>() > 300);

  // The same check on an empty picture finds nothing: it can fail.
  const fs::path blank = out.parent_path() / "blank.svg";
  write_text(blank, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1200\" height=\"620\"/>\n");
  const nlohmann::json none = ink_of(blank, {"#1f77b4"});
  CHECK(none["ink"] == 0);
  CHECK(none["colors"]["#1f77b4"] == 0);
}

TEST_CASE("plot: attn plot errors are one line and leave no file", "[plot][e2e]") {
  const fs::path dir = scratch_path("plot", "errors");
  write_text(dir / "good" / "metrics.jsonl", train_line(10, 1, 1e-3, 5));
  write_text(dir / "bad" / "metrics.jsonl", train_line(10, 1, 1e-3, 5) + "oops\n");
  write_text(dir / "empty" / "metrics.jsonl", "");
  const std::string out = (dir / "curves.svg").string();

  auto one_line_error = [&](const std::vector<std::string>& args, const std::string& what) {
    const auto r = run_attn_capture(args);
    INFO(r.err);
    CHECK(r.exit_code() == 1);
    CHECK_THAT(r.err, Contains("attn: error: ") && Contains(what));
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(!fs::exists(out));
  };
  one_line_error({"plot", (dir / "good").string(), (dir / "nope").string(), "-o", out},
                 (dir / "nope" / "metrics.jsonl").string() + "': No such file or directory");
  one_line_error({"plot", (dir / "bad").string(), "-o", out},
                 (dir / "bad" / "metrics.jsonl").string() + ":2: not a JSON line");
  one_line_error({"plot", (dir / "empty").string(), "-o", out}, "is empty");
  one_line_error({"plot", (dir / "good").string(), "-o", (dir / "no" / "x.svg").string()},
                 "no directory '" + (dir / "no").string() + "'");
  // A full disk (a device is written in place, never renamed over).
  one_line_error({"plot", (dir / "good").string(), "-o", "/dev/full"},
                 "'/dev/full' failed: No space left on device");
  CHECK(fs::is_character_file("/dev/full"));
}
