#include "train/translate.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "core/file.h"
#include "core/grad_mode.h"
#include "data/batcher.h"
#include "data/corpus.h"
#include "data/dataset.h"
#include "train/checkpoint.h"
#include "train/model_config.h"
#include "train/svg.h"

namespace attn::train {
namespace fs = std::filesystem;

namespace {

std::vector<int32_t> parse_ids(const std::string& line, int64_t vocab, int64_t line_no) {
  std::istringstream is(line);
  std::vector<int32_t> ids;
  std::string tok;
  while (is >> tok) {
    char* end = nullptr;
    const long v = std::strtol(tok.c_str(), &end, 10);
    ATTN_CHECK(*end == '\0' && v >= 4 && v < vocab, "input line ", line_no, ": '", tok,
               "' is not a token id in [4, ", vocab,
               ") (this model has no SentencePiece "
               "vocabulary; its input is space-separated ids)");
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

}  // namespace

Translator::Translator(const std::string& checkpoint) {
  LoadedCheckpoint ck = load_checkpoint(checkpoint);
  config_ = parse_config(ck.config_yaml, ck.path + "/config.yaml");
  if (!ck.spm_model.empty()) {
    vocab_ = data::Vocab::from_serialized(ck.spm_model);
    vocab_size_ = vocab_.size();
  } else {
    ATTN_CHECK(!config_.data.synthetic.empty(), "checkpoint '", ck.path,
               "' has no spm.model and is not a synthetic-task model");
    vocab_size_ = config_.data.synthetic_vocab;
  }
  Generator init(0);
  nn::TransformerConfig mc = transformer_config(config_, vocab_size_);
  // model.attention is a training choice: decoding runs one query row at a time, which is
  // fused's decode kernel either way, and a checkpoint must translate on any machine.
  mc.attention = ops::AttentionBackend::fused;
  model_ = std::make_unique<nn::Transformer>(mc, init);
  try {
    model_->load_parameters(ck.model);
  } catch (const Error& e) {
    ATTN_FAIL("checkpoint '", ck.path, "' does not match its own config: ", e.what());
  }
  model_->eval();
}

std::vector<int32_t> Translator::encode(const std::string& line) const {
  return vocab_.loaded() ? vocab_.encode(line) : parse_ids(line, vocab_size_, 0);
}

std::string Translator::detokenize(const std::vector<int32_t>& ids) const {
  return data::detokenize(vocab_, ids);
}

std::vector<std::string> Translator::labels(const std::vector<int32_t>& ids) const {
  std::vector<std::string> out;
  for (int32_t id : ids) out.push_back(vocab_.loaded() ? vocab_.piece(id) : std::to_string(id));
  return out;
}

std::vector<std::vector<decode::Hypothesis>> Translator::translate(
    const std::vector<std::string>& lines, const TranslateOptions& options,
    const std::function<void(int64_t, int64_t)>& progress) {
  NoGradGuard no_grad;
  options.beam.validate(vocab_size_);
  // A batch holds at least one token and the end of sentence.
  ATTN_CHECK(options.max_tokens >= 2 && options.max_tokens <= data::kMaxBatchTokens,
             "translate: --max-tokens must be between 2 and ", data::kMaxBatchTokens, ", got ",
             options.max_tokens);
  data::DatasetBuilder builder;
  std::vector<int64_t> line_of;  // dataset row -> input line (empty lines are not decoded)
  for (size_t i = 0; i < lines.size(); ++i) {
    std::vector<int32_t> ids =
        vocab_.loaded() ? vocab_.encode(lines[i]) : parse_ids(lines[i], vocab_size_, i + 1);
    if (ids.empty()) continue;
    // Sources longer than a batch can hold are cut rather than refused: one long line should
    // not stop a whole file.
    const int64_t limit = options.max_tokens - 1;
    if (static_cast<int64_t>(ids.size()) > limit) ids.resize(static_cast<size_t>(limit));
    const std::vector<int32_t> none;
    builder.add(ids, none);
    line_of.push_back(static_cast<int64_t>(i));
  }
  std::vector<std::vector<decode::Hypothesis>> out(lines.size());
  if (line_of.empty()) return out;
  const data::Dataset ds = builder.finish();
  data::BatcherOptions bo;
  bo.max_tokens = options.max_tokens;
  const std::vector<data::Batch> batches = data::make_eval_batches(ds, bo);
  int64_t done = 0;
  for (const data::Batch& b : batches) {
    auto results = decode::beam_search(*model_, b.src, b.src_lengths, options.beam);
    for (size_t r = 0; r < results.size(); ++r) out[line_of[b.indices[r]]] = std::move(results[r]);
    done += b.size;
    if (progress) progress(done, static_cast<int64_t>(line_of.size()));
  }
  return out;
}

void write_attention_svg(const std::string& path, const Tensor& attention,
                         const std::vector<std::string>& src_labels,
                         const std::vector<std::string>& tgt_labels) {
  ATTN_CHECK(attention.dim() == 3, "attention picture: expected [heads, tgt, src] weights, got ",
             attention.shape());
  const int64_t heads = attention.size(0), rows = attention.size(1), cols = attention.size(2);
  ATTN_CHECK(static_cast<int64_t>(src_labels.size()) == cols &&
                 static_cast<int64_t>(tgt_labels.size()) == rows,
             "attention picture: ", src_labels.size(), " source and ", tgt_labels.size(),
             " target labels for weights of shape ", attention.shape());
  const std::vector<double> w = attention.to_double_vector();
  const int cell = 18, label_w = 110, label_h = 90, gap = 30;
  const int panel_w = label_w + cell * static_cast<int>(cols);
  const int panel_h = label_h + cell * static_cast<int>(rows) + 20;
  const int panels = static_cast<int>(heads) + 1;
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << panel_w + gap << "\" height=\""
      << panels * (panel_h + gap) << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  for (int p = 0; p < panels; ++p) {
    const int y0 = p * (panel_h + gap);
    svg << "<text x=\"4\" y=\"" << y0 + 14 << "\" font-weight=\"bold\">"
        << (p == 0 ? std::string("average of ") + std::to_string(heads) + " heads"
                   : "head " + std::to_string(p - 1))
        << "</text>\n";
    for (int64_t j = 0; j < cols; ++j) {
      const int x = label_w + static_cast<int>(j) * cell + cell / 2;
      svg << "<text transform=\"translate(" << x << "," << y0 + label_h - 4 << ") rotate(-60)\">"
          << xml_escape(src_labels[j]) << "</text>\n";
    }
    for (int64_t i = 0; i < rows; ++i) {
      const int y = y0 + label_h + static_cast<int>(i) * cell;
      svg << "<text x=\"" << label_w - 4 << "\" y=\"" << y + cell - 5 << "\" text-anchor=\"end\">"
          << xml_escape(tgt_labels[i]) << "</text>\n";
      for (int64_t j = 0; j < cols; ++j) {
        double v = 0;
        if (p == 0) {
          for (int64_t h = 0; h < heads; ++h) v += w[(h * rows + i) * cols + j];
          v /= static_cast<double>(heads);
        } else {
          v = w[((p - 1) * rows + i) * cols + j];
        }
        char buf[160];
        std::snprintf(buf, sizeof(buf),
                      "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#08306b\" "
                      "fill-opacity=\"%.3f\" stroke=\"#ddd\"><title>%.3f</title></rect>\n",
                      label_w + static_cast<int>(j) * cell, y, cell, cell, std::clamp(v, 0.0, 1.0),
                      v);
        svg << buf;
      }
    }
  }
  svg << "</svg>\n";
  write_file(path, svg.str(), "attention picture");
}

int run_translate(const std::string& checkpoint, const std::string& input,
                  const std::string& output, TranslateOptions options) {
  Translator tr(checkpoint);
  const DecodeSection& d = tr.config().decode;
  options.beam.beam = options.beam_size.value_or(d.beam);
  options.beam.alpha = options.alpha.value_or(d.alpha);
  options.beam.max_len_a = options.max_len_a.value_or(d.max_len_a);
  options.beam.max_len_b = options.max_len_b.value_or(d.max_len_b);
  options.beam.max_repeats = options.max_repeats.value_or(d.max_repeats);
  const bool from_stdin = input == "-";
  const std::vector<std::string> lines =
      data::read_lines(input, from_stdin ? "standard input" : "input");
  ATTN_CHECK(!lines.empty(), "no input: ", from_stdin ? "standard input" : "'" + input + "'",
             " is empty");
  options.beam.return_attention = !options.attention_svg_dir.empty();
  if (options.beam.return_attention) {
    std::error_code ec;
    fs::create_directories(options.attention_svg_dir, ec);
    ATTN_CHECK(!ec, "cannot create '", options.attention_svg_dir, "': ", ec.message());
  }
  const bool tty = ::isatty(STDERR_FILENO) == 1;
  auto results = tr.translate(lines, options, [&](int64_t done, int64_t total) {
    if (tty)
      std::fprintf(stderr, "\r\033[Ktranslated %lld/%lld", static_cast<long long>(done),
                   static_cast<long long>(total));
  });
  if (tty) std::fprintf(stderr, "\r\033[K");

  std::ostringstream out;
  const bool moses = options.scores || options.beam.nbest > 1;
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto& hyps = results[i];
    if (!moses) {
      out << (hyps.empty() ? "" : tr.detokenize(hyps[0].tokens)) << "\n";
      continue;
    }
    if (hyps.empty()) out << i << " |||  ||| 0\n";
    for (const auto& h : hyps)
      out << i << " ||| " << tr.detokenize(h.tokens) << " ||| " << h.score << "\n";
  }
  if (output == "-")
    std::cout << out.str();  // checked at the end of main
  else
    write_file(output, out.str(), "translations");
  if (options.beam.return_attention) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (results[i].empty()) continue;
      const auto& h = results[i][0];
      std::vector<int32_t> src = tr.encode(lines[i]);
      std::vector<std::string> src_labels = tr.labels(src);
      src_labels.push_back("</s>");
      std::vector<std::string> tgt_labels = tr.labels(h.tokens);
      tgt_labels.push_back("</s>");
      src_labels.resize(static_cast<size_t>(h.attention.size(2)), "");
      write_attention_svg(
          (fs::path(options.attention_svg_dir) / (std::to_string(i + 1) + ".svg")).string(),
          h.attention, src_labels, tgt_labels);
    }
  }
  return 0;
}

}  // namespace attn::train
