#include "engine/quant/weight_quantizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <tuple>
#include <string>
#include <thread>
#include <vector>

namespace llmc {
namespace {

using ::testing::HasSubstr;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

constexpr char kModule[] = "model.layers.3.mlp.down_proj";

// A row-major weight stored in `dtype`, with the float value of every stored element.
struct Weight {
  DType dtype;
  int64_t rows;
  int64_t cols;
  std::vector<uint8_t> bytes;
  std::vector<float> values;

  WeightView View(absl::string_view module = kModule) const { return {module, bytes.data(), dtype, rows, cols}; }
  float at(int64_t r, int64_t c) const { return values[r * cols + c]; }
};

void Store(Weight& w, int64_t i, float v) {
  if (w.dtype == DType::kBF16) {
    uint16_t h = FloatToBF16(v);
    std::memcpy(w.bytes.data() + 2 * i, &h, 2);
    w.values[i] = BF16ToFloat(h);
  } else if (w.dtype == DType::kF16) {
    uint16_t h = FloatToF16(v);
    std::memcpy(w.bytes.data() + 2 * i, &h, 2);
    w.values[i] = F16ToFloat(h);
  } else {
    std::memcpy(w.bytes.data() + 4 * i, &v, 4);
    w.values[i] = v;
  }
}

// N(0, 0.02) weights with a few large outliers per row (as real LLM weights have).
Weight RandomWeight(int64_t rows, int64_t cols, DType dtype, uint32_t seed, float outlier_rate = 0.01f) {
  Weight w{dtype, rows, cols, std::vector<uint8_t>(rows * cols * DTypeSize(dtype)), std::vector<float>(rows * cols)};
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  for (int64_t i = 0; i < rows * cols; ++i) {
    float v = normal(rng);
    if (uni(rng) < outlier_rate) v *= 12.0f;
    Store(w, i, v);
  }
  return w;
}

QuantArgs IntArgs(int bits, bool symmetric, std::optional<int> group) {
  QuantArgs a;
  a.num_bits = bits;
  a.type = QuantType::kInt;
  a.symmetric = symmetric;
  a.group_size = group;
  a.strategy = group ? Strategy::kGroup : Strategy::kChannel;
  if (!symmetric) a.zp_dtype = "torch.int8";
  return a;
}

QuantArgs PresetWeights(const std::string& name) {
  auto s = PresetScheme(name);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() && s->weights ? *s->weights : QuantArgs{};
}

// Scale (as stored) that applies to element (r, c) of a weight quantized with `a`.
float ScaleAt(const std::vector<uint8_t>& scale, DType dtype, const QuantArgs& a, int64_t rows, int64_t cols, int64_t r,
              int64_t c) {
  switch (a.strategy) {
    case Strategy::kTensor: return LoadAsFloat(scale.data(), dtype, 0);
    case Strategy::kChannel: return LoadAsFloat(scale.data(), dtype, r);
    case Strategy::kGroup:
    case Strategy::kTensorGroup: return LoadAsFloat(scale.data(), dtype, r * (cols / *a.group_size) + c / *a.group_size);
    case Strategy::kBlock: {
      int64_t br = (*a.block_structure)[0], bc = (*a.block_structure)[1];
      int64_t scale_cols = (cols + bc - 1) / bc;
      return LoadAsFloat(scale.data(), dtype, (r / br) * scale_cols + c / bc);
    }
    default: return NAN;
  }
}

// Half the distance to the next fp4 value for a magnitude |x| <= 6 (and the clamp error above 6, at most 1).
float Fp4HalfGap(float ax) { return ax <= 2.0f ? 0.25f : ax <= 4.0f ? 0.5f : 1.0f; }

// Relative rounding of the weight dtype (half an ulp), used for the intermediate roundings the library does.
float DTypeHalfUlp(DType d) { return d == DType::kBF16 ? 0x1p-8f : d == DType::kF16 ? 0x1p-11f : 0x1p-24f; }

// ---------------------------------------------------------------------------------------------------------------
// PackInt32 / UnpackInt32 (FORMAT.md section 6)
// ---------------------------------------------------------------------------------------------------------------

TEST(PackInt32Test, FourBitExampleFromTheFormatDoc) {
  const int8_t q[8] = {1, 2, 3, 4, 5, 6, 7, 0};
  auto packed = PackInt32(q, 1, 8, 4, 1);
  ASSERT_EQ(packed.size(), 1u);
  EXPECT_EQ(static_cast<uint32_t>(packed[0]), 0x8FEDCBA9u);
}

TEST(PackInt32Test, EightBitExampleFromTheFormatDoc) {
  const int8_t q[4] = {1, -1, 127, -128};
  auto packed = PackInt32(q, 1, 4, 8, 1);
  ASSERT_EQ(packed.size(), 1u);
  EXPECT_EQ(static_cast<uint32_t>(packed[0]), 0x00FF7F81u);
}

TEST(PackInt32Test, AlongDimZeroPacksColumns) {
  // The same values as the 4-bit example, as a column: zero points are packed this way.
  const int8_t q[8] = {1, 2, 3, 4, 5, 6, 7, 0};
  auto packed = PackInt32(q, 8, 1, 4, 0);
  ASSERT_EQ(packed.size(), 1u);
  EXPECT_EQ(static_cast<uint32_t>(packed[0]), 0x8FEDCBA9u);
  // Two columns interleave: word j holds column j.
  const int8_t q2[4] = {1, -8, 2, 7};  // [[1, -8], [2, 7]]
  auto p2 = PackInt32(q2, 2, 2, 4, 0);
  ASSERT_EQ(p2.size(), 2u);
  EXPECT_EQ(static_cast<uint32_t>(p2[0]), 0xA9u);  // 1+8=9, 2+8=10
  EXPECT_EQ(static_cast<uint32_t>(p2[1]), 0xF0u);  // -8+8=0, 7+8=15
}

TEST(PackInt32Test, PartialWordIsZeroPadded) {
  std::vector<int8_t> q(9, 0);  // unsigned 8 each
  auto packed = PackInt32(q.data(), 1, 9, 4, 1);
  ASSERT_EQ(packed.size(), 2u);
  EXPECT_EQ(static_cast<uint32_t>(packed[0]), 0x88888888u);
  EXPECT_EQ(static_cast<uint32_t>(packed[1]), 0x00000008u);
}

TEST(PackInt32Test, ThreeBitsUseTenValuesPerWord) {
  std::vector<int8_t> q(10, 3);  // unsigned 7 = 0b111, 10 of them: bits 0..29 set
  auto packed = PackInt32(q.data(), 1, 10, 3, 1);
  ASSERT_EQ(packed.size(), 1u);
  EXPECT_EQ(static_cast<uint32_t>(packed[0]), 0x3FFFFFFFu);
}

TEST(PackInt32Test, RoundTripsForEveryWidthDimAndAwkwardSize) {
  std::mt19937 rng(5);
  for (int bits = 2; bits <= 8; ++bits) {
    const int pf = 32 / bits;
    std::uniform_int_distribution<int> dist(-(1 << (bits - 1)), (1 << (bits - 1)) - 1);
    for (int dim : {0, 1}) {
      for (int64_t rows : {1, 3, 17}) {
        for (int64_t cols : {1, 5, 17, 33}) {
          std::vector<int8_t> q(rows * cols);
          for (auto& v : q) v = static_cast<int8_t>(dist(rng));
          auto packed = PackInt32(q.data(), rows, cols, bits, dim);
          size_t expected_words = dim == 1 ? rows * ((cols + pf - 1) / pf) : ((rows + pf - 1) / pf) * cols;
          ASSERT_EQ(packed.size(), expected_words) << bits << " " << dim << " " << rows << "x" << cols;
          auto back = UnpackInt32(packed.data(), rows, cols, bits, dim);
          ASSERT_EQ(back, q) << "bits " << bits << " dim " << dim << " " << rows << "x" << cols;
        }
      }
    }
  }
}

TEST(PackInt32Test, ExtremesSurviveForEveryWidth) {
  for (int bits = 2; bits <= 8; ++bits) {
    const int8_t lo = static_cast<int8_t>(-(1 << (bits - 1))), hi = static_cast<int8_t>((1 << (bits - 1)) - 1);
    std::vector<int8_t> q = {lo, hi, lo, hi, 0, -1, hi};
    for (int dim : {0, 1}) {
      int64_t rows = dim == 0 ? 7 : 1, cols = dim == 0 ? 1 : 7;
      auto packed = PackInt32(q.data(), rows, cols, bits, dim);
      EXPECT_EQ(UnpackInt32(packed.data(), rows, cols, bits, dim), q) << bits << " " << dim;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Plans
// ---------------------------------------------------------------------------------------------------------------

TEST(PlanTest, TensorsPerFormatMatchFormatDoc) {
  struct Expect {
    std::string suffix;
    DType dtype;
    std::vector<int64_t> shape;
  };
  auto check = [](const std::string& preset, const std::string& format, std::vector<Expect> expected) {
    auto plan = PlanQuantizedWeight(kModule, 64, 256, DType::kBF16, PresetWeights(preset), format);
    ASSERT_TRUE(plan.ok()) << preset << ": " << plan.status();
    ASSERT_EQ(plan->size(), expected.size()) << preset;
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ((*plan)[i].suffix, expected[i].suffix) << preset;
      EXPECT_EQ((*plan)[i].dtype, expected[i].dtype) << preset << " " << expected[i].suffix;
      EXPECT_EQ((*plan)[i].shape, expected[i].shape) << preset << " " << expected[i].suffix;
    }
  };
  // [N, K] = [64, 256]
  check("W4A16", "pack-quantized",
        {{"weight_packed", DType::kI32, {64, 32}}, {"weight_scale", DType::kBF16, {64, 2}}, {"weight_shape", DType::kI64, {2}}});
  check("W4A16_ASYM", "pack-quantized",
        {{"weight_packed", DType::kI32, {64, 32}},
         {"weight_scale", DType::kBF16, {64, 2}},
         {"weight_shape", DType::kI64, {2}},
         {"weight_zero_point", DType::kI32, {8, 2}}});
  check("W8A16", "pack-quantized",
        {{"weight_packed", DType::kI32, {64, 64}}, {"weight_scale", DType::kBF16, {64, 2}}, {"weight_shape", DType::kI64, {2}}});
  check("W8A8", "int-quantized", {{"weight", DType::kI8, {64, 256}}, {"weight_scale", DType::kBF16, {64, 1}}});
  check("FP8_DYNAMIC", "float-quantized", {{"weight", DType::kF8E4M3, {64, 256}}, {"weight_scale", DType::kBF16, {64, 1}}});
  check("FP8", "float-quantized", {{"weight", DType::kF8E4M3, {64, 256}}, {"weight_scale", DType::kBF16, {1}}});
  check("FP8_BLOCK", "float-quantized", {{"weight", DType::kF8E4M3, {64, 256}}, {"weight_scale", DType::kBF16, {1, 2}}});
  check("NVFP4A16", "nvfp4-pack-quantized",
        {{"weight_packed", DType::kU8, {64, 128}},
         {"weight_scale", DType::kF8E4M3, {64, 16}},
         {"weight_global_scale", DType::kF32, {1}}});
  check("MXFP4A16", "mxfp4-pack-quantized", {{"weight_packed", DType::kU8, {64, 128}}, {"weight_scale", DType::kU8, {64, 8}}});
  check("MXFP8A16", "mxfp8-quantized", {{"weight", DType::kF8E4M3, {64, 256}}, {"weight_scale", DType::kU8, {64, 8}}});
}

TEST(PlanTest, GroupSizeThatDoesNotDivideNamesTheModuleAndTheWayOut) {
  auto plan = PlanQuantizedWeight(kModule, 64, 200, DType::kBF16, PresetWeights("W4A16"), "pack-quantized");
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(plan.status()), HasSubstr(kModule));
  EXPECT_THAT(Msg(plan.status()), HasSubstr("200"));
  EXPECT_THAT(Msg(plan.status()), HasSubstr("group_size 128"));
  EXPECT_THAT(Msg(plan.status()), HasSubstr("group size that divides"));
  EXPECT_THAT(Msg(plan.status()), HasSubstr("ignore"));

  Weight w = RandomWeight(4, 200, DType::kBF16, 1);
  auto q = QuantizeWeight(w.View(), PresetWeights("W4A16"), "pack-quantized");
  ASSERT_FALSE(q.ok());
  EXPECT_THAT(Msg(q.status()), HasSubstr(kModule));
  EXPECT_THAT(Msg(q.status()), HasSubstr("ignore"));

  auto nv = PlanQuantizedWeight(kModule, 64, 40, DType::kBF16, PresetWeights("NVFP4A16"), "nvfp4-pack-quantized");
  ASSERT_FALSE(nv.ok());
  EXPECT_THAT(Msg(nv.status()), HasSubstr(kModule));
  EXPECT_THAT(Msg(nv.status()), HasSubstr("group_size 16"));
}

TEST(PlanTest, UnsupportedCombinationsNameTheModule) {
  struct Case {
    std::string preset;
    std::string format;
    DType dtype;
  };
  const Case kCases[] = {{"FP8_DYNAMIC", "pack-quantized", DType::kBF16},   // float weights cannot be int-packed
                         {"W4A16", "float-quantized", DType::kBF16},        // int weights are not fp8
                         {"W4A16", "nvfp4-pack-quantized", DType::kBF16},
                         {"NVFP4A16", "mxfp4-pack-quantized", DType::kBF16},  // needs E8M0 scales
                         {"W4A16", "sparse-24-bitmask", DType::kBF16},        // unknown format
                         {"W4A16", "pack-quantized", DType::kF8E4M3},         // already quantized
                         {"W4A16", "pack-quantized", DType::kI32}};
  for (const auto& c : kCases) {
    auto plan = PlanQuantizedWeight(kModule, 64, 256, c.dtype, PresetWeights(c.preset), c.format);
    ASSERT_FALSE(plan.ok()) << c.preset << " " << c.format;
    EXPECT_THAT(Msg(plan.status()), HasSubstr(kModule)) << c.preset << " " << c.format;
  }
  auto empty = PlanQuantizedWeight(kModule, 0, 256, DType::kBF16, PresetWeights("W4A16"), "pack-quantized");
  EXPECT_FALSE(empty.ok());
}

// ---------------------------------------------------------------------------------------------------------------
// QuantizeWeight + DequantizeWeight: error bounds per format
// ---------------------------------------------------------------------------------------------------------------

struct Quantized {
  std::vector<std::vector<uint8_t>> tensors;
  std::vector<float> dq;
};

Quantized QuantizeAndBack(const Weight& w, const QuantArgs& a, const std::string& format) {
  Quantized out;
  auto q = QuantizeWeight(w.View(), a, format);
  EXPECT_TRUE(q.ok()) << format << ": " << q.status();
  if (!q.ok()) return out;
  auto plan = PlanQuantizedWeight(kModule, w.rows, w.cols, w.dtype, a, format);
  EXPECT_TRUE(plan.ok());
  EXPECT_EQ(q->size(), plan->size());
  for (size_t i = 0; i < std::min(q->size(), plan->size()); ++i) EXPECT_EQ((*q)[i].size(), (*plan)[i].nbytes());
  auto dq = DequantizeWeight(w.rows, w.cols, w.dtype, a, format, *q);
  EXPECT_TRUE(dq.ok()) << dq.status();
  if (!dq.ok()) return out;
  out.tensors = std::move(*q);
  out.dq = std::move(*dq);
  return out;
}

// Symmetric/asymmetric int: |w - dq| <= scale/2, plus the library's intermediate roundings to the weight dtype:
// of w/scale (|w/scale| <= 2^(b-1)+1 symmetric, <= 2^b+1 asymmetric) and, asymmetric, of w/scale + zp.
void CheckIntBound(const Weight& w, const QuantArgs& a, const std::string& format) {
  Quantized q = QuantizeAndBack(w, a, format);
  ASSERT_FALSE(q.dq.empty());
  const float qrange = static_cast<float>(1 << (a.num_bits - 1)) + 1.0f;
  const float rounding = (a.symmetric ? 1.0f : 3.0f) * qrange * DTypeHalfUlp(w.dtype);
  double worst = 0;
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t c = 0; c < w.cols; ++c) {
      float s = ScaleAt(q.tensors[1], w.dtype, a, w.rows, w.cols, r, c);
      ASSERT_GT(s, 0.0f);
      float err = std::fabs(w.at(r, c) - q.dq[r * w.cols + c]);
      float bound = s * (0.5f + rounding) * (1.0f + 1e-5f);
      ASSERT_LE(err, bound) << format << " bits " << a.num_bits << " at (" << r << ", " << c << "): w " << w.at(r, c)
                            << " dq " << q.dq[r * w.cols + c] << " scale " << s;
      worst = std::max(worst, static_cast<double>(err / s));
    }
  }
  EXPECT_GT(worst, 0.25) << "the bound should be nearly reached on random data";
}

TEST(QuantizeIntTest, W4A16WithinHalfAStep) {
  for (DType d : {DType::kBF16, DType::kF16, DType::kF32}) {
    SCOPED_TRACE(DTypeName(d));
    CheckIntBound(RandomWeight(33, 256, d, 1), PresetWeights("W4A16"), "pack-quantized");
  }
}

TEST(QuantizeIntTest, W4A16AsymWithinHalfAStep) {
  for (DType d : {DType::kBF16, DType::kF32}) {
    SCOPED_TRACE(DTypeName(d));
    CheckIntBound(RandomWeight(17, 384, d, 2), PresetWeights("W4A16_ASYM"), "pack-quantized");
  }
}

TEST(QuantizeIntTest, OtherWidthsAndLayouts) {
  CheckIntBound(RandomWeight(9, 256, DType::kBF16, 3), PresetWeights("W8A16"), "pack-quantized");
  CheckIntBound(RandomWeight(9, 256, DType::kBF16, 4), PresetWeights("W2A16"), "pack-quantized");
  CheckIntBound(RandomWeight(9, 256, DType::kBF16, 5), PresetWeights("W3A16"), "pack-quantized");
  CheckIntBound(RandomWeight(9, 256, DType::kBF16, 6), PresetWeights("W6A16"), "pack-quantized");
  CheckIntBound(RandomWeight(9, 100, DType::kBF16, 7), PresetWeights("W8A8"), "int-quantized");  // channel, odd K
  CheckIntBound(RandomWeight(9, 100, DType::kBF16, 8), IntArgs(4, true, std::nullopt), "pack-quantized");
  CheckIntBound(RandomWeight(9, 100, DType::kBF16, 9), IntArgs(8, false, std::nullopt), "int-quantized");
  CheckIntBound(RandomWeight(9, 100, DType::kBF16, 10), IntArgs(4, false, std::nullopt), "pack-quantized");
}

TEST(QuantizeIntTest, SymmetricScalesAreAmaxOver7Point5RoundedToBF16) {
  Weight w = RandomWeight(8, 256, DType::kBF16, 11);
  QuantArgs a = PresetWeights("W4A16");
  auto q = QuantizeWeight(w.View(), a, "pack-quantized");
  ASSERT_TRUE(q.ok()) << q.status();
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t g = 0; g < 2; ++g) {
      float amax = 0;
      for (int64_t c = g * 128; c < (g + 1) * 128; ++c) amax = std::max(amax, std::fabs(w.at(r, c)));
      EXPECT_EQ(LoadAsFloat((*q)[1].data(), DType::kBF16, r * 2 + g), RoundBF16(amax / 7.5f)) << r << " " << g;
    }
  }
  int64_t shape[2];
  std::memcpy(shape, (*q)[2].data(), 16);
  EXPECT_EQ(shape[0], 8);
  EXPECT_EQ(shape[1], 256);
}

TEST(QuantizeIntTest, AsymmetricZeroPointsFollowTheFormula) {
  Weight w = RandomWeight(16, 256, DType::kBF16, 12);
  // Shift some rows so the range does not straddle 0 symmetrically.
  for (int64_t c = 0; c < w.cols; ++c) Store(w, 3 * w.cols + c, std::fabs(w.at(3, c)) + 0.01f);
  QuantArgs a = PresetWeights("W4A16_ASYM");
  auto q = QuantizeWeight(w.View(), a, "pack-quantized");
  ASSERT_TRUE(q.ok()) << q.status();
  auto zp = UnpackInt32(reinterpret_cast<const int32_t*>((*q)[3].data()), 16, 2, 4, 0);
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t g = 0; g < 2; ++g) {
      float mn = 0, mx = 0;
      for (int64_t c = g * 128; c < (g + 1) * 128; ++c) {
        mn = std::min(mn, w.at(r, c));
        mx = std::max(mx, w.at(r, c));
      }
      float scale = RoundBF16(RoundBF16(mx - mn) / 15.0f);
      float z = std::nearbyint(std::clamp(RoundBF16(-8.0f - RoundBF16(mn / scale)), -8.0f, 7.0f));
      EXPECT_EQ(LoadAsFloat((*q)[1].data(), DType::kBF16, r * 2 + g), scale) << r << " " << g;
      EXPECT_EQ(zp[r * 2 + g], static_cast<int8_t>(z)) << r << " " << g;
    }
  }
  EXPECT_EQ(zp[3 * 2], -8);  // an all-positive group has its minimum (0) at q_min
}

TEST(QuantizeIntTest, AllZeroGroupGetsTheSmallestScaleAndExactZeros) {
  Weight w = RandomWeight(2, 256, DType::kBF16, 13);
  for (int64_t c = 0; c < 128; ++c) Store(w, c, 0.0f);  // row 0, group 0
  QuantArgs a = PresetWeights("W4A16");
  Quantized q = QuantizeAndBack(w, a, "pack-quantized");
  ASSERT_FALSE(q.dq.empty());
  EXPECT_EQ(LoadAsFloat(q.tensors[1].data(), DType::kBF16, 0), 0x1p-7f);  // bf16 eps
  for (int64_t c = 0; c < 128; ++c) EXPECT_EQ(q.dq[c], 0.0f);
}

// ---------------------------------------------------------------------------------------------------------------
// fp8 / nvfp4 / mx
// ---------------------------------------------------------------------------------------------------------------

// fp8 e4m3: relative error 2^-4 (3 mantissa bits) in the normal range, 2^-10 * scale in the subnormal range,
// plus the rounding of w/scale to the weight dtype.
void CheckFp8Bound(const Weight& w, const QuantArgs& a, const std::string& format) {
  Quantized q = QuantizeAndBack(w, a, format);
  ASSERT_FALSE(q.dq.empty());
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t c = 0; c < w.cols; ++c) {
      float s = ScaleAt(q.tensors[1], w.dtype, a, w.rows, w.cols, r, c);
      float x = w.at(r, c);
      float err = std::fabs(x - q.dq[r * w.cols + c]);
      float bound = (std::fabs(x) * (0x1p-4f + 2 * DTypeHalfUlp(w.dtype)) + s * 0x1p-10f) * (1.0f + 1e-5f);
      ASSERT_LE(err, bound) << format << " at (" << r << ", " << c << "): w " << x << " dq " << q.dq[r * w.cols + c]
                            << " scale " << s;
    }
  }
}

TEST(QuantizeFp8Test, PerChannelPerTensorAndBlocks) {
  CheckFp8Bound(RandomWeight(33, 256, DType::kBF16, 20), PresetWeights("FP8_DYNAMIC"), "float-quantized");
  CheckFp8Bound(RandomWeight(33, 256, DType::kF16, 21), PresetWeights("FP8_DYNAMIC"), "float-quantized");
  CheckFp8Bound(RandomWeight(33, 256, DType::kF32, 22), PresetWeights("FP8_DYNAMIC"), "float-quantized");
  CheckFp8Bound(RandomWeight(33, 100, DType::kBF16, 23), PresetWeights("FP8"), "float-quantized");
  // Blocks that do not divide the shape: a [200, 300] weight has a [2, 3] grid of 128x128 blocks.
  Weight w = RandomWeight(200, 300, DType::kBF16, 24);
  auto plan = PlanQuantizedWeight(kModule, 200, 300, DType::kBF16, PresetWeights("FP8_BLOCK"), "float-quantized");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ((*plan)[1].shape, (std::vector<int64_t>{2, 3}));
  CheckFp8Bound(w, PresetWeights("FP8_BLOCK"), "float-quantized");
}

TEST(QuantizeFp8Test, PerChannelScaleIsAmaxOver448AndMaxMapsTo448) {
  Weight w = RandomWeight(4, 64, DType::kBF16, 25);
  auto q = QuantizeWeight(w.View(), PresetWeights("FP8_DYNAMIC"), "float-quantized");
  ASSERT_TRUE(q.ok()) << q.status();
  for (int64_t r = 0; r < w.rows; ++r) {
    float amax = 0;
    int64_t arg = 0;
    for (int64_t c = 0; c < w.cols; ++c) {
      if (std::fabs(w.at(r, c)) > amax) {
        amax = std::fabs(w.at(r, c));
        arg = c;
      }
    }
    float s = LoadAsFloat((*q)[1].data(), DType::kBF16, r);
    EXPECT_EQ(s, RoundBF16(amax / 448.0f)) << r;
    // The largest element lands on (or next to) the top of the fp8 range, never NaN.
    float top = std::fabs(F8E4M3ToFloat((*q)[0][r * w.cols + arg]));
    EXPECT_GE(top, 416.0f) << r;
    EXPECT_LE(top, 448.0f) << r;
  }
  for (uint8_t b : (*q)[0]) EXPECT_NE(b & 0x7f, 0x7f) << "fp8 NaN in the output";
}

TEST(QuantizeNvFp4Test, WithinHalfAStepOfTheEffectiveScale) {
  Weight w = RandomWeight(16, 256, DType::kBF16, 30);
  QuantArgs a = PresetWeights("NVFP4A16");
  Quantized q = QuantizeAndBack(w, a, "nvfp4-pack-quantized");
  ASSERT_FALSE(q.dq.empty());
  float g;
  std::memcpy(&g, q.tensors[2].data(), 4);
  float amax = 0;
  for (float v : w.values) amax = std::max(amax, std::fabs(v));
  EXPECT_EQ(g, NvFp4GlobalScale(amax, DType::kBF16));
  EXPECT_NEAR(g, 2688.0f / amax, 2688.0f / amax * 0.01f);
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t c = 0; c < w.cols; ++c) {
      float eff = F8E4M3ToFloat(q.tensors[1][r * 16 + c / 16]) / g;
      ASSERT_GT(eff, 0.0f);
      float x = w.at(r, c);
      float err = std::fabs(x - q.dq[r * w.cols + c]);
      ASSERT_LE(err, eff * Fp4HalfGap(std::fabs(x) / eff) * (1.0f + 1e-5f))
          << "(" << r << ", " << c << "): w " << x << " dq " << q.dq[r * w.cols + c] << " eff scale " << eff;
    }
  }
}

TEST(QuantizeNvFp4Test, GlobalScaleOverrideIsStored) {
  Weight w = RandomWeight(4, 32, DType::kBF16, 31);
  auto q = QuantizeWeight(w.View(), PresetWeights("NVFP4A16"), "nvfp4-pack-quantized", 1234.5f);
  ASSERT_TRUE(q.ok()) << q.status();
  float g;
  std::memcpy(&g, (*q)[2].data(), 4);
  EXPECT_EQ(g, 1234.5f);
}

TEST(QuantizeNvFp4Test, PackingPutsTheEvenElementInTheLowNibble) {
  // One group of 16: [0.5, -6, 0, ...] scaled so amax = 6 -> local scale ~1 after the global scale.
  Weight w{DType::kF32, 1, 16, std::vector<uint8_t>(64), std::vector<float>(16)};
  for (int i = 0; i < 16; ++i) Store(w, i, 0.0f);
  Store(w, 0, 0.5f);
  Store(w, 1, -6.0f);
  auto q = QuantizeWeight(w.View(), PresetWeights("NVFP4A16"), "nvfp4-pack-quantized");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ((*q)[0][0], 0xF1);  // FORMAT.md section 6
  for (int i = 1; i < 8; ++i) EXPECT_EQ((*q)[0][i], 0x00) << i;
}

TEST(QuantizeMxTest, Mxfp4WithinHalfAStepOfThePowerOfTwoScale) {
  Weight w = RandomWeight(16, 256, DType::kBF16, 40);
  QuantArgs a = PresetWeights("MXFP4A16");
  Quantized q = QuantizeAndBack(w, a, "mxfp4-pack-quantized");
  ASSERT_FALSE(q.dq.empty());
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t c = 0; c < w.cols; ++c) {
      float s = E8M0ToFloat(q.tensors[1][r * 8 + c / 32]);
      float x = w.at(r, c);
      float err = std::fabs(x - q.dq[r * w.cols + c]);
      ASSERT_LE(err, s * Fp4HalfGap(std::fabs(x) / s)) << "(" << r << ", " << c << "): w " << x << " scale " << s;
    }
  }
}

TEST(QuantizeMxTest, Mxfp8WithinFp8RoundingOfThePowerOfTwoScale) {
  Weight w = RandomWeight(16, 256, DType::kBF16, 41);
  QuantArgs a = PresetWeights("MXFP8A16");
  Quantized q = QuantizeAndBack(w, a, "mxfp8-quantized");
  ASSERT_FALSE(q.dq.empty());
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t c = 0; c < w.cols; ++c) {
      float s = E8M0ToFloat(q.tensors[1][r * 8 + c / 32]);
      float x = w.at(r, c);
      float err = std::fabs(x - q.dq[r * w.cols + c]);
      ASSERT_LE(err, std::fabs(x) * 0x1p-4f + s * 0x1p-10f) << "(" << r << ", " << c << "): w " << x << " scale " << s;
    }
  }
  for (size_t i = 0; i < q.tensors[0].size(); ++i) ASSERT_NE(q.tensors[0][i] & 0x7f, 0x7f) << "fp8 NaN at " << i;
}

// ---------------------------------------------------------------------------------------------------------------
// Bad weights
// ---------------------------------------------------------------------------------------------------------------

TEST(QuantizeErrorTest, NaNOrInfWeightNamesTheModuleForEveryFormat) {
  const std::pair<std::string, std::string> kSchemes[] = {
      {"W4A16", "pack-quantized"},          {"W4A16_ASYM", "pack-quantized"}, {"W8A8", "int-quantized"},
      {"FP8_DYNAMIC", "float-quantized"},   {"FP8_BLOCK", "float-quantized"}, {"NVFP4A16", "nvfp4-pack-quantized"},
      {"MXFP4A16", "mxfp4-pack-quantized"}, {"MXFP8A16", "mxfp8-quantized"}};
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    for (const auto& [preset, format] : kSchemes) {
      Weight w = RandomWeight(4, 256, DType::kBF16, 50);
      Store(w, 2 * 256 + 77, bad);
      auto q = QuantizeWeight(w.View(), PresetWeights(preset), format);
      ASSERT_FALSE(q.ok()) << preset << " with " << bad;
      EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument) << preset;
      EXPECT_THAT(Msg(q.status()), HasSubstr(kModule)) << preset;
      EXPECT_THAT(Msg(q.status()), HasSubstr("NaN")) << preset;
    }
  }
}

TEST(WeightAbsMaxTest, ValueAndNonFiniteError) {
  Weight w = RandomWeight(3, 5, DType::kF32, 51, 0.0f);
  Store(w, 7, -3.25f);
  auto amax = WeightAbsMax(w.View());
  ASSERT_TRUE(amax.ok()) << amax.status();
  EXPECT_EQ(*amax, 3.25f);
  Store(w, 3, std::numeric_limits<float>::quiet_NaN());
  auto bad = WeightAbsMax(w.View());
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(Msg(bad.status()), HasSubstr(kModule));
}

TEST(QuantizeErrorTest, DequantizeRejectsWrongTensorSets) {
  Weight w = RandomWeight(4, 256, DType::kBF16, 52);
  QuantArgs a = PresetWeights("W4A16");
  auto q = QuantizeWeight(w.View(), a, "pack-quantized");
  ASSERT_TRUE(q.ok()) << q.status();
  auto missing = *q;
  missing.pop_back();
  EXPECT_FALSE(DequantizeWeight(4, 256, DType::kBF16, a, "pack-quantized", missing).ok());
  auto short_scale = *q;
  short_scale[1].pop_back();
  EXPECT_FALSE(DequantizeWeight(4, 256, DType::kBF16, a, "pack-quantized", short_scale).ok());
}

// ---------------------------------------------------------------------------------------------------------------
// Observers
// ---------------------------------------------------------------------------------------------------------------

// sum over the group of |bf16(dq) - w|^2.4, the quantity the mse observer minimizes.
double GroupError(const Weight& w, const std::vector<float>& dq, int64_t r, int64_t c0, int64_t c1) {
  double err = 0;
  for (int64_t c = c0; c < c1; ++c) {
    double d = std::fabs(static_cast<double>(RoundBF16(dq[r * w.cols + c])) - w.at(r, c));
    err += std::pow(d, static_cast<double>(2.4f));
  }
  return err;
}

void CheckMseNoWorseThanMinMax(const Weight& w, QuantArgs a, const std::string& format, int64_t group_cols) {
  a.observer = "memoryless_minmax";
  Quantized minmax = QuantizeAndBack(w, a, format);
  a.observer = "mse";
  Quantized mse = QuantizeAndBack(w, a, format);
  ASSERT_FALSE(minmax.dq.empty());
  ASSERT_FALSE(mse.dq.empty());
  double total_minmax = 0, total_mse = 0;
  int better = 0;
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t c0 = 0; c0 < w.cols; c0 += group_cols) {
      double e_minmax = GroupError(w, minmax.dq, r, c0, c0 + group_cols);
      double e_mse = GroupError(w, mse.dq, r, c0, c0 + group_cols);
      // The search includes the min-max range itself; it only moves to a range with a lower error.
      ASSERT_LE(e_mse, e_minmax * (1 + 1e-6)) << format << " row " << r << " group at " << c0;
      better += e_mse < e_minmax;
      total_minmax += e_minmax;
      total_mse += e_mse;
    }
  }
  EXPECT_LT(total_mse, total_minmax) << format;
  EXPECT_GT(better, 0) << format;
}

TEST(ObserverTest, MseIsNoWorseThanMinMax) {
  Weight w = RandomWeight(32, 256, DType::kBF16, 60, /*outlier_rate=*/0.02f);
  CheckMseNoWorseThanMinMax(w, PresetWeights("W4A16"), "pack-quantized", 128);
  CheckMseNoWorseThanMinMax(w, PresetWeights("W4A16_ASYM"), "pack-quantized", 128);
  CheckMseNoWorseThanMinMax(w, IntArgs(4, true, std::nullopt), "pack-quantized", 256);
  CheckMseNoWorseThanMinMax(w, PresetWeights("FP8_DYNAMIC"), "float-quantized", 256);
}

// sum over the columns [c0, c1) of row r of importance_c |bf16(dq) - w|^3, the quantity imatrix_mse minimizes.
double WeightedError(const Weight& w, const std::vector<float>& dq, const std::vector<float>& imp, int64_t r,
                     int64_t c0, int64_t c1) {
  double err = 0;
  for (int64_t c = c0; c < c1; ++c)
    err += imp[c] * std::pow(std::fabs(static_cast<double>(RoundBF16(dq[r * w.cols + c])) - w.at(r, c)), 3.0);
  return err;
}

// imatrix_mse picks, per group, the range of its grid with the lowest importance-weighted error: no worse under that
// objective than the min-max range (on its grid) or than the range it picks with uniform importance (on the same
// grid), and the importance changes what it picks.
TEST(ObserverTest, ImatrixMseMinimizesTheImportanceWeightedError) {
  Weight w = RandomWeight(32, 256, DType::kBF16, 63, /*outlier_rate=*/0.02f);
  std::mt19937 rng(9);
  std::lognormal_distribution<float> spread(0.0f, 2.0f);
  std::vector<float> imp(w.cols), ones(w.cols, 1.0f);
  for (float& v : imp) v = spread(rng);
  for (auto [preset, format, group] : {std::tuple<const char*, const char*, int64_t>{"W4A16", "pack-quantized", 128},
                                       {"W4A16_ASYM", "pack-quantized", 128},
                                       {"FP8_DYNAMIC", "float-quantized", 256}}) {
    QuantArgs a = PresetWeights(preset);
    a.observer = "memoryless_minmax";
    Quantized minmax = QuantizeAndBack(w, a, format);
    a.observer = "imatrix_mse";
    WeightView weighted = w.View();
    weighted.importance = imp.data();
    auto qi = QuantizeWeight(weighted, a, format);
    WeightView uniform = w.View();
    uniform.importance = ones.data();
    auto qu = QuantizeWeight(uniform, a, format);
    ASSERT_TRUE(qi.ok() && qu.ok()) << preset << qi.status() << qu.status();
    auto di = DequantizeWeight(w.rows, w.cols, w.dtype, a, format, *qi);
    auto du = DequantizeWeight(w.rows, w.cols, w.dtype, a, format, *qu);
    ASSERT_TRUE(di.ok() && du.ok());
    double total_i = 0, total_minmax = 0;
    int differs = 0;
    for (int64_t r = 0; r < w.rows; ++r)
      for (int64_t c0 = 0; c0 < w.cols; c0 += group) {
        const double ei = WeightedError(w, *di, imp, r, c0, c0 + group);
        ASSERT_LE(ei, WeightedError(w, minmax.dq, imp, r, c0, c0 + group) * (1 + 1e-6)) << preset << " row " << r;
        ASSERT_LE(ei, WeightedError(w, *du, imp, r, c0, c0 + group) * (1 + 1e-6)) << preset << " row " << r;
        total_i += ei;
        total_minmax += WeightedError(w, minmax.dq, imp, r, c0, c0 + group);
        for (int64_t c = c0; c < c0 + group; ++c) differs += (*di)[r * w.cols + c] != (*du)[r * w.cols + c];
      }
    EXPECT_LT(total_i, total_minmax) << preset;
    EXPECT_GT(differs, 0) << preset << ": the importance changed nothing";
  }
  // Without the statistics it refuses, naming the module and what it needs.
  QuantArgs a = PresetWeights("W4A16");
  a.observer = "imatrix_mse";
  auto q = QuantizeWeight(w.View(), a, "pack-quantized");
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(q.status()), HasSubstr(kModule));
  EXPECT_THAT(Msg(q.status()), HasSubstr("calibrated"));
}

TEST(ObserverTest, MseIsRejectedForFp4Formats) {
  Weight w = RandomWeight(4, 256, DType::kBF16, 61);
  const std::pair<std::string, std::string> kSchemes[] = {{"NVFP4A16", "nvfp4-pack-quantized"},
                                                          {"MXFP4A16", "mxfp4-pack-quantized"}};
  for (const auto& [preset, format] : kSchemes) {
    QuantArgs a = PresetWeights(preset);
    a.observer = "mse";
    auto q = QuantizeWeight(w.View(), a, format);
    ASSERT_FALSE(q.ok()) << preset;
    EXPECT_THAT(Msg(q.status()), HasSubstr(kModule));
    EXPECT_THAT(Msg(q.status()), HasSubstr("mse"));
  }
}

// observer_kwargs is a mapping from the recipe. QuantArgs::Validate rejects non-numeric values; QuantizeWeight,
// which may be handed unvalidated arguments, must still not let an exception escape (CONVENTIONS.md, 3).
TEST(ObserverTest, MseWithNonNumericKwargsDoesNotThrow) {
  Weight w = RandomWeight(4, 256, DType::kBF16, 62);
  QuantArgs a = PresetWeights("W4A16");
  a.observer = "mse";
  a.observer_kwargs = {{"norm", "two"}, {"grid", nullptr}};
  EXPECT_FALSE(a.Validate("group_0.weights").ok());
  absl::StatusOr<std::vector<std::vector<uint8_t>>> q = absl::UnknownError("not run");
  EXPECT_NO_THROW(q = QuantizeWeight(w.View(), a, "pack-quantized"));
  if (!q.ok()) {
    EXPECT_THAT(Msg(q.status()), HasSubstr(kModule));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Thread safety
// ---------------------------------------------------------------------------------------------------------------

TEST(QuantizeThreadTest, ConcurrentCallsGiveIdenticalResults) {
  Weight w = RandomWeight(64, 512, DType::kBF16, 70);
  QuantArgs a = PresetWeights("W4A16_ASYM");
  auto ref = QuantizeWeight(w.View(), a, "pack-quantized");
  ASSERT_TRUE(ref.ok()) << ref.status();
  std::vector<absl::StatusOr<std::vector<std::vector<uint8_t>>>> results(4, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] { results[t] = QuantizeWeight(w.View(), a, "pack-quantized"); });
  for (auto& t : threads) t.join();
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(*r, *ref);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Int weights with strategy block (QuantArgs accepts the combination).
//
// Run in a child process: RunInt used to write one scale per row and block-column (index r * scale_cols + gi) into
// a scale tensor planned with ceil(rows / block_rows) rows, past the end of the buffer, which corrupted the heap
// and aborted. Passing means: the combination is rejected with an error naming the module, or it quantizes
// correctly.
// ---------------------------------------------------------------------------------------------------------------

// Child-process body: 0 when int block quantization is rejected or stays within its error bound.
int IntBlockChild() {
  QuantArgs a = IntArgs(8, true, std::nullopt);
  a.strategy = Strategy::kBlock;
  a.block_structure = std::array<int, 2>{4, 4};
  Weight w = RandomWeight(8, 8, DType::kBF16, 80, 0.0f);
  auto q = QuantizeWeight(w.View(), a, "int-quantized");
  if (!q.ok()) return Msg(q.status()).find(kModule) != std::string::npos ? 0 : 4;  // rejected: fine
  auto dq = DequantizeWeight(8, 8, DType::kBF16, a, "int-quantized", *q);
  if (!dq.ok()) return 2;
  for (int64_t r = 0; r < 8; ++r) {
    for (int64_t c = 0; c < 8; ++c) {
      float s = ScaleAt((*q)[1], DType::kBF16, a, 8, 8, r, c);
      if (!(std::fabs(w.at(r, c) - (*dq)[r * 8 + c]) <= s * 0.76f)) {
        std::fprintf(stderr, "element (%lld, %lld): w %g dq %g block scale %g\n", static_cast<long long>(r),
                     static_cast<long long>(c), w.at(r, c), (*dq)[r * 8 + c], s);
        return 3;
      }
    }
  }
  return 0;
}

TEST(WeightQuantizerDeathTest, IntBlockStrategyIsRejectedOrStaysInsideItsScaleTensor) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(std::_Exit(IntBlockChild()), ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace llmc
