#include "train/plot.h"

#include "core/file.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>

#include "base/error.h"
#include "data/corpus.h"
#include "io/json_message.h"
#include "train/svg.h"

namespace attn::train {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A line quoted in an error, cut to a readable length.
std::string excerpt(const std::string& line) {
  return line.size() <= 60 ? line : line.substr(0, 57) + "...";
}

// Labels for `t.values`, as short as the step allows and free of float noise. One format for
// the whole axis: fixed-point ("0", "2.5", "12000"), or, when the largest tick is below 0.01
// or from 1e6 up, mantissas over its power of ten ("0.5e-3", "1.0e-3", "1.5e-3").
std::vector<std::string> tick_labels(const Ticks& t) {
  double max_abs = 0;
  for (double v : t.values) max_abs = std::max(max_abs, std::abs(v));
  const int step_exp = static_cast<int>(std::floor(std::log10(t.step) + 1e-9));
  const bool fixed = max_abs >= 1e-2 && max_abs < 1e6;
  const int exp = fixed ? 0 : static_cast<int>(std::floor(std::log10(max_abs) + 1e-9));
  const int decimals = std::max(0, exp - step_exp);
  std::vector<std::string> labels;
  for (double v : t.values) {
    if (v == 0)
      labels.push_back("0");
    else if (fixed)
      labels.push_back(fmt::format("{:.{}f}", v, decimals));
    else
      labels.push_back(fmt::format("{:.{}f}e{}", v / std::pow(10.0, exp), decimals, exp));
  }
  return labels;
}

}  // namespace

RunCurves parse_metrics(const std::string& text, const std::string& source,
                        const std::string& label) {
  RunCurves run;
  run.label = label;
  run.source = source;
  bool any_record = false;
  int64_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    const size_t nl = text.find('\n', pos);
    const size_t end = nl == std::string::npos ? text.size() : nl;
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", source, line_no);

    json record;
    try {
      record = json::parse(line);
    } catch (const json::exception& e) {
      // The trainer may be writing this line right now (plotting a live run).
      if (nl == std::string::npos) break;
      ATTN_FAIL(where, ": not a JSON line (", io::json_error_text(e), "): ", excerpt(line));
    }
    ATTN_CHECK(record.is_object(), where, ": expected a JSON object, got: ", excerpt(line));
    any_record = true;
    const auto type = record.find("type");
    ATTN_CHECK(type != record.end() && type->is_string(), where,
               ": record has no \"type\" string: ", excerpt(line));
    const auto step_it = record.find("step");
    ATTN_CHECK(step_it != record.end() && step_it->is_number_integer(), where,
               ": record has no integer \"step\": ", excerpt(line));
    const int64_t step = step_it->get<int64_t>();

    auto add = [&](std::vector<CurvePoint>& series, const char* key) {
      const auto it = record.find(key);
      if (it == record.end() || it->is_null()) return;  // not logged, or NaN (written as null)
      ATTN_CHECK(it->is_number(), where, ": \"", key, "\" is ", io::json_excerpt(*it, 57),
                 ", not a number");
      const double v = it->get<double>();
      if (!std::isfinite(v)) return;
      // A resumed (or --fresh) run appends steps it had logged before: its new history
      // replaces the old one from that step on.
      while (!series.empty() && series.back().step >= step) series.pop_back();
      series.push_back({step, v});
    };
    const std::string& kind = type->get_ref<const std::string&>();
    if (kind == "train") {
      add(run.train_loss, "loss");
      add(run.lr, "lr");
      add(run.tokens_per_s, "tgt_tokens_per_s");
    } else if (kind == "valid") {
      add(run.valid_loss, "loss");
      add(run.valid_bleu, "bleu");
    }
  }
  ATTN_CHECK(any_record, "metrics log '", source,
             "' is empty: nothing logged yet (the trainer writes a line every train.log_every "
             "steps)");
  return run;
}

RunCurves load_run_curves(const std::string& run) {
  std::string label = run;
  while (label.size() > 1 && label.back() == '/') label.pop_back();
  std::error_code ec;
  const std::string path = fs::is_directory(label, ec) || !fs::exists(label, ec)
                               ? (fs::path(label) / "metrics.jsonl").string()
                               : label;
  return parse_metrics(data::read_file_bytes(path, "metrics log"), path, label);
}

Ticks nice_ticks(double lo, double hi, int target) {
  ATTN_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi && target >= 2,
             "nice_ticks: bad range [", lo, ", ", hi, "] or target ", target);
  const double scale = std::max(std::abs(lo), std::abs(hi));
  if (hi - lo <= 1e-12 * scale) {
    const double pad = scale == 0 ? 1 : scale * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / (target - 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  Ticks t;
  t.step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  const auto first = static_cast<int64_t>(std::floor(lo / t.step + 1e-9));
  const auto last = static_cast<int64_t>(std::ceil(hi / t.step - 1e-9));
  for (int64_t i = first; i <= last; ++i) t.values.push_back(static_cast<double>(i) * t.step);
  t.labels = tick_labels(t);
  return t;
}

namespace {

// Layout in SVG pixels: a grid of cells, each a panel (title, plot area, axes) or the legend.
constexpr int kCols = 3, kCellW = 400, kCellH = 290, kHeaderH = 40;
constexpr int kPadLeft = 68, kPadRight = 18, kPadTop = 34, kPadBottom = 46;
constexpr int kLegendRowH = 36;
// Matplotlib's "tab10" colours: distinct and familiar.
constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
constexpr size_t kPaletteSize = std::size(kPalette);

struct Panel {
  const char* title;
  const char* y_label;
  std::vector<CurvePoint> RunCurves::*series;
};
const Panel kPanels[] = {
    {"Training loss", "loss per target token", &RunCurves::train_loss},
    {"Validation loss", "loss per target token", &RunCurves::valid_loss},
    {"Validation BLEU", "BLEU", &RunCurves::valid_bleu},
    {"Learning rate", "learning rate", &RunCurves::lr},
    {"Training speed", "target tokens/s", &RunCurves::tokens_per_s},
};

std::string color_of(size_t run) {
  return kPalette[run % kPaletteSize];
}
// Runs beyond the palette repeat its colours with dashes.
std::string dash_of(size_t run) {
  return run < kPaletteSize ? "" : " stroke-dasharray=\"6 3\"";
}

std::string shorten_left(const std::string& s, size_t max_chars) {
  return s.size() <= max_chars ? s : "..." + s.substr(s.size() - (max_chars - 3));
}

void draw_panel(std::string& svg, const Panel& panel, const std::vector<RunCurves>& runs,
                const Ticks& x_ticks, int cx, int cy) {
  const double x0 = cx + kPadLeft, x1 = cx + kCellW - kPadRight;
  const double y0 = cy + kPadTop, y1 = cy + kCellH - kPadBottom;
  svg += fmt::format(
      "<text x=\"{}\" y=\"{}\" font-size=\"14\" font-weight=\"bold\">{}</text>\n"
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#fff\" stroke=\"#999\"/>\n",
      x0, cy + 22, panel.title, x0, y0, x1 - x0, y1 - y0);
  svg += fmt::format(
      "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#333\">step</text>\n"
      "<text transform=\"translate({},{}) rotate(-90)\" text-anchor=\"middle\" "
      "fill=\"#333\">{}</text>\n",
      (x0 + x1) / 2, y1 + 38, cx + 14, (y0 + y1) / 2, panel.y_label);

  const double x_lo = x_ticks.values.front(), x_hi = x_ticks.values.back();
  auto px = [&](double step) { return x0 + (step - x_lo) / (x_hi - x_lo) * (x1 - x0); };
  for (size_t i = 0; i < x_ticks.values.size(); ++i)
    svg += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#e6e6e6\"/>\n"
        "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\" fill=\"#333\">{4}</text>\n",
        px(x_ticks.values[i]), y0, y1, y1 + 16, x_ticks.labels[i]);

  double lo = INFINITY, hi = -INFINITY;
  for (const RunCurves& r : runs)
    for (const CurvePoint& p : r.*panel.series) {
      lo = std::min(lo, p.value);
      hi = std::max(hi, p.value);
    }
  if (lo > hi) {
    svg += fmt::format(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"15\" fill=\"#888\">no "
        "data</text>\n",
        (x0 + x1) / 2, (y0 + y1) / 2 + 5);
    return;
  }
  const Ticks y_ticks = nice_ticks(lo, hi, 5);
  const double y_lo = y_ticks.values.front(), y_hi = y_ticks.values.back();
  auto py = [&](double v) { return y1 - (v - y_lo) / (y_hi - y_lo) * (y1 - y0); };
  for (size_t i = 0; i < y_ticks.values.size(); ++i)
    svg += fmt::format(
        "<line x1=\"{1}\" y1=\"{0:.1f}\" x2=\"{2}\" y2=\"{0:.1f}\" stroke=\"#e6e6e6\"/>\n"
        "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\" fill=\"#333\">{5}</text>\n",
        py(y_ticks.values[i]), x0, x1, x0 - 6, py(y_ticks.values[i]) + 4, y_ticks.labels[i]);
  svg += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" "
      "stroke=\"#999\"/>\n",
      x0, y0, x1 - x0, y1 - y0);

  for (size_t r = 0; r < runs.size(); ++r) {
    const std::vector<CurvePoint>& pts = runs[r].*panel.series;
    if (pts.empty()) continue;
    const std::string color = color_of(r);
    if (pts.size() > 1) {
      std::string points;
      for (const CurvePoint& p : pts)
        points += fmt::format("{:.1f},{:.1f} ", px(static_cast<double>(p.step)), py(p.value));
      points.pop_back();
      svg += fmt::format(
          "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\" "
          "stroke-linejoin=\"round\"{}/>\n",
          points, color, dash_of(r));
    }
    // Sparse series (validations, short runs) show their points; a single point is only that.
    if (pts.size() <= 15)
      for (const CurvePoint& p : pts)
        svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"/>\n",
                           px(static_cast<double>(p.step)), py(p.value), color);
  }
}

// The last value of a series, for the legend's summary line.
std::string last_value(const std::vector<CurvePoint>& s, const char* name, int decimals) {
  return s.empty() ? "" : fmt::format(" · {} {:.{}f}", name, s.back().value, decimals);
}

void draw_legend(std::string& svg, const std::vector<RunCurves>& runs, int cx, int cy) {
  const int x0 = cx + kPadLeft;
  svg += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"14\" font-weight=\"bold\">Runs</text>\n",
                     x0, cy + 22);
  for (size_t r = 0; r < runs.size(); ++r) {
    const RunCurves& run = runs[r];
    const int y = cy + kPadTop + 14 + static_cast<int>(r) * kLegendRowH;
    int64_t last_step = 0;
    for (const Panel& p : kPanels)
      if (!(run.*p.series).empty()) last_step = std::max(last_step, (run.*p.series).back().step);
    const std::string summary =
        fmt::format("step {}", last_step) + last_value(run.train_loss, "train", 3) +
        last_value(run.valid_loss, "valid", 3) + last_value(run.valid_bleu, "BLEU", 2);
    svg += fmt::format(
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"3\"{}/>\n"
        "<text x=\"{}\" y=\"{}\" font-size=\"13\">{}</text>\n"
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#666\">{}</text>\n",
        x0 - 40, y - 4, x0 - 12, y - 4, color_of(r), dash_of(r), x0, y,
        xml_escape(shorten_left(run.label, 44)), x0, y + 15, xml_escape(summary));
  }
}

}  // namespace

std::string render_curves_svg(const std::vector<RunCurves>& runs) {
  ATTN_CHECK(!runs.empty(), "plot: no runs to draw");
  // One step axis for every panel, so that panels line up; steps start at 0 or below.
  int64_t x_min = 0, x_max = 1;
  for (const RunCurves& r : runs)
    for (const Panel& p : kPanels)
      for (const CurvePoint& pt : r.*p.series) {
        x_min = std::min(x_min, pt.step);
        x_max = std::max(x_max, pt.step);
      }
  Ticks x_ticks = nice_ticks(static_cast<double>(x_min), static_cast<double>(x_max), 6);
  if (x_ticks.step < 1)
    x_ticks = nice_ticks(static_cast<double>(x_min), std::max<double>(x_max, 5), 6);

  const int n_cells = static_cast<int>(std::size(kPanels)) + 1;
  const int rows = (n_cells + kCols - 1) / kCols;
  const int legend_index = n_cells - 1;
  const int legend_y = kHeaderH + (legend_index / kCols) * kCellH;
  const int width = kCols * kCellW;
  const int height =
      std::max(kHeaderH + rows * kCellH,
               legend_y + kPadTop + static_cast<int>(runs.size()) * kLegendRowH + 10);

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" font-family=\"DejaVu Sans, Arial, Helvetica, sans-serif\" "
      "font-size=\"11\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n"
      "<text x=\"{2}\" y=\"26\" font-size=\"18\" font-weight=\"bold\">attn training curves"
      "</text>\n",
      width, height, kPadLeft);
  for (int i = 0; i < legend_index; ++i)
    draw_panel(svg, kPanels[i], runs, x_ticks, (i % kCols) * kCellW,
               kHeaderH + (i / kCols) * kCellH);
  draw_legend(svg, runs, (legend_index % kCols) * kCellW, legend_y);
  svg += "</svg>\n";
  return svg;
}

int run_plot_command(const std::vector<std::string>& runs, const std::string& output) {
  ATTN_CHECK(!runs.empty(), "plot: name at least one run directory");
  std::vector<RunCurves> curves;
  for (const std::string& run : runs) curves.push_back(load_run_curves(run));
  const std::string svg = render_curves_svg(curves);
  if (output == "-") {
    std::cout << svg;  // main's check_standard_output reports a failed write
    return 0;
  }
  write_file(output, svg, "training curves");
  // On stderr, so that -o /dev/stdout gives only the picture.
  std::cerr << "wrote training curves of " << curves.size()
            << (curves.size() == 1 ? " run" : " runs") << " to " << output << "\n";
  return 0;
}

}  // namespace attn::train
