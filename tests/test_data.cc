// Data pipeline: UTF-8 checks and corpus reading, the SentencePiece vocabulary, dataset
// filtering and the binarized cache, synthetic tasks, and the token-bucketed batcher.
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "base/error.h"
#include "data/batcher.h"
#include "data/corpus.h"
#include "data/dataset.h"
#include "data/hash.h"
#include "data/synthetic.h"
#include "data/utf8.h"
#include "data/vocab.h"

using namespace attn;
using namespace attn::data;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

// One directory per test process, removed when the process exits.
struct TempDir {
  fs::path path = fs::temp_directory_path() / ("attn_test_data_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

fs::path temp_dir() {
  static TempDir dir;
  return dir.path;
}

std::string write_file(const std::string& name, const std::string& content) {
  const fs::path p = temp_dir() / name;
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << content;
  return p.string();
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

// A deterministic pseudo-language: words from a few syllables, a couple of hundred lines.
std::vector<std::string> make_sentences(int n, uint32_t seed) {
  static const char* syllables[] = {"ka",  "lo",  "mi", "ten", "ra",  "sul", "bo",  "ne",
                                    "que", "dor", "vi", "an",  "tes", "zu",  "pel", "gri"};
  uint64_t state = seed;
  auto rnd = [&](uint64_t range) { return (state = mix64(state)) % range; };
  std::vector<std::string> lines;
  for (int i = 0; i < n; ++i) {
    std::string line;
    const int words = 3 + static_cast<int>(rnd(9));
    for (int w = 0; w < words; ++w) {
      if (w) line += ' ';
      const int syl = 1 + static_cast<int>(rnd(3));
      for (int s = 0; s < syl; ++s) line += syllables[rnd(16)];
    }
    lines.push_back(line);
  }
  return lines;
}

struct VocabFixture {
  std::string src_path, tgt_path, model_path;
  Vocab vocab;
};

// Trained once per process; several test cases use it.
const VocabFixture& shared_vocab() {
  static VocabFixture f = [] {
    VocabFixture v;
    v.src_path = write_file("spm/train.src", join_lines(make_sentences(300, 1)));
    v.tgt_path = write_file("spm/train.tgt", join_lines(make_sentences(300, 2)));
    v.model_path = (temp_dir() / "spm/model/spm.model").string();
    v.vocab = Vocab::train({v.src_path, v.tgt_path}, v.model_path, 120, "unigram");
    return v;
  }();
  return f;
}

std::string utf8_error_of(const std::string& line) {
  const std::string path = write_file("utf8_case.txt", "fine line\n" + line + "\nlast\n");
  try {
    read_lines(path, "source corpus");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// ---- UTF-8 and corpus reading ----------------------------------------------------------

TEST_CASE("UTF-8 validator accepts valid text and rejects each invalid class", "[data]") {
  CHECK(is_valid_utf8(""));
  CHECK(is_valid_utf8("plain ASCII, long enough to take the 8-byte fast path"));
  CHECK(is_valid_utf8("Grüße, Straße — «ça va?» 日本語 한국어 Ελληνικά 😀 \xF4\x8F\xBF\xBF"));
  CHECK(is_valid_utf8("\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80\xF0\x90\x80\x80"));

  struct Case {
    std::string text;
    size_t offset;
    const char* reason;
  };
  const std::vector<Case> cases = {
      {"ab\xC0\xAF", 2, "overlong"},  // '/' as two bytes
      {"ab\xC1\xBF", 2, "overlong"},
      {"\xE0\x80\xAF", 0, "overlong"},              // three-byte overlong
      {"x\xF0\x80\x80\xAF", 1, "overlong"},         // four-byte overlong
      {"\xED\xA0\x80", 0, "surrogate"},             // U+D800
      {"abcdefghij\xED\xBF\xBF", 10, "surrogate"},  // U+DFFF, after the fast path
      {"\xF4\x90\x80\x80", 0, "above U+10FFFF"},    // U+110000
      {"\xF5\x80\x80\x80", 0, "above U+10FFFF"},
      {"\xFF", 0, "invalid byte"},
      {"ab\xC3", 2, "truncated"},      // end of text inside a sequence
      {"\xE2\x82 x", 0, "truncated"},  // a sequence cut short by ASCII
      {"\xF0\x9F\x98", 0, "truncated"},
      {"a\x80", 1, "continuation"},  // stray continuation byte
      {"\xC3\xA9\xA9", 2, "continuation"},
  };
  for (const Case& c : cases) {
    INFO("case with offset " << c.offset << ", expected " << c.reason);
    const auto err = find_invalid_utf8(c.text);
    REQUIRE(err.has_value());
    CHECK(err->offset == c.offset);
    CHECK_THAT(err->reason, Contains(c.reason));
  }
}

TEST_CASE("invalid UTF-8 errors name the file, line and byte", "[data]") {
  const std::string msg = utf8_error_of("caf\xC3 ok");
  CHECK_THAT(msg, Contains("invalid UTF-8 in '") && Contains("utf8_case.txt' line 2, byte 4") &&
                      Contains("truncated"));
  CHECK_THAT(utf8_error_of("ab\xED\xA0\x80"), Contains("line 2, byte 3 (surrogate"));
  CHECK_THAT(utf8_error_of("\xC0\x80"), Contains("line 2, byte 1 (overlong"));
  CHECK_THAT(utf8_error_of("\xF4\x90\x80\x80"), Contains("line 2, byte 1 (code point above"));
  CHECK_THAT(utf8_error_of("\x80"), Contains("line 2, byte 1 (unexpected continuation"));
  CHECK(utf8_error_of("ünïcödé") == "");
}

TEST_CASE("corpus reading strips CR and BOM, keeps empty lines", "[data]") {
  const std::string p = write_file("crlf.txt", "\xEF\xBB\xBFone\r\n\r\nthree\rx\nfour");
  const auto lines = read_lines(p);
  REQUIRE(lines.size() == 4);
  CHECK(lines[0] == "one");
  CHECK(lines[1] == "");
  CHECK(lines[2] == "three\rx");  // only a trailing CR is a line ending
  CHECK(lines[3] == "four");
  CHECK(read_lines(write_file("empty.txt", "")).empty());
}

TEST_CASE("parallel corpus errors: missing file and unequal line counts", "[data]") {
  const std::string a = write_file("par/a.txt", join_lines(std::vector<std::string>(10, "x")));
  const std::string b = write_file("par/b.txt", join_lines(std::vector<std::string>(9, "y")));
  const std::string missing = (temp_dir() / "par/missing.txt").string();
  CHECK_THROWS_WITH(read_parallel(missing, b),
                    "cannot open source corpus '" + missing + "': No such file or directory");
  CHECK_THROWS_WITH(read_parallel(a, missing),
                    "cannot open target corpus '" + missing + "': No such file or directory");
  CHECK_THROWS_WITH(read_parallel(a, b),
                    "corpora differ in length: '" + a + "' has 10 lines, '" + b + "' has 9");
  const ParallelText ok = read_parallel(a, a);
  CHECK(ok.src.size() == 10);
  CHECK(ok.tgt.size() == 10);
}

// ---- vocabulary ------------------------------------------------------------------------

TEST_CASE("SentencePiece vocabulary: ids, round trips, determinism", "[data]") {
  const VocabFixture& f = shared_vocab();
  const Vocab& v = f.vocab;
  CHECK(fs::exists(f.model_path));
  CHECK(v.pad_id() == 0);
  CHECK(v.unk_id() == 1);
  CHECK(v.bos_id() == 2);
  CHECK(v.eos_id() == 3);
  CHECK(v.size() > 20);
  CHECK(v.size() <= 120);

  const std::string text = "kalo miten rasul bone quedor";
  const auto ids = v.encode(text);
  REQUIRE(!ids.empty());
  for (int32_t id : ids) CHECK((id > 3 && id < v.size()));
  CHECK(v.decode(ids) == text);
  std::vector<int32_t> with_specials = ids;
  with_specials.insert(with_specials.begin(), v.bos_id());
  with_specials.push_back(v.eos_id());
  with_specials.push_back(v.pad_id());
  CHECK(v.decode(with_specials) == text);
  CHECK(v.encode("").empty());
  CHECK_THROWS_WITH(v.decode({v.size()}), Contains("outside the vocabulary"));

  // Serialized bytes reproduce the model; load() reads the file train() wrote.
  const Vocab copy = Vocab::from_serialized(v.serialized());
  CHECK(copy.encode(text) == ids);
  CHECK(copy.serialized() == v.serialized());
  CHECK(copy.fingerprint() == v.fingerprint());
  const Vocab loaded = Vocab::load(f.model_path);
  CHECK(loaded.serialized() == v.serialized());

  // Training again on the same input gives the identical model.
  const std::string model2 = (temp_dir() / "spm/model2.model").string();
  const Vocab again = Vocab::train({f.src_path, f.tgt_path}, model2, 120, "unigram");
  CHECK(again.serialized() == v.serialized());
  for (const auto& line : make_sentences(20, 9)) CHECK(again.encode(line) == v.encode(line));

  // train_or_load loads an existing file rather than training a different model.
  const Vocab existing = Vocab::train_or_load({f.src_path}, model2, 60, "bpe");
  CHECK(existing.serialized() == v.serialized());
}

TEST_CASE("BPE vocabulary trains deterministically on a tiny corpus", "[data]") {
  const VocabFixture& f = shared_vocab();
  const std::string m1 = (temp_dir() / "spm/bpe1.model").string();
  const std::string m2 = (temp_dir() / "spm/bpe2.model").string();
  // More pieces than the corpus supports: a soft limit, not an error.
  const Vocab a = Vocab::train({f.src_path, f.tgt_path}, m1, 2000, "bpe");
  const Vocab b = Vocab::train({f.src_path, f.tgt_path}, m2, 2000, "bpe");
  CHECK(a.serialized() == b.serialized());
  CHECK(a.bos_id() == 2);
  CHECK(a.eos_id() == 3);
  const std::string text = "tesvi zupel grian";
  CHECK(a.decode(a.encode(text)) == text);
}

TEST_CASE("vocabulary errors name the path", "[data]") {
  const std::string missing = (temp_dir() / "nope.model").string();
  CHECK_THROWS_WITH(Vocab::load(missing), Contains(missing) && Contains("No such file"));
  const std::string junk = write_file("junk.model", "this is not a protobuf");
  CHECK_THROWS_WITH(Vocab::load(junk), Contains("cannot load SentencePiece model '" + junk));
  CHECK_THROWS_AS(Vocab::from_serialized("garbage"), Error);
  // A model with an empty piece, on which SentencePiece throws its own exception type
  // (found by fuzz/fuzz_spm.cc): an attn::Error naming the model like any other damage.
  const std::string empty_piece = ATTN_SOURCE_DIR "/fuzz/corpus/spm/empty_piece.model";
  CHECK_THROWS_WITH(Vocab::load(empty_piece),
                    Contains("cannot load SentencePiece model '" + empty_piece) &&
                        Contains("zero-length key"));
  CHECK_THROWS_WITH(Vocab::from_serialized(data::read_file_bytes(empty_piece)),
                    Contains("cannot load SentencePiece model (serialized, 336 bytes)"));
  // A damaged normalization table, which SentencePiece loads and then reads out of bounds on
  // every encode (found by fuzz/fuzz_spm.cc), is refused before SentencePiece sees it.
  const std::string charsmap = ATTN_SOURCE_DIR "/fuzz/corpus/spm/damaged_charsmap.model";
  CHECK_THROWS_WITH(Vocab::load(charsmap), Contains("SentencePiece model '" + charsmap +
                                                    "': its normalization table is damaged"));
  const std::string long_trie = ATTN_SOURCE_DIR "/fuzz/corpus/spm/trie_too_long.model";
  CHECK_THROWS_WITH(Vocab::load(long_trie),
                    Contains("its normalization table is damaged (the trie is longer"));
  const std::string bad = write_file("bad_utf8.txt", "ok line\nbad \xFF line\n");
  CHECK_THROWS_WITH(Vocab::train({bad}, (temp_dir() / "x.model").string(), 50),
                    Contains("invalid UTF-8 in '" + bad + "' line 2, byte 5"));
  CHECK_FALSE(fs::exists(temp_dir() / "x.model"));
  CHECK_THROWS_WITH(
      Vocab::train({missing}, (temp_dir() / "x.model").string(), 50),
      "cannot open vocabulary training file '" + missing + "': No such file or directory");
  CHECK_THROWS_WITH(Vocab::train({bad}, "y.model", 50, "word"), Contains("model_type"));
}

// ---- datasets and the cache ------------------------------------------------------------

TEST_CASE("dataset build skips empty and too-long pairs and counts them", "[data]") {
  const Vocab& v = shared_vocab().vocab;
  ParallelText text;
  text.src = {"kalo mi", "", "ten ra", "kalo", "   ", "bo ne"};
  text.tgt = {"sul bo", "ka", "", "ka lo mi ten ra sul bo ne que dor vi an tes zu pel gri",
              "x",      "que"};
  DatasetStats st;
  const Dataset d = build(text, v, 8, &st);
  CHECK(st.lines == 6);
  CHECK(st.skipped_empty == 3);  // empty source, empty target, whitespace-only source
  CHECK(st.skipped_too_long == 1);
  CHECK(st.kept == 2);
  CHECK_FALSE(st.from_cache);
  REQUIRE(d.size() == 2);
  CHECK(d.example(0) == Example{v.encode("kalo mi"), v.encode("sul bo")});
  CHECK(d.example(1) == Example{v.encode("bo ne"), v.encode("que")});
  CHECK(st.src_tokens == d.src_tokens());
  CHECK(st.tgt_tokens == d.tgt_tokens());

  // max_len counts the eos: a side of exactly max_len - 1 tokens is kept.
  const auto n = static_cast<int64_t>(v.encode(text.tgt[3]).size());
  DatasetStats st2;
  build(text, v, n + 1, &st2);
  CHECK(st2.skipped_too_long == 0);
  build(text, v, n, &st2);
  CHECK(st2.skipped_too_long == 1);

  const Dataset src_only = build_source_only(text.src, v);
  CHECK(src_only.size() == 6);
  CHECK(src_only.src_length(1) == 0);
  CHECK(src_only.tgt_length(0) == 0);
}

TEST_CASE("dataset cache: built once, mapped after, rebuilt when stale or damaged", "[data]") {
  const Vocab& v = shared_vocab().vocab;
  const auto src_lines = make_sentences(150, 11), tgt_lines = make_sentences(150, 12);
  const std::string src = write_file("cache/train.src", join_lines(src_lines) + "\n");
  const std::string tgt = write_file("cache/train.tgt", join_lines(tgt_lines) + "\n");
  const std::string cache = (temp_dir() / "cache/bin/train.bin").string();

  DatasetStats st1, st2;
  const Dataset built = load_or_build_cached(src, tgt, v, 12, cache, &st1);
  CHECK_FALSE(st1.from_cache);
  CHECK(fs::exists(cache));
  CHECK(st1.lines == 151);
  CHECK(st1.skipped_empty == 1);
  CHECK(st1.skipped_too_long > 0);
  CHECK(st1.kept == built.size());

  const Dataset mapped = load_or_build_cached(src, tgt, v, 12, cache, &st2);
  CHECK(st2.from_cache);
  CHECK(mapped.memory_mapped());
  CHECK(st2.lines == st1.lines);
  CHECK(st2.skipped_empty == st1.skipped_empty);
  CHECK(st2.skipped_too_long == st1.skipped_too_long);
  REQUIRE(mapped.size() == built.size());
  const Dataset direct = build(read_parallel(src, tgt), v, 12);
  REQUIRE(direct.size() == mapped.size());
  for (int64_t i = 0; i < mapped.size(); ++i) CHECK(mapped.example(i) == direct.example(i));

  // A different max_len or vocabulary is a different dataset.
  DatasetStats st3;
  load_or_build_cached(src, tgt, v, 20, cache, &st3);
  CHECK_FALSE(st3.from_cache);
  load_or_build_cached(src, tgt, v, 20, cache, &st3);
  CHECK(st3.from_cache);

  // Changing one byte of the corpus rebuilds.
  size_t j = 0;  // a pair that max_len keeps
  while (v.encode(src_lines[j]).size() > 10 || v.encode(tgt_lines[j]).size() > 10) ++j;
  auto changed = tgt_lines;
  changed[j][0] = changed[j][0] == 'k' ? 'l' : 'k';
  write_file("cache/train.tgt", join_lines(changed) + "\n");
  DatasetStats st4;
  load_or_build_cached(src, tgt, v, 20, cache, &st4);
  CHECK_FALSE(st4.from_cache);
  // In memory, not mapped: the tests below damage the cache file in place.
  const Dataset rebuilt = build(read_parallel(src, tgt), v, 20);
  const Dataset remapped = load_or_build_cached(src, tgt, v, 20, cache, &st4);
  CHECK(st4.from_cache);
  REQUIRE(remapped.size() == rebuilt.size());
  bool has_changed_line = false;
  for (int64_t i = 0; i < remapped.size(); ++i) {
    CHECK(remapped.example(i) == rebuilt.example(i));
    const auto t = remapped.tgt(i);
    has_changed_line |= std::vector<int32_t>(t.begin(), t.end()) == v.encode(changed[j]);
  }
  CHECK(has_changed_line);

  // A truncated cache is rebuilt, never read.
  const auto full_size = fs::file_size(cache);
  fs::resize_file(cache, full_size - 7);
  DatasetStats st5;
  CHECK(load_or_build_cached(src, tgt, v, 20, cache, &st5).size() == rebuilt.size());
  CHECK_FALSE(st5.from_cache);
  CHECK(fs::file_size(cache) == full_size);
  fs::resize_file(cache, 10);
  load_or_build_cached(src, tgt, v, 20, cache, &st5);
  CHECK_FALSE(st5.from_cache);

  // A flipped byte in the payload is caught by the checksum.
  {
    std::fstream f(cache, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(full_size - 2));
    char c = 0;
    f.seekg(static_cast<std::streamoff>(full_size - 2));
    f.get(c);
    f.seekp(static_cast<std::streamoff>(full_size - 2));
    f.put(static_cast<char>(c ^ 0x40));
  }
  DatasetStats st6;
  const Dataset after_flip = load_or_build_cached(src, tgt, v, 20, cache, &st6);
  CHECK_FALSE(st6.from_cache);
  for (int64_t i = 0; i < after_flip.size(); ++i)
    CHECK(after_flip.example(i) == rebuilt.example(i));
  load_or_build_cached(src, tgt, v, 20, cache, &st6);
  CHECK(st6.from_cache);

  // Not a cache at all.
  write_file("cache/bin/train.bin", std::string(4096, 'z'));
  load_or_build_cached(src, tgt, v, 20, cache, &st6);
  CHECK_FALSE(st6.from_cache);

  // A cache that cannot be written is a warning; the data is still returned.
  const std::string blocker = write_file("cache/blocker", "a file, not a directory");
  DatasetStats st7;
  const Dataset uncached = load_or_build_cached(src, tgt, v, 20, blocker + "/train.bin", &st7);
  CHECK_FALSE(st7.from_cache);
  CHECK_FALSE(uncached.memory_mapped());
  CHECK(uncached.size() == rebuilt.size());

  // Corpus errors still surface.
  CHECK_THROWS_WITH(load_or_build_cached(src + ".missing", tgt, v, 20, cache),
                    Contains("cannot open source corpus"));
}

// ---- synthetic tasks -------------------------------------------------------------------

TEST_CASE("synthetic copy and reverse tasks", "[data]") {
  const Dataset copy = make_synthetic("copy", 200, 20, 2, 9, 42);
  const Dataset rev = make_synthetic("reverse", 200, 20, 2, 9, 42);
  REQUIRE(copy.size() == 200);
  std::set<int64_t> lengths;
  std::set<int32_t> ids;
  for (int64_t i = 0; i < copy.size(); ++i) {
    const Example e = copy.example(i);
    CHECK(e.tgt == e.src);
    lengths.insert(copy.src_length(i));
    for (int32_t id : e.src) ids.insert(id);
    const Example r = rev.example(i);
    CHECK(r.src == e.src);  // same seed, same sources
    std::vector<int32_t> reversed(r.src.rbegin(), r.src.rend());
    CHECK(r.tgt == reversed);
  }
  CHECK(*lengths.begin() == 2);
  CHECK(*lengths.rbegin() == 9);
  CHECK(*ids.begin() == 4);
  CHECK(*ids.rbegin() == 19);

  const Dataset again = make_synthetic("copy", 200, 20, 2, 9, 42);
  const Dataset other = make_synthetic("copy", 200, 20, 2, 9, 43);
  bool differs = false;
  for (int64_t i = 0; i < copy.size(); ++i) {
    CHECK(again.example(i) == copy.example(i));
    differs |= !(other.example(i) == copy.example(i));
  }
  CHECK(differs);
  CHECK_THROWS_WITH(make_synthetic("sort", 1, 20, 1, 2, 0), Contains("task"));
  CHECK_THROWS_WITH(make_synthetic("copy", 1, 4, 1, 2, 0), Contains("vocab_size"));
}

// ---- batching --------------------------------------------------------------------------

namespace {

std::vector<int32_t> row(const Tensor& t, int64_t r) {
  const auto v = t.to_int_vector();
  const int64_t cols = t.size(1);
  return {v.begin() + r * cols, v.begin() + (r + 1) * cols};
}

bool same_batch(const Batch& a, const Batch& b) {
  return a.indices == b.indices && a.src.to_int_vector() == b.src.to_int_vector() &&
         a.src.shape() == b.src.shape() && a.tgt_in.to_int_vector() == b.tgt_in.to_int_vector() &&
         a.tgt_out.to_int_vector() == b.tgt_out.to_int_vector() &&
         a.src_lengths.to_int_vector() == b.src_lengths.to_int_vector() &&
         a.tgt_in.shape() == b.tgt_in.shape();
}

// Mixed lengths from 1 to 30 (synthetic "reverse" has equal sides, so vary the target too).
Dataset mixed_dataset(int64_t n) {
  const Dataset base = make_synthetic("reverse", n, 50, 1, 30, 5);
  DatasetBuilder b;
  for (int64_t i = 0; i < n; ++i) {
    Example e = base.example(i);
    e.tgt.resize(1 + static_cast<size_t>((i * 7) % 25));
    std::fill(e.tgt.begin(), e.tgt.end(), 4 + static_cast<int32_t>(i % 40));
    b.add(e.src, e.tgt);
  }
  return b.finish();
}

}  // namespace

TEST_CASE("collate: teacher-forcing layout and padding", "[data]") {
  const Dataset d = Dataset::from_examples({{{10, 11, 12}, {20, 21}}, {{13}, {22, 23, 24, 25}}});
  BatcherOptions opt;
  opt.pad_id = 0;
  opt.bos_id = 2;
  opt.eos_id = 3;
  const std::vector<int64_t> idx = {1, 0};
  const Batch b = collate(d, idx, opt);
  CHECK(b.size == 2);
  CHECK(b.indices == idx);
  CHECK(b.src.shape() == Shape{2, 4});
  CHECK(b.tgt_in.shape() == Shape{2, 5});
  CHECK(b.tgt_out.shape() == Shape{2, 5});
  CHECK(b.src.dtype() == kI32);
  CHECK(row(b.src, 0) == std::vector<int32_t>{13, 3, 0, 0});
  CHECK(row(b.src, 1) == std::vector<int32_t>{10, 11, 12, 3});
  CHECK(b.src_lengths.to_int_vector() == std::vector<int32_t>{2, 4});
  CHECK(row(b.tgt_in, 0) == std::vector<int32_t>{2, 22, 23, 24, 25});
  CHECK(row(b.tgt_out, 0) == std::vector<int32_t>{22, 23, 24, 25, 3});
  CHECK(row(b.tgt_in, 1) == std::vector<int32_t>{2, 20, 21, 0, 0});
  CHECK(row(b.tgt_out, 1) == std::vector<int32_t>{20, 21, 3, 0, 0});
  CHECK(b.src_tokens == 6);
  CHECK(b.tgt_tokens == 8);

  opt.src_eos = false;
  const Batch c = collate(d, idx, opt);
  CHECK(row(c.src, 0) == std::vector<int32_t>{13, 0, 0});
  CHECK(c.src_lengths.to_int_vector() == std::vector<int32_t>{1, 3});
}

TEST_CASE("batcher: token budget, coverage, shuffling and determinism", "[data]") {
  const Dataset d = mixed_dataset(500);
  BatcherOptions opt;
  opt.max_tokens = 120;
  opt.seed = 7;
  Batcher batcher(d, opt);
  const int64_t nb = batcher.batches_per_epoch();
  REQUIRE(nb > 10);

  std::vector<std::vector<int64_t>> epochs;
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::vector<int64_t> seen;
    for (int64_t k = 0; k < nb; ++k) {
      const Batch b = batcher.next();
      CHECK(batcher.epoch() == epoch);
      const int64_t S = b.src.size(1), T = b.tgt_in.size(1);
      CHECK(b.size * std::max(S, T) <= opt.max_tokens);
      CHECK(b.src.size(0) == b.size);
      int64_t tgt_tokens = 0;
      for (int64_t r = 0; r < b.size; ++r) {
        const int64_t i = b.indices[static_cast<size_t>(r)];
        // Rows carry their own example; padding only after the end.
        const auto out = row(b.tgt_out, r), in = row(b.tgt_in, r);
        const auto y = d.tgt(i);
        CHECK(std::equal(y.begin(), y.end(), out.begin()));
        CHECK(out[y.size()] == opt.eos_id);
        CHECK(in[0] == opt.bos_id);
        CHECK(std::equal(y.begin(), y.end(), in.begin() + 1));
        CHECK(std::all_of(out.begin() + static_cast<int64_t>(y.size()) + 1, out.end(),
                          [](int32_t v) { return v == 0; }));
        tgt_tokens += static_cast<int64_t>(y.size()) + 1;
        seen.push_back(i);
      }
      CHECK(b.tgt_tokens == tgt_tokens);
    }
    std::vector<int64_t> sorted = seen;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int64_t> all(static_cast<size_t>(d.size()));
    std::iota(all.begin(), all.end(), 0);
    CHECK(sorted == all);  // every example exactly once per epoch
    epochs.push_back(seen);
  }
  CHECK(epochs[0] != epochs[1]);
  CHECK(epochs[1] != epochs[2]);

  // The same seed gives the same stream; another seed another.
  Batcher same(d, opt);
  std::vector<int64_t> first;
  for (int64_t k = 0; k < nb; ++k) {
    const Batch b = same.next();
    first.insert(first.end(), b.indices.begin(), b.indices.end());
  }
  CHECK(first == epochs[0]);
  opt.seed = 8;
  Batcher other(d, opt);
  std::vector<int64_t> first_other;
  for (int64_t k = 0; k < nb; ++k) {
    const Batch b = other.next();
    first_other.insert(first_other.end(), b.indices.begin(), b.indices.end());
  }
  CHECK(first_other != epochs[0]);

  // Without shuffling, batches come sorted by target length, the same every epoch.
  opt.shuffle = false;
  Batcher plain(d, opt);
  int64_t last_t = 0;
  for (int64_t k = 0; k < nb; ++k) {
    const Batch b = plain.next();
    CHECK(b.tgt_in.size(1) >= last_t);
    last_t = b.tgt_in.size(1);
  }
}

TEST_CASE("batcher: restore reproduces the following batches, across epochs", "[data]") {
  const Dataset d = mixed_dataset(300);
  BatcherOptions opt;
  opt.max_tokens = 100;
  opt.seed = 3;
  Batcher reference(d, opt);
  const int64_t nb = reference.batches_per_epoch();
  std::vector<Batch> stream;
  std::vector<Batcher::State> states;
  for (int64_t k = 0; k < 2 * nb + 5; ++k) {
    states.push_back(reference.state());
    stream.push_back(reference.next());
  }
  CHECK(states[static_cast<size_t>(nb)] == Batcher::State{0, nb});
  CHECK(states[static_cast<size_t>(nb + 1)] == Batcher::State{1, 1});
  for (int64_t start : {int64_t{0}, nb / 2, nb - 2, nb - 1, nb, nb + 3, 2 * nb}) {
    Batcher resumed(d, opt);
    resumed.next();  // some unrelated progress first
    resumed.restore(states[static_cast<size_t>(start)]);
    for (int64_t k = start; k < static_cast<int64_t>(stream.size()); ++k) {
      INFO("resumed at " << start << ", batch " << k);
      REQUIRE(same_batch(resumed.next(), stream[static_cast<size_t>(k)]));
    }
  }
  CHECK_THROWS_WITH(reference.restore({0, nb + 1}), Contains("cannot restore"));
}

TEST_CASE("batcher: errors, sentence cap and data-parallel shards", "[data]") {
  const Dataset d = mixed_dataset(200);
  BatcherOptions opt;
  opt.max_tokens = 20;
  CHECK_THROWS_WITH(Batcher(d, opt), Contains("batcher: example ") &&
                                         Contains(" tokens (source ") &&
                                         Contains("but max_tokens is 20"));
  CHECK_THROWS_WITH(Batcher(Dataset(), BatcherOptions{}), Contains("empty"));

  opt.max_tokens = 400;
  opt.max_sentences = 8;
  Batcher capped(d, opt);
  for (int64_t k = 0; k < capped.batches_per_epoch(); ++k) CHECK(capped.next().size <= 8);

  opt.max_sentences = 0;
  opt.world = 3;
  std::vector<int64_t> union_of_shards;
  int64_t per_rank = -1;
  for (int64_t rank = 0; rank < 3; ++rank) {
    opt.rank = rank;
    Batcher shard(d, opt);
    per_rank = shard.batches_per_epoch();
    for (int64_t k = 0; k < per_rank; ++k) {
      const Batch b = shard.next();
      union_of_shards.insert(union_of_shards.end(), b.indices.begin(), b.indices.end());
    }
  }
  std::set<int64_t> distinct(union_of_shards.begin(), union_of_shards.end());
  CHECK(distinct.size() == union_of_shards.size());  // shards are disjoint
  opt.world = 1;
  opt.rank = 0;
  CHECK(per_rank == Batcher(d, opt).batches_per_epoch() / 3);
}

TEST_CASE("eval batches cover the dataset once with indices to restore order", "[data]") {
  const Dataset d = mixed_dataset(123);
  const auto batches = make_eval_batches(d, 150);
  std::vector<int64_t> seen;
  for (const Batch& b : batches) {
    CHECK(b.size * std::max(b.src.size(1), b.tgt_in.size(1)) <= 150);
    for (int64_t r = 0; r < b.size; ++r) {
      const auto x = d.src(b.indices[static_cast<size_t>(r)]);
      const auto s = row(b.src, r);
      CHECK(std::equal(x.begin(), x.end(), s.begin()));
    }
    seen.insert(seen.end(), b.indices.begin(), b.indices.end());
  }
  std::sort(seen.begin(), seen.end());
  std::vector<int64_t> all(123);
  std::iota(all.begin(), all.end(), 0);
  CHECK(seen == all);

  BatcherOptions opt;
  opt.max_tokens = 150;
  std::vector<int64_t> in_order;
  for (const Batch& b : make_eval_batches(d, opt, /*sort_by_length=*/false)) {
    in_order.insert(in_order.end(), b.indices.begin(), b.indices.end());
  }
  CHECK(in_order == all);
}
