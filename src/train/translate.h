// Translation with a trained checkpoint: the model and vocabulary come from the checkpoint
// directory (its config.yaml and spm.model), input lines are batched by tokens in length
// order, decoded with beam search and written back in input order.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/vocab.h"
#include "decode/beam_search.h"
#include "nn/transformer.h"
#include "train/config.h"

namespace attn::train {

struct TranslateOptions {
  decode::BeamOptions beam;  // beam, alpha, max_len_a/b, nbest
  // Set by the command line; unset ones come from the checkpoint's `decode` section.
  std::optional<int64_t> beam_size, max_len_b, max_repeats;
  std::optional<double> alpha, max_len_a;
  int64_t max_tokens = 4000;  // per batch, padding included
  bool scores = false;        // Moses n-best lines "id ||| text ||| score" even for nbest 1
  std::string attention_svg_dir;
};

class Translator {
 public:
  // Loads a checkpoint directory (or a latest/best/averaged link or directory).
  explicit Translator(const std::string& checkpoint);

  // One entry per input line (n-best lists, best first); empty lines give an empty list.
  std::vector<std::vector<decode::Hypothesis>> translate(
      const std::vector<std::string>& lines, const TranslateOptions& options,
      const std::function<void(int64_t done, int64_t total)>& progress = {});

  std::string detokenize(const std::vector<int32_t>& ids) const;
  // Token labels for pictures: SentencePiece pieces, or ids for synthetic models.
  std::vector<std::string> labels(const std::vector<int32_t>& ids) const;
  std::vector<int32_t> encode(const std::string& line) const;
  const Config& config() const { return config_; }

 private:
  Config config_;
  data::Vocab vocab_;  // not loaded for synthetic-task models: lines are token ids
  int64_t vocab_size_ = 0;
  std::unique_ptr<nn::Transformer> model_;
};

// Writes an SVG heatmap of one sentence's cross-attention ([heads, tgt, src] probabilities):
// the average over heads, then each head, with source tokens as column labels and target
// tokens (ending in </s>) as row labels.
void write_attention_svg(const std::string& path, const Tensor& attention,
                         const std::vector<std::string>& src_labels,
                         const std::vector<std::string>& tgt_labels);

// `attn translate`: reads `input` ("-" = stdin), writes `output` ("-" = stdout).
int run_translate(const std::string& checkpoint, const std::string& input,
                  const std::string& output, TranslateOptions options);

}  // namespace attn::train
