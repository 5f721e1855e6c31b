#include "data/vocab.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <type_traits>
#include <unordered_map>

#include "base/error.h"
#include "core/file.h"
#include "data/corpus.h"
#include "data/hash.h"
#include "data/spm_model_check.h"

namespace attn::data {

namespace fs = std::filesystem;

static_assert(std::is_same_v<int, int32_t>, "SentencePiece ids are int; we store int32_t");

namespace {

// Feeds SentencePiece our own reading of the files: the same UTF-8 checks and line rules
// as the corpus reader, and no comma-separated file list (paths may contain commas).
// Errors are kept and reported by train() rather than thrown through SentencePiece.
class FileLineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit FileLineIterator(const std::vector<std::string>& files) : files_(files) { advance(); }

  bool done() const override { return done_; }
  void Next() override { advance(); }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override {
    if (error_.empty()) return sentencepiece::util::Status();
    return sentencepiece::util::Status(sentencepiece::util::StatusCode::kInternal, error_);
  }
  const std::string& error() const { return error_; }
  // Whether any line read so far had a character other than spaces and tabs.
  bool saw_text() const { return saw_text_; }

 private:
  void advance() {
    while (!done_) {
      if (!in_.is_open()) {
        if (file_index_ >= files_.size()) {
          done_ = true;
          return;
        }
        path_ = files_[file_index_++];
        line_no_ = 0;
        in_.open(path_, std::ios::binary);
        if (!in_) {
          fail(detail::str_cat("cannot open vocabulary training file '", path_,
                               "': ", std::strerror(errno)));
          return;
        }
      }
      if (std::getline(in_, line_)) {
        ++line_no_;
        if (!line_.empty() && line_.back() == '\r') line_.pop_back();
        if (line_no_ == 1 && line_.compare(0, 3, "\xEF\xBB\xBF") == 0) line_.erase(0, 3);
        try {
          check_utf8_line(line_, path_, line_no_);
        } catch (const Error& e) {
          fail(e.what());
        }
        saw_text_ = saw_text_ || line_.find_first_not_of(" \t\f\v") != std::string::npos;
        return;
      }
      if (in_.bad()) {
        fail(detail::str_cat("cannot read vocabulary training file '", path_, "'"));
        return;
      }
      in_.close();
    }
  }

  void fail(std::string message) {
    error_ = std::move(message);
    done_ = true;
  }

  std::vector<std::string> files_;
  size_t file_index_ = 0;
  std::ifstream in_;
  std::string path_;
  int64_t line_no_ = 0;
  std::string line_;
  std::string error_;
  bool done_ = false;
  bool saw_text_ = false;
};

void write_file_atomically(const std::string& path, const std::string& bytes) {
  const fs::path target(path);
  if (target.has_parent_path()) {
    std::error_code dir_ec;
    fs::create_directories(target.parent_path(), dir_ec);
    ATTN_CHECK(!dir_ec, "cannot create directory '", target.parent_path().string(),
               "' for SentencePiece model '", path, "': ", dir_ec.message());
  }
  // Atomic: concurrent writers (several ranks) each write their own temporary file.
  write_file(path, bytes, "SentencePiece model");
}

const sentencepiece::SentencePieceProcessor& processor(
    const std::shared_ptr<const sentencepiece::SentencePieceProcessor>& sp) {
  ATTN_CHECK(sp != nullptr, "Vocab: no SentencePiece model loaded");
  return *sp;
}

// A processor for the model proto `bytes`. SentencePiece reports most damage as a status but
// throws for some (Darts::Details::Exception, e.g. "zero-length key" for a model with an
// empty piece, found by fuzz/fuzz_spm.cc), and some it does not notice at all
// (spm_model_check.h); all become attn::Error naming `origin`.
std::shared_ptr<sentencepiece::SentencePieceProcessor> load_processor(const std::string& bytes,
                                                                      const std::string& origin) {
  check_spm_normalizers(bytes, origin);
  auto sp = std::make_shared<sentencepiece::SentencePieceProcessor>();
  sentencepiece::util::Status status;
  try {
    status = sp->LoadFromSerializedProto(bytes);
  } catch (const std::exception& e) {
    ATTN_FAIL("cannot load SentencePiece model ", origin, ": ", e.what());
  }
  ATTN_CHECK(status.ok(), "cannot load SentencePiece model ", origin, ": ", status.ToString());
  return sp;
}

}  // namespace

Vocab Vocab::checked(std::shared_ptr<sentencepiece::SentencePieceProcessor> sp,
                     const std::string& origin) {
  ATTN_CHECK(sp->pad_id() >= 0 && sp->bos_id() >= 0 && sp->eos_id() >= 0, "SentencePiece model ",
             origin,
             " needs pad, bos and eos pieces (train with --pad_id=0 --unk_id=1 "
             "--bos_id=2 --eos_id=3), it has pad_id=",
             sp->pad_id(), " bos_id=", sp->bos_id(), " eos_id=", sp->eos_id());
  Vocab v;
  v.fingerprint_ = hash64(sp->serialized_model_proto());
  v.sp_ = std::move(sp);
  return v;
}

Vocab Vocab::load(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    ATTN_FAIL("cannot open SentencePiece model '", path, "': No such file or directory");
  }
  const std::string origin = "'" + path + "'";
  return checked(load_processor(read_file_bytes(path, "SentencePiece model"), origin), origin);
}

Vocab Vocab::from_serialized(const std::string& bytes) {
  const std::string origin = "(serialized, " + std::to_string(bytes.size()) + " bytes)";
  return checked(load_processor(bytes, origin), origin);
}

Vocab Vocab::train(const std::vector<std::string>& files, const std::string& model_path,
                   int vocab_size, const std::string& model_type, uint64_t seed,
                   int64_t max_sentences) {
  ATTN_CHECK(!files.empty(), "Vocab::train: no training files given");
  ATTN_CHECK(model_type == "bpe" || model_type == "unigram", "Vocab::train: model_type must be ",
             "'bpe' or 'unigram', got '", model_type, "'");
  ATTN_CHECK(vocab_size > 4, "Vocab::train: vocab_size must be > 4 (4 special pieces), got ",
             vocab_size);
  ATTN_CHECK(max_sentences >= 0, "Vocab::train: max_sentences must be >= 0, got ", max_sentences);

  // Why each setting:
  // - fixed special ids, so every model agrees with kPadId..kEosId;
  // - hard_vocab_limit=false, so a tiny corpus yields a smaller vocabulary, not an error;
  // - character_coverage=1.0: MT corpora are mostly alphabetic, keep every character;
  // - a fixed num_threads: the unigram E-step sums per-thread partial sums, so the thread
  //   count (not the machine) must be fixed for the float results and the model to be
  //   identical everywhere;
  // - input_sentence_size=0 reads every line (no sampling); when sampling, SentencePiece's
  //   reservoir sampler uses a fixed internal seed, so that is deterministic too.
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", model_type},
      {"vocab_size", std::to_string(vocab_size)},
      {"pad_id", std::to_string(kPadId)},
      {"unk_id", std::to_string(kUnkId)},
      {"bos_id", std::to_string(kBosId)},
      {"eos_id", std::to_string(kEosId)},
      {"hard_vocab_limit", "false"},
      {"character_coverage", "1.0"},
      {"num_threads", "4"},
      {"input_sentence_size", std::to_string(max_sentences)},
      {"shuffle_input_sentence", "true"},
      {"minloglevel", "1"},
  };
  // SentencePiece's trainer draws no random numbers with these settings; the seed is set
  // anyway so that nothing it does can depend on std::random_device. The global it sets is
  // shared, hence the lock.
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  // (All ones means "unseeded" to SentencePiece.)
  auto sp_seed = static_cast<unsigned int>(seed);
  if (sp_seed == ~0u) sp_seed = 0;
  sentencepiece::SetRandomGeneratorSeed(sp_seed);

  FileLineIterator lines(files);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &lines, &model);
  if (!lines.error().empty()) ATTN_FAIL(lines.error());
  if (!lines.saw_text()) {
    std::string names;
    for (const std::string& f : files) names += (names.empty() ? "'" : ", '") + f + "'";
    ATTN_FAIL("cannot train the SentencePiece model '", model_path, "': ", names,
              files.size() > 1 ? " contain" : " contains",
              " no text (every line is empty or blank)");
  }
  ATTN_CHECK(status.ok(), "SentencePiece training for '", model_path,
             "' failed: ", status.ToString());
  write_file_atomically(model_path, model);
  return from_serialized(model);
}

Vocab Vocab::train_or_load(const std::vector<std::string>& files, const std::string& model_path,
                           int vocab_size, const std::string& model_type, uint64_t seed,
                           int64_t max_sentences) {
  std::error_code ec;
  if (fs::exists(model_path, ec)) return load(model_path);
  return train(files, model_path, vocab_size, model_type, seed, max_sentences);
}

std::vector<int32_t> Vocab::encode(const std::string& text) const {
  std::vector<int32_t> ids;
  const auto status = processor(sp_).Encode(text, &ids);
  ATTN_CHECK(status.ok(), "Vocab::encode failed: ", status.ToString());
  return ids;
}

std::string Vocab::decode(const std::vector<int32_t>& ids) const {
  const auto& sp = processor(sp_);
  const int32_t n = sp.GetPieceSize();
  for (size_t i = 0; i < ids.size(); ++i) {
    ATTN_CHECK(ids[i] >= 0 && ids[i] < n, "Vocab::decode: id ", ids[i], " at position ", i,
               " is outside the vocabulary [0, ", n, ")");
  }
  std::string text;
  const auto status = sp.Decode(ids, &text);
  ATTN_CHECK(status.ok(), "Vocab::decode failed: ", status.ToString());
  return text;
}

std::string Vocab::piece(int32_t id) const {
  const auto& sp = processor(sp_);
  ATTN_CHECK(id >= 0 && id < sp.GetPieceSize(), "Vocab::piece: id ", id,
             " is outside the vocabulary [0, ", sp.GetPieceSize(), ")");
  return sp.IdToPiece(id);
}

int32_t Vocab::size() const {
  return processor(sp_).GetPieceSize();
}
int32_t Vocab::pad_id() const {
  return processor(sp_).pad_id();
}
int32_t Vocab::unk_id() const {
  return processor(sp_).unk_id();
}
int32_t Vocab::bos_id() const {
  return processor(sp_).bos_id();
}
int32_t Vocab::eos_id() const {
  return processor(sp_).eos_id();
}

std::string Vocab::serialized() const {
  return processor(sp_).serialized_model_proto();
}

uint64_t Vocab::fingerprint() const {
  processor(sp_);
  return fingerprint_;
}

std::string detokenize(const Vocab& vocab, std::span<const int32_t> ids) {
  if (vocab.loaded()) return vocab.decode(std::vector<int32_t>(ids.begin(), ids.end()));
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  return s;
}

}  // namespace attn::data
