#include "engine/format/algorithms.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace llmc {
namespace {

using ::testing::HasSubstr;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

TEST(AlgorithmRegistryTest, EveryModifierIsFoundByBothNames) {
  for (const char* n : {"QuantizationModifier", "GPTQModifier", "AWQModifier", "SmoothQuantModifier",
                        "SparseGPTModifier", "WandaPruningModifier"}) {
    const AlgorithmInfo* a = FindAlgorithm(n);
    ASSERT_NE(a, nullptr) << n;
    EXPECT_EQ(FindAlgorithm(a->name), a);
    EXPECT_FALSE(a->args.empty());
  }
  EXPECT_EQ(FindAlgorithm("magic"), nullptr);
  EXPECT_FALSE(FindAlgorithm("rtn")->needs_calibration);
  EXPECT_TRUE(FindAlgorithm("gptq")->needs_calibration);
}

TEST(CompressionRecipeTest, GptqRecipeWithArguments) {
  auto r = ParseCompressionRecipe(R"(
quant_stage:
  quant_modifiers:
    GPTQModifier:
      targets: Linear
      ignore: [lm_head]
      scheme: W4A16
      block_size: 64
      dampening_frac: 0.05
      actorder: group
)",
                                  "r.yaml");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->gptq);
  EXPECT_EQ(r->gptq->block_size, 64);
  EXPECT_DOUBLE_EQ(r->gptq->dampening_frac, 0.05);
  EXPECT_EQ(r->gptq->actorder, "group");
  ASSERT_TRUE(r->quant);
  EXPECT_EQ(r->quant->preset_name, "W4A16");
  EXPECT_TRUE(r->NeedsCalibration());
  EXPECT_EQ(r->Describe(), "GPTQ W4A16");
}

TEST(CompressionRecipeTest, GptqDefaultsAndNullActorder) {
  auto r = ParseCompressionRecipe("GPTQModifier: {scheme: W4A16, actorder: null}\n", "r.yaml");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->gptq->block_size, 128);
  EXPECT_DOUBLE_EQ(r->gptq->dampening_frac, 0.01);
  EXPECT_EQ(r->gptq->actorder, "none");
  auto d = ParseCompressionRecipe("GPTQModifier: {scheme: W4A16}\n", "r.yaml");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->gptq->actorder, "static");
}

TEST(CompressionRecipeTest, SmoothQuantPlusGptqInStages) {
  auto r = ParseCompressionRecipe(R"(
default_stage:
  default_modifiers:
    SmoothQuantModifier:
      smoothing_strength: 0.8
      mappings:
        - [["re:.*q_proj", "re:.*k_proj", "re:.*v_proj"], "re:.*input_layernorm"]
    GPTQModifier: {scheme: W8A8, ignore: [lm_head]}
)",
                                  "r.yaml");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->smoothquant);
  EXPECT_DOUBLE_EQ(r->smoothquant->smoothing_strength, 0.8);
  ASSERT_EQ(r->smoothquant->mappings.size(), 1u);
  EXPECT_EQ(r->smoothquant->mappings[0].smooth, "re:.*input_layernorm");
  EXPECT_EQ(r->smoothquant->mappings[0].balance.size(), 3u);
  EXPECT_EQ(r->Describe(), "SmoothQuant + GPTQ W8A8");
}

TEST(CompressionRecipeTest, PruningOnlyAndPruningWithQuantization) {
  auto r = ParseCompressionRecipe("SparseGPTModifier: {sparsity: 0.5, mask_structure: '2:4', ignore: [lm_head]}\n", "r.yaml");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->quant);
  ASSERT_TRUE(r->sparsity);
  EXPECT_EQ(r->sparsity->method, "sparsegpt");
  EXPECT_EQ(r->sparsity->mask_structure, "2:4");
  auto w = ParseCompressionRecipe(
      "sparsity_stage:\n  m:\n    WandaPruningModifier: {sparsity: 0.3}\nquant_stage:\n  m:\n    GPTQModifier: {scheme: W4A16}\n",
      "r.yaml");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->sparsity->method, "wanda");
  EXPECT_EQ(w->sparsity->mask_structure, "0:0");
  EXPECT_TRUE(w->gptq);
}

TEST(CompressionRecipeTest, StaticActivationsAndKvCacheNeedCalibration) {
  auto fp8 = ParseCompressionRecipe("QuantizationModifier: {scheme: FP8}\n", "r.yaml");
  ASSERT_TRUE(fp8.ok()) << fp8.status();
  EXPECT_TRUE(fp8->NeedsCalibration());
  auto dyn = ParseCompressionRecipe("QuantizationModifier: {scheme: FP8_DYNAMIC}\n", "r.yaml");
  ASSERT_TRUE(dyn.ok());
  EXPECT_FALSE(dyn->NeedsCalibration());
  auto kv = ParseCompressionRecipe(
      "QuantizationModifier:\n  scheme: FP8_DYNAMIC\n  kv_cache_scheme: {num_bits: 8, type: float, strategy: tensor, "
      "dynamic: false, symmetric: true}\n",
      "r.yaml");
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_TRUE(kv->NeedsCalibration());
  ASSERT_TRUE(kv->quant->kv_cache_scheme);
  EXPECT_EQ(kv->quant->ToJson({})["kv_cache_scheme"]["num_bits"], 8);
}

TEST(CompressionRecipeTest, ErrorsListWhatIsSupported) {
  struct Case {
    const char* yaml;
    const char* want;
  } cases[] = {
      {"MagicModifier: {}\n", "GPTQModifier"},
      {"GPTQModifier: {scheme: W4A16, blocksize: 64}\n", "block_size"},
      {"GPTQModifier: {scheme: W4A16, actorder: sometimes}\n", "actorder"},
      {"GPTQModifier: {scheme: W4A16, dampening_frac: -1}\n", "dampening_frac"},
      {"SparseGPTModifier: {sparsity: 0.5, mask_structure: '4:2'}\n", "mask_structure"},
      {"SparseGPTModifier: {sparsity: 1.5}\n", "sparsity"},
      {"SmoothQuantModifier: {smoothing_strength: 0.5, mappings: [foo]}\n", "mappings"},
      {"GPTQModifier: {scheme: FP8_BLOCK}\n", "block strategy"},
      {"AWQModifier:\n  config_groups:\n    g: {targets: [Linear], input_activations: {num_bits: 8, type: float, "
       "strategy: token, dynamic: true}}\n",
       "without weights"},
      {"QuantizationModifier: {scheme: W4A16, kv_cache_scheme: {num_bits: 4, type: int}}\n", "fp8"},
  };
  for (const auto& c : cases) {
    auto r = ParseCompressionRecipe(c.yaml, "r.yaml");
    ASSERT_FALSE(r.ok()) << c.yaml;
    EXPECT_THAT(Msg(r.status()), HasSubstr(c.want)) << c.yaml;
    EXPECT_THAT(Msg(r.status()), HasSubstr("r.yaml")) << c.yaml;
  }
}

TEST(CompressionRecipeTest, PresetRecipes) {
  auto g = PresetRecipe("w4a16", "gptq", {"Linear"}, {"lm_head"});
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(g->gptq);
  EXPECT_EQ(g->quant->preset_name, "W4A16");
  EXPECT_THAT(g->yaml, HasSubstr("GPTQModifier"));
  auto round_trip = ParseCompressionRecipe(g->yaml, "recipe.yaml");
  ASSERT_TRUE(round_trip.ok());
  EXPECT_TRUE(round_trip->gptq);
  auto sq = PresetRecipe("W8A8", "smoothquant-gptq", {"Linear"}, {"lm_head"});
  ASSERT_TRUE(sq.ok()) << sq.status();
  EXPECT_TRUE(sq->smoothquant && sq->gptq);
  auto bad = PresetRecipe("W4A16", "magic", {"Linear"}, {});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(Msg(bad.status()), HasSubstr("gptq"));
}

}  // namespace
}  // namespace llmc
