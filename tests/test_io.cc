// safetensors reading and writing: round trips, the exact byte layout (so PyTorch-written files
// load and ours are readable elsewhere), and one test per class of damaged file.
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>

#include "test_util.h"
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "core/hash.h"
#include "io/safetensors.h"

using namespace attn;
using attn::testing::error_of;
using attn::testing::same_bytes;
using namespace attn::io;
namespace fs = std::filesystem;

namespace {

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("attn_test_io_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(f.good());
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i, n >>= 8) s[i] = static_cast<char>(n & 0xff);
  return s;
}

// A file exactly as the safetensors spec lays it out: length, header padded with spaces, data.
std::string st_file(std::string header, const std::string& data) {
  header.append((8 - header.size() % 8) % 8, ' ');
  return le64(header.size()) + header + data;
}

std::string f32_bytes(std::initializer_list<float> values) {
  std::string s;
  for (float v : values) s.append(reinterpret_cast<const char*>(&v), 4);
  return s;
}

std::vector<std::pair<std::string, Tensor>> sample_tensors() {
  Generator gen(7);
  return {
      {"enc.w", Tensor::normal({3, 5}, 0.0, 1.0, gen, kF32)},
      {"enc.b64", Tensor::normal({4}, 0.0, 1.0, gen, kF64)},
      {"half", Tensor::normal({2, 3}, 0.0, 1.0, gen, kF16)},
      {"brain", Tensor::normal({7}, 0.0, 1.0, gen, kBF16)},
      {"ids", Tensor::from_ints({1, -2, 3, 2147483647, -2147483647 - 1, 0}, {2, 3})},
      {"scalar", Tensor::from_vector({3.25}, {}, kF32)},
      {"empty", Tensor::zeros({0}, kF32)},
      {"empty3d", Tensor::zeros({2, 0, 3}, kF64)},
      {"scalar_i", Tensor::from_ints({42}, {})},
  };
}

}  // namespace

TEST_CASE("xxh64 matches the reference implementation's known values", "[io]") {
  CHECK(xxh64("", 0) == 0xef46db3751d8e999ULL);
  CHECK(xxh64("a", 1) == 0xd24ec4f1a98c6e5bULL);
  CHECK(xxh64("abc", 3) == 0x44bc2cf5ad770999ULL);
  const std::string s33 = "0123456789abcdef0123456789abcdef!";
  CHECK(xxh64(s33.data(), s33.size()) == 0x8afff4daac4e677eULL);
  std::string s771;
  for (int r = 0; r < 3; ++r)
    for (int i = 0; i < 256; ++i) s771.push_back(static_cast<char>(i));
  s771 += "xyz";
  CHECK(xxh64(s771.data(), s771.size()) == 0xe921a1b45bd779f8ULL);
  CHECK(hex64(0xe921a1b45bd779f8ULL) == "e921a1b45bd779f8");
  CHECK(hex64(0x0fULL) == "000000000000000f");

  // Streaming in uneven pieces gives the one-shot value.
  for (size_t piece : {1, 3, 7, 31, 32, 33, 100}) {
    Xxh64 h;
    for (size_t i = 0; i < s771.size(); i += piece)
      h.update(s771.data() + i, std::min(piece, s771.size() - i));
    CHECK(h.digest() == 0xe921a1b45bd779f8ULL);
  }
}

TEST_CASE("safetensors round trip: every dtype, scalars, empty tensors, metadata", "[io]") {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const auto tensors = sample_tensors();
  save_safetensors(path, tensors, {{"format", "pt"}, {"attn.step", "123"}});

  const SafetensorsFile f = load_safetensors(path);
  REQUIRE(f.tensors.size() == tensors.size());
  std::vector<std::string> names;
  for (const auto& [name, t] : tensors) {
    names.push_back(name);
    INFO(name);
    REQUIRE(f.tensors.count(name));
    CHECK(same_bytes(f.tensors.at(name), t));
    CHECK(f.tensors.at(name).device().is_cpu());
  }
  CHECK(f.order == names);
  CHECK(f.metadata.at("format") == "pt");
  CHECK(f.metadata.at("attn.step") == "123");
  REQUIRE(f.metadata.count(kChecksumKey));
  CHECK(f.metadata.at(kChecksumKey).size() == 16);

  // The header is padded so the data starts 8-byte aligned.
  const std::string bytes = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  CHECK(n % 8 == 0);
  CHECK(bytes[8] == '{');
}

TEST_CASE("safetensors: no tensors, views and tensors that require grad", "[io]") {
  TempDir dir;
  save_safetensors(dir.file("none.safetensors"), {});
  const auto none = load_safetensors(dir.file("none.safetensors"));
  CHECK(none.tensors.empty());
  CHECK(none.order.empty());

  Tensor base = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {3, 2});
  Tensor rows = base.narrow0(1, 3);  // a view with an offset: only its own elements are written
  Tensor param = Tensor::from_vector({0.5, -0.5}, {2}).set_requires_grad(true);
  save_safetensors(dir.file("v.safetensors"), {{"rows", rows}, {"param", param}});
  const auto f = load_safetensors(dir.file("v.safetensors"));
  CHECK(f.tensors.at("rows").to_double_vector() == std::vector<double>{3, 4, 5, 6});
  CHECK(f.tensors.at("param").to_double_vector() == std::vector<double>{0.5, -0.5});
  CHECK_FALSE(f.tensors.at("param").requires_grad());
}

TEST_CASE("safetensors: the writer's bytes follow the spec exactly", "[io]") {
  TempDir dir;
  const std::string path = dir.file("x.safetensors");
  save_safetensors(path, {{"x", Tensor::from_vector({1, 2}, {2})}});
  const std::string data = f32_bytes({1.0f, 2.0f});
  const std::string checksum = hex64(xxh64(data.data(), data.size()));
  const std::string header = R"({"__metadata__":{"attn.checksum":")" + checksum +
                             R"("},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  CHECK(read_bytes(path) == st_file(header, data));
}

TEST_CASE("safetensors: files written by PyTorch (no checksum) load", "[io]") {
  TempDir dir;
  SECTION("one F32 tensor, built byte by byte") {
    const std::string path = dir.file("torch1.safetensors");
    // {"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} is 54 bytes; 2 spaces pad it to 56.
    std::string bytes("\x38\0\0\0\0\0\0\0", 8);
    bytes += R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    bytes += "  ";
    bytes += std::string("\x00\x00\x80\x3f\x00\x00\x00\x40", 8);  // 1.0f, 2.0f little-endian
    write_bytes(path, bytes);
    const auto f = load_safetensors(path);
    REQUIRE(f.tensors.size() == 1);
    const Tensor& x = f.tensors.at("x");
    CHECK(x.dtype() == kF32);
    CHECK(x.shape() == Shape{2});
    CHECK(x.to_double_vector() == std::vector<double>{1.0, 2.0});
    CHECK(f.metadata.empty());
  }
  SECTION("several dtypes, header order differs from data order, format metadata") {
    // The reference writer sorts tensors by alignment, so header and buffer orders can differ.
    const std::string path = dir.file("torch2.safetensors");
    const std::string header = R"({"__metadata__":{"format":"pt"},)"
                               R"("a.ids":{"dtype":"I32","shape":[1,2],"data_offsets":[8,16]},)"
                               R"("b.w":{"dtype":"F64","shape":[],"data_offsets":[0,8]},)"
                               R"("c.h":{"dtype":"BF16","shape":[2],"data_offsets":[16,20]},)"
                               R"("d.e":{"dtype":"F16","shape":[0,4],"data_offsets":[20,20]}})";
    std::string data;
    const double w = -0.75;
    const int32_t ids[2] = {5, -6};
    data.append(reinterpret_cast<const char*>(&w), 8);
    data.append(reinterpret_cast<const char*>(ids), 8);
    data += std::string("\x80\x3f\x00\xc0", 4);  // bf16 1.0, -2.0
    write_bytes(path, st_file(header, data));
    const auto f = load_safetensors(path);
    CHECK(f.order == std::vector<std::string>{"b.w", "a.ids", "c.h", "d.e"});
    CHECK(f.tensors.at("b.w").shape() == Shape{});
    CHECK(f.tensors.at("b.w").item() == -0.75);
    CHECK(f.tensors.at("a.ids").to_int_vector() == std::vector<int32_t>{5, -6});
    CHECK(f.tensors.at("c.h").dtype() == kBF16);
    CHECK(f.tensors.at("c.h").to_double_vector() == std::vector<double>{1.0, -2.0});
    CHECK(f.tensors.at("d.e").shape() == Shape{0, 4});
    CHECK(f.tensors.at("d.e").dtype() == kF16);
    CHECK(f.metadata == std::map<std::string, std::string>{{"format", "pt"}});
  }
}

TEST_CASE("safetensors: truncated files name the path and what is missing", "[io]") {
  TempDir dir;
  const std::string good = dir.file("good.safetensors");
  save_safetensors(good, sample_tensors());
  const std::string bytes = read_bytes(good);
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = (header << 8) | static_cast<unsigned char>(bytes[i]);
  const size_t data_start = 8 + header;
  REQUIRE(data_start < bytes.size());

  const std::string path = dir.file("cut.safetensors");
  for (size_t cut : {size_t{0}, size_t{3}, size_t{7}}) {
    INFO("cut at " << cut);
    write_bytes(path, bytes.substr(0, cut));
    const std::string msg = error_of([&] { load_safetensors(path); });
    CHECK_THAT(msg, Catch::Contains(path) && Catch::Contains("fewer than the 8-byte"));
  }
  for (size_t cut : {size_t{8}, size_t{9}, data_start / 2, data_start - 1}) {
    INFO("cut at " << cut);
    write_bytes(path, bytes.substr(0, cut));
    const std::string msg = error_of([&] { load_safetensors(path); });
    CHECK_THAT(msg, Catch::Contains(path) &&
                        Catch::Contains("truncated: header says " + std::to_string(header) +
                                        " bytes but the file has " + std::to_string(cut - 8)));
  }
  for (size_t cut : {data_start, data_start + 1, bytes.size() - 1}) {
    INFO("cut at " << cut);
    write_bytes(path, bytes.substr(0, cut));
    const std::string msg = error_of([&] { load_safetensors(path); });
    CHECK_THAT(msg, Catch::Contains(path) && Catch::Contains("truncated: tensor '") &&
                        Catch::Contains("but the data has " + std::to_string(cut - data_start) +
                                        " bytes"));
  }
}

TEST_CASE("safetensors: a flipped data byte is a checksum mismatch", "[io]") {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  save_safetensors(path, sample_tensors());
  std::string bytes = read_bytes(path);
  bytes[bytes.size() - 20] ^= 0x01;
  write_bytes(path, bytes);
  const std::string msg = error_of([&] { load_safetensors(path); });
  CHECK_THAT(msg, Catch::Contains("checksum mismatch in '" + path + "': file is corrupt"));
}

TEST_CASE("safetensors: malformed headers and inconsistent offsets", "[io]") {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  const auto message = [&](const std::string& bytes) {
    write_bytes(path, bytes);
    return error_of([&] { load_safetensors(path); });
  };
  const std::string eight = f32_bytes({1.0f, 2.0f});
  const auto check = [&](const std::string& bytes, const std::string& expected) {
    const std::string msg = message(bytes);
    CHECK_THAT(msg, Catch::Contains(path) && Catch::Contains(expected));
  };

  check(st_file("this is not json", eight), "malformed JSON header");
  check(st_file(R"({"x":{"dtype":"F32")", eight), "malformed JSON header");
  check(st_file("[1, 2]", eight), "JSON is not an object");
  check(std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}", "truncated: header says");
  check(st_file(R"({"x":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", eight),
        "unsupported dtype 'I64'");
  check(st_file(R"({"x":{"shape":[2],"data_offsets":[0,8]}})", eight), "missing string 'dtype'");
  check(st_file(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight),
        "must hold non-negative integers");
  check(st_file(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", eight),
        "'data_offsets' must be two non-negative integers");
  check(st_file(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight),
        "tensor 'x': shape [3] of F32 needs 12 bytes but data_offsets [0, 8] span 8");
  check(st_file(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", eight),
        "end before they begin");
  check(st_file(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", eight.substr(0, 6)),
        "truncated: tensor 'x' ends at byte 8 but the data has 6 bytes");
  check(st_file(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                R"("y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                eight),
        "tensors 'x' and 'y' overlap");
  check(st_file(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight),
        "bytes [0, 4) of the data belong to no tensor");
  check(st_file(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", eight),
        "4 bytes after the last tensor belong to no tensor");
  check(st_file(R"({"__metadata__":{"n":1}})", ""), "__metadata__ value of 'n' is not a string");
  check(st_file(R"({"__metadata__":{"attn.checksum":"0000000000000000"},)"
                R"("x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                eight),
        "checksum mismatch");
  // Deep nesting (a hand-made fuzz input): refused while parsing, where a copy of a deep value
  // would overflow the stack; a nested shape within the limit is shown cut short.
  const std::string deep = std::string(300000, '[') + std::string(300000, ']');
  check(st_file(R"({"x":{"dtype":"F32","shape":)" + deep + R"(,"data_offsets":[0,8]}})", eight),
        "malformed header: JSON nested deeper than 16 levels");
  const std::string nested = "[[[[[[[[[[1,2,3,4,5,6,7,8,9,10,11,12,13,14]]]]]]]]]]";
  check(st_file(R"({"x":{"dtype":"F32","shape":)" + nested + R"(,"data_offsets":[0,8]}})", eight),
        "shape [[[[[[[[[[1,2,3,4,5,6,7,8,9,10,11,12,13,... must hold non-negative integers");
}

TEST_CASE("safetensors: missing files and bad arguments", "[io]") {
  TempDir dir;
  const std::string missing = dir.file("nope.safetensors");
  CHECK_THAT(error_of([&] { load_safetensors(missing); }),
             Catch::Contains(missing) && Catch::Contains("No such file"));
  const std::string unwritable = dir.file("no/such/dir/x.safetensors");
  CHECK_THAT(error_of([&] { save_safetensors(unwritable, {}); }),
             Catch::Contains(unwritable) && Catch::Contains("cannot create"));
  const Tensor t = Tensor::zeros({1});
  CHECK_THAT(error_of([&] {
               save_safetensors(dir.file("d"), {{"a", t}, {"a", t}});
             }),
             Catch::Contains("'a' appears twice"));
  CHECK_THAT(error_of([&] {
               save_safetensors(dir.file("d"), {{"__metadata__", t}});
             }),
             Catch::Contains("cannot be a tensor name"));
  CHECK_THAT(error_of([&] {
               save_safetensors(dir.file("d"), {{"u", Tensor()}});
             }),
             Catch::Contains("'u' is undefined"));
}
