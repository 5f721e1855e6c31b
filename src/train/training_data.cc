#include "train/training_data.h"

#include <filesystem>
#include <new>

#include "core/allocator.h"
#include "base/error.h"
#include "data/corpus.h"
#include "data/synthetic.h"

namespace attn::train {
namespace fs = std::filesystem;

TrainingData load_training_data(const Config& cfg, const std::string* checkpoint_spm, int rank,
                                int world, spdlog::logger& log) {
  TrainingData td;
  const auto& d = cfg.data;
  const uint64_t seed = cfg.train.seed;
  if (!d.synthetic.empty()) {
    auto make = [&](const char* key, int64_t n, uint64_t task_seed) {
      try {
        return data::make_synthetic(d.synthetic, n, static_cast<int32_t>(d.synthetic_vocab),
                                    d.synthetic_min_len, d.synthetic_max_len, task_seed);
      } catch (const std::bad_alloc&) {
        ATTN_FAIL("out of memory generating ", key, " = ", n, " synthetic pairs of up to ",
                  d.synthetic_max_len, " tokens (data.synthetic_max_len): up to ",
                  format_bytes(8.0 * static_cast<double>(n) *
                               static_cast<double>(d.synthetic_max_len + 3)),
                  " of token ids; lower ", key);
      }
    };
    td.train = make("data.synthetic_train_size", d.synthetic_train_size, seed);
    td.valid = make("data.synthetic_valid_size", d.synthetic_valid_size, seed + 7919);
    td.vocab_size = d.synthetic_vocab;
    log.info("data: synthetic {} task, vocabulary {}", d.synthetic, td.vocab_size);
  } else {
    const fs::path out = cfg.train.output_dir;
    const std::string spm_path = d.spm_model.empty() ? (out / "spm.model").string() : d.spm_model;
    if (checkpoint_spm && !checkpoint_spm->empty()) {
      td.vocab = data::Vocab::from_serialized(*checkpoint_spm);  // the vocabulary trained with
    } else {
      if (!fs::exists(spm_path)) {
        // Check the corpora (existence, equal length, UTF-8) before spending minutes on a
        // vocabulary that could not be used.
        data::read_parallel(d.train_src, d.train_tgt);
        log.info("training a {} SentencePiece model of {} pieces on {} + {}", d.spm_type,
                 d.vocab_size, d.train_src, d.train_tgt);
      }
      td.vocab = data::Vocab::train_or_load({d.train_src, d.train_tgt}, spm_path,
                                            static_cast<int>(d.vocab_size), d.spm_type, seed);
    }
    td.vocab_size = td.vocab.size();
    data::DatasetStats ts, vs;
    td.train = data::load_or_build_cached(d.train_src, d.train_tgt, td.vocab, d.max_len,
                                          (out / "cache" / "train.bin").string(), &ts);
    td.valid = data::load_or_build_cached(d.valid_src, d.valid_tgt, td.vocab, d.max_len,
                                          (out / "cache" / "valid.bin").string(), &vs);
    for (auto [name, s] : {std::pair{"train", &ts}, {"valid", &vs}}) {
      log.info("data {}: {} lines, {} kept, {} skipped (empty), {} skipped (> {} tokens){}", name,
               s->lines, s->kept, s->skipped_empty, s->skipped_too_long, d.max_len,
               s->from_cache ? " [cache]" : "");
    }
    ATTN_CHECK(!td.train.empty(), "no training pairs left in ", d.train_src, " / ", d.train_tgt,
               " after skipping empty and over-long lines (data.max_len = ", d.max_len, ")");
  }
  data::BatcherOptions bo;
  bo.max_tokens = d.max_tokens;
  bo.shuffle = true;
  bo.seed = seed;
  bo.rank = rank;
  bo.world = world;
  td.batcher = std::make_unique<data::Batcher>(td.train, bo);
  td.valid_batches = data::make_eval_batches(td.valid, d.max_tokens);
  return td;
}

}  // namespace attn::train
