#include "data/dataset.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <optional>

#include "base/error.h"
#include "data/hash.h"

namespace attn::data {

namespace fs = std::filesystem;

// ---- Dataset ---------------------------------------------------------------------------

std::span<const int32_t> Dataset::src(int64_t i) const {
  ATTN_CHECK(i >= 0 && i < size_, "Dataset: example ", i, " out of range [0, ", size_, ")");
  return {src_ids_ + src_offsets_[i], static_cast<size_t>(src_offsets_[i + 1] - src_offsets_[i])};
}

std::span<const int32_t> Dataset::tgt(int64_t i) const {
  ATTN_CHECK(i >= 0 && i < size_, "Dataset: example ", i, " out of range [0, ", size_, ")");
  return {tgt_ids_ + tgt_offsets_[i], static_cast<size_t>(tgt_offsets_[i + 1] - tgt_offsets_[i])};
}

Example Dataset::example(int64_t i) const {
  const auto s = src(i), t = tgt(i);
  return Example{{s.begin(), s.end()}, {t.begin(), t.end()}};
}

Dataset Dataset::from_examples(const std::vector<Example>& examples) {
  DatasetBuilder b;
  for (const Example& e : examples) b.add(e.src, e.tgt);
  return b.finish();
}

struct DatasetBuilder::Arrays {
  std::vector<int64_t> src_offsets{0}, tgt_offsets{0};
  std::vector<int32_t> src_ids, tgt_ids;
};

DatasetBuilder::DatasetBuilder() : arrays_(std::make_shared<Arrays>()) {}

void DatasetBuilder::add(std::span<const int32_t> src, std::span<const int32_t> tgt) {
  ATTN_CHECK(arrays_ != nullptr, "DatasetBuilder: add() after finish()");
  Arrays& a = *arrays_;
  a.src_ids.insert(a.src_ids.end(), src.begin(), src.end());
  a.tgt_ids.insert(a.tgt_ids.end(), tgt.begin(), tgt.end());
  a.src_offsets.push_back(static_cast<int64_t>(a.src_ids.size()));
  a.tgt_offsets.push_back(static_cast<int64_t>(a.tgt_ids.size()));
}

int64_t DatasetBuilder::size() const {
  return arrays_ ? static_cast<int64_t>(arrays_->src_offsets.size()) - 1 : 0;
}

Dataset DatasetBuilder::finish() {
  ATTN_CHECK(arrays_ != nullptr, "DatasetBuilder: finish() called twice");
  Dataset d;
  const Arrays& a = *arrays_;
  d.size_ = static_cast<int64_t>(a.src_offsets.size()) - 1;
  d.src_offsets_ = a.src_offsets.data();
  d.tgt_offsets_ = a.tgt_offsets.data();
  d.src_ids_ = a.src_ids.data();
  d.tgt_ids_ = a.tgt_ids.data();
  d.owner_ = std::move(arrays_);
  return d;
}

// ---- building --------------------------------------------------------------------------

namespace {

// Encodes lines[begin, end) into out[0, end - begin) on all cores; SentencePiece's Encode is
// const and thread-safe. Exceptions cannot leave an OpenMP region, so the first is carried.
void encode_range(const std::vector<std::string>& lines, size_t begin, size_t end,
                  const Vocab& vocab, std::vector<std::vector<int32_t>>& out) {
  out.resize(end - begin);
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t i = static_cast<int64_t>(begin); i < static_cast<int64_t>(end); ++i) {
    try {
      out[static_cast<size_t>(i) - begin] = vocab.encode(lines[static_cast<size_t>(i)]);
    } catch (...) {
#pragma omp critical(attn_data_encode_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

constexpr size_t kEncodeChunk = 1 << 16;  // bounds the memory of not-yet-appended encodings

}  // namespace

Dataset build(const ParallelText& text, const Vocab& vocab, int64_t max_len, DatasetStats* stats) {
  ATTN_CHECK(text.src.size() == text.tgt.size(), "build dataset: ", text.src.size(),
             " source lines but ", text.tgt.size(), " target lines");
  ATTN_CHECK(max_len >= 2, "build dataset: max_len must be >= 2 (a token and eos), got ", max_len);
  DatasetStats st;
  st.lines = static_cast<int64_t>(text.src.size());
  DatasetBuilder builder;
  std::vector<std::vector<int32_t>> src, tgt;
  for (size_t begin = 0; begin < text.src.size(); begin += kEncodeChunk) {
    const size_t end = std::min(text.src.size(), begin + kEncodeChunk);
    encode_range(text.src, begin, end, vocab, src);
    encode_range(text.tgt, begin, end, vocab, tgt);
    for (size_t k = 0; k < end - begin; ++k) {
      if (src[k].empty() || tgt[k].empty()) {
        ++st.skipped_empty;
      } else if (static_cast<int64_t>(src[k].size()) + 1 > max_len ||
                 static_cast<int64_t>(tgt[k].size()) + 1 > max_len) {
        ++st.skipped_too_long;
      } else {
        builder.add(src[k], tgt[k]);
      }
    }
  }
  Dataset d = builder.finish();
  st.kept = d.size();
  st.src_tokens = d.src_tokens();
  st.tgt_tokens = d.tgt_tokens();
  if (stats) *stats = st;
  return d;
}

Dataset build_source_only(const std::vector<std::string>& lines, const Vocab& vocab) {
  DatasetBuilder builder;
  std::vector<std::vector<int32_t>> src;
  for (size_t begin = 0; begin < lines.size(); begin += kEncodeChunk) {
    const size_t end = std::min(lines.size(), begin + kEncodeChunk);
    encode_range(lines, begin, end, vocab, src);
    for (size_t k = 0; k < end - begin; ++k) builder.add(src[k], {});
  }
  return builder.finish();
}

// ---- the binarized cache ---------------------------------------------------------------
//
// Layout (host byte order; a cache is a local artifact, not an interchange format):
//   CacheHeader
//   int64 src_offsets[count + 1], int64 tgt_offsets[count + 1]
//   int32 src_ids[src_total], int32 tgt_ids[tgt_total]
// The header identifies what the cache was built from (corpus bytes, vocabulary, max_len)
// and checksums itself and the payload, so a stale or damaged file is never used.

namespace {

constexpr char kMagic[8] = {'A', 'T', 'T', 'N', 'D', 'A', 'T', 'A'};
constexpr uint32_t kCacheVersion = 1;

struct CacheHeader {
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;
  uint64_t corpus_hash;
  uint64_t vocab_hash;
  int64_t max_len;
  int64_t lines, skipped_empty, skipped_too_long;
  int64_t count, src_total, tgt_total;
  uint64_t payload_hash;
  uint64_t header_hash;  // of all the bytes before it
};
static_assert(sizeof(CacheHeader) % 8 == 0, "payload arrays must stay 8-byte aligned");

uint64_t header_hash(const CacheHeader& h) {
  return hash64(&h, offsetof(CacheHeader, header_hash));
}

uint64_t payload_hash(const int64_t* src_off, const int64_t* tgt_off, const int32_t* src_ids,
                      const int32_t* tgt_ids, int64_t count, int64_t src_total, int64_t tgt_total) {
  Hash64 h;
  h.update(src_off, sizeof(int64_t) * static_cast<size_t>(count + 1));
  h.update(tgt_off, sizeof(int64_t) * static_cast<size_t>(count + 1));
  h.update(src_ids, sizeof(int32_t) * static_cast<size_t>(src_total));
  h.update(tgt_ids, sizeof(int32_t) * static_cast<size_t>(tgt_total));
  return h.digest();
}

struct Mapping {
  void* base = nullptr;
  size_t bytes = 0;
  ~Mapping() {
    if (base) ::munmap(base, bytes);
  }
};

enum class CacheState { kOk, kMissing, kStale, kCorrupt };

struct CacheProbe {
  CacheState state = CacheState::kMissing;
  std::string reason;
  Dataset data;
  CacheHeader header{};
};

bool offsets_valid(const int64_t* off, int64_t count, int64_t total) {
  if (off[0] != 0 || off[count] != total) return false;
  for (int64_t i = 0; i < count; ++i) {
    if (off[i + 1] < off[i]) return false;
  }
  return true;
}

}  // namespace

// Builds Datasets over a mapping (Dataset's fields are private to it and its friends).
class DatasetAccess {
 public:
  static CacheProbe map_cache(const std::string& path, const CacheHeader& expect,
                              bool verify_payload) {
    CacheProbe probe;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      probe.state = errno == ENOENT ? CacheState::kMissing : CacheState::kCorrupt;
      probe.reason = std::strerror(errno);
      return probe;
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(CacheHeader))) {
      ::close(fd);
      return corrupt(std::move(probe), "truncated header");
    }
    auto mapping = std::make_shared<Mapping>();
    mapping->bytes = static_cast<size_t>(st.st_size);
    void* base = ::mmap(nullptr, mapping->bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    const int map_errno = errno;
    ::close(fd);
    if (base == MAP_FAILED) return corrupt(std::move(probe), std::strerror(map_errno));
    mapping->base = base;

    CacheHeader h;
    std::memcpy(&h, base, sizeof(h));
    probe.header = h;
    if (std::memcmp(h.magic, kMagic, sizeof(kMagic)) != 0) {
      return corrupt(std::move(probe), "not an attn dataset cache");
    }
    if (h.version != kCacheVersion) {
      return stale(std::move(probe),
                   detail::str_cat("format version ", h.version, ", expected ", kCacheVersion));
    }
    if (h.header_bytes != sizeof(CacheHeader) || h.header_hash != header_hash(h)) {
      return corrupt(std::move(probe), "header checksum mismatch");
    }
    if (h.corpus_hash != expect.corpus_hash) return stale(std::move(probe), "corpus changed");
    if (h.vocab_hash != expect.vocab_hash) return stale(std::move(probe), "vocabulary changed");
    if (h.max_len != expect.max_len) {
      return stale(std::move(probe),
                   detail::str_cat("max_len was ", h.max_len, ", now ", expect.max_len));
    }
    // Sizes from a checksummed header; still bounded before multiplying, against overflow.
    const uint64_t file = mapping->bytes;
    if (h.count < 0 || h.src_total < 0 || h.tgt_total < 0 ||
        static_cast<uint64_t>(h.count) > file / 16 ||
        static_cast<uint64_t>(h.src_total) > file / 4 ||
        static_cast<uint64_t>(h.tgt_total) > file / 4) {
      return corrupt(std::move(probe), "counts larger than the file");
    }
    const uint64_t expected = sizeof(CacheHeader) + 16 * static_cast<uint64_t>(h.count + 1) +
                              4 * static_cast<uint64_t>(h.src_total + h.tgt_total);
    if (file != expected) {
      return corrupt(std::move(probe),
                     detail::str_cat("size is ", file, " bytes, expected ", expected));
    }
    const auto* bytes = static_cast<const char*>(base);
    const auto* src_off = reinterpret_cast<const int64_t*>(bytes + sizeof(CacheHeader));
    const auto* tgt_off = src_off + h.count + 1;
    const auto* src_ids = reinterpret_cast<const int32_t*>(tgt_off + h.count + 1);
    const auto* tgt_ids = src_ids + h.src_total;
    if (verify_payload && payload_hash(src_off, tgt_off, src_ids, tgt_ids, h.count, h.src_total,
                                       h.tgt_total) != h.payload_hash) {
      return corrupt(std::move(probe), "payload checksum mismatch");
    }
    if (!offsets_valid(src_off, h.count, h.src_total) ||
        !offsets_valid(tgt_off, h.count, h.tgt_total)) {
      return corrupt(std::move(probe), "inconsistent offsets");
    }
    Dataset d;
    d.size_ = h.count;
    d.src_offsets_ = src_off;
    d.tgt_offsets_ = tgt_off;
    d.src_ids_ = src_ids;
    d.tgt_ids_ = tgt_ids;
    d.mapped_ = true;
    d.owner_ = std::move(mapping);
    probe.state = CacheState::kOk;
    probe.data = std::move(d);
    return probe;
  }

  static void write_cache(const std::string& path, const Dataset& d, CacheHeader h) {
    std::memcpy(h.magic, kMagic, sizeof(kMagic));
    h.version = kCacheVersion;
    h.header_bytes = sizeof(CacheHeader);
    h.count = d.size_;
    h.src_total = d.src_tokens();
    h.tgt_total = d.tgt_tokens();
    static const int64_t kZero = 0;
    const int64_t* src_off = d.size_ ? d.src_offsets_ : &kZero;
    const int64_t* tgt_off = d.size_ ? d.tgt_offsets_ : &kZero;
    h.payload_hash =
        payload_hash(src_off, tgt_off, d.src_ids_, d.tgt_ids_, h.count, h.src_total, h.tgt_total);
    h.header_hash = header_hash(h);

    const fs::path target(path);
    if (target.has_parent_path()) {
      std::error_code dir_ec;
      fs::create_directories(target.parent_path(), dir_ec);
      ATTN_CHECK(!dir_ec, "cannot create directory '", target.parent_path().string(),
                 "' for dataset cache '", path, "': ", dir_ec.message());
    }
    // The pid keeps concurrent builders (several ranks) off each other's temporary file; the
    // rename makes the complete file appear at once.
    const std::string tmp = path + ".tmp." + std::to_string(::getpid());
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    ATTN_CHECK(f != nullptr, "cannot write dataset cache '", tmp, "': ", std::strerror(errno));
    auto put = [&](const void* p, size_t n) {
      if (n > 0 && std::fwrite(p, 1, n, f) != n) {
        const int e = errno;
        std::fclose(f);
        std::remove(tmp.c_str());
        ATTN_FAIL("cannot write dataset cache '", tmp, "': ", std::strerror(e));
      }
    };
    const auto n1 = static_cast<size_t>(h.count + 1);
    put(&h, sizeof(h));
    put(src_off, 8 * n1);
    put(tgt_off, 8 * n1);
    put(d.src_ids_, 4 * static_cast<size_t>(h.src_total));
    put(d.tgt_ids_, 4 * static_cast<size_t>(h.tgt_total));
    const bool flushed = std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
    const int e = errno;
    if (std::fclose(f) != 0 || !flushed) {
      std::remove(tmp.c_str());
      ATTN_FAIL("cannot write dataset cache '", tmp, "': ", std::strerror(e));
    }
    std::error_code ec;
    fs::rename(tmp, target, ec);
    if (ec) {
      fs::remove(tmp, ec);
      ATTN_FAIL("cannot rename '", tmp, "' to '", path, "': ", ec.message());
    }
  }

 private:
  static CacheProbe corrupt(CacheProbe probe, std::string reason) {
    probe.state = CacheState::kCorrupt;
    probe.reason = std::move(reason);
    return probe;
  }
  static CacheProbe stale(CacheProbe probe, std::string reason) {
    probe.state = CacheState::kStale;
    probe.reason = std::move(reason);
    return probe;
  }
};

Dataset load_or_build_cached(const std::string& src_path, const std::string& tgt_path,
                             const Vocab& vocab, int64_t max_len, const std::string& cache_path,
                             DatasetStats* stats) {
  ATTN_CHECK(max_len >= 2, "build dataset: max_len must be >= 2 (a token and eos), got ", max_len);
  // The fingerprint covers the corpus bytes, not sizes and mtimes: copying or touching a
  // file must not invalidate the cache, and editing it in place must.
  uint64_t src_size = 0, tgt_size = 0;
  Hash64 fp;
  fp.update_value(hash_file(src_path, "source corpus", &src_size));
  fp.update_value(src_size);
  fp.update_value(hash_file(tgt_path, "target corpus", &tgt_size));
  fp.update_value(tgt_size);

  CacheHeader expect{};
  expect.corpus_hash = fp.digest();
  expect.vocab_hash = vocab.fingerprint();
  expect.max_len = max_len;

  DatasetStats st;
  CacheProbe probe = DatasetAccess::map_cache(cache_path, expect, /*verify_payload=*/true);
  if (probe.state == CacheState::kOk) {
    st.lines = probe.header.lines;
    st.skipped_empty = probe.header.skipped_empty;
    st.skipped_too_long = probe.header.skipped_too_long;
    st.kept = probe.data.size();
    st.src_tokens = probe.data.src_tokens();
    st.tgt_tokens = probe.data.tgt_tokens();
    st.from_cache = true;
    if (stats) *stats = st;
    return probe.data;
  }
  switch (probe.state) {
    case CacheState::kMissing:
      spdlog::info("building dataset cache '{}'", cache_path);
      break;
    case CacheState::kStale:
      spdlog::info("dataset cache '{}' is out of date ({}); rebuilding", cache_path, probe.reason);
      break;
    default:
      spdlog::warn("dataset cache '{}' is unusable ({}); rebuilding", cache_path, probe.reason);
      break;
  }
  probe = CacheProbe{};  // unmaps the old file before it is replaced

  Dataset built = build(read_parallel(src_path, tgt_path), vocab, max_len, &st);
  if (stats) *stats = st;
  CacheHeader h = expect;
  h.lines = st.lines;
  h.skipped_empty = st.skipped_empty;
  h.skipped_too_long = st.skipped_too_long;
  try {
    DatasetAccess::write_cache(cache_path, built, h);
  } catch (const Error& e) {
    spdlog::warn("{}; continuing without a dataset cache", e.what());
    return built;
  }
  // Serve the examples from the page cache rather than private memory (ranks share it).
  CacheProbe fresh = DatasetAccess::map_cache(cache_path, expect, /*verify_payload=*/false);
  return fresh.state == CacheState::kOk ? fresh.data : built;
}

}  // namespace attn::data
