#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "core/grad_mode.h"
#include "core/hash.h"
#include "io/json_message.h"

namespace attn::io {

namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors is little-endian and tensors are written from memory as they are");

using Json = nlohmann::ordered_json;  // keeps the header in tensor order, like other writers

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the limit the reference reader enforces
// Real headers nest three levels ({"name": {"shape": [2, 3]}}); deeper ones are refused while
// parsing. ordered_json copies a member's subtree, recursively, when its object grows, so a
// shape nested a few hundred thousand levels deep would overflow the stack (a hand-made
// input to fuzz_safetensors).
constexpr int kMaxHeaderDepth = 16;
constexpr size_t kIoChunk = size_t{1} << 26;       // bounded read()/write() calls

std::optional<DType> parse_st_dtype(const std::string& s) {
  if (s == "F32") return DType::kF32;
  if (s == "F64") return DType::kF64;
  if (s == "BF16") return DType::kBF16;
  if (s == "F16") return DType::kF16;
  if (s == "I32") return DType::kI32;
  return std::nullopt;
}

std::string errno_str() {
  return std::strerror(errno);
}

// Closes the descriptor on every path; the writer closes explicitly to check the result.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

void write_all(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, std::min(bytes, kIoChunk));
    if (n < 0 && errno == EINTR) continue;
    ATTN_CHECK(n > 0, "save_safetensors: writing '", path,
               "' failed: ", n < 0 ? errno_str() : std::string("wrote nothing"));
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void read_all(int fd, void* data, size_t bytes, const std::string& path) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::read(fd, p, std::min(bytes, kIoChunk));
    if (n < 0 && errno == EINTR) continue;
    ATTN_CHECK(n >= 0, "load_safetensors: reading '", path, "' failed: ", errno_str());
    ATTN_CHECK(n > 0, "load_safetensors: '", path, "' ended early (did it shrink while read?)");
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
  size_t header_index;  // ties between empty tensors keep the header's order
};

// One tensor entry of the header, checked against the buffer of `data_bytes` bytes.
Entry parse_entry(const std::string& path, const std::string& name, const Json& v, size_t index,
                  uint64_t data_bytes) {
  const std::string where = "load_safetensors: '" + path + "': tensor '" + name + "'";
  ATTN_CHECK(v.is_object(), where, ": header entry is not a JSON object");
  ATTN_CHECK(v.contains("dtype") && v["dtype"].is_string(), where, ": missing string 'dtype'");
  ATTN_CHECK(v.contains("shape") && v["shape"].is_array(), where, ": missing array 'shape'");
  ATTN_CHECK(v.contains("data_offsets") && v["data_offsets"].is_array() &&
                 v["data_offsets"].size() == 2 && v["data_offsets"][0].is_number_unsigned() &&
                 v["data_offsets"][1].is_number_unsigned(),
             where, ": 'data_offsets' must be two non-negative integers");
  Entry e;
  e.name = name;
  e.header_index = index;
  const std::string dt = v["dtype"].get<std::string>();
  const auto dtype = parse_st_dtype(dt);
  ATTN_CHECK(dtype.has_value(), where, ": unsupported dtype '", dt,
             "' (attn reads F32, F64, BF16, F16 and I32)");
  e.dtype = *dtype;
  uint64_t numel = 1;
  for (const auto& d : v["shape"]) {
    ATTN_CHECK(d.is_number_unsigned(), where, ": shape ", json_excerpt(v["shape"]),
               " must hold non-negative integers");
    const uint64_t n = d.get<uint64_t>();
    ATTN_CHECK(n <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) &&
                   (n == 0 || numel <= (uint64_t{1} << 60) / n),
               where, ": shape ", json_excerpt(v["shape"]), " is too large");
    numel *= n;
    e.shape.push_back(static_cast<int64_t>(n));
  }
  e.begin = v["data_offsets"][0].get<uint64_t>();
  e.end = v["data_offsets"][1].get<uint64_t>();
  ATTN_CHECK(e.begin <= e.end, where, ": data_offsets [", e.begin, ", ", e.end,
             "] end before they begin");
  const uint64_t want = numel * dtype_size(e.dtype);
  ATTN_CHECK(e.end - e.begin == want, where, ": shape ", e.shape, " of ", dt, " needs ", want,
             " bytes but data_offsets [", e.begin, ", ", e.end, "] span ", e.end - e.begin);
  ATTN_CHECK(e.end <= data_bytes, "load_safetensors: '", path, "' is truncated: tensor '", name,
             "' ends at byte ", e.end, " but the data has ", data_bytes, " bytes");
  return e;
}

}  // namespace

const char* safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF64:
      return "F64";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kI32:
      return "I32";
  }
  ATTN_FAIL("safetensors_dtype_name: bad dtype");
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<Tensor> host;
  host.reserve(tensors.size());
  std::set<std::string> seen;
  {
    NoGradGuard no_grad;
    for (const auto& [name, t] : tensors) {
      ATTN_CHECK(name != "__metadata__", "save_safetensors: '", path,
                 "': '__metadata__' cannot be a tensor name");
      ATTN_CHECK(seen.insert(name).second, "save_safetensors: '", path, "': tensor name '", name,
                 "' appears twice");
      ATTN_CHECK(t.defined(), "save_safetensors: '", path, "': tensor '", name, "' is undefined");
      Tensor h = t.detach();
      if (!h.device().is_cpu()) h = h.to(Device::cpu());
      host.push_back(std::move(h));
    }
  }

  // The checksum goes into the header, which precedes the data: hash first, write after.
  Xxh64 hasher;
  Json header = Json::object();
  Json meta = Json::object();
  for (const auto& [k, v] : metadata) meta[k] = v;
  header["__metadata__"] = Json::object();  // reserves the first position
  uint64_t offset = 0;
  for (size_t i = 0; i < host.size(); ++i) {
    const Tensor& t = host[i];
    hasher.update(t.raw_data(), t.nbytes());
    Json shape = Json::array();
    for (int64_t d : t.shape()) shape.push_back(d);
    header[tensors[i].first] = {{"dtype", safetensors_dtype_name(t.dtype())},
                                {"shape", std::move(shape)},
                                {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  meta[kChecksumKey] = hex64(hasher.digest());
  header["__metadata__"] = std::move(meta);

  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    ATTN_FAIL("save_safetensors: '", path, "': a name or metadata string is not UTF-8 (", e.what(),
              ")");
  }
  // Spaces up to a multiple of 8 keep the data buffer 8-byte aligned in the file.
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i, n >>= 8) len[i] = static_cast<unsigned char>(n & 0xff);

  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  ATTN_CHECK(fd.get() >= 0, "save_safetensors: cannot create '", path, "': ", errno_str());
  try {
    write_all(fd.get(), len, 8, path);
    write_all(fd.get(), text.data(), text.size(), path);
    for (const Tensor& t : host) write_all(fd.get(), t.raw_data(), t.nbytes(), path);
    ATTN_CHECK(::fsync(fd.get()) == 0, "save_safetensors: fsync of '", path,
               "' failed: ", errno_str());
    ATTN_CHECK(::close(fd.release()) == 0, "save_safetensors: closing '", path,
               "' failed: ", errno_str());
  } catch (...) {
    ::unlink(path.c_str());  // a half-written file must not look like a result
    throw;
  }
}

SafetensorsFile load_safetensors(const std::string& path) {
  const std::string where = "load_safetensors: '" + path + "'";
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ATTN_CHECK(fd.get() >= 0, where, ": cannot open: ", errno_str());
  struct stat st;
  ATTN_CHECK(::fstat(fd.get(), &st) == 0, where, ": cannot stat: ", errno_str());
  ATTN_CHECK(S_ISREG(st.st_mode), where, ": not a regular file");
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  ATTN_CHECK(file_bytes >= 8, where, ": not a safetensors file: it has ", file_bytes,
             " bytes, fewer than the 8-byte header length");

  unsigned char len[8];
  read_all(fd.get(), len, 8, path);
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | len[i];
  ATTN_CHECK(header_bytes <= file_bytes - 8, where, " is truncated: header says ", header_bytes,
             " bytes but the file has ", file_bytes - 8, " after the 8-byte length");
  ATTN_CHECK(header_bytes <= kMaxHeaderBytes, where, ": header of ", header_bytes,
             " bytes is over the 100 MB limit; not a safetensors file?");
  std::string text(header_bytes, '\0');
  read_all(fd.get(), text.data(), text.size(), path);
  const uint64_t data_bytes = file_bytes - 8 - header_bytes;

  Json header;
  try {
    header = Json::parse(text, [&](int depth, nlohmann::json::parse_event_t, Json&) {
      ATTN_CHECK(depth <= kMaxHeaderDepth, where, ": malformed header: JSON nested deeper than ",
                 kMaxHeaderDepth, " levels");
      return true;
    });
  } catch (const nlohmann::json::exception& e) {
    ATTN_FAIL(where, ": malformed JSON header: ", json_error_text(e));
  }
  ATTN_CHECK(header.is_object(), where, ": malformed header: JSON is not an object");

  SafetensorsFile out;
  std::vector<Entry> entries;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      ATTN_CHECK(value.is_object(), where, ": __metadata__ is not a JSON object");
      for (const auto& [k, v] : value.items()) {
        ATTN_CHECK(v.is_string(), where, ": __metadata__ value of '", k, "' is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, key, value, entries.size(), data_bytes));
  }

  // Buffer order; the buffer must be tiled exactly (no overlaps, holes or trailing bytes), as
  // the reference reader requires. Empty tensors hold no bytes and cannot overlap anything.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end, a.header_index) < std::tie(b.begin, b.end, b.header_index);
  });
  uint64_t cursor = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    if (e.begin == e.end) continue;
    ATTN_CHECK(e.begin >= cursor, where, ": tensors '", prev ? prev->name : "", "' and '", e.name,
               "' overlap (bytes [", prev ? prev->begin : 0, ", ", cursor, ") and [", e.begin, ", ",
               e.end, "))");
    ATTN_CHECK(e.begin == cursor, where, ": bytes [", cursor, ", ", e.begin,
               ") of the data belong to no tensor");
    cursor = e.end;
    prev = &e;
  }
  ATTN_CHECK(cursor == data_bytes, where, ": ", data_bytes - cursor,
             " bytes after the last tensor belong to no tensor");

  const auto checksum = out.metadata.find(kChecksumKey);
  const bool verify = checksum != out.metadata.end();
  Xxh64 hasher;
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    if (e.begin != e.end) {
      read_all(fd.get(), t.raw_data(), t.nbytes(), path);
      if (verify) hasher.update(t.raw_data(), t.nbytes());
    }
    out.tensors.emplace(e.name, std::move(t));
    out.order.push_back(e.name);
  }
  if (verify) {
    const std::string actual = hex64(hasher.digest());
    std::string stored = checksum->second;
    std::transform(stored.begin(), stored.end(), stored.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    ATTN_CHECK(stored == actual, "load_safetensors: checksum mismatch in '", path,
               "': file is corrupt (header says ", checksum->second, ", data hashes to ", actual,
               ")");
  }
  return out;
}

}  // namespace attn::io
