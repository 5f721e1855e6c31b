// CUDA backend basics: device discovery, host<->device copies, dtype casts and fills against
// the CPU reference (bit-exact except NaN payloads), the allocator's statistics and its
// out-of-memory error, the device context (cuBLASLt handle, workspace, TF32 switch) and
// cross-stream ordering. Needs a GPU: the first test fails loudly without one.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/cuda_backend.h"
#include "core/dispatch.h"
#include "core/tensor.h"
#include "cuda/cuda_test_util.h"
#include "kernels/cast.h"

namespace attn {
namespace {

using cuda_test::kAllTypes;
using cuda_test::kGpu;

template <class T>
constexpr bool kIsInt = std::is_same_v<T, int32_t>;

float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

double bits_to_double(uint64_t b) {
  double d;
  std::memcpy(&d, &b, 8);
  return d;
}

template <class T>
double value_of(T v) {
  return static_cast<double>(to_float(v));
}

template <class T>
bool is_nan(T v) {
  if constexpr (kIsInt<T>) {
    return false;
  } else {
    return std::isnan(value_of(v));
  }
}

template <class T>
std::string describe(T v) {
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  std::ostringstream os;
  os << value_of(v) << " (bits 0x" << std::hex << b << ")";
  return os.str();
}

// A CPU tensor holding exactly these bit patterns.
template <class T>
Tensor cpu_tensor(const std::vector<T>& v) {
  Tensor t = Tensor::empty({static_cast<int64_t>(v.size())}, dtype_of<T>(), Device::cpu());
  if (!v.empty()) std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(T));
  return t;
}

template <class T>
std::vector<T> host_elements(const Tensor& t) {
  REQUIRE(t.dtype() == dtype_of<T>());
  Tensor h = t.to(Device::cpu());
  std::vector<T> v(static_cast<size_t>(h.numel()));
  if (!v.empty()) std::memcpy(v.data(), h.raw_data(), v.size() * sizeof(T));
  return v;
}

// Element-wise bit equality; two NaNs match whatever their payloads.
template <class T>
void check_same(const Tensor& expected, const Tensor& actual, const std::string& what) {
  const auto e = host_elements<T>(expected);
  const auto a = host_elements<T>(actual);
  REQUIRE(e.size() == a.size());
  int64_t mismatches = 0;
  std::string first;
  for (size_t i = 0; i < e.size(); ++i) {
    if (std::memcmp(&e[i], &a[i], sizeof(T)) == 0 || (is_nan(e[i]) && is_nan(a[i]))) continue;
    if (mismatches++ == 0) {
      first = "element " + std::to_string(i) + ": expected " + describe(e[i]) + ", got " +
              describe(a[i]);
    }
  }
  INFO(what << ": " << mismatches << " of " << e.size() << " differ; first " << first);
  CHECK(mismatches == 0);
}

// ---- source values: edge cases plus random bit patterns ---------------------------------

std::vector<double> edge_doubles() {
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  return {0.0,
          -0.0,
          1.0,
          -1.0,
          0.1,
          1.0 / 3,
          0.5,
          1.5,
          2.5,
          -0.5,
          -1.5,
          -2.7,
          2.7,
          65504.0,
          65519.99,
          65520.0,
          -65520.0,
          70000.0,
          3.3895313892515355e38,
          3.4e38,
          FLT_MAX,
          -FLT_MAX,
          FLT_MIN,
          FLT_MIN / 2,
          FLT_TRUE_MIN,
          6.103515625e-05,
          5.9604644775390625e-08,
          2.98023223876953125e-08,
          2.9802326e-08,
          8.940696716308594e-08,
          1e-45,
          2147483520.0,
          -2147483648.0,
          2147483647.0,
          2147483648.0,
          -2147483649.0,
          16777217.0,
          inf,
          -inf,
          nan,
          -nan};
}

std::vector<float> float_sources() {
  std::vector<float> v;
  for (double d : edge_doubles()) v.push_back(static_cast<float>(d));
  v.push_back(bits_to_float(0x7f800001u));  // signaling NaN
  v.push_back(bits_to_float(0x7fc12345u));  // NaN with payload
  v.push_back(bits_to_float(0xff812345u));
  std::mt19937_64 rng(1);
  for (int i = 0; i < (1 << 16); ++i) v.push_back(bits_to_float(static_cast<uint32_t>(rng())));
  for (int i = 0; i < 4096; ++i) {
    const uint32_t r = static_cast<uint32_t>(rng());
    v.push_back(bits_to_float((r & 0xffff0000u) | 0x8000u));  // bf16 ties
    // f16 ties among normal halves: exponent 113..142, tie bit 12.
    const uint32_t exp = 113 + static_cast<uint32_t>(rng() % 30);
    v.push_back(bits_to_float((r & 0x80000000u) | (exp << 23) | (r & 0x7fe000u) | 0x1000u));
    // f16 ties among subnormal halves: (2k+1) * 2^-25.
    v.push_back(static_cast<float>((2.0 * (rng() % 1024) + 1) * 5.9604644775390625e-08 / 2));
    // Anywhere in the f16 range and just below it.
    const uint32_t e2 = 100 + static_cast<uint32_t>(rng() % 44);
    v.push_back(bits_to_float((r & 0x80000000u) | (e2 << 23) | (r & 0x7fffffu)));
  }
  return v;
}

std::vector<double> double_sources() {
  std::vector<double> v = edge_doubles();
  const double big = static_cast<double>(FLT_MAX);
  v.insert(v.end(), {DBL_MAX, -DBL_MAX, DBL_MIN, DBL_TRUE_MIN, 1e-310, 1e300, -1e300, big + 0x1p103,
                     big + 0x1p103 - 0x1p80, 1.0 + 0x1p-24, 1.0 + 0x1p-24 + 0x1p-40,
                     bits_to_double(0x7ff0000000000001ull), bits_to_double(0x7ff8000012345678ull)});
  std::mt19937_64 rng(2);
  for (int i = 0; i < (1 << 15); ++i) v.push_back(bits_to_double(rng()));
  std::uniform_real_distribution<double> ints(-2.2e9, 2.2e9);
  for (int i = 0; i < 4096; ++i) {
    const uint64_t r = rng();
    const uint64_t sign = r & (1ull << 63);
    const uint64_t exp = static_cast<uint64_t>(1023 - 150 + rng() % 280) << 52;
    const uint64_t mant = r & ((1ull << 52) - 1);
    v.push_back(bits_to_double(sign | exp | mant));  // float range
    v.push_back(bits_to_double(sign | exp | (mant & ~((1ull << 29) - 1)) | (1ull << 28)));
    // Just above a bf16 / f16 tie: rounding to float first lands on the tie (the CPU's
    // double rounding), which goes to even instead of up.
    v.push_back(bits_to_double(sign | exp | (mant & (0x7full << 45)) | (1ull << 44) | 1024));
    v.push_back(bits_to_double(sign | exp | (mant & (0x3ffull << 42)) | (1ull << 41) | 1024));
    v.push_back(ints(rng));
  }
  return v;
}

template <class H>
std::vector<H> all_16bit_patterns() {
  std::vector<H> v(1 << 16);
  for (uint32_t i = 0; i < (1u << 16); ++i) v[i].bits = static_cast<uint16_t>(i);
  return v;
}

std::vector<int32_t> int_sources() {
  std::vector<int32_t> v = {0,        1,        -1,       INT_MAX,   INT_MIN, INT_MIN + 1,
                            16777216, 16777217, 16777219, -16777217, 2049,    2051,
                            65504,    65519,    65520,    65535,     65536,   257,
                            259,      16842753, -16842753};  // 2^24+2^16+1: double rounding
  std::mt19937_64 rng(3);
  for (int i = 0; i < (1 << 16); ++i) v.push_back(static_cast<int32_t>(rng()));
  std::uniform_int_distribution<int32_t> small(-70000, 70000);
  for (int i = 0; i < (1 << 14); ++i) v.push_back(small(rng));
  return v;
}

template <class T>
std::vector<T> sources() {
  if constexpr (std::is_same_v<T, float>) {
    return float_sources();
  } else if constexpr (std::is_same_v<T, double>) {
    return double_sources();
  } else if constexpr (kIsInt<T>) {
    return int_sources();
  } else {
    return all_16bit_patterns<T>();
  }
}

// float -> int32 of NaN, infinities or anything outside int32 is undefined on the CPU.
template <class S>
std::vector<S> int_convertible(std::vector<S> v) {
  for (S& x : v) {
    const double d = value_of(x);
    if (!(d > -2147483649.0 && d < 2147483648.0)) std::memset(&x, 0, sizeof(S));
  }
  return v;
}

}  // namespace

TEST_CASE("a CUDA device is present", "[cuda]") {
  REQUIRE(cuda::device_count() > 0);
  REQUIRE(cuda_device_count() == cuda::device_count());
  cudaStream_t s = cuda::stream(0);
  CHECK(s != nullptr);
  CHECK(cuda::stream(0) == s);
  CHECK_NOTHROW(cuda::synchronize(0));
  CHECK_NOTHROW(cuda::require_device(0));
}

TEST_CASE("a CUDA device that does not exist is refused with its name", "[cuda]") {
  const int n = cuda::device_count();
  CHECK_THROWS_WITH(cuda::require_device(n), Catch::Contains("cuda:" + std::to_string(n)));
  CHECK_THROWS_AS(Tensor::empty({4}, kF32, Device::cuda(n)), Error);
}

TEMPLATE_TEST_CASE("cpu -> cuda -> cpu preserves every bit", "[cuda][copy]", float, double, bf16,
                   f16, int32_t) {
  const Tensor host = cpu_tensor(sources<TestType>());
  const Tensor gpu = host.to(kGpu);
  CHECK(gpu.device() == kGpu);
  const Tensor back = gpu.to(Device::cpu());
  REQUIRE(back.nbytes() == host.nbytes());
  CHECK(std::memcmp(back.raw_data(), host.raw_data(), host.nbytes()) == 0);

  // Device-to-device (clone) and a view that starts at an offset.
  const Tensor cloned = gpu.clone().to(Device::cpu());
  CHECK(std::memcmp(cloned.raw_data(), host.raw_data(), host.nbytes()) == 0);
  const Tensor part = gpu.narrow0(3, 1003).to(Device::cpu());
  CHECK(std::memcmp(part.raw_data(), host.narrow0(3, 1003).raw_data(), part.nbytes()) == 0);

  const Tensor none = Tensor::empty({0}, dtype_of<TestType>(), kGpu);
  CHECK(none.to(Device::cpu()).numel() == 0);
}

TEMPLATE_TEST_CASE("to(dtype) on CUDA equals the CPU cast", "[cuda][cast]", float, double, bf16,
                   f16, int32_t) {
  using Src = TestType;
  const std::vector<Src> values = sources<Src>();
  for (DType dst : kAllTypes) {
    visit_dtype(dst, [&](auto tag) {
      using Dst = typename decltype(tag)::type;
      const bool to_int = kIsInt<Dst> && !kIsInt<Src>;
      const Tensor src = cpu_tensor(to_int ? int_convertible(values) : values);
      const Tensor expected = src.to(dst);
      const Tensor actual = src.to(kGpu).to(dst);
      CHECK(actual.device() == kGpu);
      check_same<Dst>(expected, actual,
                      std::string(dtype_name(dtype_of<Src>())) + " -> " + dtype_name(dst));
    });
  }
}

TEST_CASE("a CUDA cast longer than one grid pass covers every element", "[cuda][cast]") {
  const int64_t n = 256 * (int64_t{1} << 16) + 12345;  // more than kMaxBlocks * 256
  Tensor src = Tensor::empty({n}, kF32, Device::cpu());
  float* p = src.data<float>();
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(i % 100003) * 0.37f - 1000.0f;
  check_same<bf16>(src.to(kBF16), src.to(kGpu).to(kBF16), "f32 -> bf16, long");
}

TEST_CASE("fill_ on CUDA equals the CPU fill", "[cuda][fill]") {
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<double> floats = {0.0,   -0.0,   1.0,   -2.5, 1.0 / 3, 65520.0,     1e-7,
                                      1e-40, 3.5e38, 1e300, inf,  -inf,    std::nan("")};
  const std::vector<double> ints = {0.0, 7.0, -3.9, 3.9, 2147483647.0, -2147483648.0};
  for (DType dt : kAllTypes) {
    visit_dtype(dt, [&](auto tag) {
      using T = typename decltype(tag)::type;
      for (double v : kIsInt<T> ? ints : floats) {
        const Tensor expected = Tensor::full({1000 + 7}, v, dt, Device::cpu());
        const Tensor actual = Tensor::full({1000 + 7}, v, dt, kGpu);
        check_same<T>(expected, actual,
                      std::string("fill ") + dtype_name(dt) + " with " + std::to_string(v));
      }
      CHECK_NOTHROW(Tensor::full({0}, 1.0, dt, kGpu));
    });
  }
}

TEST_CASE("an impossible CUDA allocation throws OutOfMemoryError", "[cuda][allocator]") {
  Allocator& alloc = allocator_for(kGpu);
  const AllocatorStats before = alloc.stats();
  const Shape huge = {int64_t{1} << 48};  // 2^50 bytes of f32
  CHECK_THROWS_AS(Tensor::empty(huge, kF32, kGpu), OutOfMemoryError);
  CHECK_THROWS_WITH(Tensor::empty(huge, kF32, kGpu), Catch::Contains("max_tokens"));
  CHECK(alloc.stats().current_bytes == before.current_bytes);
  // The failure does not poison later work.
  const Tensor t = Tensor::full({1024}, 2.0, kF32, kGpu);
  CHECK(t.to_double_vector()[1023] == 2.0);
}

TEST_CASE("CUDA allocator statistics follow tensors", "[cuda][allocator]") {
  Allocator& alloc = allocator_for(kGpu);
  alloc.reset_peak();
  const AllocatorStats s0 = alloc.stats();
  CHECK(s0.peak_bytes == s0.current_bytes);
  const int64_t mib = 1 << 20;
  int64_t peak = 0;
  {
    const Tensor a = Tensor::empty({mib}, kF32, kGpu);  // 4 MiB
    const AllocatorStats s1 = alloc.stats();
    CHECK(s1.current_bytes == s0.current_bytes + 4 * mib);
    CHECK(s1.peak_bytes == s1.current_bytes);
    CHECK(s1.reserved_bytes >= s1.current_bytes);
    CHECK(s1.num_allocs == s0.num_allocs + 1);
    {
      const Tensor b = Tensor::empty({mib / 4}, kF64, kGpu);  // 2 MiB
      const AllocatorStats s2 = alloc.stats();
      CHECK(s2.current_bytes == s1.current_bytes + 2 * mib);
      CHECK(s2.peak_bytes == s2.current_bytes);
      peak = s2.peak_bytes;
    }
    const AllocatorStats s3 = alloc.stats();
    CHECK(s3.current_bytes == s1.current_bytes);
    CHECK(s3.peak_bytes == peak);
  }
  const AllocatorStats s4 = alloc.stats();
  CHECK(s4.current_bytes == s0.current_bytes);
  CHECK(s4.peak_bytes == peak);
  alloc.reset_peak();
  CHECK(alloc.stats().peak_bytes == s0.current_bytes);
}

TEST_CASE("the device context holds the stream, a cuBLASLt handle and a workspace",
          "[cuda][context]") {
  const cuda::DeviceContext& ctx = cuda::context(0);
  CHECK(ctx.index == 0);
  CHECK(ctx.stream == cuda::stream(0));
  CHECK(ctx.blaslt != nullptr);
  CHECK(ctx.workspace != nullptr);
  CHECK(ctx.workspace_bytes == cuda::kBlasWorkspaceBytes);
  CHECK(&cuda::context(0) == &ctx);  // made once
  // The workspace is real device memory of that size.
  CHECK(cudaMemsetAsync(ctx.workspace, 0, ctx.workspace_bytes, ctx.stream) == cudaSuccess);
  CHECK_NOTHROW(cuda::synchronize(0));
  CHECK_THROWS_WITH(cuda::context(cuda::device_count()),
                    Catch::Contains("cuda:" + std::to_string(cuda::device_count())));
}

TEST_CASE("TF32 is off by default and the switch holds its value", "[cuda][context]") {
  CHECK_FALSE(cuda::allow_tf32());
  cuda::set_allow_tf32(true);
  CHECK(cuda::allow_tf32());
  cuda::set_allow_tf32(false);
  CHECK_FALSE(cuda::allow_tf32());
}

TEST_CASE("wait_for_stream orders attn's stream after another stream's work", "[cuda][context]") {
  const int64_t n = int64_t{1} << 24;
  Tensor t = Tensor::zeros({n}, kF32, kGpu);
  cuda::synchronize(0);
  cudaStream_t other = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking) == cudaSuccess);
  // A 64 MiB write on the other stream. (A copy from pageable memory may finish before the
  // call returns, so this shows the calls work together, not that the wait is needed.)
  std::vector<float> ones(static_cast<size_t>(n), 1.0f);
  REQUIRE(cudaMemcpyAsync(t.raw_data(), ones.data(), n * sizeof(float), cudaMemcpyHostToDevice,
                          other) == cudaSuccess);
  cuda::wait_for_stream(0, other);
  // Queued on stream(0) after the wait: sees the copy.
  const std::vector<double> back = t.to(Device::cpu()).to_double_vector();
  CHECK(back.front() == 1.0);
  CHECK(back.back() == 1.0);
  CHECK(cudaStreamSynchronize(other) == cudaSuccess);
  CHECK(cudaStreamDestroy(other) == cudaSuccess);
}

TEST_CASE("a CUDA cast writes every element of its output and nothing past it", "[cuda][cast]") {
  const int64_t pad = 64;
  for (int64_t n : {int64_t{1}, int64_t{255}, int64_t{256}, int64_t{257}, int64_t{100003}}) {
    std::vector<double> values(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) values[i] = static_cast<double>(i % 1000) - 500.25;
    for (DType st : kAllTypes) {
      for (DType dt : kAllTypes) {
        visit_dtype(st, [&](auto stag) {
          visit_dtype(dt, [&](auto dtag) {
            using S = typename decltype(stag)::type;
            using D = typename decltype(dtag)::type;
            const double poison = kIsInt<D> ? -777.0 : std::nan("");
            const Tensor src = Tensor::from_vector(values, {n}, st, kGpu);
            Tensor buf = Tensor::full({n + pad}, poison, dt, kGpu);
            kernels::cast_cuda<S, D>(src.data<S>(), buf.data<D>(), n, cuda::stream(0));
            const std::string what = std::string(dtype_name(st)) + " -> " + dtype_name(dt) +
                                     ", n = " + std::to_string(n);
            check_same<D>(src.to(Device::cpu()).to(dt), buf.narrow0(0, n), what);
            const std::vector<double> tail = buf.narrow0(n, n + pad).to_double_vector();
            int64_t overwritten = 0;
            for (double x : tail) overwritten += kIsInt<D> ? x != poison : !std::isnan(x);
            INFO(what);
            CHECK(overwritten == 0);
          });
        });
      }
    }
  }
}

}  // namespace attn
