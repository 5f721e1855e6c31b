// Tensor core: dtypes and conversions, views, allocator statistics, the Philox RNG.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "core/allocator.h"
#include "core/grad_mode.h"
#include "core/tensor.h"
#include "kernels/philox.h"

using namespace attn;

TEST_CASE("Philox4x32-10 matches the Random123 known-answer vectors", "[rng]") {
  // From Random123's kat_vectors: philox4x32 10 rounds.
  Philox4 z = philox4x32_10(0, 0, 0, 0, 0, 0);
  CHECK(z.v[0] == 0x6627e8d5u);
  CHECK(z.v[1] == 0xe169c58du);
  CHECK(z.v[2] == 0xbc57ac4cu);
  CHECK(z.v[3] == 0x9b00dbd8u);
  Philox4 f = philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
  CHECK(f.v[0] == 0x408f276du);
  CHECK(f.v[1] == 0x41c83b0eu);
  CHECK(f.v[2] == 0xa20bc7c6u);
  CHECK(f.v[3] == 0x6d5451fdu);
  Philox4 p = philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u,
                            0x299f31d0u);
  CHECK(p.v[0] == 0xd16cfe09u);
  CHECK(p.v[1] == 0x94fdccebu);
  CHECK(p.v[2] == 0x5001e420u);
  CHECK(p.v[3] == 0x24126ea1u);
}

TEST_CASE("Generator draws are reproducible and advance", "[rng]") {
  Generator g1(7), g2(7);
  Tensor a = Tensor::uniform({1000}, 0, 1, g1);
  Tensor b = Tensor::uniform({1000}, 0, 1, g2);
  CHECK(a.to_double_vector() == b.to_double_vector());
  CHECK(g1.offset() == 250);
  Tensor c = Tensor::uniform({1000}, 0, 1, g1);
  CHECK(a.to_double_vector() != c.to_double_vector());
  Tensor n = Tensor::normal({20000}, 1.0, 2.0, g1, kF64);
  double mean = 0, var = 0;
  for (double v : n.to_double_vector()) mean += v;
  mean /= n.numel();
  for (double v : n.to_double_vector()) var += (v - mean) * (v - mean);
  var /= n.numel();
  CHECK(mean == Approx(1.0).margin(0.05));
  CHECK(std::sqrt(var) == Approx(2.0).epsilon(0.03));
}

TEST_CASE("bf16 and f16 conversions round to nearest even", "[dtype]") {
  CHECK(float_to_bf16(1.0f).bits == 0x3f80);
  CHECK(bf16_to_float(float_to_bf16(3.140625f)) == 3.140625f);
  // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties go to the even mantissa (1.0).
  CHECK(bf16_to_float(float_to_bf16(1.00390625f)) == 1.0f);
  CHECK(bf16_to_float(float_to_bf16(1.01171875f)) == 1.015625f);
  CHECK(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(float_to_f16(1.0f).bits == 0x3c00);
  CHECK(float_to_f16(-2.0f).bits == 0xc000);
  CHECK(float_to_f16(65504.0f).bits == 0x7bff);
  CHECK(float_to_f16(65520.0f).bits == 0x7c00);  // rounds up to infinity
  CHECK(float_to_f16(5.9604645e-8f).bits == 0x0001);  // smallest subnormal
  CHECK(float_to_f16(1.0f + 1.0f / 2048).bits == 0x3c00);  // tie to even
  CHECK(float_to_f16(1.0f + 3.0f / 2048).bits == 0x3c02);
  CHECK(std::isinf(f16_to_float(f16{0x7c00})));
  for (uint32_t h = 0; h < 0x7c00; ++h) {  // every finite positive half round-trips
    const f16 v{static_cast<uint16_t>(h)};
    REQUIRE(float_to_f16(f16_to_float(v)).bits == h);
  }
}

TEST_CASE("Tensor creation, dtype conversion and item", "[tensor]") {
  Tensor t = Tensor::from_vector({1.5, -2.25, 3}, {3}, kF64);
  CHECK(t.dtype() == kF64);
  CHECK(t.shape() == Shape{3});
  for (DType dt : {kF32, kBF16, kF16}) {
    CHECK(t.to(dt).to(kF64).to_double_vector() == t.to_double_vector());
  }
  CHECK(t.to(kI32).to_int_vector() == std::vector<int32_t>{1, -2, 3});
  CHECK(Tensor::full({2, 2}, 7, kBF16).to_double_vector() == std::vector<double>(4, 7.0));
  CHECK(Tensor::zeros({0, 4}).numel() == 0);
  CHECK(Tensor::ones({}).item() == 1.0);
  REQUIRE_THROWS_WITH(t.item(), Catch::Contains("item"));
  REQUIRE_THROWS_WITH(t.data<float>(), Catch::Contains("f64"));
}

TEST_CASE("views share storage; clone does not", "[tensor]") {
  Tensor t = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor v = t.view({3, -1});
  CHECK(v.shape() == Shape{3, 2});
  Tensor rows = t.narrow0(1, 2);
  CHECK(rows.to_double_vector() == std::vector<double>{3, 4, 5});
  rows.fill_(9);
  CHECK(t.to_double_vector() == std::vector<double>{0, 1, 2, 9, 9, 9});
  Tensor c = t.clone();
  c.fill_(0);
  CHECK(t.to_double_vector()[0] == 0);
  CHECK(t.to_double_vector()[5] == 9);
  REQUIRE_THROWS_WITH(t.view({4, -1}), Catch::Contains("view") && Catch::Contains("[2, 3]"));
  REQUIRE_THROWS_WITH(t.narrow0(1, 3), Catch::Contains("narrow0"));
}

TEST_CASE("conversions that would cut a graph are refused", "[tensor][autograd]") {
  Tensor w = Tensor::zeros({2});
  w.set_requires_grad(true);
  REQUIRE_THROWS_WITH(w.to(kF64), Catch::Contains("cut the autograd graph"));
  REQUIRE_THROWS_WITH(w.view({1, 2}), Catch::Contains("cut the autograd graph"));
  NoGradGuard guard;
  CHECK(w.to(kF64).dtype() == kF64);
}

TEST_CASE("devices parse and CPU-only builds fail clearly on CUDA", "[tensor][device]") {
  CHECK(Device::parse("cpu") == Device::cpu());
  CHECK(Device::parse("cuda:3") == Device::cuda(3));
  REQUIRE_THROWS_WITH(Device::parse("gpu"), Catch::Contains("unknown device 'gpu'"));
  if (!cuda_built()) {
    REQUIRE_THROWS_WITH(Tensor::zeros({2}, kF32, Device::cuda(0)),
                        Catch::Contains("built without CUDA"));
  } else if (cuda_device_count() == 0) {
    REQUIRE_THROWS_WITH(Tensor::zeros({2}, kF32, Device::cuda(0)),
                        Catch::Contains("no CUDA device"));
  } else {
    CHECK(Tensor::zeros({2}, kF32, Device::cuda(0)).to(Device::cpu()).to_double_vector() ==
          std::vector<double>{0, 0});
  }
}

TEST_CASE("CPU allocator tracks current and peak bytes", "[tensor][allocator]") {
  Allocator& a = allocator_for(Device::cpu());
  const int64_t before = a.stats().current_bytes;
  a.reset_peak();
  {
    Tensor t = Tensor::empty({1000}, kF64);
    CHECK(a.stats().current_bytes == before + 8000);
    CHECK(a.stats().peak_bytes >= before + 8000);
  }
  CHECK(a.stats().current_bytes == before);
  // Memory is 64-byte aligned for vector loads.
  Tensor u = Tensor::empty({3}, kF32);
  CHECK(reinterpret_cast<uintptr_t>(u.raw_data()) % 64 == 0);
}
