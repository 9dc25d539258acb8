#include "engine/algo/smoothquant.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "engine/algo/block_view_test_util.h"

namespace llmc {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::FakeBlockView;

constexpr int64_t kHidden = 8, kTokens = 12;

// q/k/v read the input norm's output (channel 2 an outlier, channel 6 always 0); o, gate, up and down follow.
void Fill(FakeBlockView* b) {
  b->AddDecoderLinears(kHidden, 4, 16);
  b->input_norm().assign(kHidden, 1.0f);
  b->post_attention_norm().assign(kHidden, 0.5f);
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(kTokens * kHidden);
  for (int64_t t = 0; t < kTokens; ++t)
    for (int64_t c = 0; c < kHidden; ++c) x[t * kHidden + c] = c == 6 ? 0.0f : normal(rng) * (c == 2 ? 40.0f : 1.0f);
  b->SetInput("self_attn.q_proj", x, kHidden);
  // Column 4 of the balance weights is zero: its scale is the activation max alone.
  for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}) {
    LinearWeight* l = b->linear(m);
    for (int64_t r = 0; r < l->out_features; ++r) l->weight[r * kHidden + 4] = 0.0f;
  }
}

SmoothQuantParams QkvMapping(double alpha) {
  SmoothQuantParams p;
  p.smoothing_strength = alpha;
  p.mappings.push_back(testing::QkvFromInputNorm());
  return p;
}

TEST(SmoothQuantTest, ScalesTheBalanceColumnsAndDividesTheNorm) {
  FakeBlockView b;
  Fill(&b);
  FakeBlockView orig;
  Fill(&orig);
  const double alpha = 0.5;
  ASSERT_TRUE(ApplySmoothQuant(QkvMapping(alpha), &b).ok());
  const auto st = orig.input_statistics(std::string(FakeBlockView::kPrefix) + "self_attn.q_proj");
  ASSERT_TRUE(st.has_value());
  for (int64_t c = 0; c < kHidden; ++c) {
    float wmax = 0;
    for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}) {
      const LinearWeight* l = orig.linear(m);
      for (int64_t r = 0; r < l->out_features; ++r) wmax = std::max(wmax, std::fabs(l->weight[r * kHidden + c]));
    }
    const double a = st->channel_max[c];
    double s = c == 4 ? a : std::pow(a, alpha) / std::pow(wmax, 1 - alpha);
    if (c == 6) s = 1.0;  // max |x| = 0: no scale
    const float sf = static_cast<float>(s);
    EXPECT_EQ(b.input_norm()[c], 1.0f / sf) << c;
    for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"})
      for (int64_t r = 0; r < b.linear(m)->out_features; ++r)
        EXPECT_EQ(b.linear(m)->weight[r * kHidden + c], orig.linear(m)->weight[r * kHidden + c] * sf) << m << c;
  }
  // The outlier channel's activations moved into the weights: its weights grew, its norm shrank.
  EXPECT_LT(b.input_norm()[2], 0.5f);
  // Nothing else changed.
  EXPECT_EQ(b.post_attention_norm(), orig.post_attention_norm());
  for (const char* m : {"self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"})
    EXPECT_EQ(b.linear(m)->weight, orig.linear(m)->weight) << m;
}

// norm[c] * W[r, c] is what the block computes with; smoothing keeps it (up to rounding).
TEST(SmoothQuantTest, KeepsTheProductOfNormAndWeight) {
  FakeBlockView b;
  Fill(&b);
  FakeBlockView orig;
  Fill(&orig);
  ASSERT_TRUE(ApplySmoothQuant(QkvMapping(0.8), &b).ok());
  for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"})
    for (int64_t r = 0; r < b.linear(m)->out_features; ++r)
      for (int64_t c = 0; c < kHidden; ++c) {
        const float before = orig.input_norm()[c] * orig.linear(m)->weight[r * kHidden + c];
        const float after = b.input_norm()[c] * b.linear(m)->weight[r * kHidden + c];
        EXPECT_NEAR(after, before, 1e-6f * std::fabs(before) + 1e-12f) << m << " " << r << " " << c;
      }
}

TEST(SmoothQuantTest, RoundsToTheModelDtype) {
  FakeBlockView b(DType::kBF16);
  Fill(&b);
  ASSERT_TRUE(ApplySmoothQuant(QkvMapping(0.5), &b).ok());
  for (float v : b.input_norm()) EXPECT_EQ(v, RoundBF16(v));
  for (float v : b.linear("self_attn.k_proj")->weight) EXPECT_EQ(v, RoundBF16(v));
  EXPECT_NE(b.input_norm(), std::vector<float>(kHidden, 1.0f));
}

TEST(SmoothQuantTest, IgnoredAndUnresolvedMappingsLeaveTheBlock) {
  FakeBlockView b;
  Fill(&b);
  FakeBlockView orig;
  Fill(&orig);
  SmoothQuantParams p = QkvMapping(0.5);
  p.ignore = {"re:.*k_proj"};
  p.mappings.push_back({{"re:.*gate_proj"}, "re:.*post_attention_layernorm"});  // no statistics for gate/up
  p.mappings.push_back({{"re:.*q_proj"}, "re:.*no_such_norm"});
  ASSERT_TRUE(ApplySmoothQuant(p, &b).ok());
  EXPECT_EQ(b.linear("self_attn.k_proj")->weight, orig.linear("self_attn.k_proj")->weight);
  EXPECT_NE(b.linear("self_attn.q_proj")->weight, orig.linear("self_attn.q_proj")->weight);
  EXPECT_EQ(b.post_attention_norm(), orig.post_attention_norm());
  EXPECT_EQ(b.linear("mlp.gate_proj")->weight, orig.linear("mlp.gate_proj")->weight);
}

TEST(SmoothQuantTest, TheInputNormMustFeedItsBalanceLinears) {
  FakeBlockView b;
  Fill(&b);
  SmoothQuantParams p;
  p.mappings.push_back({{"re:.*o_proj"}, "re:.*input_layernorm"});
  absl::Status s = ApplySmoothQuant(p, &b);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("balance layers must read the norm's output"));
}

TEST(SmoothQuantTest, NeedsTheBalanceLinearsInputs) {
  FakeBlockView b;
  Fill(&b);
  SmoothQuantParams p = QkvMapping(0.5);
  p.mappings.push_back({{"re:.*down_proj"}, "re:.*up_proj"});
  std::vector<std::string> names;
  for (const LinearWeight* l : b.linears()) names.push_back(l->name);
  const std::string pre = FakeBlockView::kPrefix;
  EXPECT_THAT(SmoothQuantInputs(p, names), ElementsAre(pre + "self_attn.q_proj", pre + "self_attn.k_proj",
                                                       pre + "self_attn.v_proj", pre + "mlp.down_proj"));
}

}  // namespace
}  // namespace llmc
