#include "engine/tensor/dtype.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

namespace llmc {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// Independent references. These do not share code with dtype.cc: the narrow-float references enumerate every
// finite code and pick the nearest value by brute force (ties to the even code); fp16 is checked against the
// compiler's own _Float16 conversion (libgcc, IEEE round-to-nearest-even).
// ---------------------------------------------------------------------------------------------------------------

uint16_t GccF16Bits(float f) {
  _Float16 h = static_cast<_Float16>(f);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}

float GccF16ToFloat(uint16_t b) {
  _Float16 h;
  std::memcpy(&h, &b, 2);
  return static_cast<float>(h);
}

// RNE to bfloat16 computed with doubles from the two neighbouring bf16 values (finite, non-NaN inputs).
uint16_t RefBF16(float f) {
  uint32_t u = FloatBits(f);
  uint32_t down = u & 0xffff0000u;
  uint32_t up = down + 0x10000u;  // next magnitude (may be inf: 0x7f800000)
  double d_down = std::fabs(static_cast<double>(BitsFloat(down)));
  double d_up = (up & 0x7fffffffu) == 0x7f800000u ? std::ldexp(1.0, 128) : std::fabs(static_cast<double>(BitsFloat(up)));
  double a = std::fabs(static_cast<double>(f));
  double e_down = a - d_down, e_up = d_up - a;
  if (e_down < e_up) return static_cast<uint16_t>(down >> 16);
  if (e_up < e_down) return static_cast<uint16_t>(up >> 16);
  return static_cast<uint16_t>(((down >> 16) & 1u) ? (up >> 16) : (down >> 16));  // tie: even mantissa
}

// A small float format described by its non-negative finite codes and values, plus the code that an
// overflow produces (NaN for e4m3fn, inf for e5m2) and the value it stands for when rounding.
struct SmallFormat {
  std::vector<std::pair<double, uint8_t>> values;  // ascending
  double overflow_value;
  uint8_t overflow_code;
  uint8_t sign_bit;
};

uint8_t RefEncode(float f, const SmallFormat& fmt) {
  uint8_t sign = std::signbit(f) ? fmt.sign_bit : 0;
  double a = std::fabs(static_cast<double>(f));
  if (a >= fmt.overflow_value) return sign | fmt.overflow_code;
  double best_err = std::numeric_limits<double>::infinity();
  uint8_t best = 0;
  auto consider = [&](double v, uint8_t code) {
    double err = std::fabs(v - a);
    if (err < best_err || (err == best_err && (code & 1) == 0)) {
      best_err = err;
      best = code;
    }
  };
  for (const auto& [v, code] : fmt.values) consider(v, code);
  consider(fmt.overflow_value, fmt.overflow_code);
  return sign | best;
}

SmallFormat E4M3Format() {
  SmallFormat f;
  for (int c = 0; c <= 0x7e; ++c) f.values.push_back({F8E4M3ToFloat(static_cast<uint8_t>(c)), static_cast<uint8_t>(c)});
  f.overflow_value = 480.0;  // the value 0x7f would have: rounding into it gives NaN
  f.overflow_code = 0x7f;
  f.sign_bit = 0x80;
  return f;
}

SmallFormat E5M2Format() {
  SmallFormat f;
  for (int c = 0; c < 0x7c; ++c) f.values.push_back({F8E5M2ToFloat(static_cast<uint8_t>(c)), static_cast<uint8_t>(c)});
  f.overflow_value = 65536.0;  // 0x7c = inf, one binade step above the max finite 57344
  f.overflow_code = 0x7c;
  f.sign_bit = 0x80;
  return f;
}

// Random floats spread over many binades around [2^lo, 2^hi), both signs.
std::vector<float> RandomFloats(size_t n, int lo, int hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> exp_dist(lo, hi - 1);
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  std::vector<float> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    float v = std::ldexp(mant(rng), exp_dist(rng));
    out.push_back((rng() & 1) ? -v : v);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Names and sizes
// ---------------------------------------------------------------------------------------------------------------

constexpr DType kAllDTypes[] = {DType::kBool, DType::kU8,   DType::kI8,   DType::kI16,     DType::kU16,
                                DType::kI32,  DType::kU32,  DType::kI64,  DType::kU64,     DType::kF16,
                                DType::kBF16, DType::kF32,  DType::kF64,  DType::kF8E4M3, DType::kF8E5M2,
                                DType::kF8E8M0};

TEST(DTypeTest, NameParsesBackToTheSameDType) {
  for (DType d : kAllDTypes) {
    auto parsed = ParseDType(DTypeName(d));
    ASSERT_TRUE(parsed.has_value()) << DTypeName(d);
    EXPECT_EQ(*parsed, d) << DTypeName(d);
  }
}

TEST(DTypeTest, SafetensorsAndTorchSpellings) {
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(DTypeName(DType::kF8E4M3), "F8_E4M3");
  EXPECT_EQ(DTypeName(DType::kF8E5M2), "F8_E5M2");
  EXPECT_EQ(DTypeName(DType::kI32), "I32");
  EXPECT_EQ(TorchDTypeName(DType::kBF16), "torch.bfloat16");
  EXPECT_EQ(TorchDTypeName(DType::kF8E4M3), "torch.float8_e4m3fn");
  EXPECT_EQ(TorchDTypeName(DType::kU8), "torch.uint8");
  EXPECT_EQ(TorchDTypeName(DType::kF16), "torch.float16");
}

TEST(DTypeTest, UnknownNamesAreRejected) {
  EXPECT_FALSE(ParseDType("bf16").has_value());  // case matters in safetensors headers
  EXPECT_FALSE(ParseDType("F8_E4M3FN").has_value());
  EXPECT_FALSE(ParseDType("").has_value());
  EXPECT_FALSE(ParseDType("torch.bfloat16").has_value());
}

TEST(DTypeTest, SizesAndFloatness) {
  EXPECT_EQ(DTypeSize(DType::kBool), 1u);
  EXPECT_EQ(DTypeSize(DType::kI16), 2u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kI32), 4u);
  EXPECT_EQ(DTypeSize(DType::kI64), 8u);
  EXPECT_EQ(DTypeSize(DType::kF64), 8u);
  EXPECT_EQ(DTypeSize(DType::kF8E4M3), 1u);
  EXPECT_EQ(DTypeSize(DType::kF8E8M0), 1u);
  EXPECT_TRUE(IsFloatingPoint(DType::kBF16));
  EXPECT_TRUE(IsFloatingPoint(DType::kF8E4M3));
  EXPECT_FALSE(IsFloatingPoint(DType::kI32));
  EXPECT_FALSE(IsFloatingPoint(DType::kU8));
  EXPECT_FALSE(IsFloatingPoint(DType::kBool));
}

// ---------------------------------------------------------------------------------------------------------------
// bfloat16
// ---------------------------------------------------------------------------------------------------------------

TEST(BF16Test, EveryBitPatternRoundTrips) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    float f = BF16ToFloat(static_cast<uint16_t>(h));
    uint16_t back = FloatToBF16(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(BF16ToFloat(back))) << std::hex << h;
      EXPECT_EQ(back & 0x8000, h & 0x8000) << "NaN keeps its sign " << std::hex << h;
    } else {
      ASSERT_EQ(back, h) << std::hex << h;
    }
  }
}

TEST(BF16Test, EveryMidpointRoundsToEven) {
  // Between bf16 values h and h+1 the float (h << 16) | 0x8000 is an exact tie.
  for (uint32_t h = 0; h < 0xffff; ++h) {
    if ((h & 0x7f80u) == 0x7f80u) continue;  // inf / NaN
    uint32_t mid = (h << 16) | 0x8000u;
    uint16_t expected = (h & 1u) ? static_cast<uint16_t>(h + 1) : static_cast<uint16_t>(h);
    ASSERT_EQ(FloatToBF16(BitsFloat(mid)), expected) << std::hex << "tie above " << h;
    // One float ulp either side of the tie is no longer a tie.
    ASSERT_EQ(FloatToBF16(BitsFloat(mid - 1)), h) << std::hex << h;
    ASSERT_EQ(FloatToBF16(BitsFloat(mid + 1)), static_cast<uint16_t>(h + 1)) << std::hex << h;
  }
}

TEST(BF16Test, KnownValues) {
  EXPECT_EQ(FloatToBF16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBF16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToBF16(1.0f + 0x1p-8f), 0x3f80);        // tie between 1 and 1+2^-7: even (1)
  EXPECT_EQ(FloatToBF16(1.0f + 3 * 0x1p-8f), 0x3f82);    // tie between 1+2^-7 and 1+2^-6: even (1+2^-6)
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::max()), 0x7f80);  // rounds to +inf, as torch does
  EXPECT_EQ(FloatToBF16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(FloatToBF16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(RoundBF16(0.1f), BitsFloat(0x3dcd0000u));
}

TEST(BF16Test, NaNStaysQuietNaN) {
  // A signalling NaN whose payload lies only in the low 16 bits must not turn into infinity.
  uint16_t b = FloatToBF16(BitsFloat(0x7f800001u));
  EXPECT_TRUE(std::isnan(BF16ToFloat(b)));
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(BitsFloat(0xffc00000u)))));
  EXPECT_EQ(FloatToBF16(BitsFloat(0xffc00000u)) & 0x8000, 0x8000);
}

TEST(BF16Test, RandomFloatsMatchReference) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 2'000'000; ++i) {
    float f = BitsFloat(rng());
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToBF16(f), RefBF16(f)) << std::hex << FloatBits(f);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// float16 against GCC's _Float16
// ---------------------------------------------------------------------------------------------------------------

TEST(F16Test, EveryBitPatternDecodesLikeGcc) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    float ours = F16ToFloat(static_cast<uint16_t>(h));
    float gcc = GccF16ToFloat(static_cast<uint16_t>(h));
    if (std::isnan(gcc)) {
      ASSERT_TRUE(std::isnan(ours)) << std::hex << h;
    } else {
      ASSERT_EQ(FloatBits(ours), FloatBits(gcc)) << std::hex << h;
    }
  }
}

TEST(F16Test, EveryBitPatternRoundTrips) {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    float f = F16ToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(f)))) << std::hex << h;
      continue;
    }
    ASSERT_EQ(FloatToF16(f), h) << std::hex << h;
  }
}

TEST(F16Test, EveryMidpointAndNeighbourEncodesLikeGcc) {
  // The exact midpoint between consecutive fp16 values needs 12 significant bits: representable in float.
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    for (uint32_t sign : {0u, 0x8000u}) {
      double lo = F16ToFloat(static_cast<uint16_t>(h | sign));
      double hi = (h + 1 == 0x7c00) ? (sign ? -65536.0 : 65536.0) : F16ToFloat(static_cast<uint16_t>((h + 1) | sign));
      float mid = static_cast<float>((lo + hi) / 2);
      ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2);
      for (float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, mid * 2)}) {
        ASSERT_EQ(FloatToF16(f), GccF16Bits(f)) << std::hex << FloatBits(f);
      }
    }
  }
}

TEST(F16Test, RandomFloatsEncodeLikeGcc) {
  std::mt19937 rng(99);
  for (int i = 0; i < 2'000'000; ++i) {
    float f = BitsFloat(rng());
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(f))));
      continue;
    }
    ASSERT_EQ(FloatToF16(f), GccF16Bits(f)) << std::hex << FloatBits(f);
  }
  // Concentrated on the fp16 range, subnormals and the overflow edge included.
  for (float f : RandomFloats(2'000'000, -26, 17, 7)) {
    ASSERT_EQ(FloatToF16(f), GccF16Bits(f)) << std::hex << FloatBits(f);
  }
}

TEST(F16Test, EdgeValues) {
  EXPECT_EQ(FloatToF16(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToF16(65519.99f), 0x7bff);  // below the tie with 65536 rounds down
  EXPECT_EQ(FloatToF16(65520.0f), 0x7c00);   // tie with "65536" rounds to even: infinity
  EXPECT_EQ(FloatToF16(-1e9f), 0xfc00);
  EXPECT_EQ(FloatToF16(0x1p-24f), 0x0001);   // smallest subnormal
  EXPECT_EQ(FloatToF16(0x1p-25f), 0x0000);   // tie with 0 -> even (0)
  EXPECT_EQ(FloatToF16(-0x1p-25f), 0x8000);  // keeps the sign
  EXPECT_EQ(FloatToF16(3 * 0x1p-25f), 0x0002);
  EXPECT_EQ(RoundF16(1.0f / 3.0f), GccF16ToFloat(GccF16Bits(1.0f / 3.0f)));
}

// ---------------------------------------------------------------------------------------------------------------
// float8 e4m3fn
// ---------------------------------------------------------------------------------------------------------------

TEST(F8E4M3Test, EveryBitPatternRoundTrips) {
  for (int b = 0; b < 256; ++b) {
    float f = F8E4M3ToFloat(static_cast<uint8_t>(b));
    if ((b & 0x7f) == 0x7f) {
      EXPECT_TRUE(std::isnan(f)) << b;
      continue;
    }
    ASSERT_FALSE(std::isnan(f)) << b;
    ASSERT_EQ(FloatToF8E4M3(f), b) << b << " = " << f;
  }
}

TEST(F8E4M3Test, DecodeMatchesTheFormatDefinition) {
  for (int b = 0; b < 256; ++b) {
    if ((b & 0x7f) == 0x7f) continue;
    int exp = (b >> 3) & 0xf, mant = b & 7;
    double v = exp == 0 ? mant * std::ldexp(1.0, -9) : (1.0 + mant / 8.0) * std::ldexp(1.0, exp - 7);
    if (b & 0x80) v = -v;
    ASSERT_EQ(static_cast<double>(F8E4M3ToFloat(static_cast<uint8_t>(b))), v) << b;
  }
}

TEST(F8E4M3Test, KnownValues) {
  EXPECT_EQ(F8E4M3ToFloat(0x7e), 448.0f);
  EXPECT_EQ(F8E4M3ToFloat(0xfe), -448.0f);
  EXPECT_EQ(F8E4M3ToFloat(0x38), 1.0f);
  EXPECT_EQ(F8E4M3ToFloat(0x01), 0x1p-9f);  // smallest subnormal
  EXPECT_EQ(F8E4M3ToFloat(0x08), 0x1p-6f);  // smallest normal
  EXPECT_EQ(F8E4M3ToFloat(0x07), 7 * 0x1p-9f);
  EXPECT_EQ(FloatToF8E4M3(0.0f), 0x00);
  EXPECT_EQ(FloatToF8E4M3(-0.0f), 0x80);
  EXPECT_EQ(kF8E4M3Max, 448.0f);
}

TEST(F8E4M3Test, TiesRoundToEvenAndOverflowIsNaN) {
  EXPECT_EQ(FloatToF8E4M3(0x1p-10f), 0x00);      // tie 0 / 2^-9 -> 0
  EXPECT_EQ(FloatToF8E4M3(3 * 0x1p-10f), 0x02);  // tie code 1 / code 2 -> 2
  EXPECT_EQ(FloatToF8E4M3(1.0625f), 0x38);       // tie 1 / 1.125 -> 1 (mantissa 000)
  EXPECT_EQ(FloatToF8E4M3(1.1875f), 0x3a);       // tie 1.125 / 1.25 -> 1.25 (mantissa 010)
  EXPECT_EQ(FloatToF8E4M3(464.0f), 0x7e);        // tie 448 / (480) -> 448
  EXPECT_EQ(FloatToF8E4M3(-464.0f), 0xfe);
  EXPECT_EQ(FloatToF8E4M3(465.0f) & 0x7f, 0x7f);  // rounds above 448: NaN, as torch
  EXPECT_EQ(FloatToF8E4M3(1e6f), 0x7f);
  EXPECT_EQ(FloatToF8E4M3(-std::numeric_limits<float>::infinity()), 0xff);
  EXPECT_TRUE(std::isnan(RoundF8E4M3(std::numeric_limits<float>::quiet_NaN())));
}

TEST(F8E4M3Test, EveryMidpointMatchesReference) {
  SmallFormat fmt = E4M3Format();
  for (size_t i = 0; i + 1 < fmt.values.size(); ++i) {
    double lo = fmt.values[i].first, hi = fmt.values[i + 1].first;
    float mid = static_cast<float>((lo + hi) / 2);
    for (float f : {mid, -mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
      ASSERT_EQ(FloatToF8E4M3(f), RefEncode(f, fmt)) << f;
    }
  }
}

TEST(F8E4M3Test, RandomFloatsMatchReference) {
  SmallFormat fmt = E4M3Format();
  for (float f : RandomFloats(300'000, -14, 10, 3)) {
    ASSERT_EQ(FloatToF8E4M3(f), RefEncode(f, fmt)) << f;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// float8 e5m2
// ---------------------------------------------------------------------------------------------------------------

TEST(F8E5M2Test, EveryBitPatternRoundTrips) {
  for (int b = 0; b < 256; ++b) {
    float f = F8E5M2ToFloat(static_cast<uint8_t>(b));
    int mag = b & 0x7f;
    if (mag > 0x7c) {
      EXPECT_TRUE(std::isnan(f)) << b;
      continue;
    }
    if (mag == 0x7c) {
      EXPECT_TRUE(std::isinf(f)) << b;
    }
    ASSERT_EQ(FloatToF8E5M2(f), b) << b << " = " << f;
  }
}

TEST(F8E5M2Test, KnownValuesAndOverflow) {
  EXPECT_EQ(F8E5M2ToFloat(0x7b), 57344.0f);
  EXPECT_EQ(F8E5M2ToFloat(0x3c), 1.0f);
  EXPECT_EQ(F8E5M2ToFloat(0x01), 0x1p-16f);
  EXPECT_EQ(FloatToF8E5M2(61439.0f), 0x7b);
  EXPECT_EQ(FloatToF8E5M2(61440.0f), 0x7c);  // tie max / inf -> inf (even)
  EXPECT_EQ(FloatToF8E5M2(-1e30f), 0xfc);
  EXPECT_TRUE(std::isnan(F8E5M2ToFloat(FloatToF8E5M2(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(F8E5M2Test, RandomFloatsAndMidpointsMatchReference) {
  SmallFormat fmt = E5M2Format();
  for (float f : RandomFloats(300'000, -18, 17, 5)) {
    ASSERT_EQ(FloatToF8E5M2(f), RefEncode(f, fmt)) << f;
  }
  for (size_t i = 0; i + 1 < fmt.values.size(); ++i) {
    float mid = static_cast<float>((fmt.values[i].first + fmt.values[i + 1].first) / 2);
    ASSERT_EQ(FloatToF8E5M2(mid), RefEncode(mid, fmt)) << mid;
    ASSERT_EQ(FloatToF8E5M2(-mid), RefEncode(-mid, fmt)) << -mid;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// e8m0
// ---------------------------------------------------------------------------------------------------------------

TEST(E8M0Test, EveryCodeIsAPowerOfTwo) {
  for (int e = 1; e < 255; ++e) {
    ASSERT_EQ(E8M0ToFloat(static_cast<uint8_t>(e)), std::ldexp(1.0f, e - 127)) << e;
  }
  EXPECT_EQ(E8M0ToFloat(127), 1.0f);
  EXPECT_EQ(E8M0ToFloat(0), std::ldexp(1.0f, -127));  // subnormal in fp32, not zero
  EXPECT_GT(E8M0ToFloat(0), 0.0f);
  EXPECT_EQ(E8M0ToFloat(254), std::ldexp(1.0f, 127));
  EXPECT_TRUE(std::isnan(E8M0ToFloat(255)));
}

// ---------------------------------------------------------------------------------------------------------------
// fp4 e2m1
// ---------------------------------------------------------------------------------------------------------------

TEST(FP4Test, CodeTable) {
  const float kMag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  for (int c = 0; c < 16; ++c) {
    float v = FP4ToFloat(static_cast<uint8_t>(c));
    EXPECT_EQ(std::fabs(v), kMag[c & 7]) << c;
    EXPECT_EQ(std::signbit(v), (c & 8) != 0) << c;
  }
  EXPECT_EQ(kFP4Max, 6.0f);
}

TEST(FP4Test, EveryNonZeroCodeRoundTrips) {
  for (int c = 0; c < 16; ++c) {
    if (c == 8) continue;  // -0: see NegativeZeroRule
    EXPECT_EQ(FloatToFP4(FP4ToFloat(static_cast<uint8_t>(c))), c) << c;
  }
}

TEST(FP4Test, TiesGoToTheEvenCode) {
  struct Case {
    float in;
    uint8_t code;
  };
  const Case kCases[] = {{0.25f, 0}, {0.75f, 2}, {1.25f, 2}, {1.75f, 4}, {2.5f, 4}, {3.5f, 6}, {5.0f, 6}};
  for (const auto& c : kCases) {
    EXPECT_EQ(FloatToFP4(c.in), c.code) << c.in;
    EXPECT_EQ(FloatToFP4(-c.in), (c.code == 0 ? 8 : c.code | 8)) << -c.in;
  }
  // Just off a tie goes to the nearer value.
  EXPECT_EQ(FloatToFP4(std::nextafter(0.25f, 1.0f)), 1);
  EXPECT_EQ(FloatToFP4(std::nextafter(0.75f, 0.0f)), 1);
  EXPECT_EQ(FloatToFP4(std::nextafter(5.0f, 6.0f)), 7);
}

TEST(FP4Test, NegativeZeroRule) {
  // Exact zeros of either sign give code 0; a negative value that rounds to zero gives -0 (code 8).
  EXPECT_EQ(FloatToFP4(0.0f), 0);
  EXPECT_EQ(FloatToFP4(-0.0f), 0);
  EXPECT_EQ(FloatToFP4(-0.1f), 8);
  EXPECT_EQ(FloatToFP4(-0.25f), 8);
  EXPECT_EQ(FloatToFP4(0.1f), 0);
  EXPECT_EQ(FloatToFP4(-std::numeric_limits<float>::denorm_min()), 8);
}

TEST(FP4Test, SaturationAndNaN) {
  EXPECT_EQ(FloatToFP4(6.0f), 7);
  EXPECT_EQ(FloatToFP4(100.0f), 7);
  EXPECT_EQ(FloatToFP4(-100.0f), 15);
  EXPECT_EQ(FloatToFP4(std::numeric_limits<float>::infinity()), 7);
  EXPECT_EQ(FloatToFP4(std::numeric_limits<float>::quiet_NaN()), 0);
}

TEST(FP4Test, RandomFloatsMatchBruteForceNearest) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> dist(-6.5f, 6.5f);
  for (int i = 0; i < 200'000; ++i) {
    float f = dist(rng);
    // Brute force over the 8 magnitudes; ties to the even code; sign from the input.
    float a = std::fabs(f);
    int best = 0;
    float best_err = INFINITY;
    for (int c = 0; c < 8; ++c) {
      float err = std::fabs(FP4ToFloat(static_cast<uint8_t>(c)) - a);
      if (err < best_err || (err == best_err && c % 2 == 0)) {
        best_err = err;
        best = c;
      }
    }
    int expected = best | (f < 0.0f ? 8 : 0);
    ASSERT_EQ(FloatToFP4(f), expected) << f;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// LoadAsFloat
// ---------------------------------------------------------------------------------------------------------------

template <class T>
std::vector<uint8_t> Bytes(std::initializer_list<T> values) {
  std::vector<uint8_t> out(values.size() * sizeof(T));
  size_t i = 0;
  for (T v : values) std::memcpy(out.data() + sizeof(T) * i++, &v, sizeof(T));
  return out;
}

TEST(LoadAsFloatTest, EveryDType) {
  EXPECT_EQ(LoadAsFloat(Bytes<uint8_t>({0, 1}).data(), DType::kBool, 1), 1.0f);
  EXPECT_EQ(LoadAsFloat(Bytes<uint8_t>({7, 200}).data(), DType::kU8, 1), 200.0f);
  EXPECT_EQ(LoadAsFloat(Bytes<int8_t>({7, -3}).data(), DType::kI8, 1), -3.0f);
  EXPECT_EQ(LoadAsFloat(Bytes<int16_t>({1, -300}).data(), DType::kI16, 1), -300.0f);
  EXPECT_EQ(LoadAsFloat(Bytes<uint16_t>({1, 60000}).data(), DType::kU16, 1), 60000.0f);
  EXPECT_EQ(LoadAsFloat(Bytes<int32_t>({1, -70000}).data(), DType::kI32, 1), -70000.0f);
  EXPECT_EQ(LoadAsFloat(Bytes<uint32_t>({1, 3000000000u}).data(), DType::kU32, 1), 3e9f);
  EXPECT_EQ(LoadAsFloat(Bytes<int64_t>({1, -(int64_t{1} << 40)}).data(), DType::kI64, 1), -0x1p40f);
  EXPECT_EQ(LoadAsFloat(Bytes<uint64_t>({1, uint64_t{1} << 63}).data(), DType::kU64, 1), 0x1p63f);
  EXPECT_EQ(LoadAsFloat(Bytes<double>({1.0, -2.5}).data(), DType::kF64, 1), -2.5f);
  EXPECT_EQ(LoadAsFloat(Bytes<float>({1.0f, 0.1f}).data(), DType::kF32, 1), 0.1f);
  EXPECT_EQ(LoadAsFloat(Bytes<uint16_t>({0, 0x3f80}).data(), DType::kBF16, 1), 1.0f);
  EXPECT_EQ(LoadAsFloat(Bytes<uint16_t>({0, 0xc000}).data(), DType::kF16, 1), -2.0f);
  EXPECT_EQ(LoadAsFloat(Bytes<uint8_t>({0, 0x7e}).data(), DType::kF8E4M3, 1), 448.0f);
  EXPECT_EQ(LoadAsFloat(Bytes<uint8_t>({0, 0x3c}).data(), DType::kF8E5M2, 1), 1.0f);
  EXPECT_EQ(LoadAsFloat(Bytes<uint8_t>({0, 130}).data(), DType::kF8E8M0, 1), 8.0f);
}

TEST(LoadAsFloatTest, ReadsUnalignedElements) {
  // Element 1 of a BF16 buffer that starts at an odd address.
  std::vector<uint8_t> buf = {0xaa, 0x00, 0x00, 0x80, 0x3f};
  EXPECT_EQ(LoadAsFloat(buf.data() + 1, DType::kBF16, 1), 1.0f);
}

}  // namespace
}  // namespace llmc
