#include "data/spm_model_check.h"

#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "base/error.h"

namespace attn::data {
namespace {

// Protobuf wire format, just enough to find length-delimited fields (message and bytes).
class WireReader {
 public:
  explicit WireReader(std::string_view bytes) : rest_(bytes) {}

  struct Field {
    uint32_t number;
    std::string_view bytes;  // set for length-delimited fields
  };
  // The next field, or nothing at the end or on malformed input (ok() tells which).
  std::optional<Field> next() {
    while (!rest_.empty()) {
      const auto key = varint();
      if (!key) return fail();
      const uint32_t number = static_cast<uint32_t>(*key >> 3);
      switch (*key & 7) {
        case 0:
          if (!varint()) return fail();
          break;
        case 1:
          if (!skip(8)) return fail();
          break;
        case 5:
          if (!skip(4)) return fail();
          break;
        case 2: {
          const auto len = varint();
          if (!len || *len > rest_.size()) return fail();
          const std::string_view value = rest_.substr(0, *len);
          rest_.remove_prefix(*len);
          return Field{number, value};
        }
        case 3:  // a group: skipped with everything in it up to its end marker
          if (!skip_group(number)) return fail();
          break;
        default:
          return fail();
      }
    }
    return std::nullopt;
  }
  bool ok() const { return ok_; }

 private:
  std::optional<uint64_t> varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && !rest_.empty(); shift += 7) {
      const auto b = static_cast<unsigned char>(rest_.front());
      rest_.remove_prefix(1);
      v |= uint64_t{b & 0x7Fu} << shift;
      if (!(b & 0x80)) return v;
    }
    return std::nullopt;
  }
  bool skip(size_t n) {
    if (rest_.size() < n) return false;
    rest_.remove_prefix(n);
    return true;
  }
  bool skip_group(uint32_t number) {
    for (int depth = 1; depth > 0;) {
      const auto key = varint();
      if (!key) return false;
      switch (*key & 7) {
        case 0:
          if (!varint()) return false;
          break;
        case 1:
          if (!skip(8)) return false;
          break;
        case 5:
          if (!skip(4)) return false;
          break;
        case 2: {
          const auto len = varint();
          if (!len || !skip(*len)) return false;
          break;
        }
        case 3:
          ++depth;
          break;
        case 4:
          --depth;
          if (depth == 0 && (*key >> 3) != number) return false;
          break;
        default:
          return false;
      }
    }
    return true;
  }
  std::nullopt_t fail() {
    ok_ = false;
    rest_ = {};
    return std::nullopt;
  }

  std::string_view rest_;
  bool ok_ = true;
};

// darts-clone's unit layout (darts.h, DoubleArrayUnit).
uint32_t unit_offset(uint32_t u) {
  return (u >> 10) << ((u & (1u << 9)) >> 6);
}
uint32_t unit_label(uint32_t u) {
  return u & ((1u << 31) | 0xFFu);
}
bool unit_has_leaf(uint32_t u) {
  return (u >> 8) & 1;
}
uint32_t unit_value(uint32_t u) {
  return u & ((1u << 31) - 1);
}

// The blob SentencePiece's Normalizer::DecodePrecompiledCharsMap splits: a little-endian
// uint32 trie size in bytes, the trie (uint32 units), then NUL-terminated replacement
// strings. Follows every path commonPrefixSearch can take and checks each read.
void check_charsmap(std::string_view blob, const std::string& where) {
  uint32_t trie_bytes = 0;
  if (blob.size() <= 4) return;  // SentencePiece refuses these itself
  std::memcpy(&trie_bytes, blob.data(), 4);
  if (trie_bytes >= blob.size()) return;  // likewise
  blob.remove_prefix(4);
  // SentencePiece compares the size with the blob before removing the 4 bytes of the size
  // itself, so a trie up to 3 bytes too long gets past it (found by fuzz_spm).
  ATTN_CHECK(trie_bytes <= blob.size(), where,
             ": its normalization table is damaged (the trie is longer than the table)");
  const size_t n = trie_bytes / 4;
  std::vector<uint32_t> units(n);
  if (n > 0) std::memcpy(units.data(), blob.data(), n * 4);
  const std::string_view strings = blob.substr(trie_bytes);
  ATTN_CHECK(n > 0, where, ": its normalization table is damaged (an empty trie)");

  // Search positions ("bases") reached from the root; each reads units base ^ c for every
  // byte c, so base | 0xFF must be inside the array.
  std::vector<bool> seen(n, false);
  std::vector<uint32_t> todo = {unit_offset(units[0])};
  while (!todo.empty()) {
    const uint32_t base = todo.back();
    todo.pop_back();
    ATTN_CHECK((base | 0xFFu) < n, where,
               ": its normalization table is damaged (a trie link leads outside the table)");
    if (seen[base]) continue;
    seen[base] = true;
    for (uint32_t c = 0; c < 256; ++c) {
      const uint32_t pos = base ^ c;
      const uint32_t u = units[pos];
      if (unit_label(u) != c) continue;
      const uint32_t child = pos ^ unit_offset(u);
      ATTN_CHECK((child | 0xFFu) < n, where,
                 ": its normalization table is damaged (a trie link leads outside the table)");
      if (unit_has_leaf(u)) {
        const uint32_t value = unit_value(units[child]);
        ATTN_CHECK(value < strings.size() && strings.find('\0', value) != std::string_view::npos,
                   where, ": its normalization table is damaged (a replacement string lies ",
                   "outside the table)");
      }
      todo.push_back(child);
    }
  }
}

}  // namespace

void check_spm_normalizers(std::string_view model_proto, const std::string& origin) {
  // ModelProto: 3 = normalizer_spec, 5 = denormalizer_spec; NormalizerSpec: 2 =
  // precompiled_charsmap. Repeated occurrences of a message merge, so for each spec the last
  // charsmap in the file is the one used.
  for (const uint32_t spec : {3u, 5u}) {
    std::optional<std::string_view> charsmap;
    WireReader model(model_proto);
    while (const auto f = model.next()) {
      if (f->number != spec) continue;
      WireReader fields(f->bytes);
      while (const auto g = fields.next())
        if (g->number == 2) charsmap = g->bytes;
      if (!fields.ok()) return;  // not a ModelProto: SentencePiece refuses it
    }
    if (!model.ok()) return;
    if (charsmap && !charsmap->empty()) check_charsmap(*charsmap, "SentencePiece model " + origin);
  }
}

}  // namespace attn::data
