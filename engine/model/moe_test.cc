// The MoE MLP (moe.h): config resolution of each family's keys, routing, and the all-experts calibration
// mode.
#include "engine/model/moe.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "engine/model/causal_lm.h"
#include "engine/model/model_test_util.h"

namespace llmc {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;
using testing_util::TestDataDir;

ModelSpec Spec(const std::string& name) {
  auto lm = CausalLm::Open(TestDataDir() + "/" + name, {.threads = 1});
  EXPECT_TRUE(lm.ok()) << lm.status();
  return lm.ok() ? (*lm)->spec() : ModelSpec{};
}

TEST(MoeSpecTest, FamiliesResolveTheirKeys) {
  ModelSpec q3 = Spec("tiny-qwen3moe");
  EXPECT_EQ(q3.moe.style, MoeStyle::kQwen);
  EXPECT_EQ(q3.moe.num_experts, 4);
  EXPECT_EQ(q3.moe.top_k, 2);
  EXPECT_EQ(q3.moe.expert_intermediate, 32);
  EXPECT_TRUE(q3.moe.norm_topk_prob);
  EXPECT_THAT(q3.moe.sparse_layers, ElementsAre(true, false, true));  // mlp_only_layers [1]
  EXPECT_EQ(q3.moe.shared_intermediate, 0);

  ModelSpec nn = Spec("tiny-qwen3moe-nonorm");
  EXPECT_EQ(nn.moe.num_experts, 8);
  EXPECT_FALSE(nn.moe.norm_topk_prob);
  EXPECT_THAT(nn.moe.sparse_layers, ElementsAre(false, true, false));  // decoder_sparse_step 2
  EXPECT_TRUE(nn.tie_word_embeddings);

  ModelSpec mx = Spec("tiny-mixtral");
  EXPECT_EQ(mx.moe.style, MoeStyle::kMixtral);
  EXPECT_TRUE(mx.moe.norm_topk_prob);  // Mixtral always renormalizes
  EXPECT_EQ(mx.moe.expert_intermediate, 80);
  EXPECT_THAT(mx.moe.sparse_layers, ElementsAre(true, true));

  ModelSpec q2 = Spec("tiny-qwen2moe");
  EXPECT_EQ(q2.moe.shared_intermediate, 48);
  EXPECT_FALSE(q2.moe.norm_topk_prob);
  EXPECT_TRUE(q2.qkv_bias);

  EXPECT_FALSE(Spec("tiny-qwen3").moe.enabled());
}

// Qwen2-MoE's q/k/v biases follow its config's `qkv_bias`.
TEST(MoeSpecTest, Qwen2MoeQkvBiasFollowsTheConfig) {
  json c = testing_util::ReadJson(TestDataDir() + "/tiny-qwen2moe/config.json");
  for (bool bias : {true, false}) {
    c["qkv_bias"] = bias;
    auto mc = ParseModelConfig(c.dump(), "cfg");
    ASSERT_TRUE(mc.ok()) << mc.status();
    auto spec = ResolveModelSpec(*mc, c, "cfg");
    ASSERT_TRUE(spec.ok()) << spec.status();
    EXPECT_EQ(spec->qkv_bias, bias);
    EXPECT_FALSE(spec->o_bias);
  }
}

TEST(MoeSpecTest, BadKeysAreNamed) {
  json c = {{"num_local_experts", 4}, {"num_experts_per_tok", 5}, {"moe_intermediate_size", 8}};
  auto s = ResolveMoeSpec(MoeStyle::kQwen, false, c, 2, 16, "cfg");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("num_experts_per_tok 5 exceeds"));
  c["num_experts_per_tok"] = 2;
  c["mlp_only_layers"] = {7};
  s = ResolveMoeSpec(MoeStyle::kQwen, false, c, 2, 16, "cfg");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("mlp_only_layers"));
  c.erase("mlp_only_layers");
  c.erase("moe_intermediate_size");
  s = ResolveMoeSpec(MoeStyle::kQwen, false, c, 2, 16, "cfg");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("moe_intermediate_size"));
  c["moe_intermediate_size"] = 8;
  c["router_jitter_noise"] = 0.1;
  EXPECT_EQ(ResolveMoeSpec(MoeStyle::kQwen, false, c, 2, 16, "cfg").status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST(MoeRoutingTest, TopKSoftmaxWithAndWithoutRenormalization) {
  MoeSpec spec;
  spec.num_experts = 4;
  spec.top_k = 2;
  const float logits[] = {0.f, 1.f, 2.f, -1.f,   // token 0: experts 2, 1
                          3.f, 0.f, 0.f, 3.5f};  // token 1: experts 3, 0
  double z0 = std::exp(0.) + std::exp(1.) + std::exp(2.) + std::exp(-1.);
  spec.norm_topk_prob = false;
  MoeRouting r = RouteTokens(spec, logits, 2);
  EXPECT_THAT(r.tokens[0], ElementsAre(1));
  EXPECT_THAT(r.tokens[1], ElementsAre(0));
  EXPECT_THAT(r.tokens[2], ElementsAre(0));
  EXPECT_THAT(r.tokens[3], ElementsAre(1));
  EXPECT_NEAR(r.weights[2][0], std::exp(2.) / z0, 1e-7);
  EXPECT_NEAR(r.weights[1][0], std::exp(1.) / z0, 1e-7);
  spec.norm_topk_prob = true;
  r = RouteTokens(spec, logits, 2);
  EXPECT_NEAR(r.weights[2][0] + r.weights[1][0], 1.0, 1e-7);
  EXPECT_NEAR(r.weights[2][0], std::exp(2.) / (std::exp(2.) + std::exp(1.)), 1e-7);
}

// Counts the tokens each Linear sees.
struct CountingHooks : LinearHooks {
  bool all = false;
  std::map<std::string, int64_t> tokens;
  bool SeeAllExperts() const override { return all; }
  absl::Status OnInput(const LinearWeight& w, absl::Span<const float>, int64_t n) override {
    tokens[w.name] += n;
    return absl::OkStatus();
  }
};

TEST(MoeRunTest, AllExpertsModeSeesEveryTokenAndKeepsTheOutput) {
  auto lm = CausalLm::Open(TestDataDir() + "/tiny-qwen3moe-nonorm", {.threads = 1});
  ASSERT_TRUE(lm.ok()) << lm.status();
  const int64_t T = 6, seqs = 2;
  std::vector<int32_t> ids;
  for (int i = 0; i < T * seqs; ++i) ids.push_back((i * 37 + 5) % 128);
  CountingHooks routed, all;
  all.all = true;
  auto a = (*lm)->Forward(ids, seqs, T, nullptr, &routed);
  auto b = (*lm)->Forward(ids, seqs, T, nullptr, &all);
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t i = 0; i < a->size(); ++i) ASSERT_NEAR((*a)[i], (*b)[i], 1e-5f * (1 + std::fabs((*a)[i])));
  // Layer 1 is the sparse one: 8 experts, top 2 of them per token.
  int64_t routed_sum = 0;
  for (int e = 0; e < 8; ++e) {
    const std::string gate = MoeExpertName(MoeStyle::kQwen, "model.layers.1.", e, "gate");
    EXPECT_EQ(all.tokens[gate], T * seqs) << gate;
    EXPECT_EQ(all.tokens[MoeExpertName(MoeStyle::kQwen, "model.layers.1.", e, "down")], T * seqs);
    routed_sum += routed.tokens.count(gate) ? routed.tokens[gate] : 0;
  }
  EXPECT_EQ(routed_sum, 2 * T * seqs);
  EXPECT_EQ(all.tokens["model.layers.1.mlp.gate"], T * seqs);
  EXPECT_EQ(all.tokens["model.layers.0.mlp.gate_proj"], T * seqs);  // dense layer
}

TEST(MoeRoutingTest, Llama4TakesTheTopLogitsThroughASigmoid) {
  MoeSpec spec;
  spec.style = MoeStyle::kLlama4;
  spec.num_experts = 4;
  spec.top_k = 2;
  const float logits[] = {0.f, 1.f, 2.f, -1.f,   // token 0: experts 2, 1
                          3.f, 0.f, 0.f, 3.f};   // token 1: a tie between 0 and 3, both taken
  MoeRouting r = RouteTokens(spec, logits, 2);
  EXPECT_THAT(r.tokens[0], ElementsAre(1));
  EXPECT_THAT(r.tokens[1], ElementsAre(0));
  EXPECT_THAT(r.tokens[2], ElementsAre(0));
  EXPECT_THAT(r.tokens[3], ElementsAre(1));
  EXPECT_NEAR(r.weights[2][0], 1.0 / (1.0 + std::exp(-2.0)), 1e-7);
  EXPECT_NEAR(r.weights[1][0], 1.0 / (1.0 + std::exp(-1.0)), 1e-7);
  EXPECT_NEAR(r.weights[0][0], 1.0 / (1.0 + std::exp(-3.0)), 1e-7);
  spec.top_k = 1;  // ties go to the lower index
  r = RouteTokens(spec, logits, 2);
  EXPECT_THAT(r.tokens[0], ElementsAre(1));
  EXPECT_TRUE(r.tokens[3].empty());
}

// Llama 4 (experts sliced from the fused tensors): calibrating all experts feeds every expert every token and
// leaves the output as it is; routed, each token reaches top_k = 1 expert, and the shared expert sees all.
TEST(MoeRunTest, Llama4AllExpertsModeSeesEveryTokenAndKeepsTheOutput) {
  auto lm = CausalLm::Open(TestDataDir() + "/tiny-llama4text", {.threads = 1});
  ASSERT_TRUE(lm.ok()) << lm.status();
  const int64_t T = 7, seqs = 2;
  std::vector<int32_t> ids;
  for (int i = 0; i < T * seqs; ++i) ids.push_back((i * 41 + 3) % 128);
  CountingHooks routed, all;
  all.all = true;
  auto a = (*lm)->Forward(ids, seqs, T, nullptr, &routed);
  auto b = (*lm)->Forward(ids, seqs, T, nullptr, &all);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  for (size_t i = 0; i < a->size(); ++i) ASSERT_NEAR((*a)[i], (*b)[i], 1e-5f * (1 + std::fabs((*a)[i])));
  for (int l = 0; l < 2; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    int64_t routed_sum = 0;
    for (int e = 0; e < 4; ++e) {
      const std::string gate = MoeExpertName(MoeStyle::kLlama4, p, e, "gate");
      EXPECT_EQ(gate, absl::StrCat(p, "feed_forward.experts.", e, ".gate_proj"));
      EXPECT_EQ(all.tokens[gate], T * seqs) << gate;
      EXPECT_EQ(all.tokens[MoeExpertName(MoeStyle::kLlama4, p, e, "down")], T * seqs);
      routed_sum += routed.tokens.count(gate) ? routed.tokens[gate] : 0;
    }
    EXPECT_EQ(routed_sum, T * seqs);
    EXPECT_EQ(routed.tokens[p + "feed_forward.router"], T * seqs);
    EXPECT_EQ(routed.tokens[p + "feed_forward.shared_expert.down_proj"], T * seqs);
    EXPECT_EQ(routed.tokens.count(p + "feed_forward.shared_expert_gate"), 0u);
  }
}

TEST(MoeRunTest, RoutersAreKnown) {
  EXPECT_TRUE(IsMoeRouter("model.layers.0.mlp.gate"));
  EXPECT_TRUE(IsMoeRouter("model.layers.0.block_sparse_moe.gate"));
  EXPECT_TRUE(IsMoeRouter("model.layers.0.mlp.shared_expert_gate"));
  EXPECT_TRUE(IsMoeRouter("model.layers.0.mlp.router"));
  EXPECT_FALSE(IsMoeRouter("model.layers.0.mlp.gate_proj"));
  EXPECT_FALSE(IsMoeRouter("model.layers.0.mlp.experts.1.gate_proj"));
}

}  // namespace
}  // namespace llmc
