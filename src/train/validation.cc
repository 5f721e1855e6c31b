#include "train/validation.h"

#include <algorithm>
#include <span>

#include "autograd/functions.h"
#include "base/error.h"
#include "core/grad_mode.h"
#include "decode/beam_search.h"
#include "eval/bleu.h"

namespace attn::train {

EarlyStopping::EarlyStopping(std::string metric, int64_t patience)
    : metric_(std::move(metric)), patience_(patience) {
  ATTN_CHECK(metric_ == "loss" || metric_ == "bleu", "EarlyStopping: metric must be loss or bleu, got '",
             metric_, "'");
}

bool EarlyStopping::update(double value) {
  const bool best = !best_ || (metric_ == "bleu" ? value > *best_ : value < *best_);
  if (best) {
    best_ = value;
    bad_ = 0;
  } else {
    ++bad_;
  }
  return best;
}

void EarlyStopping::restore(std::optional<double> best, int64_t bad_validations) {
  best_ = best;
  bad_ = bad_validations;
}

namespace {

// BLEU (sacreBLEU-identical) of beam search with train.valid_beam over the validation set.
// Both sides are detokenized from ids (SentencePiece decoding is lossless for ordinary text);
// synthetic tasks score space-joined ids.
double valid_bleu(nn::Transformer& model, Device device, const ValidationSet& set,
                  const Config& cfg) {
  decode::BeamOptions bo;
  bo.beam = cfg.train.valid_beam;
  bo.alpha = cfg.decode.alpha;
  bo.max_len_a = cfg.decode.max_len_a;
  bo.max_len_b = cfg.decode.max_len_b;
  bo.max_repeats = cfg.decode.max_repeats;
  auto text = [&](std::span<const int32_t> ids) { return data::detokenize(*set.vocab, ids); };
  std::vector<std::string> hyps, refs;
  for (const data::Batch& b : *set.batches) {
    const auto results = decode::beam_search(model, b.src.to(device), b.src_lengths.to(device), bo);
    for (size_t i = 0; i < results.size(); ++i) {
      hyps.push_back(text(results[i][0].tokens));
      refs.push_back(text(set.data->tgt(b.indices[i])));
    }
  }
  return eval::corpus_bleu(hyps, {refs}).score;
}

}  // namespace

ValidScores validate_model(nn::Transformer& model, Device device, const ValidationSet& set,
                           const Config& cfg) {
  NoGradGuard no_grad;
  nn::EvalModeGuard eval(model);
  double loss = 0, nll = 0, correct = 0;
  ValidScores s;
  for (const data::Batch& b : *set.batches) {
    Tensor logits = model.forward(b.src.to(device), b.src_lengths.to(device), b.tgt_in.to(device));
    CrossEntropyResult ce = cross_entropy(reshape(logits, {-1, set.vocab_size}),
                                          b.tgt_out.to(device).view({-1}),
                                          cfg.train.label_smoothing, data::kPadId);
    loss += ce.loss.item();
    nll += ce.nll.item();
    correct += ce.ncorrect.item();
    s.tokens += static_cast<double>(b.tgt_tokens);
  }
  if (s.tokens == 0) return s;
  s.loss = loss / s.tokens;
  s.nll = nll / s.tokens;
  s.accuracy = correct / s.tokens;
  const auto& metrics = cfg.train.valid_metrics;
  if (std::find(metrics.begin(), metrics.end(), "bleu") != metrics.end())
    s.bleu = valid_bleu(model, device, set, cfg);
  return s;
}

}  // namespace attn::train
