#include "engine/quant/group_quantizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/quant/weight_quantizer.h"

namespace llmc {
namespace {

using ::testing::HasSubstr;

constexpr char kModule[] = "model.layers.0.mlp.up_proj";

struct Bf16Weight {
  int64_t rows, cols;
  std::vector<uint16_t> bits;
  std::vector<float> values;
};

Bf16Weight RandomBf16(int64_t rows, int64_t cols, uint32_t seed) {
  Bf16Weight w{rows, cols, std::vector<uint16_t>(rows * cols), std::vector<float>(rows * cols)};
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  for (int64_t i = 0; i < rows * cols; ++i) {
    float v = normal(rng);
    if (uni(rng) < 0.01f) v *= 12.0f;
    w.bits[i] = FloatToBF16(v);
    w.values[i] = BF16ToFloat(w.bits[i]);
  }
  return w;
}

// Observes every group of the unmodified weight `w` with `q`, then fake-quantizes each element: the values a
// column solver that changes nothing would write. Empty (with a test failure) when an observation fails.
std::vector<float> ObserveAllAndFakeQuant(GroupQuantizer* q, const Bf16Weight& w) {
  const int64_t rows = w.rows, cols = w.cols;
  for (int64_t g = 0; g < q->num_groups(); ++g) {
    absl::Status s = q->Observe(w.values.data(), cols, g * q->group_cols(), q->group_cols(), g);
    EXPECT_TRUE(s.ok()) << s;
    if (!s.ok()) return {};
  }
  std::vector<float> fake(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) fake[r * cols + c] = q->FakeQuant(w.values[r * cols + c], r, c / q->group_cols());
  return fake;
}

// Observing every group of the unmodified weight and fake-quantizing each element must give exactly the tensors
// of the RTN path, for every scheme a column solver supports.
class GroupQuantizerMatchesRtn : public ::testing::TestWithParam<const char*> {};

TEST_P(GroupQuantizerMatchesRtn, EncodesTheSameBytes) {
  auto scheme = PresetScheme(GetParam());
  ASSERT_TRUE(scheme.ok()) << scheme.status();
  auto format = InferFormat(*scheme);
  ASSERT_TRUE(format.ok());
  const QuantArgs& a = *scheme->weights;
  const int64_t rows = 48, cols = 256;
  Bf16Weight w = RandomBf16(rows, cols, 7);
  WeightView view{kModule, w.bits.data(), DType::kBF16, rows, cols};
  std::optional<float> gs;
  if (*format == "nvfp4-pack-quantized") {
    auto amax = WeightAbsMax(view);
    ASSERT_TRUE(amax.ok());
    gs = NvFp4GlobalScale(*amax, DType::kBF16);
  }
  auto rtn = QuantizeWeight(view, a, *format, gs);
  ASSERT_TRUE(rtn.ok()) << rtn.status();

  auto q = GroupQuantizer::Create(kModule, rows, cols, DType::kBF16, a, *format, gs);
  ASSERT_TRUE(q.ok()) << q.status();
  std::vector<float> fake = ObserveAllAndFakeQuant(&*q, w);
  ASSERT_EQ(fake.size(), static_cast<size_t>(rows * cols));
  auto enc = EncodeQuantizedWeight(kModule, fake.data(), DType::kBF16, a, *format, q->params());
  ASSERT_TRUE(enc.ok()) << enc.status();
  ASSERT_EQ(enc->size(), rtn->size());
  // fp4 codes: the RTN path keeps the sign of a negative value that rounds to zero (code 8), while a
  // fake-quantized -0.0 encodes as code 0 (as the library encodes an exact zero); both mean 0.
  const bool fp4 = a.is_fp4();
  auto norm = [&](std::vector<uint8_t> b, size_t i) {
    if (fp4 && i == 0)
      for (auto& x : b) {
        if ((x & 0x0f) == 0x08) x &= 0xf0;
        if ((x & 0xf0) == 0x80) x &= 0x0f;
      }
    return b;
  };
  for (size_t i = 0; i < rtn->size(); ++i)
    EXPECT_EQ(norm((*enc)[i], i), norm((*rtn)[i], i)) << "tensor " << i << " of " << GetParam();

  // And the fake-quantized values are the dequantized checkpoint.
  auto deq = DequantizeWeight(rows, cols, DType::kBF16, a, *format, *rtn);
  ASSERT_TRUE(deq.ok());
  int64_t diff = 0;
  for (int64_t i = 0; i < rows * cols; ++i) diff += RoundBF16((*deq)[i]) != fake[i];
  EXPECT_EQ(diff, 0);
}

// imatrix_mse: the column solvers' search (GroupQuantizer, with the importance set) chooses the ranges RTN's does
// (WeightView::importance), for int group, int channel and fp8 channel weights; and after PermuteImportance it
// observes permuted columns as the unpermuted ones.
TEST(GroupQuantizerTest, ImatrixMseMatchesRtnAndFollowsThePermutation) {
  const int64_t rows = 24, cols = 256;
  Bf16Weight w = RandomBf16(rows, cols, 11);
  std::mt19937 rng(5);
  std::lognormal_distribution<float> spread(0.0f, 1.5f);
  std::vector<float> imp(cols);
  for (float& v : imp) v = spread(rng);
  for (const char* preset : {"W4A16", "W4A16_ASYM", "W8A8", "FP8_DYNAMIC"}) {
    auto scheme = PresetScheme(preset);
    ASSERT_TRUE(scheme.ok());
    auto format = InferFormat(*scheme);
    ASSERT_TRUE(format.ok());
    QuantArgs a = *scheme->weights;
    a.observer = "imatrix_mse";
    WeightView view{kModule, w.bits.data(), DType::kBF16, rows, cols, imp.data()};
    auto rtn = QuantizeWeight(view, a, *format);
    ASSERT_TRUE(rtn.ok()) << preset << ": " << rtn.status();
    auto q = GroupQuantizer::Create(kModule, rows, cols, DType::kBF16, a, *format);
    ASSERT_TRUE(q.ok()) << q.status();
    // Without the importance the column solver refuses rather than search unweighted.
    auto bare = GroupQuantizer::Create(kModule, rows, cols, DType::kBF16, a, *format);
    ASSERT_TRUE(bare.ok()) << bare.status();
    EXPECT_EQ(bare->Observe(w.values.data(), cols, 0, q->group_cols(), 0).code(),
              absl::StatusCode::kFailedPrecondition);
    q->SetImportance(imp);
    std::vector<float> fake = ObserveAllAndFakeQuant(&*q, w);
    ASSERT_EQ(fake.size(), static_cast<size_t>(rows * cols));
    auto enc = EncodeQuantizedWeight(kModule, fake.data(), DType::kBF16, a, *format, q->params());
    ASSERT_TRUE(enc.ok()) << enc.status();
    ASSERT_EQ(enc->size(), rtn->size());
    for (size_t i = 0; i < rtn->size(); ++i) EXPECT_EQ((*enc)[i], (*rtn)[i]) << preset << " tensor " << i;
  }
  // Reversed columns with the importance reversed to match: the same scales, group for group reversed.
  QuantArgs a = *PresetScheme("W4A16")->weights;
  a.observer = "imatrix_mse";
  a.group_size = 32;
  std::vector<int64_t> perm(cols);
  for (int64_t j = 0; j < cols; ++j) perm[j] = cols - 1 - j;
  std::vector<float> rev(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) rev[r * cols + j] = w.values[r * cols + perm[j]];
  auto q1 = GroupQuantizer::Create(kModule, rows, cols, DType::kBF16, a, "pack-quantized");
  auto q2 = GroupQuantizer::Create(kModule, rows, cols, DType::kBF16, a, "pack-quantized");
  ASSERT_TRUE(q1.ok() && q2.ok());
  q1->SetImportance(imp);
  q2->SetImportance(imp);
  q2->PermuteImportance(perm);
  const int64_t G = cols / 32;
  for (int64_t g = 0; g < G; ++g) {
    ASSERT_TRUE(q1->Observe(w.values.data(), cols, g * 32, 32, g).ok());
    ASSERT_TRUE(q2->Observe(rev.data(), cols, g * 32, 32, g).ok());
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < G; ++g)
      EXPECT_EQ(q1->params().scale[r * G + g], q2->params().scale[r * G + (G - 1 - g)]) << r << " " << g;
}

// Encoding a large weight on several threads (rows split in uneven ranges) writes the bytes one thread writes.
TEST_P(GroupQuantizerMatchesRtn, EncodesTheSameBytesOnThreads) {
  auto scheme = PresetScheme(GetParam());
  ASSERT_TRUE(scheme.ok()) << scheme.status();
  auto format = InferFormat(*scheme);
  ASSERT_TRUE(format.ok());
  const QuantArgs& a = *scheme->weights;
  const int64_t rows = 779, cols = 4096;  // 3 ranges of at least 1M elements: 260, 260 and 259 rows
  Bf16Weight w = RandomBf16(rows, cols, 9);
  std::optional<float> gs;
  if (*format == "nvfp4-pack-quantized") {
    auto amax = WeightAbsMax(WeightView{kModule, w.bits.data(), DType::kBF16, rows, cols});
    ASSERT_TRUE(amax.ok());
    gs = NvFp4GlobalScale(*amax, DType::kBF16);
  }
  auto q = GroupQuantizer::Create(kModule, rows, cols, DType::kBF16, a, *format, gs);
  ASSERT_TRUE(q.ok()) << q.status();
  std::vector<float> fake = ObserveAllAndFakeQuant(&*q, w);
  ASSERT_EQ(fake.size(), static_cast<size_t>(rows * cols));
  auto one = EncodeQuantizedWeight(kModule, fake.data(), DType::kBF16, a, *format, q->params(), 1);
  auto many = EncodeQuantizedWeight(kModule, fake.data(), DType::kBF16, a, *format, q->params(), 8);
  ASSERT_TRUE(one.ok() && many.ok()) << one.status() << " " << many.status();
  ASSERT_EQ(one->size(), many->size());
  for (size_t i = 0; i < one->size(); ++i) EXPECT_TRUE((*one)[i] == (*many)[i]) << "tensor " << i << " of " << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Schemes, GroupQuantizerMatchesRtn,
                         ::testing::Values("W4A16", "W4A16_ASYM", "W8A16", "W8A8", "W3A16", "FP8_DYNAMIC", "NVFP4A16",
                                           "MXFP4A16", "MXFP8A16"));

TEST(GroupQuantizerTest, GIdxReordersGroups) {
  auto scheme = PresetScheme("W4A16");
  ASSERT_TRUE(scheme.ok());
  const QuantArgs& a = *scheme->weights;
  const int64_t rows = 4, cols = 256;
  Bf16Weight w = RandomBf16(rows, cols, 3);
  auto q = GroupQuantizer::Create(kModule, rows, cols, DType::kBF16, a, "pack-quantized");
  ASSERT_TRUE(q.ok());
  // Group 0 holds the odd columns, group 1 the even ones: observe on a permuted copy.
  std::vector<int32_t> perm(cols);
  for (int64_t i = 0; i < cols; ++i) perm[i] = static_cast<int32_t>(i < 128 ? 2 * i + 1 : 2 * (i - 128));
  std::vector<float> permuted(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < cols; ++i) permuted[r * cols + i] = w.values[r * cols + perm[i]];
  for (int64_t g = 0; g < 2; ++g) ASSERT_TRUE(q->Observe(permuted.data(), cols, g * 128, 128, g).ok());
  auto& p = q->mutable_params();
  p.g_idx.assign(cols, 0);
  for (int64_t i = 0; i < cols; ++i) p.g_idx[perm[i]] = static_cast<int32_t>(i / 128);
  std::vector<float> fake(rows * cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) fake[r * cols + c] = q->FakeQuant(w.values[r * cols + c], r, p.g_idx[c]);
  auto enc = EncodeQuantizedWeight(kModule, fake.data(), DType::kBF16, a, "pack-quantized", p);
  ASSERT_TRUE(enc.ok()) << enc.status();
  ASSERT_EQ(enc->size(), 4u);  // packed, scale, shape, g_idx
  std::vector<int32_t> gi(cols);
  std::memcpy(gi.data(), (*enc)[3].data(), cols * 4);
  EXPECT_EQ(gi, p.g_idx);
  // DequantizeWeight with g_idx gives the fake-quantized values back.
  std::vector<std::vector<uint8_t>> stored(enc->begin(), enc->begin() + 3);
  auto deq = DequantizeWeight(rows, cols, DType::kBF16, a, "pack-quantized", stored, gi.data());
  ASSERT_TRUE(deq.ok()) << deq.status();
  for (int64_t i = 0; i < rows * cols; ++i) ASSERT_EQ(RoundBF16((*deq)[i]), fake[i]) << i;
  gi[7] = 2;
  EXPECT_FALSE(DequantizeWeight(rows, cols, DType::kBF16, a, "pack-quantized", stored, gi.data()).ok());
  gi[7] = p.g_idx[7];
  // Dequantize by hand with g_idx and compare.
  auto codes = UnpackInt32(reinterpret_cast<const int32_t*>((*enc)[0].data()), rows, cols, 4, 1);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      uint16_t sb;
      std::memcpy(&sb, (*enc)[1].data() + 2 * (r * 2 + gi[c]), 2);
      ASSERT_EQ(RoundBF16(codes[r * cols + c] * BF16ToFloat(sb)), fake[r * cols + c]) << r << "," << c;
    }
}

TEST(GroupQuantizerTest, ErrorsNameTheModule) {
  auto fp8_block = PresetScheme("FP8_BLOCK");
  ASSERT_TRUE(fp8_block.ok());
  auto q = GroupQuantizer::Create(kModule, 256, 256, DType::kBF16, *fp8_block->weights, "float-quantized");
  ASSERT_FALSE(q.ok());
  EXPECT_THAT(std::string(q.status().message()), HasSubstr(kModule));
  EXPECT_THAT(std::string(q.status().message()), HasSubstr("block"));

  auto nvfp4 = PresetScheme("NVFP4A16");
  ASSERT_TRUE(nvfp4.ok());
  auto missing = GroupQuantizer::Create(kModule, 16, 64, DType::kBF16, *nvfp4->weights, "nvfp4-pack-quantized");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("global scale"));

  auto w4 = PresetScheme("W4A16");
  auto ok = GroupQuantizer::Create(kModule, 2, 128, DType::kBF16, *w4->weights, "pack-quantized");
  ASSERT_TRUE(ok.ok());
  std::vector<float> bad(2 * 128, 0.01f);
  bad[5] = NAN;
  absl::Status s = ok->Observe(bad.data(), 128, 0, 128, 0);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("NaN"));
  EXPECT_FALSE(ok->Observe(bad.data(), 128, 0, 128, 1).ok());  // group out of range
}

}  // namespace
}  // namespace llmc
