// SentencePiece model loading (data::Vocab::from_serialized, which Vocab::load and checkpoint
// loading share), then what attn does with a loaded model: encode text, decode the ids and
// every piece id, read each piece. SentencePiece itself is Debian's uninstrumented library,
// so coverage guides only through attn's side; the seeds are small real models.
#include "data/vocab.h"
#include "fuzz.h"

namespace attn::fuzz {

void fuzz_one(std::string_view data) {
  const data::Vocab vocab = data::Vocab::from_serialized(std::string(data));
  const int32_t n = vocab.size();
  require(n > 0, "a loaded vocabulary has ", n, " pieces");
  for (const char* text : {"Hello, world!", "Grüße aus Köln — 東京 🙂", "", "  a  b  "}) {
    const std::vector<int32_t> ids = vocab.encode(text);
    for (int32_t id : ids) require(id >= 0 && id < n, "encode gave id ", id, " of ", n);
    vocab.decode(ids);
  }
  std::vector<int32_t> all;
  for (int32_t id = 0; id < n && id < 4096; ++id) {
    vocab.piece(id);
    all.push_back(id);
  }
  vocab.decode(all);
}

}  // namespace attn::fuzz
