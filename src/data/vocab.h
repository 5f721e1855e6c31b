// The joint source/target subword vocabulary: one SentencePiece model, so that shared
// (tied) embeddings see the same id for the same piece on both sides. Special ids are fixed
// when training: pad = 0, unk = 1, bos = 2, eos = 3 (the synthetic tasks rely on them).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace attn::data {

inline constexpr int32_t kPadId = 0;
inline constexpr int32_t kUnkId = 1;
inline constexpr int32_t kBosId = 2;
inline constexpr int32_t kEosId = 3;

// Copies share the (immutable, thread-safe) processor.
class Vocab {
 public:
  // An empty vocabulary (loaded() is false); every other method needs a loaded one.
  Vocab() = default;
  bool loaded() const { return sp_ != nullptr; }

  // Loads a SentencePiece model file; the error names the path when it is missing or corrupt,
  // or when it lacks a pad, bos or eos id.
  static Vocab load(const std::string& path);
  // A model from its serialized ModelProto bytes (as returned by serialized()).
  static Vocab from_serialized(const std::string& bytes);

  // Trains one joint model on all lines of `files` (UTF-8 checked; every file usually the
  // source and target training text) and writes it atomically to `model_path`, creating its
  // parent directories. model_type is "bpe" or "unigram". The vocabulary size is a soft limit
  // (a tiny corpus gets fewer pieces instead of an error). Training is deterministic: the
  // same files and arguments give the same model. max_sentences > 0 trains on a sample of
  // that many lines (SentencePiece's reservoir sampler, which has a fixed seed).
  static Vocab train(const std::vector<std::string>& files, const std::string& model_path,
                     int vocab_size, const std::string& model_type = "unigram", uint64_t seed = 1,
                     int64_t max_sentences = 0);
  // load(model_path) if the file exists, else train(...).
  static Vocab train_or_load(const std::vector<std::string>& files, const std::string& model_path,
                             int vocab_size, const std::string& model_type = "unigram",
                             uint64_t seed = 1, int64_t max_sentences = 0);

  // Subword ids of one sentence, without bos/eos.
  std::vector<int32_t> encode(const std::string& text) const;
  // Text of ids; pad/bos/eos (control symbols) decode to nothing.
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string piece(int32_t id) const;

  int32_t size() const;
  int32_t pad_id() const;
  int32_t unk_id() const;
  int32_t bos_id() const;
  int32_t eos_id() const;

  // The model proto bytes, to store in checkpoints; from_serialized() reverses it.
  std::string serialized() const;
  // hash64 of serialized(): identifies the vocabulary in cache fingerprints.
  uint64_t fingerprint() const;

 private:
  static Vocab checked(std::shared_ptr<sentencepiece::SentencePieceProcessor> sp,
                       const std::string& origin);

  std::shared_ptr<const sentencepiece::SentencePieceProcessor> sp_;
  uint64_t fingerprint_ = 0;
};

// Text for ids: SentencePiece decoding when `vocab` is loaded, else the ids joined by spaces
// (synthetic-task models, whose "text" is ids).
std::string detokenize(const Vocab& vocab, std::span<const int32_t> ids);

}  // namespace attn::data
