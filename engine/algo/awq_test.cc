#include "engine/algo/awq.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "engine/algo/block_view_test_util.h"
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
  EXPECT_LT(c.ratio, 1.0);
  EXPECT_GT(c.loss, 0.0);
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

// The grid of n points holds ratio 0, which is the whole grid of one point: a finer search never does worse, and
// with outlier channels it does better.
TEST(AwqTest, AFinerGridFindsALowerLoss) {
  FakeBlockView one, ten;
  Fill(&one);
  Fill(&ten);
  auto a = ApplyAwq(QkvMapping(1), &one);
  auto b = ApplyAwq(QkvMapping(10), &ten);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)[0].ratio, 0.0);
  EXPECT_GT((*b)[0].ratio, 0.0);
  EXPECT_LT((*b)[0].loss, (*a)[0].loss);
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
