#include "engine/algo/awq.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <optional>
#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "engine/algo/block_view_test_util.h"
#include "engine/quant/weight_quantizer.h"
#include "engine/tensor/model_dtype.h"

namespace llmc {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::FakeBlockView;

constexpr int64_t kHidden = 128, kInter = 256, kTokens = 32;

// A block whose q/k/v and down_proj inputs have a few outlier channels; every Linear quantized W4A16_ASYM (int4,
// groups of 128 columns).
void Fill(FakeBlockView* b, DType dtype = DType::kF32) {
  b->AddDecoderLinears(kHidden, kHidden / 2, kInter);
  for (LinearWeight* l : b->linears())
    for (float& v : l->weight) v = RoundToDType(v, dtype);
  b->input_norm().assign(kHidden, 1.0f);
  b->post_attention_norm().assign(kHidden, 1.0f);
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto inputs = [&](int64_t in) {
    std::vector<float> x(kTokens * in);
    for (int64_t t = 0; t < kTokens; ++t)
      for (int64_t c = 0; c < in; ++c) x[t * in + c] = normal(rng) * (c % 11 == 3 ? 25.0f : 1.0f);
    return x;
  };
  b->SetInput("self_attn.q_proj", inputs(kHidden), kHidden);
  b->SetInput("mlp.down_proj", inputs(kInter), kInter);
  b->Quantize("W4A16_ASYM");
}

AwqParams QkvMapping(int n_grid) {
  AwqParams p;
  p.n_grid = n_grid;
  p.mappings.push_back(testing::QkvFromInputNorm());
  return p;
}

TEST(AwqTest, SearchesTheGridAndKeepsTheProductOfNormAndWeight) {
  FakeBlockView b;
  Fill(&b);
  FakeBlockView orig;
  Fill(&orig);
  auto chosen = ApplyAwq(QkvMapping(10), &b);
  ASSERT_TRUE(chosen.ok()) << chosen.status();
  ASSERT_EQ(chosen->size(), 1u);
  const AwqChoice& c = (*chosen)[0];
  EXPECT_EQ(c.smooth, "re:.*input_layernorm");
  EXPECT_EQ(c.balance, std::string(FakeBlockView::kPrefix) + "self_attn.q_proj");
  EXPECT_GE(c.ratio, 0.0);
  EXPECT_LE(c.ratio, 1.0);
  EXPECT_GT(c.loss, 0.0);
  EXPECT_LE(c.loss, c.initial_loss);
  EXPECT_FALSE(c.on_device);
  EXPECT_EQ(b.parent_calls, 1 + 10);  // the reference, then every grid point
  // The norm absorbed 1/s and q/k/v s: what the block computes is unchanged up to rounding.
  EXPECT_NE(b.input_norm(), orig.input_norm());
  for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"})
    for (int64_t r = 0; r < b.linear(m)->out_features; ++r)
      for (int64_t col = 0; col < kHidden; ++col) {
        const float before = orig.input_norm()[col] * orig.linear(m)->weight[r * kHidden + col];
        const float after = b.input_norm()[col] * b.linear(m)->weight[r * kHidden + col];
        EXPECT_NEAR(after, before, 1e-6f * std::fabs(before) + 1e-12f) << m;
      }
  EXPECT_EQ(b.linear("mlp.gate_proj")->weight, orig.linear("mlp.gate_proj")->weight);
}

// The grid's first point is the identity (plain RTN): the search never does worse than RTN, and with outlier
// channels it does better.
TEST(AwqTest, NeverWorseThanTheIdentityAndBetterWithOutliers) {
  FakeBlockView b;
  Fill(&b);
  auto r = ApplyAwq(QkvMapping(10), &b);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*r)[0].duo);  // a duo-scaled point beat the identity
  EXPECT_LT((*r)[0].loss, (*r)[0].initial_loss);
}

// The MSE of `v`'s parent output for `balance` with their weights RTN-quantized (in `dtype`, NVFP4 with
// `global_scale` when given) against the weights as held.
double RtnParentLoss(FakeBlockView* v, const std::vector<LinearWeight*>& balance, DType dtype,
                     std::optional<float> global_scale = std::nullopt) {
  std::vector<float> ref, out;
  std::vector<std::vector<float>> q(balance.size());
  std::vector<const std::vector<float>*> held(balance.size(), nullptr), qp;
  EXPECT_TRUE(v->ParentForward(balance, held, &ref).ok());
  for (size_t i = 0; i < balance.size(); ++i) {
    const LinearWeight& w = *balance[i];
    auto bytes = ToDTypeBytes(w.weight, dtype);
    WeightView view{w.name, bytes.data(), dtype, w.out_features, w.in_features};
    const ConfigGroup& g = *v->weight_group(w.name);
    auto bufs = QuantizeWeight(view, *g.scheme.weights, g.format, global_scale);
    EXPECT_TRUE(bufs.ok()) << bufs.status();
    q[i] = *DequantizeWeight(w.out_features, w.in_features, dtype, *g.scheme.weights, g.format, *bufs);
    for (float& x : q[i]) x = RoundToDType(x, dtype);
    qp.push_back(&q[i]);
  }
  EXPECT_TRUE(v->ParentForward(balance, qp, &out).ok());
  double mse = 0;
  for (size_t k = 0; k < out.size(); ++k) {
    const double d = static_cast<double>(out[k]) - ref[k];
    mse += d * d;
  }
  return mse / static_cast<double>(out.size());
}

std::vector<LinearWeight*> Qkv(FakeBlockView* v) {
  return {v->linear("self_attn.q_proj"), v->linear("self_attn.k_proj"), v->linear("self_attn.v_proj")};
}

// The identity point's loss is the MSE of the parent's output with the RTN-quantized weights.
TEST(AwqTest, InitialLossIsTheRtnLoss) {
  FakeBlockView b;
  Fill(&b);
  FakeBlockView rtn;
  Fill(&rtn);
  const double mse = RtnParentLoss(&rtn, Qkv(&rtn), DType::kF32);
  auto r = ApplyAwq(QkvMapping(4), &b);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR((*r)[0].initial_loss, mse, 1e-12 * mse);
}

// A device evaluator, when the view offers one, computes every grid point's loss; the host forward is not run.
class ScriptedLoss final : public AwqLossEvaluator {
 public:
  explicit ScriptedLoss(std::vector<double> losses, std::vector<std::vector<double>>* seen)
      : losses_(std::move(losses)), seen_(seen) {}
  absl::StatusOr<double> Loss(absl::Span<const double> s) override {
    seen_->emplace_back(s.begin(), s.end());
    return losses_.at(seen_->size() - 1);
  }

 private:
  std::vector<double> losses_;
  std::vector<std::vector<double>>* seen_;
};

// AWQ on float weight schemes (FP8 per tensor, per channel and in blocks, NVFP4, MXFP4): the identity point's loss
// is the RTN loss of the scheme, each Linear quantized alone except NVFP4's q/k/v, which share one global scale
// (the library's fused observers); k_proj's weights are made 8x larger so the shared global scale differs from q's
// and v's own. A duo-scaled point beats the identity on the outlier inputs.
TEST(AwqTest, FloatSchemesSearchFromTheirOwnRtn) {
  for (const char* preset : {"FP8", "FP8_DYNAMIC", "FP8_BLOCK", "NVFP4A16", "MXFP4A16"}) {
    SCOPED_TRACE(preset);
    auto make = [&](FakeBlockView* v) {
      Fill(v, DType::kBF16);
      for (float& w : v->linear("self_attn.k_proj")->weight) w *= 8.0f;
      v->Quantize(preset);
    };
    FakeBlockView b(DType::kBF16), rtn(DType::kBF16);
    make(&b);
    make(&rtn);
    const std::vector<LinearWeight*> qkv = Qkv(&rtn);
    std::optional<float> fused;
    if (std::string(preset) == "NVFP4A16") {
      float amax = 0;
      for (const LinearWeight* w : qkv)
        for (float v : w->weight) amax = std::max(amax, std::fabs(v));
      fused = NvFp4GlobalScale(amax, DType::kBF16);
    }
    auto rtn_loss = [&](std::optional<float> global) { return RtnParentLoss(&rtn, qkv, DType::kBF16, global); };
    const double expected = rtn_loss(fused);
    auto r = ApplyAwq(QkvMapping(10), &b);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_NEAR((*r)[0].initial_loss, expected, 1e-9 * expected);
    if (fused) {
      EXPECT_GT(std::fabs((*r)[0].initial_loss - rtn_loss(std::nullopt)), 1e-6 * expected);
    }
    EXPECT_TRUE((*r)[0].duo);
    EXPECT_LT((*r)[0].loss, (*r)[0].initial_loss);
  }
}

TEST(AwqTest, GridIsTheIdentityThenDuoRatiosFromZeroToOne) {
  auto g = AwqGrid(20, true);
  ASSERT_TRUE(g.ok());
  ASSERT_EQ(g->size(), 20u);
  EXPECT_FALSE((*g)[0].duo);
  EXPECT_EQ((*g)[0].ratio, 0.0);
  for (int i = 1; i < 20; ++i) {
    EXPECT_TRUE((*g)[i].duo);
    EXPECT_DOUBLE_EQ((*g)[i].ratio, (i - 1) / 18.0);
  }
  EXPECT_EQ((*g)[19].ratio, 1.0);
  auto plain = AwqGrid(5, false);
  ASSERT_TRUE(plain.ok());
  ASSERT_EQ(plain->size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE((*plain)[i].duo);
    EXPECT_DOUBLE_EQ((*plain)[i].ratio, i / 4.0);
  }
  EXPECT_EQ(AwqGrid(2, true).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(AwqGrid(2, true).status().message()), HasSubstr("n_grid >= 3"));
  EXPECT_EQ(AwqGrid(1, false).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(AwqGrid(3, true).ok());
  EXPECT_TRUE(AwqGrid(2, false).ok());
}

// duo_scaling: both: n_grid / 2 ratios i / (n_grid / 2 - 1), each without and then with duo scaling (the library's
// _get_grid_search_params); an odd n_grid rounds down; fewer than 4 points is refused.
TEST(AwqTest, GridWithBothAlternatesPlainAndDuoPoints) {
  auto g = AwqGrid(20, true, true);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(g->size(), 20u);
  for (int i = 0; i < 10; ++i) {
    EXPECT_FALSE((*g)[2 * i].duo);
    EXPECT_TRUE((*g)[2 * i + 1].duo);
    EXPECT_DOUBLE_EQ((*g)[2 * i].ratio, i / 9.0);
    EXPECT_DOUBLE_EQ((*g)[2 * i + 1].ratio, i / 9.0);
  }
  EXPECT_EQ((*g)[0].ratio, 0.0);  // the identity first
  EXPECT_EQ((*g)[19].ratio, 1.0);
  auto odd = AwqGrid(7, true, true);
  ASSERT_TRUE(odd.ok());
  ASSERT_EQ(odd->size(), 6u);
  EXPECT_DOUBLE_EQ((*odd)[2].ratio, 0.5);
  EXPECT_EQ(AwqGrid(3, true, true).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(AwqGrid(3, true, true).status().message()), HasSubstr("n_grid >= 4"));
  // On a block: the points searched are the grid's (the identity, then r = 0 with duo scaling, ...).
  FakeBlockView b;
  Fill(&b);
  std::vector<std::vector<double>> seen;
  b.device_awq_loss = [&](absl::Span<LinearWeight* const>) -> absl::StatusOr<std::unique_ptr<AwqLossEvaluator>> {
    return std::make_unique<ScriptedLoss>(std::vector<double>{5, 4, 1, 3, 2, 2}, &seen);
  };
  AwqParams p = QkvMapping(6);
  p.duo_scaling_both = true;
  auto r = ApplyAwq(p, &b);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(seen.size(), 6u);
  for (double v : seen[0]) EXPECT_EQ(v, 1.0);
  EXPECT_FALSE((*r)[0].duo);  // point 2 of 0..5: r = 1/2 without duo scaling
  EXPECT_DOUBLE_EQ((*r)[0].ratio, 0.5);
  EXPECT_EQ((*r)[0].loss, 1.0);
}

TEST(AwqTest, ScalesAreNormalizedAndNonFiniteBecomesOne) {
  const std::vector<double> x = {1.0, 4.0, 16.0, 0.0}, w = {0.5, 0.5, 0.25, 0.5};
  auto id = AwqScales(x, w, {0.0, false});
  for (double v : id) EXPECT_EQ(v, 1.0);
  // r = 0.5 without duo scaling: sqrt(x) clamped at 1e-4 = {1, 2, 4, 1e-4}, divided by sqrt(4 * 1e-4) = 0.02.
  auto half = AwqScales(x, w, {0.5, false});
  EXPECT_DOUBLE_EQ(half[0], 1.0 / 0.02);
  EXPECT_DOUBLE_EQ(half[2], 4.0 / 0.02);
  EXPECT_DOUBLE_EQ(half[3], 1e-4 / 0.02);
  // Duo at r = 1: x / (1 + 1e-4) (w^0 = 1), clamped, normalized: max * min of the result is 1.
  auto duo = AwqScales(x, w, {1.0, true});
  double mx = 0, mn = INFINITY;
  for (double v : duo) mx = std::max(mx, v), mn = std::min(mn, v);
  EXPECT_NEAR(mx * mn, 1.0, 1e-12);
  EXPECT_NEAR(duo[1] / duo[0], 4.0, 1e-12);
  // Duo at r = 0: 1 / (w + 1e-4): w = 0.25 gets the largest scale.
  auto duo0 = AwqScales(x, w, {0.0, true});
  EXPECT_NEAR(duo0[2] / duo0[0], (0.5 + 1e-4) / (0.25 + 1e-4), 1e-12);
  // An Inf activation mean makes the normalizer Inf: every scale is then NaN or 0 / Inf... and NaN becomes 1.
  auto inf = AwqScales({1.0, INFINITY}, {0.5, 0.5}, {0.5, false});
  for (double v : inf) EXPECT_TRUE(std::isfinite(v));
  auto nan = AwqScales({1.0, NAN}, {0.5, 0.5}, {0.5, false});
  for (double v : nan) EXPECT_EQ(v, 1.0);
}

// w_mean divides |w| by its group's amax + 1e-6 in the model dtype (each quotient rounded to it), as the library
// does on the bf16 weight; the channel strategy takes whole rows, the tensor strategy the whole tensor.
TEST(AwqTest, WeightMeansDivideInTheModelDtype) {
  LinearWeight a, b;
  a.name = "a";
  b.name = "b";
  a.out_features = b.out_features = 1;
  a.in_features = b.in_features = 4;
  a.weight = {0.3f, -1.0f, 0.5f, 2.0f};   // groups of 2: amax 1 and 2
  b.weight = {0.1f, 0.25f, -4.0f, 1.0f};  // amax 0.25 and 4
  QuantArgs g;
  g.num_bits = 4;
  g.strategy = Strategy::kGroup;
  g.group_size = 2;
  const std::vector<const LinearWeight*> ws = {&a, &b};
  auto bf = AwqWeightMeans(ws, g, DType::kBF16);
  ASSERT_TRUE(bf.ok()) << bf.status();
  // Column 0: (bf16(0.3 / 1) + bf16(0.1 / 0.25)) / 2 with bf16(1 + 1e-6) = 1, bf16(0.25 + 1e-6) = 0.25.
  EXPECT_DOUBLE_EQ((*bf)[0], (RoundBF16(0.3f) + RoundBF16(0.1f / 0.25f)) / 2.0);
  EXPECT_NE((*bf)[0], (0.3 / (1 + 1e-6) + 0.1 / (0.25 + 1e-6)) / 2.0);
  auto f32 = AwqWeightMeans(ws, g, DType::kF32);
  ASSERT_TRUE(f32.ok());
  EXPECT_NEAR((*f32)[0], (0.3 / (1 + 1e-6) + 0.1 / (0.25 + 1e-6)) / 2.0, 1e-7);
  g.strategy = Strategy::kChannel;  // whole rows: amax 2 and 4
  auto ch = AwqWeightMeans(ws, g, DType::kF32);
  ASSERT_TRUE(ch.ok());
  EXPECT_NEAR((*ch)[1], (1.0 / 2 + 0.25 / 4) / 2.0, 1e-6);
  g.strategy = Strategy::kTensor;  // one amax per tensor, which here equals the channel's
  auto t = AwqWeightMeans(ws, g, DType::kF32);
  ASSERT_TRUE(t.ok());
  EXPECT_NEAR((*t)[1], (*ch)[1], 1e-9);
  g.strategy = Strategy::kGroup;
  g.group_size = 3;
  EXPECT_THAT(std::string(AwqWeightMeans(ws, g, DType::kF32).status().message()), HasSubstr("not divisible by group_size 3"));
  // The block strategy: one amax per block of rows and columns (FP8_BLOCK), edge blocks partial. A [3, 4] weight in
  // 2 x 2 blocks: rows 0-1 x cols 0-1 amax 4, rows 0-1 x cols 2-3 amax 8, row 2 alone.
  LinearWeight c;
  c.name = "c";
  c.out_features = 3;
  c.in_features = 4;
  c.weight = {1, -4, 2, 8,  //
              2, 1, -1, 4,  //
              3, 0.5f, 1, -2};
  QuantArgs blk;
  blk.type = QuantType::kFloat;
  blk.num_bits = 8;
  blk.strategy = Strategy::kBlock;
  blk.block_structure = std::array<int, 2>{2, 2};
  const std::vector<const LinearWeight*> one = {&c};
  auto bm = AwqWeightMeans(one, blk, DType::kF32);
  ASSERT_TRUE(bm.ok()) << bm.status();
  EXPECT_NEAR((*bm)[0], (1.0 / 4 + 2.0 / 4 + 3.0 / 3) / 3, 1e-6);
  EXPECT_NEAR((*bm)[1], (4.0 / 4 + 1.0 / 4 + 0.5 / 3) / 3, 1e-6);
  EXPECT_NEAR((*bm)[3], (8.0 / 8 + 4.0 / 8 + 2.0 / 2) / 3, 1e-6);
}

// compressed-tensors' asymmetric int4 arithmetic in the model dtype, written out for one group of a row: the range
// widened to 0, scale = (max - min) / 15, zero point = round(clamp(-8 - min / scale, -8, 7)), codes clamped to
// [-8, 7], every intermediate rounded to bf16.
std::vector<float> ReferenceAsymInt4(const std::vector<float>& x) {
  auto R = [](float v) { return RoundBF16(v); };
  float mn = 0, mx = 0;
  for (float v : x) mn = std::min(mn, v), mx = std::max(mx, v);
  float scale = R(R(mx - mn) / 15.0f);
  if (scale == 0) scale = 0.0078125f;
  const float zp = std::nearbyint(std::clamp(R(-8.0f - R(mn / scale)), -8.0f, 7.0f));
  std::vector<float> out;
  for (float v : x) {
    const float code = std::nearbyint(std::clamp(R(R(v / scale) + zp), -8.0f, 7.0f));
    out.push_back(R(R(code - zp) * scale));
  }
  return out;
}

// AwqTrialWeight = round(Q(round(W s)) / s): pinned against the written-out asymmetric arithmetic, and a power-of-two
// scale (exact in every step) gives RTN's values exactly.
TEST(AwqTest, TrialWeightIsQuantizedScaledWeightDividedByTheScale) {
  FakeBlockView b(DType::kBF16);
  Fill(&b, DType::kBF16);
  const LinearWeight& q = *b.linear("self_attn.q_proj");
  const ConfigGroup& g = *b.weight_group(q.name);
  std::vector<double> s(kHidden);
  for (int64_t c = 0; c < kHidden; ++c) s[c] = 0.6 + 0.01 * (c % 37);
  auto t = AwqTrialWeight(q.name, q.weight, q.out_features, kHidden, g, DType::kBF16, s);
  ASSERT_TRUE(t.ok()) << t.status();
  for (int64_t r = 0; r < q.out_features; r += 13) {
    std::vector<float> scaled(kHidden);
    for (int64_t c = 0; c < kHidden; ++c) scaled[c] = RoundBF16(static_cast<float>(q.weight[r * kHidden + c] * s[c]));
    const std::vector<float> dq = ReferenceAsymInt4(scaled);  // one group of 128 columns
    for (int64_t c = 0; c < kHidden; ++c)
      ASSERT_EQ((*t)[r * kHidden + c], RoundBF16(static_cast<float>(dq[c] / s[c]))) << "row " << r << " col " << c;
  }
  std::vector<double> ones(kHidden, 1.0), twos(kHidden, 2.0);
  auto t1 = AwqTrialWeight(q.name, q.weight, q.out_features, kHidden, g, DType::kBF16, ones);
  auto t2 = AwqTrialWeight(q.name, q.weight, q.out_features, kHidden, g, DType::kBF16, twos);
  ASSERT_TRUE(t1.ok() && t2.ok());
  EXPECT_EQ(*t1, *t2);
  EXPECT_NE(*t1, *t);
}

TEST(AwqTest, UsesTheDeviceEvaluatorAndTheFirstOfEqualLosses) {
  FakeBlockView b;
  Fill(&b);
  std::vector<std::vector<double>> seen;
  b.device_awq_loss = [&](absl::Span<LinearWeight* const> balance) -> absl::StatusOr<std::unique_ptr<AwqLossEvaluator>> {
    EXPECT_EQ(balance.size(), 3u);
    return std::make_unique<ScriptedLoss>(std::vector<double>{5, 4, 2, 3, 2}, &seen);
  };
  auto r = ApplyAwq(QkvMapping(5), &b);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(b.parent_calls, 0);
  ASSERT_EQ(seen.size(), 5u);
  EXPECT_TRUE((*r)[0].on_device);
  EXPECT_EQ((*r)[0].loss, 2.0);
  EXPECT_EQ((*r)[0].initial_loss, 5.0);
  EXPECT_DOUBLE_EQ((*r)[0].ratio, 1.0 / 3.0);  // grid point 2: duo, r = 1 / (5 - 2)
  for (double v : seen[0]) EXPECT_EQ(v, 1.0);  // the identity first
  // The applied scales are grid point 2's: q_proj's columns were multiplied by them.
  FakeBlockView orig;
  Fill(&orig);
  for (int64_t c = 0; c < kHidden; ++c)
    EXPECT_NEAR(b.linear("self_attn.q_proj")->weight[c], orig.linear("self_attn.q_proj")->weight[c] * seen[2][c],
                1e-6 * std::fabs(orig.linear("self_attn.q_proj")->weight[c] * seen[2][c]));
}

// up_proj -> down_proj: the smooth Linear's output rows (and bias) take 1/s, down_proj's columns s.
TEST(AwqTest, ASmoothLinearAbsorbsTheScaleInItsRows) {
  FakeBlockView b;
  Fill(&b);
  b.linear("mlp.up_proj")->bias.assign(kInter, 0.25f);
  FakeBlockView orig;
  Fill(&orig);
  orig.linear("mlp.up_proj")->bias.assign(kInter, 0.25f);
  AwqParams p;
  p.n_grid = 4;
  p.mappings.push_back({{"re:.*down_proj"}, "re:.*up_proj"});
  auto chosen = ApplyAwq(p, &b);
  ASSERT_TRUE(chosen.ok()) << chosen.status();
  ASSERT_EQ(chosen->size(), 1u);
  EXPECT_EQ((*chosen)[0].smooth, std::string(FakeBlockView::kPrefix) + "mlp.up_proj");
  const LinearWeight &up = *b.linear("mlp.up_proj"), &down = *b.linear("mlp.down_proj");
  const LinearWeight &up0 = *orig.linear("mlp.up_proj"), &down0 = *orig.linear("mlp.down_proj");
  for (int64_t j = 0; j < kInter; ++j) {
    const float s = down.weight[j] / down0.weight[j];  // column j of row 0
    EXPECT_NEAR(up.bias[j] * s, up0.bias[j], 1e-6f);
    for (int64_t c = 0; c < kHidden; ++c)
      EXPECT_NEAR(up.weight[j * kHidden + c] * s, up0.weight[j * kHidden + c], 1e-6f * std::fabs(up0.weight[j * kHidden + c]) + 1e-9f);
  }
  EXPECT_EQ(b.input_norm(), orig.input_norm());
}

TEST(AwqTest, SkipsMappingsThatDoNotResolve) {
  FakeBlockView b;
  Fill(&b);
  AwqParams p;
  p.n_grid = 3;
  p.mappings.push_back({{"re:.*o_proj"}, "re:.*v_proj"});          // v_proj's 64 outputs are not o_proj's 128 inputs
  p.mappings.push_back({{"re:.*q_proj"}, "re:.*no_such_module"});  // nothing to smooth
  p.mappings.push_back({{"re:.*nothing"}, "re:.*input_layernorm"});  // nothing to balance
  auto chosen = ApplyAwq(p, &b);
  ASSERT_TRUE(chosen.ok()) << chosen.status();
  EXPECT_TRUE(chosen->empty());
  EXPECT_EQ(b.parent_calls, 0);
  // Balance Linears that are not quantized are left alone too.
  FakeBlockView u;
  Fill(&u);
  u.Quantize("W4A16_ASYM", {"re:.*k_proj"});
  auto none = ApplyAwq(QkvMapping(3), &u);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(AwqTest, NeedsCalibrationTokens) {
  FakeBlockView b;
  Fill(&b);
  AwqParams p;
  p.mappings.push_back({{"re:.*gate_proj", "re:.*up_proj"}, "re:.*post_attention_layernorm"});  // no inputs set
  auto r = ApplyAwq(p, &b);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("mlp.gate_proj: saw no calibration tokens"));
}

TEST(AwqTest, RoundsToTheModelDtype) {
  FakeBlockView b(DType::kBF16);
  Fill(&b, DType::kBF16);
  ASSERT_TRUE(ApplyAwq(QkvMapping(5), &b).ok());
  for (float v : b.input_norm()) EXPECT_EQ(v, RoundBF16(v));
  for (float v : b.linear("self_attn.v_proj")->weight) EXPECT_EQ(v, RoundBF16(v));
}

TEST(AwqTest, InputsAreTheFourParentInputs) {
  const std::string p = "model.layers.3.";
  std::vector<std::string> linears;
  for (const char* l : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                        "mlp.up_proj", "mlp.down_proj"})
    linears.push_back(p + l);
  AwqParams params;
  params.mappings = DefaultAwqMappings();
  EXPECT_THAT(AwqInputs(params, {p + "input_layernorm", p + "post_attention_layernorm"}, linears),
              ElementsAre(p + "self_attn.q_proj", p + "self_attn.o_proj", p + "mlp.gate_proj", p + "mlp.down_proj"));
}

// A mixture-of-experts block: post_attention_layernorm balances the router and every expert's gate/up (one set,
// the router first: its input is the search's), and up_proj -> down_proj resolves once per expert, each expert's
// up_proj with its own down_proj.
TEST(AwqTest, ExpertMappingsResolvePerExpert) {
  const std::string p = "model.layers.0.";
  std::vector<std::string> linears = {p + "self_attn.q_proj", p + "self_attn.k_proj", p + "self_attn.v_proj",
                                      p + "self_attn.o_proj", p + "mlp.gate"};
  for (int e = 0; e < 3; ++e)
    for (const char* l : {"gate_proj", "up_proj", "down_proj"})
      linears.push_back(p + "mlp.experts." + std::to_string(e) + "." + l);
  AwqParams params;
  params.mappings = {{{"re:.*mlp\\.gate$", "re:.*mlp\\.experts\\.\\d+\\.gate_proj$", "re:.*mlp\\.experts\\.\\d+\\.up_proj$"},
                      "re:.*post_attention_layernorm$"},
                     {{"re:.*down_proj$"}, "re:.*up_proj$"}};
  params.ignore = {p + "mlp.experts.2.down_proj"};
  auto r = ResolveAwqMappings(params, {p + "input_layernorm", p + "post_attention_layernorm"}, linears);
  ASSERT_EQ(r.size(), 3u);  // the norm set, experts 0 and 1 (expert 2's down_proj is ignored)
  EXPECT_TRUE(r[0].smooth_is_norm);
  EXPECT_EQ(r[0].smooth, p + "post_attention_layernorm");
  EXPECT_EQ(r[0].target, "re:.*post_attention_layernorm$");
  ASSERT_EQ(r[0].balance.size(), 7u);
  EXPECT_EQ(r[0].balance[0], p + "mlp.gate");
  for (int e = 0; e < 2; ++e) {
    EXPECT_FALSE(r[1 + e].smooth_is_norm);
    EXPECT_EQ(r[1 + e].smooth, p + "mlp.experts." + std::to_string(e) + ".up_proj");
    EXPECT_THAT(r[1 + e].balance, ElementsAre(p + "mlp.experts." + std::to_string(e) + ".down_proj"));
  }
  EXPECT_THAT(AwqInputs(params, {p + "post_attention_layernorm"}, linears),
              ElementsAre(p + "mlp.gate", p + "mlp.experts.0.down_proj", p + "mlp.experts.1.down_proj"));
}

// llm-compressor's MoE mapping balances the (unquantized) router with the experts' gate/up: the router's columns
// absorb s like theirs (so routing is unchanged), but the search never quantizes it (it runs as held) and its
// weights are not in the means; the statistics are the router's input.
TEST(AwqTest, RouterIsScaledButNotQuantized) {
  FakeBlockView b;
  b.AddLinear("mlp.gate", 4, kHidden, 8);
  b.AddLinear("mlp.experts.0.gate_proj", kInter, kHidden, 5);
  b.AddLinear("mlp.experts.0.up_proj", kInter, kHidden, 6);
  b.post_attention_norm().assign(kHidden, 1.0f);
  std::mt19937 rng(14);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(kTokens * kHidden);
  for (int64_t t = 0; t < kTokens; ++t)
    for (int64_t c = 0; c < kHidden; ++c) x[t * kHidden + c] = normal(rng) * (c % 9 == 4 ? 20.0f : 1.0f);
  b.SetInput("mlp.gate", x, kHidden);
  b.Quantize("W4A16_ASYM", {"re:.*mlp\\.gate$"});
  const LinearWeight router = *b.linear("mlp.gate");
  AwqParams p;
  p.n_grid = 4;
  p.mappings.push_back({{"re:.*mlp\\.gate$", "re:.*experts\\.\\d+\\.gate_proj$", "re:.*experts\\.\\d+\\.up_proj$"},
                        "re:.*post_attention_layernorm$"});
  auto r = ApplyAwq(p, &b);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].balance, std::string(FakeBlockView::kPrefix) + "mlp.gate");
  EXPECT_EQ(b.held_weights[std::string(FakeBlockView::kPrefix) + "mlp.gate"], 1 + 4);  // never a trial weight
  EXPECT_EQ(b.held_weights[std::string(FakeBlockView::kPrefix) + "mlp.experts.0.up_proj"], 1);  // the reference only
  bool changed = false;
  for (int64_t o = 0; o < 4; ++o)
    for (int64_t c = 0; c < kHidden; ++c) {
      const float now = b.post_attention_norm()[c] * b.linear("mlp.gate")->weight[o * kHidden + c];
      const float before = router.weight[o * kHidden + c];
      changed |= b.linear("mlp.gate")->weight[o * kHidden + c] != before;
      EXPECT_NEAR(now, before, 1e-5 * (1e-3 + std::fabs(before)));
    }
  EXPECT_TRUE(changed);
  // A balance Linear left unquantized that is not a router still skips the mapping.
  FakeBlockView u;
  u.AddLinear("mlp.gate", 4, kHidden, 8);
  u.AddLinear("mlp.experts.0.gate_proj", kInter, kHidden, 5);
  u.AddLinear("mlp.experts.0.up_proj", kInter, kHidden, 6);
  u.post_attention_norm().assign(kHidden, 1.0f);
  u.SetInput("mlp.gate", x, kHidden);
  u.Quantize("W4A16_ASYM", {"re:.*mlp\\.gate$", "re:.*up_proj$"});
  auto none = ApplyAwq(p, &u);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
}

// Phi-3's fused gate_up_proj smooths into down_proj through its up rows only (the last kInter): the gate rows are
// untouched and up(x) * down stays the same function.
TEST(AwqTest, FusedGateUpSmoothsItsUpRows) {
  FakeBlockView b;
  b.AddLinear("mlp.gate_up_proj", 2 * kInter, kHidden, 5);
  b.AddLinear("mlp.down_proj", kHidden, kInter, 7);
  std::mt19937 rng(12);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(kTokens * kInter);
  for (int64_t t = 0; t < kTokens; ++t)
    for (int64_t c = 0; c < kInter; ++c) x[t * kInter + c] = normal(rng) * (c % 7 == 2 ? 30.0f : 1.0f);
  b.SetInput("mlp.down_proj", x, kInter);
  b.Quantize("W4A16_ASYM");
  const LinearWeight gu = *b.linear("mlp.gate_up_proj"), down = *b.linear("mlp.down_proj");
  AwqParams p;
  p.mappings.push_back({{"re:.*down_proj$"}, "re:.*gate_up_proj$"});
  auto r = ApplyAwq(p, &b);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 1u);
  const LinearWeight& gu2 = *b.linear("mlp.gate_up_proj");
  const LinearWeight& down2 = *b.linear("mlp.down_proj");
  for (int64_t i = 0; i < kInter * kHidden; ++i) ASSERT_EQ(gu2.weight[i], gu.weight[i]) << "gate row changed at " << i;
  bool changed = false;
  for (int64_t j = 0; j < kInter; ++j)
    for (int64_t c = 0; c < kHidden; ++c) {
      const int64_t i = (kInter + j) * kHidden + c;
      changed |= gu2.weight[i] != gu.weight[i];
      for (int64_t o = 0; o < kHidden; o += 17)  // up[j][c] * down[o][j] is preserved
        EXPECT_NEAR(gu2.weight[i] * down2.weight[o * kInter + j], gu.weight[i] * down.weight[o * kInter + j],
                    1e-5 * (1e-3 + std::fabs(gu.weight[i] * down.weight[o * kInter + j])));
    }
  EXPECT_TRUE(changed);
}

// A fused qkv_proj smooths into o_proj through its v rows only when v is as wide as o_proj's input (no GQA); under
// GQA the mapping is skipped, as v_proj -> o_proj is.
TEST(AwqTest, FusedQkvSmoothsVRowsOnlyWithoutGqa) {
  for (int64_t kv : {kHidden, kHidden / 2}) {
    FakeBlockView b;
    b.AddLinear("self_attn.qkv_proj", kHidden + 2 * kv, kHidden, 1);
    b.AddLinear("self_attn.o_proj", kHidden, kHidden, 4);
    std::mt19937 rng(13);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> x(kTokens * kHidden);
    for (float& v : x) v = normal(rng);
    b.SetInput("self_attn.o_proj", x, kHidden);
    b.Quantize("W4A16_ASYM");
    const LinearWeight qkv = *b.linear("self_attn.qkv_proj");
    AwqParams p;
    p.mappings.push_back({{"re:.*o_proj$"}, "re:.*qkv_proj$"});
    auto r = ApplyAwq(p, &b);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->size(), kv == kHidden ? 1u : 0u) << "kv " << kv;
    const LinearWeight& qkv2 = *b.linear("self_attn.qkv_proj");
    for (int64_t i = 0; i < (kHidden + kv) * kHidden; ++i) ASSERT_EQ(qkv2.weight[i], qkv.weight[i]) << "q/k row at " << i;
  }
}

}  // namespace
}  // namespace llmc
