#include "engine/quant/activation_quantizer.h"

#include "engine/tensor/dtype.h"

#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

namespace llmc {
namespace {

QuantArgs Args(QuantType type, int bits, Strategy strategy, const std::string& dynamic) {
  QuantArgs a;
  a.type = type;
  a.num_bits = bits;
  a.strategy = strategy;
  a.dynamic = dynamic;
  a.observer = std::nullopt;
  return a;
}

QuantArgs NvFp4Args() {
  QuantArgs a = Args(QuantType::kFloat, 4, Strategy::kTensorGroup, "local");
  a.group_size = 16;
  a.scale_dtype = "torch.float8_e4m3fn";
  return a;
}

// Values below are worked out by hand from the library's arithmetic (activation_quantizer.h), in bf16.

TEST(ActivationQuantizerTest, Int8PerTokenUsesHalfTheRangeAndClampsAt127) {
  auto q = ActivationQuantizer::Create(Args(QuantType::kInt, 8, Strategy::kToken, "true"), ActivationSite::kLinear,
                                       DType::kBF16, 5, "t");
  ASSERT_TRUE(q.ok()) << q.status();
  // amax 7.96875 -> scale 7.96875 / 127.5 = 0.0625 (not / 127).
  EXPECT_EQ(q->DynamicScale(-1.0f, 7.96875f), 0.0625f);
  std::vector<float> x = {7.96875f, 0.1f, -0.03125f, 0.09375f, -7.0f};
  q->Apply(x.data(), 1);
  EXPECT_EQ(x[0], 7.9375f);   // 127.5 clamps to 127
  EXPECT_EQ(x[1], 0.125f);    // bf16(0.1) = 0.10009765625 -> 1.6015625 -> 2
  EXPECT_EQ(x[2], 0.0f);      // -0.5 rounds half to even: -0, as torch.round
  EXPECT_TRUE(std::signbit(x[2]));
  EXPECT_EQ(x[3], 0.125f);    // 1.5 -> 2
  EXPECT_EQ(x[4], -7.0f);     // -112 exactly
}

TEST(ActivationQuantizerTest, Int8PerTokenRowsAreIndependentAndZeroRowUsesEps) {
  auto q = ActivationQuantizer::Create(Args(QuantType::kInt, 8, Strategy::kToken, "true"), ActivationSite::kLinear,
                                       DType::kBF16, 2, "t");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->DynamicScale(0.0f, 0.0f), 0.0078125f);  // torch.finfo(bfloat16).eps
  std::vector<float> x = {0.0f, 0.0f, 7.96875f, 0.1f};
  q->Apply(x.data(), 2);
  EXPECT_EQ(x[0], 0.0f);
  EXPECT_EQ(x[3], 0.125f);
}

TEST(ActivationQuantizerTest, Fp8PerToken) {
  auto q = ActivationQuantizer::Create(Args(QuantType::kFloat, 8, Strategy::kToken, "true"),
                                       ActivationSite::kLinear, DType::kBF16, 3, "t");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->DynamicScale(-56.0f, 3.0f), 0.125f);  // 56 / 448
  std::vector<float> x = {-56.0f, 0.3f, 1.0f};
  q->Apply(x.data(), 1);
  EXPECT_EQ(x[0], -56.0f);
  EXPECT_EQ(x[1], 0.3125f);  // bf16(0.3) / 0.125 = 2.40625 -> e4m3 2.5
  EXPECT_EQ(x[2], 1.0f);
}

TEST(ActivationQuantizerTest, Fp8StaticPerTensorClampsAt448) {
  auto q = ActivationQuantizer::Create(Args(QuantType::kFloat, 8, Strategy::kTensor, "false"),
                                       ActivationSite::kLinear, DType::kBF16, 2, "t");
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_TRUE(q->SetStaticScale({0.5f}).ok());
  std::vector<float> x = {1000.0f, -0.3f, 3.0f, 0.0f};
  q->Apply(x.data(), 2);
  EXPECT_EQ(x[0], 224.0f);     // 2000 clamps to 448
  EXPECT_EQ(x[1], -0.3125f);   // -0.6015625 -> e4m3 -0.625
  EXPECT_EQ(x[2], 3.0f);
  EXPECT_FALSE(q->SetStaticScale({0.0f}).ok());
}

TEST(ActivationQuantizerTest, NvFp4GroupScalesAreFp8OfGlobalTimesAmaxOverSix) {
  auto q = ActivationQuantizer::Create(NvFp4Args(), ActivationSite::kLinear, DType::kBF16, 32, "t");
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_TRUE(q->SetGlobalScale(1.0f).ok());
  // amax bf16(6.6) = 6.59375: bf16(6.59375 / 6) = 1.1015625, e4m3 -> 1.125.
  EXPECT_EQ(q->DynamicScale(0.0f, 6.59375f), 1.125f);
  EXPECT_EQ(q->DynamicScale(0.0f, 0.0f), 0.125f);  // a zero fp8 scale becomes its eps
  std::vector<float> x(32, 0.0f);
  x[0] = 6.6f;    // 6.59375 / 1.125 = 5.86 -> fp4 6 -> 6.75
  x[1] = -0.2f;   // -0.178 -> fp4 -0
  x[2] = 2.6f;    // 2.59375 / 1.125 = 2.306 -> fp4 2 -> 2.25
  x[16] = 6.0f;   // second group: scale 1
  x[17] = 5.0f;   // tie between 4 and 6 -> even code: 4
  x[18] = 2.6f;   // 2.59375 -> 3
  q->Apply(x.data(), 1);
  EXPECT_EQ(x[0], 6.75f);
  EXPECT_EQ(x[1], 0.0f);
  EXPECT_TRUE(std::signbit(x[1]));
  EXPECT_EQ(x[2], 2.25f);
  EXPECT_EQ(x[16], 6.0f);
  EXPECT_EQ(x[17], 4.0f);
  EXPECT_EQ(x[18], 3.0f);
  // With a global scale the effective scale is fp8(g * amax / 6) / g.
  ASSERT_TRUE(q->SetGlobalScale(101.0f).ok());
  EXPECT_EQ(q->DynamicScale(0.0f, 6.0f), 104.0f);    // e4m3(101) = 104 (steps of 8 in [64, 128))
  EXPECT_EQ(q->FakeQuant(6.0f, 104.0f), 6.1875f);    // e = 104 / 101; 6 / e = 5.83 -> 6; 6 e = 6.178 -> bf16
  // The fp4 cast takes the fp32 quotient: with g = 3 and s = 1, e = fp32(1/3) and 0.41796875 / e = 1.2539062
  // (fp32) > 1.25 -> fp4 1.5; 1.5 e = 0.50000001 -> fp32 0.5. (Rounding the quotient to bf16 first would give
  // 1.25, a tie, -> 1.0 -> bf16(e) = 0.333984375.)
  ASSERT_TRUE(q->SetGlobalScale(3.0f).ok());
  EXPECT_EQ(q->FakeQuant(0.41796875f, 1.0f), 0.5f);
}

// compressed-tensors 0.18's NVFP4 activation fake quantization, step by step for a bf16 model with the fp32
// `input_global_scale` g = 3 (forward.py forward_quantize -> helpers.py compute_dynamic_scales_and_zp /
// calculate_qparams -> forward_helpers.py _process_group / _quantize_dequantize -> quant_args.py
// round_to_quantized_type_args -> fp4_utils.py cast_to_fp4, the eager cast: the Triton one is registered
// "disable"). One row of 32 columns, two groups of 16:
//   group 0: amax = 2: R(2 / 6) = 0.333984375; g * that = 1.001953125 (fp32); e4m3 -> s = 1; e = s / g = fp32(1/3)
//   group 1: amax = 0.75: R(0.75 / 6) = 0.125; g * that = 0.375 (e4m3 exact); e = 0.375 / 3 = 0.125
// x / e in fp32, clamped to +-6, cast to fp4 unrounded (ties to the even code), times e in fp32, then bf16.
TEST(ActivationQuantizerTest, NvFp4CastsTheFp32QuotientWithoutRoundingItToBf16) {
  auto q = ActivationQuantizer::Create(NvFp4Args(), ActivationSite::kLinear, DType::kBF16, 32, "t");
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_TRUE(q->SetGlobalScale(3.0f).ok());
  EXPECT_EQ(q->DynamicScale(0.0f, 2.0f), 1.0f);
  EXPECT_EQ(q->DynamicScale(-0.75f, 0.5f), 0.375f);
  std::vector<float> x(32, 0.0f);
  x[0] = 2.0f;          // 2 / e = 5.9999998 -> fp32 6 -> fp4 6; 6 e = 2.0000001 -> fp32 2
  x[1] = 0.41796875f;   // 1.2539062 -> 1.5 (bf16 first: 1.25, a tie -> 1.0); 1.5 e -> 0.5
  x[2] = 0.8359375f;    // 2.5078124 -> 3 (bf16 first: 2.5, a tie -> 2); 3 e = 1.0000000 -> 1
  x[3] = -0.8359375f;   // the same, negative: -1
  x[4] = 0.83203125f;   // 2.4960936 -> 2 (nearest); 2 e = 0.6666667 -> bf16 0.66796875
  x[5] = 0.08300781f;   // bf16 0.0830078125 / e = 0.24902343 -> 0 (below 0.25)
  x[16] = -0.75f;       // -0.75 / 0.125 = -6 exactly -> -6 -> -0.75
  x[17] = 0.3125f;      // 2.5 exactly: a tie -> the even code, 2 -> 0.25
  x[18] = 0.15625f;     // 1.25 exactly: a tie -> 1.0 -> 0.125
  x[19] = 0.5f;         // 4 -> 0.5
  x[20] = 0.03125f;     // 0.25 exactly: a tie -> 0
  x[21] = 0.033203125f; // 0.265625 -> 0.5 -> 0.0625
  q->Apply(x.data(), 1);
  EXPECT_EQ(x[0], 2.0f);
  EXPECT_EQ(x[1], 0.5f);
  EXPECT_EQ(x[2], 1.0f);
  EXPECT_EQ(x[3], -1.0f);
  EXPECT_EQ(x[4], 0.66796875f);
  EXPECT_EQ(x[5], 0.0f);
  EXPECT_EQ(x[6], 0.0f);
  EXPECT_EQ(x[16], -0.75f);
  EXPECT_EQ(x[17], 0.25f);
  EXPECT_EQ(x[18], 0.125f);
  EXPECT_EQ(x[19], 0.5f);
  EXPECT_EQ(x[20], 0.0f);
  EXPECT_EQ(x[21], 0.0625f);
}

TEST(ActivationQuantizerTest, KvCachePerHeadStaticScales) {
  auto q = ActivationQuantizer::Create(Args(QuantType::kFloat, 8, Strategy::kAttnHead, "false"),
                                       ActivationSite::kKvCache, DType::kBF16, 4, "kv");
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_TRUE(q->SetStaticScale({1.0f, 3.0f}).ok());
  EXPECT_EQ(q->group_cols(), 2);
  std::vector<float> x = {3.3f, 0.0f, 3.3f, 0.0f};
  q->Apply(x.data(), 1);
  EXPECT_EQ(x[0], 3.25f);   // bf16(3.3) = 3.296875 -> e4m3 3.25
  EXPECT_EQ(x[2], 3.375f);  // 3.296875 / 3 -> bf16 1.1015625 -> e4m3 1.125 -> * 3
  EXPECT_FALSE(q->SetStaticScale({1.0f, 1.0f, 1.0f}).ok());
}

// Static per-tensor fp8, for Linear inputs (`input_scale`) and the kv cache (`k_scale` / `v_scale`, strategy tensor),
// against compressed-tensors' fake quantization of a bf16 tensor by a bf16 scale parameter, written out step by step:
//   q = x / s              true division of two bf16 tensors: the fp32 quotient rounded to bf16 (not x * (1 / s))
//   q = clamp(q, -448, 448)
//   q = q.to(float8_e4m3fn)   round to nearest even from the bf16 value (not from the fp32 quotient)
//   y = q.to(bf16) * s     the product rounded to bf16
// over every bf16 x in [2^-17, 2^9) (quotients from e4m3's subnormals through saturation), both signs, with one scale
// for the whole row whatever the kv heads. Casting the fp32 quotient straight to fp8 changes some values (the sweep
// would see it); multiplying by the reciprocal changes none: the quotient of two bf16 values (8-bit significands) is
// never within an fp32 ulp of a bf16 rounding boundary, so for bf16 models the two orders agree.
TEST(ActivationQuantizerTest, Fp8StaticPerTensorIsDivideRoundCastMultiply) {
  const float s = RoundBF16(0.01234f);  // 101 / 8192: a bf16 scale with an odd significand
  for (ActivationSite site : {ActivationSite::kLinear, ActivationSite::kKvCache}) {
    auto q = ActivationQuantizer::Create(Args(QuantType::kFloat, 8, Strategy::kTensor, "false"), site, DType::kBF16,
                                         4, "t");
    ASSERT_TRUE(q.ok()) << q.status();
    ASSERT_TRUE(q->SetStaticScale({s}).ok());
    EXPECT_EQ(q->group_cols(), 4);  // per tensor: every column of the row, not per head
    int64_t checked = 0, cast_from_fp32_differs = 0, reciprocal_differs = 0;
    for (uint32_t bits = 0x3700; bits < 0x4400; ++bits) {  // bf16 2^-17 .. 2^9: quotients 2^-11 .. 2^15
      for (float sign : {1.0f, -1.0f}) {
        const float x = sign * BitsFloat(bits << 16);
        const float quotient = RoundBF16(x / s);
        const float clamped = std::fmin(std::fmax(quotient, -448.0f), 448.0f);
        const float expected = RoundBF16(F8E4M3ToFloat(FloatToF8E4M3(clamped)) * s);
        std::vector<float> row = {x, x, x, x};
        q->Apply(row.data(), 1);
        for (float v : row) ASSERT_EQ(v, expected) << "x " << x << " site " << static_cast<int>(site);
        ++checked;
        const float direct = F8E4M3ToFloat(FloatToF8E4M3(std::fmin(std::fmax(x / s, -448.0f), 448.0f)));
        cast_from_fp32_differs += RoundBF16(direct * s) != expected;
        const float by_reciprocal = RoundBF16(x * (1.0f / s));
        reciprocal_differs += RoundBF16(F8E4M3ToFloat(FloatToF8E4M3(std::fmin(std::fmax(by_reciprocal, -448.0f), 448.0f))) * s) != expected;
      }
    }
    EXPECT_EQ(checked, 2 * (0x4400 - 0x3700));
    EXPECT_GT(cast_from_fp32_differs, 0);  // the sweep tells the library's order from the shortcut
    EXPECT_EQ(reciprocal_differs, 0);
    // Saturation: beyond 448 * s the value is 448 * s, with its sign.
    std::vector<float> big = {1000.0f, -1000.0f, 0.0f, 10.0f};
    q->Apply(big.data(), 1);
    EXPECT_EQ(big[0], RoundBF16(448.0f * s));
    EXPECT_EQ(big[1], -RoundBF16(448.0f * s));
    EXPECT_EQ(big[2], 0.0f);
    EXPECT_EQ(big[3], RoundBF16(448.0f * s));  // 10 / s = 811: clamped
  }
}

TEST(ActivationQuantizerTest, Float32ModelsSkipTheBf16Roundings) {
  auto q = ActivationQuantizer::Create(Args(QuantType::kInt, 8, Strategy::kToken, "true"), ActivationSite::kLinear,
                                       DType::kF32, 2, "t");
  ASSERT_TRUE(q.ok());
  std::vector<float> x = {12.75f, 0.1f};  // scale 0.1 (fp32), 0.1 / 0.1 = 1
  q->Apply(x.data(), 1);
  EXPECT_FLOAT_EQ(x[1], 0.1f);
}

// fp16 models, at both ends of the range, worked out from torch's arithmetic on float16 tensors.
TEST(ActivationQuantizerTest, Fp16SubnormalScalesAndTokensBeyond65504) {
  auto q = ActivationQuantizer::Create(Args(QuantType::kInt, 8, Strategy::kToken, "true"), ActivationSite::kLinear,
                                       DType::kF16, 3, "t");
  ASSERT_TRUE(q.ok());
  // amax 2^-16: 2^-16 / 127.5 = 2.008 * 2^-24 rounds to the fp16 subnormal 2^-23 (kept, not flushed to the eps).
  EXPECT_EQ(q->DynamicScale(-std::ldexp(1.0f, -16), 0.0f), std::ldexp(1.0f, -23));
  // The largest finite fp16 value: scale fp16(65504 / 127.5 = 513.76) = 514; 65504 / 514 -> fp16 127.4375 -> 127;
  // 127 * 514 = 65278 -> fp16 65280. -1 / 514 rounds to -0 and stays -0.
  // A token with a value past 65504 is inf in fp16, and so is its scale (inf / 127.5). inf / inf is NaN, and
  // torch.clamp keeps a NaN (it does not return qmin as fminf/fmaxf would); every other value is +-0 * inf = NaN.
  // The whole token comes out NaN, as compressed-tensors' forward pass gives it.
  std::vector<float> x = {65504.0f, -1.0f, 0.5f, 65536.0f, -1.0f, 0.5f};
  q->Apply(x.data(), 2);
  EXPECT_EQ(x[0], 65280.0f);
  EXPECT_EQ(x[1], 0.0f);
  EXPECT_TRUE(std::signbit(x[1]));
  EXPECT_EQ(x[2], 0.0f);
  EXPECT_EQ(q->DynamicScale(-1.0f, std::numeric_limits<float>::infinity()), std::numeric_limits<float>::infinity());
  for (int i = 3; i < 6; ++i) EXPECT_TRUE(std::isnan(x[i])) << i << ": " << x[i];

  auto f8 = ActivationQuantizer::Create(Args(QuantType::kFloat, 8, Strategy::kToken, "true"), ActivationSite::kLinear,
                                        DType::kF16, 2, "t");
  ASSERT_TRUE(f8.ok());
  std::vector<float> y = {-70000.0f, 3.0f};  // -inf in fp16: the e4m3 cast of NaN is NaN (0x7f), not 448
  f8->Apply(y.data(), 1);
  EXPECT_TRUE(std::isnan(y[0])) << y[0];
  EXPECT_TRUE(std::isnan(y[1])) << y[1];
}

TEST(ActivationQuantizerTest, RefusesWhatItCannotEvaluateNamingIt) {
  QuantArgs asym = Args(QuantType::kInt, 8, Strategy::kToken, "true");
  asym.symmetric = false;
  auto s = ActivationQuantizer::Check(asym, ActivationSite::kLinear, "group_0.input_activations");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("group_0.input_activations"), std::string::npos);
  EXPECT_NE(s.message().find("asymmetric"), std::string::npos);
  EXPECT_FALSE(ActivationQuantizer::Check(Args(QuantType::kFloat, 8, Strategy::kTensor, "true"),
                                          ActivationSite::kLinear, "x")
                   .ok());  // dynamic per tensor
  EXPECT_FALSE(ActivationQuantizer::Check(Args(QuantType::kFloat, 8, Strategy::kChannel, "false"),
                                          ActivationSite::kLinear, "x")
                   .ok());
  QuantArgs mx = Args(QuantType::kFloat, 4, Strategy::kGroup, "true");
  mx.group_size = 32;
  mx.scale_dtype = "torch.uint8";
  EXPECT_FALSE(ActivationQuantizer::Check(mx, ActivationSite::kLinear, "x").ok());
  EXPECT_FALSE(ActivationQuantizer::Check(Args(QuantType::kFloat, 8, Strategy::kToken, "true"),
                                          ActivationSite::kKvCache, "kv")
                   .ok());  // dynamic kv cache
  EXPECT_TRUE(ActivationQuantizer::Check(Args(QuantType::kFloat, 8, Strategy::kTensor, "false"),
                                         ActivationSite::kKvCache, "kv")
                  .ok());
  EXPECT_TRUE(ActivationQuantizer::Check(NvFp4Args(), ActivationSite::kLinear, "x").ok());
  QuantArgs g = Args(QuantType::kInt, 8, Strategy::kGroup, "true");
  g.group_size = 3;
  EXPECT_FALSE(ActivationQuantizer::Create(g, ActivationSite::kLinear, DType::kBF16, 8, "x").ok());  // 8 % 3
}

}  // namespace
}  // namespace llmc
