// The per-family smoothing mappings and the norms a block of each family offers to SmoothQuant and AWQ.
#include "engine/calib/decoder_block_view.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "engine/format/algorithms.h"
#include "engine/model/model_test_util.h"

namespace llmc {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<CausalLm> Open(const std::string& name) {
  auto lm = CausalLm::Open(testing_util::TestDataDir() + "/" + name, {.threads = 1});
  EXPECT_TRUE(lm.ok()) << lm.status();
  return lm.ok() ? std::move(*lm) : nullptr;
}

TEST(FamilySmoothMappingsTest, LlamaLikeFamiliesKeepTheDefaults) {
  auto lm = Open("tiny-qwen2-swa");
  ASSERT_NE(lm, nullptr);
  auto m = FamilySmoothMappings(DefaultAwqMappings(), lm->spec(), "AWQModifier");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->size(), DefaultAwqMappings().size());
  EXPECT_EQ((*m)[2].smooth, "re:.*post_attention_layernorm");
}

TEST(FamilySmoothMappingsTest, GemmaSmoothsPreFeedforwardNorm) {
  for (const char* name : {"tiny-gemma2", "tiny-gemma3"}) {
    auto lm = Open(name);
    ASSERT_NE(lm, nullptr);
    for (const auto& defaults : {DefaultSmoothQuantMappings(), DefaultAwqMappings()}) {
      auto m = FamilySmoothMappings(defaults, lm->spec(), "AWQModifier");
      ASSERT_TRUE(m.ok()) << m.status();
      ASSERT_EQ(m->size(), defaults.size());
      for (size_t i = 0; i < m->size(); ++i) {
        EXPECT_EQ((*m)[i].balance, defaults[i].balance);
        EXPECT_EQ((*m)[i].smooth, defaults[i].smooth == "re:.*post_attention_layernorm"
                                      ? "re:.*pre_feedforward_layernorm"
                                      : defaults[i].smooth);
      }
    }
    // A recipe's own mapping onto post_attention_layernorm would scale the residual stream: refused.
    std::vector<SmoothMapping> own = {{{"re:.*gate_proj", "re:.*up_proj"}, "re:.*post_attention_layernorm"}};
    auto bad = FamilySmoothMappings(own, lm->spec(), "SmoothQuantModifier");
    ASSERT_FALSE(bad.ok());
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr("SmoothQuantModifier"));
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr("pre_feedforward_layernorm"));
    // The block offers input_layernorm and pre_feedforward_layernorm, as their effective (1 + w) scale.
    auto block = lm->LoadBlock(0);
    ASSERT_TRUE(block.ok());
    std::map<std::string, GroupStats> stats;
    QuantConfig cfg;
    DecoderBlockView view(block->get(), lm.get(), &stats, &cfg, DType::kBF16);
    auto norms = view.norms();
    ASSERT_EQ(norms.size(), 2u);
    EXPECT_EQ(norms[0].first, "model.layers.0.input_layernorm");
    EXPECT_EQ(norms[1].first, "model.layers.0.pre_feedforward_layernorm");
    EXPECT_EQ(view.norm_offset(), 1.0f);
    auto raw = lm->loader().LoadDense("model.layers.0.pre_feedforward_layernorm.weight", {lm->spec().hidden_size});
    ASSERT_TRUE(raw.ok());
    for (size_t i = 0; i < raw->size(); ++i) EXPECT_EQ((*norms[1].second)[i], (*raw)[i] + 1.0f);
  }
}

TEST(FamilySmoothMappingsTest, PhiUsesTheFusedLinears) {
  auto lm = Open("tiny-phi3");
  ASSERT_NE(lm, nullptr);
  auto sq = FamilySmoothMappings(DefaultSmoothQuantMappings(), lm->spec(), "SmoothQuantModifier");
  ASSERT_TRUE(sq.ok());
  ASSERT_EQ(sq->size(), 2u);
  EXPECT_EQ((*sq)[0].balance, std::vector<std::string>{"re:.*qkv_proj"});
  EXPECT_EQ((*sq)[1].balance, std::vector<std::string>{"re:.*gate_up_proj"});
  auto awq = FamilySmoothMappings(DefaultAwqMappings(), lm->spec(), "AWQModifier");
  ASSERT_TRUE(awq.ok());
  ASSERT_EQ(awq->size(), 4u);
  EXPECT_EQ((*awq)[1].smooth, "re:.*qkv_proj$");
  EXPECT_EQ((*awq)[3].smooth, "re:.*gate_up_proj$");
  // The block's Linears are the fused ones, named as on disk.
  auto block = lm->LoadBlock(1);
  ASSERT_TRUE(block.ok());
  std::vector<std::string> names;
  for (const LinearWeight* l : (*block)->linears()) names.push_back(l->name);
  EXPECT_EQ(names, (std::vector<std::string>{"model.layers.1.self_attn.qkv_proj", "model.layers.1.self_attn.o_proj",
                                             "model.layers.1.mlp.gate_up_proj", "model.layers.1.mlp.down_proj"}));
  EXPECT_EQ(InputGroup(names[0]), "model.layers.1.self_attn.qkv");
  EXPECT_EQ(InputGroup(names[2]), "model.layers.1.mlp.gate_up");
}

}  // namespace
}  // namespace llmc
