// `attn plot`: training curves of one or more runs as one SVG, drawn by hand (no plotting
// library, nothing to install), from each run's metrics.jsonl (written by the trainer, see
// trainer.cc: one JSON object per line, "type" "train" or "valid", "step", values).
//
// Five panels share the step axis: training loss, validation loss, validation BLEU, learning
// rate and target tokens/s; a sixth cell holds the legend (one colour per run, in argument
// order). A panel with no points in any run says "no data"; a series of one point is drawn
// as a marker.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace attn::train {

struct CurvePoint {
  int64_t step = 0;
  double value = 0;
};

// One run's curves, each in increasing step order.
struct RunCurves {
  std::string label;   // shown in the legend
  std::string source;  // the metrics file they came from
  std::vector<CurvePoint> train_loss, valid_loss, valid_bleu, lr, tokens_per_s;
};

// Parses metrics.jsonl text. Blank lines are skipped; a line that is not a JSON object, has no
// integer "step", or holds a non-number where a value belongs is an error naming
// `source`:line, except a last line without its '\n' that is not JSON yet: the trainer is
// writing it, and it is left out. Records of other types and unknown keys are ignored (newer
// writers); a null value (the trainer writes NaN as null) is no point. A step at or below the
// previous one in a series (a run resumed from an earlier checkpoint, or restarted with --fresh,
// appends to the same file) drops that series' later points: the newest history wins. Text without
// any record is an error ("... is empty").
RunCurves parse_metrics(const std::string& text, const std::string& source,
                        const std::string& label);

// `run` is a run directory (its metrics.jsonl is read) or a metrics file itself; the label is
// `run` as given, without trailing slashes.
RunCurves load_run_curves(const std::string& run);

// Axis ticks: multiples of a "nice" step (1, 2 or 5 × 10^k) chosen so that about `target`
// ticks cover [lo, hi]; the first tick is <= lo and the last >= hi, so the axis spans
// [values.front(), values.back()]. An empty range (lo == hi, e.g. a single point) is widened
// around the value first. Requires finite lo <= hi. Labels are as short as the step allows,
// without float noise, in one format per axis: "0", "2.5", "12000", or, when the largest
// tick is below 0.01 (learning rates) or from 1e6 up, mantissas over its power of ten:
// "0", "0.5e-3", "1.0e-3".
struct Ticks {
  std::vector<double> values;
  std::vector<std::string> labels;
  double step = 1;
};
Ticks nice_ticks(double lo, double hi, int target = 5);

// The whole picture as SVG text.
std::string render_curves_svg(const std::vector<RunCurves>& runs);

// `attn plot RUN... -o OUT`: reads every run, writes the SVG to `output` (through a
// temporary file and rename, see core/file.h's write_file; "-" = standard output) and says so on
// stderr. Returns the exit code (0).
int run_plot_command(const std::vector<std::string>& runs, const std::string& output);

}  // namespace attn::train
